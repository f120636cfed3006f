"""Planner cost terms: hand-made cases with known values, naive-loop references and bad input."""

from __future__ import annotations

import math

import pytest
import torch

from pointworld.geometry.rotations import axis_angle_to_matrix
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
from pointworld.planning.goals import PointGoal

DT = torch.float64


def _goal(indices: list[int], targets: torch.Tensor, keep_still: torch.Tensor | None = None) -> PointGoal:
    return PointGoal(indices=torch.tensor(indices, dtype=torch.int64), targets=targets, keep_still=keep_still)


def test_goal_cost_zero_when_reached_and_known_value() -> None:
    points = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=DT)
    targets = torch.tensor([[0.3, 0.0, 0.0], [0.0, 1.0, 0.4]], dtype=DT)
    goal = _goal([0, 2], targets)
    disp = torch.zeros(2, 2, 3, 3, dtype=DT)  # K=2, T=2
    disp[0, :, 0] = torch.tensor([0.3, 0.0, 0.0], dtype=DT)  # candidate 0 reaches both targets at t=1 and t=2
    disp[0, :, 2] = torch.tensor([0.0, 0.0, 0.4], dtype=DT)
    disp[0, :, 1] = 5.0  # an unselected point may do anything
    cost = goal_cost(points, disp, goal, terminal_weight=1.0, running_weight=0.1)
    assert cost.shape == (2,) and cost.dtype == DT
    assert cost[0].item() == pytest.approx(0.0, abs=1e-15)
    # candidate 1 stays put: distances 0.3 and 0.4 at every step -> 1.0 * 0.35 + 0.1 * 0.35
    assert cost[1].item() == pytest.approx(0.385, abs=1e-12)


def test_goal_cost_matches_naive_loop() -> None:
    gen = torch.Generator().manual_seed(1)
    K, T, N = 3, 4, 7
    points = torch.rand(N, 3, dtype=DT, generator=gen)
    disp = 0.1 * torch.randn(K, T, N, 3, dtype=DT, generator=gen)
    idx = [5, 1, 3]
    targets = torch.rand(3, 3, dtype=DT, generator=gen)
    cost = goal_cost(points, disp, _goal(idx, targets), terminal_weight=0.7, running_weight=0.2)
    for k in range(K):
        term = sum(math.dist((points[i] + disp[k, -1, i]).tolist(), targets[j].tolist())
                   for j, i in enumerate(idx)) / 3
        run = sum(math.dist((points[i] + disp[k, t, i]).tolist(), targets[j].tolist())
                  for t in range(T) for j, i in enumerate(idx)) / (3 * T)
        assert cost[k].item() == pytest.approx(0.7 * term + 0.2 * run, abs=1e-12)
    cost32 = goal_cost(points.float(), disp.float(), _goal(idx, targets.float()), 0.7, 0.2)
    assert cost32.dtype == torch.float32
    torch.testing.assert_close(cost32.double(), cost, atol=1e-6, rtol=0)


def test_goal_cost_bad_input() -> None:
    points = torch.zeros(4, 3, dtype=DT)
    disp = torch.zeros(2, 3, 4, 3, dtype=DT)
    with pytest.raises(ValueError, match="goal.indices.*\\[0, 4\\)"):
        goal_cost(points, disp, _goal([1, 4], torch.zeros(2, 3, dtype=DT)))
    with pytest.raises(ValueError, match="displacement"):
        goal_cost(points, disp[:, :, :3], _goal([1], torch.zeros(1, 3, dtype=DT)))
    with pytest.raises(ValueError, match="running_weight"):
        goal_cost(points, disp, _goal([1], torch.zeros(1, 3, dtype=DT)), running_weight=-1.0)


def test_keep_still_cost() -> None:
    disp = torch.zeros(2, 3, 4, 3, dtype=DT)
    mask = torch.tensor([True, False, True, False])
    disp[:, :, 1] = float("inf")  # unmasked points do not count, even non-finite ones
    disp[1, :, 2] = torch.tensor([0.03, 0.04, 0.0], dtype=DT)  # one of two masked points moves 5 cm at every step
    disp[1, 0, 0] = torch.tensor([0.0, 0.0, 0.06], dtype=DT)  # the other moves 6 cm at step 1 only
    cost = keep_still_cost(disp, mask)
    assert cost[0].item() == 0.0
    assert cost[1].item() == pytest.approx((3 * 0.05 + 0.06) / 6, abs=1e-12)
    assert keep_still_cost(disp, torch.zeros(4, dtype=torch.bool)).tolist() == [0.0, 0.0]
    with pytest.raises(TypeError, match="mask"):
        keep_still_cost(disp, mask.double())
    with pytest.raises(ValueError, match="mask"):
        keep_still_cost(disp, mask[:3])


