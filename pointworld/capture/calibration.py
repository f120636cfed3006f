"""Extrinsic calibration of cameras: the :class:`CameraCalibration` record and its YAML file.

File format (``pointworld-calibration``, version 1), human-editable YAML::

    format: pointworld-calibration
    version: 1
    frame: world                      # every pose below is expressed in this frame
    cameras:
      '123622270372':                 # camera serial: always a quoted string
        T_world_cam: [[r00, r01, r02, tx], [r10, ...], [r20, ...], [0, 0, 0, 1]]  # required, m
        K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]        # optional, pixels
        dist_coeffs: [k1, k2, p1, p2, k3]                # optional, OpenCV order
        reprojection_error_px: 0.12                      # optional, RMS over board corners
        T_world_board: [[...], ...]                      # optional, board pose used, m
        method: charuco                                  # how the pose was obtained
        created: '2026-01-30T10:00:00+00:00'             # ISO 8601 time of calibration
    ...                               # YAML end-of-document marker: required, the last line

``T_world_cam`` maps points of the camera's OpenCV optical frame (+x right, +y down, +z forward) to
the world frame: ``p_world = T_world_cam @ p_cam``. Matrices are lists of rows. Unknown keys are
rejected so that a typo does not silently drop a field, and the closing ``...`` line is required so
that a file cut short at a line boundary (which can still be valid YAML, minus some cameras or
fields) is reported instead of read. The file is written atomically (a temporary file in the same
directory, then ``os.replace``), so readers never see a half-written file.

This module needs no OpenCV; ChArUco detection lives in :mod:`pointworld.capture.charuco`.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from pointworld.atomic import atomic_open
from pointworld.errors import CalibrationError
from pointworld.geometry.camera import check_intrinsics
from pointworld.geometry.se3 import check_rigid_transform

FORMAT_NAME = "pointworld-calibration"
FORMAT_VERSION = 1
_CAMERA_KEYS = ("T_world_cam", "K", "dist_coeffs", "reprojection_error_px", "T_world_board",
                "method", "created")
_HEADER = ("# pointworld camera extrinsics. T_world_cam (4x4, rows, metres) maps OpenCV optical camera\n"
           "# coordinates to the world frame: p_world = T_world_cam @ p_cam. Serials are quoted strings;\n"
           "# the last line must stay '...' (end of document: guards against truncated files).\n")


def _matrix(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}: expected a numeric array of shape {shape}, "
                         f"got {value!r:.200}") from exc
    if arr.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected finite values, got {arr.tolist()}")
    return arr


@dataclass(frozen=True, eq=False)
class CameraCalibration:
    """Extrinsic (and optionally intrinsic) calibration of one camera.

    Attributes:
        serial: camera serial number, non-empty.
        T_world_cam: (4, 4) float64 rigid pose of the OpenCV camera frame in the world frame, m.
        K: (3, 3) float64 pinhole intrinsics used during calibration, pixels; or None.
        dist_coeffs: (5,) float64 (k1, k2, p1, p2, k3), OpenCV order; or None.
        reprojection_error_px: RMS reprojection error of the calibration board corners, pixels.
        T_world_board: (4, 4) float64 pose of the calibration board in the world frame, m; or None.
        method: how the pose was obtained, e.g. ``"charuco"`` or ``"manual"``.
        created: ISO 8601 time of the calibration; None means "now" when saved.
    """

    serial: str
    T_world_cam: np.ndarray
    K: np.ndarray | None = None
    dist_coeffs: np.ndarray | None = None
    reprojection_error_px: float | None = None
    T_world_board: np.ndarray | None = None
    method: str = "manual"
    created: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.serial, str) or not self.serial:
            raise ValueError(f"serial: expected a non-empty string, got {self.serial!r}")
        T = _matrix("T_world_cam", self.T_world_cam, (4, 4))
        check_rigid_transform("T_world_cam", torch.from_numpy(T))
        object.__setattr__(self, "T_world_cam", T)
        if self.T_world_board is not None:
            Tb = _matrix("T_world_board", self.T_world_board, (4, 4))
            check_rigid_transform("T_world_board", torch.from_numpy(Tb))
            object.__setattr__(self, "T_world_board", Tb)
        if self.K is not None:
            K = _matrix("K", self.K, (3, 3))
            check_intrinsics("K", torch.from_numpy(K))
            object.__setattr__(self, "K", K)
        if self.dist_coeffs is not None:
            object.__setattr__(self, "dist_coeffs", _matrix("dist_coeffs", self.dist_coeffs, (5,)))
        err = self.reprojection_error_px
        if err is not None:
            if isinstance(err, bool) or not isinstance(err, (int, float)) or not err >= 0 \
                    or not np.isfinite(err):
                raise ValueError(f"reprojection_error_px: expected a finite number >= 0, got {err!r}")
            object.__setattr__(self, "reprojection_error_px", float(err))
        if not isinstance(self.method, str) or not self.method:
            raise ValueError(f"method: expected a non-empty string, got {self.method!r}")
        if self.created is not None:
            if not isinstance(self.created, str):
                raise ValueError(f"created: expected an ISO 8601 string, got {self.created!r}")
            try:
                dt.datetime.fromisoformat(self.created)
            except ValueError as exc:
                raise ValueError(f"created: expected an ISO 8601 time, got {self.created!r}") from exc


def _to_yaml_entry(cal: CameraCalibration, now: str) -> dict:
    entry: dict = {"T_world_cam": cal.T_world_cam.tolist()}
    for key in ("K", "dist_coeffs", "T_world_board"):
        value = getattr(cal, key)
        if value is not None:
            entry[key] = value.tolist()
    if cal.reprojection_error_px is not None:
        entry["reprojection_error_px"] = cal.reprojection_error_px
    entry["method"] = cal.method
    entry["created"] = cal.created if cal.created is not None else now
    return entry


def _from_yaml_entry(path: Path, serial: object, entry: object) -> CameraCalibration:
    where = f"{path}: cameras[{serial!r}]"
    if not isinstance(serial, str):
        raise CalibrationError(f"{where}: expected the serial as a quoted string, got the "
                               f"{type(serial).__name__} {serial!r}: YAML reads unquoted digits as "
                               "numbers (dropping leading zeros); quote serials, e.g. '012345'")
    if not isinstance(entry, dict):
        raise CalibrationError(f"{where}: expected a mapping of fields, got {type(entry).__name__}")
    unknown = sorted(set(map(str, entry)) - set(_CAMERA_KEYS))
    if unknown:
        raise CalibrationError(f"{where}: unknown field(s) {unknown}; allowed: {list(_CAMERA_KEYS)}")
    if "T_world_cam" not in entry:
        raise CalibrationError(f"{where}: T_world_cam: required field is missing")
    fields = dict(entry)
    if isinstance(fields.get("created"), dt.datetime):  # YAML parses unquoted timestamps
        fields["created"] = fields["created"].isoformat()
    try:
        return CameraCalibration(serial=serial, **fields)
    except (ValueError, TypeError) as exc:
        raise CalibrationError(f"{where}: {exc}") from exc


def load_calibration(path: str | os.PathLike) -> dict[str, CameraCalibration]:
    """Read a calibration file (format in the module docstring).

    Args:
        path: the YAML file.

    Returns:
        dict serial -> :class:`CameraCalibration`, in file order.

    Raises:
        CalibrationError: the file is missing or unreadable, is not valid YAML, has the wrong format
            name or version, or a camera entry is invalid (the message names the serial and field).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CalibrationError(f"{path}: calibration file not found; run the calibration first "
                               "or pass the right path") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CalibrationError(f"{path}: cannot read calibration file: {exc}") from exc
    lines = text.rstrip().splitlines()
    if not lines or lines[-1].strip() != "...":
        raise CalibrationError(f"{path}: truncated or incomplete file: the last line must be the YAML "
                               "end-of-document marker '...'")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CalibrationError(f"{path}: not valid YAML (corrupt or truncated file): {exc}") from exc
    if not isinstance(doc, dict):
        raise CalibrationError(f"{path}: expected a YAML mapping with format {FORMAT_NAME!r}, "
                               f"got {type(doc).__name__} (empty or truncated file?)")
    if doc.get("format") != FORMAT_NAME:
        raise CalibrationError(f"{path}: format: expected {FORMAT_NAME!r}, got {doc.get('format')!r}")
    if type(doc.get("version")) is not int or doc["version"] != FORMAT_VERSION:
        raise CalibrationError(f"{path}: version: expected {FORMAT_VERSION}, got {doc.get('version')!r}")
    if doc.get("frame") != "world":
        raise CalibrationError(f"{path}: frame: expected 'world', got {doc.get('frame')!r}")
    cameras = doc.get("cameras")
    if not isinstance(cameras, dict):
        raise CalibrationError(f"{path}: cameras: expected a mapping serial -> fields, "
                               f"got {type(cameras).__name__}")
    return {serial: _from_yaml_entry(path, serial, entry) for serial, entry in cameras.items()}


