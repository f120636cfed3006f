"""Generate the robot descriptions shipped in ``urdfs/``: four URDFs and their link meshes.

Kinematics (joint origins, axes, limits) are the published parameters of the real robots (sources in
``urdfs/README.md``). Every link with geometry is the convex hull of a few primitives (cylinders for the
joint housings, boxes for hands, torso and finger pads) sized like the real link, so it is one closed,
watertight surface. Inertials (mass, centre of mass, inertia tensor) are computed from that solid with
a plausible link mass. Output is deterministic; every file is written atomically, and stale mesh files
in a robot's ``meshes/`` folder are removed.

    python scripts/make_robot_assets.py                 # rewrites urdfs/
    python scripts/make_robot_assets.py --output /tmp/urdfs --robots franka_panda
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import trimesh
from trimesh.exchange.obj import export_obj
from trimesh.exchange.stl import export_stl

from pointworld.atomic import atomic_open

PI = math.pi
Vec = tuple[float, float, float]
MATERIALS = {"white": (0.93, 0.93, 0.93), "grey": (0.55, 0.57, 0.6), "dark": (0.2, 0.2, 0.22),
             "blue": (0.45, 0.6, 0.75)}


# ---------------------------------------------------------------- shapes (points in the link frame, m)
def cyl(p0: Vec, p1: Vec, r: float, n: int = 24) -> np.ndarray:
    """Rim points of a cylinder of radius ``r`` between the centres ``p0`` and ``p1``: (2n, 3)."""
    a, b = np.asarray(p0, float), np.asarray(p1, float)
    d = (b - a) / np.linalg.norm(b - a)
    u = np.cross(d, [0.0, 0.0, 1.0] if abs(d[2]) < 0.9 else [1.0, 0.0, 0.0])
    u /= np.linalg.norm(u)
    v = np.cross(d, u)
    t = 2.0 * PI * np.arange(n) / n
    ring = r * (np.cos(t)[:, None] * u + np.sin(t)[:, None] * v)
    return np.concatenate([a + ring, b + ring])


def box(center: Vec, extents: Vec) -> np.ndarray:
    """The 8 corners of an axis-aligned box: (8, 3)."""
    signs = np.array([[i, j, k] for i in (-1, 1) for j in (-1, 1) for k in (-1, 1)], float)
    return np.asarray(center, float) + 0.5 * signs * np.asarray(extents, float)


def mirror_y(parts: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """The same shape reflected through the link's x-z plane (left finger -> right finger)."""
    return tuple(p * np.array([1.0, -1.0, 1.0]) for p in parts)


# ---------------------------------------------------------------- robot description records
@dataclass(frozen=True)
class Link:
    """One URDF link: its solid is the convex hull of ``parts`` ((N, 3) point sets in the link frame,
    m); no parts = no geometry. ``mass`` in kg (no geometry: a 10 g placeholder inertial), ``material``
    a key of :data:`MATERIALS`."""

    name: str
    parts: tuple[np.ndarray, ...] = ()
    mass: float = 0.01
    material: str = "white"


@dataclass(frozen=True)
class Joint:
    """One URDF joint. ``kind``: fixed | revolute | continuous | prismatic; ``xyz`` (m) and ``rpy``
    (rad) place the joint frame in the parent link frame; ``axis`` is a unit vector in the joint frame;
    ``limit`` = (lower, upper, effort, velocity) in rad or m, N m or N, rad/s or m/s (lower and upper
    are ignored for continuous joints); ``mimic`` names the leader joint (multiplier 1, offset 0)."""

    name: str
    kind: str
    parent: str
    child: str
    xyz: Vec = (0.0, 0.0, 0.0)
    rpy: Vec = (0.0, 0.0, 0.0)
    axis: Vec = (0.0, 0.0, 1.0)
    limit: tuple[float, float, float, float] | None = None
    mimic: str | None = None


