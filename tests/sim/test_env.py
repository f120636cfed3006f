"""SimEnv: the simulated robot agrees with our FK and tracks commanded trajectories; grippers grasp."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from pointworld.errors import JointMismatchError
from pointworld.robot.assets import SHIPPED_ROBOTS
from pointworld.robot.ik import solve_ik
from pointworld.robot.kinematics import forward_kinematics
from pointworld.sim.config import SceneConfig
from pointworld.sim.env import SimEnv


def _smooth_trajectory(env: SimEnv, steps: int) -> torch.Tensor:
    """(S, J) a sine excursion of every non-gripper joint around home (alternating signs), up to
    0.3 rad / 0.15 m, returning to home: peak joint speeds ~0.5 rad/s."""
    lo, hi = env.robot.lower, env.robot.upper
    span = torch.where(torch.isfinite(hi - lo), (hi - lo) * 0.1, torch.full_like(lo, 0.3)).clamp(max=0.3)
    prismatic = torch.tensor([env.model.jnt_type[env.model.joint(n).id] == mujoco.mjtJoint.mjJNT_SLIDE
                              for n in env.robot.joint_names])
    span = torch.where(prismatic, span.clamp(max=0.15), span)
    span[env.index.gripper] = 0.0
    signs = torch.tensor([(-1.0) ** i for i in range(env.robot.num_joints)], dtype=torch.float64)
    t = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)[1:, None]
    q = torch.as_tensor(env.home_q) + span * signs * torch.sin(np.pi * t) ** 2
    return env.robot.clamp_to_limits(q)


@pytest.mark.parametrize("robot", SHIPPED_ROBOTS)
def test_fk_matches_simulation_and_tracking(robot: str) -> None:
    env = SimEnv(SceneConfig(robot=robot, n_objects=(1, 2)))
    env.reset(1)
    q_cmd = _smooth_trajectory(env, 20)
    q_sim = env.execute(q_cmd)
    assert q_sim.shape == q_cmd.shape
    # our FK of the simulated q equals MuJoCo's body poses (mimic followers come from a soft equality)
    T_fk = forward_kinematics(env.robot.chain, env.joint_positions())
    T_sim = env.link_poses()
    assert torch.allclose(T_fk[:, :3, 3], T_sim[:, :3, 3], atol=1e-4, rtol=0)
    assert torch.allclose(T_fk[:, :3, :3], T_sim[:, :3, :3], atol=1e-3, rtol=0)
    # the simulated robot tracks the command: link positions within 5 mm at every control step
    p_cmd = forward_kinematics(env.robot.chain, q_cmd)[..., :3, 3]
    p_sim = forward_kinematics(env.robot.chain, q_sim)[..., :3, 3]
    assert float((p_cmd - p_sim).norm(dim=-1).max()) < 5e-3
    # and the motion was real (not a trajectory that stays at home)
    assert float((p_cmd - p_cmd[:1]).norm(dim=-1).max()) > 0.05


def test_joint_order_is_robot_order() -> None:
    env = SimEnv(SceneConfig(robot="franka_panda", n_objects=(0, 0), include_drawer=False))
    env.reset(0)
    q = torch.as_tensor(env.home_q).clone()
    j = env.robot.joint_names.index("panda_joint6")
    q[j] += 0.2
    q_sim = env.execute(torch.stack([q, q, q]))
    moved = (q_sim[-1] - torch.as_tensor(env.home_q)).abs()
    assert moved[j] == pytest.approx(0.2, abs=5e-3)
    assert float(torch.cat([moved[:j], moved[j + 1:]]).max()) < 5e-3


def test_flying_gripper_holds_against_gravity() -> None:
    env = SimEnv(SceneConfig(robot="flying_gripper", n_objects=(0, 0), include_drawer=False))
    env.reset(0)
    hand = env.robot.link_index("hand")
    z0 = float(env.link_poses()[hand, 2, 3])
    env.execute(torch.as_tensor(env.home_q).expand(10, -1))
    assert float(env.link_poses()[hand, 2, 3]) == pytest.approx(z0, abs=1e-3)


def test_franka_grasps_and_lifts_a_box() -> None:
    env = SimEnv(SceneConfig(robot="franka_panda", n_objects=(1, 1), shapes=("box",),
                             object_size_m=(0.05, 0.05), include_drawer=False))
    env.reset(0)
    m, d, robot = env.model, env.data, env.robot
    half = m.geom_size[m.geom("object_000_g0").id]
    adr = m.jnt_qposadr[m.joint("object_000_free").id]
    d.qpos[adr:adr + 7] = [0.5, 0.0, half[2] + 1e-3, 1.0, 0.0, 0.0, 0.0]  # long side along x
    mujoco.mj_forward(m, d)
    tip = 0.0584 + float(robot.link_meshes["panda_leftfinger"].bounds[1, 2])  # hand -> fingertip, m

    def hand_at(z: float) -> torch.Tensor:  # top-down, fingers close along world y
        T = torch.eye(4, dtype=torch.float64)
        T[:3, :3] = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
        T[:3, 3] = torch.tensor([0.5, 0.0, z + tip - 0.012])
        return T

    q0 = env.joint_positions()
    pre = solve_ik(robot, "panda_hand", hand_at(0.13), q0)
    grasp = solve_ik(robot, "panda_hand", hand_at(max(float(half[2]), 0.012)), pre.q)
    assert bool(pre.converged) and bool(grasp.converged)

    def segment(a: torch.Tensor, b: torch.Tensor, n: int) -> torch.Tensor:
        return a + (b - a) * torch.linspace(0, 1, n + 1, dtype=torch.float64)[1:, None]

    z_start = float(env.object_poses()["object_000"][2, 3])
    env.execute(segment(q0, pre.q, 15))
    env.execute(segment(pre.q, grasp.q, 10))
    env.execute(grasp.q.expand(5, -1), torch.zeros(5))
    q_sim = env.execute(segment(grasp.q, pre.q, 10), torch.zeros(10))
    z_end = float(env.object_poses()["object_000"][2, 3])
    hand_z = float(env.link_poses()[robot.link_index("panda_hand"), 2, 3])
    assert z_end - z_start > 0.1  # lifted with the hand (the hand rose by ~0.12 m)
    assert hand_z - z_end == pytest.approx(tip - 0.012, abs=0.02)  # still between the fingers
    assert 0.005 < float(q_sim[-1, env.index.gripper[0]]) < 0.03  # fingers stopped on the box


def test_gripper_command_opens_and_closes_both_arms() -> None:
    env = SimEnv(SceneConfig(robot="bimanual", n_objects=(0, 0), include_drawer=False))
    env.reset(0)
    q = torch.as_tensor(env.home_q).expand(5, -1)
    q_sim = env.execute(q, torch.tensor([[0.0, 1.0]], dtype=torch.float64).expand(5, -1))
    left, right = env.index.gripper
    assert float(q_sim[-1, left]) < 2e-3 and float(q_sim[-1, right]) > 0.038
    follower = env.model.jnt_qposadr[env.model.joint("left_finger_joint2").id]
    assert env.data.qpos[follower] == pytest.approx(float(q_sim[-1, left]), abs=1e-4)


def test_bad_input() -> None:
    env = SimEnv(SceneConfig(robot="franka_panda", n_objects=(0, 0), include_drawer=False))
    with pytest.raises(RuntimeError, match="reset"):
        env.joint_positions()
    env.reset(0)
    home = torch.as_tensor(env.home_q)
    with pytest.raises(JointMismatchError):
        env.execute(torch.zeros(3, 5, dtype=torch.float64))
    with pytest.raises(ValueError, match="q_traj"):
        env.execute(home)  # (J,), not (S, J)
    far = home.clone()
    far[1] = 3.0
    with pytest.raises(ValueError, match="panda_joint2"):
        env.execute(far[None])
    with pytest.raises(ValueError, match="gripper"):
        env.execute(home[None], torch.tensor([1.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="gripper"):
        env.execute(home[None], torch.zeros(2, dtype=torch.float64))
    with pytest.raises(TypeError, match="config"):
        SimEnv({"robot": "franka_panda"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="seed"):
        env.reset(-1)
    with pytest.raises(ValueError, match="no bodies named"):
        env.body_poses(["panda_hand", "teapot"])


def test_self_collision_switch() -> None:
    """A command that folds the Panda's hand into its shoulder is blocked with self-collision on and
    passes through (tracked) with it off."""
    errors = {}
    for on in (True, False):
        env = SimEnv(SceneConfig(robot="franka_panda", n_objects=(0, 0), include_drawer=False,
                                 robot_self_collision=on))
        env.reset(0)
        span = torch.tensor([0.0, 0.0, 0.0, 0.6, -0.6, 0.6, 0.0, 0.0], dtype=torch.float64)
        t = torch.linspace(0.0, 1.0, 16, dtype=torch.float64)[1:, None]
        q_cmd = env.robot.clamp_to_limits(torch.as_tensor(env.home_q) - span * torch.sin(np.pi * t / 2))
        q_sim = env.execute(q_cmd)
        p = forward_kinematics(env.robot.chain, torch.stack([q_cmd[-1], q_sim[-1]]))[..., :3, 3]
        errors[on] = float((p[0] - p[1]).norm(dim=-1).max())
    assert errors[True] > 0.01 and errors[False] < 3e-3


def test_finger_geoms_get_the_configured_friction():
    import mujoco

    from pointworld.sim.config import SceneConfig
    from pointworld.sim.env import SimEnv

    env = SimEnv(SceneConfig(robot="franka_panda", n_objects=(1, 1), include_drawer=False,
                             finger_friction=2.0))
    env.reset(0)
    model = env.model
    finger_bodies = {mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n)
                     for n in ("panda_leftfinger", "panda_rightfinger")}
    frictions = [model.geom_friction[g, 0] for g in range(model.ngeom) if model.geom_bodyid[g] in finger_bodies]
    hand = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, "panda_hand")
    others = [model.geom_friction[g, 0] for g in range(model.ngeom) if model.geom_bodyid[g] == hand]
    assert frictions and all(f == 2.0 for f in frictions)
    assert others and all(f == 1.0 for f in others)
