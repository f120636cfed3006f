"""Space-filling-curve serialization of packed point batches (z-order and Hilbert, as in PTv3).

A point's grid cell ``(x, y, z)`` (non-negative int64, each < 2**depth) maps to a position on a curve
through the cube [0, 2**depth)^3; sorting points by ``batch << (3 * depth) | code`` orders them cloud by
cloud along the curve, so consecutive points are close in space and clouds never interleave. The
"transposed" orders apply the same curve to (y, x, z), as PTv3 does. Every function is vectorised over
points; only the ``depth`` bits are looped over in Python.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pointworld.geometry.checks import require_dtype, require_int, require_shape

#: Bits available to one coordinate in a 64-bit interleaved code (3 * 21 = 63).
MAX_DEPTH = 21
#: Serialization keys (batch bits + 3 * depth) must fit in this many bits.
_KEY_BITS = 62
_TRANSPOSE = [1, 0, 2]

# Masks that spread the low 21 bits of an int so that bit i lands on bit 3 i (and back).
_SPREAD = ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F),
           (4, 0x10C30C30C30C30C3), (2, 0x1249249249249249))
_COMPACT = ((2, 0x10C30C30C30C30C3), (4, 0x100F00F00F00F00F), (8, 0x1F0000FF0000FF),
            (16, 0x1F00000000FFFF), (32, 0x1FFFFF))


class Order(enum.Enum):
    """A serialization order: a space-filling curve, possibly on (y, x, z) ("trans")."""

    Z = "z"
    Z_TRANS = "z-trans"
    HILBERT = "hilbert"
    HILBERT_TRANS = "hilbert-trans"


def _spread(v: torch.Tensor) -> torch.Tensor:
    """Move bit i of a value < 2**21 to bit 3 i."""
    v = v & 0x1FFFFF
    for shift, mask in _SPREAD:
        v = (v | (v << shift)) & mask
    return v


def _compact(v: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`_spread`: gather bits 0, 3, 6, ... of ``v`` into the low 21 bits."""
    v = v & _SPREAD[-1][1]
    for shift, mask in _COMPACT:
        v = (v ^ (v >> shift)) & mask
    return v


def _check_grid(grid: torch.Tensor, depth: int) -> None:
    require_dtype("grid", grid, torch.int64)
    require_shape("grid", grid, (3,))
    require_int("depth", depth, minimum=1)
    if depth > MAX_DEPTH:
        raise ValueError(f"depth: expected an int in [1, {MAX_DEPTH}], got {depth}")
    if grid.numel() and (int(grid.amin()) < 0 or int(grid.amax()) >= 1 << depth):
        raise ValueError(f"grid: expected cells in [0, 2**{depth}) for depth {depth}, got values in "
                         f"[{int(grid.amin())}, {int(grid.amax())}]")


def _z_encode(grid: torch.Tensor) -> torch.Tensor:
    return _spread(grid[..., 0]) | (_spread(grid[..., 1]) << 1) | (_spread(grid[..., 2]) << 2)


def z_order_encode(grid: torch.Tensor, depth: int) -> torch.Tensor:
    """Morton (z-order) code: bit i of x, y, z goes to bit 3i, 3i+1, 3i+2 of the code.

    Args:
        grid: (..., 3) int64 cells, each coordinate in [0, 2**depth).
        depth: bits per coordinate, 1..21.

    Returns:
        code: (...) int64 in [0, 2**(3 depth)).
    """
    _check_grid(grid, depth)
    return _z_encode(grid)


def _z_decode(code: torch.Tensor) -> torch.Tensor:
    return torch.stack([_compact(code), _compact(code >> 1), _compact(code >> 2)], -1)


def _check_code(code: torch.Tensor, depth: int) -> None:
    require_dtype("code", code, torch.int64)
    require_int("depth", depth, minimum=1)
    if depth > MAX_DEPTH:
        raise ValueError(f"depth: expected an int in [1, {MAX_DEPTH}], got {depth}")
    if code.numel() and (int(code.amin()) < 0 or int(code.amax()) >= 1 << (3 * depth)):
        raise ValueError(f"code: expected values in [0, 2**{3 * depth}) for depth {depth}, got "
                         f"[{int(code.amin())}, {int(code.amax())}]")


