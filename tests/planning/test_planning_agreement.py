"""scripts/planning_agreement.py: the per-batch agreement numbers on hand-made cases, and the probed planner
scores every candidate batch with its probes without changing the plan."""

from __future__ import annotations

import math

import pytest
import torch

from pointworld.model.baselines import RigidFollow, ZeroMotion
from pointworld.planning.goals import translation_goal
from pointworld.planning.planner import MPCPlanner
from pointworld.robot.assets import shipped_urdf_path
from pointworld.robot.urdf import load_robot
from tests.planning.test_planner import make_scene, q0_like, small_config
from tests.script_loader import load_script


@pytest.fixture(scope="module")
def agreement():
    return load_script("planning_agreement")


def test_identical_model_agrees_exactly(agreement) -> None:
    cost = torch.tensor([0.3, 0.1, 0.2], dtype=torch.float64)
    motion = torch.tensor([[0.02, 0.0], [0.0, 0.03], [0.001, 0.0]], dtype=torch.float64)
    row = agreement.batch_agreement(cost, cost, motion, motion)
    assert row["regret"] == 0.0 and row["false"] == 0.0 and row["missed"] == 0.0
    assert row["cos"] == pytest.approx(1.0, abs=1e-12) and row["ratio"] == pytest.approx(1.0, abs=1e-12)
    assert row["spread"] == pytest.approx(0.2, abs=1e-12)


def test_regret_direction_and_move_errors_by_hand(agreement) -> None:
    true_cost = torch.tensor([0.3, 0.1, 0.2, 0.25], dtype=torch.float64)
    model_cost = torch.tensor([0.0, 0.5, 0.1, 0.2], dtype=torch.float64)  # prefers candidate 0
    true_motion = torch.tensor([[0.02, 0.0], [0.0, 0.03], [0.0, 0.0], [0.04, 0.0]], dtype=torch.float64)
    # 0: reversed and twice as long; 1: missed; 2: a move that does not happen; 3: right direction, half length
    model_motion = torch.tensor([[-0.04, 0.0], [0.0, 0.001], [0.02, 0.0], [0.02, 0.0]], dtype=torch.float64)
    row = agreement.batch_agreement(true_cost, model_cost, true_motion, model_motion)
    assert row["regret"] == pytest.approx(0.3 - 0.1, abs=1e-12)
    assert row["cos"] == pytest.approx((-1.0 + 1.0) / 2, abs=1e-12)  # candidates 0 and 3 move in both
    assert row["ratio"] == pytest.approx((2.0 + 0.5) / 2, abs=1e-12)
    assert row["missed"] == pytest.approx(0.25) and row["false"] == pytest.approx(0.25)


def test_zero_motion_model_has_no_direction(agreement) -> None:
    motion = torch.tensor([[0.02, 0.0], [0.0, 0.0]], dtype=torch.float64)
    row = agreement.batch_agreement(torch.tensor([0.1, 0.2]), torch.tensor([0.2, 0.1]), motion, torch.zeros(2, 2))
    assert math.isnan(row["cos"]) and math.isnan(row["ratio"])
    assert row["missed"] == pytest.approx(0.5) and row["regret"] == pytest.approx(0.1, abs=1e-7)
    summary = agreement.summarize([row, {**row, "spread": 0.0}], min_spread=0.001)
    assert summary["batches"] == 1 and math.isnan(summary["cos"]) and summary["missed"] == pytest.approx(0.5)


def test_probed_planner_scores_every_batch_and_plans_as_before(agreement) -> None:
    torch.set_num_threads(1)
    robot = load_robot(shipped_urdf_path("flying_gripper"))
    scene, cluster, table = make_scene()
    goal = translation_goal(scene.points[0], cluster, (0.08, 0.0, 0.0), keep_still=table)
    config = small_config()
    truth = RigidFollow(radius_m=0.05)
    probes = {"same": MPCPlanner(robot, RigidFollow(radius_m=0.05), config, horizon=6),
              "zero": MPCPlanner(robot, ZeroMotion(), config, horizon=6)}
    probed = agreement.ProbedPlanner(robot, truth, config, horizon=6, probes=probes)
    plain = MPCPlanner(robot, truth, config, horizon=6)
    got = probed.plan(scene, q0_like(), 1.0, goal)
    want = plain.plan(scene, q0_like(), 1.0, goal)
    torch.testing.assert_close(got.actions, want.actions, rtol=0, atol=0)
    batches = config.optimizer.iterations + 1  # every optimizer iteration, then the final mean/best pair
    assert len(probed.rows["same"]) == len(probed.rows["zero"]) == batches
    assert all(r["regret"] == 0.0 and r["false"] == 0.0 and r["missed"] == 0.0 for r in probed.rows["same"])
    assert all(math.isnan(r["cos"]) or r["cos"] == pytest.approx(1.0) for r in probed.rows["same"])
    assert any(r["missed"] > 0 for r in probed.rows["zero"])  # the hand pushes the cluster; zero never moves it
