"""Benchmark: time per replanning step of the MPC planner with the ``tiny`` world model on this machine.

On a simulated push scene (Franka, 2 views at 320 x 240, the observation fused at 1.5 cm), one ``plan()``
call with one optimizer iteration is timed for K = 32 / 128 / 512 candidates, split into trajectories + FK
robot point flows, model inference and cost (the planner's own timings). The anchor, measured in the same
run, is the naive use of the same model: one ``predict`` per candidate on the raw scene (the scene encoder
re-run every time, no batching), timed on 8 candidates and scaled to K.

Usage: ``python scripts/bench_planning.py [--checkpoint PATH] [--samples 32 128 512] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import time

import torch

from pointworld.heap import add_heap_argument, set_heap_policy
from pointworld.model.inputs import ActionInput
from pointworld.planning.benchmark import TASK_SCENES
from pointworld.planning.goals import goal_from_task
from pointworld.planning.observation import observe_scene
from pointworld.planning.optimizers import MPPIConfig
from pointworld.planning.planner import MPCPlanner, PlannerConfig
from pointworld.robot.flow import robot_point_flow
from pointworld.sim.config import SceneConfig
from pointworld.sim.task import TaskConfig, TaskEnv
from pointworld.train.pretrained import load_pretrained


def naive_seconds_per_candidate(model, planner: MPCPlanner, scene, q0: torch.Tensor, count: int = 8) -> float:
    """Seconds per candidate of one unbatched, uncached ``predict`` (the anchor)."""
    space = planner.action_space
    actions = torch.zeros(count, model.config.horizon, space.dim)
    traj = space.to_trajectory(q0, actions)
    flow = robot_point_flow(planner.robot, planner.surface, traj.q, traj.gripper_open, validate=False).features()
    robot_type = torch.tensor([model.config.robot_type_index(planner.robot.name)])
    model.predict(scene, ActionInput(flow[:1], torch.ones(1, flow.shape[2], dtype=torch.bool), robot_type))
    t0 = time.perf_counter()
    for k in range(count):
        model.predict(scene, ActionInput(flow[k:k + 1], torch.ones(1, flow.shape[2], dtype=torch.bool), robot_type))
    return (time.perf_counter() - t0) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="checkpoint path (default: the bundled model)")
    parser.add_argument("--samples", nargs="*", type=int, default=[32, 128, 512])
    parser.add_argument("--device", default="cpu")
    add_heap_argument(parser)
    args = parser.parse_args()
    set_heap_policy(args.heap == "retain")
    torch.manual_seed(0)
    model = load_pretrained(args.checkpoint, device=args.device)
    env = TaskEnv(SceneConfig(robot="franka_panda", **TASK_SCENES["push"]), TaskConfig(kind="push"))
    task = env.reset(1000)
    obs = observe_scene(env.observe(), device=torch.device(args.device))
    goal = goal_from_task(task, obs.scene.points[0].cpu())
    q0 = env.robot.clamp_to_limits(env.joint_positions()).float()
    print(f"tiny model, {obs.scene.points.shape[1]} scene points, horizon {model.config.horizon}, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    print(f"{'K':>5s} {'fk+flows s':>10s} {'model s':>8s} {'cost s':>7s} {'total s':>8s} {'naive s':>8s} "
          f"{'naive/ours':>10s}")

    for K in args.samples:
        config = PlannerConfig(optimizer=MPPIConfig(num_samples=K, iterations=1))
        planner = MPCPlanner(env.robot, model, config, horizon=model.config.horizon)
        planner.plan(obs.scene, q0, 1.0, goal)  # warm-up
        planner.reset()
        t = planner.plan(obs.scene, q0, 1.0, goal).timings
        evaluations = t.get("evaluations", K)
        naive = naive_seconds_per_candidate(model, planner, obs.scene, q0) * evaluations
        print(f"{K:5d} {t['fk_s']:10.3f} {t['model_s']:8.3f} {t['cost_s']:7.3f} {t['total_s']:8.3f} "
              f"{naive:8.2f} {naive / t['total_s']:10.2f}", flush=True)


if __name__ == "__main__":
    main()
