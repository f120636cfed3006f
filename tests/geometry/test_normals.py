"""Normal estimation and statistical outlier removal against Open3D."""

from __future__ import annotations

import math

import numpy as np
import open3d as o3d
import pytest
import torch

from pointworld.geometry.normals import estimate_normals, statistical_outlier_mask


def _plane(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.c_[rng.uniform(-0.5, 0.5, (n, 2)), rng.normal(0.0, 0.002, n)] + np.array([0.3, -0.2, 0.7])


def _sphere(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return 0.3 * v / np.linalg.norm(v, axis=1, keepdims=True) + rng.normal(0.0, 0.001, (n, 3))


def _box(rng: np.random.Generator, n: int) -> np.ndarray:
    half = np.array([0.2, 0.15, 0.1])
    pts = rng.uniform(-1.0, 1.0, (n, 3)) * half
    axis = rng.integers(0, 3, n)
    pts[np.arange(n), axis] = rng.choice([-1.0, 1.0], n) * half[axis]
    return pts + rng.normal(0.0, 0.001, (n, 3))


SHAPES = {"plane": _plane, "sphere": _sphere, "box": _box}


def _open3d_normals(points: np.ndarray, k: int, camera: np.ndarray | None = None) -> np.ndarray:
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(k))
    if camera is not None:
        cloud.orient_normals_towards_camera_location(camera)
    return np.asarray(cloud.normals)


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_normals_match_open3d(shape):
    """Criterion: every |dot| with Open3D's normal > 0.999 (same neighbour sets: in practice 1 - 1e-12)."""
    rng = np.random.default_rng(0)
    points = SHAPES[shape](rng, 3000)
    ref = _open3d_normals(points, 16)
    ours = estimate_normals(torch.from_numpy(points)[None], k=16)[0].numpy()
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-12)
    dot = np.abs((ours * ref).sum(1))
    assert dot.min() > 0.999, (dot < 0.999).sum()


@pytest.mark.parametrize("per_point", [False, True])
def test_normals_oriented_toward_viewpoint(per_point):
    rng = np.random.default_rng(1)
    points = _sphere(rng, 2000)
    camera = np.array([0.1, -0.2, 1.5])
    ref = _open3d_normals(points, 12, camera)
    pts = torch.from_numpy(points)[None]
    vp = torch.from_numpy(camera)[None]
    if per_point:
        vp = vp[:, None, :].expand(1, 2000, 3).contiguous()
    ours = estimate_normals(pts, k=12, viewpoint=vp)[0]
    assert bool(((torch.from_numpy(camera) - pts[0]) * ours).sum(-1).ge(0).all())
    assert (ours.numpy() * ref).sum(1).min() > 0.999  # same sign as Open3D, not just the same axis


def test_normals_default_sign_convention_and_float32():
    rng = np.random.default_rng(2)
    points = torch.from_numpy(_box(rng, 2000)).float()[None]
    normals = estimate_normals(points, k=10)[0]
    major = torch.gather(normals, 1, normals.abs().argmax(1, keepdim=True))
    assert bool((major > 0).all())
    ref = _open3d_normals(points[0].double().numpy(), 10)
    assert np.abs((normals.double().numpy() * ref).sum(1)).min() > 0.999


def test_normals_ignore_masked_points():
    rng = np.random.default_rng(3)
    points = torch.from_numpy(_plane(rng, 800))[None]
    junk = torch.full((1, 200, 3), math.nan, dtype=torch.float64)
    padded = torch.cat([points, junk], 1)[:, torch.randperm(1000, generator=torch.Generator().manual_seed(0))]
    mask = torch.isfinite(padded).all(-1)
    normals = estimate_normals(padded, mask, k=8)
    assert not normals[~mask].any()
    assert torch.allclose(normals[mask], estimate_normals(padded[mask][None], k=8)[0], atol=1e-12)
    tiny = estimate_normals(points[:, :2], k=8)  # fewer than 3 neighbours: undefined, zero
    assert not tiny.any()
    assert estimate_normals(torch.zeros(2, 0, 3)).shape == (2, 0, 3)
    assert statistical_outlier_mask(torch.zeros(2, 0, 3)).shape == (2, 0)


