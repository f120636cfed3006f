"""Point goals for the planner: which observed points should move, and where to (world frame, m).

A :class:`PointGoal` names P selected scene points by index and gives each a target position; the
costs (:mod:`pointworld.planning.costs`) compare the predicted positions of those points with the
targets. Goals come from selections (:func:`select_box`, :func:`select_color`, :func:`select_indices`)
plus a motion (:func:`rigid_goal`, :func:`translation_goal`, :func:`targets_goal`), from a simulated
task (:func:`goal_from_task`), or from a goal file (:mod:`pointworld.planning.goal_file`).
A ``keep_still`` mask never includes goal points (they are removed from it: they are meant to move).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from pointworld.geometry.checks import (
    require_dtype,
    require_finite,
    require_floating,
    require_shape,
)
from pointworld.geometry.pointcloud import crop_box_mask
from pointworld.geometry.se3 import check_rigid_transform, transform_points


@dataclass(frozen=True)
class PointGoal:
    """Targets for P selected scene points.

    Attributes:
        indices: (P,) int64 indices of the selected points in the scene cloud (N points), ascending.
        targets: (P, 3) target positions of those points, m, world frame.
        keep_still: optional (N,) bool mask of points that should not move (never a selected point).
    """

    indices: torch.Tensor
    targets: torch.Tensor
    keep_still: torch.Tensor | None = None

    def __post_init__(self) -> None:
        idx = require_shape("indices", require_dtype("indices", self.indices, torch.int64), (None,),
                            max_leading=0)
        if idx.numel() == 0:
            raise ValueError("indices: goal selects no points (expected P >= 1 indices)")
        if bool((idx < 0).any()):
            raise ValueError(f"indices: expected non-negative point indices, got min {int(idx.min())}")
        require_finite("targets", require_shape("targets", require_floating("targets", self.targets),
                                                (idx.shape[0], 3), max_leading=0))
        if self.keep_still is not None:
            keep = require_shape("keep_still", require_dtype("keep_still", self.keep_still, torch.bool),
                                 (None,), max_leading=0)
            if int(idx.max()) >= keep.shape[0]:
                raise ValueError(f"indices: expected indices < {keep.shape[0]} (the length of keep_still), "
                                 f"got max {int(idx.max())}")

    @property
    def num_points(self) -> int:
        """P, the number of selected points."""
        return int(self.indices.shape[0])

    def selection(self, n: int) -> torch.Tensor:
        """(N,) bool mask of the selected points for a cloud of ``n`` points."""
        if int(self.indices.max()) >= n:
            raise ValueError(f"n: expected more than {int(self.indices.max())} points for this goal, got {n}")
        return torch.zeros(n, dtype=torch.bool, device=self.indices.device).index_fill_(0, self.indices, True)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PointGoal:
        """Copy on ``device`` with ``targets`` in ``dtype`` (defaults: unchanged)."""
        keep = None if self.keep_still is None else self.keep_still.to(device)
        return PointGoal(self.indices.to(device), self.targets.to(device=device, dtype=dtype), keep)


def _points(name: str, points: object) -> torch.Tensor:
    return require_shape(name, require_floating(name, points), (None, 3), max_leading=0)


def _vector(name: str, value: object, like: torch.Tensor, size: int = 3) -> torch.Tensor:
    v = torch.as_tensor(value, dtype=like.dtype, device=like.device) if not isinstance(value, torch.Tensor) \
        else require_floating(name, value).to(dtype=like.dtype, device=like.device)
    return require_finite(name, require_shape(name, v, (size,), max_leading=0))


def _mask(name: str, mask: object, n: int) -> torch.Tensor:
    return require_shape(name, require_dtype(name, mask, torch.bool), (n,), max_leading=0)


def select_box(points: torch.Tensor, low: torch.Tensor | Sequence[float], high: torch.Tensor | Sequence[float],
               mask: torch.Tensor | None = None) -> torch.Tensor:
    """Points inside an axis-aligned box (bounds inclusive).

    Args:
        points: (N, 3) scene points, m, world frame.
        low, high: (3,) box corners, m, world frame, ``low <= high``.
        mask: optional (N,) bool, points allowed at all (e.g. valid points).

    Returns:
        (N,) bool selection.
    """
    p = _points("points", points)
    inside = crop_box_mask(p, _vector("low", low, p), _vector("high", high, p))
    return inside if mask is None else inside & _mask("mask", mask, p.shape[0]).to(p.device)


def select_color(colors: torch.Tensor, rgb: torch.Tensor | Sequence[float], tolerance: float) -> torch.Tensor:
    """Points whose color lies within ``tolerance`` (Euclidean distance in RGB) of ``rgb``.

    Args:
        colors: (N, 3) point colors in [0, 1].
        rgb: (3,) reference color in [0, 1].
        tolerance: largest accepted distance, in [0, sqrt(3)].

    Returns:
        (N,) bool selection.
    """
    c = require_shape("colors", require_floating("colors", colors), (None, 3), max_leading=0)
    ref = _vector("rgb", rgb, c)
    if bool(((ref < 0) | (ref > 1)).any()):
        raise ValueError(f"rgb: expected a color in [0, 1], got {ref.tolist()}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance < float("inf"):
        raise ValueError(f"tolerance: expected a finite number >= 0, got {tolerance!r}")
    return torch.linalg.vector_norm(c - ref, dim=-1) <= tolerance


def select_indices(n: int, indices: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """(N,) bool selection of the given point indices among ``n`` points (each in [0, n))."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: expected an int >= 1 (number of points), got {n!r}")
    idx = torch.as_tensor(indices)
    if idx.dim() != 1 or (idx.numel() and (idx.is_floating_point() or idx.dtype == torch.bool)):
        raise ValueError(f"indices: expected a 1-D sequence of ints, got {indices!r}")
    idx = idx.to(torch.int64)
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ValueError(f"indices: expected values in [0, {n}), got values in [{int(idx.min())}, {int(idx.max())}]")
    return torch.zeros(n, dtype=torch.bool, device=idx.device).index_fill_(0, idx, True)