def _as_mapping(calibrations: object) -> dict[str, CameraCalibration]:
    items = calibrations.items() if isinstance(calibrations, Mapping) else None
    if items is None:
        if not isinstance(calibrations, Sequence) or isinstance(calibrations, (str, bytes)):
            raise TypeError("calibrations: expected a mapping serial -> CameraCalibration or a "
                            f"sequence of CameraCalibration, got {type(calibrations).__name__}")
        items = [(getattr(c, "serial", None), c) for c in calibrations]
    out: dict[str, CameraCalibration] = {}
    for key, cal in items:
        if not isinstance(cal, CameraCalibration):
            raise TypeError(f"calibrations[{key!r}]: expected a CameraCalibration, "
                            f"got {type(cal).__name__}")
        if key != cal.serial:
            raise ValueError(f"calibrations: key {key!r} differs from its serial {cal.serial!r}")
        if key in out:
            raise ValueError(f"calibrations: serial {key!r} appears more than once")
        out[key] = cal
    return out


def save_calibration(path: str | os.PathLike,
                     calibrations: Mapping[str, CameraCalibration] | Sequence[CameraCalibration],
                     *, merge: bool = True) -> Path:
    """Write calibrations atomically (temporary file in the same directory, then ``os.replace``).

    Args:
        path: destination YAML file; missing parent directories are created.
        calibrations: serial -> :class:`CameraCalibration`, or a sequence of them.
        merge: keep the cameras already in an existing file that ``calibrations`` does not replace;
            False overwrites the file with exactly ``calibrations``.

    Returns:
        the path written.

    Raises:
        CalibrationError: ``merge`` is True and the existing file is invalid (nothing is written).
        OSError: the write failed; the previous file, if any, is left unchanged.
    """
    path = Path(path)
    new = _as_mapping(calibrations)
    cams = load_calibration(path) if merge and path.exists() else {}
    cams.update(new)
    now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    doc = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "frame": "world",
           "cameras": {s: _to_yaml_entry(cams[s], now) for s in sorted(cams)}}
    text = _HEADER + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120,
                                    explicit_end=True)
    with atomic_open(path, "w") as fh:
        fh.write(text)
    return path


def extrinsics_for(source: str | os.PathLike | Mapping[str, CameraCalibration],
                   serial: str) -> np.ndarray:
    """The pose of one camera from a calibration file or a loaded mapping.

    Args:
        source: a calibration file path, or the dict returned by :func:`load_calibration`.
        serial: the camera serial.

    Returns:
        (4, 4) float64 ``T_world_cam`` (a copy), m.

    Raises:
        CalibrationError: the file is invalid, or it has no camera ``serial`` (the message lists the
            serials it has).
    """
    cams = source if isinstance(source, Mapping) else load_calibration(source)
    if serial not in cams:
        origin = "the given calibrations" if isinstance(source, Mapping) else str(source)
        raise CalibrationError(f"serial: no calibration for camera {serial!r} in {origin}; "
                               f"calibrated serials: {sorted(cams)}")
    return np.array(cams[serial].T_world_cam, dtype=np.float64)

