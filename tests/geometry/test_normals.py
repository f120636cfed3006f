"""Normal estimation and statistical outlier removal against Open3D, on both kNN backends."""

from __future__ import annotations

import math

import numpy as np
import open3d as o3d
import pytest
import torch

import pointworld.geometry.normals as normals_module
from pointworld.geometry.normals import (
    estimate_normals,
    outliers_and_normals,
    statistical_outlier_mask,
)


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


@pytest.mark.parametrize("backend", ["torch", "open3d"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_normals_match_open3d(shape, backend):
    """Criterion: every |dot| with Open3D's normal > 0.999 (same neighbour sets: in practice 1 - 1e-12)."""
    rng = np.random.default_rng(0)
    points = SHAPES[shape](rng, 3000)
    ref = _open3d_normals(points, 16)
    ours = estimate_normals(torch.from_numpy(points)[None], k=16, backend=backend)[0].numpy()
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


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_closed_form_smallest_eigenvector_matches_eigh(dtype, tol):
    """Against float64 eigh on random PSD matrices whose smallest eigenvalue is distinct (relative gap
    to the middle one down to 1e-5), at several scales (covariances of mm- to m-sized patches)."""
    gen = torch.Generator().manual_seed(10)
    rot, _ = torch.linalg.qr(torch.randn(6000, 3, 3, generator=gen, dtype=torch.float64))
    lam = torch.rand(6000, 3, generator=gen, dtype=torch.float64) * torch.tensor([1.0, 0.3, 1e-2])
    lam = lam * torch.logspace(-8, 0, 6000, dtype=torch.float64)[:, None]
    cov = (rot * lam[:, None, :]) @ rot.transpose(-1, -2)
    low = lam.sort(-1).values
    keep = (low[:, 1] - low[:, 0]) > 1e-5 * low[:, 2]
    cov_in = cov.to(dtype)
    ref = torch.linalg.eigh(cov_in.double())[1][..., 0]  # exact for the (rounded) input
    ours = normals_module._smallest_eigenvector(cov_in)
    assert ours.dtype == dtype and int(keep.sum()) > 5000
    norm = torch.linalg.vector_norm(ours.double(), dim=-1)
    torch.testing.assert_close(norm, torch.ones_like(norm), rtol=0, atol=tol)
    assert float((ours.double() * ref).sum(-1).abs()[keep].min()) > 1 - tol


def test_closed_form_smallest_eigenvector_degenerate_cases():
    """Repeated smallest eigenvalue: any unit vector of its eigenspace (never NaN)."""
    d = torch.tensor([0.6, -0.8, 0.0], dtype=torch.float64)
    u = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    # zero and isotropic (any vector), a line along d (any vector orthogonal to d), a plane (its normal)
    cov = torch.stack([torch.zeros(3, 3, dtype=torch.float64), 1e-6 * torch.eye(3, dtype=torch.float64),
                       torch.outer(d, d), 2.0 * torch.outer(d, d) + torch.outer(u, u)])
    vec = normals_module._smallest_eigenvector(cov)
    assert bool(torch.isfinite(vec).all())
    torch.testing.assert_close(torch.linalg.vector_norm(vec, dim=-1), torch.ones(4, dtype=torch.float64))
    assert abs(float(vec[2] @ d)) < 1e-12
    expected = torch.linalg.cross(d, u)
    assert abs(float(vec[3] @ expected)) > 1 - 1e-12


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


@pytest.mark.parametrize("backend", ["torch", "open3d"])
def test_outliers_match_open3d_per_masked_cloud(backend):
    rng = np.random.default_rng(5)
    clouds = [_sphere(rng, 700), _plane(rng, 300)]
    clouds[1][:10] = clouds[1][10:20]  # duplicates: with k=2 their mean distance is 0 -> outliers
    points = torch.full((2, 900, 3), math.nan, dtype=torch.float64)
    mask = torch.zeros(2, 900, dtype=torch.bool)
    for b, c in enumerate(clouds):
        slots = torch.from_numpy(rng.choice(900, len(c), replace=False)).sort().values
        points[b, slots], mask[b, slots] = torch.from_numpy(c), True
    for k in (2, 16):
        ours = statistical_outlier_mask(points, mask, k=k, std_ratio=1.5, backend=backend)
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


# ---------------------------------------------------------------- kNN backends, shared search


def _noisy_batch(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Two padded clouds (box, sphere) with scattered outliers, NaN in masked slots, a camera each.
    21 copies of one box point (mean neighbour distance 0 for k <= 20: outliers) crowd the neighbour
    lists of the points around them."""
    rng = np.random.default_rng(8)
    box = _box(rng, 900)
    clouds = [np.r_[box, rng.uniform(-0.25, 0.25, (80, 3)), np.repeat(box[:1], 21, 0)],
              np.r_[_sphere(rng, 600), rng.uniform(-0.6, 0.6, (50, 3))]]
    points = torch.full((2, 1100, 3), math.nan, dtype=dtype)
    mask = torch.zeros(2, 1100, dtype=torch.bool)
    for b, c in enumerate(clouds):
        slots = torch.from_numpy(rng.choice(1100, len(c), replace=False))
        points[b, slots], mask[b, slots] = torch.from_numpy(c).to(dtype), True
    return points, mask, torch.tensor([[1.0, 0.5, 1.5], [-0.2, 0.1, 2.0]], dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_normals_and_outliers_identical_on_both_backends(dtype):
    points, mask, camera = _noisy_batch(dtype)
    for fn, kw in ((estimate_normals, {"k": 12, "viewpoint": camera}), (statistical_outlier_mask, {"k": 20})):
        ref = fn(points, mask, backend="torch", **kw)
        assert torch.equal(fn(points, mask, backend="open3d", **kw), ref)
    with pytest.raises(ValueError, match="backend"):
        estimate_normals(points, mask, backend="kdtree")
    with pytest.raises(ValueError, match="backend"):
        statistical_outlier_mask(points, mask, backend="kdtree")


@pytest.mark.parametrize("backend", ["torch", "open3d"])
@pytest.mark.parametrize("outlier_k, normals_k", [(20, 16), (6, 16), (20, 30), (3, 3)])
def test_shared_search_equals_separate_steps(monkeypatch, backend, outlier_k, normals_k):
    """outliers_and_normals == statistical_outlier_mask, then estimate_normals on the inlier cloud
    (bit for bit: the same neighbours in the same order); points whose shared neighbour list holds too
    few inliers are searched again, which these clouds exercise."""
    searched_again = []
    original = normals_module._search_rows
    monkeypatch.setattr(normals_module, "_search_rows",
                        lambda *a: searched_again.append(int(a[2].sum())) or original(*a))
    for dtype in (torch.float64, torch.float32):
        points, mask, camera = _noisy_batch(dtype)
        inliers, normals = outliers_and_normals(points, mask, outlier_k=outlier_k, std_ratio=1.5,
                                                normals_k=normals_k, viewpoint=camera, backend=backend)
        ref_inliers = statistical_outlier_mask(points, mask, k=outlier_k, std_ratio=1.5, backend=backend)
        ref_normals = estimate_normals(points, ref_inliers, k=normals_k, viewpoint=camera, backend=backend)
        assert torch.equal(inliers, ref_inliers) and 0 < int((mask & ~inliers).sum())
        assert torch.equal(normals, ref_normals)
    assert len(searched_again) == 2 and min(searched_again) > 0


def test_shared_search_edge_cases_and_bad_input():
    inliers, normals = outliers_and_normals(torch.zeros(2, 0, 3))
    assert inliers.shape == (2, 0) and normals.shape == (2, 0, 3)
    points = torch.rand(1, 10, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    inliers, normals = outliers_and_normals(points, outlier_k=20, normals_k=16)  # k > cloud size
    assert torch.equal(inliers, statistical_outlier_mask(points, k=20))
    assert torch.equal(normals, estimate_normals(points, inliers, k=16))
    for name in ("outlier_k", "normals_k"):
        with pytest.raises(ValueError, match=name):
            outliers_and_normals(points, **{name: 0})
    with pytest.raises(ValueError, match="std_ratio"):
        outliers_and_normals(points, std_ratio=math.inf)
    with pytest.raises(ValueError, match="viewpoint"):
        outliers_and_normals(points, viewpoint=torch.zeros(1, 9, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="backend"):
        outliers_and_normals(points, backend="")
