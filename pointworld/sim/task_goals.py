"""Task goals in simulated scenes: the :class:`Task` a planner receives, goal sampling, success checks.

A task is embodiment-agnostic: "move the points inside this axis-aligned box by this rigid motion".

- ``push``: one free object (drawn from the seed among those not bigger than ``max_object_extent_m``)
  should move ``push_distance_m`` in a random direction, turned by ``push_yaw_rad`` about the vertical
  through its body origin (not for round shapes). Its goal disc stays ``table_margin_m`` inside the
  table and off other objects, the drawer (with its full travel), the cloth and the robot base (0.25 m).
- ``drawer``: the drawer should be open by ``drawer_open_m`` (slide joint position).
- ``cloth``: a corner of the cloth (drawn from the seed) should move ``cloth_distance_m`` along the
  table in a random direction (goal point on the table with the margin, off other obstacles).

Selection boxes are padded by 3 mm and start 4 mm above the table top, so table points stay out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import mujoco
import numpy as np

from pointworld.sim.env import SimEnv

if TYPE_CHECKING:
    from pointworld.sim.task import TaskConfig

KINDS: tuple[str, ...] = ("push", "drawer", "cloth")
#: Yaw symmetry period per object shape, rad; None = round about z (yaw not part of the goal).
YAW_PERIOD_RAD: dict[str, float | None] = {"box": math.pi, "cross": math.pi / 2, "L": 2 * math.pi,
                                           "T": 2 * math.pi, "cylinder": None, "sphere": None}
_PAD_M = 0.003
_TABLE_CLEARANCE_M = 0.004
_CLOTH_HALF_M = 0.02
_ROBOT_BASE_RADIUS_M = 0.25
_TRIES = 100
_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)


def _frozen(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    arr = np.array(value, dtype=np.float64)
    if arr.shape != shape or not np.all(np.isfinite(arr)):
        raise ValueError(f"{name}: expected a finite float array of shape {shape}, got shape {arr.shape}")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class Task:
    """A goal for the planner: move the points in a box by a rigid motion (world frame, m).

    Attributes:
        kind: ``"push"``, ``"drawer"`` or ``"cloth"``.
        target: the object body (``object_001``), ``"drawer"`` or ``"cloth"``.
        seed: the reset seed that produced this task.
        select_min_world, select_max_world: (3,) corners of an axis-aligned box, m, world frame, holding
            the target's points at reset (object: its geoms' box; drawer: front panel + handle, ending
            at the front's inner face when the slide is world-aligned; cloth: a 4 cm cube around the
            chosen corner) and, where possible, nothing else.
        T_goal_start: (4, 4) rigid motion, world frame: a selected point p should end at T_goal_start @ p.
        T_world_start: (4, 4) the target at reset: object or drawer body pose; cloth corner position
            (identity rotation).
        T_world_goal: (4, 4) ``T_goal_start @ T_world_start``, the goal pose / corner position.
        position_tolerance_m: success bound on the position error (object origin, drawer opening or
            corner point), m.
        yaw_tolerance_rad: success bound on the yaw error (push of a non-round shape), rad; else None.
        yaw_period_rad: yaw symmetry of the pushed shape (pi box, pi/2 cross, 2 pi L/T), rad, or None.
        goal_opening_m: drawer task: the slide position to reach, m; else None.
        cloth_vertex: cloth task: index of the corner among the cloth's flex vertices; else None.
    """

    kind: str
    target: str
    seed: int
    select_min_world: np.ndarray
    select_max_world: np.ndarray
    T_goal_start: np.ndarray
    T_world_start: np.ndarray
    T_world_goal: np.ndarray
    position_tolerance_m: float
    yaw_tolerance_rad: float | None = None
    yaw_period_rad: float | None = None
    goal_opening_m: float | None = None
    cloth_vertex: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind: expected one of {KINDS}, got {self.kind!r}")
        for name, shape in (("select_min_world", (3,)), ("select_max_world", (3,)), ("T_goal_start", (4, 4)),
                            ("T_world_start", (4, 4)), ("T_world_goal", (4, 4))):
            object.__setattr__(self, name, _frozen(name, getattr(self, name), shape))
        if np.any(self.select_min_world > self.select_max_world):
            raise ValueError(f"select_min_world: expected <= select_max_world, got {self.select_min_world}")

    def contains(self, points_world: np.ndarray) -> np.ndarray:
        """(N,) bool: which of the (N, 3) world points (m) lie in the selection box."""
        p = np.asarray(points_world, dtype=np.float64)
        return np.all((p >= self.select_min_world) & (p <= self.select_max_world), axis=-1)


@dataclass(frozen=True)
class TaskOutcome:
    """How close the true simulator state is to a task's goal.

    Attributes:
        success: every error within its tolerance.
        position_error_m: push: distance of the object origin to its goal, m; drawer: |opening - goal|,
            m; cloth: distance of the corner vertex to its goal point, m.
        yaw_error_rad: push of a non-round shape: yaw difference modulo the shape's symmetry, rad; else None.
    """

    success: bool
    position_error_m: float
    yaw_error_rad: float | None


def yaw_of(T_world_body: np.ndarray) -> float:
    """Heading of a (4, 4) pose: angle of its x-axis projected on the world xy plane, rad."""
    return float(math.atan2(T_world_body[1, 0], T_world_body[0, 0]))


def push_outcome(task: Task, T_world_target: np.ndarray) -> TaskOutcome:
    """Outcome of a push task given the object's (4, 4) ``T_world_body`` (m, world frame)."""
    T = _frozen("T_world_target", T_world_target, (4, 4))
    err = float(np.linalg.norm(T[:3, 3] - task.T_world_goal[:3, 3]))
    yaw_err, period, yaw_tol = None, task.yaw_period_rad, task.yaw_tolerance_rad
    if period is not None and yaw_tol is not None:
        yaw_err = abs((yaw_of(T) - yaw_of(task.T_world_goal) + period / 2) % period - period / 2)
    ok = err <= task.position_tolerance_m and (yaw_err is None or yaw_err <= yaw_tol)
    return TaskOutcome(success=bool(ok), position_error_m=err, yaw_error_rad=yaw_err)


