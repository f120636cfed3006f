"""Typed configuration of a simulated table-top scene (mirrored by ``configs/scene/tabletop.yaml``).

Sizes are metres, masses kg, times seconds. ``None`` for the table placement means the robot's default
(:data:`DEFAULT_TABLE_PLACEMENT`): the table is put where the shipped robot can reach it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pointworld.geometry.checks import require_int, require_positive

#: Shipped robot -> (table centre x, y, table-top height z) in the world (= robot base) frame, m.
DEFAULT_TABLE_PLACEMENT: dict[str, tuple[float, float, float]] = {
    "franka_panda": (0.55, 0.0, 0.0),
    "flying_gripper": (0.5, 0.0, 0.0),
    "bimanual": (0.45, 0.0, 0.75),
    "ur5e_gripper": (-0.55, -0.1, 0.0),
}
_FALLBACK_PLACEMENT = (0.55, 0.0, 0.0)
SHAPES: tuple[str, ...] = ("box", "cylinder", "sphere", "L", "T", "cross")


def require_range(name: str, value: object, low: float = 0.0, strict: bool = True) -> tuple[float, float]:
    """Validate a config pair ``(min, max)`` of finite numbers with min <= max and min > low (>= low when
    not ``strict``); returns it as floats. ``ValueError`` naming ``name`` otherwise."""
    if not (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{name}: expected a pair (min, max) of numbers, got {value!r}")
    a, b = float(value[0]), float(value[1])
    if not (math.isfinite(a) and math.isfinite(b)) or a > b or (a <= low if strict else a < low):
        cmp = ">" if strict else ">="
        raise ValueError(f"{name}: expected finite min <= max with min {cmp} {low}, got {value!r}")
    return a, b


def _pair(name: str, value: object, positive: bool) -> tuple[float, float]:
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                  and (v > 0 or not positive) for v in value))
    if not ok:
        kind = "positive " if positive else ""
        raise ValueError(f"{name}: expected a pair (x, y) of finite {kind}numbers, got {value!r}")
    return float(value[0]), float(value[1])


@dataclass
class SceneConfig:
    """A table-top scene: robot, table, randomized rigid objects, optional drawer and cloth.

    Attributes:
        robot: shipped robot name or a path to a URDF.
        n_objects: (min, max) number of free rigid objects, inclusive.
        object_size_m: (min, max) overall extent of an object (longest side / diameter), m.
        object_mass_kg: (min, max) object mass, kg.
        object_friction: (min, max) sliding friction coefficient.
        shapes: object shapes to draw from (subset of :data:`SHAPES`).
        seed: default scene seed (``SimEnv.reset(seed)`` overrides it).
        timestep_s: physics step, s.
        control_dt_s: control period of ``SimEnv.execute``, s (a multiple of ``timestep_s``).
        include_drawer: add a cabinet with a drawer on a slide joint and a handle.
        include_cloth: add a deformable square cloth (MuJoCo flex; ~10x slower physics).
        cloth_size_m: side of the cloth, m.
        table_size_m: (x, y) table-top extent, m.
        table_thickness_m: table-top thickness, m.
        table_center_xy: table centre in the world frame, m; None = the robot's default.
        table_height_m: z of the table top, m; None = the robot's default.
        kp_revolute, kp_prismatic: position gains, N m/rad and N/m.
        damping_ratio: joint-space damping ratio of the position servos (w.r.t. the joint armature).
        armature: added rotor inertia on every robot joint, kg m^2 (or kg for prismatic joints).
        robot_self_collision: whether robot links collide with each other (and the two arms of the
            bimanual robot with each other); False lets self-colliding commands pass through.
        finger_friction: sliding friction of the finger geoms (links named ``*finger*``); above
            MuJoCo's default 1 so pinched or pressed cloth and objects are dragged, not slid over.
    """

    robot: str = "franka_panda"
    n_objects: tuple[int, int] = (3, 6)
    object_size_m: tuple[float, float] = (0.03, 0.25)
    object_mass_kg: tuple[float, float] = (0.05, 1.0)
    object_friction: tuple[float, float] = (0.4, 1.2)
    shapes: tuple[str, ...] = SHAPES
    seed: int = 0
    timestep_s: float = 0.002
    control_dt_s: float = 0.1
    include_drawer: bool = True
    include_cloth: bool = False
    cloth_size_m: float = 0.24
    table_size_m: tuple[float, float] = (0.8, 1.0)
    table_thickness_m: float = 0.05
    table_center_xy: tuple[float, float] | None = None
    table_height_m: float | None = None
    kp_revolute: float = 4000.0
    kp_prismatic: float = 4000.0
    damping_ratio: float = 1.0
    armature: float = 0.1
    robot_self_collision: bool = True
    finger_friction: float = 2.5

    def __post_init__(self) -> None:
        if not isinstance(self.robot, str) or not self.robot:
            raise ValueError(f"robot: expected a shipped robot name or URDF path, got {self.robot!r}")
        lo, hi = require_range("n_objects", self.n_objects, 0.0, strict=False)
        if lo != int(lo) or hi != int(hi):
            raise ValueError(f"n_objects: expected a pair of ints, got {self.n_objects!r}")
        self.n_objects = (int(lo), int(hi))
        self.object_size_m = require_range("object_size_m", self.object_size_m)
        self.object_mass_kg = require_range("object_mass_kg", self.object_mass_kg)
        self.object_friction = require_range("object_friction", self.object_friction)
        bad = [s for s in self.shapes if s not in SHAPES]
        if isinstance(self.shapes, str) or not self.shapes or bad:
            raise ValueError(f"shapes: expected a non-empty list from {SHAPES}, got {self.shapes!r}")
        self.shapes = tuple(self.shapes)
        require_int("seed", self.seed, 0)
        for name in ("timestep_s", "control_dt_s", "table_thickness_m", "kp_revolute", "kp_prismatic",
                     "damping_ratio", "armature", "finger_friction"):
            require_positive(name, getattr(self, name))
        ratio = self.control_dt_s / self.timestep_s
        if abs(ratio - round(ratio)) > 1e-6 or round(ratio) < 1:
            raise ValueError(f"control_dt_s: expected a positive multiple of timestep_s={self.timestep_s}, "
                             f"got {self.control_dt_s}")
        self.table_size_m = _pair("table_size_m", self.table_size_m, positive=True)
        if self.table_center_xy is not None:
            self.table_center_xy = _pair("table_center_xy", self.table_center_xy, positive=False)
        if self.table_height_m is not None and not math.isfinite(float(self.table_height_m)):
            raise ValueError(f"table_height_m: expected a finite number or None, got {self.table_height_m!r}")
        require_positive("cloth_size_m", self.cloth_size_m)
        for name in ("include_drawer", "include_cloth", "robot_self_collision"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")

    @property
    def substeps(self) -> int:
        """Physics steps per control step."""
        return round(self.control_dt_s / self.timestep_s)

    def table_placement(self, robot_name: str) -> tuple[float, float, float]:
        """(x, y, top z) of the table in the world frame, m, for the robot named ``robot_name``."""
        x, y, z = DEFAULT_TABLE_PLACEMENT.get(robot_name, _FALLBACK_PLACEMENT)
        if self.table_center_xy is not None:
            x, y = self.table_center_xy
        if self.table_height_m is not None:
            z = float(self.table_height_m)
        return float(x), float(y), float(z)
