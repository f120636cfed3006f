"""Metadata of a dataset directory: its robots, its episodes and their train/val/test split.

A dataset is a directory of episode files (``<name>.h5``) plus ``dataset.json`` (layout in
``SCHEMA.md``). Splits are **by episode**, never by clip, so no two splits share a context frame or a
trajectory. The test split holds every episode with an object of a held-out shape or size, so test
scenes contain objects never seen in training; the other episodes go to val with probability
``val_fraction``, decided by a seeded hash of the episode name (adding episodes never moves old ones).
The rule itself is stored in the metadata. Objects are dicts as in an episode's scene description:
``{"shape": str, "size_m": float | [float, ...], ...}``; an object's size is its largest extent.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pointworld.atomic import atomic_open
from pointworld.data.episode_io import list_episodes, num_clips, read_episode
from pointworld.errors import EpisodeFormatError

FORMAT_NAME = "pointworld.dataset"
FORMAT_VERSION = 1
META_FILE = "dataset.json"
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SplitRule:
    """How episodes are split.

    Attributes:
        held_out_shapes: object shapes (e.g. ``"cross"``) that only appear in the test split.
        held_out_size_range_m: ``(lo, hi)`` m; objects whose largest extent lies in it are test-only.
        val_fraction: probability in [0, 1) that a non-test episode goes to val.
        seed: seed of the train/val assignment.
    """

    held_out_shapes: tuple[str, ...] = ()
    held_out_size_range_m: tuple[float, float] | None = None
    val_fraction: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        shapes = tuple(self.held_out_shapes)
        if isinstance(self.held_out_shapes, str) or not all(isinstance(s, str) and s for s in shapes):
            raise ValueError(f"held_out_shapes: expected a sequence of shape names, got {shapes!r}")
        rng = self.held_out_size_range_m
        if rng is not None:
            rng = tuple(rng)
            if len(rng) != 2 or not all(isinstance(x, (int, float)) and not isinstance(x, bool)
                                        and math.isfinite(x) for x in rng) or not 0 <= rng[0] <= rng[1]:
                raise ValueError(f"held_out_size_range_m: expected (lo, hi) metres with 0 <= lo <= hi, "
                                 f"got {self.held_out_size_range_m!r}")
            rng = (float(rng[0]), float(rng[1]))
        vf = self.val_fraction
        if isinstance(vf, bool) or not isinstance(vf, (int, float)) or not 0 <= vf < 1:
            raise ValueError(f"val_fraction: expected a number in [0, 1), got {vf!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed: expected an integer, got {self.seed!r}")
        for key, value in (("held_out_shapes", shapes), ("held_out_size_range_m", rng),
                           ("val_fraction", float(vf))):
            object.__setattr__(self, key, value)


def object_size_m(obj: Mapping) -> float | None:
    """Largest extent of an object dict (``size_m`` scalar or list), m; ``None`` if it has none."""
    size = obj.get("size_m")
    values = [size] if isinstance(size, (int, float)) else size if isinstance(size, (list, tuple)) else []
    values = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return max(values) if values else None


def is_held_out(objects: Sequence[Mapping], rule: SplitRule) -> bool:
    """True if any object has a held-out shape or a size inside the held-out range."""
    for obj in objects:
        if obj.get("shape") in rule.held_out_shapes:
            return True
        size = object_size_m(obj)
        lo_hi = rule.held_out_size_range_m
        if lo_hi is not None and size is not None and lo_hi[0] <= size <= lo_hi[1]:
            return True
    return False


def _unit_hash(seed: int, name: str) -> float:
    digest = hashlib.blake2b(f"{seed}\x00{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign_splits(episode_objects: Mapping[str, Sequence[Mapping]], rule: SplitRule | None = None, *,
                  held_out_shapes: Sequence[str] = (),
                  held_out_size_range: tuple[float, float] | None = None,
                  val_fraction: float = 0.1, seed: int = 0) -> dict[str, str]:
    """Split episodes (never clips) into ``"train"``, ``"val"`` and ``"test"``.

    Args:
        episode_objects: episode name -> its objects (dicts with ``shape`` and ``size_m``).
        rule: held-out shapes/sizes (-> test) and the seeded val fraction for the rest; if ``None``
            it is built from the keyword arguments (same meaning as the :class:`SplitRule` fields,
            ``held_out_size_range`` in m).

    Returns:
        episode name -> split, deterministic for a given rule; an episode's split does not depend on
        the other episodes.
    """
    if rule is None:
        rule = SplitRule(tuple(held_out_shapes), held_out_size_range, val_fraction, seed)
    if not isinstance(rule, SplitRule):
        raise TypeError(f"rule: expected a SplitRule, got {type(rule).__name__}")
    out = {}
    for name, objects in episode_objects.items():
        if is_held_out(objects, rule):
            out[name] = "test"
        else:
            out[name] = "val" if _unit_hash(rule.seed, name) < rule.val_fraction else "train"
    return out


@dataclass(frozen=True)
class EpisodeEntry:
    """One episode of a dataset: robot name, split, number of clips, object shapes in its scene."""

    robot: str
    split: str
    n_clips: int
    object_shapes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.robot, str) or not self.robot:
            raise ValueError(f"robot: expected a non-empty string, got {self.robot!r}")
        if self.split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {self.split!r}")
        if isinstance(self.n_clips, bool) or not isinstance(self.n_clips, int) or self.n_clips < 0:
            raise ValueError(f"n_clips: expected an integer >= 0, got {self.n_clips!r}")
        shapes = tuple(self.object_shapes)
        if isinstance(self.object_shapes, str) or not all(isinstance(s, str) for s in shapes):
            raise ValueError(f"object_shapes: expected a sequence of strings, got {self.object_shapes!r}")
        object.__setattr__(self, "object_shapes", shapes)


@dataclass(frozen=True)
class DatasetMeta:
    """Contents of ``dataset.json``.

    Attributes:
        robots: names of the robots in the dataset (sorted, unique); covers every episode's robot.
        episodes: episode name (file name without ``.h5``) -> :class:`EpisodeEntry`.
        split_rule: the rule the splits were made with.
        format_version: version of the metadata format.
    """

    robots: tuple[str, ...]
    episodes: Mapping[str, EpisodeEntry]
    split_rule: SplitRule = field(default_factory=SplitRule)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        robots = tuple(self.robots)
        if list(robots) != sorted(set(robots)) or not all(isinstance(r, str) and r for r in robots):
            raise ValueError(f"robots: expected sorted unique non-empty names, got {robots!r}")
        if self.format_version != FORMAT_VERSION:
            raise ValueError(f"format_version: expected {FORMAT_VERSION}, got {self.format_version!r}")
        if not isinstance(self.split_rule, SplitRule):
            raise TypeError(f"split_rule: expected a SplitRule, got {type(self.split_rule).__name__}")
        episodes = dict(self.episodes)
        for name, entry in episodes.items():
            if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
                raise ValueError(f"episodes: expected file-stem names, got {name!r}")
            if not isinstance(entry, EpisodeEntry):
                raise TypeError(f"episodes[{name!r}]: expected an EpisodeEntry, got {type(entry).__name__}")
            if entry.robot not in robots:
                raise ValueError(f"episodes[{name!r}].robot: {entry.robot!r} is not in robots {robots}")
            if entry.split != "test" and set(entry.object_shapes) & set(self.split_rule.held_out_shapes):
                raise ValueError(f"episodes[{name!r}].split: has a held-out shape but split {entry.split!r}")
        object.__setattr__(self, "robots", robots)
        object.__setattr__(self, "episodes", dict(sorted(episodes.items())))

    def names(self, split: str) -> list[str]:
        """Sorted names of the episodes in ``split``."""
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {SPLITS}, got {split!r}")
        return [n for n, e in self.episodes.items() if e.split == split]


def build_meta(directory: str | os.PathLike, rule: SplitRule) -> DatasetMeta:
    """Scan the episode files of ``directory`` (metadata only) and split them with ``rule``."""
    objects, entries = {}, {}
    for path in list_episodes(directory):
        ep = read_episode(path, clips=False)
        objects[path.stem] = [o for o in ep.scene_objects() if isinstance(o, dict)]
        shapes = tuple(sorted({str(o["shape"]) for o in objects[path.stem] if "shape" in o}))
        entries[path.stem] = (ep.robot_name, num_clips(path), shapes)
    splits = assign_splits(objects, rule)
    episodes = {n: EpisodeEntry(r, splits[n], c, s) for n, (r, c, s) in entries.items()}
    return DatasetMeta(tuple(sorted({e.robot for e in episodes.values()})), episodes, rule)


def save_meta(meta: DatasetMeta, directory: str | os.PathLike) -> Path:
    """Write ``meta`` atomically to ``directory/dataset.json``; returns that path."""
    if not isinstance(meta, DatasetMeta):
        raise TypeError(f"meta: expected a DatasetMeta, got {type(meta).__name__}")
    doc = {"format": FORMAT_NAME, "format_version": meta.format_version, "robots": list(meta.robots),
           "split_rule": asdict(meta.split_rule),
           "episodes": {n: asdict(e) for n, e in meta.episodes.items()}}
    path = Path(directory) / META_FILE
    with atomic_open(path, "w") as fh:
        json.dump(doc, fh, indent=1)
    return path


def load_meta(directory: str | os.PathLike) -> DatasetMeta:
    """Read and validate ``directory/dataset.json``.

    Raises:
        FileNotFoundError: no metadata file.
        EpisodeFormatError: invalid JSON, wrong format or version, missing keys or bad values; the
            message names the file and the field.
    """
    path = Path(directory) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"directory: {path} does not exist; not a pointworld dataset")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EpisodeFormatError(f"dataset metadata {path}: invalid JSON ({exc})") from exc
    field_name = "format"
    try:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT_NAME:
            got = doc.get("format") if isinstance(doc, dict) else doc
            raise ValueError(f"expected {FORMAT_NAME!r}, got {got!r:.80}")
        for field_name in ("format_version", "robots", "split_rule", "episodes"):
            if field_name not in doc:
                raise ValueError("missing key")
        field_name = "format_version"
        if doc["format_version"] != FORMAT_VERSION:
            raise ValueError(f"expected {FORMAT_VERSION}, got {doc['format_version']!r}")
        field_name = "split_rule"
        rule = SplitRule(**doc["split_rule"])
        field_name = "episodes"
        episodes = {n: EpisodeEntry(**e) for n, e in doc["episodes"].items()}
        field_name = "robots"
        return DatasetMeta(tuple(doc["robots"]), episodes, rule, doc["format_version"])
    except (ValueError, TypeError, AttributeError) as exc:
        raise EpisodeFormatError(f"dataset metadata {path}: {field_name}: {exc}") from exc
