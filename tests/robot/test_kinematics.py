"""Forward kinematics and Jacobians against independent references: yourdfpy's scene graph,
central finite differences, autograd gradcheck, a hand-composed floating joint, torch.compile."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pybullet_data
import pytest
import torch
import yourdfpy

from pointworld.geometry.rotations import rpy_to_matrix
from pointworld.geometry.se3 import make_transform
from pointworld.robot.assets import SHIPPED_ROBOTS, shipped_urdf_path
from pointworld.robot.kinematics import forward_kinematics, link_jacobian
from pointworld.robot.urdf import load_robot

PB = Path(pybullet_data.getDataPath())
PB_ROBOTS = {"panda": PB / "franka_panda" / "panda.urdf", "kuka": PB / "kuka_iiwa" / "model.urdf",
             "xarm6": PB / "xarm" / "xarm6_with_gripper.urdf"}
ALL_URDFS = {**PB_ROBOTS, **{name: name for name in SHIPPED_ROBOTS}}


def random_q(robot, n: int, seed: int) -> torch.Tensor:
    """(n, J) float64 configurations inside the limits (±pi where a limit is infinite)."""
    gen = torch.Generator().manual_seed(seed)
    lo = torch.where(torch.isfinite(robot.lower), robot.lower, -math.pi)
    hi = torch.where(torch.isfinite(robot.upper), robot.upper, math.pi)
    return lo + (hi - lo) * torch.rand(n, robot.num_joints, generator=gen, dtype=torch.float64)


def load64(urdf: str | Path):
    return load_robot(urdf, load_meshes=False).to(torch.float64)


def panda_with_scaled_mimic(tmp_path: Path) -> Path:
    """pybullet's Panda with the second finger mimicking the first with multiplier -0.5, offset 0.01."""
    urdf = tmp_path / "panda_mimic.urdf"
    urdf.write_text(PB_ROBOTS["panda"].read_text().replace(
        '<mimic joint="panda_finger_joint1"/>',
        '<mimic joint="panda_finger_joint1" multiplier="-0.5" offset="0.01"/>'))
    return urdf


@pytest.mark.parametrize("name", sorted(ALL_URDFS) + ["panda_scaled_mimic"])
def test_fk_matches_yourdfpy_scene_graph(name, tmp_path):
    if name == "panda_scaled_mimic":
        path = panda_with_scaled_mimic(tmp_path)
    else:
        path = ALL_URDFS[name] if name in PB_ROBOTS else shipped_urdf_path(name)
    robot = load64(path)
    ref = yourdfpy.URDF.load(str(path), build_scene_graph=True, load_meshes=False)
    q = random_q(robot, 8, seed=1)
    T = forward_kinematics(robot.chain, q)
    assert T.shape == (8, robot.num_links, 4, 4) and T.dtype == torch.float64
    for b in range(q.shape[0]):
        ref.update_cfg(q[b].numpy())
        expected = np.stack([ref.get_transform(link, robot.link_names[0]) for link in robot.link_names])
        np.testing.assert_allclose(T[b].numpy(), expected, rtol=0, atol=1e-9)


