"""Pinhole camera: intrinsics checks, projection vs OpenCV, backprojection vs Open3D, round trips."""

from __future__ import annotations

import math

import cv2
import numpy as np
import open3d as o3d
import open3d.core as o3c
import pytest
import torch

from pointworld.geometry.camera import (backproject_depth, check_intrinsics, depth_to_world_points,
                                        intrinsics_from_fov, make_intrinsics, pixel_grid,
                                        project_points)
from pointworld.geometry.se3 import transform_points

DIST = [0.12, -0.25, 1e-3, -8e-4, 0.1]  # (k1, k2, p1, p2, k3), RealSense-like magnitudes


def _random_K(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    fx, fy = rng.uniform(0.6, 1.4, size=2) * width
    cx, cy = rng.uniform(0.35, 0.65) * width, rng.uniform(0.35, 0.65) * height
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def _random_pose(rng: np.random.Generator) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rng.normal(size=3))[0]
    T[:3, 3] = rng.uniform(-1.0, 1.0, size=3)
    return T


def _random_depth(rng: np.random.Generator, height: int, width: int, max_depth: float) -> np.ndarray:
    """float32 depth with 0, NaN, ±inf, negative and beyond-range pixels, none exactly at max_depth."""
    depth = rng.uniform(0.05, 1.3 * max_depth, size=(height, width)).astype(np.float32)
    special = np.array([0.0, np.nan, np.inf, -np.inf, -0.5, 2.0 * max_depth], dtype=np.float32)
    pick = rng.random((height, width)) < 0.25
    depth[pick] = rng.choice(special, size=int(pick.sum()))
    depth[np.abs(depth - max_depth) < 1e-4] = 0.5 * max_depth  # Open3D drops depth == trunc
    return depth


