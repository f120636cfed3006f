"""Diagnostic: how well a world model ranks the planner's candidate actions, judged by the simulator.

Push episodes are driven by the planner with the oracle (the simulator as the model), so the states are
those a planner that knows the dynamics visits. Every batch of K candidates the optimizer scores is also
scored by each model under test, from the same observation, joints and goal. Per model, over the batches
where the true goal cost varies between candidates by more than ``--min-spread-m`` (the gripper is at the
object, so the choice matters):

- ``regret``: true cost of the model's lowest-cost candidate minus the lowest true cost in the batch (cost
  units: about m of goal distance). Following the model instead of the simulator loses this per step.
- ``cos``: among candidates that move the goal points' centroid more than 1 cm in both the truth and the
  model, the cosine between the predicted and the true horizontal displacement at the last step;
  ``ratio``: the median of their lengths, predicted / true.
- ``false``: share of candidates the model moves > 1 cm that truly move < 5 mm; ``missed``: the reverse.

Usage: ``python scripts/planning_agreement.py [--robot flying_gripper] [--models segment_follow learned
zero_motion] [--seeds 1000 1001 1002 1003] [--replans 12]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable

import numpy as np
import torch

from pointworld.heap import retain_freed_memory
from pointworld.model.inputs import SceneInput
from pointworld.planning.benchmark import TASK_SCENES, BenchmarkConfig, benchmark_predictor, task_planner
from pointworld.planning.closed_loop import run_episode
from pointworld.planning.goals import PointGoal
from pointworld.planning.planner import MPCPlanner
from pointworld.planning.rollout import CandidateEvaluator, Evaluation, PhaseClock
from pointworld.sim.config import SceneConfig
from pointworld.sim.task import TaskEnv

MOVED_M = 0.01
STILL_M = 0.005


def batch_agreement(true_cost: torch.Tensor, model_cost: torch.Tensor, true_motion: torch.Tensor,
                    model_motion: torch.Tensor) -> dict[str, float]:
    """Agreement of one model with the truth on one batch of K candidates.

    Args:
        true_cost, model_cost: (K,) total costs of the candidates under the truth and under the model.
        true_motion, model_motion: (K, 2) horizontal displacement of the goal points' centroid at the
            last step, m, world frame.

    Returns:
        ``regret`` (cost units), ``cos`` and ``ratio`` (NaN when no candidate moves > 1 cm in both),
        ``false`` and ``missed`` (shares of the K candidates), ``spread`` (range of the true costs).
    """
    tc, mc = true_cost.double(), model_cost.double()
    nt, nm = true_motion.double().norm(dim=-1), model_motion.double().norm(dim=-1)
    both = (nt > MOVED_M) & (nm > MOVED_M)
    cos = (true_motion.double() * model_motion.double()).sum(-1) / (nt * nm).clamp(min=1e-12)
    return {"regret": float(tc[torch.argmin(mc)] - tc.min()),
            "cos": float(cos[both].mean()) if both.any() else math.nan,
            "ratio": float(torch.quantile(nm[both] / nt[both], 0.5)) if both.any() else math.nan,
            "false": float(((nm > MOVED_M) & (nt < STILL_M)).double().mean()),
            "missed": float(((nt > MOVED_M) & (nm < STILL_M)).double().mean()),
            "spread": float(tc.max() - tc.min())}


def _goal_motion(ev: Evaluation, indices: torch.Tensor) -> torch.Tensor:
    """(K, 2) horizontal displacement of the goal points' centroid at the last step, m."""
    return ev.prediction.displacement[:, -1, indices.to(ev.prediction.displacement.device)].mean(1)[:, :2]


class _ProbedEvaluator:
    """Scores with the base evaluator and, on the same actions, with every probe; records the agreement."""

    def __init__(self, base: CandidateEvaluator, probes: dict[str, CandidateEvaluator],
                 record: Callable[[str, dict[str, float]], None]) -> None:
        self.base, self.probes, self.record = base, probes, record

    def __call__(self, actions: torch.Tensor) -> Evaluation:
        ev = self.base(actions)
        idx = self.base.goal.indices
        for name, probe in self.probes.items():
            other = probe(actions)
            self.record(name, batch_agreement(ev.costs, other.costs, _goal_motion(ev, idx),
                                              _goal_motion(other, idx)))
        return ev


