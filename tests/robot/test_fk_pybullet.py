"""Forward kinematics against pybullet on URDFs we did not write (pybullet_data's Panda, Kuka iiwa,
xArm6 with gripper), mimic followers included: pybullet ignores ``<mimic>``, so they are set by hand.

pybullet reports the base's inertial (COM) frame and, with ``computeForwardKinematics=True``, the URDF
link frame of every child link (``getLinkState`` entries 4/5); we express every link in the URDF base
link frame and compare with our FK at 1e-6 m.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from pointworld.robot.kinematics import forward_kinematics
from pointworld.robot.urdf import load_robot

pybullet = pytest.importorskip("pybullet")
pybullet_data = pytest.importorskip("pybullet_data")
PB = Path(pybullet_data.getDataPath())
URDFS = {"panda": PB / "franka_panda" / "panda.urdf", "kuka": PB / "kuka_iiwa" / "model.urdf",
         "xarm6": PB / "xarm" / "xarm6_with_gripper.urdf"}


def pose(position, quaternion_xyzw) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.asarray(pybullet.getMatrixFromQuaternion(quaternion_xyzw)).reshape(3, 3)
    T[:3, 3] = position
    return T


@pytest.fixture(scope="module")
def client():
    cid = pybullet.connect(pybullet.DIRECT)
    yield cid
    pybullet.disconnect(cid)


def pybullet_link_poses(client: int, body: int, robot, q: np.ndarray) -> np.ndarray:
    """(L, 4, 4) T_base_link from pybullet for actuated q (J,), mimic followers set by hand."""
    values = dict(zip(robot.joint_names, q))
    for follower, (leader, mult, offset) in robot.mimic.items():
        values[follower] = mult * values[leader] + offset
    child_of_joint = {}
    for i in range(pybullet.getNumJoints(body, physicsClientId=client)):
        info = pybullet.getJointInfo(body, i, physicsClientId=client)
        name, child = info[1].decode(), info[12].decode()
        child_of_joint[child] = i
        if info[2] != pybullet.JOINT_FIXED:
            pybullet.resetJointState(body, i, values[name], physicsClientId=client)
    com_pos, com_orn = pybullet.getBasePositionAndOrientation(body, physicsClientId=client)
    dyn = pybullet.getDynamicsInfo(body, -1, physicsClientId=client)
    T_world_com = pose(com_pos, com_orn)
    T_base_com = pose(dyn[3], dyn[4])
    T_world_base = T_world_com @ np.linalg.inv(T_base_com)
    out = [np.eye(4)]
    for link in robot.link_names[1:]:
        state = pybullet.getLinkState(body, child_of_joint[link], computeForwardKinematics=True,
                                      physicsClientId=client)
        out.append(np.linalg.inv(T_world_base) @ pose(state[4], state[5]))
    return np.stack(out)


@pytest.mark.parametrize("name", sorted(URDFS))
def test_fk_matches_pybullet(client, name):
    robot = load_robot(URDFS[name], load_meshes=False)
    body = pybullet.loadURDF(str(URDFS[name]), useFixedBase=True, physicsClientId=client)
    gen = torch.Generator().manual_seed(11)
    lo = torch.where(torch.isfinite(robot.lower), robot.lower.double(), -math.pi)
    hi = torch.where(torch.isfinite(robot.upper), robot.upper.double(), math.pi)
    q = lo + (hi - lo) * torch.rand(6, robot.num_joints, generator=gen, dtype=torch.float64)
    T64 = forward_kinematics(robot.to(torch.float64).chain, q).numpy()
    T32 = forward_kinematics(robot.chain, q.float()).double().numpy()
    moved = 0.0
    for b in range(q.shape[0]):
        ref = pybullet_link_poses(client, body, robot, q[b].numpy())
        np.testing.assert_allclose(T64[b], ref, rtol=0, atol=1e-6, err_msg=f"{name} float64 config {b}")
        np.testing.assert_allclose(T32[b], ref, rtol=0, atol=5e-6, err_msg=f"{name} float32 config {b}")
        moved = max(moved, float(np.abs(ref[:, :3, 3] - T64[0, :, :3, 3]).max()))
    assert moved > 0.05  # the configurations really differ


def test_mimic_followers_are_driven_in_both(client):
    """The Panda's right finger follows the left one: opening the gripper moves both fingers apart."""
    robot = load_robot(URDFS["panda"], load_meshes=False).to(torch.float64)
    body = pybullet.loadURDF(str(URDFS["panda"]), useFixedBase=True, physicsClientId=client)
    left, right = robot.link_index("panda_leftfinger"), robot.link_index("panda_rightfinger")
    gaps = []
    for opening in (0.0, 0.04):
        q = robot.joint_vector({"panda_finger_joint1": opening})
        ref = pybullet_link_poses(client, body, robot, q.numpy())
        ours = forward_kinematics(robot.chain, q).numpy()
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)
        gaps.append(np.linalg.norm(ours[left, :3, 3] - ours[right, :3, 3]))
    assert gaps[1] - gaps[0] == pytest.approx(0.08, abs=1e-9)
