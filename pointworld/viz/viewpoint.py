"""Where a static figure looks from: an orbit viewpoint around the cloud and its pinhole camera.

A :class:`ViewpointConfig` places a virtual camera on a sphere around a target point (azimuth in the
world xy-plane from +x, elevation above it), looking at the target with world +z up in the image. The
camera follows the project's conventions: OpenCV optical frame, ``T_world_cam`` with
``p_world = T_world_cam @ p_cam``, pixel centres at integer ``uv_px``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pointworld.capture.synthetic import look_at
from pointworld.errors import EmptyCloudError
from pointworld.geometry.camera import intrinsics_from_fov, project_points
from pointworld.geometry.checks import (require_finite, require_floating, require_int, require_positive,
                                        require_shape)
from pointworld.geometry.se3 import invert_transform, transform_points

#: Largest |elevation| accepted, deg: at 90 the view direction is parallel to the world up axis.
MAX_ELEVATION_DEG = 89.0


#: Fraction of the half field of view an automatically fitted cloud may fill.
FIT_FRACTION = 0.9


def _finite(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class ViewpointConfig:
    """A virtual camera orbiting a target point (validated on construction).

    Attributes:
        azimuth_deg: direction of the camera from the target in the world xy-plane, deg from +x toward +y
            (180 = behind a robot at the origin that faces +x).
        elevation_deg: angle of the camera above the target's horizontal plane, deg, |.| <= 89.
        target_m: (3,) point looked at, m, world frame; None = centre of the cloud's bounding box.
        distance_m: camera distance from the target, m (> 0); None = the whole cloud fits the image.
        fov_deg: vertical field of view, deg, in (0, 170).
        width_px, height_px: image size, px (>= 16 each).
        point_size_px: drawn width of one point, px (> 0).
    """

    azimuth_deg: float = 210.0
    elevation_deg: float = 35.0
    target_m: tuple[float, float, float] | None = None
    distance_m: float | None = None
    fov_deg: float = 40.0
    width_px: int = 800
    height_px: int = 600
    point_size_px: float = 4.0

    def __post_init__(self) -> None:
        _finite("azimuth_deg", self.azimuth_deg)
        if abs(_finite("elevation_deg", self.elevation_deg)) > MAX_ELEVATION_DEG:
            raise ValueError(f"elevation_deg: expected a value in [-{MAX_ELEVATION_DEG}, {MAX_ELEVATION_DEG}], "
                             f"got {self.elevation_deg!r}")
        if self.target_m is not None:
            t = self.target_m
            if isinstance(t, (str, bytes)) or not hasattr(t, "__len__") or len(t) != 3:
                raise ValueError(f"target_m: expected three numbers (x, y, z) in m or None, got {t!r}")
            object.__setattr__(self, "target_m", tuple(_finite("target_m", v) for v in t))
        if self.distance_m is not None:
            require_positive("distance_m", self.distance_m)
        if not 0.0 < _finite("fov_deg", self.fov_deg) < 170.0:
            raise ValueError(f"fov_deg: expected a value in (0, 170), got {self.fov_deg!r}")
        require_int("width_px", self.width_px, 16)
        require_int("height_px", self.height_px, 16)
        require_positive("point_size_px", self.point_size_px)


def check_cloud(name: str, points: object) -> torch.Tensor:
    """Return ``points`` if it is a finite floating (N, 3) tensor with N >= 1, else raise."""
    p = require_shape(name, require_floating(name, points), (None, 3), max_leading=0)
    if p.shape[0] == 0:
        raise EmptyCloudError(f"{name}: expected at least one point, got an empty (0, 3) cloud")
    return require_finite(name, p)


def _fit_distance(points: torch.Tensor, target: torch.Tensor, R_world_cam: torch.Tensor, fov_x: float,
                  fov_y: float) -> float:
    """Smallest camera distance (m) along the fixed view direction at which every point lies inside
    :data:`FIT_FRACTION` of both fields of view: a point at camera-axis offsets (a, b, c) from the target
    needs ``d + c >= |a| / tan(fov_x / 2)`` and ``d + c >= |b| / tan(fov_y / 2)``."""
    abc = (points - target) @ R_world_cam  # rows: offsets along the camera's x, y, z axes
    need_x = abc[:, 0].abs() / (FIT_FRACTION * math.tan(fov_x / 2))
    need_y = abc[:, 1].abs() / (FIT_FRACTION * math.tan(fov_y / 2))
    need = torch.maximum(need_x, need_y) - abc[:, 2]
    return max(float(need.max()), float((-abc[:, 2]).max()) + 0.05, 0.05)


def view_camera(points: torch.Tensor, view: ViewpointConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The pinhole camera of ``view`` for the cloud ``points`` (used for an automatic target/distance).

    Args:
        points: (N, 3) cloud, m, world frame (N >= 1, finite).
        view: the viewpoint.

    Returns:
        K: (3, 3) intrinsics, px, in ``points``' dtype and device.
        T_world_cam: (4, 4) camera pose (OpenCV optical frame), m, world frame.
    """
    p = check_cloud("points", points)
    if not isinstance(view, ViewpointConfig):
        raise TypeError(f"view: expected a ViewpointConfig, got {type(view).__name__}")
    lo, hi = p.amin(0), p.amax(0)
    target = (lo + hi) / 2 if view.target_m is None else p.new_tensor(view.target_m)
    fov_y = math.radians(view.fov_deg)
    fov_x = 2 * math.atan(math.tan(fov_y / 2) * view.width_px / view.height_px)
    az, el = math.radians(view.azimuth_deg), math.radians(view.elevation_deg)
    direction = p.new_tensor([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    T_world_cam = torch.as_tensor(look_at((target + direction).tolist(), target.tolist()), dtype=p.dtype,
                                  device=p.device)
    distance = view.distance_m if view.distance_m is not None else _fit_distance(
        p, target, T_world_cam[:3, :3], fov_x, fov_y)
    T_world_cam[:3, 3] = target + distance * direction
    K = intrinsics_from_fov(view.width_px, view.height_px, fov_y, dtype=p.dtype, device=p.device)
    return K, T_world_cam


def project_view(points: torch.Tensor, K: torch.Tensor, T_world_cam: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixels and depths of world points seen by a camera.

    Args:
        points: (..., N, 3) points, m, world frame.
        K: (3, 3) intrinsics, px.
        T_world_cam: (4, 4) camera pose, m, world frame (OpenCV optical camera frame).

    Returns:
        uv_px: (..., N, 2) pixel coordinates (column, row), px; NaN for points at or behind the camera.
        depth_m: (..., N) z of each point in the camera frame, m.
    """
    p = require_shape("points", require_floating("points", points), (None, 3))
    T = require_shape("T_world_cam", require_floating("T_world_cam", T_world_cam), (4, 4), max_leading=0)
    points_cam = transform_points(invert_transform(T.to(p.dtype)), p)
    return project_points(points_cam, K)
