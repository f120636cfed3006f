"""From a calibrated RGB-D capture to the planner's scene input (B = 1).

One observation = every view of a :class:`~pointworld.capture.frame.SceneCapture` fused into one
world-frame cloud (:func:`pointworld.capture.cloud.fuse_capture`: workspace crop, 1.5 cm voxels,
outlier removal, normals facing the cameras), capped at ``max_points`` (seeded random subset), then
packed as a :class:`~pointworld.model.inputs.SceneInput` with colors in [0, 1] and unit normals.
The fused cloud is returned as well: its ``view_index`` / ``pixel_index`` tie every scene point to the
pixel it came from (the simulator oracle and the closed loop use them).

A capture whose every camera pose is exactly the identity is what an uncalibrated rig reports (no
extrinsics were ever written); planning in such a "world" frame would be meaningless, so it is refused
with a :class:`~pointworld.errors.CalibrationError` instead of producing a cloud in camera coordinates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from pointworld.capture.cloud import fuse_capture
from pointworld.capture.frame import SceneCapture
from pointworld.errors import CalibrationError, EmptyCloudError
from pointworld.geometry.checks import require_int
from pointworld.geometry.fusion import FusedCloud, FusionConfig
from pointworld.model.inputs import SceneInput


@dataclass(frozen=True)
class ObservationConfig:
    """Settings of :func:`observe_scene`.

    Attributes:
        fusion: workspace box (world frame, m), voxel size (1.5 cm by default), normal estimation and
            outlier removal of the fused cloud.
        max_points: keep at most this many scene points N (seeded random subset, seed
            ``fusion.seed``); a smaller ``fusion.max_points`` wins.
    """

    fusion: FusionConfig = field(default_factory=FusionConfig)
    max_points: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.fusion, FusionConfig):
            raise TypeError(f"fusion: expected a FusionConfig, got {type(self.fusion).__name__}")
        require_int("max_points", self.max_points, 1)

    def effective_fusion(self) -> FusionConfig:
        """The fusion settings with ``max_points`` applied (the smaller of the two caps)."""
        cap = self.max_points if self.fusion.max_points is None else min(self.max_points,
                                                                          self.fusion.max_points)
        return dataclasses.replace(self.fusion, max_points=cap)


@dataclass(frozen=True)
class Observation:
    """One fused observation of the workspace.

    Attributes:
        scene: B = 1 scene input: points (1, N, 3) m world frame, colors (1, N, 3) in [0, 1],
            normals (1, N, 3) unit world frame (zeros if normals are off), mask (1, N) all True.
        cloud: the same N points as a :class:`FusedCloud` (``points_world`` equals
            ``scene.points[0]``), with the view and flat pixel index of each point.
    """

    scene: SceneInput
    cloud: FusedCloud

    @property
    def num_points(self) -> int:
        """N."""
        return self.cloud.num_points


def check_calibrated(capture: SceneCapture) -> None:
    """Raise :class:`CalibrationError` if every view's ``T_world_cam`` is exactly the identity.

    Args:
        capture: V frames with ``T_world_cam`` (4, 4) float64 each (OpenCV camera in the world).
    """
    if not isinstance(capture, SceneCapture):
        raise TypeError(f"capture: expected a SceneCapture, got {type(capture).__name__}")
    eye = np.eye(4)
    if all(np.array_equal(np.asarray(f.T_world_cam), eye) for f in capture.frames):
        raise CalibrationError(
            f"capture: every camera pose T_world_cam of cameras {capture.serials} is the identity, i.e. "
            "the capture carries no extrinsics (an uncalibrated rig); calibrate the cameras first with "
            "`pointworld calibrate` and capture with that calibration file, so the points land in the "
            "robot's world frame")


def observe_scene(capture: SceneCapture, config: ObservationConfig | None = None, *,
                  dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> Observation:
    """Fuse a calibrated capture into the planner's scene input.

    Args:
        capture: V calibrated RGB-D frames (depth in m, ``T_world_cam`` (4, 4) world <- OpenCV cam).
        config: fusion settings and point cap (defaults: :class:`ObservationConfig`).
        dtype: floating dtype of the returned tensors.
        device: device of ``scene`` (the fused cloud is computed on the CPU and moved with it);
            None = CPU.

    Returns:
        :class:`Observation` with ``scene`` (B = 1, N <= ``max_points`` points, world frame, m) and
        the matching fused ``cloud``.

    Raises:
        CalibrationError: every camera pose is the identity (no extrinsics).
        EmptyCloudError: no point of any view falls inside the workspace box.
        TypeError: ``capture`` or ``config`` of the wrong type.
    """
    config = ObservationConfig() if config is None else config
    if not isinstance(config, ObservationConfig):
        raise TypeError(f"config: expected an ObservationConfig, got {type(config).__name__}")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise TypeError(f"dtype: expected a floating torch.dtype, got {dtype!r}")
    check_calibrated(capture)
    fusion = config.effective_fusion()
    cloud = fuse_capture(capture, fusion, dtype=dtype)
    if cloud.num_points == 0:  # everything was removed as an outlier
        raise EmptyCloudError(f"capture: no point survived fusion inside the workspace box "
                              f"{fusion.workspace_min_m}..{fusion.workspace_max_m} m (world frame)")
    device = torch.device("cpu") if device is None else torch.device(device)
    cloud = FusedCloud(*(t.to(device) for t in (cloud.points_world, cloud.colors, cloud.normals,
                                                 cloud.view_index, cloud.pixel_index)))
    n = cloud.num_points
    scene = SceneInput(points=cloud.points_world[None], colors=cloud.colors[None],
                       normals=cloud.normals[None],
                       mask=torch.ones((1, n), dtype=torch.bool, device=device))
    return Observation(scene=scene, cloud=cloud)