@dataclass(frozen=True)
class Gripper:
    """A parallel-jaw hand: fingers slide along the hand's +-y, 0 = closed, ``stroke`` m per finger."""
    hand_parts: tuple[np.ndarray, ...]
    finger_parts: tuple[np.ndarray, ...]   # left finger, in its frame (right = mirrored)
    finger_z: float                        # finger joint origin along the hand's z, m
    stroke: float
    effort: float
    velocity: float
    hand_mass: float
    finger_mass: float


PANDA_HAND = Gripper(
    hand_parts=(cyl((0, 0, 0), (0, 0, 0.01), 0.045), box((0, 0, 0.034), (0.06, 0.2, 0.048))),
    finger_parts=(box((0, 0.012, 0.012), (0.02, 0.016, 0.024)), box((0, 0.006, 0.04), (0.018, 0.012, 0.028))),
    finger_z=0.0584, stroke=0.04, effort=20.0, velocity=0.2, hand_mass=0.73, finger_mass=0.015)

UR_GRIPPER = Gripper(   # a Robotiq-2F-85-sized parallel gripper (85 mm stroke)
    hand_parts=(cyl((0, 0, 0), (0, 0, 0.02), 0.038), box((0, 0, 0.06), (0.07, 0.13, 0.08))),
    finger_parts=(box((0, 0.012, 0.012), (0.022, 0.024, 0.024)), box((0, 0.007, 0.042), (0.022, 0.014, 0.036))),
    finger_z=0.1, stroke=0.0425, effort=100.0, velocity=0.075, hand_mass=0.9, finger_mass=0.05)


def gripper(prefix: str, g: Gripper) -> tuple[list[Link], list[Joint]]:
    """Hand + two fingers; the second finger joint is a <mimic> of the first."""
    hand, left, right = f"{prefix}hand", f"{prefix}leftfinger", f"{prefix}rightfinger"
    limit = (0.0, g.stroke, g.effort, g.velocity)
    links = [Link(hand, g.hand_parts, g.hand_mass, "dark"), Link(left, g.finger_parts, g.finger_mass, "grey"),
             Link(right, mirror_y(g.finger_parts), g.finger_mass, "grey")]
    joints = [Joint(f"{prefix}finger_joint1", "prismatic", hand, left, (0, 0, g.finger_z), axis=(0, 1, 0), limit=limit),
              Joint(f"{prefix}finger_joint2", "prismatic", hand, right, (0, 0, g.finger_z), axis=(0, -1, 0),
                    limit=limit, mimic=f"{prefix}finger_joint1")]
    return links, joints


# ---------------------------------------------------------------- Franka Emika Panda
#: Joint i (1..7): origin xyz (m), rpy (rad), lower, upper (rad), effort (N m), velocity (rad/s).
PANDA_JOINTS = (
    ((0, 0, 0.333), (0, 0, 0), -2.8973, 2.8973, 87.0, 2.175),
    ((0, 0, 0), (-PI / 2, 0, 0), -1.7628, 1.7628, 87.0, 2.175),
    ((0, -0.316, 0), (PI / 2, 0, 0), -2.8973, 2.8973, 87.0, 2.175),
    ((0.0825, 0, 0), (PI / 2, 0, 0), -3.0718, -0.0698, 87.0, 2.175),
    ((-0.0825, 0.384, 0), (-PI / 2, 0, 0), -2.8973, 2.8973, 12.0, 2.61),
    ((0, 0, 0), (PI / 2, 0, 0), -0.0175, 3.7525, 12.0, 2.61),
    ((0.088, 0, 0), (PI / 2, 0, 0), -2.8973, 2.8973, 12.0, 2.61),
)
PANDA_FLANGE_Z = 0.107
PANDA_BASE = (cyl((0, 0, 0), (0, 0, 0.14), 0.075), box((-0.06, 0, 0.04), (0.15, 0.15, 0.08)))
#: Links 1..7: (parts in the link frame, mass kg).
PANDA_LINKS = (
    ((cyl((0, 0, -0.19), (0, 0, -0.06), 0.06), cyl((0, -0.06, 0), (0, 0.06, 0), 0.06)), 2.7),
    ((cyl((0, 0, -0.06), (0, 0, 0.06), 0.06), cyl((0, -0.06, 0), (0, -0.16, 0), 0.06)), 2.7),
    ((cyl((0, 0, -0.15), (0, 0, 0), 0.06), cyl((0.0825, -0.05, 0), (0.0825, 0.05, 0), 0.05)), 2.0),
    ((cyl((0, 0, -0.055), (0, 0, 0.055), 0.055), cyl((-0.0825, 0, 0), (-0.0825, 0.1, 0), 0.055)), 2.1),
    ((cyl((0, 0, -0.28), (0, 0, 0), 0.05),), 2.0),
    ((cyl((0, 0, -0.045), (0, 0, 0.045), 0.05), cyl((0.088, 0, 0), (0.088, 0.045, 0), 0.045)), 1.5),
    ((cyl((0, 0, 0), (0, 0, 0.104), 0.045),), 0.5),
)


