"""Kinematics details: torch.compile with mimic and prismatic joints, float32 chains driven by
float64 q (cast from the float64 master copy), cached Jacobian paths, link index types."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from pointworld.errors import JointMismatchError
from pointworld.geometry.rotations import skew_matrix
from pointworld.robot.kinematics import forward_kinematics, link_jacobian
from pointworld.robot.model import FIXED, PRISMATIC
from pointworld.robot.urdf import load_robot

F64 = torch.float64


def _random_q(robot, batch: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    lo, hi = robot.lower.clamp(-3.0, 3.0), robot.upper.clamp(-3.0, 3.0)
    return lo + (hi - lo) * torch.rand(batch, robot.num_joints, generator=gen, dtype=robot.dtype)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit internals during compile
@pytest.mark.parametrize("name", ["franka_panda", "flying_gripper"])
def test_torch_compile_with_mimic_and_prismatic_joints(name):
    robot = load_robot(name, load_meshes=False).to(F64)
    assert robot.mimic and PRISMATIC in robot.chain.type_codes
    q = _random_q(robot, 6, seed=1)
    torch._dynamo.reset()
    compiled = torch.compile(forward_kinematics, fullgraph=True, dynamic=False)
    T = compiled(robot.chain, q)
    torch.testing.assert_close(T, forward_kinematics(robot.chain, q), rtol=0, atol=1e-12)
    # The mimic follower really follows its leader in the compiled graph: move only the leader.
    leader = robot.joint_names.index(next(iter(robot.mimic.values()))[0])
    follower = robot.link_names.index(next(n for n in robot.link_names if n.endswith("rightfinger")))
    q2 = q.clone()
    q2[:, leader] += 0.01
    moved = (compiled(robot.chain, q2)[:, follower, :3, 3] - T[:, follower, :3, 3]).norm(dim=-1)
    torch.testing.assert_close(moved, torch.full_like(moved, 0.01), rtol=0, atol=1e-12)


def test_float64_q_on_a_float32_chain_uses_the_float64_master_copy():
    robot32 = load_robot("franka_panda", load_meshes=False)
    assert robot32.dtype == torch.float32 and robot32.chain.float64_master is not None
    q = _random_q(robot32.to(F64), 16, seed=2)
    exact = forward_kinematics(robot32.to(F64).chain, q)
    torch.testing.assert_close(forward_kinematics(robot32.chain, q), exact, rtol=0, atol=1e-15)
    torch.testing.assert_close(link_jacobian(robot32.chain, q, 9), link_jacobian(robot32.to(F64).chain, q, 9),
                               rtol=0, atol=1e-15)
    # Without a master copy the float32-rounded constants show (errors ~1e-8 m) and a warning says so.
    bare = dataclasses.replace(robot32.chain, float64_master=None)
    with pytest.warns(UserWarning, match="without a float64 master copy"):
        rounded = forward_kinematics(bare, q)
    assert 1e-10 < float((rounded - exact).abs().max()) < 1e-5


def test_cached_jacobian_paths_match_a_walk_up_the_tree():
    robot = load_robot("bimanual", load_meshes=False)
    chain = robot.chain
    for link in range(robot.num_links):
        walk, node = [], link
        while node >= 0:
            if chain.type_codes[node] != FIXED:
                walk.append(node)
            node = chain.parent_indices[node]
        assert chain.link_paths[link].tolist() == walk[::-1], robot.link_names[link]
    assert robot.to(F64).chain.link_paths[5].tolist() == chain.link_paths[5].tolist()


def test_link_index_accepts_integers_but_not_bools():
    robot = load_robot("franka_panda", load_meshes=False).to(F64)
    q = _random_q(robot, 3, seed=3)
    J = link_jacobian(robot.chain, q, 5)
    assert torch.equal(link_jacobian(robot.chain, q, np.int64(5)), J)
    assert torch.equal(link_jacobian(robot.chain, q, 5 - robot.num_links), J)
    for bad in (True, 5.0, robot.num_links, -robot.num_links - 1):
        with pytest.raises(ValueError, match="link: expected an integer link index"):
            link_jacobian(robot.chain, q, bad)


def test_wrong_joint_count_is_a_joint_mismatch():
    robot = load_robot("franka_panda", load_meshes=False)
    with pytest.raises(JointMismatchError, match=r"q: expected shape \(\.\.\., 8\).*got a tensor of shape \(2, 7\)"):
        forward_kinematics(robot.chain, torch.zeros(2, 7))
    with pytest.raises(JointMismatchError, match="panda_joint1"):  # the Robot check names the joints
        robot.check_joint_positions(torch.zeros(7))


def test_skew_matrix_is_the_cross_product():
    gen = torch.Generator().manual_seed(4)
    v, u = torch.randn(2, 5, 3, generator=gen, dtype=F64)
    torch.testing.assert_close((skew_matrix(v) @ u[..., None])[..., 0], torch.linalg.cross(v, u),
                               rtol=0, atol=1e-15)
    torch.testing.assert_close(skew_matrix(v).transpose(-1, -2), -skew_matrix(v), rtol=0, atol=0)
