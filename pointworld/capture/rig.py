"""A camera rig: several cameras read together into one :class:`SceneCapture`, with extrinsics.

The rig owns opening and closing its cameras (context manager) and applies the extrinsic calibration
file, so that every frame it returns carries ``T_world_cam`` from the calibration of its serial.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from pointworld.assets import demo_capture_path
from pointworld.capture.calibration import extrinsics_for, load_calibration
from pointworld.capture.camera import Camera, ReplayCamera, capture_directories, capture_scene
from pointworld.capture.frame import SceneCapture
from pointworld.capture.storage import load_capture


class CameraRig:
    """Cameras that are connected, read and closed together.

    Args:
        cameras: the cameras, serials unique.
    """

    def __init__(self, cameras: Sequence[Camera]) -> None:
        cameras = list(cameras)
        if not cameras:
            raise ValueError("cameras: expected at least one camera, got none")
        serials = [c.serial for c in cameras]
        if len(set(serials)) != len(serials):
            raise ValueError(f"cameras: expected unique serials, got {serials}")
        self.cameras = cameras

    @property
    def serials(self) -> list[str]:
        """Serials of the rig's cameras, in order."""
        return [c.serial for c in self.cameras]

    def __enter__(self) -> CameraRig:
        opened: list[Camera] = []
        try:
            for camera in self.cameras:
                camera.connect()
                opened.append(camera)
        except BaseException:
            for camera in opened:
                camera.close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close every camera, even if closing one of them fails (the first failure is re-raised)."""
        failure: BaseException | None = None
        for camera in self.cameras:
            try:
                camera.close()
            except Exception as exc:  # keep closing the others; report the first failure
                failure = failure or exc
        if failure is not None:
            raise failure

    def read(self) -> SceneCapture:
        """Read one frame from every camera (they must be connected: use the rig as a context manager)."""
        return capture_scene(self.cameras)


def replay_rig(path: str | Path | None = None, serials: Sequence[str] | None = None,
               calibration_file: str | Path | None = None) -> CameraRig:
    """A rig of :class:`ReplayCamera` over a saved capture (or a recording directory of captures).

    Args:
        path: capture directory; ``None`` plays the demo capture shipped with the package.
        serials: cameras to use; ``None`` uses every camera of the capture. An unknown serial raises
            ``KeyError`` listing the serials the capture has.
        calibration_file: if given, every camera's ``T_world_cam`` comes from this calibration file
            instead of the pose stored in the capture.
    """
    path = Path(path) if path is not None else demo_capture_path()
    captures = capture_directories(path)
    # A single capture is decoded once and shared; a recording is read capture by capture.
    source: SceneCapture | Path = load_capture(captures[0]) if len(captures) == 1 else path
    if serials is None:
        first = source if isinstance(source, SceneCapture) else load_capture(captures[0])
        serials = first.serials
    serials = [str(s) for s in serials]
    poses = _extrinsics(calibration_file, serials)
    return CameraRig([ReplayCamera(source, s, T_world_cam=poses[s]) for s in serials])


def realsense_rig(serials: Sequence[str] = (), calibration_file: str | Path | None = None,
                  **camera_options: object) -> CameraRig:
    """A rig of Intel RealSense cameras (needs the ``capture`` extra).

    Args:
        serials: serial numbers to open; empty opens every connected camera. With none connected (or a
            serial missing) :class:`pointworld.errors.CameraNotFoundError` names what was looked for.
        calibration_file: extrinsics per serial; without it the cameras report identity poses.
        camera_options: forwarded to :class:`pointworld.capture.realsense.RealSenseCamera`
            (width, height, fps, warmup_frames, filters, timeout_s, ...).
    """
    from pointworld.capture.realsense import RealSenseCamera, list_realsense_serials
    from pointworld.errors import CameraNotFoundError

    if not serials:
        serials = list_realsense_serials()
        if not serials:
            raise CameraNotFoundError("serials: looked for any connected Intel RealSense camera "
                                      "(none requested by serial), found none connected")
    serials = [str(s) for s in serials]  # YAML reads unquoted serials as integers
    poses = _extrinsics(calibration_file, serials)
    return CameraRig([RealSenseCamera(serial=s, T_world_cam=poses[s], **camera_options) for s in serials])


def _extrinsics(calibration_file: str | Path | None,
                serials: Sequence[str]) -> dict[str, np.ndarray | None]:
    """T_world_cam (4, 4) per serial from the calibration file (read once), or None without one."""
    if calibration_file is None:
        return {s: None for s in serials}
    calibrations = load_calibration(calibration_file)
    return {s: extrinsics_for(calibrations, s) for s in serials}