def panda_arm(prefix: str, parent: str | None, mount_xyz: Vec = (0, 0, 0), mount_rpy: Vec = (0, 0, 0),
              base_parts: tuple[np.ndarray, ...] = PANDA_BASE) -> tuple[list[Link], list[Joint]]:
    """A Panda arm ``<prefix>link0..8`` + hand, fixed to ``parent`` (or the root when ``None``)."""
    links = [Link(f"{prefix}link0", base_parts, 3.0)]
    joints = [] if parent is None else [Joint(f"{prefix}mount", "fixed", parent, f"{prefix}link0", mount_xyz, mount_rpy)]
    for i, ((xyz, rpy, lo, hi, effort, vel), (parts, mass)) in enumerate(zip(PANDA_JOINTS, PANDA_LINKS), 1):
        links.append(Link(f"{prefix}link{i}", parts, mass))
        joints.append(Joint(f"{prefix}joint{i}", "revolute", f"{prefix}link{i - 1}", f"{prefix}link{i}",
                            xyz, rpy, limit=(lo, hi, effort, vel)))
    links.append(Link(f"{prefix}link8"))
    joints.append(Joint(f"{prefix}joint8", "fixed", f"{prefix}link7", f"{prefix}link8", (0, 0, PANDA_FLANGE_Z)))
    hand_links, finger_joints = gripper(prefix, PANDA_HAND)
    joints.append(Joint(f"{prefix}hand_joint", "fixed", f"{prefix}link8", f"{prefix}hand", rpy=(0, 0, -PI / 4)))
    return links + hand_links, joints + finger_joints


