"""Key TCP poses of the scripted exploration behaviours, from a snapshot of the scene.

Each ``*_keys(geo, arm, rng, config)`` returns ``(xyz (K, 3) m world, R (3, 3) hand rotation,
opening (K,) in [0, 1], target name or None)`` or None when the scene offers no target; the
sequence is turned into a joint trajectory by :func:`pointworld.sim.motions.plan_waypoints`.
The world frame is the robot base frame. For the bimanual robot each arm works on its own half of
the table (left arm: y >= table centre, right arm: y <= it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from pointworld.sim.env import SimEnv
from pointworld.sim.motions import ArmSpec, closing_yaw, down_rotation

if TYPE_CHECKING:
    from pointworld.sim.exploration import ExplorationConfig

Keys = tuple[np.ndarray, np.ndarray, np.ndarray, str | None]
_MARGIN_M = 0.08
_CLOTH_CORNERS = (0, 8, 72, 80)  # 9 x 9 vertex grid
#: Share of an arm's sampled reach counted as comfortably reachable with the fingers pointing down.
_REACH_SHARE = 0.85


def in_reach(arm: ArmSpec, xyz: np.ndarray) -> np.ndarray:
    """(...) bool: points ``xyz`` (..., 3), m, base frame, within the comfortable reach of ``arm``."""
    return np.linalg.norm(xyz - arm.base_xyz, axis=-1) <= _REACH_SHARE * arm.reach_m


def _sample_xy(geo: SceneGeometry, arm: ArmSpec, rng: np.random.Generator, z: float, n: int = 1) -> np.ndarray:
    """(n, 2) random table points of the arm's area, preferring reachable ones at height ``z`` (m)."""
    lo, hi = geo.bounds(arm)
    xy = rng.uniform(lo, hi, size=(32, 2))
    ok = in_reach(arm, np.concatenate([xy, np.full((32, 1), z)], axis=1))
    return np.concatenate([xy[ok], xy[~ok]])[:n]


@dataclass(frozen=True)
class ObjectBox:
    """A free object: ``center`` (3,) m world of its body-frame bounding box, ``R`` (3, 3) body
    rotation, ``half`` (3,) half extents in the body frame, m, ``top`` z of its highest point, m."""

    center: np.ndarray
    R: np.ndarray
    half: np.ndarray
    top: float


@dataclass(frozen=True)
class SceneGeometry:
    """What the behaviours need to know about the scene, read once per plan (m, world frame).

    Attributes:
        table_z: table-top height. lo, hi: (2,) usable x/y bounds on the table (margin applied).
        objects: free object name -> :class:`ObjectBox`.
        handle: (4, 4) ``T_world_handle`` of the drawer handle, or None.
        drawer_axis: (3,) unit slide direction (drawer opening), or None.
        drawer_travel_m: remaining slide travel before the drawer is fully open, m.
        cloth_corners: (4, 3) cloth corner vertex positions, or None.
    """

    table_z: float
    lo: np.ndarray
    hi: np.ndarray
    objects: dict[str, ObjectBox]
    handle: np.ndarray | None
    drawer_axis: np.ndarray | None
    drawer_travel_m: float
    cloth_corners: np.ndarray | None

    @classmethod
    def read(cls, env: SimEnv) -> SceneGeometry:
        """Snapshot of a reset ``env``."""
        model, data, scene = env.model, env.data, env.scene
        assert model is not None and data is not None and scene is not None
        x, y, _ = env.config.table_placement(env.robot.name)
        half = np.array(env.config.table_size_m) / 2 - _MARGIN_M
        objects = {}
        for name in scene.object_names:
            b = model.body(name).id
            R, p = data.xmat[b].reshape(3, 3), data.xpos[b]
            corners = []
            for g in np.flatnonzero(model.geom_bodyid == b):
                c, h = model.geom_aabb[g, :3], model.geom_aabb[g, 3:]
                signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1])).reshape(3, -1).T
                corners.append(data.geom_xpos[g] + (c + signs * h) @ data.geom_xmat[g].reshape(3, 3).T)
            world = np.concatenate(corners)
            local = (world - p) @ R
            mid, ext = (local.max(0) + local.min(0)) / 2, (local.max(0) - local.min(0)) / 2
            objects[name] = ObjectBox(center=p + R @ mid, R=R, half=ext, top=float(world[:, 2].max()))
        handle = axis = None
        travel = 0.0
        if "drawer_handle" in scene.articulated_names:
            handle = env.body_poses(["drawer_handle"])[0].numpy()
            axis = env.body_poses(["drawer"])[0].numpy()[:3, 0]
            j = model.joint("drawer_slide")
            travel = float(model.jnt_range[j.id][1] - data.qpos[model.jnt_qposadr[j.id]])
        corners = env.flex_vertices("cloth").numpy()[list(_CLOTH_CORNERS)] if scene.deformable_names else None
        return cls(table_z=float(scene.table_top_z), lo=np.array([x, y]) - half, hi=np.array([x, y]) + half,
                   objects=objects, handle=handle, drawer_axis=axis, drawer_travel_m=travel,
                   cloth_corners=corners)

    def bounds(self, arm: ArmSpec) -> tuple[np.ndarray, np.ndarray]:
        """(2,), (2,) x/y bounds of the table area ``arm`` works in."""
        lo, hi = self.lo.copy(), self.hi.copy()
        mid = (lo[1] + hi[1]) / 2
        if arm.name == "left":
            lo[1] = mid
        elif arm.name == "right":
            hi[1] = mid
        return lo, hi


