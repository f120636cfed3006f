"""Light, checked reading of one clip's point arrays for training (no images).

:func:`~pointworld.data.episode_io.read_clip` decodes every dataset of a clip, images included, and
re-reads the episode's joints and cameras each time. A training sample needs neither the images nor a
fresh copy of the episode-level arrays, so :func:`read_clip_points` reads only ``points_world``,
``colors``, ``view_index``, ``positions`` and ``valid`` (plus ``start_step``), checked against the
episode's header with the same dtype/shape rules and error messages as the full reader
(:class:`~pointworld.errors.EpisodeFormatError` naming the file and the field). The header is an
:class:`~pointworld.data.episode.Episode` without clips (:func:`read_episode` with ``clips=False``),
which a caller may cache per file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from pointworld.data.episode import Episode
from pointworld.data.episode_io import _open, _Reader, read_episode
from pointworld.errors import EpisodeFormatError

#: The point datasets of a clip read for training: name -> (dtype, ndim).
_POINT_DATASETS = {"points_world": (np.float32, 2), "colors": (np.uint8, 2), "view_index": (np.int32, 1),
                   "positions": (np.float32, 3), "valid": (np.bool_, 2)}


@dataclass(frozen=True, eq=False)
class ClipPoints:
    """The point arrays of one clip (numpy, as stored).

    Attributes:
        start_step: control step of t = 0 in the episode.
        points_world: (N, 3) float32 observed scene points at t = 0, m, world frame.
        colors: (N, 3) uint8 RGB.
        view_index: (N,) int32 view in [0, V) each point was seen in.
        positions: (T+1, N, 3) float32 ground-truth positions over the clip, m, world frame.
        valid: (T+1, N) bool, False where the ground truth is unknown.
    """

    start_step: int
    points_world: np.ndarray
    colors: np.ndarray
    view_index: np.ndarray
    positions: np.ndarray
    valid: np.ndarray


def read_episode_header(path: str | os.PathLike) -> Episode:
    """The episode of ``path`` without clips (metadata, joints, cameras; fully validated).

    Raises:
        FileNotFoundError: no file at ``path``. EpisodeFormatError: see :func:`read_episode`.
    """
    return read_episode(path, clips=False)


def _check_clip(r: _Reader, field: str, header: Episode, start: int, a: dict[str, np.ndarray]) -> None:
    """Shape/value rules of ``SCHEMA.md`` for the point arrays; raises ``EpisodeFormatError``."""
    n = a["points_world"].shape[0]
    steps = header.horizon + 1
    expected = {"points_world": (n, 3), "colors": (n, 3), "view_index": (n,),
                "positions": (steps, n, 3), "valid": (steps, n)}
    for key, shape in expected.items():
        if a[key].shape != shape:
            raise r.error(f"{field}/{key}", f"expected shape {shape}, got {a[key].shape}")
    if not 0 <= start <= header.num_steps - 1 - header.horizon:
        raise r.error(f"{field}/@start_step", f"expected 0 <= start_step <= S - 1 - T = "
                                              f"{header.num_steps - 1 - header.horizon}, got {start}")
    views = header.cameras.num_views
    if n and not (0 <= a["view_index"].min() and a["view_index"].max() < views):
        raise r.error(f"{field}/view_index", f"expected values in [0, {views}), got "
                                             f"[{a['view_index'].min()}, {a['view_index'].max()}]")
    for key in ("points_world", "positions"):
        if not np.isfinite(a[key]).all():
            raise r.error(f"{field}/{key}", "expected finite values, got NaN/inf")


def read_clip_points(path: str | os.PathLike, index: int, header: Episode) -> ClipPoints:
    """Read and check the point arrays of clip ``index`` of the episode file ``path``.

    Args:
        path: the ``.h5`` episode file.
        index: clip index in [0, n_clips).
        header: that file's episode without clips (:func:`read_episode_header`); gives T, S and V.

    Returns:
        :class:`ClipPoints`.

    Raises:
        FileNotFoundError: no file at ``path``.
        EpisodeFormatError: not HDF5, truncated or corrupt, a missing or malformed dataset, shapes
            that disagree with the header, non-finite points, ``view_index`` out of range.
        IndexError: no clip ``index``.
    """
    if not isinstance(header, Episode):
        raise TypeError(f"header: expected an Episode, got {type(header).__name__}")
    path, f = _open(path)
    with f:
        r = _Reader(path, f)
        try:
            r.header()
            names = r.clip_names()
            if isinstance(index, bool) or not isinstance(index, (int, np.integer)) \
                    or not 0 <= index < len(names):
                raise IndexError(f"index: clip {index!r} out of range for {len(names)} clips in {path}")
            g = f["clips"][names[index]]
            arrays = {k: r.array(g, k, dt, nd) for k, (dt, nd) in _POINT_DATASETS.items()}
            start = r.attr(g, "start_step", int)
        except (OSError, KeyError, RuntimeError, UnicodeDecodeError) as exc:
            raise EpisodeFormatError(f"episode {path}: corrupt or truncated file ({exc})") from exc
        _check_clip(r, g.name, header, start, arrays)
    return ClipPoints(start_step=start, **arrays)
