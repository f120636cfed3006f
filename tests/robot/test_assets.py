"""The shipped robot descriptions (urdfs/) and pointworld.robot.assets.

Independent of pointworld's own URDF loader: parsing and FK go through yourdfpy and pybullet, the
kinematics are checked against DH products written out here from the published parameters.
"""

from __future__ import annotations

import functools
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
import yourdfpy

from pointworld.geometry.rotations import rpy_to_matrix
from pointworld.robot.assets import (
    SHIPPED_ROBOTS,
    is_shipped_urdf,
    shipped_package_map,
    shipped_urdf_path,
)

# yourdfpy 0.0.60 calls trimesh's deprecated Scene.dump(concatenate=True) while building its scenes.
pytestmark = pytest.mark.filterwarnings("ignore:.*Scene.dump.*:DeprecationWarning")

REPO = Path(__file__).resolve().parents[2]
URDFS = REPO / "urdfs"
PI = math.pi

#: robot -> actuated (non-mimic) joints in document order, number of movable joints (incl. mimic).
PANDA_ARM = [f"joint{i}" for i in range(1, 8)] + ["finger_joint1"]
JOINTS = {
    "franka_panda": ([f"panda_{n}" for n in PANDA_ARM], 9),
    "bimanual": ([f"left_{n}" for n in PANDA_ARM] + [f"right_{n}" for n in PANDA_ARM], 18),
    "flying_gripper": (["x", "y", "z", "roll", "pitch", "yaw", "finger_joint1"], 8),
    "ur5e_gripper": (["shoulder_pan_joint", "shoulder_lift_joint", "elbow_joint", "wrist_1_joint",
                      "wrist_2_joint", "wrist_3_joint", "finger_joint1"], 8),
}
#: robot -> (hand, left finger, right finger) links of each gripper.
GRIPPERS = {"franka_panda": [("panda_hand", "panda_leftfinger", "panda_rightfinger")],
            "bimanual": [(f"{s}_hand", f"{s}_leftfinger", f"{s}_rightfinger") for s in ("left", "right")],
            "flying_gripper": [("hand", "leftfinger", "rightfinger")],
            "ur5e_gripper": [("hand", "leftfinger", "rightfinger")]}


def _handler(fname: str) -> str:
    """package://<robot>/rest -> urdfs/<robot>/rest; anything else is a test failure."""
    assert fname.startswith("package://"), fname
    robot, rest = fname[len("package://"):].split("/", 1)
    assert robot in SHIPPED_ROBOTS, fname
    return str(URDFS / robot / rest)


@functools.cache
def _urdf(robot: str) -> yourdfpy.URDF:
    return yourdfpy.URDF.load(str(URDFS / robot / f"{robot}.urdf"), filename_handler=_handler,
                              load_meshes=True, load_collision_meshes=True, build_collision_scene_graph=True)


def _mesh_files(robot: str) -> dict[str, list[str]]:
    """link -> mesh filenames (package:// form) of its visuals and collisions."""
    out = {}
    for link in _urdf(robot).robot.links:
        names = [g.geometry.mesh.filename for g in link.visuals + link.collisions if g.geometry.mesh]
        if names:
            out[link.name] = names
    return out


def _fk(robot: str, cfg: dict[str, float], link: str, frame_from: str | None = None) -> np.ndarray:
    u = _urdf(robot)
    u.update_cfg({n: cfg.get(n, 0.0) for n in u.actuated_joint_names})
    return u.get_transform(link, frame_from)


def _random_cfg(robot: str, seed: int) -> dict[str, float]:
    """Uniform inside the limits; continuous joints in [-2 pi, 2 pi] (beyond +-pi on purpose)."""
    rng = np.random.default_rng(seed)
    joints = {j.name: j for j in _urdf(robot).robot.joints}

    def bounds(j):
        return (-2 * PI, 2 * PI) if j.type == "continuous" else (j.limit.lower, j.limit.upper)
    return {n: float(rng.uniform(*bounds(joints[n]))) for n in _urdf(robot).actuated_joint_names}