def _open3d_legacy(depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray, max_depth: float
                   ) -> np.ndarray:
    height, width = depth.shape
    intr = o3d.camera.PinholeCameraIntrinsic(width, height, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    cloud = o3d.geometry.PointCloud.create_from_depth_image(
        o3d.geometry.Image(depth), intr, np.linalg.inv(T_world_cam), depth_scale=1.0,
        depth_trunc=max_depth, project_valid_depth_only=True)
    return np.asarray(cloud.points)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_depth_to_world_points_matches_open3d_legacy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    height, width, max_depth = 37, 53, 2.5
    K, T, depth = _random_K(rng, width, height), _random_pose(rng), _random_depth(rng, height, width, 2.5)
    ref = _open3d_legacy(depth, K, T, max_depth)
    for dtype, atol in ((torch.float64, 1e-9), (torch.float32, 2e-5)):
        points, valid = depth_to_world_points(torch.from_numpy(depth).to(dtype), torch.from_numpy(K),
                                              torch.from_numpy(T), max_depth_m=max_depth)
        assert points.dtype == dtype and valid.shape == (height, width)
        assert int(valid.sum()) == len(ref) > 0
        # Row-major order on both sides: compare point by point, not as sets.
        np.testing.assert_allclose(points[valid].double().numpy(), ref, rtol=0, atol=atol)
        assert torch.all(points[~valid] == 0)


def test_backproject_matches_open3d_tensor_api() -> None:
    rng = np.random.default_rng(3)
    height, width, max_depth = 29, 41, 3.0
    K, depth = _random_K(rng, width, height), _random_depth(rng, height, width, 3.0)
    ref = o3d.t.geometry.PointCloud.create_from_depth_image(
        o3d.t.geometry.Image(o3c.Tensor(depth)), o3c.Tensor(K), o3c.Tensor(np.eye(4)),
        depth_scale=1.0, depth_max=max_depth).point.positions.numpy()
    points, valid = backproject_depth(torch.from_numpy(depth), torch.from_numpy(K),
                                      max_depth_m=max_depth)
    ours = points[valid].double()
    assert int(valid.sum()) == len(ref) > 0
    # The tensor API compacts in parallel (not row-major): match the two sets one to one.
    dist, index = torch.cdist(torch.from_numpy(ref).double(), ours).min(dim=1)
    assert dist.max().item() < 1e-6
    assert torch.equal(index.sort().values, torch.arange(len(ref)))


def test_validity_rule_and_no_nan_leaks() -> None:
    depth = torch.tensor([[0.0, math.nan, math.inf, -math.inf, -1.0, 0.5, 1.0, 2.0, 2.0001]],
                         dtype=torch.float64)
    K = make_intrinsics(100.0, 100.0, 4.0, 0.0)
    points, valid = backproject_depth(depth, K, min_depth_m=0.5, max_depth_m=2.0)
    assert valid.tolist() == [[False] * 6 + [True, True, False]]  # min exclusive, max inclusive
    assert torch.isfinite(points).all() and torch.all(points[~valid] == 0)
    T_world_cam = torch.eye(4, dtype=torch.float64)
    T_world_cam[:3, 3] = 0.5
    world, valid_w = depth_to_world_points(depth, K, T_world_cam, min_depth_m=0.5, max_depth_m=2.0)
    assert torch.equal(valid_w, valid) and torch.all(world[~valid] == 0)
    assert torch.isfinite(world).all()


def test_depth_to_world_points_equals_manual_composition() -> None:
    rng = np.random.default_rng(4)
    K = torch.from_numpy(np.stack([_random_K(rng, 20, 15) for _ in range(3)]))
    T = torch.from_numpy(np.stack([_random_pose(rng) for _ in range(3)]))
    depth = torch.from_numpy(np.stack([_random_depth(rng, 15, 20, 2.0) for _ in range(3)])).double()
    dist = torch.tensor(DIST, dtype=torch.float64)
    for d in (None, dist):
        world, valid = depth_to_world_points(depth, K, T, d, max_depth_m=2.0)
        cam, valid_c = backproject_depth(depth, K, d, max_depth_m=2.0)
        manual = transform_points(T, cam.reshape(3, -1, 3)).reshape(3, 15, 20, 3)
        assert torch.equal(valid, valid_c)
        torch.testing.assert_close(world[valid], manual[valid], rtol=0, atol=1e-12)
        assert torch.all(world[~valid] == 0)


@pytest.mark.parametrize("coeffs", [None, DIST])
def test_project_backproject_round_trip(coeffs: list[float] | None) -> None:
    rng = np.random.default_rng(5)
    height, width = 24, 32
    K = torch.from_numpy(_random_K(rng, width, height))
    K[0, 1] = 3.5  # skew
    dist = None if coeffs is None else torch.tensor(coeffs, dtype=torch.float64)
    depth = torch.from_numpy(rng.uniform(0.2, 3.0, size=(height, width)))
    points, valid = backproject_depth(depth, K, dist)
    assert valid.all()
    uv, z = project_points(points.reshape(-1, 3), K, dist)
    grid = pixel_grid(height, width, dtype=torch.float64, device=None).reshape(-1, 2)
    assert (uv - grid).abs().max().item() < 1e-9
    assert (z - depth.reshape(-1)).abs().max().item() < 1e-12


def test_distorted_rays_match_opencv_undistort_points() -> None:
    rng = np.random.default_rng(6)
    K = _random_K(rng, 32, 24)
    points, _ = backproject_depth(torch.ones(24, 32, dtype=torch.float64), torch.from_numpy(K),
                                  torch.tensor(DIST, dtype=torch.float64))
    grid = pixel_grid(24, 32, dtype=torch.float64, device=None).reshape(-1, 1, 2).numpy()
    ref = cv2.undistortPoints(grid, K, np.array(DIST), criteria=(cv2.TERM_CRITERIA_COUNT, 300, 0.0))
    np.testing.assert_allclose(points[..., :2].reshape(-1, 2).numpy(), ref[:, 0], rtol=0, atol=1e-10)


def test_project_points_matches_opencv() -> None:
    rng = np.random.default_rng(7)
    K = _random_K(rng, 640, 480)
    pts = np.concatenate([rng.uniform(-0.5, 0.5, (400, 2)), rng.uniform(0.8, 3.0, (400, 1))], 1)
    for coeffs in (np.zeros(5), np.array(DIST)):
        ref, _ = cv2.projectPoints(pts[:, None], np.zeros(3), np.zeros(3), K, coeffs)
        uv, z = project_points(torch.from_numpy(pts), torch.from_numpy(K), torch.from_numpy(coeffs))
        np.testing.assert_allclose(uv.numpy(), ref[:, 0], rtol=0, atol=1e-9)
        np.testing.assert_array_equal(z.numpy(), pts[:, 2])
    uv0, _ = project_points(torch.from_numpy(pts), torch.from_numpy(K))
    np.testing.assert_allclose(uv0.numpy(), (pts @ K.T)[:, :2] / pts[:, 2:], rtol=0, atol=1e-9)


def test_project_points_behind_camera_is_nan() -> None:
    pts = torch.tensor([[0.1, 0.2, 1.0], [0.1, 0.2, 0.0], [0.1, 0.2, -1.0]], dtype=torch.float64)
    uv, z = project_points(pts, make_intrinsics(500.0, 500.0, 320.0, 240.0),
                           torch.tensor(DIST, dtype=torch.float64))
    assert torch.isfinite(uv[0]).all() and torch.isnan(uv[1:]).all()
    assert z.tolist() == [1.0, 0.0, -1.0]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_views_equal_per_view(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(8)
    V, H, W = 3, 12, 17
    K = torch.from_numpy(np.stack([_random_K(rng, W, H) for _ in range(V)]))
    dist = torch.from_numpy(rng.normal(scale=0.05, size=(V, 5)))
    depth = torch.from_numpy(np.stack([_random_depth(rng, H, W, 2.0) for _ in range(V)])).to(dtype)
    for d, atol in ((None, 0.0), (dist, 1e-12)):  # the undistortion loop may stop a step apart
        points, valid = backproject_depth(depth, K, d, max_depth_m=2.0)
        for v in range(V):
            p_v, valid_v = backproject_depth(depth[v], K[v], None if d is None else d[v], max_depth_m=2.0)
            assert torch.equal(valid[v], valid_v)
            torch.testing.assert_close(points[v], p_v, rtol=0, atol=atol)
    shared, _ = backproject_depth(depth, K[0])  # one K broadcast over the views
    torch.testing.assert_close(shared[2], backproject_depth(depth[2], K[0])[0], rtol=0, atol=0)
    uv, _ = project_points(shared.reshape(V, -1, 3), K[0])
    assert uv.dtype == dtype and uv.shape == (V, H * W, 2)


def test_float32_agrees_with_float64() -> None:
    rng = np.random.default_rng(9)
    K, depth = torch.from_numpy(_random_K(rng, 40, 30)), _random_depth(rng, 30, 40, 2.0)
    dist = torch.tensor(DIST, dtype=torch.float64)
    p32, v32 = backproject_depth(torch.from_numpy(depth), K.float(), dist.float(), max_depth_m=2.0)
    p64, v64 = backproject_depth(torch.from_numpy(depth).double(), K, dist, max_depth_m=2.0)
    assert p32.dtype == torch.float32 and torch.equal(v32, v64)
    torch.testing.assert_close(p32.double(), p64, rtol=1e-5, atol=1e-6)


def test_intrinsics_constructors_and_pixel_grid() -> None:
    K = make_intrinsics(500.0, 510.0, 319.5, 239.5)
    assert K.dtype == torch.float64 and K.tolist() == [[500, 0, 319.5], [0, 510, 239.5], [0, 0, 1]]
    fov = math.radians(58.0)
    K = intrinsics_from_fov(640, 480, fov)
    # A ray at half the vertical FOV hits the top edge of the first row (v = -0.5), centred in u.
    ray = torch.tensor([[0.0, -math.tan(fov / 2), 1.0]], dtype=torch.float64)
    uv, _ = project_points(ray, K)
    torch.testing.assert_close(uv[0], torch.tensor([319.5, -0.5], dtype=torch.float64))
    grid = pixel_grid(3, 4, dtype=torch.float32, device="cpu")
    assert grid.shape == (3, 4, 2) and grid.dtype == torch.float32
    assert grid[2, 1].tolist() == [1.0, 2.0]  # (u = column, v = row)
    with pytest.raises(ValueError, match="^fx: expected a focal length > 0"):
        make_intrinsics(0.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="^fov_y_rad:"):
        intrinsics_from_fov(640, 480, math.pi)


def test_check_intrinsics_rejects_bad_matrices() -> None:
    good = make_intrinsics(500.0, 500.0, 320.0, 240.0)
    skewed = good.clone()
    skewed[0, 1] = 0.7
    assert check_intrinsics("K", skewed) is skewed
    cases = {(0, 0): 0.0, (1, 1): -5.0, (1, 2): math.nan, (2, 2): 2.0, (1, 0): 0.1, (2, 0): 1.0}
    for (i, j), value in cases.items():
        bad = torch.stack([good, good])
        bad[1, i, j] = value
        with pytest.raises(ValueError, match=r"^K: expected pinhole intrinsics .* batch index \(1,\)"):
            check_intrinsics("K", bad)
    with pytest.raises(ValueError, match=r"^K: expected shape \(\.\.\., 3, 3\), got .*\(2, 3\)"):
        check_intrinsics("K", torch.zeros(2, 3))
    with pytest.raises(TypeError, match="^K: expected a floating-point tensor"):
        check_intrinsics("K", good.long())
    with pytest.raises(TypeError, match="^K: expected a torch.Tensor, got ndarray"):
        check_intrinsics("K", good.numpy())


def test_bad_input_names_the_argument() -> None:
    K = make_intrinsics(500.0, 500.0, 320.0, 240.0)
    depth = torch.ones(4, 6, dtype=torch.float64)
    bad_K = K.clone()
    bad_K[0, 0] = -1.0
    with pytest.raises(ValueError, match="^K: expected shape"):
        backproject_depth(depth, K[:2])
    with pytest.raises(ValueError, match="^K: expected pinhole intrinsics"):
        backproject_depth(depth, bad_K)
    with pytest.raises(ValueError, match="^K: expected pinhole intrinsics"):
        project_points(torch.ones(5, 3), K * math.nan)
    with pytest.raises(TypeError, match="^depth_m: expected a floating-point tensor"):
        backproject_depth(torch.ones(4, 6, dtype=torch.int32), K)
    with pytest.raises(ValueError, match=r"^depth_m: expected \(\.\.\., H, W\) depth without a channel"):
        backproject_depth(torch.ones(4, 6, 1), K)
    with pytest.raises(ValueError, match="^K: expected leading dims that broadcast to depth_m's"):
        backproject_depth(torch.ones(2, 4, 6), K.expand(3, 3, 3))
    with pytest.raises(ValueError, match="^K: expected leading dims that broadcast to depth_m's"):
        backproject_depth(depth, K.expand(2, 3, 3))
    with pytest.raises(ValueError, match="^dist_coeffs: expected shape"):
        backproject_depth(depth, K, torch.zeros(4))
    with pytest.raises(ValueError, match="^max_depth_m: expected a number > min_depth_m"):
        backproject_depth(depth, K, min_depth_m=2.0, max_depth_m=2.0)
    with pytest.raises(ValueError, match="^min_depth_m: expected a finite number >= 0"):
        backproject_depth(depth, K, min_depth_m=-1.0)
    with pytest.raises(ValueError, match="^T_world_cam: expected shape"):
        depth_to_world_points(depth, K, torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="^T_world_cam: expected leading dims"):
        depth_to_world_points(depth, K, torch.eye(4, dtype=torch.float64).expand(2, 4, 4))
    with pytest.raises(ValueError, match="^points_cam, K, dist_coeffs: expected broadcastable"):
        project_points(torch.ones(2, 5, 3), K.expand(3, 3, 3))
    with pytest.raises(ValueError, match="^dist_coeffs: expected finite values"):
        backproject_depth(depth, K, torch.tensor([0.1, math.nan, 0.0, 0.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="^dist_coeffs: expected finite values"):
        project_points(torch.ones(5, 3), K, torch.tensor([math.inf, 0.0, 0.0, 0.0, 0.0]))
    scaled = torch.eye(4, dtype=torch.float64)
    scaled[:3, :3] *= 3.0
    with pytest.raises(ValueError, match="^T_world_cam"):
        depth_to_world_points(depth, K, scaled)


def test_pixels_beyond_the_distortion_fold_are_invalid() -> None:
    # x (1 - 2 r²) folds at r² = 1/6: wide-angle pixels have no undistorted ray at all.
    K, dist = make_intrinsics(20.0, 20.0, 15.5, 11.5), torch.tensor([-2.0, 0, 0, 0, 0], dtype=torch.float64)
    points, valid = backproject_depth(torch.ones(24, 32, dtype=torch.float64), K, dist)
    assert 0 < int(valid.sum()) < valid.numel() and bool(valid[11, 15])
    assert torch.isfinite(points).all() and torch.all(points[~valid] == 0)
    uv, _ = project_points(points[valid], K, dist)
    grid = pixel_grid(24, 32, dtype=torch.float64, device=None)[valid]
    assert (uv - grid).abs().max().item() < 1e-9
