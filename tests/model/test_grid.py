"""Grid coordinates and the voxel table against per-point Python loops."""

from __future__ import annotations

import os

import itertools
import math

import pytest
import torch

from pointworld.model import grid as grid_module
from pointworld.model.grid import VoxelTable, grid_coordinates, kernel_offsets


#: Device of the gpu-marked test (``POINTWORLD_TEST_DEVICE=cpu`` checks its logic without a GPU).
DEVICE = torch.device(os.environ.get("POINTWORLD_TEST_DEVICE", "cuda"))


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _packed_cloud(seed: int, n: int = 400, batch_size: int = 3, dyadic: bool = False):
    """Packed points in metres; ``dyadic`` makes them multiples of 2**-10 (exact in float64)."""
    g = _gen(seed)
    coord = torch.rand(n, 3, generator=g, dtype=torch.float64) * 0.5 - 0.2
    if dyadic:
        coord = torch.round(coord * 1024) / 1024
    batch = torch.sort(torch.randint(0, batch_size, (n,), generator=g)).values
    return coord, batch


def _packed_grid(seed: int, n: int = 500, batch_size: int = 3, side: int = 6):
    g = _gen(seed)
    grid = torch.randint(0, side, (n, 3), generator=g)
    batch = torch.sort(torch.randint(0, batch_size, (n,), generator=g)).values
    return grid, batch


@pytest.fixture(params=["dense", "search"])
def lookup_path(request, monkeypatch):
    """Run a test with the dense key table and again with the binary search."""
    if request.param == "search":
        monkeypatch.setattr(grid_module, "_DENSE_TABLE_FACTOR", 0)
        monkeypatch.setattr(grid_module, "_DENSE_TABLE_MIN", 0)
    return request.param


def test_grid_coordinates_match_a_naive_loop():
    coord, batch = _packed_cloud(0)
    size = 0.03
    grid, origin = grid_coordinates(coord, batch, size, batch_size=4)  # cloud 3 is empty
    assert grid.dtype == torch.int64 and origin.dtype == torch.float64
    for b in range(3):
        pts = coord[batch == b].tolist()
        corner = [math.floor(min(p[a] for p in pts) / size) * size for a in range(3)]
        assert origin[b].tolist() == pytest.approx(corner, abs=1e-12)
        expected = [[math.floor((p[a] - corner[a]) / size) for a in range(3)] for p in pts]
        assert grid[batch == b].tolist() == expected
    assert origin[3].tolist() == [0.0, 0.0, 0.0]
    assert int(grid.min()) == 0
    for b in range(3):  # every cloud touches cell 0 on every axis
        assert grid[batch == b].amin(0).tolist() == [0, 0, 0]


def test_grid_coordinates_are_invariant_to_whole_cell_shifts():
    coord, batch = _packed_cloud(1, dyadic=True)
    size = 1.0 / 64
    grid, origin = grid_coordinates(coord, batch, size, 3)
    shift = torch.tensor([[7.0, -3.0, 12.0], [0.0, 5.0, -9.0], [-40.0, 2.0, 1.0]], dtype=torch.float64) * size
    grid2, origin2 = grid_coordinates(coord + shift[batch], batch, size, 3)
    assert torch.equal(grid2, grid)
    torch.testing.assert_close(origin2, origin + shift, rtol=0, atol=1e-12)
    grid32, _ = grid_coordinates(coord.float(), batch, size, 3)
    assert torch.equal(grid32, grid)  # dyadic inputs are exact in float32 as well


def test_kernel_offsets_are_lexicographic():
    for size in (1, 3, 5):
        r = size // 2
        expected = list(itertools.product(range(-r, r + 1), repeat=3))
        offsets = kernel_offsets(size)
        assert offsets.dtype == torch.int64 and offsets.tolist() == [list(o) for o in expected]
        assert offsets[size**3 // 2].tolist() == [0, 0, 0]


def test_voxel_table_matches_a_dictionary():
    grid, batch = _packed_grid(2)
    table = VoxelTable.build(grid, batch)
    cells = sorted({(b, *c) for b, c in zip(batch.tolist(), grid.tolist())})
    assert table.num_voxels == len(cells)
    assert [(b, *c) for b, c in zip(table.voxel_batch.tolist(), table.voxel_grid.tolist())] == cells
    assert bool((table.voxel_batch[1:] >= table.voxel_batch[:-1]).all())
    index = {cell: u for u, cell in enumerate(cells)}
    expected = [index[(b, *c)] for b, c in zip(batch.tolist(), grid.tolist())]
    assert table.point_voxel.tolist() == expected
    assert table.counts.tolist() == [expected.count(u) for u in range(len(cells))]


@pytest.mark.parametrize("kernel_size", [3, 5, 7])
def test_neighbours_match_a_dictionary(kernel_size, lookup_path):
    grid, batch = _packed_grid(3, side=7)
    table = VoxelTable.build(grid, batch)
    cells = {(b, *c): u for u, (b, c) in enumerate(zip(table.voxel_batch.tolist(), table.voxel_grid.tolist()))}
    offsets = kernel_offsets(kernel_size).tolist()
    expected = [[cells.get((b, c[0] + o[0], c[1] + o[1], c[2] + o[2]), -1) for o in offsets]
                for b, c in zip(table.voxel_batch.tolist(), table.voxel_grid.tolist())]
    nb = table.neighbours(kernel_size)
    assert nb.shape == (table.num_voxels, kernel_size**3) and nb.dtype == torch.int64
    assert nb.tolist() == expected
    assert torch.equal(nb[:, kernel_size**3 // 2], torch.arange(table.num_voxels))
    assert table.neighbours(kernel_size) is nb  # cached
    assert 0 < int((nb >= 0).sum()) < nb.numel()


def test_neighbours_never_cross_clouds(lookup_path):
    grid = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 2, 2]])  # x + 1 past the edge would wrap into cloud 1
    table = VoxelTable.build(torch.cat([grid, grid]), torch.tensor([0, 0, 0, 1, 1, 1]))
    nb = table.neighbours(3)
    for u in range(table.num_voxels):
        found = nb[u][nb[u] >= 0]
        assert bool((table.voxel_batch[found] == table.voxel_batch[u]).all())
    assert int((nb >= 0).sum()) == 2 * (3 + 2)  # per cloud: each voxel itself, (0,0,0) <-> (1,0,0)


