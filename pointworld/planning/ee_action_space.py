"""End-effector action space: per-step world-frame translation and yaw deltas of one link, via batched IK.

Candidate actions (K, T, D) become the same :class:`~pointworld.planning.action_space.JointTrajectory`
as the joint-delta space's, with the same guarantees (joint limits never violated, per-step joint
bounds respected), because every IK step is bounded and clamped by
:class:`~pointworld.planning.action_space.JointDeltaActionSpace`.
"""

from __future__ import annotations

import torch

from pointworld.geometry.checks import require_floating, require_shape
from pointworld.geometry.se3 import check_rigid_transform, invert_transform
from pointworld.planning.action_space import (
    ActionSpaceConfig,
    JointDeltaActionSpace,
    JointTrajectory,
    check_bounded_actions,
)
from pointworld.robot.ik import solve_ik
from pointworld.robot.kinematics import forward_kinematics
from pointworld.robot.model import Robot


class EndEffectorActionSpace:
    """Per-step end-effector deltas of one link, converted to joints by inverse kinematics.

    Action layout (D = 5, or 4 without ``config.gripper``): ``a[..., 0:3]`` world-frame translation of
    the link origin per step, m, within ``±max_ee_speed_m_s * dt_s``; ``a[..., 3]`` yaw per step about
    the world vertical through the link origin, rad, within ``±max_ee_yaw_speed_rad_s * dt_s``;
    ``a[..., 4]`` opening command in [0, 1] of the grippers attached below ``link`` (others hold).
    Targets accumulate from the link pose at ``q0``; step t solves :func:`pointworld.robot.ik.solve_ik`
    for all K candidates at once, warm-started at step t-1 (position weighted over orientation by
    ``1 / orientation_weight``, no random restarts); the joint step is then bounded and clamped as in
    :class:`JointDeltaActionSpace`, so limits and velocity bounds hold even where IK cannot follow.
    """

    def __init__(self, robot: Robot, link: str, config: ActionSpaceConfig | None = None,
                 T_world_base: torch.Tensor | None = None, *, orientation_weight: float = 0.05,
                 ik_iters: int = 20) -> None:
        self._joints = JointDeltaActionSpace(robot, config)
        self.robot, self.config, self.link = robot, self._joints.config, link
        index = robot.link_index(link)
        below = [g for g in self._joints.gripper_indices if _is_below(robot, robot.link_joint_names.index(
            robot.joint_names[g]), index)]
        if self.config.gripper and not below:
            raise ValueError(f"link: no gripper joint of {list(self._joints.gripper_joints)} is attached "
                             f"below link {link!r}; use ActionSpaceConfig(gripper=False)")
        self._below = [self._joints.gripper_indices.index(g) for g in below]
        self.dim = 5 if self.config.gripper else 4
        if T_world_base is not None:
            T_world_base = check_rigid_transform("T_world_base", T_world_base)
            require_shape("T_world_base", T_world_base, (4, 4), max_leading=0)
        self._T_world_base = T_world_base
        self._ik = {"orientation_weight": orientation_weight, "max_iters": ik_iters}
        self._robots: dict[tuple[torch.dtype, torch.device], Robot] = {}

    @property
    def gripper_joints(self) -> tuple[str, ...]:
        """Names of the robot's G gripper joints (mimic leaders), joint order."""
        return self._joints.gripper_joints

    @property
    def planned_joints(self) -> tuple[str, ...]:
        """Names of the joints IK may move (``config.joints`` or every non-gripper joint)."""
        return self._joints.planned_joints

    def bounds(self, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(low (D,), high (D,)): m per step (3), rad per step (1), gripper opening 0..1 (1)."""
        c = self.config
        v, w = c.max_ee_speed_m_s * c.dt_s, c.max_ee_yaw_speed_rad_s * c.dt_s
        high = torch.tensor([v, v, v, w, 1.0][: self.dim], dtype=dtype or self.robot.dtype,
                            device=device or self.robot.device)
        low = -high
        if c.gripper:
            low[4] = 0.0
        return low, high

    def _robot(self, dtype: torch.dtype, device: torch.device) -> Robot:
        key = (dtype, torch.device(device))
        if key not in self._robots:
            self._robots[key] = self.robot.to(dtype=dtype, device=device)
        return self._robots[key]

    def _targets(self, robot: Robot, q0: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """(K, T, 4, 4) ``T_base_target`` of the link at every step."""
        T_wb = torch.eye(4, dtype=a.dtype, device=a.device)
        if self._T_world_base is not None:
            T_wb = self._T_world_base.to(dtype=a.dtype, device=a.device)
        T0 = T_wb @ forward_kinematics(robot.chain, q0)[robot.link_index(self.link)]
        yaw = torch.cumsum(a[..., 3], dim=1)
        c, s, z, o = torch.cos(yaw), torch.sin(yaw), torch.zeros_like(yaw), torch.ones_like(yaw)
        Rz = torch.stack([c, -s, z, s, c, z, z, z, o], dim=-1).reshape(*yaw.shape, 3, 3)
        T = torch.zeros(*yaw.shape, 4, 4, dtype=a.dtype, device=a.device)
        T[..., :3, :3] = Rz @ T0[:3, :3]
        T[..., :3, 3] = T0[:3, 3] + torch.cumsum(a[..., :3], dim=1)
        T[..., 3, 3] = 1.0
        return invert_transform(T_wb) @ T

    def to_trajectory(self, q0: torch.Tensor, actions: torch.Tensor,
                      gripper_open0: float | None = None) -> JointTrajectory:
        """Turn candidate end-effector actions into joint trajectories.

        Args:
            q0: (J,) current joint positions, rad or m (cast to the actions' dtype/device).
            actions: (K, T, D) within :meth:`bounds` (layout in the class docstring).
            gripper_open0: current opening in [0, 1] for step 0 of ``gripper_open`` (default from q0).

        Returns:
            :class:`JointTrajectory` q (K, T+1, J), gripper_open (K, T+1).

        Raises:
            As :meth:`JointDeltaActionSpace.to_trajectory`.
        """
        a = require_shape("actions", require_floating("actions", actions), (None, None, self.dim), max_leading=0)
        a = check_bounded_actions(a, *self.bounds(a.dtype, a.device))
        robot = self._robot(a.dtype, a.device)
        q0 = self._joints.initial_state(q0, a.dtype, a.device)
        targets = self._targets(robot, q0, a)
        grip = None
        if self.config.gripper:
            open0 = q0[list(self._joints.gripper_indices)] / robot.upper[list(self._joints.gripper_indices)]
            cmd = open0.expand(*a.shape[:2], -1).clone()
            cmd[..., self._below] = a[..., 4:5]
            grip = self._joints.gripper_targets(cmd)
        q = [q0.expand(a.shape[0], -1)]
        for t in range(a.shape[1]):
            sol = solve_ik(robot, self.link, targets[:, t], q[-1], active_joints=self._joints.planned_joints,
                           restarts=False, clamp_q_init=True, **self._ik)
            q.append(self._joints.advance(q[-1], sol.q - q[-1], None if grip is None else grip[:, t]))
        q = torch.stack(q, dim=1)
        return JointTrajectory(q=q, gripper_open=self._joints.gripper_open(q, gripper_open0, grip is not None))


def _is_below(robot: Robot, child: int, ancestor: int) -> bool:
    """Whether link ``child`` is ``ancestor`` or lies below it in the kinematic tree."""
    parents = robot.chain.parent_indices
    while child >= 0 and child != ancestor:
        child = parents[child]
    return child == ancestor
