"""Action spaces: limits, velocity bounds and gripper mapping on every shipped robot."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pointworld.errors import JointMismatchError
from pointworld.planning.action_space import (
    Q0_LIMIT_TOL,
    ActionSpaceConfig,
    JointDeltaActionSpace,
    gripper_joint_indices,
)
from pointworld.robot.assets import SHIPPED_ROBOTS, shipped_urdf_path
from pointworld.robot.urdf import load_robot

F64 = torch.float64


@pytest.fixture(scope="module")
def robots() -> dict:
    return {name: load_robot(name) for name in SHIPPED_ROBOTS}


def _random_q0(robot, gen: torch.Generator, k: int = 1) -> torch.Tensor:
    """(k, J) in-limit joint positions (finite box [-pi, pi] for continuous joints); some exactly at a limit."""
    robot = robot.to(F64)  # the float64 master limits (float32 rounding may widen them)
    lo = torch.clamp(robot.lower, min=-np.pi)
    hi = torch.clamp(robot.upper, max=np.pi)
    q = lo + (hi - lo) * torch.rand(k, robot.num_joints, generator=gen, dtype=F64)
    at = torch.rand(k, robot.num_joints, generator=gen, dtype=F64)
    q = torch.where(at < 0.15, lo, torch.where(at > 0.85, hi, q))
    return q


def _extreme_actions(space, k: int, t: int, gen: torch.Generator) -> torch.Tensor:
    """(k, t, D) actions, each entry at its lower or upper bound (a few uniform in between)."""
    low, high = space.bounds(F64)
    pick = torch.rand(k, t, space.dim, generator=gen, dtype=F64)
    uniform = low + (high - low) * torch.rand(k, t, space.dim, generator=gen, dtype=F64)
    return torch.where(pick < 0.45, low, torch.where(pick > 0.55, high, uniform))


@pytest.mark.parametrize("name", SHIPPED_ROBOTS)
def test_gripper_joints_are_the_simulators(robots, name):
    mujoco = pytest.importorskip("mujoco")
    from pointworld.sim.robot_mjcf import RobotIndex, add_robot_servos, urdf_to_spec

    robot = robots[name]
    spec = urdf_to_spec(shipped_urdf_path(name))
    add_robot_servos(spec, robot, kp_revolute=100.0, kp_prismatic=100.0, damping_ratio=1.0, armature=0.01)
    index = RobotIndex.build(spec.compile(), robot)
    assert isinstance(spec, mujoco.MjSpec)
    space = JointDeltaActionSpace(robot)
    assert list(gripper_joint_indices(robot)) == index.gripper.tolist()
    assert space.gripper_joints == tuple(robot.joint_names[i] for i in index.gripper)
    # Shipped robots: the grippers are exactly the actuated joints named *finger*.
    assert set(space.gripper_joints) == {n for n in robot.joint_names if "finger" in n}
    assert set(space.planned_joints) == set(robot.joint_names) - set(space.gripper_joints)
    assert space.dim == robot.num_joints
    # A fully open command reaches the simulator's open target (index.gripper_upper), closed reaches 0.
    k, t = 2, 12
    actions = torch.zeros(k, t, space.dim, dtype=F64)
    n = len(space.planned_joints)
    actions[0, :, n:] = 1.0
    q0 = robot.joint_vector({g: 0.5 * float(robot.upper[robot.joint_names.index(g)])
                             for g in space.gripper_joints}).to(F64)
    q0 = torch.clamp(q0, robot.lower.to(F64), robot.upper.to(F64))
    traj = space.to_trajectory(q0, actions)
    np.testing.assert_allclose(traj.q[0, -1, index.gripper].numpy(), index.gripper_upper, atol=1e-7)
    np.testing.assert_allclose(traj.q[1, -1, index.gripper].numpy(), 0.0, atol=1e-12)
    np.testing.assert_allclose(traj.gripper_open[:, 0].numpy(), 0.5, atol=1e-6)
    np.testing.assert_allclose(traj.gripper_open[:, -1].numpy(), [1.0, 0.0], atol=1e-6)


@pytest.mark.parametrize("name", SHIPPED_ROBOTS)
def test_limits_and_velocity_bounds_never_violated(robots, name):
    robot, gen = robots[name], torch.Generator().manual_seed(7)
    config = ActionSpaceConfig()
    space = JointDeltaActionSpace(robot, config)
    r64 = robot.to(F64)
    lower, upper = r64.lower, r64.upper
    speed = config.max_joint_speed_scale * r64.velocity_limit
    for trial in range(4):
        q0 = _random_q0(robot, gen)[0]
        actions = _extreme_actions(space, 64, 10, gen)
        traj = space.to_trajectory(q0, actions)
        assert traj.q.shape == (64, 11, robot.num_joints) and traj.q.dtype == F64
        assert traj.gripper_open.shape == (64, 11)
        assert torch.equal(traj.q[:, 0], q0.expand(64, -1))
        assert bool((traj.q >= lower).all()) and bool((traj.q <= upper).all())  # exact, no tolerance
        step = (traj.q[:, 1:] - traj.q[:, :-1]).abs() / config.dt_s
        assert bool((step <= speed * (1 + 1e-9)).all()), float((step / speed).max())
        assert bool((traj.gripper_open >= 0).all()) and bool((traj.gripper_open <= 1).all())
        # What the simulator accepts (SimEnv.execute checks the limits with tol 1e-6).
        robot.check_joint_limits(traj.q, "q")
        # The extreme actions do reach the limits somewhere (the clamp is exercised).
        if trial == 0 and name != "flying_gripper":
            finite = torch.isfinite(upper)
            assert bool(((traj.q == upper) & finite).any()) or bool(((traj.q == lower) & finite).any())


def _naive_rollout(space, robot, q0: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """Reference: one candidate, one step, one joint at a time in plain Python floats."""
    r64 = robot.to(F64)
    lower, upper, vel = r64.lower.numpy(), r64.upper.numpy(), r64.velocity_limit.numpy()
    cfg = space.config
    bound = [cfg.max_joint_speed_scale * v * cfg.dt_s if np.isfinite(v) else cfg.default_speed_rad_s * cfg.dt_s
             for v in vel]
    planned = [robot.joint_names.index(n) for n in space.planned_joints]
    grips = [robot.joint_names.index(n) for n in space.gripper_joints]
    out = np.empty((actions.shape[0], actions.shape[1] + 1, len(q0)))
    for k in range(actions.shape[0]):
        q = [min(max(float(v), lower[j]), upper[j]) for j, v in enumerate(q0)]
        out[k, 0] = q
        for t in range(actions.shape[1]):
            want = [0.0] * len(q)
            for d, j in enumerate(planned):
                want[j] = actions[k, t, d]
            for g, j in enumerate(grips):
                want[j] = actions[k, t, len(planned) + g] * upper[j] - q[j]
            q = [min(max(q[j] + min(max(want[j], -bound[j]), bound[j]), lower[j]), upper[j]) for j in range(len(q))]
            out[k, t + 1] = q
    return out


@pytest.mark.parametrize("name", ["bimanual", "flying_gripper"])
def test_matches_naive_loop(robots, name):
    robot, gen = robots[name], torch.Generator().manual_seed(3)
    space = JointDeltaActionSpace(robot)
    q0 = _random_q0(robot, gen)[0]
    actions = _extreme_actions(space, 6, 10, gen)
    traj = space.to_trajectory(q0, actions)
    ref = _naive_rollout(space, robot, q0.numpy(), actions.numpy())
    np.testing.assert_allclose(traj.q.numpy(), ref, rtol=0, atol=1e-12)
    grips = [robot.joint_names.index(n) for n in space.gripper_joints]
    upper = robot.to(F64).upper.numpy()[grips]
    np.testing.assert_allclose(traj.gripper_open.numpy(), (ref[..., grips] / upper).mean(-1), atol=1e-12)


def test_free_motion_is_cumulative_sum(robots):
    robot = robots["franka_panda"]
    space = JointDeltaActionSpace(robot, ActionSpaceConfig(gripper=False))
    q0 = torch.tensor([0.0, -0.3, 0.0, -2.0, 0.0, 1.8, 0.7, 0.03], dtype=F64)
    low, high = space.bounds(F64)
    actions = 0.2 * (low + (high - low) * torch.rand(5, 6, space.dim, generator=torch.Generator().manual_seed(1),
                                                     dtype=F64))
    traj = space.to_trajectory(q0, actions, gripper_open0=0.25)
    expect = q0[:7] + torch.cat([torch.zeros(5, 1, 7, dtype=F64), actions.cumsum(dim=1)], dim=1)
    torch.testing.assert_close(traj.q[..., :7], expect, rtol=0, atol=1e-12)
    assert bool((traj.q[..., 7] == 0.03).all())  # gripper not planned: holds
    assert bool((traj.gripper_open == 0.25).all())
    assert space.dim == 7 and space.bounds()[0].dtype == robot.dtype


def test_subset_of_joints_and_bimanual_grippers(robots):
    robot = robots["bimanual"]
    space = JointDeltaActionSpace(robot, ActionSpaceConfig(joints=("right_joint2", "left_joint1")))
    assert space.planned_joints == ("left_joint1", "right_joint2")  # joint order
    assert space.gripper_joints == ("left_finger_joint1", "right_finger_joint1") and space.dim == 4
    q0 = robot.joint_vector({"left_joint4": -2.0, "right_joint4": -2.0, "left_finger_joint1": 0.02,
                             "right_finger_joint1": 0.02}).to(F64)
    actions = torch.zeros(3, 8, 4, dtype=F64)
    actions[..., 0], actions[..., 1] = 0.05, -0.05
    actions[..., 2], actions[..., 3] = 1.0, 0.0  # open left, close right
    traj = space.to_trajectory(q0, actions)
    moving = [robot.joint_names.index(n) for n in ("left_joint1", "right_joint2", "left_finger_joint1",
                                                   "right_finger_joint1")]
    still = [j for j in range(robot.num_joints) if j not in moving]
    assert torch.equal(traj.q[..., still], q0[still].expand(3, 9, -1))
    torch.testing.assert_close(traj.q[0, -1, moving], torch.tensor([0.4, -0.4, 0.04, 0.0], dtype=F64),
                               rtol=0, atol=1e-7)
    # Each finger moves at most 0.5 * 0.2 m/s * 0.1 s = 1 cm per step; mean opening starts at 0.5.
    assert float((traj.q[:, 1:, moving[2:]] - traj.q[:, :-1, moving[2:]]).abs().max()) <= 0.01 + 1e-9
    torch.testing.assert_close(traj.gripper_open[0, [0, 1, 2]], torch.tensor([0.5, 0.5, 0.5], dtype=F64),
                               rtol=0, atol=1e-6)


def test_default_speed_for_joints_without_velocity_limit(robots):
    robot = robots["flying_gripper"]
    limits = robot.limits_float64.clone()
    limits[2, :3] = float("inf")
    free = dataclasses.replace(robot, velocity_limit=limits[2].to(robot.dtype), limits_float64=limits)
    space = JointDeltaActionSpace(free, ActionSpaceConfig(default_speed_rad_s=0.3))
    low, high = space.bounds(F64)
    torch.testing.assert_close(high[:6], torch.tensor([0.03] * 3 + [0.15] * 3, dtype=F64))
    torch.testing.assert_close(low, torch.cat([-high[:6], torch.zeros(1, dtype=F64)]))


def test_float32_and_q0_noise(robots):
    robot = robots["ur5e_gripper"]
    space = JointDeltaActionSpace(robot)
    q0 = robot.joint_vector({"finger_joint1": -0.5 * Q0_LIMIT_TOL}).to(F64)  # squeezed: a hair outside
    low, high = space.bounds(torch.float32)
    actions = low + (high - low) * torch.rand(4, 10, space.dim, generator=torch.Generator().manual_seed(0))
    traj = space.to_trajectory(q0, actions)
    assert traj.q.dtype == torch.float32 and traj.gripper_open.dtype == torch.float32
    assert float(traj.q[0, 0, 6]) == 0.0  # clamped into the limits
    assert bool((traj.q >= robot.lower).all()) and bool((traj.q <= robot.upper).all())


def test_bad_input(robots):
    robot = robots["franka_panda"]
    space = JointDeltaActionSpace(robot)
    q0 = torch.tensor([0.0, 0.0, 0.0, -2.0, 0.0, 1.5, 0.0, 0.04], dtype=F64)
    ok = torch.zeros(2, 3, space.dim, dtype=F64)
    with pytest.raises(ValueError, match="actions"):
        space.to_trajectory(q0, torch.zeros(2, 3, space.dim + 1, dtype=F64))
    too_far = ok.clone()
    too_far[0, 1, 2] = 0.5
    with pytest.raises(ValueError, match="dim 2"):
        space.to_trajectory(q0, too_far)
    bad_grip = ok.clone()
    bad_grip[..., -1] = 1.5
    with pytest.raises(ValueError, match="dim 7"):
        space.to_trajectory(q0, bad_grip)
    with pytest.raises(ValueError, match="finite"):
        space.to_trajectory(q0, ok.clone().fill_(float("nan")))
    with pytest.raises(TypeError, match="actions"):
        space.to_trajectory(q0, torch.zeros(2, 3, space.dim, dtype=torch.int64))
    with pytest.raises(JointMismatchError, match="q0"):
        space.to_trajectory(q0[:7], ok)
    with pytest.raises(ValueError, match="panda_joint4"):
        space.to_trajectory(torch.zeros(8, dtype=F64), ok)  # joint 4 limit is [-3.07, -0.07]
    with pytest.raises(ValueError, match="gripper_open0"):
        space.to_trajectory(q0, ok, gripper_open0=1.2)
    with pytest.raises(JointMismatchError, match="unknown"):
        JointDeltaActionSpace(robot, ActionSpaceConfig(joints=("panda_joint9",)))
    with pytest.raises(ValueError, match="gripper joints"):
        JointDeltaActionSpace(robot, ActionSpaceConfig(joints=("panda_joint1", "panda_finger_joint1")))
    with pytest.raises(ValueError, match="max_joint_speed_scale"):
        ActionSpaceConfig(max_joint_speed_scale=1.5)
    with pytest.raises(ValueError, match="dt_s"):
        ActionSpaceConfig(dt_s=0.0)
    with pytest.raises(TypeError, match="joints"):
        ActionSpaceConfig(joints="panda_joint1")
    with pytest.raises(TypeError, match="robot"):
        JointDeltaActionSpace("franka_panda")
