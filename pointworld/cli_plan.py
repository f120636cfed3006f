"""Bodies of ``pointworld plan`` and ``pointworld benchmark-planning`` (CLI layer: Hydra -> library calls)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from pointworld.atomic import atomic_open


def _start_joints(robot: Any, q0: Any) -> Any:
    """q0 from the config, or the shipped robot's home pose."""
    import torch

    if q0 is not None:
        return robot.check_joint_positions(torch.tensor(list(q0), dtype=torch.float32), "q0")
    from pointworld.sim.env import HOME_Q

    if robot.name not in HOME_Q:
        raise ValueError(f"q0: {robot.name!r} has no home pose; pass q0=[...] with its {robot.num_joints} "
                         f"joints {list(robot.joint_names)}")
    return torch.tensor(HOME_Q[robot.name], dtype=torch.float32)


def run_plan(cfg: DictConfig) -> int:
    """``pointworld plan goal=GOAL.json [robot=... source=...]``: one plan from one capture."""
    from pointworld.capture.cloud import write_ply
    from pointworld.planning.goal_file import load_goal_spec
    from pointworld.planning.observation import ObservationConfig, observe_scene
    from pointworld.planning.plan_record import plan_record, save_plan_record
    from pointworld.planning.planner import MPCPlanner
    from pointworld.robot.urdf import load_robot
    from pointworld.viz.figure_files import write_plan_figures
    from pointworld.train.pretrained import load_pretrained
    from pointworld.viz.flow_cloud import write_flow_ply

    spec = load_goal_spec(str(cfg.goal))
    robot = load_robot(str(cfg.robot))
    model = load_pretrained(str(cfg.checkpoint), device=str(cfg.device))
    with instantiate(cfg.source) as rig:
        capture = rig.read()
    obs = observe_scene(capture, ObservationConfig(fusion=instantiate(cfg.fusion), max_points=int(cfg.max_points)))
    goal = spec.resolve(obs.scene.points[0], obs.scene.colors[0])
    planner = MPCPlanner(robot, model, instantiate(cfg.planner), horizon=model.config.horizon)
    plan = planner.plan(obs.scene, _start_joints(robot, cfg.q0), float(cfg.gripper_open), goal)
    out = Path(str(cfg.output_dir))
    out.mkdir(parents=True, exist_ok=True)
    result = {"robot": robot.name, "joint_names": list(robot.joint_names), "dt_s": planner.config.action.dt_s,
              "q": plan.q.tolist(), "gripper_open": plan.gripper_open.tolist(), "cost": plan.cost,
              "breakdown": plan.breakdown, "timings": plan.timings, "goal_points": int(goal.indices.numel())}
    with atomic_open(out / "plan.json", "w") as f:
        json.dump(result, f, indent=1)
    with atomic_open(out / "plan.npz", "wb") as f:
        np.savez(f, q=plan.q.cpu().numpy(), gripper_open=plan.gripper_open.cpu().numpy())
    write_ply(out / "observed.ply", obs.cloud)
    write_flow_ply(out / "predicted_flow.ply", obs.scene.points[0], plan.prediction.displacement[0, -1])
    record = plan_record(obs.scene.points[0], obs.scene.colors[0], plan, goal, robot.name, robot.joint_names,
                         planner.config.action.dt_s)
    save_plan_record(out / "plan_record.npz", record)
    figures = ", ".join(p.name for p in write_plan_figures(record, out))
    print(f"plan for {robot.name}: cost {plan.cost:.4f} ({', '.join(f'{k} {v:.3g}' for k, v in plan.breakdown.items())})"
          f" in {plan.timings['total_s']:.1f} s; wrote {out}/plan.json, plan.npz, plan_record.npz, observed.ply, "
          f"predicted_flow.ply, {figures}")
    return 0


def _previous_rows(out: Path, raw: dict) -> list:
    """Rows of an earlier run written to ``out`` with the same settings (``resume=true``); [] if none."""
    if not out.is_file():
        return []
    try:
        data = json.loads(out.read_text())
        old = {k: v for k, v in data["config"].items() if k not in ("resume", "tasks", "robots", "models")}
        rows = list(data["rows"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"resume: {out} is not a benchmark-planning result ({exc})") from exc
    new = {k: v for k, v in raw.items() if k not in ("resume", "tasks", "robots", "models")}
    if old != new:
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        raise ValueError(f"resume: {out} was written with other settings ({', '.join(changed)}); "
                         f"use another out= or resume=false")
    return rows


def run_benchmark_planning(cfg: DictConfig) -> int:
    """``pointworld benchmark-planning``: the closed-loop task suite; table printed, rows written as JSON."""
    from pointworld.planning.benchmark import BenchmarkConfig, format_rows, run_benchmark
    from pointworld.sim.cameras import CameraRigConfig
    from pointworld.sim.task import TaskConfig
    from pointworld.train.pretrained import load_pretrained

    raw = OmegaConf.to_container(cfg, resolve=True)
    config = BenchmarkConfig(tasks=raw["tasks"], robots=raw["robots"], models=raw["models"],
                             episodes=raw["episodes"], seed=raw["seed"], max_replans=raw["max_replans"],
                             max_lookbacks=raw["max_lookbacks"], horizon=raw["horizon"],
                             planner=instantiate(cfg.planner),
                             task=TaskConfig(cameras=CameraRigConfig(**raw["cameras"])),
                             gripper_tasks=raw["gripper_tasks"])
    wants_model = {"learned", "segment_follow"} & set(config.models)  # segment_follow takes the model's settings
    model = load_pretrained(str(cfg.checkpoint), device=str(cfg.device)) if wants_model else None
    out = Path(str(cfg.out))
    done = _previous_rows(out, raw) if bool(cfg.resume) else []

    def save(rows: list) -> None:
        with atomic_open(out, "w") as f:
            json.dump({"config": raw, "rows": rows}, f, indent=1, default=str)

    rows = run_benchmark(config, model, progress=True, done=done, on_row=save)
    print(format_rows(rows))
    print(f"wrote {cfg.out}")
    return 0
