"""Sparse 3x3x3 convolution vs a brute-force loop; Block and PointState behaviour."""

from __future__ import annotations

import pytest
import torch

from pointworld.model.attention import build_patch_layout
from pointworld.model.blocks import Block, DropPath, KernelPairs, SparseConv3x3, build_point_state
from pointworld.model.grid import VoxelTable

ORDERS = ("z", "hilbert", "z-trans", "hilbert-trans")


def _brute_force_conv(conv: SparseConv3x3, feat: torch.Tensor, grid: torch.Tensor,
                      batch: torch.Tensor) -> torch.Tensor:
    """out_i = W_centre x_i + sum over the 26 other offsets of W_o (mean of x over the neighbour cell) + b."""
    offsets = [(dx, dy, dz) for dx in (-1, 0, 1) for dy in (-1, 0, 1) for dz in (-1, 0, 1)]
    out = torch.zeros(feat.shape[0], conv.out_ch, dtype=feat.dtype)
    for i in range(feat.shape[0]):
        acc = conv.bias.detach().clone()
        for k, off in enumerate(offsets):
            if off == (0, 0, 0):
                acc = acc + feat[i] @ conv.weight[k].detach()
                continue
            cell = grid[i] + torch.tensor(off)
            members = [j for j in range(feat.shape[0])
                       if int(batch[j]) == int(batch[i]) and torch.equal(grid[j], cell)]
            if members:
                acc = acc + feat[members].mean(0) @ conv.weight[k].detach()
        out[i] = acc
    return out


def _cloud(n_per: list[int], extent: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random grid cells (duplicates allowed) of sorted clouds."""
    batch = torch.repeat_interleave(torch.arange(len(n_per)), torch.tensor(n_per))
    grid = torch.randint(0, extent, (sum(n_per), 3), generator=gen)
    return grid, batch


def test_sparse_conv_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    grid, batch = _cloud([40, 25], 3, gen)  # 27 cells per cloud: many shared voxels, both clouds overlap
    feat = torch.randn(65, 4, generator=gen, dtype=torch.float64)
    conv = SparseConv3x3(4, 5).double()
    voxels = VoxelTable.build(grid, batch)
    got = conv(feat, voxels, KernelPairs.build(voxels.neighbours(3)))
    torch.testing.assert_close(got, _brute_force_conv(conv, feat, grid, batch), atol=1e-12, rtol=1e-12)


def test_sparse_conv_gradients_match_finite_differences() -> None:
    """The offset-by-offset in-place accumulation is differentiable in features, weights and bias."""
    gen = torch.Generator().manual_seed(1)
    grid, batch = _cloud([12, 9], 2, gen)
    feat = torch.randn(21, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    conv = SparseConv3x3(3, 2).double()
    voxels = VoxelTable.build(grid, batch)
    pairs = KernelPairs.build(voxels.neighbours(3))

    weight = conv.weight.detach().clone().requires_grad_(True)
    bias = conv.bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x, w, b: torch.func.functional_call(
        conv, {"weight": w, "bias": b}, (x, voxels, pairs)), (feat, weight, bias), eps=1e-6, atol=1e-8)


def test_sparse_conv_isolated_point_sees_only_itself() -> None:
    conv = SparseConv3x3(3, 2).double()
    grid = torch.tensor([[0, 0, 0], [5, 5, 5]])
    batch = torch.zeros(2, dtype=torch.int64)
    feat = torch.randn(2, 3, dtype=torch.float64)
    voxels = VoxelTable.build(grid, batch)
    expected = feat @ conv.weight[13].detach() + conv.bias.detach()
    got = conv(feat, voxels, KernelPairs.build(voxels.neighbours(3)))
    torch.testing.assert_close(got, expected, atol=1e-14, rtol=0)


def test_sparse_conv_bad_input() -> None:
    conv = SparseConv3x3(3, 2)
    voxels = VoxelTable.build(torch.zeros(4, 3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(ValueError, match="feat"):
        conv(torch.randn(4, 5), voxels, KernelPairs.build(voxels.neighbours(3)))
    with pytest.raises(ValueError, match="in_ch"):
        SparseConv3x3(0, 2)


def _state(sizes: list[int], channels: int, seed: int, dtype: torch.dtype = torch.float64):
    gen = torch.Generator().manual_seed(seed)
    grid, batch = _cloud(sizes, 6, gen)
    coord = (grid + torch.rand(grid.shape, generator=gen)).to(dtype) * 0.015
    feat = torch.randn(grid.shape[0], channels, generator=gen, dtype=dtype)
    return build_point_state(coord, feat, grid, batch, len(sizes), ORDERS)


def test_block_keeps_clouds_apart_and_shapes() -> None:
    torch.manual_seed(0)
    block = Block(8, 2, 16).double().eval()
    state = _state([50, 30], 8, seed=1)
    out = block(state, 1)
    assert out.feat.shape == (80, 8) and torch.isfinite(out.feat).all()
    changed = state.feat.clone()
    changed[50:] += 1.0  # cloud 1 only; both clouds occupy the same cells
    out2 = block(state.with_feat(changed), 1)
    torch.testing.assert_close(out2.feat[:50], out.feat[:50], atol=1e-13, rtol=0)
    assert (out2.feat[50:] - out.feat[50:]).abs().max() > 1e-3


def test_point_state_caches_layouts_across_copies() -> None:
    state = _state([20, 10], 4, seed=2)
    layout = state.patch_layout(2, 8)
    copy = state.with_feat(state.feat * 2)
    assert copy.patch_layout(2, 8) is layout
    assert copy.voxels is state.voxels and copy.pairs is state.pairs
    assert state.patch_layout(0, 8) is not layout
    assert torch.equal(layout.index.reshape(-1)[layout.slot], torch.arange(30))
    assert torch.equal(layout.slot, build_patch_layout(state.serialization.order[2], state.serialization.inverse[2],
                                                       state.batch, 2, 8).slot)


def test_drop_path_per_cloud() -> None:
    torch.manual_seed(3)
    drop = DropPath(0.5)
    batch = torch.repeat_interleave(torch.arange(64), 3)
    x = torch.ones(192, 2)
    y = drop(x, batch, 64)
    per_cloud = y.reshape(64, 6)
    assert ((per_cloud == 0).all(1) | (per_cloud == 2).all(1)).all()  # whole clouds dropped or scaled 1/(1-p)
    assert 0 < int((per_cloud[:, 0] == 0).sum()) < 64
    drop.eval()
    assert torch.equal(drop(x, batch, 64), x)
    with pytest.raises(ValueError, match="drop_path"):
        DropPath(1.0)
