"""kNN (torch and Open3D backends) and farthest point sampling against naive loops and Open3D."""

from __future__ import annotations

import math

import numpy as np
import open3d as o3d
import pytest
import torch

from pointworld.geometry import neighbors, neighbors_open3d
from pointworld.geometry.neighbors import farthest_point_sampling, knn

BACKENDS = ["torch", "open3d"]


def _cloud(seed: int, b: int = 2, n: int = 300, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(b, n, 3, generator=gen, dtype=dtype) * 2.0 - 1.0
    mask = torch.rand(b, n, generator=gen) < 0.8
    return points, mask, gen


def _naive_knn(query: np.ndarray, points: np.ndarray, valid: np.ndarray, k: int):
    """Per query: sort all valid points by distance (index breaks ties); pad with (inf, -1)."""
    dist = np.full(query.shape[:2] + (k,), np.inf)
    idx = np.full(query.shape[:2] + (k,), -1, dtype=np.int64)
    for b in range(query.shape[0]):
        cand = np.nonzero(valid[b])[0]
        for q in range(query.shape[1]):
            d = np.sqrt(((points[b, cand] - query[b, q]) ** 2).sum(-1))
            order = np.lexsort((cand, d))[:k]
            dist[b, q, :order.size], idx[b, q, :order.size] = d[order], cand[order]
    return dist, idx


def _naive_fps(points: np.ndarray, valid: np.ndarray, n: int, start: int) -> list[int]:
    chosen = [start]
    best = np.full(points.shape[0], np.inf)
    for _ in range(n - 1):
        best = np.minimum(best, ((points - points[chosen[-1]]) ** 2).sum(-1))
        score = np.where(valid, best, -1.0)
        score[chosen] = -1.0
        chosen.append(int(np.argmax(score)))
    return chosen


# ---------------------------------------------------------------- knn


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_matches_naive_with_masks_and_padding(backend):
    points, mask, gen = _cloud(0)
    mask[1, 5:] = False  # cloud 1 has 5 valid points < k
    points[0, ~mask[0]] = math.nan  # masked entries are never read
    query = torch.rand(2, 40, 3, generator=gen, dtype=torch.float64)
    dist, idx = knn(query, points, 8, mask, backend=backend)
    ref_d, ref_i = _naive_knn(query.numpy(), points.numpy(), mask.numpy(), 8)
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_allclose(dist.numpy(), ref_d, rtol=0, atol=1e-12)
    assert bool((idx[1, :, 5:] == -1).all()) and bool(torch.isinf(dist[1, :, 5:]).all())
    assert bool(mask.gather(1, idx[0].reshape(1, -1)).all())  # only valid points returned
    dist, idx = knn(query, points[:, :0], 3, backend=backend)  # an empty candidate set
    assert bool((idx == -1).all()) and bool(torch.isinf(dist).all()) and idx.shape == (2, 40, 3)


@pytest.mark.parametrize("chunk", [1, 7, 64, 5000])
def test_knn_chunking_gives_identical_results(chunk):
    points, mask, gen = _cloud(1, n=200, dtype=torch.float32)
    query = torch.rand(2, 150, 3, generator=gen)
    d_ref, i_ref = knn(query, points, 5, mask, chunk_size=10_000, backend="torch")
    d, i = knn(query, points, 5, mask, chunk_size=chunk, backend="torch")
    assert torch.equal(i, i_ref) and torch.equal(d, d_ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_matches_open3d_kdtree(backend):
    points, _, gen = _cloud(2, b=1, n=2000)
    query = torch.rand(1, 100, 3, generator=gen, dtype=torch.float64) * 2.0 - 1.0
    dist, idx = knn(query, points, 10, backend=backend)
    tree = o3d.geometry.KDTreeFlann(o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[0].numpy())))
    for q in range(100):
        _, o3d_idx, o3d_d2 = tree.search_knn_vector_3d(query[0, q].numpy(), 10)
        np.testing.assert_allclose(dist[0, q].numpy(), np.sqrt(np.asarray(o3d_d2)), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(idx[0, q].numpy(), np.asarray(o3d_idx))  # continuous data: no ties


@pytest.mark.parametrize("backend", BACKENDS)
def test_knn_self_query_and_world_offset(backend):
    points, _, _ = _cloud(3, b=1, n=500, dtype=torch.float32)
    far = points + torch.tensor([250.0, -300.0, 40.0])  # float32 far from the origin: centring keeps ranks
    dist, idx = knn(far, far, 4, backend=backend)
    _, ref_i = _naive_knn(points.double().numpy(), points.double().numpy(), np.ones((1, 500), bool), 4)
    assert bool((idx[0, :, 0] == torch.arange(500)).all())
    assert (idx.numpy() == ref_i).mean() > 0.99  # float32 rounding of the shifted inputs may swap near ties
    assert bool((dist[..., 0] == 0).all()) and bool((dist[..., 1:] >= dist[..., :-1]).all())


def test_knn_is_differentiable():
    gen = torch.Generator().manual_seed(4)
    points = torch.rand(1, 30, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    query = torch.rand(1, 6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda q, p: knn(q, p, 3)[0], (query, points))
    dist, _ = knn(points, points, 4)  # zero self-distances must not give NaN gradients
    dist.sum().backward()
    assert bool(torch.isfinite(points.grad).all())


def test_knn_bad_input():
    points = torch.zeros(2, 10, 3)
    query = torch.zeros(2, 4, 3)
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k"):
            knn(query, points, k)
    with pytest.raises(ValueError, match="query"):
        knn(torch.zeros(3, 4, 3), points, 2)
    with pytest.raises(ValueError, match="query"):
        knn(torch.zeros(2, 4, 2), points, 2)
    with pytest.raises(TypeError, match="query"):
        knn(query.double(), points, 2)
    with pytest.raises(ValueError, match="points_mask"):
        knn(query, points, 2, torch.ones(2, 9, dtype=torch.bool))
    with pytest.raises(ValueError, match="points"):
        knn(query, torch.zeros(10, 3), 2)
    with pytest.raises(ValueError, match="chunk_size"):
        knn(query, points, 2, chunk_size=0)
    bad = points.clone()
    bad[0, 0, 0] = math.inf
    with pytest.raises(ValueError, match="finite"):
        knn(query, bad, 2)


# ---------------------------------------------------------------- knn backends


@pytest.mark.parametrize("b, n, k, dtype", [(1, 700, 12, torch.float64), (3, 150, 40, torch.float64),
                                            (5, 60, 16, torch.float32), (2, 1, 3, torch.float32)])
def test_knn_open3d_backend_equals_torch_backend(b, n, k, dtype):
    """Tie-free random clouds with masks, k above some clouds' valid counts, NaN in masked slots."""
    points, mask, gen = _cloud(10 + b, b=b, n=n, dtype=dtype)
    mask[0, n // 3:] = False  # fewer valid points than k in cloud 0 (n >= 60)
    mask[-1, :] = b < 3  # an empty cloud in the larger batches
    points[~mask] = math.nan
    query = torch.rand(b, 90, 3, generator=gen, dtype=dtype) * 2.2 - 1.1
    query[0, 3, 1] = math.inf  # a non-finite query row gets no neighbours from either backend
    d_t, i_t = knn(query, points, k, mask, backend="torch")
    d_o, i_o = knn(query, points, k, mask, backend="open3d")
    assert torch.equal(i_o, i_t)
    torch.testing.assert_close(d_o, d_t, rtol=0, atol=0)  # same indices -> same recomputed distances
    assert bool((i_o[0, 3] == -1).all()) and bool(torch.isinf(d_o[0, 3]).all())
    expected = mask.sum(-1, keepdim=True).clamp_max(k).expand(b, 90).clone()
    expected[0, 3] = 0
    assert torch.equal((i_o >= 0).sum(-1), expected)


def test_knn_duplicates_give_equal_distances_on_both_backends():
    """Exact duplicates tie. Tied neighbours are returned in index order; only where the k-th distance
    ties with the (k+1)-th may the backends fill the last slots with different tied points (they do
    on this cloud), at the same distance."""
    gen = torch.Generator().manual_seed(20)
    base = torch.rand(1, 40, 3, generator=gen, dtype=torch.float64)
    points = torch.cat([base, base, base[:, :10]], 1)  # every point 2 or 3 times
    d_t, i_t = knn(points, points, 5, backend="torch")
    d_o, i_o = knn(points, points, 5, backend="open3d")
    torch.testing.assert_close(d_o, d_t, rtol=0, atol=0)
    d_next = knn(points, points, 6, backend="torch")[0][..., 5]
    boundary_tie = d_t[..., 4] == d_next
    assert torch.equal(i_o[~boundary_tie], i_t[~boundary_tie]) and bool(boundary_tie.any())
    for idx, dist in ((i_t, d_t), (i_o, d_o)):
        recomputed = torch.linalg.vector_norm(points[0, idx[0]] - points[0, :, None, :], dim=-1)
        torch.testing.assert_close(recomputed, dist[0], rtol=0, atol=0)
        same = dist[..., 1:] == dist[..., :-1]
        assert bool((idx[..., 1:] > idx[..., :-1])[same].all())  # ties in index order


def test_knn_auto_backend_falls_back_to_torch_when_gradients_are_needed(monkeypatch):
    gen = torch.Generator().manual_seed(21)
    points = torch.rand(1, 50, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    query = torch.rand(1, 8, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    d_ref, i_ref = knn(query, points, 4, backend="torch")
    d_ref.sum().backward()
    g_ref = points.grad.clone()
    points.grad = None

    def refuse(*args):
        raise AssertionError("the open3d backend must not be used here")

    monkeypatch.setattr(neighbors, "knn_indices_open3d", refuse)
    dist, idx = knn(query, points, 4)  # auto: gradients needed -> torch
    assert torch.equal(idx, i_ref) and dist.grad_fn is not None
    dist.sum().backward()
    assert torch.equal(points.grad, g_ref) and bool(points.grad.abs().sum() > 0)
    assert query.grad is not None and bool(query.grad.abs().sum() > 0)
    with pytest.raises(AssertionError, match="open3d"), torch.no_grad():  # auto picks open3d otherwise
        knn(query, points, 4)


def test_knn_forced_open3d_backend_is_still_differentiable():
    """Indices come from Open3D, distances are recomputed in torch: gradients match finite differences."""
    gen = torch.Generator().manual_seed(22)
    points = torch.rand(2, 30, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    query = torch.rand(2, 6, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda q, p: knn(q, p, 3, backend="open3d")[0], (query, points))


def test_knn_backend_selection_and_errors(monkeypatch):
    query, points = torch.zeros(1, 4, 3), torch.rand(1, 10, 3)
    for bad in ("Open3D", "cuda", None, 1):
        with pytest.raises(ValueError, match="backend"):
            knn(query, points, 2, backend=bad)
    with pytest.raises(ValueError, match="backend.*float32/float64"):
        knn(query.half(), points.half(), 2, backend="open3d")
    _, idx = knn(query.half(), points.half(), 2)  # auto falls back to torch where open3d cannot serve
    assert torch.equal(idx, knn(query, points, 2, backend="torch")[1])
    monkeypatch.setattr(neighbors_open3d, "_open3d", lambda: None)  # as if open3d did not import
    assert not neighbors_open3d.open3d_available()
    with pytest.raises(ValueError, match="backend.*not installed"):
        knn(query, points, 2, backend="open3d")
    d_auto, i_auto = knn(query, points, 3)
    d_t, i_t = knn(query, points, 3, backend="torch")
    assert torch.equal(i_auto, i_t) and torch.equal(d_auto, d_t)


# ---------------------------------------------------------------- farthest point sampling


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fps_matches_naive_loop(dtype):
    points, mask, _ = _cloud(5, b=3, n=400, dtype=dtype)
    mask[2, :7] = False  # first valid point of cloud 2 is index 7
    idx, ok = farthest_point_sampling(points, 32, mask)
    assert bool(ok.all())
    for b in range(3):
        start = int(torch.nonzero(mask[b])[0])
        assert idx[b].tolist() == _naive_fps(points[b].numpy(), mask[b].numpy(), 32, start)


def test_fps_random_start_is_seeded():
    points, mask, _ = _cloud(6, b=2, n=300)
    a, _ = farthest_point_sampling(points, 16, mask, start="random", seed=3)
    b, _ = farthest_point_sampling(points, 16, mask, start="random", seed=3)
    c, _ = farthest_point_sampling(points, 16, mask, start="random", seed=4)
    assert torch.equal(a, b) and not torch.equal(a[:, 0], c[:, 0])
    assert bool(mask.gather(1, a).all())
    for i in range(2):
        assert a[i].tolist() == _naive_fps(points[i].numpy(), mask[i].numpy(), 16, int(a[i, 0]))


@pytest.mark.parametrize("start", [0, 123])
def test_fps_matches_open3d(start):
    """Open3D returns the samples in index order, so the sampled point sets are compared. Its
    ``start_index`` is matched by rolling the cloud so that point comes first (ours starts at the first
    valid point); with continuous random data there are no distance ties for the order to break."""
    points, _, _ = _cloud(7, b=1, n=1000)
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[0].numpy()))
    sampled = np.asarray(cloud.farthest_point_down_sample(50, start).points)
    rolled = torch.roll(points, -start, dims=1)
    idx, ok = farthest_point_sampling(rolled, 50)
    assert bool(ok.all()) and int(idx[0, 0]) == 0 and torch.unique(idx).numel() == 50
    ours = rolled[0, idx[0]].numpy()
    key = lambda a: a[np.lexsort(a.T[::-1])]
    np.testing.assert_array_equal(key(ours), key(sampled))


def test_fps_fewer_valid_points_than_samples():
    points, _, _ = _cloud(8, b=2, n=20)
    mask = torch.zeros(2, 20, dtype=torch.bool)
    mask[0, [3, 8, 15]] = True
    mask[1] = True
    idx, ok = farthest_point_sampling(points, 5, mask)
    assert ok[0].tolist() == [True, True, True, False, False] and bool(ok[1].all())
    assert sorted(idx[0, :3].tolist()) == [3, 8, 15] and idx[0, 3:].tolist() == [3, 3]
    idx, ok = farthest_point_sampling(torch.zeros(2, 0, 3), 3)
    assert idx.shape == ok.shape == (2, 3) and not ok.any()
    dup = torch.zeros(1, 6, 3)  # all points identical: samples stay distinct
    idx, ok = farthest_point_sampling(dup, 4)
    assert idx[0].tolist() == [0, 1, 2, 3] and bool(ok.all())


def test_fps_bad_input():
    points = torch.zeros(1, 10, 3)
    with pytest.raises(ValueError, match="n_samples"):
        farthest_point_sampling(points, 0)
    with pytest.raises(ValueError, match="start"):
        farthest_point_sampling(points, 2, start="last")
    with pytest.raises(ValueError, match="mask"):
        farthest_point_sampling(points, 2, torch.ones(1, 11, dtype=torch.bool))
    with pytest.raises(ValueError, match="points"):
        farthest_point_sampling(torch.zeros(10, 3), 2)
    with pytest.raises(TypeError, match="points"):
        farthest_point_sampling(torch.zeros(1, 10, 3, dtype=torch.int32), 2)