def test_normals_bad_input():
    points = torch.zeros(1, 10, 3)
    for k in (0, -2, 2.5):
        with pytest.raises(ValueError, match="k"):
            estimate_normals(points, k=k)
    with pytest.raises(ValueError, match="viewpoint"):
        estimate_normals(points, viewpoint=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="viewpoint"):
        estimate_normals(points, viewpoint=torch.tensor([[0.0, math.nan, 0.0]]))
    with pytest.raises(ValueError, match="mask"):
        estimate_normals(points, torch.ones(1, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="points"):
        estimate_normals(torch.zeros(10, 3))


# ---------------------------------------------------------------- statistical outliers


def _open3d_inliers(points: np.ndarray, k: int, std_ratio: float) -> np.ndarray:
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    _, idx = cloud.remove_statistical_outlier(k, std_ratio)
    return np.sort(np.asarray(idx, dtype=np.int64))


@pytest.mark.parametrize("k, std_ratio", [(20, 2.0), (5, 1.0), (1, 2.0), (50, 0.5)])
def test_outliers_match_open3d(k, std_ratio):
    rng = np.random.default_rng(4)
    points = np.r_[_box(rng, 1500), rng.uniform(-1.0, 1.0, (60, 3))]
    ours = statistical_outlier_mask(torch.from_numpy(points)[None], k=k, std_ratio=std_ratio)[0]
    np.testing.assert_array_equal(np.nonzero(ours.numpy())[0], _open3d_inliers(points, k, std_ratio))


def test_outliers_match_open3d_per_masked_cloud():
    rng = np.random.default_rng(5)
    clouds = [_sphere(rng, 700), _plane(rng, 300)]
    clouds[1][:10] = clouds[1][10:20]  # duplicates: with k=2 their mean distance is 0 -> outliers
    points = torch.full((2, 900, 3), math.nan, dtype=torch.float64)
    mask = torch.zeros(2, 900, dtype=torch.bool)
    for b, c in enumerate(clouds):
        slots = torch.from_numpy(rng.choice(900, len(c), replace=False)).sort().values
        points[b, slots], mask[b, slots] = torch.from_numpy(c), True
    for k in (2, 16):
        ours = statistical_outlier_mask(points, mask, k=k, std_ratio=1.5)
        assert not (ours & ~mask).any()
        for b, c in enumerate(clouds):
            kept = ours[b][mask[b]].numpy()
            np.testing.assert_array_equal(np.nonzero(kept)[0], _open3d_inliers(c, k, 1.5))


def test_outliers_small_clouds_match_open3d():
    rng = np.random.default_rng(6)
    points = rng.uniform(0, 1, (6, 3))
    ours = statistical_outlier_mask(torch.from_numpy(points)[None], k=20)[0]  # k > N
    np.testing.assert_array_equal(np.nonzero(ours.numpy())[0], _open3d_inliers(points, 20, 2.0))
    single = statistical_outlier_mask(torch.from_numpy(points[:1])[None], k=3)
    assert not single.any() and _open3d_inliers(points[:1], 3, 2.0).size == 0


def test_outliers_many_small_clouds_match_open3d():
    """Small clouds make the threshold sensitive to details (sample vs population std, self distance)."""
    rng = np.random.default_rng(7)
    clouds = [rng.normal(0.0, 1.0, (int(rng.integers(5, 16)), 3)) for _ in range(40)]
    n_max = max(len(c) for c in clouds)
    points = torch.zeros(len(clouds), n_max, 3, dtype=torch.float64)
    mask = torch.zeros(len(clouds), n_max, dtype=torch.bool)
    for b, c in enumerate(clouds):
        points[b, :len(c)], mask[b, :len(c)] = torch.from_numpy(c), True
    ours = statistical_outlier_mask(points, mask, k=3, std_ratio=1.0)
    for b, c in enumerate(clouds):
        np.testing.assert_array_equal(np.nonzero(ours[b, :len(c)].numpy())[0], _open3d_inliers(c, 3, 1.0))


def test_outliers_bad_input():
    points = torch.zeros(1, 10, 3)
    with pytest.raises(ValueError, match="k"):
        statistical_outlier_mask(points, k=0)
    for ratio in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="std_ratio"):
            statistical_outlier_mask(points, std_ratio=ratio)
    with pytest.raises(TypeError, match="mask"):
        statistical_outlier_mask(points, torch.ones(1, 10))
