"""Integer grid cells of packed point batches and a per-level table of occupied voxels.

Packed representation (see the model package): ``coord (P, 3)`` positions in m, ``batch (P,)`` int64
cloud index in [0, B), ``grid (P, 3)`` int64 non-negative cell of each point. A voxel is one occupied
(cloud, cell) pair; :class:`VoxelTable` numbers them, maps points to them and finds neighbouring voxels
with a sorted int64 hash key ``(batch, x, y, z)`` (``torch.unique`` + ``torch.searchsorted``), so nothing
loops over points in Python.
"""

from __future__ import annotations

import torch

from pointworld.geometry.checks import (require_dtype, require_finite, require_floating, require_int,
                                        require_positive, require_shape)

#: Hash keys must stay inside the non-negative int64 range.
_MAX_KEY = 2**62
#: Key ranges up to max(_DENSE_TABLE_FACTOR * queries, _DENSE_TABLE_MIN) use a dense lookup table.
_DENSE_TABLE_FACTOR = 2
_DENSE_TABLE_MIN = 1 << 20
#: Largest kernel radius of :meth:`VoxelTable.neighbours` (kernel_size <= 2 * _MAX_RADIUS + 1).
_MAX_RADIUS = 3


def _check_batch(batch: torch.Tensor, n_points: int) -> None:
    require_dtype("batch", batch, torch.int64)
    require_shape("batch", batch, (n_points,), max_leading=0)


