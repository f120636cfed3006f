"""Benchmark: simulated data generation per shipped robot (one worker process, this machine).

For each robot, generates ``--episodes`` episodes of ``--clips`` clips (T = ``--horizon``) with 2 cameras
at 320 x 240 and depth noise into a temporary directory with :func:`generate_dataset` (``workers=1``),
and prints clips per second, the per-clip time split (exploration planning, physics, rendering, ground
truth, writing) and the size on disk per clip (gzip HDF5). The first episode of each robot includes
process warm-up (robot loading, the EGL context); use more episodes for steadier figures.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pointworld.data.generate import PHASES, generate_dataset
from pointworld.data.generate_config import GenerateConfig
from pointworld.robot.assets import SHIPPED_ROBOTS


def bench_robot(robot: str, args: argparse.Namespace, root: Path) -> dict:
    """Generate the benchmark episodes of ``robot`` under ``root``; returns the summary plus wall time."""
    config = GenerateConfig(robot=robot, episodes=args.episodes, clips_per_episode=args.clips,
                            horizon=args.horizon, n_views=2, width=320, height=240, depth_noise=True,
                            seed=args.seed, out=str(root / robot), workers=1, scene=dict(args.scene))
    t0 = time.perf_counter()
    summary = generate_dataset(config, progress=False)
    summary["wall_s"] = time.perf_counter() - t0
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robots", nargs="*", default=list(SHIPPED_ROBOTS))
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--horizon", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cloth", action="store_true", help="add the flex cloth to every scene")
    args = parser.parse_args()
    args.scene = {"include_cloth": True} if args.cloth else {}
    header = f"{'robot':16s} {'clips/s':>8s} {'s/clip':>7s} " + " ".join(f"{p:>12s}" for p in PHASES)
    print(header + f" {'MB/clip':>8s} {'moving':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for robot in args.robots:
            s = bench_robot(robot, args, Path(tmp))
            phases = " ".join(f"{s['phase_seconds_per_clip'][p]:12.3f}" for p in PHASES)
            print(f"{robot:16s} {1.0 / s['seconds_per_clip']:8.2f} {s['seconds_per_clip']:7.3f} {phases} "
                  f"{s['mb_per_clip']:8.2f} {s['moving_clip_share']:7.1%}", flush=True)


if __name__ == "__main__":
    main()
