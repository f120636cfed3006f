"""Goal files: a point selection plus its motion, as JSON or YAML (chosen by the file suffix).

.. code-block:: yaml

    select: {box: [[x0, y0, z0], [x1, y1, z1]]}      # or {color: [r, g, b], tolerance: 0.1}
                                                     # or {indices: [i, ...]}
    transform: [[...4 rows of 4...]]                 # or translation: [x, y, z]
                                                     # or targets: [[x, y, z], ...] (one per point)
    keep_still: {box: [[...], [...]]}                # optional, any selector

Positions in m, world frame; colors in [0, 1]. Exactly one of ``transform`` / ``translation`` /
``targets``. :func:`load_goal_spec` reads and validates a file into a :class:`GoalSpec`;
:meth:`GoalSpec.resolve` turns it into a :class:`~pointworld.planning.goals.PointGoal` over an observed
cloud. Errors name the file and the offending key.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

from pointworld.geometry.checks import require_finite, require_floating, require_shape
from pointworld.geometry.se3 import check_rigid_transform
from pointworld.planning.goals import (
    PointGoal,
    rigid_goal,
    select_box,
    select_color,
    select_indices,
    targets_goal,
    translation_goal,
)

_SELECTORS = ("box", "color", "indices")
_MOTIONS = ("transform", "translation", "targets")


def _number_array(where: str, value: object, shape: tuple[int | None, ...]) -> list:
    """Check a nested list of finite numbers against ``shape`` (None = any length >= 1)."""
    try:
        t = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        t = None
    ok = t is not None and t.dim() == len(shape) and all(
        (s is None and d >= 1) or s == d for s, d in zip(shape, t.shape)) and bool(torch.isfinite(t).all())
    if not ok or isinstance(value, (str, bool)):
        dims = "x".join("P" if s is None else str(s) for s in shape)
        raise ValueError(f"{where}: expected a {dims} array of finite numbers, got {value!r}")
    return t.tolist()


def _parse_selector(where: str, spec: object) -> dict:
    if not isinstance(spec, dict):  # malformed file content: a ValueError like any other format error
        raise ValueError(f"{where}: expected a mapping with one of {list(_SELECTORS)}, got {spec!r}")  # noqa: TRY004
    kinds = [k for k in _SELECTORS if k in spec]
    extra = set(spec) - set(_SELECTORS) - ({"tolerance"} if "color" in spec else set())
    if len(kinds) != 1 or extra:
        raise ValueError(f"{where}: expected exactly one of {list(_SELECTORS)} (plus 'tolerance' with "
                         f"'color'), got keys {sorted(spec)}")
    kind = kinds[0]
    if kind == "box":
        box = _number_array(f"{where}.box", spec["box"], (2, 3))
        if any(a > b for a, b in zip(*box)):
            raise ValueError(f"{where}.box: expected [[min x, y, z], [max x, y, z]] with min <= max, got {box}")
        return {"box": box}
    if kind == "color":
        rgb = _number_array(f"{where}.color", spec["color"], (3,))
        tol = spec.get("tolerance", 0.1)
        if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not 0 <= tol < float("inf"):
            raise ValueError(f"{where}.tolerance: expected a number >= 0, got {tol!r}")
        if any(not 0 <= c <= 1 for c in rgb):
            raise ValueError(f"{where}.color: expected [r, g, b] in [0, 1], got {rgb}")
        return {"color": rgb, "tolerance": float(tol)}
    idx = spec["indices"]
    if not isinstance(idx, list) or not idx or any(isinstance(i, bool) or not isinstance(i, int) or i < 0
                                                  for i in idx) or len(set(idx)) != len(idx):
        raise ValueError(f"{where}.indices: expected a non-empty list of distinct ints >= 0, got {idx!r}")
    return {"indices": list(idx)}


def _select(spec: dict, where: str, points: torch.Tensor, colors: torch.Tensor | None) -> torch.Tensor:
    if "box" in spec:
        return select_box(points, spec["box"][0], spec["box"][1])
    if "color" in spec:
        if colors is None:
            raise ValueError(f"{where}.color: selecting by color needs the points' colors, got colors=None")
        return select_color(colors, spec["color"], spec["tolerance"])
    if max(spec["indices"]) >= points.shape[0]:
        raise ValueError(f"{where}.indices: expected indices < {points.shape[0]} (number of points), got "
                         f"max {max(spec['indices'])}")
    return select_indices(points.shape[0], spec["indices"]).to(points.device)


@dataclass(frozen=True)
class GoalSpec:
    """A parsed goal file (format in the module docstring).

    Attributes:
        select: the selector, ``{"box": [[3], [3]]}``, ``{"color": [3], "tolerance": t}`` or
            ``{"indices": [...]}``.
        motion: ``"transform"``, ``"translation"`` or ``"targets"``; value: its nested list.
        keep_still: optional selector of points that should not move.
        source: where it came from (file path), for messages.
    """

    select: dict
    motion: str
    value: list
    keep_still: dict | None = None
    source: str = "<goal>"

    def resolve(self, points: torch.Tensor, colors: torch.Tensor | None = None) -> PointGoal:
        """The goal over an observed cloud: points (N, 3), m, world frame; colors (N, 3) in [0, 1]
        (needed by color selectors). ``targets`` are matched to the selected points in the order the
        ``indices`` selector lists them, else in ascending point order (their count must match)."""
        p = require_finite("points", require_shape("points", require_floating("points", points), (None, 3),
                                                  max_leading=0))
        where = f"goal file {self.source}: select"
        sel = _select(self.select, where, p, colors)
        keep = None if self.keep_still is None else _select(self.keep_still, f"goal file {self.source}: "
                                                            f"keep_still", p, colors)
        selector = f"{where} {self.select}"
        if self.motion == "transform":
            return rigid_goal(p, sel, torch.tensor(self.value, dtype=p.dtype, device=p.device), keep, selector)
        if self.motion == "translation":
            return translation_goal(p, sel, self.value, keep, selector)
        targets = torch.tensor(self.value, dtype=p.dtype, device=p.device)
        order = self.select.get("indices")
        if order is not None and len(order) == targets.shape[0]:  # listed order -> ascending point order
            targets = targets[torch.tensor(order, device=p.device).argsort()]
        count = int(sel.sum())
        if count and targets.shape[0] != count:
            raise ValueError(f"goal file {self.source}: targets: expected one target per selected point "
                             f"({count}), got {targets.shape[0]}")
        return targets_goal(p, sel, targets, keep, selector)


def parse_goal_spec(data: object, source: str = "<goal>") -> GoalSpec:
    """Validate a goal mapping (as read from a goal file) into a :class:`GoalSpec`; ``ValueError``
    messages name ``source`` and the offending key."""
    if not isinstance(data, dict):
        raise ValueError(  # noqa: TRY004 (malformed file content)
            f"goal file {source}: expected a mapping at the top level, got {type(data).__name__}")
    unknown = set(data) - {"select", "keep_still", *_MOTIONS}
    motions = [m for m in _MOTIONS if m in data]
    if "select" not in data or len(motions) != 1 or unknown:
        raise ValueError(f"goal file {source}: expected keys 'select', exactly one of {list(_MOTIONS)} and "
                         f"optionally 'keep_still', got keys {sorted(data)}")
    select = _parse_selector(f"goal file {source}: select", data["select"])
    motion = motions[0]
    shape = {"transform": (4, 4), "translation": (3,), "targets": (None, 3)}[motion]
    value = _number_array(f"goal file {source}: {motion}", data[motion], shape)
    if motion == "transform":
        check_rigid_transform(f"goal file {source}: transform", torch.tensor(value, dtype=torch.float64))
    keep = data.get("keep_still")
    keep = None if keep is None else _parse_selector(f"goal file {source}: keep_still", keep)
    return GoalSpec(select=select, motion=motion, value=value, keep_still=keep, source=source)


def load_goal_spec(path: str | Path) -> GoalSpec:
    """Read a goal file: ``.json``, or ``.yaml`` / ``.yml`` (format in the module docstring).

    Raises:
        FileNotFoundError: no such file. ValueError: unknown suffix, unparsable text, or content not in
            the format (the message names the file and the key).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: goal file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in (".json", ".yaml", ".yml"):
        raise ValueError(f"path: expected a goal file ending in .json, .yaml or .yml, got {str(path)!r}")
    text = path.read_text()
    try:
        data = json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"goal file {str(path)!r}: cannot parse it as {suffix[1:].upper()}: {exc}") from exc
    return parse_goal_spec(data, source=str(path))