def drawer_outcome(task: Task, opening_m: float) -> TaskOutcome:
    """Outcome of a drawer task given the slide joint position ``opening_m``, m."""
    if task.goal_opening_m is None:
        raise ValueError(f"task: expected a drawer task, got kind {task.kind!r}")
    err = abs(float(opening_m) - task.goal_opening_m)
    return TaskOutcome(bool(err <= task.position_tolerance_m), err, None)


def cloth_outcome(task: Task, corner_world: np.ndarray) -> TaskOutcome:
    """Outcome of a cloth task given the (3,) world position of the corner vertex, m."""
    err = float(np.linalg.norm(_frozen("corner_world", corner_world, (3,)) - task.T_world_goal[:3, 3]))
    return TaskOutcome(bool(err <= task.position_tolerance_m), err, None)


def geom_corners_world(model: mujoco.MjModel, data: mujoco.MjData, geom_ids: list[int]) -> np.ndarray:
    """(8 G, 3) world corners (m) of the local bounding boxes of G geoms at the current state."""
    ids = np.asarray(geom_ids, dtype=np.int64)
    box = model.geom_aabb[ids]
    local = box[:, None, :3] + _CORNERS[None] * box[:, None, 3:]
    R = data.geom_xmat[ids].reshape(-1, 3, 3)
    return (np.einsum("gij,gkj->gki", R, local) + data.geom_xpos[ids][:, None]).reshape(-1, 3)


def _body_geoms(model: mujoco.MjModel, name: str) -> list[int]:
    b = model.body(name).id
    return list(range(model.body_geomadr[b], model.body_geomadr[b] + model.body_geomnum[b]))


def _disc(corners: np.ndarray, center: np.ndarray | None = None) -> tuple[np.ndarray, float]:
    xy = corners[:, :2]
    c = 0.5 * (xy.min(0) + xy.max(0)) if center is None else np.asarray(center[:2], dtype=np.float64)
    return c, float(np.linalg.norm(xy - c, axis=1).max())


