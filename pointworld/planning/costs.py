"""Weighted total of the MPC planner's cost terms (:mod:`.cost_terms`, :mod:`.penetration`).

:func:`total_cost` returns ``sum(weight * term)`` over the terms of a :class:`CostConfig` (K,) plus the
unweighted terms for logging. Terms, units and default weights (lower is better, 0 = satisfied):

============  =============================================================  ===========  =======
term          meaning                                                        unit         weight
============  =============================================================  ===========  =======
goal          mean distance of the goal points to their targets (terminal    m            1.0
              step x ``goal_terminal_weight`` 1.0 + all steps x
              ``goal_running_weight`` 0.1)
keep_still    mean predicted motion of the ``keep_still`` points             m            0.5
workspace     worst squared exit of a robot point from the workspace box     m^2          10.0
              (only with ``workspace_low``/``workspace_high``)
penetration   robot points within ``penetration_margin_m`` (0.01 m) of       1 (0..1)     1.0
              static scene points, as a fraction of the margin
joint_limit   squared depth into a ``joint_limit_margin`` (0.05 rad or m)    1            1.0
              band inside the joint limits, in band widths
smoothness    squared second differences of the actions                      action^2     0.01
uncertainty   mean predicted std of the goal points                          m            0.0
reach         distance of the nearest robot point to a pre-contact point     m            0.5
              ``reach_standoff_m`` (0.03 m) behind the goal points
goal_turn     angle between the goal points' predicted final orientation     rad          0.0
              and the one their targets ask for (rigid fits)
============  =============================================================  ===========  =======

With these weights 1 cm of goal error costs as much as 2 cm of reach distance; the reach term only
matters before contact (see :func:`pointworld.planning.cost_terms.reach_cost`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

from pointworld.geometry.checks import require_floating, require_positive, require_shape
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
from pointworld.planning.goals import PointGoal
from pointworld.planning.penetration import penetration_cost

#: Names of the cost terms, in the order of :class:`CostConfig` and of the breakdown of :func:`total_cost`.
TERMS: tuple[str, ...] = ("goal", "keep_still", "workspace", "penetration", "joint_limit", "smoothness",
                          "uncertainty", "reach", "goal_turn")


@dataclass
class CostConfig:
    """Weights (>= 0) of the cost terms and their parameters; a zero weight skips a term entirely.

    ``workspace_low`` / ``workspace_high``: (3,) box corners, m, world frame (both or neither; None =
    no workspace term). ``goal_terminal_weight`` / ``goal_running_weight``: see :func:`goal_cost`.
    ``joint_limit_margin``: band inside the joint limits, rad or m (see :func:`joint_limit_cost`).
    ``reach_standoff_m``: gap between the goal points' rear face and the pre-contact point, m (see
    :func:`~pointworld.planning.cost_terms.reach_cost`). Units and defaults: the module docstring.
    """

    goal: float = 1.0
    keep_still: float = 0.5
    workspace: float = 10.0
    penetration: float = 1.0
    joint_limit: float = 1.0
    smoothness: float = 0.01
    uncertainty: float = 0.0
    reach: float = 0.5
    goal_turn: float = 0.0
    workspace_low: tuple[float, float, float] | None = None
    workspace_high: tuple[float, float, float] | None = None
    penetration_margin_m: float = 0.01
    joint_limit_margin: float = 0.05
    goal_terminal_weight: float = 1.0
    goal_running_weight: float = 0.1
    reach_standoff_m: float = 0.03

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if (f.name in TERMS or f.name.startswith("goal_") or f.name == "reach_standoff_m") and not (numeric and 0 <= value < math.inf):
                raise ValueError(f"CostConfig.{f.name}: expected a finite number >= 0, got {value!r}")
        require_positive("CostConfig.penetration_margin_m", self.penetration_margin_m)
        require_positive("CostConfig.joint_limit_margin", self.joint_limit_margin)
        if (self.workspace_low is None) != (self.workspace_high is None):
            raise ValueError("CostConfig.workspace_low/workspace_high: expected both or neither, got "
                             f"low={self.workspace_low!r}, high={self.workspace_high!r}")
        if self.workspace_low is not None:
            lo, hi = (tuple(float(v) for v in c) for c in (self.workspace_low, self.workspace_high))
            if len(lo) != 3 or len(hi) != 3 or not all(a < b for a, b in zip(lo, hi)):
                raise ValueError(f"CostConfig.workspace_low/workspace_high: expected 3 values each with "
                                 f"low < high, got low={self.workspace_low!r}, high={self.workspace_high!r}")
            self.workspace_low, self.workspace_high = lo, hi  # type: ignore[assignment]


def total_cost(config: CostConfig, points: torch.Tensor, prediction: Prediction, goal: PointGoal,
               actions: torch.Tensor, q: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
               robot_points: torch.Tensor | None = None,
               static: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted sum of the cost terms for K candidates.

    A term is computed only if its weight is > 0 and its inputs exist: keep-still needs
    ``goal.keep_still``, workspace needs the config's box and ``robot_points``, penetration needs
    ``robot_points`` and ``static``, reach needs ``robot_points``; any other term is reported as 0.

    Args:
        config: weights and parameters.
        points: (N, 3) scene points at t = 0, m, world frame.
        prediction: predicted flow with displacement (K, T, N, 3), m, and log_var (K, T, N), log(m^2).
        goal: selected points, their targets (m, world) and optional keep-still mask (N,).
        actions: (K, T, D) candidate actions (action-space units).
        q: (K, T+1, J) joint trajectories, rad or m.
        lower, upper: (J,) joint limits, rad or m.
        robot_points: (K, T+1, M, 3) robot surface points per step, m, world frame, or None.
        static: (N,) bool, scene points the robot must keep clear of, or None.

    Returns:
        costs: (K,) ``sum_term weight * term``.
        breakdown: dict term name -> (K,) unweighted term (every name of ``TERMS``).
    """
    disp = require_shape("prediction.displacement", require_floating("prediction.displacement",
                         prediction.displacement), (None, None, points.shape[0], 3), max_leading=0)
    K, T = disp.shape[:2]
    require_shape("actions", actions, (K, T, None), max_leading=0)
    require_shape("q", q, (K, T + 1, None), max_leading=0)
    if robot_points is not None:
        require_shape("robot_points", robot_points, (K, T + 1, None, 3), max_leading=0)
    terms = {
        "goal": lambda: goal_cost(points, disp, goal, config.goal_terminal_weight, config.goal_running_weight),
        "keep_still": None if goal.keep_still is None else lambda: keep_still_cost(disp, goal.keep_still),
        "workspace": None if robot_points is None or config.workspace_low is None else
        lambda: workspace_cost(robot_points, config.workspace_low, config.workspace_high),
        "penetration": None if robot_points is None or static is None else
        lambda: penetration_cost(robot_points, points, static, config.penetration_margin_m),
        "joint_limit": lambda: joint_limit_cost(q, lower, upper, config.joint_limit_margin),
        "smoothness": lambda: smoothness_cost(actions),
        "uncertainty": lambda: uncertainty_cost(prediction.log_var, goal.selection(points.shape[0])),
        "reach": None if robot_points is None else
        lambda: reach_cost(robot_points, points[goal.indices.to(points.device)], goal.targets,
                           config.reach_standoff_m),
        "goal_turn": lambda: goal_turn_cost(points, disp, goal),
    }
    costs = disp.new_zeros(K)
    breakdown: dict[str, torch.Tensor] = {}
    for name in TERMS:
        weight, compute = float(getattr(config, name)), terms[name]
        value = compute() if weight > 0 and compute is not None else disp.new_zeros(K)
        breakdown[name] = value
        costs = costs + weight * value
    return costs, breakdown

