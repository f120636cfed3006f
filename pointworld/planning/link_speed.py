"""A Cartesian speed bound for joint-space plans: no link origin moves faster than a set speed.

Joint velocity limits alone let an arm's hand sweep at well over 1 m/s when several joints add up
(the UR5e at half its joint limits: about 1 m/s at the tool). That is faster than any motion in the
training data (the generator's tool speed is at most ``ExplorationConfig.max_ee_speed``, 0.25 m/s),
and a world model is then asked about motions it never saw; it is also faster than a robot working
near people is allowed to move (a reduced-speed mode in collaborative operation).

:func:`bound_link_speed` shortens one planned step ``q_prev -> q_next`` (scaling the joint delta of the
non-gripper joints, gripper joints untouched) until the largest displacement of any link origin, by
forward kinematics, is at most ``max_step_m``. The result lies on the segment between two feasible
positions, so joint limits and per-joint velocity limits still hold. Link origins stand for the robot's
geometry: a fingertip a few cm from its link origin can move a little faster under a wrist rotation.
Letters: K candidates, J joints, L links.
"""

from __future__ import annotations

import torch

from pointworld.geometry.checks import require_positive
from pointworld.robot.kinematics import forward_kinematics
from pointworld.robot.model import Robot

#: Rescaling rounds: a rotation's chord grows less than linearly with the angle, so one proportional
#: rescale can leave a step a hair too long; three bring it within 1e-4 of the bound in practice.
_ROUNDS = 3


def _origins(robot: Robot, q: torch.Tensor) -> torch.Tensor:
    """(K, L, 3) link origins, m, base frame, of joint positions q (K, J)."""
    return forward_kinematics(robot.chain, q)[..., :3, 3]


def bound_link_speed(robot: Robot, q_prev: torch.Tensor, q_next: torch.Tensor, scaled: torch.Tensor,
                     max_step_m: float) -> torch.Tensor:
    """Shorten the steps ``q_prev -> q_next`` so that no link origin moves more than ``max_step_m``.

    Args:
        robot: the robot, in the dtype and on the device of the joint tensors.
        q_prev: (K, J) joint positions before the step, rad or m.
        q_next: (K, J) joint positions after the step, rad or m.
        scaled: (J,) bool, the joints whose delta is shortened (the others, e.g. the grippers, keep
            theirs and do not count towards the displacement).
        max_step_m: largest displacement of a link origin over the step, m (speed bound times dt).

    Returns:
        (K, J) ``q_prev + s * (q_next - q_prev)`` on the ``scaled`` joints (``q_next`` on the others),
        with ``s`` in [0, 1] found by proportional rescaling: 1 where the step is within the bound, else
        the factor that brings the largest link-origin displacement to ``max_step_m`` (within 1e-4
        relative after the rounds).
    """
    max_step_m = require_positive("max_step_m", max_step_m)
    step = torch.where(scaled, q_next - q_prev, 0.0)  # the other joints stay at q_prev while measuring
    start = _origins(robot, q_prev)
    scale = q_prev.new_ones(q_prev.shape[0])
    for _ in range(_ROUNDS):
        moved = (_origins(robot, q_prev + scale[:, None] * step) - start).norm(dim=-1).amax(dim=-1)
        too_far = moved > max_step_m
        if not bool(too_far.any()):
            break
        scale = torch.where(too_far, scale * max_step_m / moved.clamp_min(1e-12), scale)
    return torch.where(scaled, q_prev + scale[:, None] * step, q_next)


class LinkSpeedBound:
    """:func:`bound_link_speed` at a fixed speed, with the robot cached per (dtype, device).

    Args:
        robot: the robot.
        max_speed_m_s: bound on the speed of every link origin, m/s.
        dt_s: duration of one step, s.
        scaled: (J,) bool, the joints whose delta is shortened (all but the grippers, as a rule).
    """

    def __init__(self, robot: Robot, max_speed_m_s: float, dt_s: float, scaled: torch.Tensor) -> None:
        self.max_step_m = require_positive("max_speed_m_s", max_speed_m_s) * require_positive("dt_s", dt_s)
        self._robot, self._scaled = robot, scaled.to(torch.bool)
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[Robot, torch.Tensor]] = {}

    def __call__(self, q_prev: torch.Tensor, q_next: torch.Tensor) -> torch.Tensor:
        """(K, J) the steps ``q_prev`` (K, J) -> ``q_next`` (K, J), rad or m, shortened to the bound."""
        key = (q_prev.dtype, q_prev.device)
        if key not in self._cache:
            self._cache[key] = (self._robot.to(q_prev.dtype, q_prev.device), self._scaled.to(q_prev.device))
        robot, scaled = self._cache[key]
        return bound_link_speed(robot, q_prev, q_next, scaled, self.max_step_m)
