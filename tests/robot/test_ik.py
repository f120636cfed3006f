"""Damped-least-squares IK: convergence on reachable targets, limits, modes, batching, bad input."""

from __future__ import annotations

import math

import numpy as np
import pybullet
import pybullet_data
import pytest
import torch

from pointworld.errors import JointMismatchError
from pointworld.geometry.rotations import axis_angle_to_matrix, rotation_angle
from pointworld.geometry.se3 import make_transform
from pointworld.robot.ik import IKResult, solve_ik
from pointworld.robot.ik_step import random_start
from pointworld.robot.kinematics import forward_kinematics
from pointworld.robot.urdf import load_robot

F64 = torch.float64
KUKA_URDF = f"{pybullet_data.getDataPath()}/kuka_iiwa/model.urdf"
SEEDS = (0, 1, 2)
BATCH = 64


@pytest.fixture(scope="module")
def franka():
    return load_robot("franka_panda", load_meshes=False).to(dtype=F64)


@pytest.fixture(scope="module")
def kuka():
    return load_robot(KUKA_URDF, load_meshes=False).to(dtype=F64)


def _random_q(robot, batch: int, gen: torch.Generator) -> torch.Tensor:
    lo, hi = robot.lower.clamp(-math.pi, math.pi), robot.upper.clamp(-math.pi, math.pi)
    return lo + (hi - lo) * torch.rand(batch, robot.num_joints, generator=gen, dtype=robot.dtype)


def _targets(robot, link: str, q: torch.Tensor) -> torch.Tensor:
    return forward_kinematics(robot.chain, q)[..., robot.link_index(link), :, :]


def _solve_random(robot, link: str, seed: int, **kwargs):
    gen = torch.Generator().manual_seed(seed)
    target = _targets(robot, link, _random_q(robot, BATCH, gen))
    q_init = _random_q(robot, BATCH, gen)
    return target, q_init, solve_ik(robot, link, target, q_init, **kwargs)


def _check_result(robot, link, target, res: IKResult, position_only=False):
    """Errors recomputed from FK agree with the reported ones; q within limits."""
    assert bool(((res.q >= robot.lower) & (res.q <= robot.upper)).all())
    pose = _targets(robot, link, res.q)
    pos = (pose[..., :3, 3] - target[..., :3, 3]).norm(dim=-1)
    ang = rotation_angle(pose[..., :3, :3], target[..., :3, :3])
    torch.testing.assert_close(res.position_error_m, pos, atol=1e-9, rtol=0)
    torch.testing.assert_close(res.rotation_error_rad, ang, atol=1e-6, rtol=0)
    ok = (pos <= 1e-4) & (position_only | (ang <= 1e-3))
    assert torch.equal(res.converged, ok)


@pytest.fixture(scope="module")
def flying():
    return load_robot("flying_gripper", load_meshes=False).to(dtype=F64)


@pytest.mark.parametrize("robot_name,link", [("franka", "panda_hand"), ("kuka", "lbr_iiwa_link_7"),
                                             ("flying", "hand")])
def test_converges_on_reachable_targets_from_random_starts(robot_name, link, request):
    robot = request.getfixturevalue(robot_name)
    converged = 0
    for seed in SEEDS:
        target, _, res = _solve_random(robot, link, seed, max_iters=200)
        _check_result(robot, link, target, res)
        converged += int(res.converged.sum())
    rate = converged / (len(SEEDS) * BATCH)
    assert rate >= 0.95, f"{robot_name}: converged {rate:.1%}"


def test_kuka_solution_checked_with_pybullet(kuka):
    target, _, res = _solve_random(kuka, "lbr_iiwa_link_7", seed=4)
    client = pybullet.connect(pybullet.DIRECT)
    try:
        body = pybullet.loadURDF(KUKA_URDF, useFixedBase=True, physicsClientId=client)
        for b in np.flatnonzero(res.converged.numpy())[:8]:
            for j in range(7):
                pybullet.resetJointState(body, j, float(res.q[b, j]), physicsClientId=client)
            state = pybullet.getLinkState(body, 6, computeForwardKinematics=True,
                                          physicsClientId=client)
            np.testing.assert_allclose(state[4], target[b, :3, 3].numpy(), atol=2e-4)
    finally:
        pybullet.disconnect(client)


def test_float32(franka):
    robot = franka.to(dtype=torch.float32)
    gen = torch.Generator().manual_seed(3)
    target = _targets(robot, "panda_hand", _random_q(robot, 32, gen))
    res = solve_ik(robot, "panda_hand", target, _random_q(robot, 32, gen))
    assert res.q.dtype == torch.float32 and res.position_error_m.dtype == torch.float32
    assert float(res.converged.double().mean()) >= 0.9