def _rot(axis: str, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    T = np.eye(4)
    i, j = {"x": (1, 2), "y": (2, 0), "z": (0, 1)}[axis]
    T[i, i], T[i, j], T[j, i], T[j, j] = c, -s, s, c
    return T


def _trans(x: float = 0.0, y: float = 0.0, z: float = 0.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, 3] = (x, y, z)
    return T


def _panda_dh(q) -> np.ndarray:
    """T_link0_flange from Franka's published modified (Craig) DH table."""
    a = (0, 0, 0, 0.0825, -0.0825, 0, 0.088)
    d = (0.333, 0, 0.316, 0, 0.384, 0, 0)
    alpha = (0, -PI / 2, PI / 2, PI / 2, -PI / 2, PI / 2, PI / 2)
    T = np.eye(4)
    for i in range(7):
        T = T @ _rot("x", alpha[i]) @ _trans(x=a[i]) @ _rot("z", q[i]) @ _trans(z=d[i])
    return T @ _trans(z=0.107)


def _ur5e_dh(q) -> np.ndarray:
    """T_base_tool0 from Universal Robots' published (standard) DH table of the UR5e."""
    d = (0.1625, 0, 0, 0.1333, 0.0997, 0.0996)
    a = (0, -0.425, -0.3922, 0, 0, 0)
    alpha = (PI / 2, 0, 0, PI / 2, -PI / 2, 0)
    T = np.eye(4)
    for i in range(6):
        T = T @ _rot("z", q[i]) @ _trans(z=d[i]) @ _trans(x=a[i]) @ _rot("x", alpha[i])
    return T


# ------------------------------------------------------------------ pointworld.robot.assets
def test_shipped_paths_and_package_map():
    assert set(SHIPPED_ROBOTS) == {"franka_panda", "bimanual", "flying_gripper", "ur5e_gripper"}
    pmap = shipped_package_map()
    assert list(pmap) == list(SHIPPED_ROBOTS)
    for name in SHIPPED_ROBOTS:
        path = shipped_urdf_path(name)
        assert path.is_file() and path.name == f"{name}.urdf"
        assert path.resolve() == (URDFS / name / f"{name}.urdf").resolve()
        assert pmap[name].resolve() == (URDFS / name).resolve() and (pmap[name] / "meshes").is_dir()


def test_is_shipped_urdf(tmp_path):
    assert all(is_shipped_urdf(shipped_urdf_path(name)) for name in SHIPPED_ROBOTS)
    assert is_shipped_urdf(REPO / "pointworld" / "urdfs" / "bimanual" / "bimanual.urdf")   # via the symlink
    copy = tmp_path / "franka_panda.urdf"
    copy.write_bytes(shipped_urdf_path("franka_panda").read_bytes())
    assert not is_shipped_urdf(copy) and not is_shipped_urdf(URDFS.parent / "pyproject.toml")


def test_shipped_urdf_path_bad_input():
    with pytest.raises(ValueError, match="franka_panda.*ur5e_gripper.*got 'kuka'"):
        shipped_urdf_path("kuka")
    with pytest.raises(TypeError, match="name: expected"):
        shipped_urdf_path(3)  # type: ignore[arg-type]


def test_installed_folder_is_the_repository_folder():
    link = REPO / "pointworld" / "urdfs"
    assert link.is_symlink() and link.resolve() == URDFS.resolve()
    assert (URDFS / "__init__.py").is_file()


# ------------------------------------------------------------------ files and meshes
@pytest.mark.parametrize("robot", SHIPPED_ROBOTS)
def test_urdf_parses_and_every_mesh_resolves(robot):
    u = _urdf(robot)
    assert u.validate() and u.robot.name == robot
    files = _mesh_files(robot)
    assert files, "no link has geometry"
    referenced = set()
    for link, names in files.items():
        assert all(n.startswith(f"package://{robot}/meshes/{link}.") for n in names), names
        referenced |= {Path(_handler(n)).resolve() for n in names}
    assert all(p.is_file() for p in referenced)
    on_disk = {p.resolve() for p in (URDFS / robot / "meshes").iterdir()}
    assert on_disk == referenced, "mesh files that no URDF references, or references without files"
    assert len(u.scene.geometry) == len(files) and len(u.collision_scene.geometry) == len(files)


@pytest.mark.parametrize("robot", SHIPPED_ROBOTS)
def test_meshes_are_closed_and_plausibly_sized(robot):
    for names in _mesh_files(robot).values():
        for name in names:
            mesh = trimesh.load(_handler(name), force="mesh")
            assert mesh.is_watertight and mesh.is_winding_consistent, name
            assert mesh.volume > 1e-7, name
            assert 0.01 <= mesh.extents.min() and mesh.extents.max() <= 1.0, (name, mesh.extents)
            assert 12 <= len(mesh.faces) <= 1000, (name, len(mesh.faces))


def test_franka_visual_obj_matches_collision_stl():
    for names in _mesh_files("franka_panda").values():
        visual, collision = (trimesh.load(_handler(n), force="mesh") for n in names)
        assert names[0].endswith(".obj") and names[1].endswith(".stl")
        assert np.allclose(np.sort(visual.vertices, axis=0), np.sort(collision.vertices, axis=0), atol=1e-6)
        assert visual.volume == pytest.approx(collision.volume, rel=1e-5)


@pytest.mark.parametrize("robot", SHIPPED_ROBOTS)
def test_links_touch_their_parents_at_zero(robot):
    """No floating parts: each link's surface comes within 1.5 cm of its parent's at q = 0."""
    u = _urdf(robot)
    u.update_cfg(np.zeros(len(u.actuated_joint_names)))
    files = _mesh_files(robot)

    def points(link):
        mesh = trimesh.load(_handler(files[link][-1]), force="mesh")
        pts, _ = trimesh.sample.sample_surface(mesh, 2000, seed=0)
        return trimesh.transform_points(pts, u.get_transform(link))

    pairs = [(j.parent, j.child) for j in u.robot.joints if j.parent in files and j.child in files]
    assert pairs
    for parent, child in pairs:
        a, b = points(parent), points(child)
        gap = math.sqrt(max(((a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2.0 * a @ b.T).min(), 0.0))
        assert gap < 0.015, (parent, child, gap)


@pytest.mark.parametrize("robot", SHIPPED_ROBOTS)
def test_inertials_are_physical(robot):
    files = _mesh_files(robot)
    for link in _urdf(robot).robot.links:
        inertial = link.inertial
        assert inertial is not None and 0.005 <= inertial.mass <= 50.0, link.name
        eig = np.linalg.eigvalsh(inertial.inertia)
        assert eig.min() > 0 and eig.max() <= eig.sum() - eig.max() + 1e-12, link.name  # triangle inequality
        if link.name in files:
            mesh = trimesh.load(_handler(files[link.name][-1]), force="mesh")   # convex: inside = behind every face
            offset = inertial.origin[:3, 3] - mesh.triangles[:, 0]
            assert (np.einsum("fi,fi->f", mesh.face_normals, offset) < 0).all(), link.name


def test_total_size_is_small():
    size = sum(p.stat().st_size for p in URDFS.rglob("*") if p.is_file())
    assert size < 3e6, size


# ------------------------------------------------------------------ joints and grippers
@pytest.mark.parametrize("robot", SHIPPED_ROBOTS)
def test_joint_lists(robot):
    joints = _urdf(robot).robot.joints
    actuated = [j.name for j in joints if j.type != "fixed" and j.mimic is None]
    expected, movable = JOINTS[robot]
    assert actuated == expected
    assert sum(j.type != "fixed" for j in joints) == movable
    for j in joints:
        if j.type == "continuous":   # only the flying gripper's angles
            assert robot == "flying_gripper" and j.name in ("roll", "pitch", "yaw"), j.name
            assert j.limit.lower is None and j.limit.upper is None, j.name
        elif j.type != "fixed":
            assert j.type in ("revolute", "prismatic") and j.limit.lower < j.limit.upper, j.name
        if j.type != "fixed":
            assert j.limit.velocity > 0 and j.limit.effort > 0, j.name
            assert np.linalg.norm(j.axis) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("robot", SHIPPED_ROBOTS)
def test_grippers_follow_the_finger_convention(robot):
    """One prismatic leader per gripper, follower = <mimic> (1, 0); 0 = pads touching, upper = 2*stroke gap."""
    u = _urdf(robot)
    by_child = {j.child: j for j in u.robot.joints}
    for hand, left, right in GRIPPERS[robot]:
        leader, follower = by_child[left], by_child[right]
        assert leader.type == follower.type == "prismatic" and leader.mimic is None
        assert (follower.mimic.joint, follower.mimic.multiplier, follower.mimic.offset) == (leader.name, 1.0, 0.0)
        assert leader.limit.lower == 0.0 and 0.02 <= leader.limit.upper <= 0.05
        files = _mesh_files(robot)
        meshes = {k: trimesh.load(_handler(files[k][-1]), force="mesh") for k in (left, right)}
        for opening in (0.0, leader.limit.upper):
            cfg = {leader.name: opening}
            y_left = trimesh.transform_points(meshes[left].vertices, _fk(robot, cfg, left, hand))[:, 1]
            y_right = trimesh.transform_points(meshes[right].vertices, _fk(robot, cfg, right, hand))[:, 1]
            assert y_left.min() - y_right.max() == pytest.approx(2 * opening, abs=1e-6)


def test_franka_matches_published_kinematics():
    T0 = _fk("franka_panda", {}, "panda_link8")
    expected = np.array([[1, 0, 0, 0.088], [0, -1, 0, 0], [0, 0, -1, 0.333 + 0.316 + 0.384 - 0.107], [0, 0, 0, 1]])
    np.testing.assert_allclose(T0, expected, atol=1e-12)
    np.testing.assert_allclose(T0, _panda_dh(np.zeros(7)), atol=1e-12)
    for seed in range(5):
        cfg = _random_cfg("franka_panda", seed)
        q = [cfg[f"panda_joint{i}"] for i in range(1, 8)]
        np.testing.assert_allclose(_fk("franka_panda", cfg, "panda_link8"), _panda_dh(q), atol=1e-9)
        hand = _fk("franka_panda", cfg, "panda_hand", "panda_link8")
        np.testing.assert_allclose(hand, _rot("z", -PI / 4), atol=1e-12)


def test_ur5e_matches_published_dh():
    T0 = _fk("ur5e_gripper", {}, "tool0")
    np.testing.assert_allclose(T0[:3, 3], [-0.425 - 0.3922, -0.1333 - 0.0996, 0.1625 - 0.0997], atol=1e-12)
    for seed in range(5):
        cfg = _random_cfg("ur5e_gripper", seed)
        q = [cfg[n] for n in JOINTS["ur5e_gripper"][0][:6]]
        np.testing.assert_allclose(_fk("ur5e_gripper", cfg, "tool0"), _ur5e_dh(q), atol=1e-9)


def test_bimanual_arms_are_mirrored_pandas():
    for seed in range(3):
        cfg = _random_cfg("bimanual", seed)
        for side in ("left", "right"):
            q = [cfg[f"{side}_joint{i}"] for i in range(1, 8)]
            np.testing.assert_allclose(_fk("bimanual", cfg, f"{side}_link8", f"{side}_link0"), _panda_dh(q), atol=1e-9)
    left, right = (_fk("bimanual", {}, f"{s}_link8")[:3, 3] for s in ("left", "right"))
    np.testing.assert_allclose(left * [1, -1, 1], right, atol=1e-12)
    assert left[1] > 0.5 and 0.6 < left[2] < 1.2   # out to the left side, below the shoulder (1.22 m)


def test_flying_gripper_pose_is_translation_then_urdf_rpy():
    """T_base_hand = Trans(x, y, z) @ Rz(yaw) Ry(pitch) Rx(roll), i.e. rpy_to_matrix(roll, pitch, yaw)."""
    for seed in range(5):
        cfg = _random_cfg("flying_gripper", seed)
        rpy = (cfg["roll"], cfg["pitch"], cfg["yaw"])
        expected = _trans(cfg["x"], cfg["y"], cfg["z"]) @ _rot("z", rpy[2]) @ _rot("y", rpy[1]) @ _rot("x", rpy[0])
        got = _fk("flying_gripper", cfg, "hand")
        np.testing.assert_allclose(got, expected, atol=1e-12)
        np.testing.assert_allclose(got[:3, :3], rpy_to_matrix(torch.tensor(rpy, dtype=torch.float64)).numpy(),
                                   atol=1e-12)
    top_down = _fk("flying_gripper", {"z": 0.5, "roll": PI}, "hand")   # fingers (+z of the hand) point down
    np.testing.assert_allclose(top_down[:3, 2], [0, 0, -1], atol=1e-12)


def test_readme_documents_every_joint():
    readme = (URDFS / "README.md").read_text()
    for robot in SHIPPED_ROBOTS:
        assert f"`{robot}`" in readme
        for name in JOINTS[robot][0]:
            short = name.split("_", 1)[1] if robot == "bimanual" else name
            assert short in readme, name


# ------------------------------------------------------------------ pybullet
@pytest.mark.parametrize("robot", SHIPPED_ROBOTS)
def test_pybullet_loads_with_the_same_links_and_poses(robot, tmp_path):
    p = pytest.importorskip("pybullet")
    text = (URDFS / robot / f"{robot}.urdf").read_text().replace(f"package://{robot}/", f"{URDFS / robot}/")
    resolved = tmp_path / f"{robot}.urdf"
    resolved.write_text(text)
    client = p.connect(p.DIRECT)
    try:
        body = p.loadURDF(str(resolved), useFixedBase=True, physicsClientId=client)
        infos = [p.getJointInfo(body, i, physicsClientId=client) for i in range(p.getNumJoints(body, physicsClientId=client))]
        joints = _urdf(robot).robot.joints
        assert sorted(info[12].decode() for info in infos) == sorted(j.child for j in joints)
        cfg = _random_cfg(robot, 7)
        mimic = {j.name: j.mimic.joint for j in joints if j.mimic is not None}
        for i, info in enumerate(infos):   # pybullet ignores <mimic>: followers are set by hand
            name = info[1].decode()
            if name in cfg or name in mimic:
                p.resetJointState(body, i, cfg[mimic.get(name, name)], physicsClientId=client)
        for i, info in enumerate(infos):
            pos = p.getLinkState(body, i, computeForwardKinematics=True, physicsClientId=client)[4]
            np.testing.assert_allclose(pos, _fk(robot, cfg, info[12].decode())[:3, 3], atol=1e-5)
    finally:
        p.disconnect(client)


# ------------------------------------------------------------------ the generator
def _run_generator(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "make_robot_assets.py"), *args],
                          check=False, capture_output=True, text=True, timeout=120)


def test_generator_reproduces_the_shipped_files_byte_for_byte(tmp_path):
    stale = tmp_path / "franka_panda" / "meshes" / "old_link.stl"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    result = _run_generator("--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert not stale.exists()
    generated = {p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file()}
    shipped = {p.relative_to(URDFS) for p in URDFS.rglob("*")
               if p.is_file() and p.suffix in (".urdf", ".stl", ".obj")}
    assert generated == shipped
    for rel in sorted(generated):
        assert (tmp_path / rel).read_bytes() == (URDFS / rel).read_bytes(), rel


def test_generator_rejects_a_file_as_output(tmp_path):
    target = tmp_path / "not_a_dir"
    target.write_text("x")
    result = _run_generator("--output", str(target))
    assert result.returncode != 0 and "--output" in result.stderr
