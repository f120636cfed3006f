"""Intel RealSense RGB-D cameras through ``pyrealsense2`` (the ``capture`` extra), live or from a file.

:class:`RealSenseCamera` streams 16-bit depth and RGB color, optionally post-processes depth
(spatial, temporal, hole-filling filters), aligns depth to the color image and returns
:class:`RGBDFrame` objects with depth in float32 metres (raw units times the sensor's depth scale;
raw 0 stays 0 = invalid) and the color stream's intrinsics. It records to a file (``record_to``) or
plays one back (``playback_from``: not real-time, every frame once, ``EOFError`` at the end).

Distortion: librealsense's Brown-Conrady model is OpenCV's 5-coefficient model with the same
coefficient order (k1, k2, p1, p2, k3). Its "modified" and "inverse" Brown-Conrady models (pyrealsense2
2.59) project like OpenCV except that the tangential terms are evaluated at the radially distorted
point, a second-order difference (< 0.02 px for RealSense-size coefficients); the coefficients are
passed through unchanged. Fisheye models (ftheta, Kannala-Brandt) have no 5-coefficient equivalent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import numpy as np

from pointworld.capture.camera import Camera
from pointworld.capture.frame import RGBDFrame
from pointworld.errors import CameraNotFoundError

#: Names accepted by ``filters``, applied in this order (spatial/temporal in the disparity domain).
FILTER_NAMES = ("spatial", "temporal", "hole_filling")
_PINHOLE_LIKE = ("brown_conrady", "modified_brown_conrady", "inverse_brown_conrady")
_PLAYBACK_POLL_S = 0.05


def _rs() -> ModuleType:
    """Import pyrealsense2 lazily, with an install hint when it is missing."""
    try:
        import pyrealsense2 as rs
    except ImportError as exc:
        raise ImportError("Intel RealSense support needs pyrealsense2: pip install 'pointworld[capture]' "
                          f"(and the system library libusb-1.0 on Linux); import failed with: {exc}"
                          ) from exc
    return rs


def list_realsense_serials() -> list[str]:
    """Serial numbers of the connected RealSense devices, sorted; ``[]`` when none is connected."""
    rs = _rs()
    return sorted(dev.get_info(rs.camera_info.serial_number) for dev in rs.context().query_devices())


def opencv_dist_coeffs(model: str, coeffs: Sequence[float]) -> np.ndarray:
    """Map a librealsense distortion model to OpenCV's coefficients (see the module docstring).

    Args:
        model: librealsense distortion model name (``rs.distortion.<name>``), e.g. ``"brown_conrady"``.
        coeffs: (5,) librealsense coefficients.

    Returns:
        (5,) float64 OpenCV coefficients (k1, k2, p1, p2, k3); zeros for ``"none"``.
    """
    c = np.asarray(coeffs, dtype=np.float64)
    if c.shape != (5,) or not np.all(np.isfinite(c)):
        raise ValueError(f"coeffs: expected 5 finite distortion coefficients, got {c.tolist()}")
    if model == "none":
        return np.zeros(5)
    if model in _PINHOLE_LIKE:
        return c
    raise ValueError(f"model: expected one of {('none',) + _PINHOLE_LIKE} (a fisheye model has no "
                     f"5-coefficient OpenCV equivalent), got {model!r}")


def color_to_rgb(image: np.ndarray, fmt: str) -> np.ndarray:
    """Convert a RealSense color image to (H, W, 3) uint8 RGB.

    Args:
        image: (H, W, C) uint8 color data as delivered by the stream.
        fmt: the librealsense format name: ``rgb8``, ``bgr8``, ``rgba8`` or ``bgra8``.
    """
    channels = {"rgb8": [0, 1, 2], "bgr8": [2, 1, 0], "rgba8": [0, 1, 2], "bgra8": [2, 1, 0]}
    if fmt not in channels:
        raise ValueError(f"fmt: expected a color format in {sorted(channels)}, got {fmt!r}")
    return np.ascontiguousarray(np.asarray(image)[..., channels[fmt]], dtype=np.uint8)


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return int(value)


def _filter_names(filters: bool | Sequence[str]) -> tuple[str, ...]:
    if isinstance(filters, bool):
        return FILTER_NAMES if filters else ()
    names = tuple(filters)
    unknown = [n for n in names if n not in FILTER_NAMES]
    if unknown or isinstance(filters, str):
        raise ValueError(f"filters: expected a bool or a sequence of names from {FILTER_NAMES}, "
                         f"got {filters!r}")
    return tuple(n for n in FILTER_NAMES if n in names)


def _build_filters(rs: ModuleType, names: tuple[str, ...]) -> list:
    """librealsense processing blocks for ``names``: spatial and temporal run on disparity."""
    blocks: list = []
    smoothing = [n for n in names if n in ("spatial", "temporal")]
    if smoothing:
        blocks.append(rs.disparity_transform(True))
        blocks += [rs.spatial_filter() if n == "spatial" else rs.temporal_filter() for n in smoothing]
        blocks.append(rs.disparity_transform(False))
    if "hole_filling" in names:
        blocks.append(rs.hole_filling_filter())
    return blocks


class RealSenseCamera(Camera):
    """An Intel RealSense depth camera (D400 family and alike), live or played back from a file.

    Args:
        serial: the device to open; ``None`` opens the only connected one (an error if several).
            A non-negative int is read as its decimal digits (unquoted YAML serials).
            With ``playback_from`` it is checked against the serial stored in the file.
        width, height, fps: stream mode of both depth (z16) and color (rgb8) on a live device.
        warmup_frames: framesets dropped after start (auto-exposure); ``None`` = 30 live, 0 playback.
        filters: ``True`` for all of :data:`FILTER_NAMES`, or a sequence of their names.
        align_to_color: reproject depth onto the color image (``rs.align``); ``False`` keeps both
            images as they are and reports the depth stream's intrinsics (same-imager cameras).
        timeout_s: how long :meth:`read` waits for a frameset before ``TimeoutError``.
        record_to: record the session to this file (pyrealsense2 2.59 writes ``.db3``).
        playback_from: play this recording instead of a live device; ``read`` raises ``EOFError``
            at its end.
        T_world_cam: (4, 4) pose from an extrinsic calibration; ``None`` = identity.
    """

    def __init__(self, serial: str | None = None, *, width: int = 640, height: int = 480, fps: int = 30,
                 warmup_frames: int | None = None, filters: bool | Sequence[str] = False,
                 align_to_color: bool = True, timeout_s: float = 5.0,
                 record_to: str | os.PathLike | None = None,
                 playback_from: str | os.PathLike | None = None,
                 T_world_cam: np.ndarray | None = None) -> None:
        super().__init__(T_world_cam)
        if isinstance(serial, int) and not isinstance(serial, bool) and serial >= 0:
            serial = str(serial)  # an unquoted serial in YAML arrives as an int
        if serial is not None and (not isinstance(serial, str) or not serial):
            raise ValueError(f"serial: expected a non-empty string or None, got {serial!r}")
        if record_to is not None and playback_from is not None:
            raise ValueError("record_to, playback_from: expected at most one of them, got both")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
            raise ValueError(f"timeout_s: expected a number of seconds > 0, got {timeout_s!r}")
        self._requested = serial
        self._size = (_positive_int("width", width), _positive_int("height", height))
        self._fps = _positive_int("fps", fps)
        self._warmup = None if warmup_frames is None else _positive_int("warmup_frames", warmup_frames, 0)
        self._filter_names = _filter_names(filters)
        self._align_to_color = bool(align_to_color)
        self._timeout_s = float(timeout_s)
        self._record_to = None if record_to is None else Path(record_to)
        self._playback_from = None if playback_from is None else Path(playback_from)
        self._pipeline = None
        self._serial: str | None = None

    @property
    def serial(self) -> str:
        """Serial of the device (known before connect only if it was given)."""
        serial = self._serial or self._requested
        if serial is None:
            raise RuntimeError("serial: unknown until connect() when RealSenseCamera(serial=None)")
        return serial

    @property
    def depth_scale_m(self) -> float:
        """Metres per raw depth unit, read from the depth sensor at connect."""
        if self._pipeline is None:
            raise RuntimeError("depth_scale_m: connect() first")
        return self._depth_scale

    def _pick_serial(self) -> str:
        connected = list_realsense_serials()
        if self._requested is not None and self._requested not in connected:
            raise CameraNotFoundError(f"serial: looked for RealSense camera {self._requested!r}; "
                                      f"connected serials: {connected or 'none'}")
        if self._requested is None and len(connected) != 1:
            if not connected:
                raise CameraNotFoundError("serial: looked for any RealSense camera (serial=None); "
                                          "connected serials: none")
            raise ValueError(f"serial: several RealSense cameras are connected {connected}; pass one")
        return self._requested or connected[0]

    def _config(self, rs: ModuleType):  # -> rs.config
        cfg = rs.config()
        if self._playback_from is not None:
            if not self._playback_from.is_file():
                raise FileNotFoundError(f"playback_from: recording {self._playback_from} does not exist")
            cfg.enable_device_from_file(str(self._playback_from), repeat_playback=False)
            cfg.enable_stream(rs.stream.depth)
            cfg.enable_stream(rs.stream.color)
            return cfg
        cfg.enable_device(self._pick_serial())
        width, height = self._size
        cfg.enable_stream(rs.stream.depth, width, height, rs.format.z16, self._fps)
        cfg.enable_stream(rs.stream.color, width, height, rs.format.rgb8, self._fps)
        if self._record_to is not None:
            cfg.enable_record_to_file(str(self._record_to))
        return cfg

    def _connect(self) -> None:
        rs = _rs()
        cfg = self._config(rs)  # queries devices first: no blocking start without a camera
        pipeline, playback = rs.pipeline(), None
        try:
            if self._playback_from is not None:
                # Non-real-time and paused until every sensor has started: otherwise playback skips
                # or drops the first frames (measured: ~3 % of starts lost frame 0).
                playback = cfg.resolve(rs.pipeline_wrapper(pipeline)).get_device().as_playback()
                playback.set_real_time(False)
                playback.pause()
            profile = pipeline.start(cfg)
        except RuntimeError as exc:
            source = self._playback_from or f"device {self._requested or '(the only connected one)'}"
            raise RuntimeError(f"RealSense {source}: could not start streaming: {exc}") from exc
        try:
            if playback is not None:
                playback.resume()
            self._setup(rs, pipeline, profile)
        except BaseException:
            pipeline.stop()
            raise

    def _setup(self, rs: ModuleType, pipeline, profile) -> None:
        device = profile.get_device()
        serial = device.get_info(rs.camera_info.serial_number)
        if self._requested is not None and serial != self._requested:
            raise CameraNotFoundError(f"serial: looked for RealSense camera {self._requested!r} in "
                                      f"{self._playback_from}; the recording holds {serial!r}")
        stream = rs.stream.color if self._align_to_color else rs.stream.depth
        intr = profile.get_stream(stream).as_video_stream_profile().get_intrinsics()
        self._K = np.array([[intr.fx, 0.0, intr.ppx], [0.0, intr.fy, intr.ppy], [0.0, 0.0, 1.0]])
        self._dist = opencv_dist_coeffs(intr.model.name, intr.coeffs)
        self._depth_scale = float(device.first_depth_sensor().get_depth_scale())
        self._align = rs.align(rs.stream.color) if self._align_to_color else None
        self._filters = _build_filters(rs, self._filter_names)
        self._is_playback = device.is_playback()
        self._stream_fps = max(1, profile.get_stream(rs.stream.color).fps())
        self._pipeline, self._serial = pipeline, serial
        warmup = self._warmup if self._warmup is not None else (0 if self._is_playback else 30)
        for _ in range(warmup):
            self._wait()

    def _wait(self):  # -> rs.composite_frame
        """Next frameset; ``EOFError`` at the end of a playback, ``TimeoutError`` after timeout_s."""
        deadline, ended = time.monotonic() + self._timeout_s, False
        step_ms = max(1, int(1000 * (_PLAYBACK_POLL_S if self._is_playback else self._timeout_s)))
        while True:
            ok, frames = self._pipeline.try_wait_for_frames(step_ms)
            if ok and (not self._is_playback or self._matched(frames)):
                return frames
            if not ok and ended:
                raise EOFError(f"playback_from: end of the recording {self._playback_from}")
            if not ok and self._is_playback:
                ended = self._playback_stopped()  # then poll once more for what is still queued
            if not ended and time.monotonic() >= deadline:
                raise TimeoutError(f"camera {self.serial!r}: no frames within timeout_s="
                                   f"{self._timeout_s:g} s")

    def _matched(self, frames) -> bool:
        """Whether depth and color were taken within half a frame period of each other.

        In playback the syncer can emit one stream alone and the pipeline then completes the set
        with the other stream's previous frame; such stale pairs are skipped.
        """
        depth, color = frames.get_depth_frame(), frames.get_color_frame()
        if not depth or not color:
            return False
        return abs(depth.get_timestamp() - color.get_timestamp()) <= 500.0 / self._stream_fps

    def _playback_stopped(self) -> bool:
        rs = _rs()
        playback = self._pipeline.get_active_profile().get_device().as_playback()
        return playback.current_status() == rs.playback_status.stopped

    def _read(self) -> RGBDFrame:
        frames = self._wait()
        for block in self._filters:
            frames = block.process(frames).as_frameset()
        if self._align is not None:
            frames = self._align.process(frames)
        depth_frame, color_frame = frames.get_depth_frame(), frames.get_color_frame()
        if not depth_frame or not color_frame:
            raise RuntimeError(f"camera {self.serial!r}: frameset lacks a depth or a color frame")
        raw = np.asanyarray(depth_frame.get_data())
        depth = (raw.astype(np.float64) * self._depth_scale).astype(np.float32)
        fmt = color_frame.get_profile().format().name
        rgb = color_to_rgb(np.asanyarray(color_frame.get_data()), fmt)
        return RGBDFrame(rgb=rgb, depth=depth, K=self._K, T_world_cam=np.eye(4), serial=self.serial,
                         timestamp_s=color_frame.get_timestamp() / 1000.0, dist_coeffs=self._dist)

    def _close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            pipeline.stop()
