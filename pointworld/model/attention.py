"""Serialized patch attention (Point Transformer V3): dense attention inside patches of a space-filling curve.

The points of a packed batch (see :mod:`pointworld.model.grid`) are sorted along a serialization order
(:mod:`pointworld.model.serialization`); each cloud's sorted points are cut into patches of ``patch_size``
consecutive points and every point attends to the points of its own patch only. A cloud's last patch may be
partial: it is padded and the padded keys are masked out, so the result does not depend on the padding.
Clouds never share a patch.

:class:`PatchLayout` holds the patch table of one (order, patch size); it depends only on the points, not on
the features, so a level of the backbone builds it once and every block of that level reuses it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pointworld.geometry.checks import require_dtype, require_floating, require_int, require_shape


@dataclass(frozen=True)
class PatchLayout:
    """Where every point sits in the padded patch table of one serialization order.

    Full patches come first (``index[:num_full]``, no padding); the partial last patches of the clouds follow.

    Attributes:
        index: (Np, W) int64 point index held by each patch slot, -1 for padding. W = min(patch_size, the
            largest cloud).
        valid: (Np, W) bool, ``index >= 0``.
        slot: (P,) int64 flat slot (``patch * W + position``) of each point.
        num_full: number of leading patches without padding.
    """

    index: torch.Tensor
    valid: torch.Tensor
    slot: torch.Tensor
    num_full: int

    @property
    def width(self) -> int:
        """W, the number of slots per patch."""
        return int(self.index.shape[1])


def _exclusive_cumsum(x: torch.Tensor) -> torch.Tensor:
    return torch.cumsum(x, 0) - x


def build_patch_layout(order: torch.Tensor, inverse: torch.Tensor, batch: torch.Tensor, batch_size: int,
                       patch_size: int) -> PatchLayout:
    """Cut each cloud's serialized points into patches of ``patch_size`` consecutive points.

    Args:
        order: (P,) int64 permutation; ``order[k]`` is the point at sorted position k. The points of each
            cloud must be contiguous in it, clouds in increasing index (serialization codes guarantee this).
        inverse: (P,) int64 inverse permutation of ``order``.
        batch: (P,) int64 cloud index of each point in [0, batch_size).
        batch_size: B.
        patch_size: maximum number of points per patch, >= 1.

    Returns:
        The layout (one host sync, to size the table).
    """
    patch_size = require_int("patch_size", patch_size, minimum=1)
    batch_size = require_int("batch_size", batch_size, minimum=1)
    for name, t in (("order", order), ("inverse", inverse), ("batch", batch)):
        require_dtype(name, t, torch.int64)
        require_shape(name, t, (batch.shape[0],), max_leading=0)
    P = int(batch.shape[0])
    if P == 0:
        raise ValueError("batch: expected at least one point, got 0")
    sorted_batch = batch[order]
    counts = torch.bincount(batch, minlength=batch_size)
    unordered = (sorted_batch[1:] < sorted_batch[:-1]).any().reshape(1).to(counts.dtype)
    host = torch.cat([counts, unordered]).tolist()
    if host[-1] or len(host) != batch_size + 1:
        raise ValueError("order: expected the points of each cloud to be contiguous and clouds in increasing "
                         f"batch index along the order (batch values in [0, {batch_size}))")
    sizes = host[:-1]
    width = min(patch_size, max(sizes))
    num_full = sum(n // patch_size for n in sizes)
    num_patches = num_full + sum(1 for n in sizes if n % patch_size)
    full = counts // patch_size
    full_start = _exclusive_cumsum(full)
    partial_start = num_full + _exclusive_cumsum((counts % patch_size > 0).to(counts.dtype))
    rank = torch.arange(P, device=batch.device) - _exclusive_cumsum(counts)[sorted_batch]
    chunk = torch.div(rank, patch_size, rounding_mode="floor")
    patch = torch.where(chunk < full[sorted_batch], full_start[sorted_batch] + chunk, partial_start[sorted_batch])
    flat = patch * width + rank % patch_size
    index = torch.full((num_patches * width,), -1, dtype=torch.int64, device=batch.device)
    index[flat] = order
    index = index.reshape(num_patches, width)
    return PatchLayout(index=index, valid=index >= 0, slot=flat[inverse], num_full=num_full)


class SerializedAttention(nn.Module):
    """Multi-head self-attention inside serialized patches.

    Args:
        channels: C, feature width (divisible by ``num_heads``).
        num_heads: number of attention heads.
        patch_size: maximum number of points per patch.
        qkv_bias: whether the query/key/value projection has a bias.
        attn_drop: dropout probability on the attention weights (training only).
        proj_drop: dropout probability after the output projection (training only).
    """

    def __init__(self, channels: int, num_heads: int, patch_size: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0) -> None:
        super().__init__()
        channels = require_int("channels", channels, minimum=1)
        num_heads = require_int("num_heads", num_heads, minimum=1)
        if channels % num_heads:
            raise ValueError(f"num_heads: expected a divisor of channels={channels}, got {num_heads}")
        for name, p in (("attn_drop", attn_drop), ("proj_drop", proj_drop)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1), got {p!r}")
        self.channels, self.num_heads = channels, num_heads
        self.patch_size = require_int("patch_size", patch_size, minimum=1)
        self.attn_drop = float(attn_drop)
        self.qkv = nn.Linear(channels, 3 * channels, bias=qkv_bias)
        self.proj = nn.Linear(channels, channels)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, feat: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor, batch: torch.Tensor,
                batch_size: int, layout: PatchLayout | None = None) -> torch.Tensor:
        """Attend within the patches of one serialization order.

        Args:
            feat: (P, C) point features.
            order: (P,) int64 serialization permutation (sorted position -> point), clouds contiguous.
            inverse: (P,) int64 inverse of ``order``.
            batch: (P,) int64 cloud index of each point.
            batch_size: B.
            layout: the precomputed :func:`build_patch_layout` of these arguments and ``self.patch_size``
                (skips rebuilding it; ``order``/``inverse``/``batch`` are then not read).

        Returns:
            out: (P, C) attended features, in the input point order.
        """
        require_floating("feat", feat)
        require_shape("feat", feat, (None, self.channels), max_leading=0)
        if layout is None:
            layout = build_patch_layout(order, inverse, batch, batch_size, self.patch_size)
        elif layout.slot.shape[0] != feat.shape[0]:
            raise ValueError(f"layout: built for {layout.slot.shape[0]} points, feat has {feat.shape[0]}")
        H, W, C = self.num_heads, layout.width, self.channels
        qkv = self.qkv(feat)[layout.index.clamp(min=0)]  # (Np, W, 3C); padded slots hold point 0, masked
        q, k, v = qkv.reshape(-1, W, 3, H, C // H).permute(2, 0, 3, 1, 4).unbind(0)  # (Np, H, W, C/H)
        p = self.attn_drop if self.training else 0.0
        nf = layout.num_full
        parts = []
        if nf:
            parts.append(F.scaled_dot_product_attention(q[:nf], k[:nf], v[:nf], dropout_p=p))
        if nf < q.shape[0]:
            mask = layout.valid[nf:, None, None, :]  # (Nq, 1, 1, W): keys only
            parts.append(F.scaled_dot_product_attention(q[nf:], k[nf:], v[nf:], attn_mask=mask, dropout_p=p))
        out = parts[0] if len(parts) == 1 else torch.cat(parts, 0)
        out = out.transpose(1, 2).reshape(-1, C)[layout.slot]
        return self.proj_drop(self.proj(out))
