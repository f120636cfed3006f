"""Rendering of simulated scenes: depth against mj_ray, segmentation ids, camera rigs, depth noise."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
import torch

from pointworld.sim.cameras import CameraRigConfig, sample_cameras
from pointworld.sim.config import SceneConfig
from pointworld.sim.env import SimEnv
from pointworld.sim.render import (
    DepthNoiseConfig,
    add_depth_noise,
    flex_segmentation_body,
    render_views,
)

H, W = 120, 160
VISIBLE_GROUPS = np.array([1, 1, 1, 0, 0, 0], dtype=np.uint8)  # MuJoCo's default visible geom groups


@pytest.fixture(scope="module")
def rendered() -> tuple:
    env = SimEnv(SceneConfig(n_objects=(4, 4), include_cloth=True))
    env.reset(3)
    rig = CameraRigConfig(n_views=3, width=W, height=H)
    K, T = sample_cameras(rig, env.config.table_placement(env.robot.name), np.random.default_rng(5))
    rgb, depth, seg = render_views(env.model, env.data, K, T, H, W)
    return env, K, T, rgb, depth, seg


def ray_hits(model: mujoco.MjModel, data: mujoco.MjData, K: np.ndarray, T: np.ndarray, rows: np.ndarray,
             cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mj_ray along pixel rays with camera-frame z = 1: (hit parameter = z-depth or -1, geom id)."""
    dist, geom = np.empty(len(rows)), np.empty(len(rows), dtype=np.int64)
    gid = np.zeros(1, dtype=np.int32)
    for i, (r, c) in enumerate(zip(rows, cols)):
        ray = np.array([(c - K[0, 2]) / K[0, 0], (r - K[1, 2]) / K[1, 1], 1.0])
        dist[i] = mujoco.mj_ray(model, data, T[:3, 3], T[:3, :3] @ ray, VISIBLE_GROUPS, 1, -1, gid)
        geom[i] = gid[0]
    return dist, geom


def test_depth_is_z_depth_matching_mj_ray(rendered: tuple) -> None:
    env, K, T, _, depth, seg = rendered
    cloth_body = flex_segmentation_body(env.model, 0)
    for v in range(3):
        rows, cols = np.meshgrid(np.arange(0, H, 3), np.arange(0, W, 3), indexing="ij")
        rows, cols = rows.ravel(), cols.ravel()
        dist, geom = ray_hits(env.model, env.data, K[v], T[v], rows, cols)
        rendered_z = depth[v, rows, cols]
        rigid = seg[v, rows, cols] != cloth_body  # mj_ray does not see the flex
        both = rigid & (dist > 0) & (rendered_z > 0)
        # background agrees: no hit <=> invalid depth (rigid pixels only)
        assert np.mean((dist[rigid] > 0) == (rendered_z[rigid] > 0)) > 0.995
        err = np.abs(rendered_z[both] - dist[both])
        assert both.sum() > 500
        assert np.mean(err <= 0.002) > 0.995, np.sort(err)[-10:]
        assert np.median(err) < 1e-4
        # segmentation names the body the ray hit
        same = env.model.geom_bodyid[geom[both]] == seg[v, rows, cols][both]
        assert same.mean() > 0.99


def test_segmentation_ids_are_bodies(rendered: tuple) -> None:
    env, _, _, rgb, depth, seg = rendered
    model = env.model
    assert seg.dtype == np.int32 and seg.shape == (3, H, W)
    assert seg.min() >= -1 and seg.max() < model.nbody
    names = {model.body(int(i)).name for i in np.unique(seg) if i >= 0}
    assert {"table", "cloth_root"} <= names
    assert any(n.startswith("object_") for n in names)
    assert names & set(env.robot.link_names)
    # every labelled body has geoms of its own, except the flex's stand-in body
    for i in np.unique(seg):
        if i >= 0 and model.body(int(i)).name != "cloth_root":
            assert model.body_geomnum[i] > 0
    np.testing.assert_array_equal(depth == 0, seg == -1)
    assert rgb.dtype == np.uint8 and rgb.shape == (3, H, W, 3) and rgb.std() > 10


def test_torch_cameras_and_repeat_render_identical(rendered: tuple) -> None:
    env, K, T, rgb, depth, seg = rendered
    rgb2, depth2, seg2 = render_views(env.model, env.data, torch.from_numpy(K), torch.from_numpy(T), H, W)
    np.testing.assert_array_equal(depth, depth2)
    np.testing.assert_array_equal(seg, seg2)
    np.testing.assert_array_equal(rgb, rgb2)