def test_scatter_mean_matches_a_loop_and_has_gradients():
    grid, batch = _packed_grid(4, n=200, side=3)
    table = VoxelTable.build(grid, batch)
    values = torch.randn(200, 5, generator=_gen(5), dtype=torch.float64, requires_grad=True)
    mean = table.scatter_mean(values)
    for u in range(table.num_voxels):
        members = values[table.point_voxel == u]
        torch.testing.assert_close(mean[u], members.mean(0), rtol=0, atol=1e-12)
    assert torch.autograd.gradcheck(table.scatter_mean, (values,))
    assert table.scatter_mean(values.float()).dtype == torch.float32


def test_single_point_and_single_voxel():
    table = VoxelTable.build(torch.zeros(1, 3, dtype=torch.int64), torch.zeros(1, dtype=torch.int64))
    assert table.num_voxels == 1 and table.neighbours(3).tolist() == [[-1] * 13 + [0] + [-1] * 13]
    grid, _ = grid_coordinates(torch.tensor([[0.3, -0.2, 1.0]]), torch.zeros(1, dtype=torch.int64), 0.1, 1)
    assert grid.tolist() == [[0, 0, 0]]


def test_bad_input_is_rejected():
    coord, batch = _packed_cloud(6)
    with pytest.raises(ValueError, match="batch"):
        grid_coordinates(coord, batch, 0.02, batch_size=2)  # cloud index 2 out of range
    with pytest.raises(ValueError, match="grid_size_m"):
        grid_coordinates(coord, batch, 0.0, 3)
    with pytest.raises(ValueError, match="coord"):
        grid_coordinates(coord.index_fill(0, torch.tensor([5]), float("nan")), batch, 0.02, 3)
    with pytest.raises(TypeError, match="batch"):
        grid_coordinates(coord, batch.int(), 0.02, 3)
    with pytest.raises(ValueError, match="coord"):
        grid_coordinates(coord[:, :2], batch, 0.02, 3)
    grid, batch = _packed_grid(7)
    with pytest.raises(ValueError, match="grid"):
        VoxelTable.build(grid - 1, batch)
    with pytest.raises(ValueError, match="grid"):
        VoxelTable.build(grid[:0], batch[:0])
    with pytest.raises(TypeError, match="grid"):
        VoxelTable.build(grid.float(), batch)
    with pytest.raises(ValueError, match="kernel_size"):
        kernel_offsets(2)
    with pytest.raises(ValueError, match="kernel_size"):
        VoxelTable.build(grid, batch).neighbours(9)
    with pytest.raises(ValueError, match="values"):
        VoxelTable.build(grid, batch).scatter_mean(torch.zeros(3, 2))


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")
def test_device_matches_cpu(lookup_path):
    coord, batch = _packed_cloud(8, n=20000, batch_size=4)
    grid, origin = grid_coordinates(coord, batch, 0.01, 4)
    grid_c, origin_c = grid_coordinates(coord.to(DEVICE), batch.to(DEVICE), 0.01, 4)
    assert torch.equal(grid_c.cpu(), grid)
    torch.testing.assert_close(origin_c.cpu(), origin, rtol=0, atol=0)
    table, table_c = VoxelTable.build(grid, batch), VoxelTable.build(grid_c, batch.to(DEVICE))
    for name in ("voxel_grid", "voxel_batch", "point_voxel", "counts"):
        assert torch.equal(getattr(table_c, name).cpu(), getattr(table, name))
    assert torch.equal(table_c.neighbours(3).cpu(), table.neighbours(3))
    torch.testing.assert_close(table_c.scatter_mean(coord.to(DEVICE)).cpu(), table.scatter_mean(coord))
