"""End-effector action space: the IK path follows the commanded translation / yaw deltas (forward
kinematics as the reference), bounds, limits and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointworld.planning.action_space import ActionSpaceConfig
from pointworld.planning.ee_action_space import EndEffectorActionSpace
from pointworld.robot.kinematics import forward_kinematics
from pointworld.robot.urdf import load_robot

F64 = torch.float64


@pytest.fixture(scope="module")
def robots() -> dict:
    return {name: load_robot(name) for name in ("franka_panda", "flying_gripper")}


def test_end_effector_follows_commanded_deltas(robots):
    torch.set_num_threads(1)
    robot = robots["franka_panda"]
    space = EndEffectorActionSpace(robot, "panda_hand")
    assert space.dim == 5 and space.gripper_joints == ("panda_finger_joint1",)
    q0 = torch.tensor([0.0, -0.4, 0.0, -2.2, 0.0, 1.8, 0.785, 0.04], dtype=F64)
    low, high = space.bounds(F64)
    gen = torch.Generator().manual_seed(5)
    actions = 0.5 * (low + (high - low) * torch.rand(4, 5, 5, generator=gen, dtype=F64))
    actions[..., 3] = 0.0
    actions[..., 4] = 0.0
    traj = space.to_trajectory(q0, actions)
    hand = robot.link_index("panda_hand")
    T = forward_kinematics(robot.to(F64).chain, traj.q)[..., hand, :, :]
    expect = T[:, :1, :3, 3] + torch.cat([torch.zeros(4, 1, 3, dtype=F64), actions[..., :3].cumsum(1)], 1)
    err = (T[..., :3, 3] - expect).norm(dim=-1)
    assert float(err.max()) < 1e-3, float(err.max())  # measured 5e-6 m
    r64 = robot.to(F64)
    assert bool((traj.q >= r64.lower).all()) and bool((traj.q <= r64.upper).all())
    np.testing.assert_allclose(traj.q[:, -1, 7].numpy(), 0.0, atol=1e-12)  # closed on command 0
    with pytest.raises(ValueError, match="actions"):
        space.to_trajectory(q0, actions + 1.0)
    with pytest.raises(ValueError, match="link"):
        EndEffectorActionSpace(robot, "panda_rightfinger")  # the gripper joint is not below it


def test_end_effector_yaw_on_flying_gripper(robots):
    robot = robots["flying_gripper"]
    T_world_base = torch.eye(4, dtype=F64)
    T_world_base[:3, 3] = torch.tensor([0.1, -0.2, 0.05], dtype=F64)
    space = EndEffectorActionSpace(robot, "hand", ActionSpaceConfig(gripper=False), T_world_base=T_world_base)
    q0 = torch.tensor([0.45, 0.0, 0.45, np.pi, 0.0, 0.0, 0.04], dtype=F64)
    actions = torch.zeros(2, 4, 4, dtype=F64)
    actions[0, :, 3] = 0.08
    actions[1, :, 0] = 0.015
    traj = space.to_trajectory(q0, actions)
    T = forward_kinematics(robot.to(F64).chain, traj.q)[..., robot.link_index("hand"), :, :]
    heading = torch.atan2(T[..., 1, 0], T[..., 0, 0])
    torch.testing.assert_close(heading[0] - heading[0, 0], torch.arange(5, dtype=F64) * 0.08, rtol=0, atol=1e-3)
    torch.testing.assert_close(T[1, :, 0, 3] - T[1, 0, 0, 3], torch.arange(5, dtype=F64) * 0.015, rtol=0,
                               atol=1e-3)
    assert bool((traj.q[..., 6] == 0.04).all())


def test_bounds_and_bad_input(robots):
    robot = robots["flying_gripper"]
    config = ActionSpaceConfig(max_ee_speed_m_s=0.3, max_ee_yaw_speed_rad_s=2.0, dt_s=0.05)
    space = EndEffectorActionSpace(robot, "hand", config)
    low, high = space.bounds(F64)
    torch.testing.assert_close(high, torch.tensor([0.015, 0.015, 0.015, 0.1, 1.0], dtype=F64), rtol=0, atol=1e-15)
    torch.testing.assert_close(low, torch.tensor([-0.015, -0.015, -0.015, -0.1, 0.0], dtype=F64), rtol=0, atol=1e-15)
    no_grip = EndEffectorActionSpace(robot, "hand", ActionSpaceConfig(gripper=False))
    assert no_grip.dim == 4 and no_grip.bounds(F64)[0].shape == (4,)
    q0 = torch.tensor([0.45, 0.0, 0.45, np.pi, 0.0, 0.0, 0.04], dtype=F64)
    with pytest.raises(ValueError, match="actions"):
        space.to_trajectory(q0, torch.zeros(2, 3, 4, dtype=F64))  # D = 4, expected 5
    with pytest.raises(TypeError, match="actions"):
        space.to_trajectory(q0, torch.zeros(2, 3, 5, dtype=torch.int64))
    bad = torch.eye(4, dtype=F64)
    bad[0, 0] = 2.0
    with pytest.raises(ValueError, match="T_world_base"):
        EndEffectorActionSpace(robot, "hand", T_world_base=bad)
    with pytest.raises(ValueError, match="link"):
        EndEffectorActionSpace(robot, "no_such_link")
