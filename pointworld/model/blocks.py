"""Building blocks of the Point Transformer V3 backbone: the sparse 3x3x3 convolution used as conditional
positional encoding, the per-level :class:`PointState`, and the transformer :class:`Block`.

A level of the backbone (the input resolution or one pooled resolution) has fixed points; its serialization
orders, voxel table, voxel neighbourhoods and attention patch layouts depend only on the points, so
:func:`build_point_state` computes them once and every block of that level (encoder and decoder) reuses them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from pointworld.geometry.checks import require_dtype, require_floating, require_int, require_shape
from pointworld.model.attention import PatchLayout, SerializedAttention, build_patch_layout
from pointworld.model.gelu import Gelu
from pointworld.model.grid import VoxelTable
from pointworld.model.serialization import Order, Serialization, serialize

#: Number of offsets of a 3x3x3 kernel and the index of the centre offset (grid.kernel_offsets order).
_KERNEL = 27
_CENTRE = 13


@dataclass(frozen=True)
class KernelPairs:
    """The occupied (voxel, neighbour) pairs of a 3x3x3 kernel, grouped by offset, centre excluded.

    Built once per level from ``VoxelTable.neighbours(3)``; a convolution then only multiplies the pairs
    that exist (about a third of the 26 neighbours of a voxel on a surface).

    Attributes:
        dst: (E,) int64 voxel that receives each contribution.
        src: (E,) int64 occupied neighbour voxel it comes from.
        counts: number of pairs of each of the 26 non-centre offsets (``kernel_offsets`` order); the pairs
            are stored offset by offset in that order.
    """

    dst: torch.Tensor
    src: torch.Tensor
    counts: tuple[int, ...]

    @classmethod
    def build(cls, neighbours: torch.Tensor) -> KernelPairs:
        """neighbours: (U, 27) int64 voxel index at each offset, -1 where empty (two host syncs)."""
        require_dtype("neighbours", neighbours, torch.int64)
        require_shape("neighbours", neighbours, (None, _KERNEL), max_leading=0)
        others = torch.cat([neighbours[:, :_CENTRE], neighbours[:, _CENTRE + 1:]], 1).T  # (26, U)
        found = others >= 0
        counts = tuple(found.sum(1).tolist())
        offset, dst = found.nonzero(as_tuple=True)  # row-major: grouped by offset
        return cls(dst=dst, src=others[offset, dst], counts=counts)


class SparseConv3x3(nn.Module):
    """Submanifold 3x3x3 convolution over occupied voxels (the conditional positional encoding of PTv3).

    For a point i in voxel u: ``out_i = W_0 x_i + sum_{o != 0} W_o mean_{j in voxel(u + o)} x_j + b``,
    where the offsets o follow :func:`pointworld.model.grid.kernel_offsets` and empty neighbours add 0.

    Args:
        in_ch: input channels.
        out_ch: output channels.
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.in_ch = require_int("in_ch", in_ch, minimum=1)
        self.out_ch = require_int("out_ch", out_ch, minimum=1)
        bound = 1.0 / math.sqrt(_KERNEL * in_ch)
        self.weight = nn.Parameter(torch.empty(_KERNEL, in_ch, out_ch).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(out_ch).uniform_(-bound, bound))

    def forward(self, feat: torch.Tensor, voxels: VoxelTable, pairs: KernelPairs) -> torch.Tensor:
        """Apply the convolution.

        Args:
            feat: (P, in_ch) point features.
            voxels: the voxel table of these points.
            pairs: ``KernelPairs.build(voxels.neighbours(3))``.

        Returns:
            out: (P, out_ch) features, in the input point order.
        """
        require_floating("feat", feat)
        require_shape("feat", feat, (voxels.point_voxel.shape[0], self.in_ch), max_leading=0)
        mean = voxels.scatter_mean(feat)
        side = mean.new_zeros(mean.shape[0], self.out_ch)
        # Offset by offset: gather the occupied neighbours, multiply, add into their voxels. Only one
        # offset's pairs are in memory at a time (the pairs of all 26 are ~9 x the points).
        kernels = [k for k in range(_KERNEL) if k != _CENTRE]
        for dst, src, k in zip(torch.split(pairs.dst, pairs.counts), torch.split(pairs.src, pairs.counts), kernels):
            if dst.numel():
                side.index_add_(0, dst, mean.index_select(0, src) @ self.weight[k])
        return torch.addmm(self.bias, feat, self.weight[_CENTRE]) + side.index_select(0, voxels.point_voxel)