def _pick_object(geo: SceneGeometry, arm: ArmSpec, rng: np.random.Generator,
                 fits: float = np.inf) -> str | None:
    lo, hi = geo.bounds(arm)
    names = [n for n, o in geo.objects.items() if 2 * min(o.half[0], o.half[1]) < fits
             and o.center[2] > geo.table_z - 0.05]
    inside = [n for n in names if np.all(geo.objects[n].center[:2] >= lo - _MARGIN_M)
              and np.all(geo.objects[n].center[:2] <= hi + _MARGIN_M)]
    reach = [n for n in inside if in_reach(arm, geo.objects[n].center + [0.0, 0.0, 0.05])]
    pool = reach or inside or names
    return str(rng.choice(pool)) if pool else None


def _line(p0: np.ndarray, p1: np.ndarray, z_high: float, z_low: float) -> np.ndarray:
    """(4, 3) above p0, down at p0, across to p1, up at p1."""
    return np.array([[*p0, z_high], [*p0, z_low], [*p1, z_low], [*p1, z_high]])


def push_keys(geo: SceneGeometry, arm: ArmSpec, rng: np.random.Generator, config: ExplorationConfig) -> Keys | None:
    """Closed gripper: down beside a random object, straight through its centre, up."""
    name = _pick_object(geo, arm, rng)
    if name is None:
        return None
    o = geo.objects[name]
    d = np.array([np.cos(a := rng.uniform(-np.pi, np.pi)), np.sin(a)])
    radius = float(np.linalg.norm(o.half[:2]))
    p0 = o.center[:2] - d * (radius + 0.04)
    lo, hi = geo.bounds(arm)
    p1 = np.clip(o.center[:2] + d * rng.uniform(*config.push_distance_m), lo, hi)  # keep it on the table
    z_low = geo.table_z + float(np.clip(0.5 * (o.top - geo.table_z), 0.015, 0.03))
    xyz = _line(p0, p1, max(o.top, geo.table_z) + config.approach_height_m, z_low)
    return xyz, down_rotation(arm, rng.uniform(-np.pi / 2, np.pi / 2)), np.zeros(4), name


def sweep_keys(geo: SceneGeometry, arm: ArmSpec, rng: np.random.Generator, config: ExplorationConfig) -> Keys:
    """Closed gripper along a random line 2 cm above the table."""
    lo, hi = geo.bounds(arm)
    p0 = _sample_xy(geo, arm, rng, geo.table_z + 0.05)[0]
    d = np.array([np.cos(a := rng.uniform(-np.pi, np.pi)), np.sin(a)])
    p1 = np.clip(p0 + d * rng.uniform(0.25, 0.45), lo, hi)
    top = max([geo.table_z] + [o.top for o in geo.objects.values()])
    xyz = _line(p0, p1, top + config.approach_height_m, geo.table_z + 0.02)
    return xyz, down_rotation(arm, rng.uniform(-np.pi / 2, np.pi / 2)), np.zeros(4), None