# ---------------------------------------------------------------- UR5e (standard DH, Universal Robots)
UR5E_DH = {"d1": 0.1625, "a2": -0.425, "a3": -0.3922, "d4": 0.1333, "d5": 0.0997, "d6": 0.0996}
UR5E_JOINTS = (  # name, parent, child, xyz, rpy, |limit| rad, effort N m; velocity pi rad/s for all
    ("shoulder_pan_joint", "base_link", "shoulder_link", (0, 0, UR5E_DH["d1"]), (0, 0, 0), 2 * PI, 150.0),
    ("shoulder_lift_joint", "shoulder_link", "upper_arm_link", (0, 0, 0), (PI / 2, 0, 0), 2 * PI, 150.0),
    ("elbow_joint", "upper_arm_link", "forearm_link", (UR5E_DH["a2"], 0, 0), (0, 0, 0), PI, 150.0),
    ("wrist_1_joint", "forearm_link", "wrist_1_link", (UR5E_DH["a3"], 0, UR5E_DH["d4"]), (0, 0, 0), 2 * PI, 28.0),
    ("wrist_2_joint", "wrist_1_link", "wrist_2_link", (0, -UR5E_DH["d5"], 0), (PI / 2, 0, 0), 2 * PI, 28.0),
    ("wrist_3_joint", "wrist_2_link", "wrist_3_link", (0, UR5E_DH["d6"], 0), (-PI / 2, 0, 0), 2 * PI, 28.0),
)
UR5E_LINKS = (  # name, parts, mass kg (Universal Robots' published link masses)
    ("base_link", (cyl((0, 0, 0), (0, 0, 0.09), 0.075),), 4.0),
    ("shoulder_link", (cyl((0, 0, -0.07), (0, 0, 0.06), 0.06), cyl((0, 0, 0), (0, -0.07, 0), 0.06)), 3.761),
    ("upper_arm_link", (cyl((0, 0, 0.075), (0, 0, 0.2), 0.06), cyl((-0.425, 0, 0.085), (-0.425, 0, 0.19), 0.05)), 8.058),
    ("forearm_link", (cyl((0, 0, -0.03), (0, 0, 0.08), 0.05), cyl((-0.3922, 0, -0.035), (-0.3922, 0, 0.05), 0.04)), 2.846),
    ("wrist_1_link", (cyl((0, 0, -0.075), (0, 0, 0.045), 0.045), cyl((0, 0, 0), (0, -0.055, 0), 0.045)), 1.37),
    ("wrist_2_link", (cyl((0, 0, -0.045), (0, 0, 0.045), 0.045), cyl((0, 0, 0), (0, 0.05, 0), 0.045)), 1.3),
    ("wrist_3_link", (cyl((0, 0, -0.048), (0, 0, 0), 0.04),), 0.365),
)


def ur5e_gripper() -> tuple[list[Link], list[Joint]]:
    """The UR5e arm (base_link .. wrist_3_link, flange ``tool0``) with a Robotiq-sized gripper on tool0."""
    links = [Link(name, parts, mass, "blue" if name in ("base_link", "wrist_3_link") else "white")
             for name, parts, mass in UR5E_LINKS] + [Link("tool0")]
    joints = [Joint(name, "revolute", parent, child, xyz, rpy, limit=(-lim, lim, effort, PI))
              for name, parent, child, xyz, rpy, lim, effort in UR5E_JOINTS]
    joints.append(Joint("flange", "fixed", "wrist_3_link", "tool0"))
    hand_links, finger_joints = gripper("", UR_GRIPPER)
    joints.append(Joint("hand_joint", "fixed", "tool0", "hand"))
    return links + hand_links, joints + finger_joints


# ---------------------------------------------------------------- bimanual torso, flying gripper
def bimanual() -> tuple[list[Link], list[Joint]]:
    """A pedestal and torso with two Panda arms on the shoulders, pointing out and 30 deg down."""
    links = [Link("base_link", (box((0, 0, 0.025), (0.45, 0.45, 0.05)), box((0, 0, 0.4), (0.22, 0.22, 0.8))), 30.0, "grey"),
             Link("torso", (box((0, 0, 0.25), (0.24, 0.36, 0.5)),), 15.0)]
    joints = [Joint("torso_joint", "fixed", "base_link", "torso", (0, 0, 0.8))]
    shoulder = (cyl((0, 0, 0), (0, 0, 0.14), 0.075),)
    for prefix, side in (("left_", 1.0), ("right_", -1.0)):
        arm_links, arm_joints = panda_arm(prefix, "torso", (0, side * 0.18, 0.42), (-side * 2 * PI / 3, 0, 0), shoulder)
        links += arm_links
        joints += arm_joints
    return links, joints


