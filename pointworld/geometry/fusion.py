"""Multi-view RGB-D fusion into one cropped, voxelized world-frame point cloud.

Pipeline (all batched torch, dtype/device from the depth input):

1. :func:`lift_views`: backproject every view's depth, move the points to the world frame, keep
   pixels with valid depth inside the workspace box (boolean compaction, so later stages only see
   real points), remembering which view and pixel each point came from.
2. :func:`fuse_lifted`: one voxel grid over the points of all views (overlapping views do not double
   points; the grid is anchored at ``workspace_min_m``, so it is fixed in the world frame), optional
   statistical outlier removal, normals estimated on the fused cloud and oriented toward the centre
   of the camera that saw each point, optional seeded random subset of ``max_points``.

:func:`fuse_views` chains both for views that share one image size; capture-level fusion of views
with different sizes lives in :mod:`pointworld.capture.cloud`.

The kept points are measured points (one per voxel), not voxel centroids.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pointworld.conventions import DEFAULT_VOXEL_SIZE_M
from pointworld.errors import EmptyCloudError
from pointworld.geometry.camera import depth_to_world_points
from pointworld.geometry.checks import require_dtype, require_floating, require_int, require_shape
from pointworld.geometry.normals import (
    estimate_normals,
    outliers_and_normals,
    statistical_outlier_mask,
)
from pointworld.geometry.pointcloud import crop_box_mask, voxel_downsample_indices
from pointworld.geometry.se3 import check_rigid_transform

_VOXEL_MODES = ("first", "random")


def _box(name: str, value: object) -> tuple[float, float, float]:
    try:
        box = tuple(float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        box = ()
    if len(box) != 3 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"{name}: expected 3 finite numbers (x, y, z) in metres, got {value!r}")
    return box  # type: ignore[return-value]


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


@dataclass(frozen=True)
class FusionConfig:
    """Settings of :func:`fuse_views` / :func:`pointworld.capture.cloud.fuse_capture`.

    The default workspace is a table top in front of the robot base (world = base frame, table
    surface at z = 0): x 0.2..1.0 m, y -0.5..0.5 m, z -0.05..0.6 m.

    Attributes:
        workspace_min_m, workspace_max_m: corners of the axis-aligned crop box, world frame, m.
        voxel_size_m: edge of the cubic voxels, m; the grid is anchored at ``workspace_min_m``.
        min_depth_m, max_depth_m: depth range kept from each view, m (``min < depth <= max``; max may be inf).
        voxel_mode: ``"first"`` (first point of each voxel in view-major, raster order) or
            ``"random"`` (a seeded random point of each voxel).
        seed: seed of the random voxel choice and of the ``max_points`` subset.
        normals_k: neighbours used for normal estimation (>= 3); 0 disables normals (zeros returned).
        outlier_k, outlier_std_ratio: statistical outlier removal (Open3D's rule); off if
            ``outlier_k == 0`` or ``outlier_std_ratio == 0``, skipped for clouds of <= k points.
        max_points: keep at most this many points (seeded random subset) after voxelization.
    """

    workspace_min_m: tuple[float, float, float] = (0.2, -0.5, -0.05)
    workspace_max_m: tuple[float, float, float] = (1.0, 0.5, 0.6)
    voxel_size_m: float = DEFAULT_VOXEL_SIZE_M
    min_depth_m: float = 0.1
    max_depth_m: float = 3.0
    voxel_mode: str = "first"
    seed: int = 0
    normals_k: int = 16
    outlier_k: int = 20
    outlier_std_ratio: float = 2.0
    max_points: int | None = None

    def __post_init__(self) -> None:
        lo, hi = _box("workspace_min_m", self.workspace_min_m), _box("workspace_max_m", self.workspace_max_m)
        if not all(a < b for a, b in zip(lo, hi)):
            raise ValueError(f"workspace_max_m: expected every coordinate > workspace_min_m {lo}, got {hi}")
        object.__setattr__(self, "workspace_min_m", lo)
        object.__setattr__(self, "workspace_max_m", hi)
        if not _is_number(self.voxel_size_m) or not 0 < self.voxel_size_m < math.inf:
            raise ValueError(f"voxel_size_m: expected a finite number > 0, got {self.voxel_size_m!r}")
        if not _is_number(self.min_depth_m) or not 0 <= self.min_depth_m < math.inf:
            raise ValueError(f"min_depth_m: expected a finite number >= 0, got {self.min_depth_m!r}")
        if not _is_number(self.max_depth_m) or not self.max_depth_m > self.min_depth_m:
            raise ValueError(f"max_depth_m: expected a number > min_depth_m={self.min_depth_m} "
                             f"(inf allowed), got {self.max_depth_m!r}")
        if self.voxel_mode not in _VOXEL_MODES:
            raise ValueError(f"voxel_mode: expected one of {_VOXEL_MODES}, got {self.voxel_mode!r}")
        for name in ("seed", "normals_k", "outlier_k"):
            require_int(name, getattr(self, name), 0)
        if 0 < self.normals_k < 3:
            raise ValueError(f"normals_k: expected 0 (off) or >= 3 (a plane needs 3 points), "
                             f"got {self.normals_k}")
        if not _is_number(self.outlier_std_ratio) or not 0 <= self.outlier_std_ratio < math.inf:
            raise ValueError(f"outlier_std_ratio: expected a finite number >= 0 (0 = no outlier "
                             f"removal), got {self.outlier_std_ratio!r}")
        if self.max_points is not None and (isinstance(self.max_points, bool)
                                            or not isinstance(self.max_points, int) or self.max_points < 1):
            raise ValueError(f"max_points: expected None or an int >= 1, got {self.max_points!r}")


@dataclass(frozen=True)
class LiftedPoints:
    """Valid, workspace-cropped points of several views before voxelization.

    Attributes:
        points_world: (N, 3) positions, m, world frame.
        rgb: (N, 3) uint8 color of each point's pixel.
        view_index: (N,) int64 view each point came from.
        pixel_index: (N,) int64 flat index ``v * W + u`` into that view's image.
        num_valid_depth: number of pixels with depth in range before the workspace crop.
    """

    points_world: torch.Tensor
    rgb: torch.Tensor
    view_index: torch.Tensor
    pixel_index: torch.Tensor
    num_valid_depth: int


@dataclass(frozen=True)
class FusedCloud:
    """One fused, voxelized scene cloud.

    Attributes:
        points_world: (N, 3) positions, m, world frame.
        colors: (N, 3) RGB in [0, 1], same dtype as ``points_world``.
        normals: (N, 3) unit normals, world frame, facing the camera that saw the point
            (zeros if normals are disabled).
        view_index: (N,) int64 view each point came from.
        pixel_index: (N,) int64 flat index ``v * W + u`` into that view's image.
    """

    points_world: torch.Tensor
    colors: torch.Tensor
    normals: torch.Tensor
    view_index: torch.Tensor
    pixel_index: torch.Tensor

    @property
    def num_points(self) -> int:
        """Number of points N."""
        return int(self.points_world.shape[0])


def _check_views(depth_m: torch.Tensor, rgb: torch.Tensor, K: torch.Tensor,
                 T_world_cam: torch.Tensor, dist_coeffs: torch.Tensor | None) -> None:
    require_floating("depth_m", require_shape("depth_m", depth_m, (None, None, None), max_leading=0))
    V, H, W = depth_m.shape
    require_dtype("rgb", require_shape("rgb", rgb, (V, H, W, 3), max_leading=0), torch.uint8)
    require_floating("K", require_shape("K", K, (V, 3, 3), max_leading=0))
    check_rigid_transform("T_world_cam", require_shape("T_world_cam", T_world_cam, (V, 4, 4), max_leading=0))
    if dist_coeffs is not None:
        require_floating("dist_coeffs", require_shape("dist_coeffs", dist_coeffs, (V, 5), max_leading=0))


def lift_views(depth_m: torch.Tensor, rgb: torch.Tensor, K: torch.Tensor, T_world_cam: torch.Tensor,
               config: FusionConfig, dist_coeffs: torch.Tensor | None = None) -> LiftedPoints:
    """Backproject V same-size views to the world frame and keep valid points inside the workspace.

    Args:
        depth_m: (V, H, W) z-depth, m (NaN, inf, out-of-range values are invalid).
        rgb: (V, H, W, 3) uint8 color aligned with depth.
        K: (V, 3, 3) pinhole intrinsics, pixels (rays computed in the higher of K's and depth's
            precision).
        T_world_cam: (V, 4, 4) rigid camera poses, OpenCV optical frame in the world frame (cast to
            depth's dtype/device).
        config: workspace box and depth range.
        dist_coeffs: (V, 5) OpenCV Brown-Conrady coefficients, or None for ideal pinholes.

    Returns:
        The kept points (view-major, raster order) with colors and their view/pixel indices.
    """
    _check_views(depth_m, rgb, K, T_world_cam, dist_coeffs)
    V, H, W = depth_m.shape
    # All-zero coefficients are an ideal pinhole: skip the (iterative) undistortion.
    dist = None if dist_coeffs is None or not bool(dist_coeffs.any()) else dist_coeffs
    points_world, valid = depth_to_world_points(depth_m, K, T_world_cam, dist, min_depth_m=config.min_depth_m,
                                                max_depth_m=config.max_depth_m)
    points_world = points_world.reshape(-1, 3)
    lo = torch.tensor(config.workspace_min_m, dtype=depth_m.dtype, device=depth_m.device)
    hi = torch.tensor(config.workspace_max_m, dtype=depth_m.dtype, device=depth_m.device)
    keep = valid.reshape(-1) & crop_box_mask(points_world, lo, hi)
    flat = keep.nonzero().squeeze(1)
    # Points are in view-major order: view ids by run lengths (cheaper than flat // (H * W)).
    view = torch.repeat_interleave(torch.arange(V, device=flat.device), keep.view(V, -1).sum(1))
    # index_select: on CPU several times faster than advanced indexing for large index sets.
    return LiftedPoints(points_world.index_select(0, flat), rgb.reshape(-1, 3).index_select(0, flat),
                        view, flat - view * (H * W), int(valid.sum()))


def _subset(n: int, max_points: int | None, seed: int, device: torch.device) -> torch.Tensor | None:
    if max_points is None or n <= max_points:
        return None
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=gen)[:max_points].sort().values.to(device)


def _clean_and_orient(points: torch.Tensor, centers: torch.Tensor,
                      config: FusionConfig) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Outlier removal and normals of voxelized points (N, 3), each facing its camera centre (N, 3).

    Returns the (N,) inlier mask (None if removal is off or the cloud has <= outlier_k points) and the
    normals of the kept points. With both steps on, one shared kNN search serves them
    (:func:`outliers_and_normals`: the same result as the two separate steps).
    """
    clean = config.outlier_k > 0 and config.outlier_std_ratio > 0 and points.shape[0] > config.outlier_k
    if clean and config.normals_k > 0:
        inlier, normals = outliers_and_normals(points[None], outlier_k=config.outlier_k,
                                               std_ratio=config.outlier_std_ratio,
                                               normals_k=config.normals_k, viewpoint=centers[None])
        return inlier[0], normals[0][inlier[0]]
    inlier = None
    if clean:
        inlier = statistical_outlier_mask(points[None], k=config.outlier_k,
                                          std_ratio=config.outlier_std_ratio)[0]
        points, centers = points[inlier], centers[inlier]
    if config.normals_k == 0:
        return inlier, torch.zeros_like(points)
    return inlier, estimate_normals(points[None], k=config.normals_k, viewpoint=centers[None])[0]


def fuse_lifted(lifted: LiftedPoints, camera_centers_world: torch.Tensor,
                config: FusionConfig) -> FusedCloud:
    """Voxelize, clean and annotate lifted points of all views with one grid.

    Args:
        lifted: points of all views (see :func:`lift_views`); ``view_index`` indexes
            ``camera_centers_world``.
        camera_centers_world: (V, 3) camera centres, m, world frame (normals face them).
        config: voxel size/mode, outlier removal, normals, max_points.

    Returns:
        The fused cloud. Raises :class:`EmptyCloudError` if no point is inside the workspace.
    """
    pts = lifted.points_world
    require_floating("camera_centers_world",
                     require_shape("camera_centers_world", camera_centers_world, (None, 3), max_leading=0))
    if pts.shape[0] == 0:
        raise EmptyCloudError(
            f"points_world: no valid depth pixel falls inside the workspace box "
            f"workspace_min_m={config.workspace_min_m}, workspace_max_m={config.workspace_max_m} "
            f"({lifted.num_valid_depth} pixels had depth in [{config.min_depth_m}, "
            f"{config.max_depth_m}] m); check the workspace and the camera poses")
    origin = torch.tensor(config.workspace_min_m, dtype=pts.dtype, device=pts.device)
    sel = voxel_downsample_indices(pts, config.voxel_size_m, mode=config.voxel_mode,
                                   seed=config.seed, origin=origin)
    points, view = pts.index_select(0, sel), lifted.view_index.index_select(0, sel)
    inlier, normals = _clean_and_orient(points, camera_centers_world.to(points)[view], config)
    if inlier is not None:
        sel, points, view = sel[inlier], points[inlier], view[inlier]
    sub = _subset(sel.numel(), config.max_points, config.seed, points.device)
    if sub is not None:
        sel, points, view, normals = sel[sub], points[sub], view[sub], normals[sub]
    colors = lifted.rgb.index_select(0, sel).to(points.dtype) / 255.0
    return FusedCloud(points, colors, normals, view, lifted.pixel_index.index_select(0, sel))


def fuse_views(depth_m: torch.Tensor, rgb: torch.Tensor, K: torch.Tensor, T_world_cam: torch.Tensor,
               config: FusionConfig, dist_coeffs: torch.Tensor | None = None) -> FusedCloud:
    """Fuse V calibrated RGB-D views of one image size into one world-frame cloud.

    Args:
        depth_m: (V, H, W) z-depth, m; invalid pixels are NaN, inf, <= 0 or out of range.
        rgb: (V, H, W, 3) uint8 color aligned with depth.
        K: (V, 3, 3) pinhole intrinsics, pixels.
        T_world_cam: (V, 4, 4) camera poses, OpenCV optical frame in the world frame.
        config: see :class:`FusionConfig`.
        dist_coeffs: (V, 5) OpenCV distortion coefficients, or None.

    Returns:
        The fused cloud in depth's dtype/device; ``view_index`` indexes the V views.
    """
    lifted = lift_views(depth_m, rgb, K, T_world_cam, config, dist_coeffs)
    return fuse_lifted(lifted, T_world_cam[:, :3, 3], config)