def test_robot_converted_to_input_dtype(franka):
    gen = torch.Generator().manual_seed(8)
    q32 = _random_q(franka, 4, gen).float()
    target = _targets(franka, "panda_hand", _random_q(franka, 4, gen)).float()
    assert solve_ik(franka, "panda_hand", target, q32).q.dtype == torch.float32


def test_position_only_ignores_orientation(franka):
    gen = torch.Generator().manual_seed(6)
    target = _targets(franka, "panda_hand", _random_q(franka, BATCH, gen))
    spin = axis_angle_to_matrix(torch.tensor([0.0, 0.0, 2.0], dtype=F64))  # about the hand's z
    target = target.clone()
    target[..., :3, :3] = target[..., :3, :3] @ spin
    res = solve_ik(franka, "panda_hand", target, _random_q(franka, BATCH, gen), position_only=True)
    _check_result(franka, "panda_hand", target, res, position_only=True)
    assert float(res.converged.double().mean()) >= 0.95
    assert bool((res.rotation_error_rad[res.converged] > 1e-2).any())


def test_inactive_joints_stay_frozen(franka):
    gen = torch.Generator().manual_seed(2)
    q_goal = _random_q(franka, 16, gen)
    q_init = _random_q(franka, 16, gen)
    frozen = franka.joint_names[:2]
    q_goal[:, :2] = q_init[:, :2]  # targets reachable with the first two joints fixed
    target = _targets(franka, "panda_hand", q_goal)
    res = solve_ik(franka, "panda_hand", target, q_init, active_joints=franka.joint_names[2:])
    assert torch.equal(res.q[:, :2], q_init[:, :2]), frozen
    assert float(res.converged.double().mean()) >= 0.8


def test_fixed_damping_mode_and_converged_inputs(franka):
    gen = torch.Generator().manual_seed(9)
    q = _random_q(franka, 8, gen)
    target = _targets(franka, "panda_hand", q)
    res = solve_ik(franka, "panda_hand", target, q)  # already at the target
    assert res.iterations == 0 and bool(res.converged.all()) and torch.equal(res.q, q)
    near = q + 0.05 * torch.randn(q.shape, generator=gen, dtype=F64)
    res = solve_ik(franka, "panda_hand", target, near.clamp(franka.lower, franka.upper),
                   adaptive_damping=False, damping=1e-3)
    assert bool(res.converged.all())


def test_batch_shapes_broadcast(franka):
    gen = torch.Generator().manual_seed(4)
    target = _targets(franka, "panda_hand", _random_q(franka, 6, gen)).reshape(2, 3, 4, 4)
    res = solve_ik(franka, "panda_hand", target, _random_q(franka, 1, gen)[0], max_iters=5)
    assert res.q.shape == (2, 3, franka.num_joints)
    assert res.position_error_m.shape == res.rotation_error_rad.shape == (2, 3)
    assert res.converged.shape == (2, 3)
    assert res.converged.dtype == torch.bool and isinstance(res.iterations, int)
    res = solve_ik(franka, "panda_hand", target[0, 0], _random_q(franka, 5, gen), max_iters=5)
    assert res.q.shape == (5, franka.num_joints) and res.converged.shape == (5,)


def test_bad_input(franka):
    q = torch.zeros(franka.num_joints, dtype=F64).clamp(franka.lower, franka.upper)
    target = _targets(franka, "panda_hand", franka.lower.clamp(-1, 1))
    with pytest.raises(ValueError, match="panda_link0"):
        solve_ik(franka, "gripper_tip", target, q)  # the message lists the links
    with pytest.raises(JointMismatchError, match="q_init: expected shape"):
        solve_ik(franka, "panda_hand", target, q[:-1])
    with pytest.raises(ValueError, match="q_init: expected finite"):
        solve_ik(franka, "panda_hand", target, torch.full_like(q, float("nan")))
    sheared = target.clone()
    sheared[0, 1] += 0.3
    with pytest.raises(ValueError, match="T_base_target: expected rigid"):
        solve_ik(franka, "panda_hand", sheared, q)
    with pytest.raises(ValueError, match="T_base_target: expected shape"):
        solve_ik(franka, "panda_hand", target[:3], q)
    with pytest.raises(TypeError, match="T_base_target: expected dtype"):
        solve_ik(franka, "panda_hand", target.float(), q)
    with pytest.raises(ValueError, match="do not broadcast"):
        solve_ik(franka, "panda_hand", target.expand(3, 4, 4), q.expand(2, -1))
    with pytest.raises(JointMismatchError, match="active_joints"):
        solve_ik(franka, "panda_hand", target, q, active_joints=["elbow"])
    with pytest.raises(ValueError, match="damping"):
        solve_ik(franka, "panda_hand", target, q, damping=0.0)
    with pytest.raises(ValueError, match="max_iters"):
        solve_ik(franka, "panda_hand", target, q, max_iters=0)


