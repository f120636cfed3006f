"""SimOracle: its predicted point trajectories are what the simulator then does; it leaves the state alone."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointworld.capture.cloud import fuse_capture
from pointworld.geometry.fusion import FusedCloud, FusionConfig
from pointworld.planning.oracle import SimOracle
from pointworld.sim.cameras import CameraRigConfig
from pointworld.sim.config import SceneConfig
from pointworld.sim.task import TaskConfig, TaskEnv

RIG = CameraRigConfig(n_views=2, width=160, height=120)
T_STEPS = 10


def make_env(seed: int = 0, **scene: object) -> tuple[TaskEnv, object]:
    cfg = {"robot": "flying_gripper", "n_objects": (1, 1), "include_drawer": False,
           "object_size_m": (0.05, 0.08)} | scene
    env = TaskEnv(SceneConfig(**cfg), TaskConfig(kind="push", cameras=RIG))
    return env, env.reset(seed)


def push_trajectory(env: TaskEnv, task: object, z: float = 0.12, length: float = 0.15) -> torch.Tensor:
    """(T+1, J) flying-gripper trajectory: go behind the object (5 steps), then sweep through it (5 steps)."""
    q0 = env.joint_positions()
    p = torch.from_numpy(task.T_world_start[:3, 3].copy())
    d = torch.from_numpy(task.T_world_goal[:3, 3] - task.T_world_start[:3, 3])
    d[2] = 0.0
    d = d / d.norm()
    a = p - 0.09 * d
    a[2] = z
    q = q0.repeat(T_STEPS + 1, 1)
    for t in range(1, T_STEPS + 1):
        q[t, :3] = q0[:3] + (a - q0[:3]) * t / 5 if t <= 5 else a + d * length * (t - 5) / 5
    return q


def observed_cloud(env: TaskEnv) -> FusedCloud:
    return fuse_capture(env.observe(), FusionConfig(), torch.float64)


def positions_from_bodies(env: TaskEnv, points: torch.Tensor, body_id: np.ndarray,
                          poses0: np.ndarray) -> np.ndarray:
    """Rigid points moved by their body's motion since ``poses0`` (B, 4, 4), by a plain numpy loop."""
    poses = env.sim.body_poses(env.sim.body_names()).numpy()
    out = points.numpy().copy()
    for i, b in enumerate(body_id):
        if b >= 0:
            rel = poses[b] @ np.linalg.inv(poses0[b])
            out[i] = rel[:3, :3] @ out[i] + rel[:3, 3]
    return out


def test_prediction_equals_what_the_simulator_then_does() -> None:
    env, task = make_env()
    twin, _ = make_env()  # same seed, never sees the oracle
    cloud = observed_cloud(env)
    oracle = SimOracle(env)
    oracle.bind(cloud)
    body = oracle.body_id
    target = env.sim.body_names().index(task.target)
    push = push_trajectory(env, task)
    q = torch.stack([push, push_trajectory(env, task, z=0.3), push[:1].repeat(T_STEPS + 1, 1)])
    g = torch.ones(3, T_STEPS + 1, dtype=torch.float64)
    g[1, 4:] = 0.0  # close the gripper in the air
    state = env.sim.get_state()
    pred = oracle.predict_joints(q, g)
    assert pred.displacement.shape == (3, T_STEPS, cloud.num_points, 3) and pred.displacement.dtype == torch.float64
    assert torch.equal(pred.log_var, torch.zeros(3, T_STEPS, cloud.num_points, dtype=torch.float64))
    assert np.array_equal(env.sim.get_state(), state)  # untouched, bit for bit
    on_target = body == target
    assert on_target.sum() > 8
    assert pred.displacement[0, -1, on_target].norm(dim=-1).min() > 0.05  # the push moves the object
    assert pred.displacement[2].abs().max() < 1e-3  # holding still moves (almost) nothing
    poses0 = env.sim.body_poses(env.sim.body_names()).numpy()
    for t in range(1, T_STEPS + 1):  # execute candidate 0 step by step; compare every point every step
        env.execute(q[0, t:t + 1], g[0, t:t + 1])
        truth = positions_from_bodies(env, cloud.points_world, body, poses0)
        np.testing.assert_allclose(cloud.points_world.numpy() + pred.displacement[0, t - 1].numpy(), truth,
                                   rtol=0, atol=1e-9)
    twin.execute(q[0, 1:], g[0, 1:])  # one call of T steps, no oracle before
    assert torch.equal(twin.object_poses()[task.target], env.object_poses()[task.target])
    env.sim.set_state(state)
    env.execute(q[1, 1:], g[1, 1:])
    truth = positions_from_bodies(env, cloud.points_world, body, poses0)
    np.testing.assert_allclose(cloud.points_world.numpy() + pred.displacement[1, -1].numpy(), truth, rtol=0, atol=1e-9)