def z_order_decode(code: torch.Tensor, depth: int) -> torch.Tensor:
    """Inverse of :func:`z_order_encode`.

    Args:
        code: (...) int64 Morton codes in [0, 2**(3 depth)).
        depth: bits per coordinate, 1..21.

    Returns:
        grid: (..., 3) int64 cells (x, y, z).
    """
    _check_code(code, depth)
    return _z_decode(code)


def _rotate_or_flip(x: list[torch.Tensor], level: int, axes: tuple[int, ...]) -> None:
    """One level of Skilling's transform, in place on the list: for each axis i in ``axes``, where bit
    ``level`` of x_i is set, invert the lower bits of x_0, else exchange the lower bits of x_0 and x_i.
    Branch-free: ``keep`` is all ones where the bit is clear (exchange) and 0 where it is set (invert)."""
    low = (1 << level) - 1
    for i in axes:
        keep = ((x[i] >> level) & 1) - 1
        t = (x[0] ^ x[i]) & low & keep
        x[0] = x[0] ^ (t | (low & ~keep))
        if i:
            x[i] = x[i] ^ t


def _hilbert_encode(grid: torch.Tensor, depth: int) -> torch.Tensor:
    """Skilling's axes-to-transpose (2004), vectorised; x_0 = x is the most significant axis."""
    x = [grid[..., 0], grid[..., 1], grid[..., 2]]
    for level in range(depth - 1, 0, -1):  # undo the excess work, top bit down
        _rotate_or_flip(x, level, (0, 1, 2))
    x[1] = x[1] ^ x[0]  # Gray encode
    x[2] = x[2] ^ x[1]
    flip = torch.zeros_like(x[0])
    for level in range(depth - 1, 0, -1):
        flip = flip ^ (((1 << level) - 1) & -((x[2] >> level) & 1))
    return (_spread(x[0] ^ flip) << 2) | (_spread(x[1] ^ flip) << 1) | _spread(x[2] ^ flip)


def _hilbert_decode(code: torch.Tensor, depth: int) -> torch.Tensor:
    """Skilling's transpose-to-axes, vectorised; inverse of :func:`_hilbert_encode`."""
    x = [_compact(code >> 2), _compact(code >> 1), _compact(code)]
    t = x[2] >> 1  # Gray decode
    x[2] = x[2] ^ x[1]
    x[1] = x[1] ^ x[0]
    x[0] = x[0] ^ t
    for level in range(1, depth):  # redo the work, low bits up
        _rotate_or_flip(x, level, (2, 1, 0))
    return torch.stack(x, -1)


def hilbert_encode(grid: torch.Tensor, depth: int) -> torch.Tensor:
    """Position of each cell on the 3-D Hilbert curve of order ``depth`` (Skilling's algorithm).

    The curve starts at (0, 0, 0) and consecutive codes are face-adjacent cells.

    Args:
        grid: (..., 3) int64 cells, each coordinate in [0, 2**depth).
        depth: bits per coordinate, 1..21.

    Returns:
        code: (...) int64 in [0, 2**(3 depth)).
    """
    _check_grid(grid, depth)
    return _hilbert_encode(grid, depth)


def hilbert_decode(code: torch.Tensor, depth: int) -> torch.Tensor:
    """Inverse of :func:`hilbert_encode`.

    Args:
        code: (...) int64 Hilbert codes in [0, 2**(3 depth)).
        depth: bits per coordinate, 1..21.

    Returns:
        grid: (..., 3) int64 cells (x, y, z).
    """
    _check_code(code, depth)
    return _hilbert_decode(code, depth)


def _as_order(name: str, value: Order | str) -> Order:
    try:
        return Order(value)
    except ValueError:
        raise ValueError(f"{name}: expected one of {[o.value for o in Order]}, got {value!r}") from None


def _curve_code(grid: torch.Tensor, order: Order, depth: int) -> torch.Tensor:
    if order in (Order.Z_TRANS, Order.HILBERT_TRANS):
        grid = grid[..., _TRANSPOSE]
    if order in (Order.Z, Order.Z_TRANS):
        return _z_encode(grid)
    return _hilbert_encode(grid, depth)


