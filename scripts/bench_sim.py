"""Benchmark: simulated data generation per shipped robot (one worker process, this machine).

For each robot, generates ``--episodes`` episodes of ``--clips`` clips (T = ``--horizon``) with 2 cameras
at 320 x 240 and depth noise into a temporary directory with :func:`generate_dataset` (``workers=1``),
and prints clips per second, the per-clip time split (exploration planning, physics, rendering, ground
truth, writing) and the size on disk per clip (gzip HDF5). The first episode of each robot includes
process warm-up (robot loading, the EGL context); use more episodes for steadier figures.

Anchors, measured in the same run on the compiled scene of the robot's first episode: plain
``mujoco.mj_step`` for the simulated time that one clip costs in our generator (its share of all
executed control steps plus the settling after reset), with the servos holding still (physics
anchor), and one plain ``mujoco.Renderer`` RGB + depth render of 2 views at 320 x 240 from MuJoCo's
free camera (render anchor; mean of 5 after a warm-up). Our physics and render seconds per clip are
printed as ratios to them (ours also step the servo targets, read state every control step, render
segmentation and add depth noise).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import mujoco

from pointworld.data.episode_io import num_clips, read_episode
from pointworld.data.generate import PHASES, generate_dataset
from pointworld.data.generate_config import GenerateConfig
from pointworld.robot.assets import SHIPPED_ROBOTS
from pointworld.sim.env import SimEnv

ANCHOR_RENDERS = 5


def bench_robot(robot: str, args: argparse.Namespace, root: Path) -> dict:
    """Generate the benchmark episodes of ``robot`` under ``root``; returns the summary plus wall time."""
    config = GenerateConfig(robot=robot, episodes=args.episodes, clips_per_episode=args.clips,
                            horizon=args.horizon, n_views=2, width=320, height=240, depth_noise=True,
                            seed=args.seed, out=str(root / robot), workers=1, scene=dict(args.scene))
    t0 = time.perf_counter()
    summary = generate_dataset(config, progress=False)
    summary["wall_s"] = time.perf_counter() - t0
    summary.update(anchors(config))
    return summary


def anchors(config: GenerateConfig) -> dict:
    """Bare-MuJoCo anchors on the scene of the first episode of ``config`` (see the module docstring):
    ``sim_s_per_clip``, ``physics_anchor_s`` and ``render_anchor_s``."""
    index = config.start_index
    env = SimEnv(config.scene_config(index))
    env.reset(config.episode_seed(index))
    model, data = env.model, env.data
    paths = [Path(config.out) / config.episode_name(i) for i in range(index, index + config.episodes)]
    steps = sum(read_episode(p, clips=False).joint_positions.shape[0] - 1 for p in paths)
    clips = sum(num_clips(p) for p in paths)
    sim_s = (steps * env.config.control_dt_s + len(paths) * data.time) / clips  # data.time: settling
    t0 = time.perf_counter()
    for _ in range(round(sim_s / model.opt.timestep)):
        mujoco.mj_step(model, data)
    physics = time.perf_counter() - t0
    renderer = mujoco.Renderer(model, height=240, width=320)
    cam = mujoco.MjvCamera()
    cam.lookat[:] = env.config.table_placement(env.robot.name)
    cam.distance, cam.elevation = 1.3, -35.0

    def render_two_views() -> None:
        for azimuth in (150.0, -150.0):
            cam.azimuth = azimuth
            renderer.update_scene(data, cam)
            renderer.render()
            renderer.enable_depth_rendering()
            renderer.render()
            renderer.disable_depth_rendering()

    render_two_views()  # warm-up (GL context, buffers)
    t0 = time.perf_counter()
    for _ in range(ANCHOR_RENDERS):
        render_two_views()
    render = (time.perf_counter() - t0) / ANCHOR_RENDERS
    renderer.close()
    return {"sim_s_per_clip": sim_s, "physics_anchor_s": physics, "render_anchor_s": render}


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
    print(header + f" {'MB/clip':>8s} {'moving':>7s} {'sim_s/clip':>10s} {'phys_anchor':>11s} "
          f"{'phys_x':>7s} {'rend_anchor':>11s} {'rend_x':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for robot in args.robots:
            s = bench_robot(robot, args, Path(tmp))
            phases = " ".join(f"{s['phase_seconds_per_clip'][p]:12.3f}" for p in PHASES)
            ours = s["phase_seconds_per_clip"]
            print(f"{robot:16s} {1.0 / s['seconds_per_clip']:8.2f} {s['seconds_per_clip']:7.3f} {phases} "
                  f"{s['mb_per_clip']:8.2f} {s['moving_clip_share']:7.1%} {s['sim_s_per_clip']:10.2f} "
                  f"{s['physics_anchor_s']:11.3f} {ours['physics'] / s['physics_anchor_s']:7.2f} "
                  f"{s['render_anchor_s']:11.4f} {ours['render'] / s['render_anchor_s']:7.2f}", flush=True)


if __name__ == "__main__":
    main()
