"""Action spaces of the MPC planner: candidate actions (K, T, D) -> joint trajectories (K, T+1, J).

:class:`JointDeltaActionSpace`: per-step deltas of the planned joints (rad or m per step) plus one
opening command in [0, 1] per gripper (1 = open), turned into a :class:`JointTrajectory`. The
end-effector space (:mod:`pointworld.planning.ee_action_space`) builds on it and returns the same.

Guarantees of every trajectory (for actions inside :meth:`bounds`):

- ``q[:, 0]`` is ``q0`` (clamped into the limits, see ``Q0_LIMIT_TOL``); joints that are not planned
  stay at ``q0``.
- Joint limits are never violated: each step is applied to the previous (already feasible) position
  and the result is clamped into ``[lower, upper]`` (q_t = clamp(q_{t-1} + delta_t)), so clamping only
  shortens steps, and a delta that points back into the range acts at once.
- Velocity limits hold for every joint: ``|q_t - q_{t-1}| <= speed * dt_s`` with ``speed =
  max_joint_speed_scale * velocity_limit`` (``default_speed_rad_s`` where the URDF gives none).
- With ``max_link_speed_m_s`` set, no link origin moves faster than that (the step of the non-gripper
  joints is shortened, :mod:`pointworld.planning.link_speed`).
- Grippers (the simulator's rule, :class:`pointworld.sim.robot_mjcf.RobotIndex`: the mimic leaders,
  i.e. the actuated finger joints of the shipped robots): the command c_t sets the target ``c_t *
  upper``; the joint moves toward it at the same bounded speed (a ramp, as in the generated training
  data). ``gripper_open[:, t]`` is the mean over the G grippers of ``q_gripper / upper`` (the episode
  format's "mean over the robot's grippers"); step 0 is the current state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pointworld.errors import JointMismatchError
from pointworld.geometry.checks import require_finite, require_floating, require_shape
from pointworld.planning.link_speed import LinkSpeedBound
from pointworld.robot.model import Robot

#: How far (rad or m) ``q0`` may sit outside the joint limits (simulator contact noise, squeezed
#: fingers); such a ``q0`` is clamped into the limits, a larger violation raises ``ValueError``.
Q0_LIMIT_TOL = 1e-3
#: Relative tolerance of the action bound check (rounding of averaged samples); clamped away.
BOUND_RTOL = 1e-5


@dataclass(frozen=True)
class ActionSpaceConfig:
    """Options of the action spaces.

    Attributes:
        max_joint_speed_scale: fraction of each joint's URDF velocity limit a plan may use, (0, 1].
        default_speed_rad_s: speed (rad/s or m/s) of joints whose URDF gives no velocity limit.
        dt_s: duration of one planner step, s (the world model's step, ~0.1 s).
        gripper: plan gripper commands (else the grippers hold their current opening).
        joints: names of the planned joints; None = every actuated joint that is not a gripper joint.
        max_ee_speed_m_s: end-effector space: bound on the translation speed, m/s.
        max_ee_yaw_speed_rad_s: end-effector space: bound on the yaw speed, rad/s.
        max_link_speed_m_s: bound on the speed of every link origin, m/s (a step that would exceed it is
            shortened, :mod:`pointworld.planning.link_speed`); None: the joint velocity limits only.
    """

    max_joint_speed_scale: float = 0.5
    default_speed_rad_s: float = 1.0
    dt_s: float = 0.1
    gripper: bool = True
    joints: tuple[str, ...] | None = None
    max_ee_speed_m_s: float = 0.2
    max_ee_yaw_speed_rad_s: float = 1.0
    max_link_speed_m_s: float | None = None

    def __post_init__(self) -> None:
        for name in ("max_joint_speed_scale", "default_speed_rad_s", "dt_s", "max_ee_speed_m_s",
                     "max_ee_yaw_speed_rad_s", "max_link_speed_m_s"):
            v = getattr(self, name)
            if v is None and name == "max_link_speed_m_s":  # the one optional bound
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < math.inf:
                raise ValueError(f"ActionSpaceConfig.{name}: expected a finite number > 0, got {v!r}")
        if self.max_joint_speed_scale > 1:
            raise ValueError(f"ActionSpaceConfig.max_joint_speed_scale: expected a fraction in (0, 1], "
                             f"got {self.max_joint_speed_scale!r}")
        if not isinstance(self.gripper, bool):
            raise TypeError(f"ActionSpaceConfig.gripper: expected a bool, got {self.gripper!r}")
        if self.joints is not None:
            if isinstance(self.joints, str) or not all(isinstance(n, str) for n in self.joints):
                raise TypeError(f"ActionSpaceConfig.joints: expected a tuple of joint names or None, "
                                f"got {self.joints!r}")
            object.__setattr__(self, "joints", tuple(self.joints))


@dataclass(frozen=True)
class JointTrajectory:
    """Candidate joint trajectories.

    Attributes:
        q: (K, T+1, J) joint positions, rad or m, ``robot.joint_names`` order; step 0 = q0.
        gripper_open: (K, T+1) gripper opening in [0, 1] (1 = open), mean over the robot's grippers.
    """

    q: torch.Tensor
    gripper_open: torch.Tensor


def gripper_joint_indices(robot: Robot) -> tuple[int, ...]:
    """Indices in ``robot.joint_names`` of the G gripper joints, ascending: the leaders of ``<mimic>``
    joints, the same rule the simulator uses (:class:`pointworld.sim.robot_mjcf.RobotIndex`)."""
    return tuple(sorted({robot.joint_names.index(leader) for leader, _, _ in robot.mimic.values()}))


def _planned_indices(robot: Robot, joints: tuple[str, ...] | None, grippers: tuple[int, ...]) -> list[int]:
    if joints is None:
        return [j for j in range(robot.num_joints) if j not in grippers]
    unknown = [n for n in joints if n not in robot.joint_names]
    if unknown or not joints or len(set(joints)) != len(joints):
        raise JointMismatchError(f"config.joints: expected distinct names among the actuated joints "
                                 f"{list(robot.joint_names)} of robot {robot.name!r}, got {list(joints)} "
                                 f"(unknown: {unknown})")
    idx = sorted(robot.joint_names.index(n) for n in joints)
    clash = [robot.joint_names[j] for j in idx if j in grippers]
    if clash:
        raise ValueError(f"config.joints: gripper joints {clash} are commanded by the gripper dims "
                         f"(config.gripper), not as planned joints")
    return idx


def check_bounded_actions(actions: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Check candidate actions (K, T, D) against bounds low/high (D,) and clamp rounding away.

    Entries may exceed the bounds by ``BOUND_RTOL * (high - low)`` (rounding of averaged samples); such
    entries are clamped. Raises ``ValueError`` naming the first dim further out, or non-finite values.
    """
    a = require_finite("actions", require_shape("actions", require_floating("actions", actions),
                                                (None, None, low.shape[0]), max_leading=0))
    tol = BOUND_RTOL * (high - low) + 1e-12
    bad = (a < low - tol) | (a > high + tol)
    if bool(bad.any()):
        d = int(bad.nonzero()[0][2])
        worst = a[..., d].min() if bool((a[..., d] < low[d] - tol[d]).any()) else a[..., d].max()
        raise ValueError(f"actions: dim {d} must lie in [{float(low[d]):.6g}, {float(high[d]):.6g}] "
                         f"(see bounds()), got {float(worst):.6g} ({int(bad.sum())} entries out of bounds)")
    return torch.minimum(torch.maximum(a, low), high)


class _Limits:
    """Per-(dtype, device) cache of lower/upper limits and the per-step bound of every joint."""

    def __init__(self, robot: Robot, config: ActionSpaceConfig) -> None:
        master = robot.to(torch.float64, "cpu")
        speed = torch.where(torch.isfinite(master.velocity_limit),
                            master.velocity_limit * config.max_joint_speed_scale,
                            torch.full_like(master.velocity_limit, config.default_speed_rad_s))
        self._master = (master.lower, master.upper, speed * config.dt_s)
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, ...]] = {}

    def get(self, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(lower (J,), upper (J,), max_step (J,)) in ``dtype`` on ``device``, rad or m (per step)."""
        key = (dtype, torch.device(device))
        if key not in self._cache:
            self._cache[key] = tuple(t.to(dtype=dtype, device=device) for t in self._master)
        lower, upper, step = self._cache[key]
        return lower, upper, step


class JointDeltaActionSpace:
    """Per-step joint deltas of the planned joints plus gripper commands (see the module docstring).

    Action layout (D = len(planned_joints) + G): ``a[..., :len(planned_joints)]`` deltas in rad or m per
    step, in ``planned_joints`` order, each within ``±speed * dt_s``; ``a[..., len(planned_joints):]``
    the opening command in [0, 1] of each gripper in ``gripper_joints`` order (only when
    ``config.gripper`` and the robot has grippers).

    Attributes:
        robot: the robot; config: the :class:`ActionSpaceConfig`.
        gripper_joints: names of the G gripper joints (mimic leaders), joint order.
        planned_joints: names of the planned joints, joint order.
        dim: D, the action size.
    """

    def __init__(self, robot: Robot, config: ActionSpaceConfig | None = None) -> None:
        if not isinstance(robot, Robot):
            raise TypeError(f"robot: expected a pointworld Robot, got {type(robot).__name__}")
        self.robot, self.config = robot, config or ActionSpaceConfig()
        self._grip = gripper_joint_indices(robot)
        self._planned = _planned_indices(robot, self.config.joints, self._grip)
        self.gripper_joints = tuple(robot.joint_names[j] for j in self._grip)
        self.planned_joints = tuple(robot.joint_names[j] for j in self._planned)
        self._num_grip_dims = len(self._grip) if self.config.gripper else 0
        self.dim = len(self._planned) + self._num_grip_dims
        if self.dim == 0:
            raise ValueError(f"config: robot {robot.name!r} has nothing to plan (no planned joints, "
                             f"gripper={self.config.gripper}, grippers {list(self.gripper_joints)})")
        self._limits = _Limits(robot, self.config)
        self._link_speed = None
        if self.config.max_link_speed_m_s is not None:
            arm = torch.ones(robot.num_joints, dtype=torch.bool)
            arm[list(self._grip)] = False
            self._link_speed = LinkSpeedBound(robot, self.config.max_link_speed_m_s, self.config.dt_s, arm)

    @property
    def gripper_indices(self) -> tuple[int, ...]:
        """Indices in ``robot.joint_names`` of the G gripper joints (see :func:`gripper_joint_indices`)."""
        return self._grip

    def bounds(self, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(low (D,), high (D,)) action bounds (rad or m per step, then gripper 0..1), in ``dtype``
        (default the robot's) on ``device`` (default the robot's)."""
        _, _, step = self._limits.get(dtype or self.robot.dtype, device or self.robot.device)
        step = step[self._planned]
        low = torch.cat([-step, step.new_zeros(self._num_grip_dims)])
        high = torch.cat([step, step.new_ones(self._num_grip_dims)])
        return low, high

    def check_actions(self, actions: object) -> torch.Tensor:
        """Validate ``actions`` (K, T, D) against :meth:`bounds` (see :func:`check_bounded_actions`)."""
        a = require_shape("actions", require_floating("actions", actions), (None, None, self.dim), max_leading=0)
        return check_bounded_actions(a, *self.bounds(a.dtype, a.device))

    def initial_state(self, q0: object, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Validate ``q0`` (J,) (finite, within the limits up to ``Q0_LIMIT_TOL``) and return it clamped
        into the limits, cast to ``dtype`` on ``device``."""
        q0 = require_shape("q0", self.robot.check_joint_positions(q0, "q0"), (None,), max_leading=0)
        q0 = q0.to(dtype=dtype, device=device)
        lower, upper, _ = self._limits.get(dtype, device)
        self.robot.check_joint_limits(q0.to(torch.float64), "q0", tol=Q0_LIMIT_TOL)
        return torch.minimum(torch.maximum(q0, lower), upper)

    def gripper_open(self, q: torch.Tensor, gripper_open0: float | None, planned: bool) -> torch.Tensor:
        """(K, T+1) opening (mean of ``q_gripper / upper``) from the gripper joints of q (K, T+1, J);
        step 0 (every step when grippers are not ``planned``) is ``gripper_open0`` when given."""
        if self._grip:
            _, upper, _ = self._limits.get(q.dtype, q.device)
            g = (q[..., list(self._grip)] / upper[list(self._grip)]).mean(dim=-1).clamp(0.0, 1.0)
        else:
            g = q.new_ones(q.shape[:2])
        if gripper_open0 is not None:
            g0 = float(gripper_open0)
            if not 0.0 <= g0 <= 1.0:
                raise ValueError(f"gripper_open0: expected a value in [0, 1], got {gripper_open0!r}")
            g = g.clone()
            if planned:
                g[:, 0] = g0
            else:
                g[:] = g0
        return g

    def advance(self, q_prev: torch.Tensor, delta: torch.Tensor,
                grip_target: torch.Tensor | None) -> torch.Tensor:
        """One step: q_prev (K, J) feasible positions; delta (K, J) desired step, rad or m;
        grip_target (K, G) gripper joint targets, m (None = grippers follow ``delta``). Returns
        ``clamp(q_prev + clamp(step, ±speed dt), lower, upper)`` (K, J) (see the module docstring), its
        non-gripper part shortened to ``max_link_speed_m_s`` when that is set."""
        lower, upper, step = self._limits.get(q_prev.dtype, q_prev.device)
        if grip_target is not None:
            delta = delta.clone()
            delta[:, list(self._grip)] = grip_target - q_prev[:, list(self._grip)]
        delta = torch.minimum(torch.maximum(delta, -step), step)
        q = torch.minimum(torch.maximum(q_prev + delta, lower), upper)
        return q if self._link_speed is None else self._link_speed(q_prev, q)

    def gripper_targets(self, commands: torch.Tensor) -> torch.Tensor:
        """Gripper joint targets (..., G), m, from opening commands (..., G) in [0, 1]."""
        _, upper, _ = self._limits.get(commands.dtype, commands.device)
        return commands * upper[list(self._grip)]

    def to_trajectory(self, q0: torch.Tensor, actions: torch.Tensor,
                      gripper_open0: float | None = None) -> JointTrajectory:
        """Turn candidate actions into joint trajectories.

        Args:
            q0: (J,) current joint positions, rad or m (any floating dtype; cast to the actions').
            actions: (K, T, D) candidate actions within :meth:`bounds`.
            gripper_open0: current gripper opening in [0, 1] for step 0 of ``gripper_open`` (default:
                derived from ``q0``'s gripper joints).

        Returns:
            :class:`JointTrajectory` with q (K, T+1, J) and gripper_open (K, T+1), actions' dtype/device.

        Raises:
            JointMismatchError: ``q0`` has not J entries. ValueError: non-finite values, ``q0`` outside
            the limits by more than ``Q0_LIMIT_TOL``, actions outside the bounds, a wrong shape.
            TypeError: non-floating tensors.
        """
        a = self.check_actions(actions)
        q0 = self.initial_state(q0, a.dtype, a.device)
        n, (K, T, _) = len(self._planned), a.shape
        delta = a.new_zeros(K, T, self.robot.num_joints)
        delta[..., self._planned] = a[..., :n]
        grip = self.gripper_targets(a[..., n:]) if self._num_grip_dims else None
        q = [q0.expand(K, -1)]
        for t in range(T):
            q.append(self.advance(q[-1], delta[:, t], None if grip is None else grip[:, t]))
        q = torch.stack(q, dim=1)
        return JointTrajectory(q=q, gripper_open=self.gripper_open(q, gripper_open0,
                                                                    self._num_grip_dims > 0))
