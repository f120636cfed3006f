"""In-memory RGB-D data: one camera frame (:class:`RGBDFrame`) and a multi-view :class:`SceneCapture`.

Arrays are numpy here (this is the I/O layer); :meth:`SceneCapture.stacked` gives torch tensors for
the geometry layer. Depth is always float32 metres once it is in an ``RGBDFrame``: raw sensor units are
converted by the camera drivers and the on-disk format, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pointworld.geometry.camera import check_intrinsics
from pointworld.geometry.se3 import check_rigid_transform


def _as_float64(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.asarray(value)
    if arr.shape != shape or not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name}: expected a numeric array of shape {shape}, "
                         f"got shape {arr.shape} and dtype {arr.dtype}")
    return arr.astype(np.float64)


@dataclass(frozen=True)
class RGBDFrame:
    """One aligned color + depth frame from a calibrated camera.

    Attributes:
        rgb: (H, W, 3) uint8 color image, RGB order.
        depth: (H, W) float32 depth along the optical axis (z in the cam frame), metres. NaN, inf,
            0 and negative values mark missing measurements; they are kept and masked downstream.
        K: (3, 3) float64 pinhole intrinsics of the (depth-aligned) color image, pixels.
        T_world_cam: (4, 4) float64 rigid pose of the OpenCV camera frame in the world frame.
        serial: camera serial number (the key of its calibration).
        timestamp_s: capture time, seconds (sensor or host clock).
        dist_coeffs: (5,) float64 Brown-Conrady coefficients (k1, k2, p1, p2, k3), OpenCV order;
            zeros for an ideal pinhole.
    """

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray
    serial: str
    timestamp_s: float = 0.0
    dist_coeffs: np.ndarray = field(default_factory=lambda: np.zeros(5))

    def __post_init__(self) -> None:
        rgb, depth = np.asarray(self.rgb), np.asarray(self.depth)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"rgb: expected a uint8 array of shape (H, W, 3), "
                             f"got shape {rgb.shape} and dtype {rgb.dtype}")
        if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
            raise ValueError(f"depth: expected a float array of shape (H, W) in metres (convert raw "
                             f"sensor units first), got shape {depth.shape} and dtype {depth.dtype}")
        if depth.shape != rgb.shape[:2]:
            raise ValueError(f"depth: expected the color image size {rgb.shape[:2]} (H, W), "
                             f"got {depth.shape}; align depth to color first")
        K = _as_float64("K", self.K, (3, 3))
        T = _as_float64("T_world_cam", self.T_world_cam, (4, 4))
        dist = _as_float64("dist_coeffs", self.dist_coeffs, (5,))
        check_intrinsics("K", torch.from_numpy(K))
        check_rigid_transform("T_world_cam", torch.from_numpy(T))
        if not np.all(np.isfinite(dist)):
            raise ValueError(f"dist_coeffs: expected finite values, got {dist.tolist()}")
        if not isinstance(self.serial, str) or not self.serial:
            raise ValueError(f"serial: expected a non-empty string, got {self.serial!r}")
        if (isinstance(self.timestamp_s, bool) or not isinstance(self.timestamp_s, (int, float, np.number))
                or not np.isfinite(self.timestamp_s)):
            raise ValueError(f"timestamp_s: expected a finite number of seconds, got {self.timestamp_s!r}")
        for name, value in (("rgb", rgb), ("depth", depth.astype(np.float32, copy=False)),
                            ("K", K), ("T_world_cam", T), ("dist_coeffs", dist),
                            ("timestamp_s", float(self.timestamp_s))):
            object.__setattr__(self, name, value)

    @property
    def height(self) -> int:
        """Image height H, pixels."""
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        """Image width W, pixels."""
        return int(self.rgb.shape[1])

    def with_pose(self, T_world_cam: np.ndarray) -> RGBDFrame:
        """Return a copy of this frame with another extrinsic calibration (4, 4)."""
        return RGBDFrame(self.rgb, self.depth, self.K, T_world_cam, self.serial, self.timestamp_s,
                         self.dist_coeffs)


@dataclass(frozen=True)
class SceneCapture:
    """V frames of one scene taken at (about) the same time by calibrated cameras.

    Attributes:
        frames: the V frames, serials unique.
    """

    frames: tuple[RGBDFrame, ...]

    def __post_init__(self) -> None:
        frames = tuple(self.frames)
        if not frames:
            raise ValueError("frames: expected at least one RGBDFrame, got none")
        for i, f in enumerate(frames):
            if not isinstance(f, RGBDFrame):
                raise TypeError(f"frames[{i}]: expected an RGBDFrame, got {type(f).__name__}")
        serials = [f.serial for f in frames]
        if len(set(serials)) != len(serials):
            raise ValueError(f"frames: expected unique camera serials, got {serials}")
        object.__setattr__(self, "frames", frames)

    @property
    def serials(self) -> list[str]:
        """Camera serials in frame order."""
        return [f.serial for f in self.frames]

    def frame(self, serial: str) -> RGBDFrame:
        """Return the frame of camera ``serial``; ``KeyError`` naming the known serials otherwise."""
        for f in self.frames:
            if f.serial == serial:
                return f
        raise KeyError(f"serial: no frame from camera {serial!r}; this capture has {self.serials}")

    def stacked(self, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
        """Stack all views as tensors (requires one image size for all views).

        Returns:
            dict with ``rgb`` (V, H, W, 3) uint8, ``depth`` (V, H, W) metres, ``K`` (V, 3, 3),
            ``T_world_cam`` (V, 4, 4), ``dist_coeffs`` (V, 5), floats in ``dtype``.
        """
        sizes = {(f.height, f.width) for f in self.frames}
        if len(sizes) != 1:
            raise ValueError(f"frames: stacking needs one image size for all views, got {sorted(sizes)}; "
                             "group views by size first")
        return {
            "rgb": torch.from_numpy(np.stack([f.rgb for f in self.frames])),
            "depth": torch.from_numpy(np.stack([f.depth for f in self.frames])).to(dtype),
            "K": torch.from_numpy(np.stack([f.K for f in self.frames])).to(dtype),
            "T_world_cam": torch.from_numpy(np.stack([f.T_world_cam for f in self.frames])).to(dtype),
            "dist_coeffs": torch.from_numpy(np.stack([f.dist_coeffs for f in self.frames])).to(dtype),
        }
