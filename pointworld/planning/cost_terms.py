"""Batched cost terms of the MPC planner, one function per term (penetration: :mod:`.penetration`).

Every term scores K candidates at once and returns a (K,) tensor in the dtype and on the device of its
inputs; lower is better and 0 means "satisfied". No term loops over K in Python. Units are given in
each docstring (m for distances, m^2 for squared violations, dimensionless for normalised penalties);
:func:`pointworld.planning.costs.total_cost` weighs and sums them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from pointworld.geometry.checks import (
    require_dtype,
    require_finite,
    require_floating,
    require_positive,
    require_shape,
)
from pointworld.planning.goals import PointGoal
from pointworld.planning.tracking import fit_rigid_transform


def _mask(name: str, mask: torch.Tensor, n: int) -> torch.Tensor:
    return require_shape(name, require_dtype(name, mask, torch.bool), (n,), max_leading=0)


def _displacement(displacement: torch.Tensor, n: int | None = None) -> torch.Tensor:
    require_shape("displacement", require_floating("displacement", displacement), (None, None, n, 3),
                  max_leading=0)
    return displacement


def goal_cost(points: torch.Tensor, displacement: torch.Tensor, goal: PointGoal,
              terminal_weight: float = 1.0, running_weight: float = 0.1) -> torch.Tensor:
    """Distance of the goal points' predicted positions to their targets.

    ``terminal_weight * mean_P |p_T - target| + running_weight * mean_{t,P} |p_t - target|``, where
    ``p_t = points[indices] + displacement[:, t-1, indices]`` for t = 1..T.

    Args:
        points: (N, 3) scene points at t = 0, m, world frame.
        displacement: (K, T, N, 3) predicted displacement of every scene point from t = 0, m, world.
        goal: the selected points ``goal.indices`` (P,) and their targets ``goal.targets`` (P, 3), m, world.
        terminal_weight: weight (>= 0) of the distance at the last step.
        running_weight: weight (>= 0) of the distance averaged over all T steps.

    Returns:
        cost: (K,) weighted mean goal distance, m.
    """
    require_shape("points", require_floating("points", points), (None, 3), max_leading=0)
    n = points.shape[0]
    _displacement(displacement, n)
    indices = require_shape("goal.indices", require_dtype("goal.indices", goal.indices, torch.int64), (None,),
                            max_leading=0)
    targets = require_shape("goal.targets", goal.targets, (indices.shape[0], 3), max_leading=0)
    if bool((indices < 0).any()) or bool((indices >= n).any()):
        raise ValueError(f"goal.indices: expected indices in [0, {n}) (points), got values in "
                         f"[{int(indices.min())}, {int(indices.max())}]")
    for name, w in (("terminal_weight", terminal_weight), ("running_weight", running_weight)):
        if not (isinstance(w, (int, float)) and 0 <= w < math.inf):
            raise ValueError(f"{name}: expected a finite number >= 0, got {w!r}")
    indices = indices.to(points.device)
    start = points[indices]  # (P, 3)
    positions = start + displacement[:, :, indices]  # (K, T, P, 3)
    dist = torch.linalg.vector_norm(positions - targets.to(positions), dim=-1)  # (K, T, P)
    return terminal_weight * dist[:, -1].mean(-1) + running_weight * dist.mean((1, 2))


def goal_turn_cost(points: torch.Tensor, displacement: torch.Tensor, goal: PointGoal) -> torch.Tensor:
    """Angle between the goal points' predicted final orientation and the one their targets ask for.

    Both orientations are the least-squares rigid fits (Kabsch) of the points at t = 0 onto, respectively,
    their predicted positions at the last step and their targets; the cost is the angle of the rotation
    between the two. The mean-distance :func:`goal_cost` prices a turn of a small object at only its
    radius times the angle, so without this term a planner trades heading for position.

    Args:
        points: (N, 3) scene points at t = 0, m, world frame.
        displacement: (K, T, N, 3) predicted displacement from t = 0, m, world frame.
        goal: the selected points ``goal.indices`` (P,) and their targets ``goal.targets`` (P, 3), m, world.

    Returns:
        cost: (K,) rotation angle, rad, in [0, pi]; zeros when the goal has fewer than 3 points.
    """
    _displacement(displacement, points.shape[0])
    K = displacement.shape[0]
    indices = goal.indices.to(points.device)
    if indices.shape[0] < 3:
        return displacement.new_zeros(K)
    start = points[indices].to(displacement.dtype)  # (P, 3)
    final = start + displacement[:, -1, indices]  # (K, P, 3)
    R_pred = fit_rigid_transform(start.expand_as(final), final)[..., :3, :3]
    R_goal = fit_rigid_transform(start, goal.targets.to(start))[:3, :3]
    cos = (torch.einsum("ij,kij->k", R_goal, R_pred) - 1.0) / 2.0  # trace(R_goal R_pred^T) = 1 + 2 cos
    return torch.arccos(cos.clamp(-1.0, 1.0))


def keep_still_cost(displacement: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean predicted motion of the points that should stay where they are.

    Args:
        displacement: (K, T, N, 3) predicted displacement from t = 0, m, world frame.
        mask: (N,) bool, True for points that should not move.

    Returns:
        cost: (K,) mean over the T steps and the masked points of ``|displacement|``, m; 0 if the
        mask selects no point.
    """
    _displacement(displacement)
    mask = _mask("mask", mask, displacement.shape[2]).to(displacement.device)
    motion = torch.linalg.vector_norm(displacement, dim=-1)  # (K, T, N)
    count = mask.sum().clamp_min(1)
    return torch.where(mask, motion, 0.0).sum((1, 2)) / (count * max(1, displacement.shape[1]))


