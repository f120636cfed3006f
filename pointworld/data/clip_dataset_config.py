"""Configuration of the clip dataset (:class:`~pointworld.data.clip_dataset.ClipDataset`).

Plain dataclasses, validated on construction; sequences (e.g. lists from a YAML file) are converted to
tuples and source mappings to :class:`DataSource`, so a config built from Hydra/JSON equals one built
in code. :meth:`ClipDatasetConfig.to_dict` gives the JSON-able form stored in checkpoints.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from pointworld.geometry.checks import require_int, require_positive
from pointworld.model.world_model_config import DEFAULT_ROBOT_TYPES

#: Accepted values of ``ClipDatasetConfig.split``.
DATASET_SPLITS = ("train", "val", "test", "all")


@dataclass(frozen=True)
class DataSource:
    """One dataset directory (with ``dataset.json``) and its sampling weight (finite, > 0)."""

    path: str
    weight: float = 1.0

    def __post_init__(self) -> None:
        path = os.fspath(self.path) if isinstance(self.path, os.PathLike) else self.path
        if not isinstance(path, str) or not path:
            raise ValueError(f"path: expected a non-empty dataset directory path, got {self.path!r}")
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "weight", require_positive("weight", self.weight))


def _xyz(name: str, value: object) -> tuple[float, float, float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value):
        raise ValueError(f"{name}: expected three finite numbers (x, y, z) in m or None, got {value!r}")
    return (float(value[0]), float(value[1]), float(value[2]))


def _names(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, (list, tuple)) \
            or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{name}: expected a sequence of non-empty strings, got {value!r}")
    return tuple(value)


@dataclass
class ClipDatasetConfig:
    """What the clip dataset reads and how it builds a sample.

    Attributes:
        sources: dataset directories with weights (:class:`DataSource` or mappings ``{path, weight}``).
        split: ``"train"``, ``"val"``, ``"test"`` (from each ``dataset.json``) or ``"all"``.
        grid_size_m: voxel edge of the scene grid, m (> 0).
        max_points: cap on the scene points per sample after voxelization (>= 1).
        views: (min, max) number of cameras drawn per sample when ``random_views`` (clipped to the
            episode's V); ``random_views=False`` uses every view.
        random_views: draw a random view subset per sample (training) or use all views (evaluation).
        crop_min_m, crop_max_m: corners of the world-frame workspace box, m; both None = no crop.
        robot_points: M, robot surface points sampled once per robot (>= 1).
        robot_links: fnmatch patterns of the links the robot points are sampled on.
        robot_types: the model's robot vocabulary (robot i has type i + 1; others type 0 = unknown).
        normals_k: neighbours of the normal estimate (>= 3).
        seed: seed of every sample's random generator (int >= 0).
    """

    sources: tuple[DataSource, ...]
    split: str = "train"
    grid_size_m: float = 0.015
    max_points: int = 4096
    views: tuple[int, int] = (1, 3)
    random_views: bool = True
    crop_min_m: tuple[float, float, float] | None = None
    crop_max_m: tuple[float, float, float] | None = None
    robot_points: int = 256
    robot_links: tuple[str, ...] = ("*hand", "*finger")
    robot_types: tuple[str, ...] = DEFAULT_ROBOT_TYPES
    normals_k: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        self._check_sources()
        if self.split not in DATASET_SPLITS:
            raise ValueError(f"split: expected one of {DATASET_SPLITS}, got {self.split!r}")
        self.grid_size_m = require_positive("grid_size_m", self.grid_size_m)
        for name, low in (("max_points", 1), ("robot_points", 1), ("normals_k", 3), ("seed", 0)):
            require_int(name, getattr(self, name), low)
        views = tuple(self.views) if isinstance(self.views, (list, tuple)) else ()
        if len(views) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in views) \
                or not 1 <= views[0] <= views[1]:
            raise ValueError(f"views: expected (min, max) ints with 1 <= min <= max, got {self.views!r}")
        self.views = views  # type: ignore[assignment]
        if not isinstance(self.random_views, bool):
            raise TypeError(f"random_views: expected a bool, got {self.random_views!r}")
        self._check_crop()
        self.robot_links = _names("robot_links", self.robot_links)
        self.robot_types = _names("robot_types", self.robot_types)
        if len(set(self.robot_types)) != len(self.robot_types):
            raise ValueError(f"robot_types: expected unique names, got {self.robot_types!r}")

    def _check_sources(self) -> None:
        sources = self.sources
        if isinstance(sources, (str, os.PathLike, Mapping, DataSource)) \
                or not isinstance(sources, (list, tuple)) or not sources:
            raise ValueError(f"sources: expected a non-empty sequence of DataSource or {{path, weight}} "
                             f"mappings, got {sources!r}")
        out = []
        for k, s in enumerate(sources):
            if isinstance(s, Mapping):
                unknown = set(s) - {"path", "weight"}
                if unknown or "path" not in s:
                    raise ValueError(f"sources[{k}]: expected keys path (and weight), got {sorted(s)}")
                s = DataSource(**s)
            if not isinstance(s, DataSource):
                raise TypeError(f"sources[{k}]: expected a DataSource or a mapping, got {type(s).__name__}")
            out.append(s)
        self.sources = tuple(out)

    def _check_crop(self) -> None:
        lo, hi = _xyz("crop_min_m", self.crop_min_m), _xyz("crop_max_m", self.crop_max_m)
        if (lo is None) != (hi is None):
            raise ValueError(f"crop_min_m, crop_max_m: expected both or neither, got {lo!r} and {hi!r}")
        if lo is not None and not all(a <= b for a, b in zip(lo, hi)):
            raise ValueError(f"crop_min_m: expected <= crop_max_m on every axis, got {lo} and {hi}")
        self.crop_min_m, self.crop_max_m = lo, hi

    def to_dict(self) -> dict:
        """JSON-able dict of every field (tuples as lists); ``ClipDatasetConfig(**d)`` rebuilds it."""
        return json.loads(json.dumps(asdict(self)))
