"""Grid pooling and unpooling against per-point Python loops."""

from __future__ import annotations

import os

import pytest
import torch

from pointworld.model.pooling import PoolResult, grid_pool, grid_unpool


#: Device of the gpu-marked test (``POINTWORLD_TEST_DEVICE=cpu`` checks its logic without a GPU).
DEVICE = torch.device(os.environ.get("POINTWORLD_TEST_DEVICE", "cuda"))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _packed(seed: int, n: int = 300, batch_size: int = 3, side: int = 9, channels: int = 4):
    g = _gen(seed)
    grid = torch.randint(0, side, (n, 3), generator=g)
    batch = torch.sort(torch.randint(0, batch_size, (n,), generator=g)).values
    coord = (grid + torch.rand(n, 3, generator=g, dtype=torch.float64)) * 0.02
    feat = torch.randn(n, channels, generator=g, dtype=torch.float64)
    return coord, feat, grid, batch


def _naive_groups(grid: torch.Tensor, batch: torch.Tensor, stride: int) -> dict[tuple, list[int]]:
    groups: dict[tuple, list[int]] = {}
    for i, (b, cell) in enumerate(zip(batch.tolist(), grid.tolist())):
        groups.setdefault((b, *(c // stride for c in cell)), []).append(i)
    return groups


@pytest.mark.parametrize("stride", [2, 3])
def test_pool_matches_a_naive_loop(stride):
    coord, feat, grid, batch = _packed(0)
    groups = _naive_groups(grid, batch, stride)
    res_max = grid_pool(coord, feat, grid, batch, stride=stride, reduce="max")
    res_mean = grid_pool(coord, feat, grid, batch, stride=stride, reduce="mean")
    assert isinstance(res_max, PoolResult) and res_max.feat.shape == (len(groups), 4)
    assert torch.equal(res_max.cluster, res_mean.cluster)
    for u in range(len(groups)):
        members = (res_max.cluster == u).nonzero()[:, 0].tolist()
        key = (int(res_max.batch[u]), *res_max.grid[u].tolist())
        assert groups[key] == members
        torch.testing.assert_close(res_max.feat[u], feat[members].amax(0), rtol=0, atol=0)
        torch.testing.assert_close(res_mean.feat[u], feat[members].mean(0), rtol=0, atol=1e-12)
        torch.testing.assert_close(res_max.coord[u], coord[members].mean(0), rtol=0, atol=1e-12)


def test_clusters_partition_points_and_coarse_cells_halve():
    coord, feat, grid, batch = _packed(1, side=17)
    res = grid_pool(coord, feat, grid, batch)
    n_coarse = res.grid.shape[0]
    assert res.cluster.shape == (300,) and res.cluster.dtype == torch.int64
    assert int(res.cluster.min()) == 0 and int(res.cluster.max()) == n_coarse - 1
    assert bool((torch.bincount(res.cluster, minlength=n_coarse) > 0).all())  # no empty coarse point
    assert torch.equal(res.grid[res.cluster], torch.div(grid, 2, rounding_mode="floor"))
    assert torch.equal(res.batch[res.cluster], batch)  # batches never merge
    assert bool((res.batch[1:] >= res.batch[:-1]).all())
    rows = torch.cat([res.batch[:, None], res.grid], 1)
    assert torch.unique(rows, dim=0).shape[0] == n_coarse  # one coarse point per (cloud, cell)


def test_identical_clouds_do_not_merge():
    coord, feat, grid, batch = _packed(2, n=50, batch_size=1)
    twice = grid_pool(coord.repeat(2, 1), feat.repeat(2, 1), grid.repeat(2, 1),
                      torch.cat([batch, batch + 1]))
    once = grid_pool(coord, feat, grid, batch)
    assert twice.grid.shape[0] == 2 * once.grid.shape[0]
    assert torch.equal(twice.feat, once.feat.repeat(2, 1))
    assert twice.batch.tolist() == [0] * once.grid.shape[0] + [1] * once.grid.shape[0]


@pytest.mark.parametrize("reduce", ["max", "mean"])
def test_pool_then_unpool_of_a_per_cluster_constant_is_the_identity(reduce):
    coord, _, grid, batch = _packed(3)
    groups = _naive_groups(grid, batch, 2)
    per_group = torch.randn(len(groups), 6, generator=_gen(4), dtype=torch.float64)
    field = torch.empty(300, 6, dtype=torch.float64)
    for g, members in enumerate(groups.values()):
        field[members] = per_group[g]
    res = grid_pool(coord, field, grid, batch, reduce=reduce)
    tol = 0.0 if reduce == "max" else 1e-14  # the mean of equal values may round in the last bit
    torch.testing.assert_close(grid_unpool(res.feat, res.cluster), field, rtol=tol, atol=tol)


def test_single_coarse_point():
    coord, feat, grid, batch = _packed(5, n=20, batch_size=1, side=2)
    res = grid_pool(coord, feat, grid, batch)
    assert res.grid.tolist() == [[0, 0, 0]] and res.batch.tolist() == [0]
    assert torch.equal(res.cluster, torch.zeros(20, dtype=torch.int64))
    torch.testing.assert_close(res.feat[0], feat.amax(0), rtol=0, atol=0)
    one = grid_pool(coord[:1], feat[:1], torch.tensor([[5, 4, 4]]), batch[:1] + 2)
    assert one.grid.tolist() == [[2, 2, 2]] and one.batch.tolist() == [2]
    assert torch.equal(one.feat, feat[:1]) and torch.equal(grid_unpool(one.feat, one.cluster), feat[:1])


def test_gradients_flow_through_both_reductions():
    coord, feat, grid, batch = _packed(6, n=60, channels=2)
    feat = feat.requires_grad_(True)
    res = grid_pool(coord, feat, grid, batch, reduce="max")
    res.feat.sum().backward()
    assert float(feat.grad.sum()) == res.feat.numel()  # one winner per coarse point and channel
    weights = torch.randn(60, 2, generator=_gen(7), dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda f: grid_unpool(grid_pool(coord, f, grid, batch, reduce="mean").feat, res.cluster) * weights,
        (feat.detach().clone().requires_grad_(True),))


def test_bad_input_is_rejected():
    coord, feat, grid, batch = _packed(8)
    with pytest.raises(ValueError, match="reduce"):
        grid_pool(coord, feat, grid, batch, reduce="sum")
    with pytest.raises(ValueError, match="stride"):
        grid_pool(coord, feat, grid, batch, stride=0)
    with pytest.raises(ValueError, match="feat"):
        grid_pool(coord, feat[:-1], grid, batch)
    with pytest.raises(TypeError, match="grid"):
        grid_pool(coord, feat, grid.float(), batch)
    with pytest.raises(ValueError, match="grid"):
        grid_pool(coord, feat, grid - 1, batch)
    with pytest.raises(TypeError, match="cluster"):
        grid_unpool(feat, torch.zeros(3, dtype=torch.int32))


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")
def test_device_matches_cpu():
    coord, feat, grid, batch = _packed(9, n=20000, side=60, channels=16)
    for reduce in ("max", "mean"):
        res = grid_pool(coord, feat, grid, batch, reduce=reduce)
        res_c = grid_pool(coord.to(DEVICE), feat.to(DEVICE), grid.to(DEVICE), batch.to(DEVICE), reduce=reduce)
        for name in ("cluster", "grid", "batch"):
            assert torch.equal(getattr(res_c, name).cpu(), getattr(res, name))
        torch.testing.assert_close(res_c.feat.cpu(), res.feat)
        torch.testing.assert_close(res_c.coord.cpu(), res.coord)
