"""HDF5 storage of an :class:`~pointworld.data.episode.Episode` (schema: ``SCHEMA.md`` next to this module).

:func:`write_episode` builds the file in memory (HDF5 core driver) and writes it with
:func:`~pointworld.atomic.atomic_open`, so a file under the final name is always complete.
:func:`read_episode` / :func:`read_clip` check the format name, version, every attribute and dataset
(presence, dtype, shape) and raise :class:`~pointworld.errors.EpisodeFormatError` naming the file and
the field. :func:`list_episodes` and :func:`episode_summary` serve dataset tools (``pointworld inspect``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from pointworld.atomic import atomic_open
from pointworld.data.episode import Clip, Episode, EpisodeCameras
from pointworld.errors import EpisodeFormatError

#: Value of the root attribute ``format``.
FORMAT_NAME = "pointworld.episode"
#: Current ``format_version``; the reader accepts exactly this version.
FORMAT_VERSION = 1
#: File name suffix of episode files.
EPISODE_SUFFIX = ".h5"
COMPRESSIONS = ("gzip", "lzf", None)

_IMAGE_KEYS = ("rgb", "depth", "segmentation")
#: clip dataset -> (dtype, ndim); ``segmentation`` is optional.
_CLIP_DATASETS = {"rgb": (np.uint8, 4), "depth": (np.float32, 3), "points_world": (np.float32, 2),
                  "colors": (np.uint8, 2), "view_index": (np.int32, 1), "pixel_index": (np.int32, 1),
                  "body_id": (np.int32, 1), "positions": (np.float32, 3), "valid": (np.bool_, 2),
                  "segmentation": (np.int32, 3)}
_STR_ATTRS = ("robot_name", "urdf_id", "created", "source", "scene")


def _put(group: h5py.Group, name: str, data: np.ndarray, compression: str | None) -> None:
    kwargs: dict = {}
    if compression is not None and data.size:
        kwargs["compression"] = compression
        if compression == "gzip":
            kwargs["compression_opts"] = 4
        if name in _IMAGE_KEYS:
            kwargs["chunks"] = (1, *data.shape[1:])  # one chunk per view
    group.create_dataset(name, data=data, **kwargs)


def _fill(f: h5py.File, ep: Episode, compression: str | None) -> None:
    f.attrs.update({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "robot_name": ep.robot_name,
                    "urdf_id": ep.urdf_id, "control_dt_s": ep.control_dt_s, "seed": np.int64(ep.seed),
                    "created": ep.created, "source": ep.source, "scene": ep.scene,
                    "horizon": np.int64(ep.horizon), "n_steps": np.int64(ep.num_steps),
                    "n_clips": np.int64(len(ep.clips))})
    if ep.split_hint is not None:
        f.attrs["split_hint"] = ep.split_hint
    f.create_dataset("joint_names", data=list(ep.joint_names), dtype=h5py.string_dtype())
    _put(f, "joint_positions", ep.joint_positions, compression)
    _put(f, "gripper_open", ep.gripper_open, compression)
    if ep.T_world_base is not None:
        f.create_dataset("T_world_base", data=ep.T_world_base)
    cams = f.create_group("cameras")
    cams.attrs.update({"height": np.int64(ep.cameras.height), "width": np.int64(ep.cameras.width)})
    cams.create_dataset("serials", data=list(ep.cameras.serials), dtype=h5py.string_dtype())
    for key in ("K", "T_world_cam", "dist_coeffs"):
        cams.create_dataset(key, data=getattr(ep.cameras, key))
    clips = f.create_group("clips")
    for i, clip in enumerate(ep.clips):
        g = clips.create_group(f"{i:06d}")
        g.attrs["start_step"] = np.int64(clip.start_step)
        for key in _CLIP_DATASETS:
            if getattr(clip, key) is not None:
                _put(g, key, getattr(clip, key), compression)


def write_episode(path: str | os.PathLike, episode: Episode, *, compression: str | None = "gzip") -> Path:
    """Write ``episode`` to ``path`` atomically (the file appears complete or not at all).

    Args:
        path: target file (``.h5`` by convention); parent directories are created, an existing file
            is replaced.
        episode: the episode; it is re-validated first.
        compression: ``"gzip"`` (level 4, readable everywhere), ``"lzf"`` (faster, h5py only) or
            ``None``. Images are chunked one view per chunk.

    Returns:
        ``path`` as a ``Path``.
    """
    if not isinstance(episode, Episode):
        raise TypeError(f"episode: expected an Episode, got {type(episode).__name__}")
    if compression not in COMPRESSIONS:
        raise ValueError(f"compression: expected one of {COMPRESSIONS}, got {compression!r}")
    episode.validate()
    path = Path(path)
    with h5py.File(f"episode-{uuid.uuid4().hex}", "w", driver="core", backing_store=False) as f:
        _fill(f, episode, compression)
        f.flush()
        image = f.id.get_file_image()
    with atomic_open(path, "wb") as fh:
        fh.write(image)
    return path


class _Reader:
    """Checked access to one open episode file; every error names the file and the field."""

    def __init__(self, path: Path, f: h5py.File) -> None:
        self.path, self.f = path, f

    def error(self, field: str, what: str) -> EpisodeFormatError:
        return EpisodeFormatError(f"episode {self.path}: {field}: {what}")

    def attr(self, obj: h5py.HLObject, key: str, kind: type) -> object:
        field = f"{obj.name.rstrip('/')}/@{key}"
        if key not in obj.attrs:
            raise self.error(field, "missing attribute")
        value = obj.attrs[key]
        if kind is str and isinstance(value, bytes):
            value = value.decode("utf-8")
        ok = {str: (str,), int: (int, np.integer), float: (float, int, np.floating, np.integer)}[kind]
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, ok):
            raise self.error(field, f"expected a {kind.__name__}, got {value!r:.80}")
        return kind(value)

    def array(self, group: h5py.Group, key: str, dtype: type | None, ndim: int) -> np.ndarray:
        field = f"{group.name.rstrip('/')}/{key}"
        ds = group.get(key)
        if not isinstance(ds, h5py.Dataset):
            raise self.error(field, "missing dataset")
        if dtype is None:  # variable-length strings
            if h5py.check_string_dtype(ds.dtype) is None or ds.ndim != ndim:
                raise self.error(field, f"expected a {ndim}-d string dataset, got {ds.dtype} {ds.shape}")
            return ds.asstr()[()]
        if ds.dtype != np.dtype(dtype) or ds.ndim != ndim:
            raise self.error(field, f"expected a {ndim}-d {np.dtype(dtype).name} dataset, got dtype "
                                    f"{ds.dtype} shape {ds.shape}")
        try:
            return ds[()]
        except (OSError, RuntimeError, ValueError) as exc:
            raise self.error(field, f"unreadable data, file corrupt or truncated ({exc})") from exc

    def header(self) -> None:
        name = self.f.attrs.get("format")
        if isinstance(name, bytes):
            name = name.decode("utf-8", "replace")
        if name != FORMAT_NAME:
            raise self.error("/@format", f"expected {FORMAT_NAME!r}, got {name!r}")
        version = self.attr(self.f, "format_version", int)
        if version != FORMAT_VERSION:
            raise self.error("/@format_version", f"expected {FORMAT_VERSION}, got {version}")

    def cameras(self) -> EpisodeCameras:
        g = self.f.get("cameras")
        if not isinstance(g, h5py.Group):
            raise self.error("/cameras", "missing group")
        return self.build("/cameras", EpisodeCameras, serials=tuple(self.array(g, "serials", None, 1)),
                          K=self.array(g, "K", np.float64, 3),
                          T_world_cam=self.array(g, "T_world_cam", np.float64, 3),
                          height=self.attr(g, "height", int), width=self.attr(g, "width", int),
                          dist_coeffs=self.array(g, "dist_coeffs", np.float64, 2))

    def clip_names(self) -> list[str]:
        g = self.f.get("clips")
        if not isinstance(g, h5py.Group):
            raise self.error("/clips", "missing group")
        n = self.attr(self.f, "n_clips", int)
        names = sorted(g.keys())
        if names != [f"{i:06d}" for i in range(n)]:
            raise self.error("/clips", f"expected groups 000000..{n - 1:06d} (n_clips = {n}), "
                                       f"got {names[:5]}{'...' if len(names) > 5 else ''}")
        return names

    def clip(self, index: int) -> Clip:
        names = self.clip_names()
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                or not 0 <= index < len(names):
            raise IndexError(f"clips: index {index!r} out of range for {len(names)} clips in {self.path}")
        g = self.f["clips"][names[index]]
        arrays = {k: self.array(g, k, dt, nd) for k, (dt, nd) in _CLIP_DATASETS.items()
                  if k != "segmentation" or k in g}
        return self.build(g.name, Clip, start_step=self.attr(g, "start_step", int), **arrays)

    def build(self, field: str, cls: type, **kwargs: object) -> object:
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            raise self.error(field, str(exc)) from exc


def _open(path: str | os.PathLike) -> tuple[Path, h5py.File]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: episode file {path} does not exist")
    try:
        return path, h5py.File(path, "r")
    except OSError as exc:
        raise EpisodeFormatError(f"episode {path}: not a readable HDF5 file, corrupt or truncated "
                                 f"({exc})") from exc


def read_episode(path: str | os.PathLike, *, clips: bool | Sequence[int] = True) -> Episode:
    """Read and validate an episode file.

    Args:
        path: the ``.h5`` file.
        clips: ``True`` reads every clip, ``False`` none (metadata, joints and cameras only, no
            images), a sequence of indices reads those clips in that order.

    Returns:
        The :class:`Episode`; its ``clips`` are the ones asked for.

    Raises:
        FileNotFoundError: no file at ``path``.
        EpisodeFormatError: not HDF5, truncated, wrong format name or version, a missing attribute or
            dataset, a wrong dtype or shape, or data that fails the episode checks.
        IndexError: a requested clip index does not exist.
    """
    if not isinstance(clips, bool) and not (isinstance(clips, Sequence) and all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in clips)):
        raise TypeError(f"clips: expected a bool or a sequence of clip indices, got {clips!r:.80}")
    path, f = _open(path)
    with f:
        try:
            return _read(_Reader(path, f), clips)
        except (OSError, KeyError, RuntimeError, UnicodeDecodeError) as exc:
            raise EpisodeFormatError(f"episode {path}: corrupt or truncated file ({exc})") from exc


def _read(r: _Reader, clips: bool | Sequence[int]) -> Episode:
    f = r.f
    r.header()
    n = len(r.clip_names())
    wanted = range(n) if clips is True else () if clips is False else list(clips)
    attrs = {k: r.attr(f, k, str) for k in _STR_ATTRS}
    hint = r.attr(f, "split_hint", str) if "split_hint" in f.attrs else None
    base = r.array(f, "T_world_base", np.float64, 2) if "T_world_base" in f else None
    return r.build("/", Episode, **attrs, split_hint=hint, T_world_base=base,
                   control_dt_s=r.attr(f, "control_dt_s", float), seed=r.attr(f, "seed", int),
                   horizon=r.attr(f, "horizon", int),
                   joint_names=tuple(r.array(f, "joint_names", None, 1)),
                   joint_positions=r.array(f, "joint_positions", np.float32, 2),
                   gripper_open=r.array(f, "gripper_open", np.float32, 1),
                   cameras=r.cameras(), clips=tuple(r.clip(i) for i in wanted))


def read_clip(path: str | os.PathLike, index: int) -> Clip:
    """Read and validate clip ``index`` of an episode file (checked against the episode's cameras,
    horizon and step count); raises like :func:`read_episode`."""
    return read_episode(path, clips=[index]).clips[0]


def num_clips(path: str | os.PathLike) -> int:
    """Number of clips in an episode file (format and clip groups checked, nothing else read)."""
    path, f = _open(path)
    with f:
        r = _Reader(path, f)
        r.header()
        return len(r.clip_names())


def list_episodes(directory: str | os.PathLike) -> list[Path]:
    """Episode files (``*.h5``, not hidden) directly in ``directory``, sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"directory: {directory} is not a directory")
    return sorted(p for p in directory.iterdir()
                  if p.suffix == EPISODE_SUFFIX and not p.name.startswith(".") and p.is_file())


