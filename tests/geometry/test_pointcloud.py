"""Box crop, voxel downsampling and packing against naive loops, numpy and Open3D."""

from __future__ import annotations

import math

import numpy as np
import open3d as o3d
import pytest
import torch

from pointworld.geometry import pointcloud as pc
from pointworld.geometry.pointcloud import (crop_box_mask, pack_masked, unpack_masked, voxel_coordinates,
                                            voxel_downsample, voxel_downsample_indices)


def _cloud(seed: int, b: int = 3, n: int = 400, scale: float = 1.0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    points = (torch.rand(b, n, 3, generator=gen, dtype=dtype) - 0.5) * scale
    mask = torch.rand(b, n, generator=gen) < 0.7
    return points, mask


def _naive_first(points: torch.Tensor, voxel: float, mask: torch.Tensor, origin) -> torch.Tensor:
    keep = torch.zeros(mask.shape, dtype=torch.bool)
    origin = np.asarray(origin, dtype=np.float64)
    for b in range(points.shape[0]):
        seen = set()
        for i in range(points.shape[1]):
            if mask[b, i]:
                cell = tuple(np.floor((points[b, i].double().numpy() - origin) / voxel).astype(np.int64))
                if cell not in seen:
                    seen.add(cell)
                    keep[b, i] = True
    return keep


@pytest.fixture(params=["dense", "sort"])
def key_path(request, monkeypatch):
    """Run a test once with the dense-table path and once with the sort path."""
    if request.param == "sort":
        monkeypatch.setattr(pc, "_DENSE_TABLE_FACTOR", 0)
        monkeypatch.setattr(pc, "_DENSE_TABLE_MIN", 0)
    return request.param


# ---------------------------------------------------------------- crop


def test_crop_matches_numpy_and_open3d():
    points, _ = _cloud(0, b=2, n=500, scale=2.0)
    points[0, :5] = torch.tensor([-0.5, 0.2, 0.1], dtype=torch.float64)  # exactly on the lower x face
    points[1, 7] = torch.tensor([0.8, 0.4, 0.3], dtype=torch.float64)  # exactly on the upper corner
    points[0, 9, 1] = math.nan
    points[1, 11, 2] = math.inf
    lo, hi = [-0.5, -0.3, -0.4], [0.8, 0.4, 0.3]
    inside = crop_box_mask(points, torch.tensor(lo, dtype=torch.float64),
                           torch.tensor(hi, dtype=torch.float64))
    p = points.numpy()
    ref = np.all((p >= np.array(lo)) & (p <= np.array(hi)), axis=-1)
    np.testing.assert_array_equal(inside.numpy(), ref)
    assert inside[0, :5].all() and inside[1, 7] and not inside[0, 9] and not inside[1, 11]
    box = o3d.geometry.AxisAlignedBoundingBox(np.array(lo), np.array(hi))
    for b in range(2):
        finite = np.isfinite(p[b]).all(-1)
        o3d_idx = box.get_point_indices_within_bounding_box(o3d.utility.Vector3dVector(p[b][finite]))
        ours = np.nonzero(inside[b].numpy()[finite])[0]
        np.testing.assert_array_equal(np.sort(o3d_idx), ours)


def test_crop_batched_boxes_and_float32():
    points, _ = _cloud(1, b=2, n=300, dtype=torch.float32)
    lo = torch.tensor([[-0.1, -0.2, -0.3], [0.0, 0.0, 0.0]])
    hi = torch.tensor([[0.2, 0.3, 0.1], [0.4, 0.4, 0.4]])
    inside = crop_box_mask(points, lo, hi)
    for b in range(2):
        ref = ((points[b] >= lo[b]) & (points[b] <= hi[b])).all(-1)
        assert torch.equal(inside[b], ref)
    assert torch.equal(crop_box_mask(points[0], [-0.1, -0.2, -0.3], [0.2, 0.3, 0.1]), inside[0])


@pytest.mark.parametrize("lo, hi, name", [
    ([0.0, 1.0, 0.0], [1.0, 0.5, 1.0], "box_min"),
    ([0.0, math.nan, 0.0], [1.0, 1.0, 1.0], "box_min"),
    ([0.0, 0.0, 0.0], [1.0, math.inf, 1.0], "box_max"),
    ([0.0, 0.0], [1.0, 1.0, 1.0], "box_min"),
])
def test_crop_bad_box(lo, hi, name):
    with pytest.raises(ValueError, match=name):
        crop_box_mask(torch.zeros(4, 3), lo, hi)


def test_crop_bad_points_and_box_batch():
    with pytest.raises(TypeError, match="points"):
        crop_box_mask(torch.zeros(4, 3, dtype=torch.int64), [0, 0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="points"):
        crop_box_mask(torch.zeros(4, 2), [0, 0, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="box_max"):
        crop_box_mask(torch.zeros(2, 4, 3), torch.zeros(3), torch.ones(5, 3))


# ---------------------------------------------------------------- voxel coordinates


def test_voxel_coordinates_match_numpy():
    points, _ = _cloud(2, b=2, n=200, scale=10.0)
    origin = torch.tensor([0.3, -1.2, 5.0], dtype=torch.float64)
    coords = voxel_coordinates(points, 0.07, origin)
    assert coords.dtype == torch.int64
    ref = np.floor((points.numpy() - origin.numpy()) / 0.07).astype(np.int64)
    np.testing.assert_array_equal(coords.numpy(), ref)
    with pytest.raises(ValueError, match="points"):
        voxel_coordinates(torch.tensor([[math.nan, 0.0, 0.0]]), 0.1)
    with pytest.raises(ValueError, match="int64"):
        voxel_coordinates(torch.tensor([[1e30, 0.0, 0.0]]), 0.1)


# ---------------------------------------------------------------- voxel downsampling


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_voxel_first_matches_naive_loop(key_path, dtype):
    points, mask = _cloud(3, b=3, n=400, scale=0.6, dtype=dtype)
    points[1] -= 7.5  # negative coordinates, far from the other clouds
    points[2, mask[2].logical_not()] = math.nan  # masked entries are never read
    origin = [0.013, -0.021, 0.004]
    keep = voxel_downsample(points, 0.05, mask, origin=torch.tensor(origin, dtype=dtype))
    assert torch.equal(keep, _naive_first(points, 0.05, mask, origin))
    keep_all = voxel_downsample(points[:2], 0.05)
    every = torch.ones(2, 400, dtype=torch.bool)
    assert torch.equal(keep_all, _naive_first(points[:2], 0.05, every, [0, 0, 0]))


def test_voxel_huge_coordinate_range(key_path):
    points, mask = _cloud(4, b=2, n=300, scale=1.0)
    points[0] += 1e9  # far away: keys are offset by each cloud's smallest voxel
    points[1, :10] *= 1e4  # a wide extent inside one cloud
    keep = voxel_downsample(points, 0.25, mask)
    assert torch.equal(keep, _naive_first(points, 0.25, mask, [0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="64-bit voxel key"):
        voxel_downsample(points * 1e6, 1e-3, mask)


def test_voxel_matches_open3d_centroids():
    gen = torch.Generator().manual_seed(5)
    points = torch.rand(5000, 3, generator=gen, dtype=torch.float64) * torch.tensor([0.8, 0.5, 0.3]) - 0.2
    voxel = 0.04
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points.numpy()))
    down = np.asarray(cloud.voxel_down_sample(voxel).points)
    origin = torch.from_numpy(cloud.get_min_bound() - voxel / 2)  # Open3D's grid anchor
    sel = voxel_downsample_indices(points, voxel, origin=origin)
    coords = voxel_coordinates(points, voxel, origin)
    cells, inverse = torch.unique(coords, dim=0, return_inverse=True)
    assert sel.numel() == cells.shape[0] == down.shape[0]
    means = torch.zeros(cells.shape[0], 3, dtype=torch.float64).index_add_(0, inverse, points)
    means /= torch.bincount(inverse).to(torch.float64)[:, None]
    o3d_cells = voxel_coordinates(torch.from_numpy(down), voxel, origin)  # centroid lies in its voxel
    order = np.lexsort(o3d_cells.numpy().T[::-1])
    np.testing.assert_array_equal(o3d_cells.numpy()[order], cells.numpy())  # unique() sorts rows
    np.testing.assert_allclose(down[order], means.numpy(), atol=1e-6, rtol=0)
    assert torch.equal(torch.unique(coords[sel], dim=0), cells)  # one kept point per occupied voxel


def test_voxel_random_mode(key_path):
    points, mask = _cloud(6, b=2, n=400, scale=0.3)
    first = voxel_downsample(points, 0.05, mask)
    a = voxel_downsample(points, 0.05, mask, mode="random", seed=11)
    assert torch.equal(a, voxel_downsample(points, 0.05, mask, mode="random", seed=11))
    assert torch.equal(voxel_downsample(points, 0.05, mask, mode="random"),
                       voxel_downsample(points, 0.05, mask, mode="random", seed=0))
    assert not torch.equal(a, voxel_downsample(points, 0.05, mask, mode="random", seed=12))
    assert not (a & ~mask).any()
    coords = voxel_coordinates(points, 0.05)
    for b in range(2):  # the same occupied voxels, exactly one kept point in each
        kept = coords[b][a[b]]
        assert torch.unique(kept, dim=0).shape[0] == kept.shape[0] == int(first[b].sum())
        assert torch.equal(torch.unique(kept, dim=0), torch.unique(coords[b][first[b]], dim=0))


def test_voxel_random_is_uniform_within_a_voxel(key_path):
    points = torch.tensor([[0.01, 0.01, 0.01], [0.02, 0.02, 0.02], [0.03, 0.01, 0.02], [0.04, 0.03, 0.01],
                           [0.51, 0.5, 0.5]], dtype=torch.float64)[None]
    counts = torch.zeros(4)
    for seed in range(400):
        keep = voxel_downsample(points, 0.1, mode="random", seed=seed)[0]
        assert int(keep[:4].sum()) == 1 and bool(keep[4])
        counts += keep[:4].to(torch.float32)
    assert bool((counts > 60).all()) and bool((counts < 140).all()), counts  # expected 100 each


def test_voxel_mask_edge_cases(key_path):
    points, mask = _cloud(7, b=2, n=50)
    mask[1] = False
    keep = voxel_downsample(points, 0.1, mask)
    assert not keep[1].any() and torch.equal(keep[0], _naive_first(points[:1], 0.1, mask[:1], [0, 0, 0])[0])
    assert not voxel_downsample(points, 0.1, torch.zeros_like(mask)).any()
    assert voxel_downsample(torch.zeros(2, 0, 3), 0.1).shape == (2, 0)
    bad = points.clone()
    bad[0, 3, 0] = math.nan
    with pytest.raises(ValueError, match="finite"):
        voxel_downsample(bad, 0.1, torch.ones_like(mask))


def test_voxel_indices_single_cloud():
    points, mask = _cloud(8, b=1, n=600, scale=0.5)
    idx = voxel_downsample_indices(points[0], 0.03, mask[0], origin=[0.1, 0.1, 0.1])
    assert idx.dtype == torch.int64 and torch.all(idx[1:] > idx[:-1])
    ref = voxel_downsample(points, 0.03, mask, origin=torch.tensor([0.1, 0.1, 0.1], dtype=torch.float64))
    assert torch.equal(idx, torch.nonzero(ref[0]).squeeze(1))
    with pytest.raises(ValueError, match="points"):
        voxel_downsample_indices(points, 0.03)


@pytest.mark.parametrize("voxel", [0.0, -0.1, math.nan, math.inf])
def test_voxel_bad_size(voxel):
    with pytest.raises(ValueError, match="voxel_size_m"):
        voxel_downsample(torch.zeros(1, 4, 3), voxel)
    with pytest.raises(ValueError, match="voxel_size_m"):
        voxel_coordinates(torch.zeros(4, 3), voxel)


def test_voxel_bad_arguments():
    points = torch.zeros(2, 4, 3)
    with pytest.raises(ValueError, match="mask"):
        voxel_downsample(points, 0.1, torch.ones(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        voxel_downsample(points, 0.1, torch.ones(2, 4))
    with pytest.raises(ValueError, match="points"):
        voxel_downsample(torch.zeros(4, 3), 0.1)
    with pytest.raises(ValueError, match="mode"):
        voxel_downsample(points, 0.1, mode="centroid")
    with pytest.raises(ValueError, match="origin"):
        voxel_downsample(points, 0.1, origin=[0.0, 0.0])
    with pytest.raises(ValueError, match="origin"):
        voxel_downsample(points, 0.1, origin=torch.zeros(2, 3))


# ---------------------------------------------------------------- packing


def test_pack_unpack_round_trip():
    gen = torch.Generator().manual_seed(9)
    values = torch.randn(3, 20, 4, generator=gen)
    mask = torch.rand(3, 20, generator=gen) < 0.5
    mask[2] = False
    packed, packed_mask = pack_masked(values, mask)
    assert packed.shape == (3, int(mask.sum(-1).max()), 4)
    for b in range(3):
        n = int(mask[b].sum())
        assert torch.equal(packed[b, :n], values[b][mask[b]])  # order preserved
        assert bool(packed_mask[b, :n].all()) and not packed_mask[b, n:].any()
        assert not packed[b, n:].any()
    assert torch.equal(unpack_masked(packed, mask), values * mask[..., None])
    p2, m2 = pack_masked(values[..., 0], mask)  # no channel dim
    assert torch.equal(p2, packed[..., 0]) and torch.equal(m2, packed_mask)


def test_packing_bad_input():
    with pytest.raises(ValueError, match="mask"):
        pack_masked(torch.zeros(2, 5, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        pack_masked(torch.zeros(2, 5, 3), torch.ones(2, 5))
    with pytest.raises(ValueError, match="packed"):
        unpack_masked(torch.zeros(2, 2, 3), torch.ones(2, 5, dtype=torch.bool))
