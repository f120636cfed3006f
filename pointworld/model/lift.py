"""Lifting 2-D image features onto 3-D scene points (the optional ``image_features`` of a scene).

Every scene point is projected into every calibrated view with :mod:`pointworld.geometry.camera`.
A point is *visible* in a view when it lies in front of the camera, inside the image (its nearest
pixel exists), that pixel has a valid depth (finite, > 0), and the point's own z-depth agrees with
it within ``depth_tolerance_m`` (points behind the depth surface are occluded). Its feature in that
view is sampled bilinearly from the view's (C, h, w) feature map; features are averaged over the
views that see the point, and are zero where no view does.

Pixel convention (:mod:`pointworld.conventions`): pixel centres are at integer ``uv_px``; the H x W
image spans ``[-0.5, W - 0.5] x [-0.5, H - 0.5]``. An h x w feature map covers the same area, so
feature cell ``(i, j)`` (column, row) is centred at ``u = (i + 0.5) W / w - 0.5``,
``v = (j + 0.5) H / h - 0.5`` (``grid_sample`` with ``align_corners=False``; border padding between
the outermost cell centres and the image edge). With h = H, w = W cell centres are pixel centres.

Gradients flow into the feature maps (hence into an image encoder), not into the geometry
(points, depth, cameras): projection and visibility are computed without autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pointworld.geometry.camera import project_points
from pointworld.geometry.checks import (
    require_finite,
    require_floating,
    require_positive,
    require_shape,
)
from pointworld.geometry.se3 import (
    check_rigid_transform,
    invert_transform,
    transform_points,
)


def _check_lift_inputs(feature_maps: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                       T_world_cam: torch.Tensor, points: torch.Tensor) -> None:
    """Shapes, dtypes and values of :func:`lift_features`' tensors (raises ValueError/TypeError)."""
    require_shape("points", require_floating("points", points), (None, None, 3), max_leading=0)
    B = points.shape[0]
    require_shape("feature_maps", require_floating("feature_maps", feature_maps),
                  (B, None, None, None, None), max_leading=0)
    V = feature_maps.shape[1]
    require_shape("depth", require_floating("depth", depth), (B, V, None, None), max_leading=0)
    require_shape("K", require_floating("K", K), (B, V, 3, 3), max_leading=0)  # values: project_points
    require_shape("T_world_cam", T_world_cam, (B, V, 4, 4), max_leading=0)
    check_rigid_transform("T_world_cam", T_world_cam)
    require_finite("points", points)
    if min(feature_maps.shape[-2:]) < 1 or min(depth.shape[-2:]) < 1:
        raise ValueError(f"feature_maps, depth: expected non-empty images, got feature maps of shape "
                         f"{tuple(feature_maps.shape)} and depth of shape {tuple(depth.shape)}")


