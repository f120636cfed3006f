"""The camera interface (:class:`Camera`), playback of saved captures (:class:`ReplayCamera`) and
:func:`capture_scene`, which reads one frame from each of several cameras.

A camera is opened with :meth:`Camera.connect` (or ``with camera:``), read with :meth:`Camera.read`
and released with :meth:`Camera.close`. Every frame carries ``T_world_cam``: an explicit extrinsic
calibration passed to the camera overrides whatever pose the source reports.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
import torch

from pointworld.capture.frame import RGBDFrame, SceneCapture
from pointworld.capture.storage import METADATA_FILE, load_capture
from pointworld.errors import CaptureFormatError
from pointworld.geometry.se3 import check_rigid_transform


def _check_pose(T_world_cam: object) -> np.ndarray | None:
    if T_world_cam is None:
        return None
    T = np.asarray(T_world_cam)
    if T.shape != (4, 4) or not np.issubdtype(T.dtype, np.number):
        raise ValueError(f"T_world_cam: expected a (4, 4) numeric array or None, "
                         f"got shape {T.shape} and dtype {T.dtype}")
    T = T.astype(np.float64)
    check_rigid_transform("T_world_cam", torch.from_numpy(T))
    return T


class Camera(ABC):
    """An RGB-D camera that returns :class:`RGBDFrame` objects.

    Subclasses implement :meth:`_connect`, :meth:`_read`, :meth:`_close` and :attr:`serial`; this
    base class tracks the connection state and applies the extrinsic override.

    Args:
        T_world_cam: (4, 4) pose of the camera (OpenCV optical frame) in the world frame, from an
            extrinsic calibration. ``None`` keeps the pose the source reports (a stored pose for
            replay, identity for a live camera without calibration).
    """

    def __init__(self, T_world_cam: np.ndarray | None = None) -> None:
        self._T_world_cam = _check_pose(T_world_cam)
        self._connected = False

    @property
    @abstractmethod
    def serial(self) -> str:
        """Serial number of the camera (the key of its calibration)."""

    @property
    def is_connected(self) -> bool:
        """True between a successful :meth:`connect` and :meth:`close`."""
        return self._connected

    @property
    def T_world_cam(self) -> np.ndarray | None:
        """(4, 4) extrinsic override applied to every frame, or ``None``."""
        return None if self._T_world_cam is None else self._T_world_cam.copy()

    def connect(self) -> Camera:
        """Open the camera (idempotent) and return it."""
        if not self._connected:
            self._connect()
            self._connected = True
        return self

    def read(self) -> RGBDFrame:
        """Return the next frame; ``RuntimeError`` if the camera is not connected."""
        if not self._connected:
            raise RuntimeError(f"camera {self.serial!r}: read() before connect(); call connect() or "
                               "use the camera as a context manager")
        frame = self._read()
        return frame if self._T_world_cam is None else frame.with_pose(self._T_world_cam)

    def close(self) -> None:
        """Release the camera (idempotent)."""
        if self._connected:
            self._connected = False
            self._close()

    def __enter__(self) -> Camera:
        return self.connect()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @abstractmethod
    def _connect(self) -> None:
        """Open the device or source."""

    @abstractmethod
    def _read(self) -> RGBDFrame:
        """Return the next frame with the source's own pose."""

    @abstractmethod
    def _close(self) -> None:
        """Release the device or source."""


def capture_directories(path: Path) -> list[Path]:
    """The captures of ``path``: itself if it is a capture directory, else its sorted non-hidden
    subdirectories holding a capture (a recording). ``CaptureFormatError`` if there are none."""
    if (path / METADATA_FILE).is_file():
        return [path]
    if not path.is_dir():
        raise CaptureFormatError(f"source: {path} is not a directory")
    dirs = sorted(p for p in path.iterdir()
                  if p.is_dir() and not p.name.startswith(".") and (p / METADATA_FILE).is_file())
    if not dirs:
        raise CaptureFormatError(f"source: expected a capture directory (with {METADATA_FILE}) or a "
                                 f"recording directory whose subdirectories are captures, got {path}")
    return dirs


class ReplayCamera(Camera):
    """Plays back the frames of one camera from saved captures.

    Args:
        source: a :class:`SceneCapture` in memory, a capture directory, or a recording directory
            whose subdirectories are captures played in sorted name order.
        serial: the camera to play; ``None`` is allowed when the (first) capture has one camera.
        loop: start over after the last capture; otherwise :meth:`read` raises ``EOFError`` there.
        T_world_cam: (4, 4) extrinsic override; ``None`` keeps the pose stored in each capture.

    Raises:
        KeyError: ``serial`` is not in the (first) capture; the message lists the serials it has.
        ValueError: ``serial`` is ``None`` but the capture has several cameras.
        CaptureFormatError: ``source`` is not a capture or a recording of captures.
    """

    def __init__(self, source: SceneCapture | str | os.PathLike, serial: str | None = None, *,
                 loop: bool = True, T_world_cam: np.ndarray | None = None) -> None:
        super().__init__(T_world_cam)
        if isinstance(source, SceneCapture):
            self._dirs: list[Path] = []
            first = source
        elif isinstance(source, (str, os.PathLike)):
            self._dirs = capture_directories(Path(source))
            first = load_capture(self._dirs[0])
        else:
            raise TypeError(f"source: expected a SceneCapture or a path, got {type(source).__name__}")
        if serial is None:
            if len(first.serials) != 1:
                raise ValueError(f"serial: the capture has several cameras {first.serials}; pick one")
            serial = first.serials[0]
        first.frame(serial)  # KeyError listing the serials there are
        self._serial = serial
        self._first = first
        self._loop = bool(loop)
        self._index = 0

    @property
    def serial(self) -> str:
        """Serial number of the camera being played."""
        return self._serial

    def __len__(self) -> int:
        """Number of captures in the source (1 for a single capture)."""
        return max(len(self._dirs), 1)

    def _connect(self) -> None:
        self._index = 0

    def _read(self) -> RGBDFrame:
        if self._index >= len(self):
            if not self._loop:
                raise EOFError(f"camera {self._serial!r}: end of the recording after {len(self)} "
                               "captures (loop=False)")
            self._index = 0
        i, self._index = self._index, self._index + 1
        capture = self._first if i == 0 else load_capture(self._dirs[i])
        return capture.frame(self._serial)

    def _close(self) -> None:
        pass


def capture_scene(cameras: Sequence[Camera]) -> SceneCapture:
    """Read one frame from each connected camera, in order.

    Args:
        cameras: connected cameras with unique serials.

    Returns:
        A :class:`SceneCapture` with one frame per camera.
    """
    cameras = list(cameras)
    if not cameras:
        raise ValueError("cameras: expected at least one camera, got none")
    for i, cam in enumerate(cameras):
        if not isinstance(cam, Camera):
            raise TypeError(f"cameras[{i}]: expected a Camera, got {type(cam).__name__}")
    return SceneCapture(tuple(cam.read() for cam in cameras))
