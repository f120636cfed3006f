"""Point-cloud operations on padded batches: box crop, voxel downsampling, packing.

A batch of clouds is ``points: (B, N, 3)`` plus ``mask: (B, N)`` bool (True = a real point); ``mask=None``
means every point is real. Coordinates are metres in one frame (usually ``world``). Masked-out entries may
hold anything, NaN included: they are never read as coordinates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from pointworld.geometry.checks import (require_dtype, require_finite, require_floating,
                                        require_positive, require_shape)

#: Key ranges up to max(_DENSE_TABLE_FACTOR * P, _DENSE_TABLE_MIN) use a dense table instead of a sort.
_DENSE_TABLE_FACTOR = 4
_DENSE_TABLE_MIN = 1 << 16
#: Voxel coordinates must stay well inside int64 (keys are built from them).
_MAX_VOXEL_COORD = 2.0**62


def _as_origin(origin: torch.Tensor | Sequence[float] | None, points: torch.Tensor) -> torch.Tensor:
    """The voxel grid origin (3,) as a tensor of the points' dtype and device (None = zeros)."""
    value = _as_box_corner("origin", (0.0, 0.0, 0.0) if origin is None else origin, points)
    return require_shape("origin", value, (3,), max_leading=0)


def _as_box_corner(name: str, value: torch.Tensor | Sequence[float], points: torch.Tensor) -> torch.Tensor:
    """A box corner (..., 3) as a tensor of the points' dtype and device; checks shape and finiteness."""
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value, dtype=points.dtype, device=points.device)
    require_shape(name, value, (3,))
    require_finite(name, value)
    return value.to(device=points.device, dtype=points.dtype)