def flying_gripper() -> tuple[list[Link], list[Joint]]:
    """A free-floating Panda hand with T_base_hand = Trans(x, y, z) @ rpy_to_matrix(roll, pitch, yaw).

    Joints are listed (so the joint vector is ordered) x, y, z, roll, pitch, yaw, but chained
    base -> x -> y -> z -> yaw -> pitch -> roll -> hand, which gives the URDF rpy convention
    R = Rz(yaw) Ry(pitch) Rx(roll). The three rotations are continuous (no angle limit).
    """
    chain = ("base", "virtual_x", "virtual_y", "virtual_z", "virtual_yaw", "virtual_pitch", "hand")
    slide = (100.0, 1.0)   # effort N, velocity m/s
    turn = (-PI, PI, 10.0, 3.0)   # continuous: only effort N m and velocity rad/s are written
    joints = [Joint("x", "prismatic", "base", "virtual_x", axis=(1, 0, 0), limit=(-1.5, 1.5, *slide)),
              Joint("y", "prismatic", "virtual_x", "virtual_y", axis=(0, 1, 0), limit=(-1.5, 1.5, *slide)),
              Joint("z", "prismatic", "virtual_y", "virtual_z", axis=(0, 0, 1), limit=(0.0, 1.5, *slide)),
              Joint("roll", "continuous", "virtual_pitch", "hand", axis=(1, 0, 0), limit=turn),
              Joint("pitch", "continuous", "virtual_yaw", "virtual_pitch", axis=(0, 1, 0), limit=turn),
              Joint("yaw", "continuous", "virtual_z", "virtual_yaw", axis=(0, 0, 1), limit=turn)]
    hand_links, finger_joints = gripper("", PANDA_HAND)
    return [Link(n) for n in chain[:-1]] + hand_links, joints + finger_joints


ROBOTS = {"franka_panda": lambda: panda_arm("panda_", None), "bimanual": bimanual,
          "flying_gripper": flying_gripper, "ur5e_gripper": ur5e_gripper}
VISUAL_EXT = {"franka_panda": "obj"}   # the Panda's visual meshes are OBJ, everything else STL


# ---------------------------------------------------------------- writing
def _f(x: float) -> str:
    """Shortest round-trip text of a float (``0`` for +-0, no trailing ``.0``)."""
    x = float(x) + 0.0
    return repr(x).removesuffix(".0")


def _v(xs: Iterable[float]) -> str:
    """Floats as space-separated shortest round-trip text (URDF ``xyz``/``rpy``/``rgba`` values)."""
    return " ".join(_f(x) for x in xs)


def _r6(x: float) -> float:
    """6 significant digits (readable files); round-off noise below 1e-10 becomes 0."""
    return float(f"{round(float(x), 10):.6g}")


def _inertial(link: Link, mesh: trimesh.Trimesh | None) -> list[str]:
    """``<inertial>`` lines: centre of mass and inertia of the solid ``mesh`` of mass ``link.mass``."""
    if mesh is None:
        com, inertia = np.zeros(3), np.eye(3) * 1e-6
    else:
        solid = mesh.copy()
        solid.density = link.mass / mesh.volume
        com, inertia = solid.center_mass, solid.moment_inertia
    i = [_r6(inertia[a, b]) for a, b in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))]
    return ['    <inertial>', f'      <origin xyz="{_v(round(c, 6) for c in com)}" rpy="0 0 0"/>',
            f'      <mass value="{_f(_r6(link.mass))}"/>',
            '      <inertia ixx="{}" ixy="{}" ixz="{}" iyy="{}" iyz="{}" izz="{}"/>'.format(*map(_f, i)),
            '    </inertial>']


def _link_xml(robot: str, link: Link, mesh: trimesh.Trimesh | None, visual_ext: str) -> list[str]:
    """``<link>`` lines: inertial, then visual and collision meshes (``package://<robot>/meshes/``)."""
    out = [f'  <link name="{link.name}">'] + _inertial(link, mesh)
    if mesh is not None:
        for tag, ext in (("visual", visual_ext), ("collision", "stl")):
            out += [f'    <{tag}>', '      <origin xyz="0 0 0" rpy="0 0 0"/>',
                    f'      <geometry><mesh filename="package://{robot}/meshes/{link.name}.{ext}"/></geometry>']
            out += [f'      <material name="{link.material}"/>'] if tag == "visual" else []
            out += [f'    </{tag}>']
    return out + ['  </link>']


