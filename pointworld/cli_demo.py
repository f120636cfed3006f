"""Body of ``pointworld demo`` (CLI layer): plan and execute a simulated push with the bundled model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig

from pointworld.atomic import atomic_open


def _write_first_plan(out: Path, first: dict, robot: Any, dt_s: float) -> list[Path]:
    """The first plan as a plan record (``plan.npz``) and its figures (``plan_*.png``)."""
    from pointworld.planning.plan_record import plan_record, save_plan_record
    from pointworld.viz.figure_files import write_plan_figures

    scene = first["obs"].scene
    record = plan_record(scene.points[0], scene.colors[0], first["plan"], first["goal"], robot.name,
                         robot.joint_names, dt_s)
    return [save_plan_record(out / "plan.npz", record), *write_plan_figures(record, out)]


def _write_outputs(out: Path, start: Any, end: Any, first: dict, result: Any) -> dict:
    """Images, clouds and the summary of a demo episode."""
    from pointworld.capture.cloud import write_ply
    from pointworld.viz.flow_cloud import write_flow_ply, write_png

    out.mkdir(parents=True, exist_ok=True)
    write_png(out / "start.png", start.frames[0].rgb)
    write_png(out / "end.png", end.frames[0].rgb)
    write_ply(out / "observed_start.ply", first["obs"].cloud)
    disp = first["plan"].prediction.displacement[0, -1]
    write_flow_ply(out / "predicted_flow.ply", first["obs"].scene.points[0], disp)
    times = result.plan_times_s
    summary = {"success": result.success, "final_error_m": result.final_error_m,
               "yaw_error_rad": result.yaw_error_rad, "replans": result.replans, "message": result.message,
               "plan_time_s_mean": sum(times) / len(times) if times else None, "plan_times_s": times}
    with atomic_open(out / "summary.json", "w") as f:
        f.write(json.dumps(summary, indent=1) + "\n")
    return summary


def run_demo(cfg: DictConfig) -> int:
    """``pointworld demo``: one closed-loop episode; summary printed, visualizations under ``output_dir``."""
    from pointworld.capture.cloud import write_ply
    from pointworld.planning.benchmark import TASK_SCENES, check_gripper_tasks, task_planner
    from pointworld.planning.closed_loop import run_episode, table_observation
    from pointworld.planning.observation import observe_scene
    from pointworld.planning.planner import MPCPlanner
    from pointworld.sim.cameras import CameraRigConfig
    from pointworld.sim.config import SceneConfig
    from pointworld.sim.task import TaskConfig, TaskEnv
    from pointworld.train.pretrained import load_pretrained

    model = load_pretrained(str(cfg.checkpoint), device=str(cfg.device))
    task = TaskConfig(kind=str(cfg.task), cameras=CameraRigConfig(**cfg.cameras))
    env = TaskEnv(SceneConfig(robot=str(cfg.robot), **TASK_SCENES[str(cfg.task)]), task)
    planner_cfg = task_planner(instantiate(cfg.planner), str(cfg.task), check_gripper_tasks(cfg.gripper_tasks))
    planner = MPCPlanner(env.robot, model, planner_cfg, horizon=model.config.horizon)
    env.reset(int(cfg.seed))
    start = env.observe()
    first: dict = {}

    def record(replan: int, obs: Any, goal: Any, plan: Any, outcome: Any) -> None:
        first.setdefault("obs", obs)
        first.setdefault("goal", goal)
        first.setdefault("plan", plan)
        print(f"plan {replan + 1}: cost {plan.cost:.4f}, {plan.timings['total_s']:.1f} s; "
              f"error {100 * outcome.position_error_m:.1f} cm{' (success)' if outcome.success else ''}",
              flush=True)

    result = run_episode(env, planner, int(cfg.seed), int(cfg.max_replans), on_step=record,
                         max_lookbacks=int(cfg.max_lookbacks))
    end = env.observe()
    out = Path(str(cfg.output_dir))
    summary = _write_outputs(out, start, end, first, result)
    write_ply(out / "observed_end.ply", observe_scene(end, table_observation(env)).cloud)
    plan_files = _write_first_plan(out, first, env.robot, planner.config.action.dt_s)
    print(f"{cfg.task} with {cfg.robot}: {'success' if result.success else 'failure'} ({result.message}); "
          f"final error {100 * result.final_error_m:.1f} cm after {result.replans} plan(s), "
          f"{summary['plan_time_s_mean']:.1f} s per plan")
    print(f"wrote {out}/: start.png end.png observed_start.ply predicted_flow.ply observed_end.ply summary.json "
          f"{' '.join(p.name for p in plan_files)}")
    return 0