def test_workspace_cost() -> None:
    low, high = (0.0, -0.5, 0.0), (1.0, 0.5, 1.0)
    robot = torch.full((2, 4, 5, 3), 0.5, dtype=DT)  # K=2, T+1=4, M=5, all inside
    robot[0, :, :, 0] = 1.0  # on the boundary counts as inside
    robot[1, 2, 3] = torch.tensor([1.1, 0.0, -0.2], dtype=DT)  # 0.1 beyond x and 0.2 below z at one step
    robot[1, 2, 4] = torch.tensor([1.05, 0.0, 0.5], dtype=DT)  # smaller violation at the same step: not the worst
    cost = workspace_cost(robot, low, high)
    assert cost[0].item() == 0.0
    assert cost[1].item() == pytest.approx((0.1**2 + 0.2**2) / 4, abs=1e-12)
    torch.testing.assert_close(workspace_cost(robot, torch.tensor(low), torch.tensor(high)), cost)
    with pytest.raises(ValueError, match="low <= high"):
        workspace_cost(robot, high, low)
    with pytest.raises(ValueError, match="low"):
        workspace_cost(robot, (0.0, 0.0), high)
    with pytest.raises(ValueError, match="robot_points"):
        workspace_cost(robot[0], low, high)


def test_joint_limit_cost() -> None:
    lower = torch.tensor([-1.0, 0.0, -math.inf, 0.5], dtype=DT)
    upper = torch.tensor([1.0, 0.04, math.inf, 0.5], dtype=DT)  # a narrow joint, a continuous one, a fixed one
    q = torch.zeros(3, 2, 4, dtype=DT)  # K=3, T+1=2
    q[:, :, 1] = 0.02
    q[:, :, 3] = 0.5
    q[1, 1, 0] = 1.0  # on the upper limit: v = 1
    q[1, 1, 2] = 1e6  # continuous joint: free
    q[2, 0, 0] = -0.95  # halfway into the band of 0.1: v = 0.5
    q[2, 1, 1] = 0.0  # narrow joint (range 0.04 < 2 * margin): band 0.02, on the limit: v = 1
    cost = joint_limit_cost(q, lower, upper, margin=0.1)
    assert cost[0].item() == 0.0
    assert cost[1].item() == pytest.approx(1.0 / 2, abs=1e-12)
    assert cost[2].item() == pytest.approx((0.25 + 1.0) / 2, abs=1e-12)
    with pytest.raises(ValueError, match="lower <= upper"):
        joint_limit_cost(q, upper, lower, margin=0.1)
    with pytest.raises(ValueError, match="margin"):
        joint_limit_cost(q, lower, upper, margin=0.0)
    with pytest.raises(ValueError, match="upper"):
        joint_limit_cost(q, lower, upper[:3], margin=0.1)


def test_smoothness_cost() -> None:
    t = torch.arange(5, dtype=DT)
    actions = torch.stack([torch.stack([torch.full_like(t, 0.3), 0.1 * t], -1),  # constant and linear: 0
                           torch.stack([t * t, torch.zeros_like(t)], -1)])  # second difference 2
    cost = smoothness_cost(actions)
    assert cost[0].item() == pytest.approx(0.0, abs=1e-15)
    assert cost[1].item() == pytest.approx(4.0, abs=1e-12)
    assert smoothness_cost(actions[:, :2]).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="actions"):
        smoothness_cost(actions[0])


def test_uncertainty_cost() -> None:
    log_var = torch.full((2, 3, 4), 50.0, dtype=DT)  # unselected points: huge variance, must not count
    selection = torch.tensor([False, True, True, False])
    log_var[0, :, 1:3] = math.log(0.01**2)
    log_var[1, :, 1] = math.log(0.02**2)
    log_var[1, :, 2] = math.log(0.04**2)
    cost = uncertainty_cost(log_var, selection)
    torch.testing.assert_close(cost, torch.tensor([0.01, 0.03], dtype=DT), atol=1e-12, rtol=0)
    assert uncertainty_cost(log_var, torch.zeros(4, dtype=torch.bool)).tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="selection"):
        uncertainty_cost(log_var, selection[:2])


