"""Weighted total of the cost terms: equals the weighted sum of the individual terms, skips terms
without weight or inputs, config validation and shape errors."""

from __future__ import annotations

import math

import pytest
import torch

from pointworld.model.inputs import Prediction
from pointworld.planning.cost_terms import (
    goal_cost,
    goal_turn_cost,
    joint_limit_cost,
    keep_still_cost,
    reach_cost,
    smoothness_cost,
    uncertainty_cost,
    workspace_cost,
)
from pointworld.planning.costs import TERMS, CostConfig, total_cost
from pointworld.planning.goals import PointGoal
from pointworld.planning.penetration import penetration_cost

DT = torch.float64


def _goal(indices: list[int], targets: torch.Tensor, keep_still: torch.Tensor | None = None) -> PointGoal:
    return PointGoal(indices=torch.tensor(indices, dtype=torch.int64), targets=targets, keep_still=keep_still)


def test_cost_config_validation() -> None:
    CostConfig(workspace_low=(0, -1, 0), workspace_high=(1, 1, 1))
    with pytest.raises(ValueError, match="CostConfig.goal"):
        CostConfig(goal=-1.0)
    with pytest.raises(ValueError, match="CostConfig.smoothness"):
        CostConfig(smoothness=math.nan)
    with pytest.raises(ValueError, match="both or neither"):
        CostConfig(workspace_low=(0, 0, 0))
    with pytest.raises(ValueError, match="low < high"):
        CostConfig(workspace_low=(0, 0, 0), workspace_high=(1, 1, 0))
    with pytest.raises(ValueError, match="penetration_margin_m"):
        CostConfig(penetration_margin_m=0.0)
    with pytest.raises(ValueError, match="CostConfig.reach"):
        CostConfig(reach=-0.5)
    with pytest.raises(ValueError, match="reach_standoff_m"):
        CostConfig(reach_standoff_m=math.inf)


def _total_inputs(gen: torch.Generator) -> dict:
    K, T, N, M, J, D = 4, 5, 30, 8, 3, 4
    points = torch.rand(N, 3, dtype=DT, generator=gen)
    points[:10, 2] = 0.0
    keep = torch.zeros(N, dtype=torch.bool)
    keep[20:] = True
    goal = _goal([12, 15, 18], torch.rand(3, 3, dtype=DT, generator=gen), keep_still=keep)
    pred = Prediction(displacement=0.05 * torch.randn(K, T, N, 3, dtype=DT, generator=gen),
                      log_var=torch.randn(K, T, N, dtype=DT, generator=gen) - 6.0)
    robot = torch.rand(K, T + 1, M, 3, dtype=DT, generator=gen) * 1.2 - 0.1
    q = torch.rand(K, T + 1, J, dtype=DT, generator=gen) * 2 - 1
    return {"points": points, "prediction": pred, "goal": goal,
            "actions": torch.randn(K, T, D, dtype=DT, generator=gen), "q": q, "lower": -torch.ones(J, dtype=DT),
            "upper": torch.ones(J, dtype=DT), "robot_points": robot, "static": torch.arange(N) < 10}


def test_total_cost_is_the_weighted_sum_of_the_terms() -> None:
    inputs = _total_inputs(torch.Generator().manual_seed(3))
    config = CostConfig(uncertainty=0.3, workspace_low=(0, 0, 0), workspace_high=(1, 1, 1),
                        penetration_margin_m=0.2, joint_limit_margin=0.2, goal_turn=0.2)
    costs, breakdown = total_cost(config, **inputs)
    assert tuple(breakdown) == TERMS and costs.shape == (4,)
    disp, goal = inputs["prediction"].displacement, inputs["goal"]
    selected = torch.zeros(30, dtype=torch.bool)
    selected[[12, 15, 18]] = True
    expected = {
        "goal": goal_cost(inputs["points"], disp, goal, 1.0, 0.1),
        "keep_still": keep_still_cost(disp, goal.keep_still),
        "workspace": workspace_cost(inputs["robot_points"], (0, 0, 0), (1, 1, 1)),
        "penetration": penetration_cost(inputs["robot_points"], inputs["points"], inputs["static"], 0.2),
        "joint_limit": joint_limit_cost(inputs["q"], inputs["lower"], inputs["upper"], 0.2),
        "smoothness": smoothness_cost(inputs["actions"]),
        "uncertainty": uncertainty_cost(inputs["prediction"].log_var, selected),
        "reach": reach_cost(inputs["robot_points"], inputs["points"][[12, 15, 18]], goal.targets, 0.03),
        "goal_turn": goal_turn_cost(inputs["points"], disp, goal),
    }
    for name in TERMS:
        torch.testing.assert_close(breakdown[name], expected[name], atol=1e-15, rtol=0)
        assert float(expected[name].abs().sum()) > 0.0, name  # every term is exercised
    weighted = sum(getattr(config, name) * expected[name] for name in TERMS)
    torch.testing.assert_close(costs, weighted, atol=1e-12, rtol=0)


def test_total_cost_skips_zero_weights_and_missing_inputs() -> None:
    inputs = _total_inputs(torch.Generator().manual_seed(4))
    inputs["static"] = torch.ones(3, dtype=torch.bool)  # wrong shape: proves penetration is never computed
    config = CostConfig(penetration=0.0, workspace_low=None, workspace_high=None)
    costs, breakdown = total_cost(config, **inputs)
    assert breakdown["penetration"].tolist() == [0.0] * 4 and breakdown["workspace"].tolist() == [0.0] * 4
    assert breakdown["uncertainty"].tolist() == [0.0] * 4  # default weight 0
    inputs.update(robot_points=None, static=None)
    inputs["goal"] = PointGoal(indices=inputs["goal"].indices, targets=inputs["goal"].targets, keep_still=None)
    costs, breakdown = total_cost(CostConfig(), **inputs)
    assert breakdown["keep_still"].tolist() == [0.0] * 4 and breakdown["penetration"].tolist() == [0.0] * 4
    torch.testing.assert_close(costs, breakdown["goal"] + breakdown["joint_limit"] + 0.01 * breakdown["smoothness"])


def test_total_cost_shape_mismatch() -> None:
    inputs = _total_inputs(torch.Generator().manual_seed(5))
    with pytest.raises(ValueError, match="actions"):
        total_cost(CostConfig(), **{**inputs, "actions": inputs["actions"][:3]})
    with pytest.raises(ValueError, match="q"):
        total_cost(CostConfig(), **{**inputs, "q": inputs["q"][:, :5]})
    with pytest.raises(ValueError, match="robot_points"):
        total_cost(CostConfig(), **{**inputs, "robot_points": inputs["robot_points"][:, :5]})
