"""A saved plan: everything needed to view or plot one :class:`~pointworld.planning.planner.PlanResult` later.

A :class:`PlanRecord` holds the observed scene (points, colors), the chosen action's predicted flow and
uncertainty, the robot's points along the plan, the goal, the kept top candidates and the optimizer's
cost history, as CPU float32 tensors. :func:`save_plan_record` writes it as one ``.npz`` (atomic, no
pickles) with ``format`` = ``pointworld-plan-record`` and ``version`` = :data:`PLAN_RECORD_VERSION`;
:func:`load_plan_record` checks both and every array's shape, and raises :class:`PlanRecordError`
naming the file and the problem for truncated, corrupt, foreign or newer files.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from pointworld.atomic import atomic_open
from pointworld.errors import PointworldError
from pointworld.geometry.checks import require_finite, require_positive, require_shape
from pointworld.planning.goals import PointGoal

PLAN_RECORD_FORMAT = "pointworld-plan-record"
PLAN_RECORD_VERSION = 1
_OPTIONAL = ("robot_points", "candidates", "candidate_costs")
_SCALARS = ("joint_names", "robot_name", "dt_s")


class PlanRecordError(PointworldError, ValueError):
    """A plan record file is missing entries, truncated, corrupt, of another format or a newer version."""


@dataclass(frozen=True, eq=False)
class PlanRecord:
    """Everything needed to view or plot one plan afterwards (CPU tensors; floats are float32).

    Attributes:
        points: (N, 3) scene points at t = 0, m, world frame. colors: (N, 3) RGB in [0, 1].
        displacement: (T, N, 3) predicted displacement of the chosen action, m, world frame.
        log_var: (T, N) its predicted log variance, log(m^2).
        robot_points: (T+1, M, 3) robot surface points along the plan, m, world frame, or None.
        goal_indices: (P,) int64 indices of the goal points. goal_targets: (P, 3) their targets, m, world.
        candidates: (C, T, N, 3) predicted displacement of the top-C candidates (best first), m, or None.
        candidate_costs: (C,) their costs (None exactly when ``candidates`` is None).
        cost_history: (I,) best cost after each optimizer iteration.
        q: (T+1, J) joint trajectory, rad or m. gripper_open: (T+1,) opening in [0, 1].
        joint_names: the J joint names. robot_name: the robot's name. dt_s: step duration, s.
    """

    points: torch.Tensor
    colors: torch.Tensor
    displacement: torch.Tensor
    log_var: torch.Tensor
    robot_points: torch.Tensor | None
    goal_indices: torch.Tensor
    goal_targets: torch.Tensor
    candidates: torch.Tensor | None
    candidate_costs: torch.Tensor | None
    cost_history: torch.Tensor
    q: torch.Tensor
    gripper_open: torch.Tensor
    joint_names: tuple[str, ...]
    robot_name: str
    dt_s: float

    def __post_init__(self) -> None:
        n = require_shape("points", self.points, (None, 3), max_leading=0).shape[0]
        require_shape("colors", self.colors, (n, 3), max_leading=0)
        t = require_shape("displacement", self.displacement, (None, n, 3), max_leading=0).shape[0]
        require_shape("log_var", self.log_var, (t, n), max_leading=0)
        if self.robot_points is not None:
            require_shape("robot_points", self.robot_points, (t + 1, None, 3), max_leading=0)
        p = require_shape("goal_indices", self.goal_indices, (None,), max_leading=0).shape[0]
        require_shape("goal_targets", self.goal_targets, (p, 3), max_leading=0)
        if self.goal_indices.dtype != torch.int64:
            raise TypeError(f"goal_indices: expected int64, got {self.goal_indices.dtype}")
        if p and not (0 <= int(self.goal_indices.min()) and int(self.goal_indices.max()) < n):
            raise ValueError(f"goal_indices: expected indices in [0, {n}), got range "
                             f"[{int(self.goal_indices.min())}, {int(self.goal_indices.max())}]")
        if (self.candidates is None) != (self.candidate_costs is None):
            raise ValueError("candidates, candidate_costs: expected both or neither, got only one of them")
        if self.candidates is not None:
            c = require_shape("candidates", self.candidates, (None, t, n, 3), max_leading=0).shape[0]
            require_shape("candidate_costs", self.candidate_costs, (c,), max_leading=0)
        require_shape("cost_history", self.cost_history, (None,), max_leading=0)
        require_shape("q", self.q, (t + 1, None), max_leading=0)
        require_shape("gripper_open", self.gripper_open, (t + 1,), max_leading=0)
        if len(self.joint_names) != self.q.shape[1]:
            raise ValueError(f"joint_names: expected {self.q.shape[1]} names (one per column of q), "
                             f"got {len(self.joint_names)}")
        for name in ("points", "colors", "displacement", "goal_targets"):
            require_finite(name, getattr(self, name))
        require_positive("dt_s", self.dt_s)

    @property
    def horizon(self) -> int:
        """T, the number of planned steps."""
        return int(self.displacement.shape[0])


def _cpu(x: torch.Tensor | None, dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
    return None if x is None else x.detach().to(device="cpu", dtype=dtype)


def plan_record(scene_points: torch.Tensor, scene_colors: torch.Tensor, plan: object, goal: PointGoal,
                robot_name: str, joint_names: Sequence[str], dt_s: float) -> PlanRecord:
    """Collect one plan into a :class:`PlanRecord` (CPU, float32).

    Args:
        scene_points: (N, 3) the planned-on scene points, m, world frame (the planner's ``scene.points[0]``).
        scene_colors: (N, 3) their RGB colors in [0, 1].
        plan: the :class:`~pointworld.planning.planner.PlanResult` (prediction with B = 1).
        goal: the :class:`PointGoal` the plan was made for (indices into the N points, targets m world).
        robot_name: the robot's name. joint_names: the J joint names of ``plan.q``. dt_s: step duration, s.
    """
    if not isinstance(goal, PointGoal):
        raise TypeError(f"goal: expected a PointGoal, got {type(goal).__name__}")
    pred = getattr(plan, "prediction", None)
    if pred is None or not hasattr(plan, "cost_history"):
        raise TypeError(f"plan: expected a PlanResult, got {type(plan).__name__}")
    require_shape("plan.prediction.displacement", pred.displacement, (1, None, None, 3), max_leading=0)
    costs = getattr(plan, "candidate_costs", None)
    return PlanRecord(
        points=_cpu(scene_points), colors=_cpu(scene_colors), displacement=_cpu(pred.displacement[0]),
        log_var=_cpu(pred.log_var[0]), robot_points=_cpu(plan.robot_points), goal_indices=_cpu(goal.indices, torch.int64),
        goal_targets=_cpu(goal.targets), candidates=_cpu(getattr(plan, "candidates", None)),
        candidate_costs=_cpu(costs), cost_history=torch.tensor(list(plan.cost_history), dtype=torch.float32),
        q=_cpu(plan.q), gripper_open=_cpu(plan.gripper_open), joint_names=tuple(str(j) for j in joint_names),
        robot_name=str(robot_name), dt_s=float(dt_s))


def save_plan_record(path: str | os.PathLike, record: PlanRecord) -> Path:
    """Write ``record`` as one ``.npz`` at ``path`` (atomic; parents created). Returns the path."""
    if not isinstance(record, PlanRecord):
        raise TypeError(f"record: expected a PlanRecord, got {type(record).__name__}")
    arrays = {"format": np.array(PLAN_RECORD_FORMAT), "version": np.array(PLAN_RECORD_VERSION),
              "joint_names": np.array(record.joint_names, dtype=str).reshape(-1),
              "robot_name": np.array(record.robot_name), "dt_s": np.array(record.dt_s)}
    for f in fields(PlanRecord):
        value = getattr(record, f.name)
        if f.name not in _SCALARS and value is not None:
            arrays[f.name] = value.numpy()
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        np.savez_compressed(fh, **arrays)
    return path


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise FileNotFoundError(f"plan record {path}: no such file")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, zipfile.LargeZipFile) as exc:
        raise PlanRecordError(f"plan record {path}: not a readable .npz (truncated or corrupt): "
                              f"{type(exc).__name__}: {exc}") from exc


def load_plan_record(path: str | os.PathLike) -> PlanRecord:
    """Read a plan record written by :func:`save_plan_record`.

    Raises:
        FileNotFoundError: no file at ``path``. PlanRecordError: truncated/corrupt file, another format,
        a newer version, a missing entry, or arrays whose shapes do not fit together (message names
        the file and the problem).
    """
    path = Path(path)
    arrays = _read_arrays(path)
    fmt = str(arrays["format"]) if "format" in arrays else None
    if fmt != PLAN_RECORD_FORMAT:
        raise PlanRecordError(f"plan record {path}: expected format {PLAN_RECORD_FORMAT!r}, got {fmt!r}")
    version = int(arrays["version"]) if "version" in arrays and arrays["version"].dtype.kind in "iu" else None
    if version is None or not 1 <= version <= PLAN_RECORD_VERSION:
        raise PlanRecordError(f"plan record {path}: expected version 1..{PLAN_RECORD_VERSION}, got {version!r}")
    values: dict[str, object] = {}
    for f in fields(PlanRecord):
        if f.name not in arrays:
            if f.name in _OPTIONAL:
                values[f.name] = None
                continue
            raise PlanRecordError(f"plan record {path}: missing entry {f.name!r}")
        a = arrays[f.name]
        if f.name in _SCALARS:
            values[f.name] = (tuple(str(s) for s in a.reshape(-1)) if f.name == "joint_names"
                              else str(a) if f.name == "robot_name" else float(a))
        else:
            dtype = torch.int64 if f.name == "goal_indices" else torch.float32
            values[f.name] = torch.from_numpy(np.ascontiguousarray(a)).to(dtype)
    try:
        return PlanRecord(**values)
    except (ValueError, TypeError) as exc:
        raise PlanRecordError(f"plan record {path}: inconsistent contents: {exc}") from exc