def _box_points(center: tuple[float, float, float], half: float, n: int = 5) -> torch.Tensor:
    g = torch.linspace(-half, half, n, dtype=DT)
    grid = torch.stack(torch.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    return grid + torch.tensor(center, dtype=DT)


def _naive_reach(robot: torch.Tensor, points: torch.Tensor, targets: torch.Tensor, standoff: float) -> list[float]:
    c = [sum(p[i] for p in points.tolist()) / len(points) for i in range(3)]
    t = [sum(p[i] for p in targets.tolist()) / len(targets) for i in range(3)]
    d = [t[0] - c[0], t[1] - c[1], 0.0]
    n = math.hypot(d[0], d[1])
    d = [v / n for v in d]
    behind = max(sum((c[i] - p[i]) * d[i] for i in range(3)) for p in points.tolist())
    pre = [c[i] - d[i] * (behind + standoff) for i in range(3)]
    return [min(math.dist(r, pre) for step in cand.tolist() for r in step) for cand in robot]


def test_reach_cost_known_values() -> None:
    points = _box_points((0.5, 0.0, 0.03), 0.03)
    targets = points + torch.tensor([0.05, 0.0, 0.02], dtype=DT)  # the vertical part is ignored
    robot = torch.full((3, 4, 2, 3), 1.0, dtype=DT)  # K=3, T+1=4, M=2
    robot[0, 2, 1] = torch.tensor([0.44, 0.0, 0.03], dtype=DT)  # exactly at pre = c - d (0.03 + 0.03)
    robot[1] = torch.tensor([0.44, 0.0, 0.33], dtype=DT)  # 0.3 m above pre at every step
    robot[2, 3, 0] = torch.tensor([0.44, 0.04, 0.06], dtype=DT)  # 0.05 m from pre at the last step
    cost = reach_cost(robot, points, targets, standoff_m=0.03)
    assert cost.shape == (3,) and cost.dtype == DT
    torch.testing.assert_close(cost, torch.tensor([0.0, 0.3, 0.05], dtype=DT), atol=1e-12, rtol=0)
    # goal reached, or only a vertical motion asked for: no push direction, no cost
    assert reach_cost(robot, points, points).tolist() == [0.0] * 3
    lift = points + torch.tensor([0.0, 0.0, 0.1], dtype=DT)
    assert reach_cost(robot, points, lift).tolist() == [0.0] * 3
    f32 = reach_cost(robot.float(), points.float(), targets.float(), 0.03)
    assert f32.dtype == torch.float32 and torch.allclose(f32.double(), cost, atol=1e-6)


def test_reach_cost_matches_naive_loop() -> None:
    gen = torch.Generator().manual_seed(7)
    points = torch.rand(20, 3, dtype=DT, generator=gen) * 0.06 + torch.tensor([0.4, -0.1, 0.0], dtype=DT)
    yaw = 0.7  # a rigid goal: turn and push diagonally
    R = torch.tensor([[math.cos(yaw), -math.sin(yaw), 0.0], [math.sin(yaw), math.cos(yaw), 0.0], [0, 0, 1]], dtype=DT)
    targets = (points - points.mean(0)) @ R.T + points.mean(0) + torch.tensor([-0.04, 0.07, 0.0], dtype=DT)
    robot = torch.rand(5, 6, 7, 3, dtype=DT, generator=gen) * 0.5 + torch.tensor([0.2, -0.3, 0.0], dtype=DT)
    expected = torch.tensor(_naive_reach(robot, points, targets, 0.02), dtype=DT)
    torch.testing.assert_close(reach_cost(robot, points, targets, standoff_m=0.02), expected, atol=1e-12, rtol=0)


def test_reach_cost_bad_input() -> None:
    points = _box_points((0.5, 0.0, 0.03), 0.03, n=2)
    targets = points + 0.05
    robot = torch.zeros(2, 3, 4, 3, dtype=DT)
    with pytest.raises(ValueError, match="robot_points"):
        reach_cost(robot[0], points, targets)
    with pytest.raises(ValueError, match="goal_targets"):
        reach_cost(robot, points, targets[:3])
    with pytest.raises(ValueError, match="goal_points"):
        reach_cost(robot, points[:0], targets[:0])
    with pytest.raises(ValueError, match="standoff_m"):
        reach_cost(robot, points, targets, standoff_m=-0.01)
    with pytest.raises(ValueError, match="min_push_m"):
        reach_cost(robot, points, targets, min_push_m=0.0)
    with pytest.raises(ValueError, match="goal_points"):
        reach_cost(robot, points * math.nan, targets)


def _turn(axis: list[float], angle: float) -> torch.Tensor:
    a = torch.tensor(axis, dtype=DT)
    return axis_angle_to_matrix(angle * a / a.norm())


def test_goal_turn_cost_is_the_angle_between_predicted_and_wanted_orientation() -> None:
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(12, 3, dtype=DT, generator=gen)
    idx = torch.tensor([1, 4, 5, 7, 9])
    centre = points[idx].mean(0)
    goal_R, shift = _turn([0.0, 0.0, 1.0], 0.6), torch.tensor([0.2, -0.1, 0.0], dtype=DT)
    goal = PointGoal(indices=idx, targets=(points[idx] - centre) @ goal_R.T + centre + shift)
    # candidates: the goal turn exactly (any shift), 0.6 - 0.25 rad about z, and the goal turn then 0.4 rad about x
    turns = [goal_R, _turn([0.0, 0.0, 1.0], 0.25), _turn([1.0, 0.0, 0.0], 0.4) @ goal_R]
    disp = torch.zeros(3, 2, 12, 3, dtype=DT)
    for k, R in enumerate(turns):
        disp[k, -1] = (points - centre) @ R.T + centre - points + 0.05 * k
    cost = goal_turn_cost(points, disp, goal)
    torch.testing.assert_close(cost, torch.tensor([0.0, 0.35, 0.4], dtype=DT), atol=1e-6, rtol=0)
    few = PointGoal(indices=idx[:2], targets=goal.targets[:2])  # no orientation from 2 points
    assert goal_turn_cost(points, disp, few).tolist() == [0.0, 0.0, 0.0]
