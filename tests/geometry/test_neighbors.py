"""kNN and farthest point sampling against naive loops and Open3D (KD-tree, FPS)."""

from __future__ import annotations

import math

import numpy as np
import open3d as o3d
import pytest
import torch

from pointworld.geometry.neighbors import farthest_point_sampling, knn


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


def test_knn_matches_naive_with_masks_and_padding():
    points, mask, gen = _cloud(0)
    mask[1, 5:] = False  # cloud 1 has 5 valid points < k
    points[0, ~mask[0]] = math.nan  # masked entries are never read
    query = torch.rand(2, 40, 3, generator=gen, dtype=torch.float64)
    dist, idx = knn(query, points, 8, mask)
    ref_d, ref_i = _naive_knn(query.numpy(), points.numpy(), mask.numpy(), 8)
    np.testing.assert_array_equal(idx.numpy(), ref_i)
    np.testing.assert_allclose(dist.numpy(), ref_d, rtol=0, atol=1e-12)
    assert bool((idx[1, :, 5:] == -1).all()) and bool(torch.isinf(dist[1, :, 5:]).all())
    assert bool(mask.gather(1, idx[0].reshape(1, -1)).all())  # only valid points returned
    dist, idx = knn(query, points[:, :0], 3)  # an empty candidate set
    assert bool((idx == -1).all()) and bool(torch.isinf(dist).all()) and idx.shape == (2, 40, 3)


@pytest.mark.parametrize("chunk", [1, 7, 64, 5000])
def test_knn_chunking_gives_identical_results(chunk):
    points, mask, gen = _cloud(1, n=200, dtype=torch.float32)
    query = torch.rand(2, 150, 3, generator=gen)
    d_ref, i_ref = knn(query, points, 5, mask, chunk_size=10_000)
    d, i = knn(query, points, 5, mask, chunk_size=chunk)
    assert torch.equal(i, i_ref) and torch.equal(d, d_ref)


def test_knn_matches_open3d_kdtree():
    points, _, gen = _cloud(2, b=1, n=2000)
    query = torch.rand(1, 100, 3, generator=gen, dtype=torch.float64) * 2.0 - 1.0
    dist, idx = knn(query, points, 10)
    tree = o3d.geometry.KDTreeFlann(o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points[0].numpy())))
    for q in range(100):
        _, o3d_idx, o3d_d2 = tree.search_knn_vector_3d(query[0, q].numpy(), 10)
        np.testing.assert_allclose(dist[0, q].numpy(), np.sqrt(np.asarray(o3d_d2)), rtol=0, atol=1e-12)
        np.testing.assert_array_equal(idx[0, q].numpy(), np.asarray(o3d_idx))  # continuous data: no ties


def test_knn_self_query_and_world_offset():
    points, _, _ = _cloud(3, b=1, n=500, dtype=torch.float32)
    far = points + torch.tensor([250.0, -300.0, 40.0])  # float32 far from the origin: centring keeps ranks
    dist, idx = knn(far, far, 4)
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
    key = lambda a: a[np.lexsort(a.T[::-1])]  # noqa: E731
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