class ProbedPlanner(MPCPlanner):
    """An MPC planner whose every candidate batch is also scored by the ``probes`` planners' models
    (same config, same state); rows go to ``rows[name]``. It plans with its own predictor only."""

    def __init__(self, *args, probes: dict[str, MPCPlanner], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.probes = probes
        self.rows: dict[str, list[dict[str, float]]] = {name: [] for name in probes}

    def candidate_evaluator(self, scene: SceneInput, q0: torch.Tensor, gripper0: float, goal: PointGoal,
                            static: torch.Tensor | None, clock: PhaseClock) -> _ProbedEvaluator:
        base = super().candidate_evaluator(scene, q0, gripper0, goal, static, clock)
        probes = {name: p.candidate_evaluator(scene, q0, gripper0, goal, static, PhaseClock(q0.device))
                  for name, p in self.probes.items()}
        return _ProbedEvaluator(base, probes, lambda name, row: self.rows[name].append(row))


def summarize(rows: list[dict[str, float]], min_spread: float) -> dict[str, float]:
    """Means over the batches whose true cost spread exceeds ``min_spread`` (ratio: median)."""
    kept = [r for r in rows if r["spread"] > min_spread]
    out = {"batches": float(len(kept))}
    for key in ("regret", "cos", "false", "missed"):
        values = [r[key] for r in kept if not math.isnan(r[key])]
        out[key] = float(np.mean(values)) if values else math.nan
    ratios = [r["ratio"] for r in kept if not math.isnan(r["ratio"])]
    out["ratio"] = float(np.median(ratios)) if ratios else math.nan
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--robot", default="flying_gripper")
    parser.add_argument("--models", nargs="+", default=["segment_follow", "learned", "zero_motion"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1000, 1001, 1002, 1003])
    parser.add_argument("--replans", type=int, default=12)
    parser.add_argument("--min-spread-m", type=float, default=0.002)
    parser.add_argument("--checkpoint", default=None, help="world model for 'learned' (default: the bundled one)")
    args = parser.parse_args()
    retain_freed_memory()
    config = BenchmarkConfig(robots=(args.robot,), max_replans=args.replans)
    env = TaskEnv(SceneConfig(robot=args.robot, **TASK_SCENES["push"]),
                  dataclasses.replace(config.task, kind="push"))
    model = None
    if "learned" in args.models:
        from pointworld.train.pretrained import load_pretrained
        model = load_pretrained(args.checkpoint)
    horizon = config.horizon if model is None else model.config.horizon
    planner_config = task_planner(config.planner, "push", config.gripper_tasks)
    probes = {m: MPCPlanner(env.robot, benchmark_predictor(m, env, model), planner_config, horizon=horizon)
              for m in args.models}
    planner = ProbedPlanner(env.robot, benchmark_predictor("oracle", env, model), planner_config, horizon=horizon,
                            probes=probes)
    for seed in args.seeds:
        result = run_episode(env, planner, seed, args.replans)
        print(f"seed {seed}: oracle {'success' if result.success else 'failure'}, "
              f"final error {result.final_error_m * 100:.1f} cm", flush=True)
    print(f"{'model':15s} {'batches':>7s} {'regret':>7s} {'cos':>6s} {'ratio':>6s} {'false':>6s} {'missed':>6s}")
    for name, rows in planner.rows.items():
        s = summarize(rows, args.min_spread_m)
        print(f"{name:15s} {int(s['batches']):7d} {s['regret']:7.4f} {s['cos']:6.2f} {s['ratio']:6.2f} "
              f"{s['false']:6.3f} {s['missed']:6.3f}")


if __name__ == "__main__":
    main()
