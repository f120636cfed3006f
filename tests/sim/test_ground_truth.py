"""Ground-truth scene points and flows: rigid motion, mj_ray agreement, robot exclusion, cloth, records."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from pointworld.sim.cameras import CameraRigConfig, sample_cameras
from pointworld.sim.config import SceneConfig
from pointworld.sim.env import SimEnv
from pointworld.sim.ground_truth import (
    bind_flex_points,
    record_clip,
    robot_body_ids,
    scene_points,
    track_points,
)
from pointworld.sim.render import flex_segmentation_body, render_views

H, W = 120, 160


def _capture(env: SimEnv, seed: int = 5, n_views: int = 2):
    rig = CameraRigConfig(n_views=n_views, width=W, height=H)
    K, T = sample_cameras(rig, env.config.table_placement(env.robot.name), np.random.default_rng(seed))
    rgb, depth, seg = render_views(env.model, env.data, K, T, H, W)
    return K, T, rgb, depth, seg


@pytest.fixture(scope="module")
def rigid_scene():
    env = SimEnv(SceneConfig(n_objects=(4, 4), include_drawer=True))
    env.reset(2)
    K, T, rgb, depth, seg = _capture(env)
    pts = scene_points(env.model, rgb, depth, seg, K, T, robot_body_ids(env))
    return env, K, T, rgb, depth, seg, pts


def _quat_mul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b
    return np.array([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2])


def test_points_lie_on_geometry_mj_ray(rigid_scene) -> None:
    env, _, T, *_, pts = rigid_scene
    rng = np.random.default_rng(0)
    idx = rng.choice(len(pts.body_id), size=400, replace=False)
    gid = np.zeros(1, dtype=np.int32)
    groups = np.array([1, 1, 1, 0, 0, 0], dtype=np.uint8)
    errors = []
    for i in idx:
        origin = T[pts.view_index[i], :3, 3]
        direction = pts.true_points[i] - origin
        hit = mujoco.mj_ray(env.model, env.data, origin, direction / np.linalg.norm(direction), groups, 1, -1,
                            gid)
        assert hit > 0
        errors.append(abs(hit - np.linalg.norm(direction)))
        assert env.model.geom_bodyid[gid[0]] == pts.body_id[i]
    errors = np.array(errors)
    assert errors.max() <= 0.002 and np.median(errors) < 1e-4


def test_robot_pixels_excluded_and_fields_consistent(rigid_scene) -> None:
    env, K, T, rgb, depth, seg, pts = rigid_scene
    robot = robot_body_ids(env)
    assert np.isin(seg, robot).any()  # the robot is in view ...
    assert not np.isin(pts.body_id, robot).any()  # ... but none of its pixels became points
    N = len(pts.body_id)
    assert N == int(((depth > 0) & ~np.isin(seg, robot)).sum())
    v, flat = pts.view_index, pts.pixel_index
    np.testing.assert_array_equal(seg[v, flat // W, flat % W], pts.body_id)
    np.testing.assert_array_equal(rgb[v, flat // W, flat % W], pts.colors)
    np.testing.assert_array_equal(pts.points_world, pts.true_points)
    # pixel rays: each point projects back onto its pixel
    R, t = T[v, :3, :3], T[v, :3, 3]
    p_cam = np.einsum("nji,nj->ni", R, pts.true_points - t)
    uv = np.einsum("nij,nj->ni", K[v], p_cam)[:, :2] / p_cam[:, 2:]
    np.testing.assert_allclose(uv, np.stack([flat % W, flat // W], 1), atol=1e-6)
    np.testing.assert_allclose(p_cam[:, 2], depth[v, flat // W, flat % W], rtol=1e-6)


def test_rigid_known_motion(rigid_scene) -> None:
    env, *_, pts = rigid_scene
    model, data = env.model, env.data
    qpos0 = data.qpos.copy()
    names = env.body_names()
    poses = [env.body_poses(names)]
    moved = np.isin(pts.body_id, [model.body(n).id for n in env.scene.object_names])
    assert moved.sum() > 50
    # a known world-frame motion: rotate 0.4 rad about an axis through the origin, then translate
    axis = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    dq = np.append(np.cos(0.2), np.sin(0.2) * axis)
    R = np.empty(9)
    mujoco.mju_quat2Mat(R, dq)
    R, d = R.reshape(3, 3), np.array([0.05, -0.1, 0.2])
    for name in env.scene.object_names:
        adr = model.jnt_qposadr[model.body(name).jntadr[0]]
        data.qpos[adr:adr + 3] = R @ qpos0[adr:adr + 3] + d
        data.qpos[adr + 3:adr + 7] = _quat_mul(dq, qpos0[adr + 3:adr + 7])
    mujoco.mj_forward(model, data)
    poses.append(env.body_poses(names))
    try:
        positions, valid = track_points(pts.true_points, pts.body_id, torch.stack(poses))
    finally:
        data.qpos[:] = qpos0
        mujoco.mj_forward(model, data)
    assert positions.shape == (2, len(pts.body_id), 3) and valid.all()
    expected = pts.true_points[moved] @ R.T + d
    np.testing.assert_allclose(positions[1, moved].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(positions[1, ~moved].numpy(), pts.true_points[~moved], atol=1e-12)
    np.testing.assert_allclose(positions[0].numpy(), pts.true_points, atol=1e-12)


def test_validity_and_bad_input(rigid_scene) -> None:
    env, *_, pts = rigid_scene
    poses = torch.stack([env.body_poses(env.body_names())] * 3)
    body = pts.body_id.copy()
    body[:5] = -1
    min_z = env.scene.table_top_z - 0.3
    _, valid = track_points(pts.true_points, body, poses, min_z_m=min_z)
    assert not valid[:, :5].any()
    floor = body == env.model.body("floor").id
    assert floor.any() and not valid[:, floor].any()
    expected = torch.from_numpy((pts.true_points[:, 2] >= min_z) & (body >= 0))
    torch.testing.assert_close(valid, expected.expand(3, -1))
    with pytest.raises(ValueError, match="points"):
        track_points(pts.true_points[:, :2], body, poses)
    with pytest.raises(ValueError, match="body_poses"):
        track_points(pts.true_points, body, poses[0])
    with pytest.raises(ValueError, match="body_id"):
        track_points(pts.true_points, np.full_like(body, 10_000), poses)
    with pytest.raises(ValueError, match="depth"):
        scene_points(env.model, rigid_scene[3], rigid_scene[4][:1], rigid_scene[5], rigid_scene[1],
                     rigid_scene[2], robot_body_ids(env))


def test_record_clip_matches_env_state(rigid_scene) -> None:
    env = rigid_scene[0]
    before = env.body_poses(env.body_names())
    q = torch.as_tensor(env.home_q).repeat(3, 1)
    rec = record_clip(env, q)
    assert rec.body_poses.shape == (4, env.model.nbody, 4, 4)
    assert rec.flex_vertices.shape == (4, 0, 3) and rec.joint_positions.shape == (4, env.robot.num_joints)
    torch.testing.assert_close(rec.body_poses[0], before)
    torch.testing.assert_close(rec.body_poses[-1], env.body_poses(env.body_names()))
    table = env.model.body("table").id
    torch.testing.assert_close(rec.body_poses[:, table], before[table].expand(4, 4, 4))


def test_cloth_points_follow_flex() -> None:
    env = SimEnv(SceneConfig(n_objects=(1, 1), include_drawer=False, include_cloth=True))
    env.reset(4)
    model, data = env.model, env.data
    K, T, rgb, depth, seg = _capture(env, n_views=3)
    pts = scene_points(model, rgb, depth, seg, K, T, robot_body_ids(env))
    binding = bind_flex_points(model, data, pts.true_points, pts.body_id, k=3)
    cloth = pts.body_id == flex_segmentation_body(model, 0)
    np.testing.assert_array_equal(binding.is_flex, cloth)
    assert cloth.sum() > 30
    np.testing.assert_allclose(binding.weights[cloth].sum(1), 1.0)
    # lift and shift the cloth (slide joints of its vertex bodies), then let it drop for 0.3 s
    verts0 = env.flex_vertices("cloth")
    lift = np.array([0.04, -0.03, 0.15])
    start, count = model.flex_vertadr[0], model.flex_vertnum[0]
    for b in model.flex_vertbodyid[start:start + count]:
        for j in range(model.body_jntadr[b], model.body_jntadr[b] + model.body_jntnum[b]):
            data.qpos[model.jnt_qposadr[j]] += data.xaxis[j] @ lift  # three orthogonal slide joints
    mujoco.mj_forward(model, data)
    verts1 = env.flex_vertices("cloth")
    torch.testing.assert_close(verts1, verts0 + torch.from_numpy(lift))
    for _ in range(150):
        mujoco.mj_step(model, data)
    mujoco.mj_forward(model, data)
    verts2 = env.flex_vertices("cloth")
    poses = torch.stack([env.body_poses(env.body_names())] * 3)
    positions, valid = track_points(pts.true_points, pts.body_id, poses, binding,
                                    torch.stack([verts0, verts1, verts2]))
    assert valid.all()
    np.testing.assert_allclose(positions[1, cloth].numpy(), pts.true_points[cloth] + lift, atol=1e-9)
    # after the drop: tracked points stay on the cloth (near its vertices) and on the rendered surface
    dist = torch.cdist(positions[2, cloth], verts2).min(1).values
    spacing = env.config.cloth_size_m / 8
    assert float(dist.max()) < spacing
    assert float((verts2 - verts1).norm(dim=1).mean()) > 0.05  # it really fell
    _, _, _, depth2, seg2 = _capture(env, n_views=3)
    p = positions[2, cloth].numpy()
    v = pts.view_index[cloth]
    p_cam = np.einsum("nji,nj->ni", T[v, :3, :3], p - T[v, :3, 3])
    uv = np.rint(np.einsum("nij,nj->ni", K[v], p_cam)[:, :2] / p_cam[:, 2:]).astype(int)
    inside = (uv[:, 0] >= 0) & (uv[:, 0] < W) & (uv[:, 1] >= 0) & (uv[:, 1] < H)
    on_cloth = inside.copy()
    on_cloth[inside] = seg2[v[inside], uv[inside, 1], uv[inside, 0]] == flex_segmentation_body(model, 0)
    assert on_cloth.mean() > 0.7
    err = np.abs(depth2[v[on_cloth], uv[on_cloth, 1], uv[on_cloth, 0]] - p_cam[on_cloth, 2])
    assert np.median(err) < 0.01
