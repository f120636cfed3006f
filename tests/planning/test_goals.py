"""Point goals: selections, rigid/translation/targets goals, goals from simulated tasks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pointworld.planning.goals import (
    PointGoal,
    goal_from_task,
    rigid_goal,
    select_box,
    select_color,
    select_indices,
    targets_goal,
    translation_goal,
)
from pointworld.sim.task_goals import Task

F64 = torch.float64


def _cloud(n: int = 500, dtype: torch.dtype = F64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=gen, dtype=dtype), torch.rand(n, 3, generator=gen, dtype=dtype)


def _transform(yaw: float, t: tuple[float, float, float]) -> np.ndarray:
    T = np.eye(4)
    T[:2, :2] = [[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]]
    T[:3, 3] = t
    return T


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_selectors_match_naive_loops(dtype):
    points, colors = _cloud(dtype=dtype)
    low, high = [0.2, 0.1, 0.3], [0.6, 0.5, 0.9]
    mask = torch.arange(500) % 3 != 0
    sel = select_box(points, low, high, mask)
    ref = [all(low[a] <= float(p[a]) <= high[a] for a in range(3)) and bool(m) for p, m in zip(points, mask)]
    assert sel.dtype == torch.bool and sel.tolist() == ref and 0 < sum(ref) < 500
    rgb, tol = [0.5, 0.4, 0.3], 0.3
    ref = [math.dist([float(v) for v in c], rgb) <= tol for c in colors]
    assert select_color(colors, rgb, tol).tolist() == ref and 0 < sum(ref) < 500
    sel = select_indices(500, [3, 499, 0])
    assert sel.nonzero()[:, 0].tolist() == [0, 3, 499]
    # Box bounds are inclusive.
    corner = torch.tensor([[0.2, 0.1, 0.3], [0.6, 0.5, 0.9], [0.61, 0.5, 0.9]], dtype=dtype)
    assert select_box(corner, corner[0], corner[1]).tolist() == [True, True, False]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_rigid_and_translation_goals(dtype):
    points, _ = _cloud(dtype=dtype)
    sel = select_box(points, [0.0, 0.0, 0.0], [0.4, 0.4, 0.4])
    T = _transform(0.7, (0.1, -0.2, 0.05))
    keep = points[:, 2] < 0.2
    goal = rigid_goal(points, sel, torch.tensor(T, dtype=dtype), keep_still=keep)
    idx = np.flatnonzero(sel.numpy())
    np.testing.assert_array_equal(goal.indices.numpy(), idx)
    p = points.double().numpy()[idx]
    expect = p @ T[:3, :3].T + T[:3, 3]
    atol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(goal.targets.double().numpy(), expect, atol=atol)
    assert goal.targets.dtype == dtype and goal.num_points == len(idx)
    assert torch.equal(goal.keep_still, keep & ~sel)  # goal points never have to keep still
    assert torch.equal(goal.selection(500), sel)
    moved = translation_goal(points, sel, [0.0, 0.1, -0.02])
    np.testing.assert_allclose(moved.targets.double().numpy(), p + [0.0, 0.1, -0.02], atol=atol)
    assert moved.keep_still is None


def test_goal_from_task_matches_task_contains():
    points, _ = _cloud(2000, seed=1)
    T_goal_start = _transform(0.3, (0.05, 0.02, 0.0))
    T_world_start = _transform(0.0, (0.5, 0.5, 0.2))
    task = Task(kind="push", target="object_001", seed=0, select_min_world=np.array([0.4, 0.4, 0.1]),
                select_max_world=np.array([0.6, 0.6, 0.3]), T_goal_start=T_goal_start,
                T_world_start=T_world_start, T_world_goal=T_goal_start @ T_world_start, position_tolerance_m=0.02)
    goal = goal_from_task(task, points)
    np.testing.assert_array_equal(goal.indices.numpy(), np.flatnonzero(task.contains(points.numpy())))
    p = points.numpy()[goal.indices.numpy()]
    np.testing.assert_allclose(goal.targets.numpy(), p @ T_goal_start[:3, :3].T + T_goal_start[:3, 3], atol=1e-12)
    far = points + 5.0
    with pytest.raises(ValueError, match="goal selects no points: the selection box of the push task"):
        goal_from_task(task, far)
    with pytest.raises(TypeError, match="task"):
        goal_from_task(object(), points)


def test_bad_goal_arguments():
    points, colors = _cloud()
    sel = select_box(points, [0, 0, 0], [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="goal selects no points: my box"):
        rigid_goal(points, torch.zeros(500, dtype=torch.bool), torch.eye(4, dtype=F64), selector="my box")
    with pytest.raises(ValueError, match="T_goal_start"):
        rigid_goal(points, sel, 2 * torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match="selection"):
        rigid_goal(points, sel[:10], torch.eye(4, dtype=F64))
    with pytest.raises(TypeError, match="selection"):
        translation_goal(points, sel.long(), [0, 0, 0])
    with pytest.raises(ValueError, match="offset"):
        translation_goal(points, sel, [0, 0])
    with pytest.raises(ValueError, match="points"):
        select_box(points[:, :2], [0, 0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="box_min"):
        select_box(points, [1, 1, 1], [0, 0, 0])
    with pytest.raises(ValueError, match="rgb"):
        select_color(colors, [2.0, 0, 0], 0.1)
    with pytest.raises(ValueError, match="tolerance"):
        select_color(colors, [1.0, 0, 0], -0.1)
    with pytest.raises(ValueError, match=r"indices: expected values in \[0, 500\)"):
        select_indices(500, [500])
    with pytest.raises(ValueError, match="indices"):
        select_indices(500, [1.5])
    with pytest.raises(ValueError, match="goal selects no points"):
        PointGoal(torch.zeros(0, dtype=torch.int64), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="targets"):
        PointGoal(torch.tensor([1, 2]), torch.zeros(3, 3))
    with pytest.raises(TypeError, match="indices"):
        PointGoal(torch.tensor([1.0, 2.0]), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="indices"):
        PointGoal(torch.tensor([1, 20]), torch.zeros(2, 3), keep_still=torch.zeros(10, dtype=torch.bool))


def test_targets_goal():
    points, _ = _cloud(50)
    sel = select_indices(50, [3, 9, 4])
    targets = torch.arange(9, dtype=F64).reshape(3, 3)
    keep = torch.ones(50, dtype=torch.bool)
    goal = targets_goal(points, sel, targets, keep_still=keep)
    assert goal.indices.tolist() == [3, 4, 9] and torch.equal(goal.targets, targets)
    assert goal.keep_still.sum() == 47 and not bool(goal.keep_still[[3, 4, 9]].any())
    with pytest.raises(ValueError, match=r"targets: expected one target per selected point \(3, 3\)"):
        targets_goal(points, sel, targets[:2])
    with pytest.raises(ValueError, match="goal selects no points: my box"):
        targets_goal(points, torch.zeros(50, dtype=torch.bool), targets, selector="my box")