def test_render_bad_input(rendered: tuple) -> None:
    env, K, T, *_ = rendered
    with pytest.raises(ValueError, match="K"):
        render_views(env.model, env.data, K[:, :2], T, H, W)
    with pytest.raises(ValueError, match="T_world_cam"):
        render_views(env.model, env.data, K, T[:2], H, W)
    bad = T.copy()
    bad[0, :3, :3] *= 2.0
    with pytest.raises(ValueError, match="rigid"):
        render_views(env.model, env.data, K, bad, H, W)
    with pytest.raises(ValueError, match="height"):
        render_views(env.model, env.data, K, T, 0, W)
    with pytest.raises(ValueError, match="framebuffer"):  # beyond the model's 640 x 480 offscreen buffer
        render_views(env.model, env.data, K, T, 600, 800)
    with pytest.raises(TypeError, match="model"):
        render_views(None, env.data, K, T, H, W)


def test_camera_sampling_seeded_and_sees_table() -> None:
    rig = CameraRigConfig(n_views=3, width=W, height=H)
    center = np.array([0.55, 0.0, 0.0])
    K1, T1 = sample_cameras(rig, center, np.random.default_rng(7))
    K2, T2 = sample_cameras(rig, center, np.random.default_rng(7))
    _, T3 = sample_cameras(rig, center, np.random.default_rng(8))
    np.testing.assert_array_equal(T1, T2)
    np.testing.assert_array_equal(K1, K2)
    assert np.abs(T1 - T3).max() > 1e-3
    np.testing.assert_array_equal(sample_cameras(rig, center)[1], sample_cameras(rig, center)[1])
    R = T1[:, :3, :3]
    np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), (3, 3, 3)), atol=1e-12)
    # the table centre projects into every image, in front of the camera
    p_cam = np.einsum("vji,vj->vi", R, center - T1[:, :3, 3])
    assert np.all(p_cam[:, 2] > 0.3)
    uv = np.einsum("vij,vj->vi", K1, p_cam)[:, :2] / p_cam[:, 2:]
    assert np.all((uv > 0) & (uv < [W, H]))


@pytest.mark.parametrize("kwargs", [{"n_views": 0}, {"n_views": 4}, {"width": 0}, {"fov_y_deg": 180},
                                    {"position_jitter_m": -0.1}, {"seed": -1}])
def test_camera_config_rejects_bad_values(kwargs: dict) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ValueError, match=name):
        CameraRigConfig(**kwargs)


def test_sample_cameras_bad_input() -> None:
    with pytest.raises(ValueError, match="table_center"):
        sample_cameras(CameraRigConfig(), (0.5, 0.0))
    with pytest.raises(TypeError, match="rng"):
        sample_cameras(CameraRigConfig(), (0.5, 0.0, 0.0), rng=3)


def test_depth_noise_seeded_and_sensor_like(rendered: tuple) -> None:
    depth = rendered[4]
    cfg = DepthNoiseConfig(sigma_coeff_per_m=0.002, edge_threshold_m=0.03, edge_dropout=1.0,
                           holes_per_view=0.0)
    a = add_depth_noise(depth, cfg, np.random.default_rng(1))
    b = add_depth_noise(depth, cfg, np.random.default_rng(1))
    c = add_depth_noise(depth, cfg, np.random.default_rng(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert a.dtype == np.float32 and np.all(a[depth == 0] == 0)
    kept = (a > 0) & (depth > 0)
    # all dropped pixels sit next to a depth jump (edge_dropout = 1 drops all of those)
    dropped = (depth > 0) & (a == 0)
    assert dropped.sum() > 0
    padded = np.pad(np.where(depth > 0, depth, np.inf), ((0, 0), (1, 1), (1, 1)), mode="edge")
    jump = np.zeros(depth.shape, dtype=bool)
    for dr, dc in ((0, 1), (2, 1), (1, 0), (1, 2)):
        nb = padded[:, dr:dr + H, dc:dc + W]
        with np.errstate(invalid="ignore"):
            jump |= ~(np.abs(nb - np.where(depth > 0, depth, np.inf)) <= 0.03)
    assert np.all(jump[dropped])
    # the noise scale follows sigma = a z^2
    resid = (a[kept] - depth[kept]) / (cfg.sigma_coeff_per_m * depth[kept].astype(np.float64) ** 2)
    assert abs(resid.std() - 1.0) < 0.05 and abs(resid.mean()) < 0.05
    holes = add_depth_noise(depth, DepthNoiseConfig(sigma_coeff_per_m=0.0, edge_dropout=0.0,
                                                    holes_per_view=5.0), np.random.default_rng(3))
    lost = (depth > 0) & (holes == 0)
    assert lost.sum() > 0
    np.testing.assert_array_equal(holes[holes > 0], depth[holes > 0])


@pytest.mark.parametrize("kwargs", [{"sigma_coeff_per_m": -1.0}, {"edge_threshold_m": 0.0},
                                    {"edge_dropout": 1.5}, {"holes_per_view": float("nan")},
                                    {"hole_radius_px": (3.0, 1.0)}])
def test_depth_noise_config_rejects_bad_values(kwargs: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DepthNoiseConfig(**kwargs)