def _selection_box(points: np.ndarray, table_top_z: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = points.min(0) - _PAD_M, points.max(0) + _PAD_M
    lo[2] = max(lo[2], table_top_z + _TABLE_CLEARANCE_M)
    return lo, hi


def _obstacles(env: SimEnv, exclude: str) -> list[tuple[np.ndarray, float]]:
    """Discs (centre (2,), radius) on the table that a goal must not overlap."""
    model, data, scene = env.model, env.data, env.scene
    out = [(np.zeros(2), _ROBOT_BASE_RADIUS_M)]
    for name in scene.object_names:
        if name != exclude:
            out.append(_disc(geom_corners_world(model, data, _body_geoms(model, name)), data.body(name).xpos))
    if "drawer" in scene.articulated_names:
        geoms = sum((_body_geoms(model, n) for n in ("drawer_cabinet", "drawer", "drawer_handle")), [])
        center, radius = _disc(geom_corners_world(model, data, geoms))
        j = model.joint("drawer_slide")
        out.append((center, radius + float(j.range[1] - data.qpos[j.qposadr[0]])))
    if "cloth" in scene.deformable_names and exclude != "cloth":
        out.append(_disc(env.flex_vertices("cloth").numpy()))
    return out


def _free(xy: np.ndarray, radius: float, env: SimEnv, margin: float,
          obstacles: list[tuple[np.ndarray, float]]) -> bool:
    center, half = env.config.table_placement(env.robot.name)[:2], np.asarray(env.config.table_size_m) / 2
    return bool(np.all(np.abs(xy - center) <= half - radius - margin)) and all(
        np.linalg.norm(xy - c) > radius + r for c, r in obstacles)


def _translation(t: np.ndarray) -> np.ndarray:
    return np.block([[np.eye(3), np.reshape(t, (3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]])


def _push_goal(env: SimEnv, name: str, shape: str, config: TaskConfig, rng: np.random.Generator,
               seed: int) -> Task | None:
    """A push task for object ``name`` or None if no free goal was drawn in ``_TRIES`` tries."""
    model, data = env.model, env.data
    corners = geom_corners_world(model, data, _body_geoms(model, name))
    start = env.body_poses([name])[0].numpy()
    _, radius = _disc(corners, start[:3, 3])
    obstacles, period = _obstacles(env, exclude=name), YAW_PERIOD_RAD[shape]
    for _ in range(_TRIES):
        d, theta = rng.uniform(*config.push_distance_m), rng.uniform(-math.pi, math.pi)
        dyaw = rng.uniform(*config.push_yaw_rad) if period is not None else 0.0
        xy = start[:2, 3] + d * np.array([math.cos(theta), math.sin(theta)])
        if not _free(xy, radius, env, config.table_margin_m, obstacles):
            continue
        goal, (c, s) = start.copy(), (math.cos(dyaw), math.sin(dyaw))
        goal[:3, :3] = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ start[:3, :3]
        goal[:2, 3] = xy
        lo, hi = _selection_box(corners, env.scene.table_top_z)
        return Task(kind="push", target=name, seed=seed, select_min_world=lo, select_max_world=hi,
                    T_goal_start=goal @ np.linalg.inv(start), T_world_start=start, T_world_goal=goal,
                    position_tolerance_m=config.position_tolerance_m, yaw_period_rad=period,
                    yaw_tolerance_rad=None if period is None else config.yaw_tolerance_rad)
    return None


def _object_extent(model: mujoco.MjModel, data: mujoco.MjData, name: str) -> float:
    """Largest side of the body-frame bounding box of an object's geoms, m."""
    body = data.body(name)
    local = (geom_corners_world(model, data, _body_geoms(model, name)) - body.xpos) @ body.xmat.reshape(3, 3)
    return float(np.ptp(local, axis=0).max())


def sample_push_task(env: SimEnv, config: TaskConfig, rng: np.random.Generator, seed: int) -> Task:
    """Draw the push target (objects on the table with extent <= ``max_object_extent_m``, in a seeded
    order) and its goal; ``ValueError`` naming the seed if no object or no free goal qualifies."""
    model, data, scene = env.model, env.data, env.scene
    candidates = [(n, s) for n, s in zip(scene.object_names, scene.object_shapes)
                  if _object_extent(model, data, n) <= config.max_object_extent_m
                  and data.body(n).xpos[2] > scene.table_top_z - 0.01]
    if not candidates:
        raise ValueError(f"seed {seed}: no object on the table has an extent <= max_object_extent_m="
                         f"{config.max_object_extent_m} m (objects: {scene.object_names}); use another seed "
                         f"or smaller object_size_m")
    for i in rng.permutation(len(candidates)):
        task = _push_goal(env, *candidates[i], config, rng, seed)
        if task is not None:
            return task
    raise ValueError(f"seed {seed}: found no free push goal on the table for any of {candidates}; use "
                     f"another seed, a smaller push_distance_m or table_margin_m, or fewer objects")


def sample_drawer_task(env: SimEnv, config: TaskConfig, rng: np.random.Generator, seed: int) -> Task:
    """Draw the goal opening of the drawer (``ValueError`` if the scene has none or it is out of travel)."""
    model, data = env.model, env.data
    if "drawer" not in env.scene.articulated_names:
        raise ValueError("scene: the drawer task needs a scene with a drawer (include_drawer=True)")
    joint = model.joint("drawer_slide")
    opening, upper = float(data.qpos[joint.qposadr[0]]), float(joint.range[1])
    goal = float(rng.uniform(*config.drawer_open_m))
    if goal > upper:
        raise ValueError(f"drawer_open_m: expected openings within the drawer's travel {upper} m, got "
                         f"{config.drawer_open_m}")
    start, axis = env.body_poses(["drawer"])[0].numpy(), data.xaxis[joint.id].copy()
    T_goal_start = _translation((goal - opening) * axis)
    front = model.geom("drawer_front").id
    lo, hi = _selection_box(geom_corners_world(model, data, [front] + _body_geoms(model, "drawer_handle")),
                            env.scene.table_top_z)
    i = int(np.argmax(np.abs(axis)))
    if abs(axis[i]) > 0.999:  # slide along a world axis: end the box at the front's inner face (cabinet out)
        inner = geom_corners_world(model, data, [front])[:, i]
        hi[i], lo[i] = (inner.max() - 5e-4, lo[i]) if axis[i] < 0 else (hi[i], inner.min() + 5e-4)
    return Task(kind="drawer", target="drawer", seed=seed, select_min_world=lo, select_max_world=hi,
                T_goal_start=T_goal_start, T_world_start=start, T_world_goal=T_goal_start @ start,
                position_tolerance_m=config.drawer_tolerance_m, goal_opening_m=goal)


def sample_cloth_task(env: SimEnv, config: TaskConfig, rng: np.random.Generator, seed: int) -> Task:
    """Draw a cloth corner and its goal point on the table (``ValueError`` if there is no cloth)."""
    if "cloth" not in env.scene.deformable_names:
        raise ValueError(f"seed {seed}: the cloth task needs a cloth, and this scene has none (include_cloth="
                         f"{env.config.include_cloth}; no free spot on the table?); use another seed")
    vertices = env.flex_vertices("cloth").numpy()
    dist = np.linalg.norm(vertices[:, :2] - vertices[:, :2].mean(0), axis=1)
    k = int(np.sort(np.argsort(-dist, kind="stable")[:4])[rng.integers(4)])  # one of the 4 corners
    p = vertices[k]
    obstacles = _obstacles(env, exclude="cloth")
    for _ in range(_TRIES):
        d, theta = rng.uniform(*config.cloth_distance_m), rng.uniform(-math.pi, math.pi)
        step = d * np.array([math.cos(theta), math.sin(theta), 0.0])
        if _free(p[:2] + step[:2], _CLOTH_HALF_M, env, config.table_margin_m, obstacles):
            break
    else:
        raise ValueError(f"seed {seed}: found no free goal on the table for the cloth corner; use another seed "
                         f"or a smaller cloth_distance_m or table_margin_m")
    lo, hi = _selection_box(np.stack([p - _CLOTH_HALF_M + _PAD_M, p + _CLOTH_HALF_M - _PAD_M]),
                            env.scene.table_top_z)
    return Task(kind="cloth", target="cloth", seed=seed, select_min_world=lo, select_max_world=hi,
                T_goal_start=_translation(step), T_world_start=_translation(p), T_world_goal=_translation(p + step),
                position_tolerance_m=config.cloth_tolerance_m, cloth_vertex=k)