def test_targets_far_out_of_reach_do_not_converge(franka):
    far = make_transform(torch.eye(3, dtype=F64), torch.tensor([3.0, 0.0, 0.5], dtype=F64))
    q_init = torch.zeros(franka.num_joints, dtype=F64).clamp(franka.lower, franka.upper)
    res = solve_ik(franka, "panda_hand", far, q_init, max_iters=30)
    assert not bool(res.converged) and float(res.position_error_m) > 1.5
    assert bool(((res.q >= franka.lower) & (res.q <= franka.upper)).all())


def test_joints_that_do_not_move_the_link_keep_their_value(franka):
    gen = torch.Generator().manual_seed(12)
    target = _targets(franka, "panda_link4", _random_q(franka, 32, gen))
    q_init = _random_q(franka, 32, gen)
    res = solve_ik(franka, "panda_link4", target, q_init, position_only=True)
    assert float(res.converged.double().mean()) >= 0.95
    # panda_link4 hangs on joints 1-4: joints 5-7 and the finger must not move (nor be restarted).
    assert torch.equal(res.q[:, 4:], q_init[:, 4:])


def test_out_of_limit_q_init_raises_unless_clamping_is_asked_for(franka):
    gen = torch.Generator().manual_seed(13)
    q_init = _random_q(franka, 4, gen)
    target = _targets(franka, "panda_hand", _random_q(franka, 4, gen))
    q_init[2, 7] = 0.5  # the finger; its upper limit is 0.04 m
    with pytest.raises(ValueError, match=r"q_init: joint 'panda_finger_joint1' = 0.5 is outside"):
        solve_ik(franka, "panda_hand", target, q_init)
    res = solve_ik(franka, "panda_hand", target, q_init, clamp_q_init=True)
    assert float(res.q[2, 7]) == float(franka.upper[7])  # clamped, then frozen (it does not move the hand)
    assert torch.equal(res.q[[0, 1, 3], 7], q_init[[0, 1, 3], 7])
    _check_result(franka, "panda_hand", target, res)


def test_link_that_no_allowed_joint_moves_is_rejected(franka):
    q = _random_q(franka, 1, torch.Generator().manual_seed(14))[0]
    target = _targets(franka, "panda_hand", q)
    with pytest.raises(ValueError, match="no joint the solver may move moves link 'panda_link0'"):
        solve_ik(franka, "panda_link0", target, q)  # the root
    with pytest.raises(ValueError, match=r"panda_link4.*panda_joint4"):
        solve_ik(franka, "panda_link4", target, q, active_joints=["panda_joint6", "panda_joint7"])


def test_ur5e_converges():
    robot = load_robot("ur5e_gripper", load_meshes=False).to(dtype=F64)
    target, _, res = _solve_random(robot, "tool0", seed=5, max_iters=200)
    _check_result(robot, "tool0", target, res)
    assert float(res.converged.double().mean()) >= 0.95


def test_bimanual_solves_one_arm_and_leaves_the_other_fixed():
    robot = load_robot("bimanual", load_meshes=False).to(dtype=F64)
    left_arm = {f"left_joint{i}" for i in range(1, 8)}
    target, q_init, res = _solve_random(robot, "left_hand", seed=6, max_iters=200)
    _check_result(robot, "left_hand", target, res)
    assert float(res.converged.double().mean()) >= 0.95
    # The right arm, the right gripper and the left finger do not move the left hand: untouched.
    moved = {robot.joint_names[j] for j in (res.q != q_init).any(dim=0).nonzero().flatten().tolist()}
    assert moved == left_arm


def test_restarts_spin_continuous_joints_and_sample_limited_ones():
    inf = math.inf
    lower = torch.tensor([-1.0, -inf, -inf, -2.0, -1.0], dtype=F64)
    upper = torch.tensor([1.0, inf, inf, 2.0, 1.0], dtype=F64)
    active = torch.tensor([1.0, 1.0, 1.0, 0.0, 1.0], dtype=F64)
    revolute = torch.tensor([True, True, False, True, False])  # joint 2 prismatic, 4 prismatic
    q_init = torch.tensor([0.5, 10.0, 3.0, 1.5, -0.2], dtype=F64).expand(4000, 5)
    q = random_start(q_init, lower, upper, active, revolute, torch.Generator().manual_seed(0))
    assert torch.equal(q[:, 2:4], q_init[:, 2:4])  # infinite prismatic, frozen: unchanged
    for j, lo, hi in ((0, -1.0, 1.0), (1, 10.0 - math.pi, 10.0 + math.pi), (4, -1.0, 1.0)):
        assert lo <= float(q[:, j].min()) < lo + 0.01 and hi - 0.01 < float(q[:, j].max()) <= hi
