"""Synthetic RGB-D renderer: camera poses, depth vs analytic geometry and Open3D distances, shading, noise."""

from __future__ import annotations

import numpy as np
import open3d as o3d
import pytest
import trimesh

from pointworld.capture import synthetic
from pointworld.capture.synthetic import (DepthNoise, SyntheticScene, look_at, render_depth,
                                          render_frames, table_scene)

H, W = 120, 160
K = np.array([[150.0, 0.0, 79.3], [0.0, 148.0, 60.2], [0.0, 0.0, 1.0]])
EYES = ([1.3, 0.55, 0.65], [1.3, -0.55, 0.65], [0.5, 0.0, 1.25])
TARGET = [0.6, 0.0, 0.05]


def _poses() -> np.ndarray:
    return np.stack([look_at(e, TARGET) for e in EYES])


def _backproject(depth: np.ndarray, K: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Naive per-pixel backprojection (independent of pointworld.geometry), world frame."""
    v, u = np.nonzero(depth > 0)
    z = depth[v, u].astype(np.float64)
    pts = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], axis=1)
    return pts @ T[:3, :3].T + T[:3, 3]


def test_look_at_is_an_opencv_frame_looking_at_target():
    T = look_at([1.5, 0.5, 0.8], [0.6, -0.1, 0.1])
    R = T[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0)
    np.testing.assert_allclose(T[:3, 3], [1.5, 0.5, 0.8])
    view = np.array([0.6, -0.1, 0.1]) - [1.5, 0.5, 0.8]
    np.testing.assert_allclose(R[:, 2], view / np.linalg.norm(view), atol=1e-12)
    assert R[2, 1] < 0  # image +y (down) points to world -z
    assert abs(R[2, 0]) < 1e-12  # the image x axis is horizontal (no roll)
    batched = look_at(np.array(EYES), np.array([TARGET] * 3))
    np.testing.assert_allclose(batched, _poses(), atol=1e-15)


@pytest.mark.parametrize("eye, target, up", [([0, 0, 1], [0, 0, 1], [0, 0, 1]),
                                             ([0, 0, 1], [0, 0, 0], [0, 0, 1]),
                                             ([0, 0, 1], [0, 0, 0], [1, 0])])
def test_look_at_rejects_degenerate_input(eye, target, up):
    with pytest.raises(ValueError, match="eye|up"):
        look_at(eye, target, up)


def test_depth_of_a_plane_matches_the_analytic_ray_intersection():
    plane = trimesh.creation.box(extents=[4.0, 4.0, 0.1])
    plane.apply_translation([0.0, 0.0, -0.05])  # top face at z = 0
    scene = SyntheticScene((plane,), ((0.5, 0.5, 0.5),), ("plane",))
    T = look_at([0.3, -0.2, 1.1], [0.5, 0.1, 0.0])
    depth = render_depth(scene, K, T, H, W)
    v, u = np.mgrid[0:H, 0:W]
    d_cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u, float)], -1)
    d_world = d_cam @ T[:3, :3].T
    expected = -T[2, 3] / d_world[..., 2]  # z-depth, since d_cam has z = 1
    assert depth.dtype == np.float32 and depth.shape == (H, W)
    np.testing.assert_allclose(depth, expected, rtol=2e-6)


def test_backprojected_pixels_lie_on_the_mesh_surfaces():
    scene = table_scene(3)
    T = _poses()
    depth = render_depth(scene, K, T, H, W)
    assert depth.shape == (3, H, W)
    rc = scene.raycasting_scene()
    for i in range(3):
        assert (depth[i] > 0).mean() > 0.3
        pts = _backproject(depth[i], K, T[i]).astype(np.float32)
        dist = rc.compute_distance(o3d.core.Tensor(pts)).numpy()
        assert dist.max() < 1e-5


def test_render_frames_colors_follow_lambertian_shading():
    scene = table_scene(0)
    capture = render_frames(scene, K, _poses(), H, W, ["a", "b", "c"])
    assert capture.serials == ["a", "b", "c"]
    frame = capture.frames[2]  # top view: the table top (normal +z) fills most of the image
    np.testing.assert_allclose(frame.K, K)
    np.testing.assert_allclose(frame.T_world_cam, _poses()[2])
    assert np.all(frame.rgb[frame.depth == 0] == 0)
    pts = _backproject(frame.depth, K, frame.T_world_cam)
    on_table = np.abs(pts[:, 2]) < 1e-5
    shade = synthetic._AMBIENT + (1 - synthetic._AMBIENT) * synthetic._LIGHT_DIR_WORLD[2]
    expected = np.round(np.array(scene.colors[0]) * shade * 255)
    v, u = np.nonzero(frame.depth > 0)
    assert on_table.sum() > 0.5 * H * W
    table_rgb = frame.rgb[v[on_table], u[on_table]]
    np.testing.assert_array_equal(table_rgb, np.broadcast_to(expected, table_rgb.shape))


def test_table_scene_is_seeded_and_inside_the_default_workspace():
    a, b, c = table_scene(1), table_scene(1), table_scene(2)
    for ma, mb in zip(a.meshes, b.meshes):
        np.testing.assert_array_equal(ma.vertices, mb.vertices)
    assert not np.allclose(a.meshes[1].vertices.mean(0), c.meshes[1].vertices.mean(0))
    assert a.names[0] == "table" and len(a.meshes) == 6
    for mesh in a.meshes[1:]:
        lo, hi = mesh.bounds
        assert np.all(lo >= [0.2, -0.5, -1e-9]) and np.all(hi <= [1.0, 0.5, 0.6])


def test_noise_is_seeded_and_has_the_requested_statistics():
    scene = table_scene(0)
    T = _poses()[:1]
    clean = render_frames(scene, K, T, H, W, ["a"]).frames[0].depth
    noise = DepthNoise(sigma_at_1m_m=0.002, dropout=0.1)
    a = render_frames(scene, K, T, H, W, ["a"], noise=noise, seed=5).frames[0].depth
    b = render_frames(scene, K, T, H, W, ["a"], noise=noise, seed=5).frames[0].depth
    c = render_frames(scene, K, T, H, W, ["a"], noise=noise, seed=6).frames[0].depth
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    hit = clean > 0
    assert np.all(a[~hit] == 0)
    lost = hit & (a == 0)
    assert lost.sum() / hit.sum() == pytest.approx(0.1, abs=0.02)
    kept = hit & (a > 0)
    z_err = (a[kept] - clean[kept]) / clean[kept] ** 2
    assert abs(z_err.mean()) < 2e-4
    assert z_err.std() == pytest.approx(0.002, rel=0.05)


def test_bad_arguments_name_the_argument():
    scene = table_scene(0)
    with pytest.raises(ValueError, match="serials"):
        render_frames(scene, K, _poses(), H, W, ["a", "b"])
    with pytest.raises(ValueError, match="K"):
        render_depth(scene, np.eye(4), _poses(), H, W)
    with pytest.raises(ValueError, match="T_world_cam"):
        render_depth(scene, K, np.eye(3), H, W)
    with pytest.raises(ValueError, match="T_world_cams"):
        render_frames(scene, K, np.ones((2, 3, 4)), H, W, ["a", "b"])
    with pytest.raises(ValueError, match="height"):
        render_depth(scene, K, _poses(), 0, W)
    with pytest.raises(ValueError, match="dropout"):
        DepthNoise(dropout=1.0)
    with pytest.raises(ValueError, match="sigma_at_1m_m"):
        DepthNoise(sigma_at_1m_m=-1.0)
    with pytest.raises(ValueError, match="colors"):
        SyntheticScene((trimesh.creation.box(),), ((1.5, 0, 0),), ("box",))
    with pytest.raises(ValueError, match="meshes"):
        SyntheticScene((), (), ())
