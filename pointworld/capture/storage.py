"""On-disk format of a :class:`SceneCapture`: one directory with ``capture.json`` and PNG images.

The format is specified in ``FORMAT.md`` next to this module. In short::

    <capture>/capture.json          format name, format_version, one entry per frame
    <capture>/<serial>_color.png    8-bit RGB
    <capture>/<serial>_depth.png    16-bit grayscale, depth = value * depth_scale_m, 0 = invalid

:func:`save_capture` is atomic: it writes a hidden sibling directory and renames it into place, so a
crash never leaves a half-written capture under the final name. :func:`load_capture` checks every
file and raises :class:`~pointworld.errors.CaptureFormatError` naming the path and the problem.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from pointworld.capture.frame import RGBDFrame, SceneCapture
from pointworld.conventions import DEPTH_PNG_SCALE_M
from pointworld.atomic import fsync_directory
from pointworld.errors import CaptureFormatError

#: Value of ``capture.json``'s ``format`` key.
FORMAT_NAME = "pointworld.scene_capture"
#: Current ``format_version``; :func:`load_capture` reads exactly this version.
FORMAT_VERSION = 1
#: Name of the metadata file inside a capture directory.
METADATA_FILE = "capture.json"

_SERIAL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_FRAME_KEYS = ("serial", "timestamp_s", "width", "height", "K", "dist_coeffs", "T_world_cam",
               "depth_scale_m", "color_file", "depth_file")
_UINT16_MAX = 65535
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: kind -> (bit depth, PNG color type, numpy dtype): color type 2 = RGB, 0 = grayscale.
_PNG_KINDS = {"rgb8": (8, 2, np.uint8), "gray16": (16, 0, np.uint16)}


def depth_to_png_units(depth: np.ndarray, depth_scale_m: float) -> np.ndarray:
    """Quantize metric depth to 16-bit PNG units.

    Args:
        depth: (H, W) depth along the optical axis, m. NaN, ±inf, values <= 0, values that round to 0
            units and values beyond ``65535 * depth_scale_m`` are invalid and become 0.
        depth_scale_m: metres per PNG unit (``DEPTH_PNG_SCALE_M`` = 1 mm by default).

    Returns:
        (H, W) uint16 depth in PNG units, 0 = invalid.
    """
    units = np.asarray(depth, dtype=np.float64) / depth_scale_m
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(units) & (units > 0) & (np.rint(units) <= _UINT16_MAX)
    return np.where(valid, np.rint(np.where(valid, units, 0.0)), 0.0).astype(np.uint16)


def _write_png(path: Path, image: np.ndarray) -> None:
    """Write (H, W, 3) uint8 as 8-bit RGB or (H, W) uint16 as 16-bit grayscale, then fsync."""
    with open(path, "wb") as fh:
        Image.fromarray(image).save(fh, format="PNG")
        fh.flush()
        os.fsync(fh.fileno())


def _read_png(path: Path, kind: str, size_hw: tuple[int, int]) -> np.ndarray:
    """Read and fully verify a PNG of ``kind`` whose size must be ``size_hw`` (H, W)."""
    if not path.is_file():
        raise _bad(path, "image file is missing")
    data = path.read_bytes()
    if len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        raise _bad(path, f"not a PNG file ({len(data)} bytes)")
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    bits, color_type, dtype = _PNG_KINDS[kind]
    if (data[24], data[25]) != (bits, color_type):
        raise _bad(path, f"expected a {bits}-bit {'RGB' if color_type == 2 else 'grayscale'} PNG, "
                         f"got bit depth {data[24]} and color type {data[25]}")
    if (height, width) != tuple(size_hw):
        raise _bad(path, f"image is {width}x{height} px but capture.json says {size_hw[1]}x{size_hw[0]}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()  # chunk CRCs and the end of the stream, independent of LOAD_TRUNCATED_IMAGES
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            array = np.asarray(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise _bad(path, f"corrupt or truncated PNG ({exc})") from exc
    return array.astype(dtype)


def _frame_entry(frame: RGBDFrame, depth_scale_m: float) -> dict:
    if not _SERIAL_RE.match(frame.serial):
        raise ValueError(f"capture: camera serial {frame.serial!r} cannot name a file; expected letters, "
                         "digits, '.', '_' or '-' (not starting with '.', '_' or '-')")
    return {"serial": frame.serial, "timestamp_s": frame.timestamp_s,
            "width": frame.width, "height": frame.height, "K": frame.K.tolist(),
            "dist_coeffs": frame.dist_coeffs.tolist(), "T_world_cam": frame.T_world_cam.tolist(),
            "depth_scale_m": depth_scale_m, "color_file": f"{frame.serial}_color.png",
            "depth_file": f"{frame.serial}_depth.png"}


def _write_all(capture: SceneCapture, tmp: Path, depth_scale_m: float) -> None:
    entries = [_frame_entry(f, depth_scale_m) for f in capture.frames]
    for frame, entry in zip(capture.frames, entries):
        _write_png(tmp / entry["color_file"], frame.rgb)
        _write_png(tmp / entry["depth_file"], depth_to_png_units(frame.depth, depth_scale_m))
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "frames": entries}
    with open(tmp / METADATA_FILE, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())


def _move_into_place(tmp: Path, final: Path, overwrite: bool) -> None:
    if not (overwrite and final.exists()):
        try:
            os.rename(tmp, final)  # fails if ``final`` appeared meanwhile and is not an empty dir
        except OSError as exc:
            raise FileExistsError(f"directory: {final} already exists; pass overwrite=True to "
                                  "replace it") from exc
        return
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(final, old)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old)


def save_capture(capture: SceneCapture, directory: str | os.PathLike, *, overwrite: bool = False,
                 depth_scale_m: float = DEPTH_PNG_SCALE_M) -> Path:
    """Write ``capture`` to ``directory`` atomically (format: ``FORMAT.md``).

    Args:
        capture: the frames to store; depth is quantized to ``depth_scale_m`` (invalid depth -> 0).
        directory: the capture directory to create; its parent must exist.
        overwrite: replace an existing capture directory (one with ``capture.json``, or empty). The
            old one is renamed away, the new one renamed in, then the old one deleted.
        depth_scale_m: metres per depth PNG unit; the default 1 mm covers up to 65.535 m.

    Returns:
        The capture directory as a ``Path``.

    Raises:
        FileExistsError: ``directory`` exists and ``overwrite`` is False, or it is not a capture.
        ValueError: a serial that cannot be a file name, or a bad ``depth_scale_m``.
    """
    if not isinstance(capture, SceneCapture):
        raise TypeError(f"capture: expected a SceneCapture, got {type(capture).__name__}")
    if isinstance(depth_scale_m, bool) or not isinstance(depth_scale_m, (int, float)) \
            or not math.isfinite(depth_scale_m) or depth_scale_m <= 0:
        raise ValueError(f"depth_scale_m: expected a finite number of metres > 0, got {depth_scale_m!r}")
    final = Path(directory)
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise FileExistsError(f"directory: {final} already exists; pass overwrite=True to replace it")
        if not final.is_dir() or not ((final / METADATA_FILE).exists() or not any(final.iterdir())):
            raise FileExistsError(f"directory: {final} exists and is not a scene capture (no "
                                  f"{METADATA_FILE}); refusing to replace it")
    if not final.parent.is_dir():
        raise FileNotFoundError(f"directory: parent folder {final.parent} of {final} does not exist")
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        _write_all(capture, tmp, float(depth_scale_m))
        fsync_directory(tmp)
        _move_into_place(tmp, final, overwrite)
        fsync_directory(final.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return final


def _bad(path: Path, what: str) -> CaptureFormatError:
    return CaptureFormatError(f"capture {path}: {what}")


def _read_metadata(directory: Path) -> list[dict]:
    meta_path = directory / METADATA_FILE
    if not directory.is_dir():
        raise _bad(directory, "is not a directory")
    if not meta_path.is_file():
        raise _bad(directory, f"missing {METADATA_FILE}; not a scene capture directory")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad(meta_path, f"invalid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise _bad(meta_path, f"expected format {FORMAT_NAME!r}, got {got!r}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise _bad(meta_path, f"expected format_version {FORMAT_VERSION}, got "
                              f"{meta.get('format_version')!r}")
    frames = meta.get("frames")
    if not isinstance(frames, list) or not frames or not all(isinstance(f, dict) for f in frames):
        raise _bad(meta_path, f"expected 'frames' to be a non-empty list of objects, got {frames!r:.80}")
    for i, entry in enumerate(frames):
        missing = [k for k in _FRAME_KEYS if k not in entry]
        if missing:
            raise _bad(meta_path, f"frames[{i}] lacks the keys {missing}")
    return frames


def _image_path(directory: Path, meta_path: Path, i: int, entry: dict, key: str) -> Path:
    name = entry[key]
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise _bad(meta_path, f"frames[{i}].{key}: expected a file name inside the capture, got {name!r}")
    return directory / name


def _load_frame(directory: Path, i: int, entry: dict) -> RGBDFrame:
    meta_path = directory / METADATA_FILE
    width, height, scale = entry["width"], entry["height"], entry["depth_scale_m"]
    for key, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise _bad(meta_path, f"frames[{i}].{key}: expected a positive integer, got {value!r}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise _bad(meta_path, f"frames[{i}].depth_scale_m: expected a number > 0, got {scale!r}")
    rgb = _read_png(_image_path(directory, meta_path, i, entry, "color_file"), "rgb8", (height, width))
    raw = _read_png(_image_path(directory, meta_path, i, entry, "depth_file"), "gray16", (height, width))
    depth = (raw.astype(np.float64) * float(scale)).astype(np.float32)
    try:
        return RGBDFrame(rgb=rgb, depth=depth, K=np.asarray(entry["K"], dtype=np.float64),
                         T_world_cam=np.asarray(entry["T_world_cam"], dtype=np.float64),
                         serial=entry["serial"], timestamp_s=float(entry["timestamp_s"]),
                         dist_coeffs=np.asarray(entry["dist_coeffs"], dtype=np.float64))
    except (ValueError, TypeError) as exc:
        raise _bad(meta_path, f"frames[{i}] (serial {entry.get('serial')!r}): {exc}") from exc


def load_capture(directory: str | os.PathLike) -> SceneCapture:
    """Read a capture directory written by :func:`save_capture`.

    Depth becomes float32 metres ``png_value * depth_scale_m``; invalid pixels (PNG value 0) stay
    0 m, which downstream code treats as missing (depth <= 0).

    Args:
        directory: the capture directory.

    Returns:
        The :class:`SceneCapture`, frames in the order of ``capture.json``.

    Raises:
        CaptureFormatError: missing or invalid ``capture.json``, wrong format or version, missing
            keys, missing/truncated/corrupt PNGs, wrong image size or bit depth, bad matrices.
    """
    path = Path(directory)
    entries = _read_metadata(path)
    frames = tuple(_load_frame(path, i, e) for i, e in enumerate(entries))
    try:
        return SceneCapture(frames)
    except ValueError as exc:
        raise _bad(path / METADATA_FILE, str(exc)) from exc
