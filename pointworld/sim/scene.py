"""Table-top scenes built with ``MjSpec``: robot at the world origin, table, random objects, drawer, cloth.

Naming (for segmentation later, one body per movable thing, geoms named after their body):

- ``floor``, ``table`` (static bodies; the table top is geom ``table_top``),
- ``object_000``, ``object_001``, ... free rigid objects; geoms ``object_000_g0``, ``object_000_g1``, ...
  (boxes, cylinders and spheres have one geom; L, T and cross shapes are several boxes in one body),
- ``drawer_cabinet`` (static), ``drawer`` (slide joint ``drawer_slide``) with the child body
  ``drawer_handle`` (rigidly attached: no joint),
- ``cloth`` (optional): a MuJoCo flex; its vertices are the bodies ``cloth_0`` … under ``cloth_root``,
- the robot's links, named as in the URDF.

Everything random comes from one ``numpy.random.Generator`` seeded by the caller, and the spec is built in
a fixed order, so one seed always gives the same model (same XML, same body positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from pointworld.sim.config import SceneConfig

_CABINET = (0.26, 0.32, 0.16)  # depth (toward the robot), width, height, m
_WALL = 0.01
_DROP_M = 0.002
_CLOTH_RADIUS = 0.004


@dataclass
class SceneBuild:
    """A scene spec and what was put into it.

    Attributes:
        spec: the full scene (robot, table, objects, drawer), ready to compile.
        object_names: body names of the free rigid objects, in creation order.
        object_shapes: their shape names (``box``, ``cylinder``, ``sphere``, ``L``, ``T``, ``cross``).
        articulated_names: bodies of articulated objects (``drawer``, ``drawer_handle``) if any.
        deformable_names: flex names of deformables (``cloth``) if any.
        table_top_z: height of the table surface in the world frame, m.
    """

    spec: mujoco.MjSpec
    object_names: list[str]
    object_shapes: list[str]
    articulated_names: list[str]
    deformable_names: list[str]
    table_top_z: float


def _yaw_quat(yaw: float) -> list[float]:
    return [float(np.cos(yaw / 2)), 0.0, 0.0, float(np.sin(yaw / 2))]


def _box(body: mujoco.MjsBody, name: str, half: tuple[float, ...], pos: tuple[float, ...],
         rgba: np.ndarray | list[float]) -> mujoco.MjsGeom:
    return body.add_geom(name=name, type=mujoco.mjtGeom.mjGEOM_BOX, size=list(half), pos=list(pos),
                         rgba=list(rgba))


def add_table(spec: mujoco.MjSpec, config: SceneConfig, placement: tuple[float, float, float]) -> None:
    """Add the ``floor`` (0.75 m below the table top) and the static ``table`` body (top + 4 legs)."""
    x, y, top = placement
    sx, sy = config.table_size_m
    floor = spec.worldbody.add_body(name="floor", pos=[0.0, 0.0, top - 0.75])
    floor.add_geom(name="floor_plane", type=mujoco.mjtGeom.mjGEOM_PLANE, size=[3.0, 3.0, 0.05],
                   rgba=[0.35, 0.35, 0.38, 1.0])
    table = spec.worldbody.add_body(name="table", pos=[x, y, top])
    wood = [0.62, 0.5, 0.38, 1.0]
    thick = config.table_thickness_m
    _box(table, "table_top", (sx / 2, sy / 2, thick / 2), (0.0, 0.0, -thick / 2), wood)
    leg_half = (0.75 - thick) / 2
    for i, (ux, uy) in enumerate(((1, 1), (1, -1), (-1, 1), (-1, -1))):
        _box(table, f"table_leg{i}", (0.025, 0.025, leg_half),
             (ux * (sx / 2 - 0.05), uy * (sy / 2 - 0.05), -thick - leg_half), wood)


def add_drawer(spec: mujoco.MjSpec, center: np.ndarray, yaw: float, top: float,
               rng: np.random.Generator) -> None:
    """Add a static ``drawer_cabinet`` at ``center`` (x, y), m, whose front (local +x) faces along
    ``yaw`` (rad), and the ``drawer`` (slide joint ``drawer_slide``, 0 … 0.18 m) with its handle."""
    d, w, h = _CABINET
    color = np.append(rng.uniform(0.2, 0.9, 3), 1.0)
    cab = spec.worldbody.add_body(name="drawer_cabinet", pos=[center[0], center[1], top + h / 2],
                                  quat=_yaw_quat(yaw))
    t = _WALL
    _box(cab, "drawer_cabinet_bottom", (d / 2, w / 2, t / 2), (0, 0, -h / 2 + t / 2), color)
    _box(cab, "drawer_cabinet_top", (d / 2, w / 2, t / 2), (0, 0, h / 2 - t / 2), color)
    _box(cab, "drawer_cabinet_left", (d / 2, t / 2, h / 2), (0, w / 2 - t / 2, 0), color)
    _box(cab, "drawer_cabinet_right", (d / 2, t / 2, h / 2), (0, -w / 2 + t / 2, 0), color)
    _box(cab, "drawer_cabinet_back", (t / 2, w / 2, h / 2), (-d / 2 + t / 2, 0, 0), color)
    inner_w, inner_h, inner_d = w - 2 * t - 0.004, h - 2 * t - 0.004, d - t - 0.004
    drawer = cab.add_body(name="drawer", pos=[(d - inner_d) / 2 + 0.001, 0.0, 0.0])  # front clears the walls
    drawer.add_joint(name="drawer_slide", type=mujoco.mjtJoint.mjJNT_SLIDE, axis=[1, 0, 0],
                     range=[0.0, 0.18], limited=mujoco.mjtLimited.mjLIMITED_TRUE, damping=5.0,
                     frictionloss=0.5)
    face = np.append(np.clip(color[:3] * 0.8, 0, 1), 1.0)
    _box(drawer, "drawer_bottom", (inner_d / 2, inner_w / 2, t / 2), (0, 0, -inner_h / 2 + t / 2), face)
    _box(drawer, "drawer_front", (t / 2, w / 2, h / 2 - 0.002), (inner_d / 2 + t / 2, 0, 0), face)
    _box(drawer, "drawer_back", (t / 2, inner_w / 2, inner_h / 2), (-inner_d / 2 + t / 2, 0, 0), face)
    for side, s in (("left", 1), ("right", -1)):
        _box(drawer, f"drawer_{side}", (inner_d / 2, t / 2, inner_h / 2), (0, s * (inner_w / 2 - t / 2), 0),
             face)
    drawer.add_geom(name="drawer_mass", type=mujoco.mjtGeom.mjGEOM_BOX, size=[0.01, 0.01, 0.01],
                    contype=0, conaffinity=0, mass=0.5, rgba=[0, 0, 0, 0], group=3)
    handle = drawer.add_body(name="drawer_handle", pos=[inner_d / 2 + t + 0.03, 0.0, 0.02])
    metal = [0.75, 0.75, 0.78, 1.0]
    _box(handle, "drawer_handle_bar", (0.008, 0.06, 0.008), (0, 0, 0), metal)
    for i, s in enumerate((1, -1)):
        _box(handle, f"drawer_handle_post{i}", (0.011, 0.006, 0.006), (-0.019, s * 0.05, 0), metal)


def add_cloth(spec: mujoco.MjSpec, center: np.ndarray, top: float, size: float, yaw: float,
              rng: np.random.Generator) -> None:
    """Add a square cloth (MuJoCo flex ``cloth``, 2-D, 9 x 9 vertices with inextensible edges) of side
    ``size`` (m) lying flat on the table at ``center`` (x, y), m; vertex bodies ``cloth_0`` …
    ``cloth_80`` hang under the static body ``cloth_root``."""
    count = 9
    rgba = " ".join(f"{v:.4f}" for v in np.append(rng.uniform(0.1, 1.0, 3), 1.0))
    spacing = size / (count - 1)
    # An unnamed flexcomp attached with the prefix "cloth" names its vertex bodies cloth_0, cloth_1, ...;
    # the flex itself (and its edge equality) then get the name "cloth" here. (Attaching a named
    # flexcomp with an empty prefix gives the same names but MuJoCo warns that the XML may not save.)
    xml = (f'<mujoco><worldbody><body name="_root"><flexcomp name="" type="grid" '
           f'count="{count} {count} 1" spacing="{spacing:.6f} {spacing:.6f} {spacing:.6f}" '
           f'radius="{_CLOTH_RADIUS}" dim="2" mass="0.1" rgba="{rgba}"><edge equality="true" damping="0.01"/>'
           f'<contact selfcollide="none" condim="3"/></flexcomp></body></worldbody></mujoco>')
    child = mujoco.MjSpec.from_string(xml)
    frame = spec.worldbody.add_frame(pos=[center[0], center[1], top + _CLOTH_RADIUS + _DROP_M],
                                     quat=_yaw_quat(yaw))
    frame.attach_body(child.body("_root"), "cloth", "")
    spec.flexes[-1].name = "cloth"
    for eq in spec.equalities:
        if eq.type == mujoco.mjtEq.mjEQ_FLEX and eq.name1 == "":
            eq.name1 = "cloth"


def _shape_parts(shape: str, extent: float, rng: np.random.Generator) -> list[tuple[int, list, list]]:
    """(geom type, size, local position) of each part of one object of overall size ``extent``, m."""
    e = extent / 2
    if shape == "box":
        half = sorted((e * rng.uniform(0.35, 1.0, 2)).tolist() + [e], reverse=True)
        return [(mujoco.mjtGeom.mjGEOM_BOX, [half[0], half[1], min(half[2], 0.08)], [0, 0, 0])]
    if shape == "cylinder":
        return [(mujoco.mjtGeom.mjGEOM_CYLINDER, [e * rng.uniform(0.4, 1.0), e * rng.uniform(0.3, 0.8)],
                 [0, 0, 0])]
    if shape == "sphere":
        return [(mujoco.mjtGeom.mjGEOM_SPHERE, [min(e, 0.06)], [0, 0, 0])]
    t = e * rng.uniform(0.25, 0.45)  # half bar width
    hz = min(e * rng.uniform(0.2, 0.5), 0.05)
    bar_x = (mujoco.mjtGeom.mjGEOM_BOX, [e, t, hz])
    bar_y = (mujoco.mjtGeom.mjGEOM_BOX, [t, e, hz])
    if shape == "L":
        return [(*bar_x, [0, -(e - t), 0]), (*bar_y, [-(e - t), 0, 0])]
    if shape == "T":
        return [(*bar_x, [0, e - t, 0]), (mujoco.mjtGeom.mjGEOM_BOX, [t, e - t, hz], [0, -t, 0])]
    if shape == "cross":
        return [(*bar_x, [0, 0, 0]), (*bar_y, [0, 0, 0])]
    raise ValueError(f"shape: expected one of box, cylinder, sphere, L, T, cross, got {shape!r}")


def _volume(gtype: int, size: list) -> float:
    if gtype == mujoco.mjtGeom.mjGEOM_BOX:
        return 8.0 * size[0] * size[1] * size[2]
    if gtype == mujoco.mjtGeom.mjGEOM_CYLINDER:
        return 2.0 * np.pi * size[0] ** 2 * size[1]
    return 4.0 / 3.0 * np.pi * size[0] ** 3


def add_object(spec: mujoco.MjSpec, name: str, shape: str, xy: np.ndarray, top: float,
               config: SceneConfig, extent: float, rng: np.random.Generator) -> None:
    """Add one free rigid object ``name`` resting on the table at ``xy`` (m) with a random yaw,
    mass, friction and colour; parts share the body mass in proportion to their volume."""
    parts = _shape_parts(shape, extent, rng)
    mass = rng.uniform(*config.object_mass_kg)
    mu = rng.uniform(*config.object_friction)
    rgba = np.append(rng.uniform(0.1, 1.0, 3), 1.0)
    yaw = rng.uniform(-np.pi, np.pi)
    volumes = [_volume(g, s) for g, s, _ in parts]
    half_height = max(s[-1] if g != mujoco.mjtGeom.mjGEOM_SPHERE else s[0] for g, s, _ in parts)
    body = spec.worldbody.add_body(name=name, pos=[xy[0], xy[1], top + half_height + _DROP_M],
                                   quat=_yaw_quat(yaw))
    body.add_freejoint(name=f"{name}_free")
    for i, ((gtype, size, pos), vol) in enumerate(zip(parts, volumes)):
        body.add_geom(name=f"{name}_g{i}", type=gtype, size=list(size) + [0.0] * (3 - len(size)),
                      pos=list(pos), rgba=list(rgba), mass=mass * vol / sum(volumes),
                      friction=[mu, 0.005, 0.0001])


def build_scene(robot_spec: mujoco.MjSpec, robot_name: str, config: SceneConfig,
                rng: np.random.Generator) -> SceneBuild:
    """Add table, drawer, cloth and objects to a robot spec (from :mod:`pointworld.sim.robot_mjcf`).

    Objects are placed by rejection sampling on the table top (circles of radius ~extent/√2 that
    overlap neither each other, nor the cabinet, nor a 0.25 m disc around the robot base); an
    object that finds no free spot after 50 tries is left out, so a crowded table may hold fewer
    than ``n_objects`` objects.
    """
    spec = robot_spec
    spec.option.timestep = config.timestep_s
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_ELLIPTIC
    spec.option.impratio = 10.0
    placement = config.table_placement(robot_name)
    x, y, top = placement
    add_table(spec, config, placement)
    sx, sy = config.table_size_m
    taken: list[tuple[np.ndarray, float]] = [(np.zeros(2), 0.25)]
    articulated: list[str] = []
    if config.include_drawer:
        toward = np.array([x, y]) / max(np.hypot(x, y), 1e-9) if np.hypot(x, y) > 1e-6 else np.array([1.0, 0])
        side = np.array([-toward[1], toward[0]]) * rng.choice([-1.0, 1.0])
        reach = abs(toward @ np.array([sx, sy])) / 2
        spread = abs(side @ np.array([sx, sy])) / 2
        center = (np.array([x, y]) + toward * (reach - _CABINET[0] / 2 - 0.04)
                  + side * (spread - _CABINET[1] / 2 - 0.05))
        add_drawer(spec, center, float(np.arctan2(-toward[1], -toward[0])), top, rng)
        taken.append((center, 0.3))
        articulated = ["drawer", "drawer_handle"]
    deformable: list[str] = []
    if config.include_cloth:
        radius = config.cloth_size_m / np.sqrt(2.0)
        xy = _free_spot(np.array([x, y]), np.array([sx, sy]), radius, taken, rng)
        if xy is not None:
            add_cloth(spec, xy, top, config.cloth_size_m, float(rng.uniform(-np.pi, np.pi)), rng)
            taken.append((xy, radius))
            deformable = ["cloth"]
    names, shapes = [], []
    for i in range(int(rng.integers(config.n_objects[0], config.n_objects[1] + 1))):
        shape = str(rng.choice(list(config.shapes)))
        extent = float(rng.uniform(*config.object_size_m))
        radius = extent / np.sqrt(2.0)
        xy = _free_spot(np.array([x, y]), np.array([sx, sy]), radius, taken, rng)
        if xy is None:
            continue
        name = f"object_{len(names):03d}"
        add_object(spec, name, shape, xy, top, config, extent, rng)
        taken.append((xy, radius))
        names.append(name)
        shapes.append(shape)
    return SceneBuild(spec=spec, object_names=names, object_shapes=shapes, articulated_names=articulated,
                      deformable_names=deformable, table_top_z=top)


def _free_spot(center: np.ndarray, size: np.ndarray, radius: float, taken: list[tuple[np.ndarray, float]],
               rng: np.random.Generator) -> np.ndarray | None:
    """A random (x, y) on the table whose disc of ``radius`` overlaps no disc in ``taken`` (50 tries)."""
    for _ in range(50):
        xy = center + rng.uniform(-1, 1, 2) * (size / 2 - radius - 0.02).clip(0)
        if all(np.linalg.norm(xy - c) > radius + r for c, r in taken):
            return xy
    return None