def _goal(points: torch.Tensor, selection: object, targets_fn: Callable[[torch.Tensor], torch.Tensor],
          keep_still: torch.Tensor | None, selector: str) -> PointGoal:
    sel = _mask("selection", selection, points.shape[0]).to(points.device)
    idx = sel.nonzero()[:, 0]
    if idx.numel() == 0:
        raise ValueError(f"goal selects no points: {selector} matched none of the {points.shape[0]} points")
    keep = None
    if keep_still is not None:
        keep = _mask("keep_still", keep_still, points.shape[0]).to(points.device) & ~sel
    return PointGoal(indices=idx, targets=targets_fn(points[idx]), keep_still=keep)


def rigid_goal(points: torch.Tensor, selection: torch.Tensor, T_goal_start: torch.Tensor,
               keep_still: torch.Tensor | None = None, selector: str = "selection") -> PointGoal:
    """Goal: the selected points should move by a rigid motion, ``target = T_goal_start @ p``.

    Args:
        points: (N, 3) scene points, m, world frame.
        selection: (N,) bool, the points to move.
        T_goal_start: (4, 4) rigid motion in the world frame (cast to the points' dtype/device).
        keep_still: optional (N,) bool, points that should stay (selected points are removed from it).
        selector: how the selection was made, for the error message.

    Raises:
        ValueError: the selection is empty ("goal selects no points ..."), wrong shapes, a
            non-rigid transform.
    """
    p = require_finite("points", _points("points", points))
    T = T_goal_start
    if isinstance(T, torch.Tensor) and T.is_floating_point():
        T = T.to(dtype=p.dtype, device=p.device)
    T = require_shape("T_goal_start", check_rigid_transform("T_goal_start", T), (4, 4), max_leading=0)
    return _goal(p, selection, lambda sel: transform_points(T, sel), keep_still, selector)


def translation_goal(points: torch.Tensor, selection: torch.Tensor, offset: torch.Tensor | Sequence[float],
                     keep_still: torch.Tensor | None = None, selector: str = "selection") -> PointGoal:
    """Goal: the selected points should move by ``offset`` (3,), m, world frame (see :func:`rigid_goal`)."""
    p = require_finite("points", _points("points", points))
    d = _vector("offset", offset, p)
    return _goal(p, selection, lambda sel: sel + d, keep_still, selector)


def targets_goal(points: torch.Tensor, selection: torch.Tensor, targets: torch.Tensor,
                 keep_still: torch.Tensor | None = None, selector: str = "selection") -> PointGoal:
    """Goal: each selected point should reach its own target (see :func:`rigid_goal`).

    Args:
        points: (N, 3) scene points, m, world frame.
        selection: (N,) bool, the P points to move.
        targets: (P, 3) targets of the selected points in ascending point order, m, world frame.
    """
    p = require_finite("points", _points("points", points))
    t = require_finite("targets", require_floating("targets", targets)).to(p)
    count = int(_mask("selection", selection, p.shape[0]).sum())
    if t.dim() != 2 or t.shape[1] != 3 or (count and t.shape[0] != count):
        raise ValueError(f"targets: expected one target per selected point ({count}, 3), got {tuple(t.shape)}")
    return _goal(p, selection, lambda _: t, keep_still, selector)


def goal_from_task(task: object, points: torch.Tensor) -> PointGoal:
    """Goal of a simulated :class:`pointworld.sim.task_goals.Task`: the points inside its selection box
    should move by its ``T_goal_start``.

    Args:
        task: the task (``select_min_world``, ``select_max_world``, ``T_goal_start`` numpy arrays).
        points: (N, 3) observed scene points, m, world frame.
    """
    for attr in ("select_min_world", "select_max_world", "T_goal_start"):
        if not hasattr(task, attr):
            raise TypeError(f"task: expected a pointworld.sim Task (with {attr}), got {type(task).__name__}")
    p = require_finite("points", _points("points", points))
    lo = torch.tensor(task.select_min_world, dtype=p.dtype, device=p.device)
    hi = torch.tensor(task.select_max_world, dtype=p.dtype, device=p.device)
    selector = (f"the selection box of the {getattr(task, 'kind', '?')} task on {getattr(task, 'target', '?')!r} "
                f"(min {lo.tolist()}, max {hi.tolist()})")
    T = torch.tensor(task.T_goal_start, dtype=p.dtype, device=p.device)
    return rigid_goal(p, select_box(p, lo, hi), T, selector=selector)