def _jacobian_fd(chain, q: torch.Tensor, link: int, point: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Central differences: linear velocity of the point, angular velocity vee(dR R^T)."""
    cols = []
    for j in range(q.shape[-1]):
        e = torch.zeros_like(q)
        e[j] = h
        Tp, Tm = forward_kinematics(chain, q + e)[link], forward_kinematics(chain, q - e)[link]
        dp = ((Tp[:3, :3] @ point + Tp[:3, 3]) - (Tm[:3, :3] @ point + Tm[:3, 3])) / (2 * h)
        W = (Tp[:3, :3] - Tm[:3, :3]) / (2 * h) @ forward_kinematics(chain, q)[link, :3, :3].T
        cols.append(torch.cat([dp, torch.stack([W[2, 1], W[0, 2], W[1, 0]])]))
    return torch.stack(cols, dim=-1)


@pytest.mark.parametrize("name,link", [("panda", "panda_leftfinger"), ("panda", "panda_rightfinger"),
                                       ("xarm6", "right_finger"), ("kuka", "lbr_iiwa_link_7"),
                                       ("flying_gripper", "rightfinger")])
def test_jacobian_matches_central_differences(name, link):
    robot = load64(ALL_URDFS[name])
    index = robot.link_index(link)
    point = torch.tensor([0.01, -0.02, 0.03], dtype=torch.float64)
    for q in random_q(robot, 3, seed=2):
        for p in (None, point):
            J = link_jacobian(robot.chain, q, index, p)
            ref = _jacobian_fd(robot.chain, q, index, torch.zeros(3, dtype=q.dtype) if p is None else p)
            torch.testing.assert_close(J, ref, rtol=0, atol=1e-8)


def test_jacobian_folds_a_scaled_mimic_into_its_leader(tmp_path):
    robot = load64(panda_with_scaled_mimic(tmp_path))
    assert robot.mimic["panda_finger_joint2"] == ("panda_finger_joint1", -0.5, 0.01)
    index = robot.link_index("panda_rightfinger")
    q = random_q(robot, 1, seed=3)[0]
    J = link_jacobian(robot.chain, q, index)
    torch.testing.assert_close(J, _jacobian_fd(robot.chain, q, index, torch.zeros(3, dtype=q.dtype)),
                               rtol=0, atol=1e-8)
    # the follower moves by -0.5 * leader along its own axis (0, -1, 0) in the hand frame
    R_hand = forward_kinematics(robot.chain, q)[robot.link_index("panda_hand"), :3, :3]
    torch.testing.assert_close(J[:3, -1], -0.5 * R_hand @ torch.tensor([0.0, -1.0, 0.0], dtype=q.dtype))


def test_jacobian_batched_and_root_link():
    robot = load64(PB_ROBOTS["kuka"])
    q = random_q(robot, 6, seed=4).reshape(2, 3, -1)
    J = link_jacobian(robot.chain, q, -1, torch.zeros(2, 3, 3, dtype=torch.float64))
    assert J.shape == (2, 3, 6, 7)
    torch.testing.assert_close(J[1, 2], link_jacobian(robot.chain, q[1, 2], robot.num_links - 1))
    T = forward_kinematics(robot.chain, q)
    torch.testing.assert_close(link_jacobian(robot.chain, q, 5, T_base_link=T), link_jacobian(robot.chain, q, 5))
    assert torch.equal(link_jacobian(robot.chain, q, 0), torch.zeros(2, 3, 6, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="link"):
        link_jacobian(robot.chain, q, robot.num_links)


def test_floating_joint_is_origin_then_translation_then_urdf_rpy(tmp_path):
    """T_world_body = origin @ Trans(x, y, z) @ rpy_to_matrix(roll, pitch, yaw) for random q."""
    urdf = tmp_path / "free.urdf"
    urdf.write_text('<robot name="f"><link name="world"/><link name="body"/><link name="tip"/>'
                    '<joint name="free" type="floating"><parent link="world"/><child link="body"/>'
                    '<origin xyz="0.1 0.2 0.3" rpy="0.3 0 0"/></joint><joint name="t" type="fixed">'
                    '<parent link="body"/><child link="tip"/><origin xyz="0 0 0.5"/></joint></robot>')
    robot = load64(urdf)
    q = random_q(robot, 16, seed=9) * torch.tensor([1, 1, 1, 2, 2, 2], dtype=torch.float64)  # angles in ±2 pi
    T = forward_kinematics(robot.chain, q)[:, robot.link_index("body")]
    origin = make_transform(rpy_to_matrix(torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64)),
                            torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    expected = origin @ make_transform(rpy_to_matrix(q[:, 3:]), q[:, :3])
    torch.testing.assert_close(T, expected, rtol=0, atol=1e-12)


def test_flying_gripper_hand_pose_is_translation_then_urdf_rpy():
    robot = load64("flying_gripper")
    assert robot.joint_names[:6] == ("x", "y", "z", "roll", "pitch", "yaw")
    assert torch.isinf(robot.lower[3:6]).all() and torch.isinf(robot.upper[3:6]).all()   # continuous
    q = random_q(robot, 16, seed=10)
    q[:, 3:6] *= 2.0   # beyond ±pi: the angles have no limits
    T = forward_kinematics(robot.chain, q)[:, robot.link_index("hand")]
    torch.testing.assert_close(T, make_transform(rpy_to_matrix(q[:, 3:6]), q[:, :3]), rtol=0, atol=1e-12)


def test_batch_shapes_and_world_base_broadcast():
    robot = load64(PB_ROBOTS["panda"])
    q = random_q(robot, 2 * 3 * 4, seed=5).reshape(2, 3, 4, -1)
    T = forward_kinematics(robot.chain, q)
    assert T.shape == (2, 3, 4, robot.num_links, 4, 4)
    torch.testing.assert_close(T.reshape(-1, robot.num_links, 4, 4),
                               forward_kinematics(robot.chain, q.reshape(-1, robot.num_joints)), rtol=0, atol=0)
    base = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1, 1, 1)  # (2, 1, 1, 4, 4)
    base[1, ..., :3, 3] = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    base[1, ..., :3, :3] = rpy_to_matrix(torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))
    Tw = forward_kinematics(robot.chain, q, T_world_base=base)
    torch.testing.assert_close(Tw, base[..., None, :, :] @ T)
    torch.testing.assert_close(forward_kinematics(robot.chain, q[0, 0, 0], base[1, 0, 0]),
                               base[1, 0, 0] @ T[0, 0, 0])


def test_robot_without_moving_joints(tmp_path):
    urdf = tmp_path / "rigid.urdf"
    urdf.write_text('<robot name="r"><link name="a"/><link name="b"/><joint name="j" type="fixed">'
                    '<parent link="a"/><child link="b"/><origin xyz="1 2 3" rpy="0 0 1.5"/></joint></robot>')
    robot = load64(urdf)
    T = forward_kinematics(robot.chain, torch.zeros(4, 0, dtype=torch.float64))
    assert T.shape == (4, 2, 4, 4) and robot.num_joints == 0
    torch.testing.assert_close(T[2, 1, :3, 3], torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    torch.testing.assert_close(T[2, 1, :3, :3], rpy_to_matrix(torch.tensor([0, 0, 1.5], dtype=torch.float64)))


def test_float32_matches_float64_and_chain_is_cast_to_q():
    robot = load_robot(PB_ROBOTS["xarm6"], load_meshes=False)
    q64 = random_q(robot, 16, seed=6)
    T64 = forward_kinematics(robot.to(torch.float64).chain, q64)
    T32 = forward_kinematics(robot.chain, q64.float())
    assert T32.dtype == torch.float32
    torch.testing.assert_close(T32.double(), T64, rtol=0, atol=2e-6)
    mixed = forward_kinematics(robot.chain, q64)  # float32 chain, float64 q: chain follows q
    assert mixed.dtype == torch.float64
    torch.testing.assert_close(mixed, T64, rtol=0, atol=2e-6)


def test_gradcheck_on_a_small_chain_with_mimic_and_prismatic(tmp_path):
    urdf = tmp_path / "small.urdf"
    urdf.write_text(
        '<robot name="s"><link name="a"/><link name="b"/><link name="c"/><link name="d"/>'
        '<joint name="j1" type="revolute"><parent link="a"/><child link="b"/><origin xyz="0 0 0.3" rpy="0.2 0 0"/>'
        '<axis xyz="0 1 1"/><limit lower="-2" upper="2" effort="1" velocity="1"/></joint>'
        '<joint name="j2" type="prismatic"><parent link="b"/><child link="c"/><origin xyz="0.2 0 0"/>'
        '<axis xyz="1 0 0"/><limit lower="0" upper="1" effort="1" velocity="1"/></joint>'
        '<joint name="j3" type="continuous"><parent link="c"/><child link="d"/><origin xyz="0 0.1 0" rpy="0 0.5 0"/>'
        '<axis xyz="0 0 1"/><mimic joint="j1" multiplier="-2" offset="0.1"/></joint></robot>')
    robot = load64(urdf)
    q = torch.tensor([[0.3, 0.4], [-1.2, 0.1]], dtype=torch.float64, requires_grad=True)
    base = torch.eye(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, b: forward_kinematics(robot.chain, q, b), (q, base))
    point = torch.tensor([0.1, 0.0, 0.2], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda q, p: link_jacobian(robot.chain, q, 3, p), (q, point))


def test_forward_kinematics_bad_input():
    robot = load_robot(PB_ROBOTS["panda"], load_meshes=False)
    with pytest.raises(ValueError, match=r"q: expected shape \(\.\.\., 8\)"):
        forward_kinematics(robot.chain, torch.zeros(3, 7))
    with pytest.raises(TypeError, match="floating"):
        forward_kinematics(robot.chain, torch.zeros(8, dtype=torch.int64))
    with pytest.raises(ValueError, match="T_world_base"):
        forward_kinematics(robot.chain, torch.zeros(8), torch.eye(3))
    with pytest.raises(TypeError, match="T_world_base"):
        forward_kinematics(robot.chain, torch.zeros(8), torch.eye(4, dtype=torch.float64))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit internals during compile
def test_torch_compile_matches_eager():
    robot = load_robot(PB_ROBOTS["panda"], load_meshes=False)
    q = random_q(robot, 5, seed=7).float()
    compiled = torch.compile(forward_kinematics, fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(robot.chain, q), forward_kinematics(robot.chain, q), rtol=0, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    robot = load_robot(PB_ROBOTS["panda"], load_meshes=False).to(torch.float64)
    q = random_q(robot, 64, seed=8)
    T_cuda = forward_kinematics(robot.to(device="cuda").chain, q.cuda())
    assert T_cuda.device.type == "cuda"
    torch.testing.assert_close(T_cuda.cpu(), forward_kinematics(robot.chain, q), rtol=0, atol=1e-12)
    J_cuda = link_jacobian(robot.chain, q.cuda(), robot.num_links - 1)  # chain follows q's device
    torch.testing.assert_close(J_cuda.cpu(), link_jacobian(robot.chain, q, robot.num_links - 1), rtol=0, atol=1e-12)