def moved_mask(positions: np.ndarray, valid: np.ndarray, threshold_m: float) -> np.ndarray:
    """Which points move: largest valid displacement from t = 0 above ``threshold_m``.

    Args:
        positions: (T+1, N, 3) positions over a clip, m, world frame.
        valid: (T+1, N) bool validity; steps invalid at t or at t = 0 are ignored.
        threshold_m: displacement threshold, m.

    Returns:
        (N,) bool, True for moving points.
    """
    disp = np.linalg.norm(positions - positions[:1], axis=-1)
    disp = np.where(valid & valid[:1], disp, 0.0)
    return disp.max(axis=0) > threshold_m


def episode_summary(path: str | os.PathLike, *, moving_threshold_m: float = 0.01) -> dict:
    """Statistics of one episode without reading its images.

    Returns:
        dict with ``path``, ``robot``, ``source``, ``steps`` (S), ``clips``, ``views`` (V),
        ``horizon`` (T), ``points`` (total N over clips), ``moving_points`` (points whose largest
        displacement exceeds ``moving_threshold_m``), ``moving_point_share`` and ``moving_clip_share``
        (share of clips with at least one moving point; 0.0 when there are none).
    """
    ep = read_episode(path, clips=False)
    path, f = _open(path)
    with f:
        r = _Reader(path, f)
        points = moving = moving_clips = 0
        for name in r.clip_names():
            g = f["clips"][name]
            moved = moved_mask(r.array(g, "positions", np.float32, 3), r.array(g, "valid", np.bool_, 2),
                               moving_threshold_m)
            points, moving = points + moved.size, moving + int(moved.sum())
            moving_clips += int(moved.any())
        n = len(r.clip_names())
    return {"path": str(path), "robot": ep.robot_name, "source": ep.source, "steps": ep.num_steps,
            "clips": n, "views": ep.cameras.num_views, "horizon": ep.horizon, "points": points,
            "moving_points": moving, "moving_point_share": moving / points if points else 0.0,
            "moving_clip_share": moving_clips / n if n else 0.0}