def grasp_keys(geo: SceneGeometry, arm: ArmSpec, rng: np.random.Generator, config: ExplorationConfig,
               max_gap_m: float = 0.075) -> Keys | None:
    """Open above an object, descend, close across its narrower side, lift, move, lower, open, lift."""
    name = _pick_object(geo, arm, rng, fits=max_gap_m)
    if name is None:
        return None
    o = geo.objects[name]
    axis = o.R[:2, 0] if o.half[0] <= o.half[1] else o.R[:2, 1]
    R = down_rotation(arm, closing_yaw(arm, axis))
    z_grasp = max(o.top - min(0.025, 0.5 * (o.top - geo.table_z)), geo.table_z + 0.012)
    z_high = o.top + config.approach_height_m
    lo, hi = geo.bounds(arm)
    d = np.array([np.cos(a := rng.uniform(-np.pi, np.pi)), np.sin(a)])
    places = np.clip(o.center[:2] + d * rng.uniform(0.1, 0.25, size=(8, 1)), lo, hi)
    ok = in_reach(arm, np.concatenate([places, np.full((8, 1), z_grasp + 0.05)], axis=1))
    place = places[int(np.argmax(ok))]
    c = o.center[:2]
    xyz = np.array([[*c, z_high], [*c, z_grasp], [*c, z_grasp], [*c, z_high], [*place, z_high],
                    [*place, z_grasp + 0.01], [*place, z_grasp + 0.01], [*place, z_high]])
    opening = np.array([1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    return xyz, R, opening, name


def drawer_keys(geo: SceneGeometry, arm: ArmSpec, rng: np.random.Generator, config: ExplorationConfig) -> Keys | None:
    """Fingers horizontal toward the drawer, around the handle bar (closing vertically), pull, release."""
    if geo.handle is None or geo.drawer_axis is None or geo.drawer_travel_m < 0.02:
        return None
    a = geo.drawer_axis
    z = np.array([0.0, 0.0, 1.0])
    R = np.stack([np.cross(z, -a), z, -a], axis=1)
    h = geo.handle[:3, 3]
    pull = h + a * min(rng.uniform(0.06, 0.15), geo.drawer_travel_m)
    xyz = np.array([h + a * 0.1, h, h, pull, pull, pull + a * 0.08 + z * 0.05])
    return xyz, R, np.array([1.0, 1.0, 0.0, 0.0, 1.0, 1.0]), "drawer"


def cloth_keys(geo: SceneGeometry, arm: ArmSpec, rng: np.random.Generator, config: ExplorationConfig) -> Keys | None:
    """Closed gripper: down onto the cloth 3 cm inside a corner, finger tips among the cloth's vertices,
    drag outward (within +-60 degrees of the corner's diagonal) 10-20 cm, lift. (Pinching the flat
    cloth between the fingers does not hold it in MuJoCo; dragging with the tips does move it.)"""
    if geo.cloth_corners is None:
        return None
    lo, hi = geo.bounds(arm)
    c = geo.cloth_corners[int(rng.integers(4))]
    out = c[:2] - geo.cloth_corners[:, :2].mean(0)
    out = out / max(float(np.linalg.norm(out)), 1e-9)
    a = np.arctan2(out[1], out[0]) + rng.uniform(-np.pi / 3, np.pi / 3)
    start = np.clip(c[:2] - out * 0.03, lo, hi)
    end = np.clip(c[:2] + np.array([np.cos(a), np.sin(a)]) * rng.uniform(0.1, 0.2), lo, hi)
    xyz = _line(start, end, geo.table_z + config.approach_height_m, geo.table_z + 0.012)
    return xyz, down_rotation(arm, closing_yaw(arm, out)), np.zeros(4), "cloth"


def free_space_keys(geo: SceneGeometry, arm: ArmSpec, rng: np.random.Generator,
                    config: ExplorationConfig) -> Keys:
    """One to three random poses 8-30 cm above the table with random gripper openings."""
    n = int(rng.integers(1, 4))
    xy = _sample_xy(geo, arm, rng, geo.table_z + 0.15, n)
    z = geo.table_z + rng.uniform(0.08, 0.3, size=(n, 1))
    return (np.concatenate([xy, z], axis=1), down_rotation(arm, rng.uniform(-np.pi / 2, np.pi / 2)),
            rng.uniform(0.0, 1.0, size=n), None)
