"""Grid pooling and unpooling of packed point batches (the U-Net levels of the backbone).

Pooling merges the points of each cloud whose fine cells fall in the same coarse cell
``grid // stride``; the coarse points are sorted by (batch, coarse cell), so their batch index stays
non-decreasing, and points of different clouds never merge. Unpooling copies each coarse point's features
back to its fine points.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pointworld.geometry.checks import require_dtype, require_floating, require_int, require_shape
from pointworld.model.grid import VoxelTable

_REDUCTIONS = {"max": "amax", "mean": "mean"}


@dataclass
class PoolResult:
    """The coarse level produced by :func:`grid_pool` (P fine points -> P' coarse points).

    Attributes:
        cluster: (P,) int64 index in [0, P') of the coarse point each fine point merged into.
        coord: (P', 3) mean position of the merged fine points, m, same frame as the fine ``coord``.
        grid: (P', 3) int64 coarse cell, ``fine grid // stride``.
        batch: (P',) int64 cloud index, non-decreasing.
        feat: (P', C) reduced features (max or mean over the merged points).
    """

    cluster: torch.Tensor
    coord: torch.Tensor
    grid: torch.Tensor
    batch: torch.Tensor
    feat: torch.Tensor


def _check_inputs(coord: torch.Tensor, feat: torch.Tensor, grid: torch.Tensor, batch: torch.Tensor) -> None:
    require_floating("coord", coord)
    require_shape("coord", coord, (None, 3), max_leading=0)
    n = coord.shape[0]
    require_floating("feat", feat)
    require_shape("feat", feat, (n, None), max_leading=0)
    require_dtype("grid", grid, torch.int64)
    require_shape("grid", grid, (n, 3), max_leading=0)
    require_dtype("batch", batch, torch.int64)
    require_shape("batch", batch, (n,), max_leading=0)


def grid_pool(coord: torch.Tensor, feat: torch.Tensor, grid: torch.Tensor, batch: torch.Tensor,
              stride: int = 2, reduce: str = "max") -> PoolResult:
    """Merge the points of each cloud that share a coarse cell ``grid // stride``.

    Args:
        coord: (P, 3) point positions, m, any frame.
        feat: (P, C) point features (gradients flow through the reduction).
        grid: (P, 3) int64 non-negative fine cells.
        batch: (P,) int64 non-negative cloud index of each point.
        stride: coarsening factor per axis, >= 1.
        reduce: "max" or "mean", the reduction of ``feat`` over each coarse cell.

    Returns:
        The :class:`PoolResult`; ``coord`` of a coarse point is always the mean of its fine points.
    """
    _check_inputs(coord, feat, grid, batch)
    stride = require_int("stride", stride, minimum=1)
    if reduce not in _REDUCTIONS:
        raise ValueError(f"reduce: expected one of {sorted(_REDUCTIONS)}, got {reduce!r}")
    coarse = torch.div(grid, stride, rounding_mode="floor")
    table = VoxelTable.build(coarse, batch)
    index = table.point_voxel[:, None].expand(-1, feat.shape[1])
    pooled = feat.new_zeros(table.num_voxels, feat.shape[1]).scatter_reduce(
        0, index, feat, _REDUCTIONS[reduce], include_self=False)
    return PoolResult(cluster=table.point_voxel, coord=table.scatter_mean(coord), grid=table.voxel_grid,
                      batch=table.voxel_batch, feat=pooled)


def grid_unpool(coarse_feat: torch.Tensor, cluster: torch.Tensor) -> torch.Tensor:
    """Copy coarse features back to the fine points: ``coarse_feat[cluster]``.

    Args:
        coarse_feat: (P', C) features of the coarse points.
        cluster: (P,) int64 coarse index of every fine point (:attr:`PoolResult.cluster`).

    Returns:
        feat: (P, C) features of the fine points.
    """
    require_shape("coarse_feat", coarse_feat, (None, None), max_leading=0)
    require_dtype("cluster", cluster, torch.int64)
    require_shape("cluster", cluster, (None,), max_leading=0)
    return coarse_feat[cluster]