@dataclass
class PointState:
    """The points of one level and everything about them that blocks reuse.

    Attributes:
        coord: (P, 3) positions, m (the input frame; mean positions at pooled levels).
        feat: (P, C) current features.
        grid: (P, 3) int64 grid cell of each point at this level.
        batch: (P,) int64 cloud index, non-decreasing.
        batch_size: B.
        serialization: the serialization orders of this level.
        voxels: the voxel table of this level.
        pairs: the occupied 3x3x3 neighbour pairs of the voxels (:class:`KernelPairs`).
        layouts: cache of attention patch layouts keyed by (order index, patch size); shared by the copies
            that :meth:`with_feat` makes.
    """

    coord: torch.Tensor
    feat: torch.Tensor
    grid: torch.Tensor
    batch: torch.Tensor
    batch_size: int
    serialization: Serialization
    voxels: VoxelTable
    pairs: KernelPairs
    layouts: dict[tuple[int, int], PatchLayout] = field(default_factory=dict)

    def with_feat(self, feat: torch.Tensor) -> PointState:
        """A copy with new features (P, C') that shares every cached structure."""
        return dataclasses.replace(self, feat=feat)

    def patch_layout(self, order_index: int, patch_size: int) -> PatchLayout:
        """The attention patch layout of serialization ``order_index`` (built on first use, then cached)."""
        key = (order_index, patch_size)
        if key not in self.layouts:
            s = self.serialization
            self.layouts[key] = build_patch_layout(s.order[order_index], s.inverse[order_index], self.batch,
                                                   self.batch_size, patch_size)
        return self.layouts[key]


def build_point_state(coord: torch.Tensor, feat: torch.Tensor, grid: torch.Tensor, batch: torch.Tensor,
                      batch_size: int, orders: Sequence[Order]) -> PointState:
    """Serialize the points of one level and build their voxel table and kernel neighbour pairs.

    Args:
        coord: (P, 3) positions, m.
        feat: (P, C) features.
        grid: (P, 3) int64 non-negative grid cells.
        batch: (P,) int64 cloud index, non-decreasing, in [0, batch_size).
        batch_size: B.
        orders: serialization orders, in the order blocks will cycle through them.

    Returns:
        The level's state.
    """
    voxels = VoxelTable.build(grid, batch)
    return PointState(coord=coord, feat=feat, grid=grid, batch=batch, batch_size=batch_size,
                      serialization=serialize(grid, batch, orders), voxels=voxels,
                      pairs=KernelPairs.build(voxels.neighbours(3)))


class DropPath(nn.Module):
    """Stochastic depth per cloud: in training, drops a residual branch for whole clouds with probability p
    and rescales the kept ones by 1 / (1 - p).

    Args:
        p: drop probability in [0, 1).
    """

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"drop_path: expected a probability in [0, 1), got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor, batch: torch.Tensor, batch_size: int) -> torch.Tensor:
        """x: (P, C) residual branch; batch: (P,) cloud index. Returns (P, C)."""
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand(batch_size, device=x.device) >= self.p
        scale = keep.to(x.dtype) / (1.0 - self.p)
        return x * scale[batch][:, None]


class Block(nn.Module):
    """One PTv3 block: ``x += CPE(x)``, then pre-norm serialized attention and pre-norm MLP residuals.

    Args:
        channels: C.
        num_heads: attention heads (divides C).
        patch_size: attention patch size.
        mlp_ratio: hidden width of the MLP relative to C.
        drop_path: stochastic-depth probability of the two residual branches.
    """

    def __init__(self, channels: int, num_heads: int, patch_size: int, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0) -> None:
        super().__init__()
        if not mlp_ratio > 0:
            raise ValueError(f"mlp_ratio: expected a number > 0, got {mlp_ratio!r}")
        hidden = max(1, round(channels * mlp_ratio))
        self.cpe_conv = SparseConv3x3(channels, channels)
        self.cpe_proj = nn.Sequential(nn.Linear(channels, channels), nn.LayerNorm(channels))
        self.norm1 = nn.LayerNorm(channels)
        self.attn = SerializedAttention(channels, num_heads, patch_size)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), Gelu(), nn.Linear(hidden, channels))
        self.drop_path = DropPath(drop_path)

    def forward(self, state: PointState, order_index: int) -> PointState:
        """Run the block on ``state.feat`` (P, C) with serialization ``order_index``; returns the new state."""
        x = state.feat
        x = x + self.cpe_proj(self.cpe_conv(x, state.voxels, state.pairs))
        layout = state.patch_layout(order_index, self.attn.patch_size)
        s = state.serialization
        h = self.attn(self.norm1(x), s.order[order_index], s.inverse[order_index], state.batch,
                      state.batch_size, layout=layout)
        x = x + self.drop_path(h, state.batch, state.batch_size)
        x = x + self.drop_path(self.mlp(self.norm2(x)), state.batch, state.batch_size)
        return state.with_feat(x)
