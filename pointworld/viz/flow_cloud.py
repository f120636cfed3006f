"""Scene flow as colored point clouds (PLY files any viewer opens: Open3D, MeshLab, CloudCompare)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pointworld.atomic import atomic_open
from pointworld.capture.cloud import write_ply
from pointworld.geometry.checks import require_floating, require_positive, require_shape
from pointworld.geometry.fusion import FusedCloud


def heat_colors(values: torch.Tensor, max_value: float) -> torch.Tensor:
    """(N,) non-negative values -> (N, 3) RGB in [0, 1] on a black-body ramp (0: dark blue-gray, max: yellow).

    Args:
        values: (N,) magnitudes (e.g. displacement norms, m).
        max_value: value mapped to the end of the ramp (> 0); larger values saturate.
    """
    require_shape("values", require_floating("values", values), (None,), max_leading=0)
    x = (values / require_positive("max_value", max_value)).clamp(0.0, 1.0)
    low = torch.tensor([0.25, 0.27, 0.32], dtype=values.dtype, device=values.device)
    mid = torch.tensor([0.85, 0.15, 0.10], dtype=values.dtype, device=values.device)
    high = torch.tensor([1.0, 0.9, 0.2], dtype=values.dtype, device=values.device)
    first = low + (mid - low) * (2 * x).clamp(max=1.0)[:, None]
    return torch.where((x < 0.5)[:, None], first, mid + (high - mid) * (2 * x - 1).clamp(min=0.0)[:, None])


def flow_cloud(points: torch.Tensor, displacement: torch.Tensor, normals: torch.Tensor | None = None,
               max_displacement_m: float = 0.1) -> FusedCloud:
    """The cloud moved by a displacement, colored by how far each point moved.

    Args:
        points: (N, 3) positions at t = 0, m, world frame.
        displacement: (N, 3) displacement to show (e.g. the prediction at the last step), m, world frame.
        normals: (N, 3) normals or None (zeros).
        max_displacement_m: displacement norm shown at full color, m.

    Returns:
        A FusedCloud at ``points + displacement`` with heat colors (view/pixel indices -1).
    """
    require_shape("points", require_floating("points", points), (None, 3), max_leading=0)
    require_shape("displacement", displacement, (points.shape[0], 3), max_leading=0)
    moved = (points + displacement).detach().cpu().float()
    colors = heat_colors(displacement.detach().cpu().float().norm(dim=-1), max_displacement_m)
    n = torch.zeros_like(moved) if normals is None else normals.detach().cpu().float()
    minus = torch.full((moved.shape[0],), -1, dtype=torch.int64)
    return FusedCloud(points_world=moved, colors=colors, normals=n, view_index=minus, pixel_index=minus)


def write_flow_ply(path: str | Path, points: torch.Tensor, displacement: torch.Tensor,
                   max_displacement_m: float = 0.1) -> Path:
    """Write :func:`flow_cloud` of ``points`` (N, 3) and ``displacement`` (N, 3), m, as a binary PLY (atomic)."""
    return write_ply(path, flow_cloud(points, displacement, max_displacement_m=max_displacement_m))


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an (H, W, 3) uint8 RGB image as PNG, atomically."""
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"rgb: expected an (H, W, 3) uint8 image, got shape {arr.shape} and dtype {arr.dtype}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(path, "wb") as f:
        Image.fromarray(arr).save(f, format="PNG")
    return path