def grid_coordinates(coord: torch.Tensor, batch: torch.Tensor, grid_size_m: float,
                     batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Grid cell of every point, relative to a per-cloud grid origin.

    ``origin_b = floor(min_b(coord) / grid_size_m) * grid_size_m`` (per axis, over the points of cloud b)
    and ``grid = floor(coord / grid_size_m) - floor(min_b(coord) / grid_size_m)``, which equals
    ``floor((coord - origin_b) / grid_size_m)`` but is computed on integers so that it is never negative,
    whatever the rounding. Shifting a whole cloud by an integer multiple of ``grid_size_m`` leaves
    ``grid`` unchanged (up to rounding of points lying on cell faces).

    Args:
        coord: (P, 3) point positions, m, any frame; finite.
        batch: (P,) int64 cloud index of each point in [0, batch_size).
        grid_size_m: edge length of a grid cell, m, > 0.
        batch_size: B, the number of clouds (clouds without points get origin 0).

    Returns:
        grid: (P, 3) int64 non-negative cell of each point.
        origin: (B, 3) corner of cell (0, 0, 0) of each cloud, m, same frame and dtype as ``coord``.
    """
    require_floating("coord", coord)
    require_shape("coord", coord, (None, 3), max_leading=0)
    _check_batch(batch, coord.shape[0])
    grid_size_m = require_positive("grid_size_m", grid_size_m)
    batch_size = require_int("batch_size", batch_size, minimum=1)
    require_finite("coord", coord)
    if batch.numel() and (int(batch.min()) < 0 or int(batch.max()) >= batch_size):
        raise ValueError(f"batch: expected cloud indices in [0, {batch_size}), got values in "
                         f"[{int(batch.min())}, {int(batch.max())}]")
    scaled = torch.floor(coord / grid_size_m)
    if scaled.numel() and float(scaled.abs().max()) >= _MAX_KEY:
        raise ValueError(f"coord: cell indices exceed the int64 range with grid_size_m={grid_size_m}")
    cell = scaled.to(torch.int64)
    lowest = torch.zeros(batch_size, 3, dtype=torch.int64, device=coord.device)
    lowest = lowest.scatter_reduce(0, batch[:, None].expand(-1, 3), cell, "amin", include_self=False)
    grid = cell - lowest[batch]
    origin = lowest.to(coord.dtype) * grid_size_m
    return grid, origin


def kernel_offsets(kernel_size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """All integer offsets of a cubic kernel, lexicographic over (dx, dy, dz), dx slowest.

    Args:
        kernel_size: odd kernel edge, >= 1 (radius r = kernel_size // 2).
        device: device of the result (default CPU).

    Returns:
        offsets: (kernel_size**3, 3) int64 in {-r..r}^3; the zero offset is at index kernel_size**3 // 2.
    """
    kernel_size = require_int("kernel_size", kernel_size, minimum=1)
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size: expected an odd int, got {kernel_size}")
    r = kernel_size // 2
    axis = torch.arange(-r, r + 1, dtype=torch.int64, device=device)
    return torch.cartesian_prod(axis, axis, axis).reshape(-1, 3)


def _pack(batch: torch.Tensor, x: torch.Tensor, y: torch.Tensor, z: torch.Tensor,
          extent: tuple[int, int, int]) -> torch.Tensor:
    """Row-major key ((b * E0 + x) * E1 + y) * E2 + z; all inputs in range."""
    return ((batch * extent[0] + x) * extent[1] + y) * extent[2] + z


class VoxelTable:
    """The occupied voxels of a packed batch and their neighbourhoods (build with :meth:`build`).

    Voxels are sorted by (batch, x, y, z), so ``voxel_batch`` is non-decreasing.

    Attributes:
        voxel_grid: (U, 3) int64 cell of each occupied voxel.
        voxel_batch: (U,) int64 cloud index of each voxel, non-decreasing.
        point_voxel: (P,) int64 index in [0, U) of each point's voxel.
        counts: (U,) int64 number of points in each voxel (>= 1).
        keys: (U,) int64 sorted hash keys of the voxels (internal to the lookup).
        extent: per-axis key range (max cell + 1 over the batch).
        num_clouds: largest cloud index + 1.
    """

    def __init__(self, voxel_grid: torch.Tensor, voxel_batch: torch.Tensor, point_voxel: torch.Tensor,
                 counts: torch.Tensor, keys: torch.Tensor, extent: tuple[int, int, int],
                 num_clouds: int) -> None:
        self.voxel_grid = voxel_grid
        self.voxel_batch = voxel_batch
        self.point_voxel = point_voxel
        self.counts = counts
        self.keys = keys
        self.extent = extent
        self.num_clouds = num_clouds
        self._neighbours: dict[int, torch.Tensor] = {}

    @classmethod
    def build(cls, grid: torch.Tensor, batch: torch.Tensor) -> VoxelTable:
        """Find the occupied voxels of a packed batch.

        Args:
            grid: (P, 3) int64 non-negative cell of each point.
            batch: (P,) int64 non-negative cloud index of each point (need not be sorted).

        Returns:
            The table (one host sync to size the hash key).
        """
        require_dtype("grid", grid, torch.int64)
        require_shape("grid", grid, (None, 3), max_leading=0)
        _check_batch(batch, grid.shape[0])
        if grid.shape[0] == 0:
            raise ValueError("grid: expected at least one point, got 0")
        lo = torch.cat([grid.amin(0), batch.amin().reshape(1)])
        hi = torch.cat([grid.amax(0), batch.amax().reshape(1)]).tolist()
        if int(lo.amin()) < 0:
            raise ValueError(f"grid: expected non-negative cells and batch indices, got minima "
                             f"{lo.tolist()} (x, y, z, batch)")
        extent = (hi[0] + 1, hi[1] + 1, hi[2] + 1)
        padded = [e + 2 * _MAX_RADIUS for e in extent]  # room for the neighbour lookup
        if (hi[3] + 1) * padded[0] * padded[1] * padded[2] >= _MAX_KEY:
            raise ValueError(f"grid: {hi[3] + 1} clouds of {extent} cells do not fit a 62-bit voxel key")
        key = _pack(batch, grid[:, 0], grid[:, 1], grid[:, 2], extent)
        keys, point_voxel, counts = torch.unique(key, sorted=True, return_inverse=True, return_counts=True)
        rest, z = torch.div(keys, extent[2], rounding_mode="floor"), keys % extent[2]
        rest, y = torch.div(rest, extent[1], rounding_mode="floor"), rest % extent[1]
        voxel_batch, x = torch.div(rest, extent[0], rounding_mode="floor"), rest % extent[0]
        return cls(torch.stack([x, y, z], -1), voxel_batch, point_voxel, counts, keys, extent, hi[3] + 1)

    @property
    def num_voxels(self) -> int:
        """U."""
        return int(self.keys.shape[0])

    def neighbours(self, kernel_size: int = 3) -> torch.Tensor:
        """Index of the occupied voxel at every kernel offset of every voxel (cached per kernel size).

        Args:
            kernel_size: odd kernel edge (offsets from :func:`kernel_offsets`).

        Returns:
            index: (U, kernel_size**3) int64 voxel index in [0, U), or -1 where that cell of the same
            cloud is empty or outside the grid. Column kernel_size**3 // 2 is the voxel itself.
        """
        if kernel_size not in self._neighbours:
            offsets = kernel_offsets(kernel_size, device=self.keys.device)
            if kernel_size > 2 * _MAX_RADIUS + 1:
                raise ValueError(f"kernel_size: expected at most {2 * _MAX_RADIUS + 1}, got {kernel_size}")
            self._neighbours[kernel_size] = self._lookup(offsets, kernel_size // 2)
        return self._neighbours[kernel_size]

    def _lookup(self, offsets: torch.Tensor, r: int) -> torch.Tensor:
        """(U, K) index of the voxel at each of the (K, 3) offsets (each in [-r, r]), -1 where empty or
        outside the grid.

        Keys are recomputed on a grid padded by the kernel radius r on every side, so every neighbour
        cell has a key of its own cloud (padding cells are never occupied) and, the key being linear in
        the cell, a neighbour's key is the voxel's key plus the offset's key. Small key ranges use a dense
        key -> voxel table, larger ones a binary search in the sorted keys.
        """
        ext = tuple(e + 2 * r for e in self.extent)
        cell = self.voxel_grid + r
        keys = _pack(self.voxel_batch, cell[:, 0], cell[:, 1], cell[:, 2], ext)  # sorted like self.keys
        step = (offsets[:, 0] * ext[1] + offsets[:, 1]) * ext[2] + offsets[:, 2]
        query = keys[:, None] + step[None]
        n_keys = self.num_clouds * ext[0] * ext[1] * ext[2]
        if n_keys <= max(_DENSE_TABLE_FACTOR * query.numel(), _DENSE_TABLE_MIN):
            table = torch.full((n_keys,), -1, dtype=torch.int64, device=keys.device)
            table[keys] = torch.arange(self.num_voxels, device=keys.device)
            return table.index_select(0, query.reshape(-1)).view(query.shape)  # ~8x faster than table[query]
        index = torch.searchsorted(keys, query).clamp_(max=self.num_voxels - 1)
        found = keys.index_select(0, index.reshape(-1)).view(index.shape) == query
        return torch.where(found, index, torch.full_like(index, -1))

    def scatter_mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean of per-point values over the points of each voxel (differentiable).

        Args:
            values: (P, C) per-point values (any float dtype).

        Returns:
            mean: (U, C) per-voxel mean, same dtype and device.
        """
        require_floating("values", values)
        require_shape("values", values, (self.point_voxel.shape[0], None), max_leading=0)
        total = values.new_zeros(self.num_voxels, values.shape[1]).index_add(0, self.point_voxel, values)
        return total / self.counts[:, None].to(values.dtype)
