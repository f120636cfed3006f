"""Scripted exploration: limits respected, behaviours act on the scene, idle is still, seeds reproduce."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointworld.robot.assets import SHIPPED_ROBOTS
from pointworld.robot.kinematics import forward_kinematics
from pointworld.sim.config import SceneConfig
from pointworld.sim.env import SimEnv
from pointworld.sim.exploration import (
    BEHAVIOURS,
    Behaviour,
    ExplorationConfig,
    explore_episode,
    plan_behaviour,
)
from pointworld.sim.motions import arm_specs

_BASIC = ("push", "sweep", "grasp_lift_place", "free_space", "idle")


def _only(name: str, **kw: object) -> ExplorationConfig:
    return ExplorationConfig(weights={name: 1.0}, **kw)


def _check_trajectory(env: SimEnv, b: Behaviour, q_start: torch.Tensor, config: ExplorationConfig) -> None:
    robot, dt = env.robot, env.config.control_dt_s
    S = b.q_traj.shape[0]
    assert b.q_traj.shape == (S, robot.num_joints) and S >= config.segment_steps
    assert b.gripper.shape == (S, len(env.index.gripper))
    assert torch.isfinite(b.q_traj).all() and torch.isfinite(b.gripper).all()
    assert b.gripper.min() >= 0.0 and b.gripper.max() <= 1.0
    robot.check_joint_limits(b.q_traj, "q_traj", tol=1e-9)  # raises if any target is out of limits
    q = torch.cat([q_start[None], b.q_traj])
    speed = (q[1:] - q[:-1]).abs() / dt
    assert (speed <= robot.velocity_limit * config.velocity_fraction * (1 + 1e-6) + 1e-9).all(), \
        f"{b.name}: joint speed above the limit by {(speed / robot.velocity_limit).max():.3f}"
    # gripper entries of q_traj agree with the gripper schedule
    torch.testing.assert_close(b.q_traj[:, env.index.gripper],
                               b.gripper * torch.from_numpy(env.index.gripper_upper), atol=1e-9, rtol=0)
    # the TCP stays under the speed bound (dense IK points are joint-interpolated: 20% slack)
    for arm in arm_specs(robot, env.home_q).values():
        T = forward_kinematics(robot.chain, q)[:, robot.link_index(arm.hand)]
        tcp = T[:, :3, 3] + T[:, :3, 2] * arm.tcp_offset_m
        v = (tcp[1:] - tcp[:-1]).norm(dim=1) / dt
        assert v.max() <= 1.2 * config.max_ee_speed, f"{b.name}: TCP speed {v.max():.3f} m/s"


@pytest.mark.parametrize("robot", SHIPPED_ROBOTS)
def test_planned_trajectories_respect_limits(robot: str) -> None:
    env = SimEnv(SceneConfig(robot=robot, n_objects=(3, 3), include_drawer=True))
    env.reset(3)
    rng = np.random.default_rng(0)
    names = []
    for name in _BASIC + ("drawer_pull",):
        config = _only(name)
        q0 = env.joint_positions()
        b = plan_behaviour(env, rng, config)
        assert b.requested == name and b.name in BEHAVIOURS
        _check_trajectory(env, b, q0, config)
        names.append(b.name)
    assert names[-2] == "idle"
    assert sum(n == r for n, r in zip(names, _BASIC)) >= 3, names  # most plans reach their targets


def test_idle_keeps_q_constant_and_nothing_moves() -> None:
    env = SimEnv(SceneConfig(robot="franka_panda", n_objects=(3, 3)))
    env.reset(0)
    q0 = env.joint_positions()
    b = plan_behaviour(env, np.random.default_rng(0), _only("idle", segment_steps=12))
    assert b.name == "idle" and b.q_traj.shape[0] == 12 and b.target is None
    assert torch.equal(b.q_traj, b.q_traj[:1].expand_as(b.q_traj))
    torch.testing.assert_close(b.q_traj[0], env.robot.clamp_to_limits(q0), atol=0, rtol=0)
    before = env.object_poses()
    env.execute(b.q_traj, b.gripper)
    after = env.object_poses()
    for name in before:
        assert (after[name][:3, 3] - before[name][:3, 3]).norm() < 1e-3, name


def test_push_moves_its_target() -> None:
    env = SimEnv(SceneConfig(robot="franka_panda", n_objects=(2, 3), include_drawer=False))
    env.reset(1)
    b = plan_behaviour(env, np.random.default_rng(1), _only("push"))
    assert b.name == "push" and b.target in env.scene.object_names
    before = env.object_poses()[b.target][:3, 3]
    env.execute(b.q_traj, b.gripper)
    moved = (env.object_poses()[b.target][:3, 3] - before).norm()
    assert moved > 0.01, f"pushed object moved only {moved:.4f} m"


def _lifted(seed: int) -> bool:
    env = SimEnv(SceneConfig(robot="franka_panda", n_objects=(1, 1), shapes=("box",),
                             object_size_m=(0.04, 0.06), include_drawer=False))
    env.reset(seed)
    b = plan_behaviour(env, np.random.default_rng(seed), _only("grasp_lift_place"))
    if b.name != "grasp_lift_place":
        return False
    z0, z_max = env.object_poses()[b.target][2, 3].item(), -np.inf
    for k in range(0, b.q_traj.shape[0], 3):
        env.execute(b.q_traj[k:k + 3], b.gripper[k:k + 3])
        z_max = max(z_max, env.body_poses([b.target])[0, 2, 3].item())
    return z_max - z0 > 0.03


def test_grasp_lift_place_lifts_a_small_box_sometimes() -> None:
    # measured: 7 of seeds 0-9 lift the box by > 3 cm (the others are out of IK reach)
    lifted = [_lifted(seed) for seed in range(4)]
    assert sum(lifted) >= 2, lifted


def test_seed_reproduces_the_plan() -> None:
    def plans(seed: int) -> list[Behaviour]:
        env = SimEnv(SceneConfig(robot="franka_panda", n_objects=(2, 3), include_drawer=False))
        env.reset(0)
        out = []
        for b in explore_episode(env, 3, np.random.default_rng(seed), ExplorationConfig()):
            env.execute(b.q_traj, b.gripper)
            out.append(b)
        return out

    a, b, c = plans(5), plans(5), plans(6)
    assert [x.name for x in a] == [x.name for x in b]
    for x, y in zip(a, b):
        assert torch.equal(x.q_traj, y.q_traj) and torch.equal(x.gripper, y.gripper)
    assert any(x.q_traj.shape != y.q_traj.shape or not torch.equal(x.q_traj, y.q_traj) for x, y in zip(a, c))


def test_episode_is_continuous_between_segments() -> None:
    env = SimEnv(SceneConfig(robot="flying_gripper", n_objects=(2, 3)))
    env.reset(2)
    config = ExplorationConfig(seed=4)
    q_prev = env.joint_positions()
    segments = list(_run(env, 4, config))
    assert len(segments) == 4
    for b in segments:
        _check_trajectory(env, b, q_prev, config)
        q_prev = b.q_traj[-1]


def _run(env: SimEnv, n: int, config: ExplorationConfig):
    for b in explore_episode(env, n, None, config):
        env.execute(b.q_traj, b.gripper)
        yield b


@pytest.mark.parametrize("name", ["push", "free_space"])
def test_bimanual_single_arm_leaves_the_other_arm_still(name: str) -> None:
    env = SimEnv(SceneConfig(robot="bimanual", n_objects=(3, 4), include_drawer=False))
    arms = arm_specs(env.robot, env.home_q)
    config = _only(name, both_arms_probability=0.0)
    names = []
    for seed in range(6):  # many objects on the bimanual table are out of the arms' reach
        env.reset(seed)
        b = plan_behaviour(env, np.random.default_rng(seed), config)
        names.append(b.name)
        if b.name == name:
            break
    assert b.name == name, names
    assert b.arm in ("left", "right")
    other = arms["right" if b.arm == "left" else "left"]
    cols = list(np.append(other.columns, other.gripper_column))
    assert torch.equal(b.q_traj[:, cols], b.q_traj[:1, cols].expand(len(b.q_traj), -1))
    assert (b.q_traj[:, arms[b.arm].columns] - b.q_traj[0, arms[b.arm].columns]).abs().max() > 0.05
    T0 = env.link_poses()
    env.execute(b.q_traj, b.gripper)
    idx = [env.robot.link_index(n) for n in env.robot.link_names if n.startswith(other.name + "_")]
    drift = (env.link_poses()[idx, :3, 3] - T0[idx, :3, 3]).norm(dim=1).max()
    assert drift < 5e-3, f"idle arm moved {drift:.4f} m"


def test_unreachable_targets_fall_back_to_idle() -> None:
    # the table (and every object on it) is 3 m away: nothing is reachable
    env = SimEnv(SceneConfig(robot="franka_panda", n_objects=(2, 2), include_drawer=False,
                             table_center_xy=(3.0, 0.0)))
    env.reset(0)
    b = plan_behaviour(env, np.random.default_rng(0), _only("push"))
    assert b.requested == "push" and b.name == "idle" and b.target is None
    assert torch.equal(b.q_traj, b.q_traj[:1].expand_as(b.q_traj))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="weights"):
        ExplorationConfig(weights={"dance": 1.0})
    with pytest.raises(ValueError, match="weights"):
        ExplorationConfig(weights={"push": 0.0})
    with pytest.raises(ValueError, match="velocity_fraction"):
        ExplorationConfig(velocity_fraction=1.5)
    with pytest.raises(ValueError, match="push_distance_m"):
        ExplorationConfig(push_distance_m=(0.2, 0.1))
    with pytest.raises(ValueError, match="segment_steps"):
        ExplorationConfig(segment_steps=0)
    env = SimEnv(SceneConfig(robot="franka_panda", n_objects=(1, 1)))
    env.reset(0)
    with pytest.raises(TypeError, match="config"):
        plan_behaviour(env, np.random.default_rng(0), {"push": 1.0})  # type: ignore[arg-type]
    q_bad = env.joint_positions().clone()
    q_bad[3] = 1.0  # panda_joint4 must be negative
    with pytest.raises(ValueError, match="q_start"):
        plan_behaviour(env, np.random.default_rng(0), ExplorationConfig(), q_bad)
    with pytest.raises(ValueError, match="n_segments"):
        next(explore_episode(env, 0))


def test_drawer_pull_opens_the_drawer() -> None:
    # measured: the flying gripper opens the drawer in 10 of 10 scenes, the Franka in 7 of 10
    env = SimEnv(SceneConfig(robot="flying_gripper", n_objects=(0, 0), include_drawer=True))
    env.reset(0)
    slide = env.model.jnt_qposadr[env.model.joint("drawer_slide").id]
    b = plan_behaviour(env, np.random.default_rng(0), _only("drawer_pull"))
    assert b.name == "drawer_pull" and b.target == "drawer"
    before = float(env.data.qpos[slide])
    env.execute(b.q_traj, b.gripper)
    assert env.data.qpos[slide] - before > 0.01, f"drawer opened by {env.data.qpos[slide] - before:.4f} m"
