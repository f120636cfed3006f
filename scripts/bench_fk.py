"""Benchmark: forward kinematics of the full Franka tree (every link), ours vs pytorch-kinematics.

Both run in this process on the same URDF (default: the shipped ``franka_panda``), float32 CPU, for
1, 100, 1000 and 10000 random configurations. Ours: ``forward_kinematics(robot.chain, q)`` -> (N, L, 4, 4).
pytorch-kinematics: ``chain.forward_kinematics(q)`` (its public API: a dict of Transform3d, one per
frame) and ``chain.forward_kinematics_tensor(q)`` (its raw (frames, N, 4, 4) tensor path). pytorch-kinematics
does not know ``<mimic>``, so its joint vector has one entry per mimic follower too.

Prints medians over --repeats interleaved runs after warm-up (other processes' load hits all
contenders alike) and ratios pk/ours (> 1: ours is faster).

The sections run are listed in ``SECTIONS`` (FK, then the robot point flow): a section is a
function ``(args) -> None`` that prints its own table, using :func:`median_ms` and
:func:`print_table`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from pointworld.robot.kinematics import forward_kinematics
from pointworld.robot.urdf import load_robot

SIZES = (1, 100, 1000, 10000)


def median_ms(fns: list[Callable[[], object]], repeats: int, warmup: int = 3) -> list[float]:
    """Median wall time (ms) of each function over ``repeats`` interleaved runs after warm-up."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append(time.perf_counter() - t0)
    return [1e3 * statistics.median(t) for t in times]


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    """Print a fixed-width table."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))


def _default_urdf() -> Path:
    from pointworld.robot.assets import shipped_urdf_path

    return shipped_urdf_path("franka_panda")


def bench_fk(args: argparse.Namespace) -> None:
    """FK table: ours vs pytorch-kinematics (public dict API and raw tensor API)."""
    import pytorch_kinematics as pk

    logging.getLogger("pytorch_kinematics").setLevel(logging.ERROR)
    urdf = Path(args.urdf) if args.urdf else _default_urdf()
    robot = load_robot(urdf, load_meshes=False)
    pk_chain = pk.build_chain_from_urdf(urdf.read_bytes()).to(dtype=torch.float32)
    n_frames = len(pk_chain.get_frame_names(exclude_fixed=False))
    print(f"urdf: {urdf}\nours: L={robot.num_links} links, J={robot.num_joints} joints | "
          f"pytorch-kinematics {importlib.metadata.version('pytorch-kinematics')}: {n_frames} frames, "
          f"{pk_chain.n_joints} joints")
    gen = torch.Generator().manual_seed(0)
    rows = []
    for n in args.sizes:
        q = torch.rand(n, robot.num_joints, generator=gen)
        q_pk = torch.rand(n, pk_chain.n_joints, generator=gen)
        fns = [lambda q=q: forward_kinematics(robot.chain, q),
               lambda q=q_pk: pk_chain.forward_kinematics(q),
               lambda q=q_pk: pk_chain.forward_kinematics_tensor(q)]
        if args.compile:
            compiled = torch.compile(forward_kinematics, dynamic=False)
            fns.append(lambda q=q, f=compiled: f(robot.chain, q))
        ms = median_ms(fns, args.repeats)
        row = [str(n), f"{ms[0]:.3f}", f"{ms[1]:.3f}", f"{ms[2]:.3f}", f"{ms[1] / ms[0]:.2f}",
               f"{ms[2] / ms[0]:.2f}"]
        if args.compile:
            row += [f"{ms[3]:.3f}", f"{ms[1] / ms[3]:.2f}"]
        rows.append(row)
    header = ["N", "ours_ms", "pk_ms", "pk_tensor_ms", "pk/ours", "pk_tensor/ours"]
    if args.compile:
        header += ["ours_compiled_ms", "pk/compiled"]
    print_table("forward kinematics, full tree, float32 CPU (median ms; ratio > 1 = ours faster)",
                header, rows)


def bench_flow(args: argparse.Namespace) -> None:
    """Point-flow table: K=256 candidates, T+1=11 steps, M=500 points on the Franka (or --urdf),
    float32 CPU, with input validation on and off (``validate=False``). Anchors in the same run: FK
    alone for the K*(T+1) configurations, and a naive flow that gathers a (K, T+1, M, 4, 4) pose per
    point and finite-differences with torch.gradient (its accelerations, a gradient of the
    gradient, are not the documented stencils: it only anchors the cost). Joint values are drawn
    within the limits, clamped to [-pi, pi] for continuous and virtual joints; a row is skipped
    when its links are missing (e.g. no hand/finger links)."""
    from pointworld.robot.flow import robot_point_flow
    from pointworld.robot.sampling import sample_surface_points

    k, steps, m = 256, 11, 500
    urdf = Path(args.urdf) if args.urdf else _default_urdf()
    robot = load_robot(urdf)
    gen = torch.Generator().manual_seed(0)
    lower, upper = robot.lower.clamp(-math.pi, math.pi), robot.upper.clamp(-math.pi, math.pi)
    q = lower + (upper - lower) * torch.rand(k, steps, robot.num_joints, generator=gen)
    grip = torch.ones(k, steps, dtype=torch.bool)
    rows = []
    for label, links in (("all links", None), ("gripper", ["*hand", "*finger*"])):
        try:
            surf = sample_surface_points(robot, m, links=links, seed=0)
        except ValueError as err:  # e.g. no link named like a hand or finger
            print(f"flow ({label}): skipped, {err}")
            continue

        def naive(surf=surf):
            T = forward_kinematics(robot.chain, q)[:, :, surf.link_index]  # (K, T+1, M, 4, 4)
            p = (T[..., :3, :3] @ surf.points_link[..., None])[..., 0] + T[..., :3, 3]
            nrm = (T[..., :3, :3] @ surf.normals_link[..., None])[..., 0]
            v = torch.gradient(p, spacing=0.1, dim=1, edge_order=2)[0]
            a = torch.gradient(v, spacing=0.1, dim=1, edge_order=2)[0]
            g = grip[..., None, None].expand(k, steps, m, 1).float()
            t = torch.arange(steps, dtype=p.dtype)[:, None, None].expand(k, steps, m, 1)
            lid = surf.link_index.to(p.dtype)[:, None].expand(k, steps, m, 1)
            return torch.cat([p, nrm, g, v, a, t, lid], dim=-1)

        ms = median_ms([lambda surf=surf: robot_point_flow(robot, surf, q, grip).features(),
                        lambda surf=surf: robot_point_flow(robot, surf, q, grip,
                                                           validate=False).features(),
                        naive, lambda: forward_kinematics(robot.chain, q)],
                       max(5, args.repeats // 5))
        rows.append([label, f"{ms[0]:.1f}", f"{ms[1]:.1f}", f"{ms[2]:.1f}", f"{ms[3]:.2f}",
                     f"{ms[2] / ms[0]:.2f}"])
    if not rows:
        return
    print_table(f"robot point flow + features, K={k}, T+1={steps}, M={m}, float32 CPU (median ms)",
                ["points on", "flow_ms", "flow_novalidate_ms", "naive_ms", "fk_only_ms",
                 "naive/flow"], rows)


#: Benchmark sections, run in this order.
SECTIONS: list[Callable[[argparse.Namespace], None]] = [bench_fk, bench_flow]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urdf", default=None, help="URDF file (default: shipped franka_panda)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=50, help="timed runs per case")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(FK)")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, device cpu")
    for section in SECTIONS:
        section(args)


if __name__ == "__main__":
    main()