def _check_packed(grid: torch.Tensor, batch: torch.Tensor) -> tuple[int, int, int]:
    """Validate a packed grid/batch pair; return (largest cell coordinate, smallest batch, largest batch)."""
    require_dtype("grid", grid, torch.int64)
    require_shape("grid", grid, (None, 3), max_leading=0)
    require_dtype("batch", batch, torch.int64)
    require_shape("batch", batch, (grid.shape[0],), max_leading=0)
    if grid.shape[0] == 0:
        raise ValueError("grid: expected at least one point, got 0")
    stats = torch.stack([grid.amin(), grid.amax(), batch.amin(), batch.amax()]).tolist()
    if stats[0] < 0 or stats[2] < 0:
        raise ValueError(f"grid, batch: expected non-negative values, got minima {stats[0]} and {stats[2]}")
    return stats[1], stats[2], stats[3]


def _check_depth(depth: int, top: int, batch_max: int) -> None:
    require_int("depth", depth, minimum=1)
    if depth > MAX_DEPTH:
        raise ValueError(f"depth: expected an int in [1, {MAX_DEPTH}], got {depth}")
    if top >= 1 << depth:
        raise ValueError(f"grid: expected cells < 2**{depth} = {1 << depth} for depth {depth}, got {top}")
    if 3 * depth + batch_max.bit_length() > _KEY_BITS:
        raise ValueError(f"depth: 3 * {depth} bits of code plus {batch_max.bit_length()} bits of batch index "
                         f"(up to {batch_max}) exceed {_KEY_BITS} bits")


def serialization_codes(grid: torch.Tensor, batch: torch.Tensor, order: Order | str, depth: int) -> torch.Tensor:
    """Sort keys of a packed batch along one curve: ``batch << (3 depth) | code``.

    Args:
        grid: (P, 3) int64 cells, each in [0, 2**depth).
        batch: (P,) int64 non-negative cloud index of each point.
        order: the curve (and whether it runs on (y, x, z)).
        depth: bits per coordinate; 3 * depth + bits(max batch) must be <= 62.

    Returns:
        codes: (P,) int64; sorting them groups the clouds and orders each along the curve.
    """
    order = _as_order("order", order)
    top, _, batch_max = _check_packed(grid, batch)
    _check_depth(depth, top, batch_max)
    return (batch << (3 * depth)) | _curve_code(grid, order, depth)


@dataclass
class Serialization:
    """Several serializations of one packed batch.

    Attributes:
        codes: (S, P) int64 sort keys, one row per order (:func:`serialization_codes`).
        order: (S, P) int64 stable argsort of each row: ``x[order[s]]`` is x sorted along curve s.
        inverse: (S, P) int64 inverse permutation: ``x[order[s]][inverse[s]] == x``.
        orders: the S curves, in row order.
    """

    codes: torch.Tensor
    order: torch.Tensor
    inverse: torch.Tensor
    orders: tuple[Order, ...]


def serialize(grid: torch.Tensor, batch: torch.Tensor, orders: Sequence[Order | str],
              depth: int | None = None) -> Serialization:
    """Serialize a packed batch along every order (one host sync for the checks).

    Args:
        grid: (P, 3) int64 non-negative cells.
        batch: (P,) int64 non-negative cloud index of each point.
        orders: S >= 1 curves (:class:`Order` members or their string values, e.g. "hilbert-trans").
        depth: bits per coordinate; None = the smallest depth >= 1 with every cell < 2**depth.

    Returns:
        The :class:`Serialization` (rows in the order of ``orders``).
    """
    if isinstance(orders, (str, Order)) or len(orders) == 0:
        raise ValueError(f"orders: expected a non-empty sequence of Order, got {orders!r}")
    members = tuple(_as_order("orders", o) for o in orders)
    top, _, batch_max = _check_packed(grid, batch)
    if depth is None:
        depth = max(1, top.bit_length())
    _check_depth(depth, top, batch_max)
    shifted = batch << (3 * depth)
    codes = torch.stack([shifted | _curve_code(grid, o, depth) for o in members])
    # One 1-D sort per row: measured ~10x faster on CPU than a batched sort along dim 1.
    order = torch.stack([torch.sort(row, stable=True).indices for row in codes])
    ramp = torch.arange(codes.shape[1], device=codes.device).expand_as(order)
    inverse = torch.empty_like(order).scatter_(1, order, ramp)
    return Serialization(codes=codes, order=order, inverse=inverse, orders=members)