def _box_corner(name: str, value: torch.Tensor | Sequence[float], like: torch.Tensor) -> torch.Tensor:
    corner = torch.as_tensor(value, dtype=like.dtype, device=like.device)
    return require_shape(name, corner, (3,), max_leading=0)


def workspace_cost(robot_points: torch.Tensor, low: torch.Tensor | Sequence[float],
                   high: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Squared distance by which the robot points leave an axis-aligned workspace box.

    Per robot point, the squared distance to the box (0 inside); per step the worst robot point
    (the box is a safety limit, one point outside is enough); then the mean over the T+1 steps.

    Args:
        robot_points: (K, T+1, M, 3) robot surface points per step, m, world frame.
        low: (3,) lower box corner, m, world frame.
        high: (3,) upper box corner, m, world frame; >= ``low`` on every axis.

    Returns:
        cost: (K,) mean over steps of the largest squared violation, m^2.
    """
    require_shape("robot_points", require_floating("robot_points", robot_points), (None, None, None, 3),
                  max_leading=0)
    lo, hi = _box_corner("low", low, robot_points), _box_corner("high", high, robot_points)
    if bool((lo > hi).any()):
        raise ValueError(f"low: expected low <= high on every axis, got low={lo.tolist()}, high={hi.tolist()}")
    outside = (lo - robot_points).clamp_min(0) + (robot_points - hi).clamp_min(0)  # (K, T+1, M, 3)
    squared = (outside * outside).sum(-1)  # (K, T+1, M)
    if squared.shape[2] == 0:
        return squared.new_zeros(squared.shape[0])
    return squared.amax(-1).mean(-1)


def joint_limit_cost(q: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor, margin: float) -> torch.Tensor:
    """Penalty for joint positions entering a band of width ``margin`` inside the joint limits.

    Per joint and step ``v = (max(0, lower + m - q) + max(0, q - upper + m)) / m`` with
    ``m = min(margin, (upper - lower) / 10)`` (0 at the band's inner edge, 1 on the limit, > 1 beyond);
    the band never covers more than a tenth of a joint's range at each end, so short joints such as
    fingers (0.04 m) are not penalised over most of their travel;
    joints with ``lower == upper`` and infinite limits (continuous joints) contribute 0.

    Args:
        q: (K, T+1, J) joint positions per step, rad (revolute) or m (prismatic).
        lower: (J,) lower joint limits, same units (may be -inf).
        upper: (J,) upper joint limits, same units (may be +inf); >= ``lower``.
        margin: band width, same units as q, > 0.

    Returns:
        cost: (K,) mean over the T+1 steps of ``sum_J v^2``, dimensionless.
    """
    require_shape("q", require_floating("q", q), (None, None, None), max_leading=0)
    J = q.shape[2]
    lo = require_shape("lower", torch.as_tensor(lower), (J,), max_leading=0).to(q)
    hi = require_shape("upper", torch.as_tensor(upper), (J,), max_leading=0).to(q)
    if bool((lo > hi).any()) or bool(lo.isnan().any() | hi.isnan().any()):
        raise ValueError(f"lower: expected lower <= upper for every joint, got lower={lo.tolist()}, "
                         f"upper={hi.tolist()}")
    m = torch.minimum(torch.full_like(lo, require_positive("margin", margin)), (hi - lo) / 10)
    safe = torch.where(m > 0, m, torch.ones_like(m))
    below = (lo + m - q).clamp_min(0)  # -inf (-> 0) where lower = -inf
    above = (q - hi + m).clamp_min(0)  # -inf (-> 0) where upper = +inf
    v = torch.where(m > 0, (below + above) / safe, torch.zeros_like(q))
    return (v * v).sum(-1).mean(-1) if q.shape[1] else q.new_zeros(q.shape[0])


def smoothness_cost(actions: torch.Tensor) -> torch.Tensor:
    """Squared second differences of the action sequence over time.

    Args:
        actions: (K, T, D) candidate actions (units of the action space, e.g. rad per step).

    Returns:
        cost: (K,) mean over the T-2 interior steps of ``sum_D (a[t+1] - 2 a[t] + a[t-1])^2``
        (action units squared); 0 when T < 3.
    """
    require_shape("actions", require_floating("actions", actions), (None, None, None), max_leading=0)
    if actions.shape[1] < 3:
        return actions.new_zeros(actions.shape[0])
    second = actions[:, 2:] - 2.0 * actions[:, 1:-1] + actions[:, :-2]  # (K, T-2, D)
    return (second * second).sum(-1).mean(-1)


def uncertainty_cost(log_var: torch.Tensor, selection: torch.Tensor) -> torch.Tensor:
    """Mean predicted standard deviation of the selected (goal) points.

    Args:
        log_var: (K, T, N) log of the predicted variance of each displacement component, log(m^2).
        selection: (N,) bool, True for the points whose uncertainty counts.

    Returns:
        cost: (K,) mean over the T steps and the selected points of ``exp(log_var / 2)``, m (the
        per-component standard deviation); 0 if nothing is selected.
    """
    require_shape("log_var", require_floating("log_var", log_var), (None, None, None), max_leading=0)
    selection = _mask("selection", selection, log_var.shape[2]).to(log_var.device)
    index = selection.nonzero()[:, 0]  # gather the few selected points before exp: (K, T, P)
    std = torch.exp(0.5 * log_var.index_select(2, index))
    return std.sum((1, 2)) / (max(1, index.shape[0]) * max(1, log_var.shape[1]))


def reach_cost(robot_points: torch.Tensor, goal_points: torch.Tensor, goal_targets: torch.Tensor,
               standoff_m: float = 0.03, min_push_m: float = 1e-3) -> torch.Tensor:
    """Distance of the robot to a pre-contact point behind the goal points (brings the gripper to the object).

    The goal term stays flat until the robot touches the object; this term gives the optimizer a slope
    before that. Push direction ``d``: the mean target minus the mean goal point, projected on the
    horizontal plane and normalised. Pre-contact point: ``pre = c - d * (e + standoff_m)`` at the height
    of the goal points' centroid ``c``, where ``e = max_p (c - p) . d`` is how far the points reach
    behind their centroid along ``d`` (so ``pre`` lies ``standoff_m`` behind the rear face). Per step
    the distance from ``pre`` to the nearest robot point (the fingertips rather than the centroid of the
    robot points, which sits several cm above them, so the fingers are not driven into the table); the
    cost is the minimum over the T+1 steps, so a candidate that reaches ``pre`` and then pushes is not
    penalised. Once pushing, the gripper stays about ``standoff_m`` from ``pre`` (which moves with the
    observed object) while the goal term falls, so the goal term dominates. The term is 0 when the
    horizontal goal distance is below ``min_push_m`` (goal reached, or a purely vertical/rotational goal).

    Args:
        robot_points: (K, T+1, M, 3) robot surface points per step, m, world frame.
        goal_points: (P, 3) the selected goal points at t = 0, m, world frame.
        goal_targets: (P, 3) their targets, m, world frame.
        standoff_m: gap between the rear face of the goal points and ``pre``, m, >= 0.
        min_push_m: horizontal goal distance below which the term is 0, m, > 0.

    Returns:
        cost: (K,) minimum over steps of the distance from ``pre`` to the nearest robot point, m.
    """
    require_shape("robot_points", require_floating("robot_points", robot_points), (None, None, None, 3),
                  max_leading=0)
    p = require_finite("goal_points", require_shape("goal_points", require_floating("goal_points", goal_points),
                                                    (None, 3), max_leading=0)).to(robot_points)
    t = require_finite("goal_targets", require_shape("goal_targets", require_floating("goal_targets", goal_targets),
                                                     (p.shape[0], 3), max_leading=0)).to(robot_points)
    if p.shape[0] == 0:
        raise ValueError("goal_points: expected at least one goal point, got P = 0")
    if isinstance(standoff_m, bool) or not isinstance(standoff_m, (int, float)) or not 0 <= standoff_m < math.inf:
        raise ValueError(f"standoff_m: expected a finite distance >= 0 in m, got {standoff_m!r}")
    require_positive("min_push_m", min_push_m)
    K, steps, M = robot_points.shape[:3]
    c = p.mean(0)
    d = t.mean(0) - c
    d[2] = 0.0
    length = torch.linalg.vector_norm(d)
    if float(length) < min_push_m or steps == 0 or M == 0:
        return robot_points.new_zeros(K)
    d = d / length
    behind = ((c - p) @ d).amax()
    pre = c - d * (behind + standoff_m)
    dist = torch.linalg.vector_norm(robot_points - pre, dim=-1)  # (K, T+1, M)
    return dist.amin(-1).amin(-1)