def _project_and_test(depth: torch.Tensor, K: torch.Tensor, T_world_cam: torch.Tensor,
                      points: torch.Tensor, depth_tolerance_m: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates and visibility of every point in every view (no autograd).

    Returns:
        uv_px: (B, V, N, 2) pixels (column, row) of the H x W image; 0 where not visible.
        visible: (B, V, N) bool.
    """
    height, width = depth.shape[-2:]
    T_cam_world = invert_transform(T_world_cam.to(points.dtype))
    points_cam = transform_points(T_cam_world, points[:, None])  # (B, V, N, 3)
    uv, z = project_points(points_cam, K.to(points.dtype))  # NaN uv where z <= 0
    u, v = uv[..., 0], uv[..., 1]
    inside = (z > 0) & (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5)
    col = torch.where(inside, torch.floor(u + 0.5), 0.0).long().clamp_(0, width - 1)
    row = torch.where(inside, torch.floor(v + 0.5), 0.0).long().clamp_(0, height - 1)
    flat = depth.flatten(-2).to(points.dtype)  # (B, V, H*W)
    surface = torch.gather(flat, -1, row * width + col)
    valid_depth = torch.isfinite(surface) & (surface > 0)
    visible = inside & valid_depth & ((z - surface).abs() <= depth_tolerance_m)
    return torch.where(visible[..., None], uv, 0.0), visible


def lift_features(feature_maps: torch.Tensor, depth: torch.Tensor, K: torch.Tensor,
                  T_world_cam: torch.Tensor, points: torch.Tensor, depth_tolerance_m: float = 0.02
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample per-view image features at the scene points and average them over the views that see them.

    Args:
        feature_maps: (B, V, C, h, w) feature maps, each covering the whole H x W image of its view
            (see the module docstring for the cell/pixel alignment); any floating dtype.
        depth: (B, V, H, W) z-depth images, m, OpenCV camera frame of each view; pixels that are
            0, negative or non-finite are invalid (nothing is visible there).
        K: (B, V, 3, 3) intrinsics of the H x W images, pixels.
        T_world_cam: (B, V, 4, 4) rigid pose of each camera (OpenCV optical frame) in the world, m.
        points: (B, N, 3) scene points, m, world frame; finite.
        depth_tolerance_m: a point is visible in a view when ``|z_point - depth| <= tolerance`` at
            its nearest pixel, m (> 0).

    Returns:
        features: (B, N, C) mean feature over the views that see the point, in ``feature_maps``'
            dtype; exactly 0 where no view sees it. Differentiable w.r.t. ``feature_maps`` only.
        visible: (B, N, V) bool, True where view v sees the point.
    """
    _check_lift_inputs(feature_maps, depth, K, T_world_cam, points)
    depth_tolerance_m = require_positive("depth_tolerance_m", depth_tolerance_m)
    B, V, C, h, w = feature_maps.shape
    height, width = depth.shape[-2:]
    N = points.shape[1]
    with torch.no_grad():
        uv, visible = _project_and_test(depth, K, T_world_cam, points, depth_tolerance_m)
        # grid_sample's normalized coordinates: -1 / +1 are the outer edges of the map (and image).
        scale = torch.tensor([2.0 / width, 2.0 / height], dtype=uv.dtype, device=uv.device)
        grid = ((uv + 0.5) * scale - 1.0).to(feature_maps.dtype)
    sampled = F.grid_sample(feature_maps.reshape(B * V, C, h, w), grid.reshape(B * V, N, 1, 2),
                            mode="bilinear", padding_mode="border", align_corners=False)
    sampled = sampled.reshape(B, V, C, N).permute(0, 3, 1, 2)  # (B, N, V, C)
    weight = visible.permute(0, 2, 1)  # (B, N, V)
    total = torch.where(weight[..., None], sampled, 0.0).sum(2)
    count = weight.sum(-1, keepdim=True).clamp_min(1).to(total.dtype)
    return total / count, weight


class ImageFeatureLifter(nn.Module):
    """An image encoder followed by :func:`lift_features`.

    Args:
        encoder: module mapping images (B*V, 3, H, W) in [0, 1] to feature maps (B*V, C, h, w) that
            cover the whole image (any h, w >= 1).
        depth_tolerance_m: visibility tolerance of :func:`lift_features`, m.
    """

    def __init__(self, encoder: nn.Module, depth_tolerance_m: float = 0.02) -> None:
        super().__init__()
        if not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder: expected a torch.nn.Module, got {type(encoder).__name__}")
        self.encoder = encoder
        self.depth_tolerance_m = require_positive("depth_tolerance_m", depth_tolerance_m)

    def forward(self, rgb: torch.Tensor, depth: torch.Tensor, K: torch.Tensor, T_world_cam: torch.Tensor,
                points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode the views and lift their features onto the points.

        Args:
            rgb: (B, V, 3, H, W) colour images, float in [0, 1].
            depth: (B, V, H, W) z-depth, m (as in :func:`lift_features`).
            K: (B, V, 3, 3) intrinsics, pixels.
            T_world_cam: (B, V, 4, 4) camera poses in the world, m.
            points: (B, N, 3) scene points, m, world frame.

        Returns:
            features: (B, N, C) lifted features (zeros where no view sees the point).
            visible: (B, N, V) bool visibility.
        """
        require_shape("rgb", require_floating("rgb", rgb), (None, None, 3, None, None), max_leading=0)
        B, V, _, H, W = rgb.shape
        require_shape("depth", depth, (B, V, H, W), max_leading=0)
        lo_hi = torch.stack([rgb.amin(), rgb.amax()]).tolist() if rgb.numel() else [0.0, 1.0]
        if not (0.0 <= lo_hi[0] and lo_hi[1] <= 1.0):  # also rejects NaN
            raise ValueError(f"rgb: expected colours in [0, 1], got values in [{lo_hi[0]}, {lo_hi[1]}]")
        maps = self.encoder(rgb.reshape(B * V, 3, H, W))
        if not isinstance(maps, torch.Tensor) or maps.dim() != 4 or maps.shape[0] != B * V:
            got = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
            raise ValueError(f"encoder: expected feature maps of shape ({B * V}, C, h, w), got {got}")
        return lift_features(maps.reshape(B, V, *maps.shape[1:]), depth, K, T_world_cam, points,
                             self.depth_tolerance_m)
