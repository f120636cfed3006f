"""What the viewer draws at one step of the timeline: moved points, flow segments, uncertainty colors.

Pure tensor functions (no viser) so the numbers are testable without a server. Step 0 is the observed
scene (t = 0); step t in 1..T adds the displacement of future step t (``displacement[t - 1]``).
"""

from __future__ import annotations

import torch

from pointworld.geometry.checks import (
    require_floating,
    require_int,
    require_positive,
    require_shape,
)
from pointworld.viz.flow_cloud import heat_colors


def displacement_at(displacement: torch.Tensor, step: int, valid: torch.Tensor | None = None) -> torch.Tensor:
    """The displacement of every point at timeline ``step``, 0 where unknown.

    Args:
        displacement: (T, N, 3) displacement from t = 0 at steps 1..T, m, world frame.
        step: 0..T (0 = no displacement).
        valid: (T, N) bool where the displacement is known, or None (all known).

    Returns:
        (N, 3) displacement, m, world frame (zeros at step 0 and at invalid points).
    """
    require_shape("displacement", require_floating("displacement", displacement), (None, None, 3), max_leading=0)
    T = displacement.shape[0]
    step = require_int("step", step, 0)
    if step > T:
        raise ValueError(f"step: expected a step in 0..{T}, got {step}")
    if step == 0:
        return torch.zeros_like(displacement[0])
    d = displacement[step - 1]
    if valid is not None:
        require_shape("valid", valid, tuple(displacement.shape[:2]), max_leading=0)
        d = d * valid[step - 1, :, None].to(d.dtype)
    return d


def flow_segments(points: torch.Tensor, displacement: torch.Tensor, min_length_m: float = 0.002,
                  max_segments: int = 2000) -> tuple[torch.Tensor, torch.Tensor]:
    """Line segments from each point to its displaced position, for the points that move.

    Args:
        points: (N, 3) start positions, m, world frame.
        displacement: (N, 3) displacement, m, world frame.
        min_length_m: segments shorter than this are dropped (> 0), m.
        max_segments: keep at most this many, the longest ones (>= 1).

    Returns:
        segments: (L, 2, 3) start and end points, m, world frame, longest first (L <= max_segments).
        index: (L,) int64 index of each segment's point.
    """
    require_shape("points", require_floating("points", points), (None, 3), max_leading=0)
    require_shape("displacement", displacement, tuple(points.shape), max_leading=0)
    require_positive("min_length_m", min_length_m)
    require_int("max_segments", max_segments, 1)
    length = displacement.norm(dim=-1)
    order = torch.argsort(length, descending=True, stable=True)
    keep = order[length[order] >= min_length_m][:max_segments]
    return torch.stack([points[keep], points[keep] + displacement[keep]], dim=1), keep


def std_scale_m(log_var: torch.Tensor, quantile: float = 0.95) -> float:
    """The std (m) shown at full color: the ``quantile`` of exp(log_var / 2) over every step and point.

    Args:
        log_var: (T, N) predicted log variance, log(m^2).
    """
    require_shape("log_var", require_floating("log_var", log_var), (None, None), max_leading=0)
    std = torch.exp(0.5 * log_var.double()).flatten()
    std = std[torch.isfinite(std)]
    if std.numel() == 0:
        raise ValueError(f"log_var: expected some finite values, got none in a tensor of shape {tuple(log_var.shape)}")
    return max(float(torch.quantile(std, quantile)), 1e-6)


def uncertainty_colors(log_var: torch.Tensor, max_std_m: float) -> torch.Tensor:
    """Per-point predicted std as heat colors (dark: certain, yellow: std >= ``max_std_m``).

    Args:
        log_var: (N,) predicted log variance at one step, log(m^2).
        max_std_m: std shown at full color, m (> 0).

    Returns:
        (N, 3) RGB in [0, 1].
    """
    require_shape("log_var", require_floating("log_var", log_var), (None,), max_leading=0)
    return heat_colors(torch.exp(0.5 * log_var), max_std_m)


def to_rgb8(colors: torch.Tensor) -> torch.Tensor:
    """(…, 3) RGB in [0, 1] -> uint8 0..255 (rounded). Values outside [0, 1] are an error, not clamped."""
    require_floating("colors", colors)
    if bool(((colors < 0) | (colors > 1) | ~torch.isfinite(colors)).any()):
        raise ValueError(f"colors: expected RGB values in [0, 1], got range "
                         f"[{float(colors.min())}, {float(colors.max())}]")
    return torch.round(colors * 255).to(torch.uint8)