def test_binding_follows_the_segmentation_and_float32_candidates() -> None:
    env, task = make_env(seed=1)
    cloud = observed_cloud(env)
    oracle = SimOracle(env)
    oracle.bind(cloud)
    names = env.sim.body_names()
    body = oracle.body_id
    inside = task.contains(cloud.points_world.numpy())
    assert inside.sum() > 10 and np.mean(body[inside] == names.index(task.target)) > 0.9
    assert np.all(body[cloud.points_world.numpy()[:, 2] < -0.01] != names.index(task.target))
    robot_ids = {names.index(n) for n in env.robot.link_names}
    on_robot = np.isin(body, list(robot_ids))
    assert on_robot.any()  # the gripper is in view: its points follow its links
    q = push_trajectory(env, task, z=0.3)[None].to(torch.float32)  # in the air: the hand follows q
    pred = oracle.predict_joints(q, torch.ones(1, T_STEPS + 1))
    assert pred.displacement.dtype == torch.float32 and pred.log_var.dtype == torch.float32
    hand = torch.from_numpy((q[0, -1, :3] - q[0, 0, :3]).double().numpy())
    np.testing.assert_allclose(pred.displacement[0, -1, on_robot].double().mean(0), hand, atol=0.02)


def test_cloth_points_follow_the_flex_vertices() -> None:
    env = TaskEnv(SceneConfig(robot="flying_gripper", n_objects=(0, 0), include_drawer=False, include_cloth=True),
                  TaskConfig(kind="cloth", cameras=RIG))
    task = env.reset(0)
    cloud = observed_cloud(env)
    oracle = SimOracle(env)
    oracle.bind(cloud)
    flex = oracle.flex_binding
    assert flex is not None and flex.is_flex.sum() > 20
    q0 = env.joint_positions()
    corner = torch.from_numpy(task.T_world_start[:3, 3].copy())
    q = q0.repeat(1, 5, 1)
    q[0, 1:, :3] = torch.stack([torch.cat([corner[:2], corner.new_tensor([z])]) for z in (0.3, 0.15, 0.105, 0.105)])
    q[0, 4, :2] += 0.05
    g = torch.ones(1, 5, dtype=torch.float64)
    g[0, 3:] = 0.0
    pred = oracle.predict_joints(q, g)
    verts0 = env.sim.flex_vertices("cloth").numpy()
    env.execute(q[0, 1:], g[0, 1:])
    verts = env.sim.flex_vertices("cloth").numpy()
    sel = np.nonzero(flex.is_flex)[0]
    start = int(env.sim.model.flex_vertadr[0])
    by_hand = np.einsum("nk,nkc->nc", flex.weights[sel], verts[flex.vertex_index[sel] - start]) + flex.offset[sel]
    np.testing.assert_allclose(cloud.points_world.numpy()[sel] + pred.displacement[0, -1, sel].numpy(), by_hand,
                               rtol=0, atol=1e-9)
    assert np.abs(verts - verts0).max() > 1e-3  # the cloth did move


def test_misuse_and_bad_input() -> None:
    env, task = make_env()
    with pytest.raises(TypeError, match="env"):
        SimOracle(object())  # type: ignore[arg-type]
    oracle = SimOracle(env)
    q = push_trajectory(env, task)[None]
    g = torch.ones(1, T_STEPS + 1, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="bind"):
        oracle.predict_joints(q, g)
    cloud = observed_cloud(env)
    with pytest.raises(TypeError, match="cloud"):
        oracle.bind(cloud.points_world)  # type: ignore[arg-type]
    bad = FusedCloud(cloud.points_world, cloud.colors, cloud.normals, cloud.view_index + 5, cloud.pixel_index)
    with pytest.raises(ValueError, match="view_index"):
        oracle.bind(bad)
    with pytest.raises(ValueError, match="segmentation"):
        oracle.bind(cloud, np.zeros((2, 10, 10), dtype=np.int32))
    oracle.bind(cloud)
    state = env.sim.get_state()
    with pytest.raises(ValueError, match="q"):
        oracle.predict_joints(q[..., :-1], g)
    with pytest.raises(ValueError, match="gripper_open"):
        oracle.predict_joints(q, g[:, :-1])
    with pytest.raises(ValueError, match="gripper_open: expected openings"):
        oracle.predict_joints(q, g + 1.0)
    far = q.clone()
    far[0, 3, 2] = 5.0
    with pytest.raises(ValueError, match="limits"):
        oracle.predict_joints(far, g)
    assert np.array_equal(env.sim.get_state(), state)  # nothing was simulated
    with pytest.raises(TypeError, match="predict_joints"):
        oracle.predict(None, None)  # type: ignore[arg-type]
    env.execute(q[0, 1:2], g[0, 1:2])
    with pytest.raises(RuntimeError, match="changed since bind"):
        oracle.predict_joints(q, g)
