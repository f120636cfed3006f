"""The link speed bound of the joint action space: on every shipped robot no link origin moves faster
than the bound (checked with forward kinematics in float64), steps within it are untouched, shortened
steps keep their direction and use the whole bound, joint and velocity limits still hold."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointworld.planning.action_space import ActionSpaceConfig, JointDeltaActionSpace
from pointworld.planning.link_speed import bound_link_speed
from pointworld.robot.assets import SHIPPED_ROBOTS
from pointworld.robot.kinematics import forward_kinematics
from pointworld.robot.urdf import load_robot

F64 = torch.float64
DT = 0.1


@pytest.fixture(scope="module")
def robots() -> dict:
    return {name: load_robot(name, load_meshes=False).to(F64) for name in SHIPPED_ROBOTS}


def _q0(robot, gen: torch.Generator) -> torch.Tensor:
    lo, hi = robot.lower.clamp(min=-np.pi), robot.upper.clamp(max=np.pi)
    return lo + (hi - lo) * torch.rand(robot.num_joints, generator=gen, dtype=F64)


def _trajectory(robot, speed: float | None, seed: int = 0, gripper: bool = True):
    space = JointDeltaActionSpace(robot, ActionSpaceConfig(max_link_speed_m_s=speed, gripper=gripper, dt_s=DT))
    gen = torch.Generator().manual_seed(seed)
    low, high = space.bounds(F64)
    actions = low + (high - low) * torch.rand(16, 8, space.dim, generator=gen, dtype=F64)
    return space, space.to_trajectory(_q0(robot, gen), actions)


def _link_steps(robot, q: torch.Tensor, arm: torch.Tensor) -> torch.Tensor:
    """(K, T) largest link-origin displacement of each step, m, the grippers held at the step's start."""
    moved = torch.where(arm, q[:, 1:], q[:, :-1])
    start = forward_kinematics(robot.chain, q[:, :-1])[..., :3, 3]
    end = forward_kinematics(robot.chain, moved)[..., :3, 3]
    return (end - start).norm(dim=-1).amax(dim=-1)


def _arm(space: JointDeltaActionSpace) -> torch.Tensor:
    arm = torch.ones(space.robot.num_joints, dtype=torch.bool)
    arm[list(space.gripper_indices)] = False
    return arm


@pytest.mark.parametrize("name", SHIPPED_ROBOTS)
def test_no_link_origin_moves_faster_than_the_bound(robots, name):
    robot = robots[name]
    free_space, free = _trajectory(robot, None)
    space, bounded = _trajectory(robot, 0.25)
    arm = _arm(space)
    fast = _link_steps(robot, free.q, arm)
    assert float(fast.max()) > 0.025 * 1.5  # without the bound, random actions sweep much faster
    steps = _link_steps(robot, bounded.q, arm)
    assert float(steps.max()) <= 0.025 * (1 + 1e-4)
    assert float(steps.max()) >= 0.025 * 0.999  # the shortened steps use the whole bound
    # joint limits and joint velocity limits still hold
    lower, upper, step = space._limits.get(F64, torch.device("cpu"))
    assert bool((bounded.q >= lower - 1e-12).all() & (bounded.q <= upper + 1e-12).all())
    assert bool(((bounded.q[:, 1:] - bounded.q[:, :-1]).abs() <= step + 1e-12).all())
    assert torch.equal(bounded.q[:, 0], free.q[:, 0])


@pytest.mark.parametrize("name", ["franka_panda", "ur5e_gripper"])
def test_one_step_is_shortened_along_its_own_direction(robots, name):
    robot = robots[name]
    gen = torch.Generator().manual_seed(1)
    q_prev = torch.stack([_q0(robot, gen) for _ in range(6)])
    q_next = q_prev + 0.15 * (2 * torch.rand(q_prev.shape, generator=gen, dtype=F64) - 1)
    q_next[:2] = q_prev[:2] + 1e-4  # tiny steps: well within the bound
    arm = torch.ones(robot.num_joints, dtype=torch.bool)
    arm[-1] = False  # a joint that keeps its step and does not count (as a gripper does)
    out = bound_link_speed(robot, q_prev, q_next, arm, 0.02)
    assert torch.equal(out[:2], q_next[:2]) and torch.equal(out[:, ~arm], q_next[:, ~arm])
    full, short = (q_next - q_prev)[:, arm], (out - q_prev)[:, arm]
    scale = (short * full).sum(-1) / (full * full).sum(-1)
    assert bool(((scale > 0) & (scale <= 1)).all())
    np.testing.assert_allclose(short, scale[:, None] * full, atol=1e-12)  # the same direction
    moved = _link_steps(robot, torch.stack([q_prev, out], 1), arm)
    assert bool((moved <= 0.02 * (1 + 1e-4)).all())


def test_pure_translation_is_cut_to_the_exact_length(robots):
    """The flying gripper's x, y, z: every link origin moves by the step vector, so the bound is exact."""
    robot = robots["flying_gripper"]
    space = JointDeltaActionSpace(robot, ActionSpaceConfig(joints=("x", "y", "z"), gripper=False,
                                                           max_link_speed_m_s=0.2, dt_s=DT))
    low, high = space.bounds(F64)
    traj = space.to_trajectory(torch.zeros(robot.num_joints, dtype=F64), high.expand(1, 3, -1).clone())
    step = traj.q[0, 1:, :3] - traj.q[0, :-1, :3]  # 0.05 m on each axis: 8.7 cm per step without the bound
    np.testing.assert_allclose(step.norm(dim=-1), 0.02, rtol=1e-9)
    np.testing.assert_allclose(step / step.norm(dim=-1, keepdim=True), np.full((3, 3), 3 ** -0.5), atol=1e-9)


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf"), float("nan"), True, "fast"])
def test_bad_bound(value):
    with pytest.raises(ValueError, match="max_link_speed_m_s"):
        ActionSpaceConfig(max_link_speed_m_s=value)


def test_bad_step_bound(robots):
    robot = robots["franka_panda"]
    q = torch.zeros(1, robot.num_joints, dtype=F64)
    with pytest.raises(ValueError, match="max_step_m"):
        bound_link_speed(robot, q, q, torch.ones(robot.num_joints, dtype=torch.bool), 0.0)