def crop_box_mask(points: torch.Tensor, box_min: torch.Tensor | Sequence[float],
                  box_max: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """Which points lie inside an axis-aligned box (bounds inclusive).

    Args:
        points: (..., N, 3) positions, m, any frame. Non-finite points are outside.
        box_min: (3,) or (..., 3) lower corner, m, same frame (one box per leading index or one for all).
        box_max: same shape as ``box_min``, upper corner, m; must be >= ``box_min`` on every axis.

    Returns:
        inside: (..., N) bool, True where ``box_min <= p <= box_max`` on all three axes.
    """
    require_floating("points", points)
    require_shape("points", points, (None, 3), min_leading=0)
    lo = _as_box_corner("box_min", box_min, points)
    hi = _as_box_corner("box_max", box_max, points)
    for name, corner in (("box_min", lo), ("box_max", hi)):
        if corner.dim() > 1 and tuple(corner.shape[:-1]) != tuple(points.shape[:-2]):
            raise ValueError(f"{name}: expected shape (3,) or {tuple(points.shape[:-2]) + (3,)} to match "
                             f"points {tuple(points.shape)}, got {tuple(corner.shape)}")
    if bool((lo > hi).any()):
        raise ValueError(f"box_min: expected box_min <= box_max on every axis, got box_min={lo.tolist()} "
                         f"and box_max={hi.tolist()}")
    lo, hi = lo.unsqueeze(-2), hi.unsqueeze(-2)
    inside = points[..., 0] >= lo[..., 0]  # per-axis views + in-place ands: measured fastest on CPU
    for axis in range(3):
        if axis:
            inside &= points[..., axis] >= lo[..., axis]
        inside &= points[..., axis] <= hi[..., axis]
    return inside


def voxel_coordinates(points: torch.Tensor, voxel_size_m: float,
                      origin: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
    """Integer voxel index of every point, ``floor((p - origin) / voxel_size_m)``.

    Args:
        points: (..., N, 3) positions, m, any frame; must be finite.
        voxel_size_m: edge length of a voxel, m, > 0.
        origin: (3,) corner of voxel (0, 0, 0), m, same frame; None = the frame origin.

    Returns:
        coords: (..., N, 3) int64 voxel indices.
    """
    require_floating("points", points)
    require_shape("points", points, (None, 3))
    voxel_size_m = require_positive("voxel_size_m", voxel_size_m)
    origin_t = _as_origin(origin, points)
    scaled = torch.floor((points - origin_t) / voxel_size_m)
    require_finite("points", scaled)
    if scaled.numel() and float(scaled.abs().max()) >= _MAX_VOXEL_COORD:
        raise ValueError(f"points: voxel indices exceed int64 range (|p / voxel_size_m| up to "
                         f"{float(scaled.abs().max()):.3g}); use a larger voxel_size_m or closer origin")
    return scaled.to(torch.int64)


def check_cloud(points: torch.Tensor, mask: torch.Tensor | None, *, batched: bool = True,
                points_name: str = "points", mask_name: str = "mask") -> torch.Tensor:
    """Validate a cloud and its mask at a public boundary; return the mask (all True when None).

    Args:
        points: (B, N, 3) floating positions, m ((N, 3) when ``batched`` is False).
        mask: (B, N) bool ((N,) when not batched) or None.
        points_name, mask_name: argument names used in error messages.
    """
    require_floating(points_name, points)
    lead = 1 if batched else 0
    require_shape(points_name, points, (None, 3), min_leading=lead, max_leading=lead)
    if mask is None:
        return torch.ones(points.shape[:-1], dtype=torch.bool, device=points.device)
    require_dtype(mask_name, mask, torch.bool)
    if tuple(mask.shape) != tuple(points.shape[:-1]):
        raise ValueError(f"{mask_name}: expected shape {tuple(points.shape[:-1])} to match {points_name}, "
                         f"got {tuple(mask.shape)}")
    return mask.to(points.device)


def _axis_bounds(scaled: torch.Tensor, batch: torch.Tensor | None, n_batch: int,
                 occupied: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-cloud smallest and largest voxel index along one axis, (B,) each; 0 for empty clouds."""
    if batch is None:  # a single cloud
        return scaled.amin().reshape(1), scaled.amax().reshape(1)
    lo = scaled.new_full((n_batch,), float("inf")).scatter_reduce_(0, batch, scaled, "amin")
    hi = scaled.new_full((n_batch,), float("-inf")).scatter_reduce_(0, batch, scaled, "amax")
    return lo.masked_fill(~occupied, 0.0), hi.masked_fill(~occupied, 0.0)


def _voxel_keys(points: torch.Tensor, flat_idx: torch.Tensor | None, voxel_size_m: float,
                origin: torch.Tensor, occupied: torch.Tensor) -> tuple[torch.Tensor, int]:
    """One int64 key per point in ``flat_idx`` (all points if None), unique per (cloud, voxel).

    Keys are offset by each cloud's smallest occupied voxel, so their range (returned ``n_keys``) spans
    the occupied extent only. Works axis by axis on 1-D gathers (measured several times faster on CPU
    than gathering (P, 3) rows or transposing).
    """
    n_batch, n_pts = points.shape[:2]
    flat = points.reshape(-1, 3)
    batch = None
    if n_batch > 1:
        batch = (torch.arange(n_batch, device=points.device).repeat_interleave(n_pts) if flat_idx is None
                 else torch.div(flat_idx, n_pts, rounding_mode="floor"))
    cols = [flat[:, a] if flat_idx is None else flat[:, a].index_select(0, flat_idx) for a in range(3)]
    scaled = [torch.floor((col - origin[a]) / voxel_size_m) for a, col in enumerate(cols)]
    lo_t, hi_t = (torch.stack(b) for b in zip(*(_axis_bounds(s, batch, n_batch, occupied) for s in scaled)))
    bounds = torch.cat([lo_t, hi_t], -1)  # (3, 2B)
    if not bool(torch.isfinite(bounds).all()):
        raise ValueError("points: expected finite coordinates for every point where mask is True, "
                         "got NaN/inf")
    if float(bounds.abs().max()) >= _MAX_VOXEL_COORD:
        raise ValueError(f"points: voxel indices exceed int64 range (up to {float(bounds.abs().max()):.3g}); "
                         f"use a larger voxel_size_m")
    extent = [int(e) + 1 for e in (hi_t - lo_t).amax(1).tolist()]  # per axis, over the batch
    n_keys = n_batch * extent[0] * extent[1] * extent[2]
    if n_keys >= 2**62:
        raise ValueError(f"points: occupied extent of {extent} voxels per axis (batch {n_batch}) does not "
                         f"fit a 64-bit voxel key; use a larger voxel_size_m or crop first")
    stride = [extent[1] * extent[2], extent[2], 1]
    lo_i = lo_t.to(torch.int64)
    shifted = float(bounds.abs().max()) * sum(stride) >= 2**62  # keys of raw indices could overflow
    key = torch.zeros_like(scaled[0], dtype=torch.int64)
    for axis in range(3):
        vc = scaled[axis].to(torch.int64)
        if shifted:
            vc -= lo_i[axis] if batch is None else lo_i[axis][batch]
        key += vc * stride[axis] if stride[axis] != 1 else vc
    # Per-cloud shift: cloud b starts at b * (key span of one cloud), minus the key of its smallest voxel.
    offset = torch.arange(n_batch, device=points.device) * (n_keys // n_batch)
    if not shifted:
        offset -= (lo_i * torch.tensor(stride, device=points.device)[:, None]).sum(0)
    return key + (offset if batch is None else offset[batch]), n_keys


def _first_per_key(key: torch.Tensor, n_keys: int, shuffle: torch.Tensor | None) -> torch.Tensor:
    """(P,) bool: one True per distinct key, at the lowest index (``shuffle`` None) or at a random member.

    ``shuffle`` is a random permutation of the P points; with it, the member kept is uniformly random.
    Small key ranges use a dense table and a scatter-min (no sort); larger ones one stable sort.
    """
    n = key.numel()
    if n_keys + 1 <= max(_DENSE_TABLE_FACTOR * n, _DENSE_TABLE_MIN):
        priority = torch.arange(n, device=key.device) if shuffle is None else shuffle
        table = torch.full((n_keys + 1,), n, dtype=torch.int64, device=key.device)
        table.scatter_reduce_(0, key, priority, "amin")
        return table[key] == priority
    sorted_key, perm = torch.sort(key if shuffle is None else key[shuffle], stable=True)
    first = torch.ones_like(sorted_key, dtype=torch.bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    chosen = perm[first] if shuffle is None else shuffle[perm[first]]
    keep = torch.zeros_like(first)
    keep[chosen] = True
    return keep


def voxel_downsample(points: torch.Tensor, voxel_size_m: float, mask: torch.Tensor | None = None, *,
                     mode: Literal["first", "random"] = "first", seed: int | None = None,
                     origin: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
    """Keep exactly one point per occupied voxel of each cloud.

    Voxel of a point: ``floor((p - origin) / voxel_size_m)`` (see :func:`voxel_coordinates`).

    Args:
        points: (B, N, 3) positions, m, any frame; finite where ``mask`` is True.
        voxel_size_m: voxel edge length, m, > 0.
        mask: (B, N) bool, True = a real point; None = all real. Masked-out points are never kept.
        mode: "first" keeps the lowest index in each voxel; "random" a uniformly random member.
        seed: seed of the torch.Generator used by "random" (None means 0, so results are reproducible);
            ignored by "first".
        origin: (3,) corner of voxel (0, 0, 0), m, same frame; None = the frame origin.

    Returns:
        keep: (B, N) bool, True for the kept points.
    """
    valid = check_cloud(points, mask)
    voxel_size_m = require_positive("voxel_size_m", voxel_size_m)
    if mode not in ("first", "random"):
        raise ValueError(f"mode: expected 'first' or 'random', got {mode!r}")
    origin_t = _as_origin(origin, points)
    occupied = valid.any(-1)  # (B,)
    if not bool(occupied.any()):
        return torch.zeros_like(valid)
    flat_idx = None if bool(valid.all()) else torch.nonzero(valid.reshape(-1)).squeeze(-1)
    key, n_keys = _voxel_keys(points, flat_idx, voxel_size_m, origin_t, occupied)
    shuffle = None
    if mode == "random":
        gen = torch.Generator(device=key.device).manual_seed(0 if seed is None else int(seed))
        shuffle = torch.randperm(key.numel(), generator=gen, device=key.device)
    chosen = _first_per_key(key, n_keys, shuffle)
    if flat_idx is None:
        return chosen.view(valid.shape)
    keep = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
    keep[flat_idx[chosen]] = True
    return keep.view(valid.shape)


def voxel_downsample_indices(points: torch.Tensor, voxel_size_m: float, mask: torch.Tensor | None = None, *,
                             mode: Literal["first", "random"] = "first", seed: int | None = None,
                             origin: torch.Tensor | Sequence[float] | None = None) -> torch.Tensor:
    """Single-cloud :func:`voxel_downsample` returning the kept indices (apply them to every time step).

    Args:
        points: (N, 3) positions, m, any frame.
        voxel_size_m, mode, seed, origin: as in :func:`voxel_downsample`.
        mask: (N,) bool, True = a real point; None = all real.

    Returns:
        idx: (K,) int64 kept indices into ``points``, sorted ascending (one per occupied voxel).
    """
    valid = check_cloud(points, mask, batched=False)
    keep = voxel_downsample(points[None], voxel_size_m, valid[None], mode=mode, seed=seed, origin=origin)
    return torch.nonzero(keep[0]).squeeze(-1)


def _check_values(values: torch.Tensor, mask: torch.Tensor) -> None:
    require_shape("values", values, (), min_leading=2)
    require_dtype("mask", mask, torch.bool)
    require_shape("mask", mask, (None, None), max_leading=0)
    if tuple(mask.shape) != tuple(values.shape[:2]):
        raise ValueError(f"mask: expected shape {tuple(values.shape[:2])} to match values (B, N), "
                         f"got {tuple(mask.shape)}")


def pack_masked(values: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the kept entries of every cloud to the front, preserving their order.

    Args:
        values: (B, N, ...) per-point values (positions m, colors, features, ...).
        mask: (B, N) bool, True = kept.

    Returns:
        packed: (B, N', ...) with N' = max kept count over the batch; slots past a cloud's count are zero.
        packed_mask: (B, N') bool, True for the first ``count_b`` slots of cloud b.
    """
    _check_values(values, mask)
    counts = mask.sum(-1)
    n_out = int(counts.max()) if mask.numel() else 0
    order = torch.argsort((~mask).to(torch.uint8), dim=-1, stable=True)[:, :n_out]  # kept first
    packed_mask = torch.arange(n_out, device=mask.device) < counts[:, None]
    index = order.reshape(order.shape + (1,) * (values.dim() - 2)).expand(order.shape + values.shape[2:])
    packed = torch.gather(values, 1, index)
    fill = packed_mask.reshape(packed_mask.shape + (1,) * (values.dim() - 2))
    return torch.where(fill, packed, torch.zeros((), dtype=values.dtype, device=values.device)), packed_mask


def unpack_masked(packed: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_masked`: put packed entries back where ``mask`` is True (zeros elsewhere).

    Args:
        packed: (B, N', ...) values with each cloud's entries at the front (N' >= max kept count).
        mask: (B, N) bool, the original mask given to :func:`pack_masked`.

    Returns:
        values: (B, N, ...) with ``values[mask]`` equal to the packed entries, in order, zeros elsewhere.
    """
    require_shape("packed", packed, (), min_leading=2)
    require_dtype("mask", mask, torch.bool)
    require_shape("mask", mask, (None, None), max_leading=0)
    counts = mask.sum(-1)
    n_kept = int(counts.max()) if mask.numel() else 0
    if mask.shape[0] != packed.shape[0] or n_kept > packed.shape[1]:
        raise ValueError(f"packed: expected (B={mask.shape[0]}, N' >= {n_kept}, ...) to hold the kept "
                         f"entries of mask, got shape {tuple(packed.shape)}")
    out = packed.new_zeros((mask.shape[0], mask.shape[1]) + tuple(packed.shape[2:]))
    slots = torch.arange(packed.shape[1], device=mask.device) < counts[:, None]
    out[mask] = packed[slots]
    return out