def _joint_xml(j: Joint) -> list[str]:
    """``<joint>`` lines: origin, parent, child, then axis, limit and mimic for movable joints."""
    out = [f'  <joint name="{j.name}" type="{j.kind}">', f'    <origin xyz="{_v(j.xyz)}" rpy="{_v(j.rpy)}"/>',
           f'    <parent link="{j.parent}"/>', f'    <child link="{j.child}"/>']
    if j.kind != "fixed":
        lo, hi, effort, vel = j.limit
        bounds = "" if j.kind == "continuous" else f'lower="{_f(lo)}" upper="{_f(hi)}" '
        out += [f'    <axis xyz="{_v(j.axis)}"/>',
                f'    <limit {bounds}effort="{_f(effort)}" velocity="{_f(vel)}"/>']
    if j.mimic is not None:
        out.append(f'    <mimic joint="{j.mimic}" multiplier="1" offset="0"/>')
    return out + ['  </joint>']


def build(robot: str) -> dict[str, bytes]:
    """All files of one robot, relative to its folder: ``<robot>.urdf`` and ``meshes/*``."""
    links, joints = ROBOTS[robot]()
    visual_ext = VISUAL_EXT.get(robot, "stl")
    files: dict[str, bytes] = {}
    xml = ['<?xml version="1.0"?>', '<!-- Generated by scripts/make_robot_assets.py: edit the script, not this file.',
           '     Kinematic parameters and their sources: urdfs/README.md -->', f'<robot name="{robot}">']
    xml += [f'  <material name="{n}"><color rgba="{_v(rgb)} 1"/></material>' for n, rgb in MATERIALS.items()]
    for link in links:
        mesh = trimesh.convex.convex_hull(np.concatenate(link.parts)) if link.parts else None
        if mesh is not None:
            files[f"meshes/{link.name}.stl"] = export_stl(mesh)
            if visual_ext == "obj":
                files[f"meshes/{link.name}.obj"] = export_obj(
                    mesh, include_normals=False, include_color=False, include_texture=False,
                    header="pointworld: generated by scripts/make_robot_assets.py").encode()
        xml += _link_xml(robot, link, mesh, visual_ext)
    for joint in joints:
        xml += _joint_xml(joint)
    files[f"{robot}.urdf"] = ("\n".join(xml + ["</robot>", ""])).encode()
    return files


def write_robot(robot: str, output: Path) -> list[Path]:
    """Write one robot's files under ``output/<robot>`` atomically; remove stale meshes. Returns the paths."""
    folder = output / robot
    written = []
    for rel, data in build(robot).items():
        path = folder / rel
        with atomic_open(path, "wb") as fh:
            fh.write(data)
        written.append(path)
    for stale in sorted((folder / "meshes").glob("*")):
        if stale.suffix in (".stl", ".obj") and stale not in written:
            stale.unlink()
    return written


def main(argv: list[str] | None = None) -> None:
    """Command line entry point (``--output``, ``--robots``); see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path(__file__).resolve().parents[1] / "urdfs",
                        help="folder that receives one sub-folder per robot (default: the repository's urdfs/)")
    parser.add_argument("--robots", nargs="+", choices=sorted(ROBOTS), default=list(ROBOTS),
                        help="robots to generate (default: all)")
    args = parser.parse_args(argv)
    if args.output.exists() and not args.output.is_dir():
        parser.error(f"--output: expected a directory, got the file {args.output}")
    for robot in args.robots:
        paths = write_robot(robot, args.output)
        size = sum(p.stat().st_size for p in paths)
        print(f"{robot}: {len(paths)} files, {size / 1e3:.0f} kB -> {args.output / robot}")


if __name__ == "__main__":
    main()
