"""URDF loading: structure, limits, mimic, floating expansion, meshes, mesh resolution, bad input."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pybullet_data
import pytest
import torch
import trimesh
import yourdfpy

from pointworld.robot.assets import SHIPPED_ROBOTS, shipped_urdf_path
from pointworld.errors import JointMismatchError, MeshNotFoundError, URDFError
from pointworld.robot.urdf import load_robot

PB = Path(pybullet_data.getDataPath())
PANDA = PB / "franka_panda" / "panda.urdf"
XARM = PB / "xarm" / "xarm6_with_gripper.urdf"
KUKA = PB / "kuka_iiwa" / "model.urdf"


def write_urdf(tmp_path: Path, body: str, name: str = "r.urdf") -> Path:
    path = tmp_path / name
    path.write_text(f'<?xml version="1.0"?>\n<robot name="test">\n{body}\n</robot>\n')
    return path


def joint(name: str, parent: str, child: str, kind: str = "revolute", extra: str = "",
          limit: str = '<limit lower="-1" upper="1" effort="1" velocity="2"/>') -> str:
    return (f'<joint name="{name}" type="{kind}"><parent link="{parent}"/><child link="{child}"/>'
            f'<origin xyz="0 0 0.1" rpy="0 0 0"/><axis xyz="0 0 1"/>{limit}{extra}</joint>')


def links(*names: str) -> str:
    return "".join(f'<link name="{n}"/>' for n in names)


# ---------------------------------------------------------------- structure of real URDFs

def test_panda_structure_matches_the_urdf():
    robot = load_robot(PANDA)
    assert robot.joint_names == tuple(f"panda_joint{i}" for i in range(1, 8)) + ("panda_finger_joint1",)
    assert robot.mimic == {"panda_finger_joint2": ("panda_finger_joint1", 1.0, 0.0)}
    assert robot.link_names[0] == "panda_link0" and robot.num_links == 13
    for link, parent in enumerate(robot.chain.parent_indices):
        assert parent < link  # parents come first
    np.testing.assert_allclose(robot.lower[:2].numpy(), [-2.9671, -1.8326], rtol=1e-6)
    np.testing.assert_allclose(robot.upper[-1].item(), 0.04, rtol=1e-6)
    np.testing.assert_allclose(robot.velocity_limit[-1].item(), 0.2, rtol=1e-6)
    assert robot.link_joint_names[robot.link_index("panda_leftfinger")] == "panda_finger_joint1"
    assert robot.dtype == torch.float32 and robot.device.type == "cpu"


def test_xarm_mimic_followers_all_resolve_to_drive_joint():
    robot = load_robot(XARM, load_meshes=False)
    assert robot.num_joints == 7 and robot.joint_names[-1] == "drive_joint"
    assert len(robot.mimic) == 5 and {v[0] for v in robot.mimic.values()} == {"drive_joint"}


@pytest.mark.parametrize("name", SHIPPED_ROBOTS)
def test_shipped_robots_load_visual_and_collision_geometry(name):
    """The shipped visual meshes (the Panda's are OBJ) are the same solids as the collision STLs."""
    collision, visual = load_robot(name), load_robot(name, geometry="visual")
    assert collision.num_joints > 0 and len(collision.link_meshes) > 0
    assert set(visual.link_meshes) == set(collision.link_meshes)
    for link, mesh in collision.link_meshes.items():
        other = visual.link_meshes[link]
        assert mesh.is_watertight and mesh.volume > 0, link
        assert other.area == pytest.approx(mesh.area, rel=1e-6), link
        np.testing.assert_allclose(other.bounds, mesh.bounds, atol=1e-6, err_msg=link)


def test_continuous_joint_limits_are_infinite(tmp_path):
    path = write_urdf(tmp_path, links("a", "b") + joint("j", "a", "b", "continuous", limit=""))
    robot = load_robot(path)
    assert robot.lower.tolist() == [-math.inf] and robot.upper.tolist() == [math.inf]
    assert robot.velocity_limit.tolist() == [math.inf]


# ---------------------------------------------------------------- mimic and floating joints

def test_mimic_chain_composes_to_the_root_leader(tmp_path):
    body = links("a", "b", "c", "d") + joint("lead", "a", "b") + joint(
        "f1", "b", "c", extra='<mimic joint="lead" multiplier="2" offset="0.1"/>') + joint(
        "f2", "c", "d", extra='<mimic joint="f1" multiplier="-0.5" offset="0.3"/>')
    robot = load_robot(write_urdf(tmp_path, body))
    assert robot.joint_names == ("lead",)
    leader, mult, offset = robot.mimic["f2"]
    # q_f2 = -0.5 * (2 q + 0.1) + 0.3 = -q + 0.25
    assert leader == "lead" and mult == pytest.approx(-1.0) and offset == pytest.approx(0.25)


def test_floating_joint_expands_into_six_virtual_joints(tmp_path):
    body = links("world", "body") + ('<joint name="free" type="floating"><parent link="world"/>'
                                     '<child link="body"/><origin xyz="1 2 3"/></joint>')
    robot = load_robot(write_urdf(tmp_path, body))
    assert robot.joint_names == tuple(f"free_{s}" for s in ("x", "y", "z", "roll", "pitch", "yaw"))
    assert robot.link_names == ("world", "free_virtual_x", "free_virtual_y", "free_virtual_z",
                                "free_virtual_yaw", "free_virtual_pitch", "body")
    assert robot.chain.joint_type.tolist() == [0, 2, 2, 2, 1, 1, 1]
    # chained x -> y -> z -> yaw -> pitch -> roll (URDF rpy); FK is checked in test_kinematics.py
    assert robot.link_joint_names[1:] == ("free_x", "free_y", "free_z", "free_yaw", "free_pitch", "free_roll")
    assert robot.chain.q_index.tolist() == [-1, 0, 1, 2, 5, 4, 3]
    assert torch.isinf(robot.lower).all() and torch.isinf(robot.upper).all()


# ---------------------------------------------------------------- meshes

def _yourdfpy_link_meshes(path: Path, robot) -> dict[str, trimesh.Trimesh]:
    """Each link's collision geometry in its link frame, assembled by yourdfpy's own scene graph."""
    from pointworld.robot.urdf_meshes import MeshResolver

    resolver = MeshResolver(path)
    y = yourdfpy.URDF.load(str(path), build_scene_graph=False, build_collision_scene_graph=True,
                           load_collision_meshes=True, filename_handler=lambda fname: str(resolver.resolve(fname)))
    graph = y.collision_scene.graph
    out: dict[str, list] = {}
    for node in graph.nodes_geometry:
        T_base_node, geom = graph[node]
        link = graph.transforms.parents[node]
        T_link_base = np.linalg.inv(y.get_transform(link, robot.link_names[0], collision_geometry=True))
        out.setdefault(link, []).append(y.collision_scene.geometry[geom].copy().apply_transform(T_link_base @ T_base_node))
    return {k: trimesh.util.concatenate(v) for k, v in out.items()}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside yourdfpy
def test_panda_link_meshes_match_yourdfpy_scene_in_link_frame():
    robot = load_robot(PANDA)
    ref = _yourdfpy_link_meshes(PANDA, robot)
    assert set(robot.link_meshes) == set(ref)
    for name, mesh in robot.link_meshes.items():
        np.testing.assert_allclose(mesh.bounds, ref[name].bounds, atol=1e-9, err_msg=name)
        assert mesh.area == pytest.approx(ref[name].area, rel=1e-9)


def test_primitives_origins_and_mesh_scale(tmp_path):
    trimesh.creation.box(extents=(0.1, 0.2, 0.3)).export(tmp_path / "box.stl")
    geoms = ('<collision><origin xyz="1 0 0"/><geometry><box size="0.1 0.2 0.3"/></geometry></collision>'
             '<collision><geometry><mesh filename="box.stl" scale="2 1 1"/></geometry></collision>'
             '<visual><geometry><sphere radius="0.5"/></geometry></visual>'
             '<visual><origin xyz="0 0 -3"/><geometry><cylinder radius="0.1" length="0.4"/></geometry></visual>')
    robot = load_robot(write_urdf(tmp_path, f'<link name="a">{geoms}</link>'))
    mesh = robot.link_meshes["a"]
    np.testing.assert_allclose(mesh.bounds, [[-0.1, -0.1, -0.15], [1.05, 0.1, 0.15]], atol=1e-12)
    assert mesh.area == pytest.approx(2 * (0.02 + 0.03 + 0.06) + 2 * (0.04 + 0.06 + 0.06), rel=1e-6)  # STL is float32
    visual = load_robot(write_urdf(tmp_path, f'<link name="a">{geoms}</link>'), geometry="visual")
    np.testing.assert_allclose(visual.link_meshes["a"].bounds, [[-0.5, -0.5, -3.2], [0.5, 0.5, 0.5]],
                               atol=1e-9)


def test_dae_mesh_matches_its_stl_twin(tmp_path):
    meshes = PB / "racecar" / "meshes"
    body = (f'<link name="a"><collision><geometry><mesh filename="{meshes / "chassis.dae"}"/></geometry>'
            f'</collision></link><link name="b"><collision><geometry><mesh filename="{meshes / "chassis.STL"}"/>'
            f'</geometry></collision></link>' + joint("j", "a", "b", "fixed", limit=""))
    robot = load_robot(write_urdf(tmp_path, body))
    dae, stl = robot.link_meshes["a"], robot.link_meshes["b"]
    np.testing.assert_allclose(dae.bounds, stl.bounds, atol=1e-6)
    assert dae.area == pytest.approx(stl.area, rel=1e-6)


def test_unreadable_mesh_names_the_file_and_dae_hint(tmp_path, monkeypatch):
    (tmp_path / "junk.stl").write_bytes(b"not a mesh")
    body = '<link name="a"><collision><geometry><mesh filename="junk.stl"/></geometry></collision></link>'
    with pytest.raises(URDFError, match="junk.stl"):
        load_robot(write_urdf(tmp_path, body))
    from pointworld.robot import urdf_meshes

    (tmp_path / "part.dae").write_bytes(b"<COLLADA/>")
    monkeypatch.setattr(urdf_meshes.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(URDFError, match="part.dae.*pycollada"):
        load_robot(write_urdf(tmp_path, body.replace("junk.stl", "part.dae")))


def test_zero_area_geometry_is_an_error(tmp_path):
    trimesh.creation.box(extents=(0.1, 0.2, 0.3)).export(tmp_path / "box.stl")
    trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2], [0, 2, 1]], process=False).export(
        tmp_path / "flat.stl")   # collinear vertices: faces, but no area
    element = "link 'a' <collision> #0: <"
    for geometry, message in (
            ('<sphere radius="0"/>', f"{element}sphere radius> must be positive.*zero surface area"),
            ('<box size="0.1 0 0.1"/>', rf"{element}box size> must be positive.*\[0.1, 0.0, 0.1\]"),
            ('<cylinder radius="0.1" length="-1"/>', f"{element}cylinder radius/length> must be"),
            ('<mesh filename="box.stl" scale="0 1 1"/>', rf"{element}mesh scale> must be .*\[0.0, 1.0, 1.0\]"),
            ('<mesh filename="flat.stl"/>', "mesh 'flat.stl'.*zero surface area")):
        body = f'<link name="a"><collision><geometry>{geometry}</geometry></collision></link>'
        with pytest.raises(URDFError, match=message):
            load_robot(write_urdf(tmp_path, body))


def test_links_with_only_the_other_geometry_warn(tmp_path):
    box = '<geometry><box size="0.1 0.1 0.1"/></geometry>'
    body = (f'<link name="a"><collision>{box}</collision><visual>{box}</visual></link>'
            f'<link name="v"><visual>{box}</visual></link><link name="c"><collision>{box}</collision></link>'
            + joint("j1", "a", "v", "fixed", limit="") + joint("j2", "a", "c", "fixed", limit=""))
    path = write_urdf(tmp_path, body)
    with pytest.warns(UserWarning, match=r"\['v'\] have <visual> but no <collision>.*geometry='visual'"):
        robot = load_robot(path)
    assert set(robot.link_meshes) == {"a", "c"}
    with pytest.warns(UserWarning, match=r"\['c'\] have <collision> but no <visual>.*geometry='collision'"):
        assert set(load_robot(path, geometry="visual").link_meshes) == {"a", "v"}


def test_closed_mesh_with_inverted_or_mixed_winding_gets_outward_normals(tmp_path):
    box = trimesh.creation.box(extents=(0.1, 0.2, 0.3))
    inverted = box.faces[:, ::-1]
    mixed = np.where((np.arange(len(box.faces)) % 3 == 0)[:, None], inverted, box.faces)
    for name, faces in (("inverted.stl", inverted), ("mixed.stl", mixed)):
        trimesh.Trimesh(box.vertices, faces, process=False).export(tmp_path / name)
        body = f'<link name="a"><collision><geometry><mesh filename="{name}"/></geometry></collision></link>'
        mesh = load_robot(write_urdf(tmp_path, body)).link_meshes["a"]
        # every face normal points away from the box centre (the link origin)
        assert (np.einsum("fi,fi->f", mesh.face_normals, mesh.triangles_center) > 0).all(), name
        assert mesh.volume == pytest.approx(0.006, rel=1e-6)


def test_open_mesh_with_inconsistent_winding_warns(tmp_path):
    box = trimesh.creation.box(extents=(0.1, 0.2, 0.3))
    faces = box.faces[2:].copy()   # one side open
    faces[::3] = faces[::3, ::-1]
    trimesh.Trimesh(box.vertices, faces, process=False).export(tmp_path / "open.stl")
    body = '<link name="a"><collision><geometry><mesh filename="open.stl"/></geometry></collision></link>'
    with pytest.warns(UserWarning, match="open.stl.*winding is inconsistent"):
        load_robot(write_urdf(tmp_path, body))

# ---------------------------------------------------------------- mesh resolution

@pytest.fixture
def package_robot(tmp_path):
    """A URDF in tmp/desc/ whose meshes live in tmp/ws/my_pkg/meshes/ (package://my_pkg/...)."""
    pkg = tmp_path / "ws" / "my_pkg"
    (pkg / "meshes").mkdir(parents=True)
    trimesh.creation.box(extents=(1, 1, 1)).export(pkg / "meshes" / "cube.stl")
    (tmp_path / "desc").mkdir()
    body = '<link name="a"><collision><geometry><mesh filename="package://my_pkg/meshes/cube.stl"/></geometry></collision></link>'
    return write_urdf(tmp_path / "desc", body), pkg


def test_package_uri_resolves_with_package_map_search_path_or_handler(package_robot):
    path, pkg = package_robot
    for robot in (load_robot(path, package_map={"my_pkg": pkg}),
                  load_robot(path, search_paths=[pkg.parent]),
                  load_robot(path, mesh_resolver=lambda f: pkg / f.removeprefix("package://my_pkg/"))):
        assert robot.link_meshes["a"].area == pytest.approx(6.0)


def test_missing_package_mesh_names_file_and_search_path(package_robot, tmp_path):
    path, _ = package_robot
    with pytest.raises(MeshNotFoundError, match="package://my_pkg/meshes/cube.stl") as err:
        load_robot(path, search_paths=[tmp_path / "desc"])
    assert str(tmp_path / "desc" / "my_pkg" / "meshes" / "cube.stl") in str(err.value)
    assert isinstance(err.value, FileNotFoundError)
    assert load_robot(path, load_meshes=False).link_meshes == {}  # geometry is optional


def test_handler_returning_a_missing_file_and_bad_package_map(package_robot, tmp_path):
    path, _ = package_robot
    with pytest.raises(MeshNotFoundError, match="nope.stl"):
        load_robot(path, mesh_resolver=lambda f: tmp_path / "nope.stl")
    with pytest.raises(ValueError, match="package_map"):
        load_robot(path, package_map={"my_pkg": tmp_path / "missing_dir"})


def test_shipped_packages_resolve_only_for_shipped_urdfs(tmp_path):
    """A copy of a shipped URDF outside urdfs/ must not silently use the shipped meshes."""
    shipped = shipped_urdf_path("flying_gripper")
    copy = tmp_path / "flying_gripper.urdf"
    copy.write_bytes(shipped.read_bytes())
    with pytest.raises(MeshNotFoundError, match="package://flying_gripper/meshes/hand.stl"):
        load_robot(copy)
    robot = load_robot(copy, package_map={"flying_gripper": shipped.parent})
    assert robot.link_meshes["hand"].area == pytest.approx(load_robot(shipped).link_meshes["hand"].area)


def test_relative_mesh_paths_next_to_the_urdf(tmp_path):
    shutil.copytree(PB / "franka_panda" / "meshes", tmp_path / "meshes")
    copy = tmp_path / "panda.urdf"
    copy.write_text(PANDA.read_text().replace("package://meshes/", "meshes/"))
    assert set(load_robot(copy).link_meshes) == set(load_robot(PANDA).link_meshes)


# ---------------------------------------------------------------- robot methods

def test_links_matching_and_link_index():
    robot = load_robot(PANDA, load_meshes=False)
    fingers = robot.links_matching("panda_*finger")
    assert [robot.link_names[i] for i in fingers] == ["panda_leftfinger", "panda_rightfinger"]
    assert robot.links_matching(["panda_hand", "panda_*finger"]) == sorted(fingers + [robot.link_index("panda_hand")])
    with pytest.raises(ValueError, match="panda_link0"):
        robot.links_matching("gripper*")
    with pytest.raises(ValueError, match="no link named"):
        robot.link_index("nope")


def test_joint_vector_and_unknown_names():
    robot = load_robot(PANDA, load_meshes=False)
    q = robot.joint_vector({"panda_joint2": 0.5, "panda_finger_joint1": 0.02}, default=0.1)
    assert q.tolist() == pytest.approx([0.1, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.02])
    with pytest.raises(JointMismatchError, match="joint_9"):
        robot.joint_vector({"joint_9": 1.0})
    with pytest.raises(JointMismatchError, match="mimics panda_finger_joint1"):
        robot.joint_vector({"panda_finger_joint2": 0.01})


def test_check_joint_positions_and_clamp():
    robot = load_robot(PANDA, load_meshes=False)
    with pytest.raises(JointMismatchError, match=r"\(\.\.\., 8\).*panda_joint1.*got a tensor of shape \(2, 7\)"):
        robot.check_joint_positions(torch.zeros(2, 7))
    with pytest.raises(ValueError, match="NaN"):
        robot.check_joint_positions(torch.tensor([0.0] * 7 + [math.nan]))
    with pytest.raises(TypeError, match="floating"):
        robot.check_joint_positions(torch.zeros(8, dtype=torch.int64))
    q = torch.full((3, 8), 5.0)
    clamped = robot.clamp_to_limits(q)
    assert torch.equal(clamped, robot.upper.expand(3, 8))
    assert torch.equal(robot.clamp_to_limits(-q), robot.lower.expand(3, 8))


def test_to_float64_is_exact_after_float32():
    robot = load_robot(PANDA, load_meshes=False)
    direct = robot.chain.float64_master
    via32 = robot.to(torch.float32).to(torch.float64).chain
    assert via32.dtype == torch.float64 and torch.equal(via32.origin, direct.origin)
    assert torch.equal(via32.motion_sin, direct.motion_sin)


# ---------------------------------------------------------------- bad URDFs

BAD_URDFS = {
    "malformed XML": ('<link name="a"><link>', "malformed XML"),
    "missing link": (links("a") + joint("j", "a", "ghost"), "missing link 'ghost'"),
    "two roots": (links("a", "b"), "several root links"),
    "cycle": (links("r", "a", "b") + joint("j1", "a", "b") + joint("j2", "b", "a"), "cycle"),
    "two parents": (links("a", "b", "c") + joint("j1", "a", "c") + joint("j2", "b", "c"), "child of two joints"),
    "cyclic mimic": (links("a", "b", "c") + joint("j1", "a", "b", extra='<mimic joint="j2"/>')
                     + joint("j2", "b", "c", extra='<mimic joint="j1"/>'), "cyclic <mimic>: j1 -> j2 -> j1"),
    "dangling mimic": (links("a", "b") + joint("j1", "a", "b", extra='<mimic joint="nobody"/>'),
                       "j1.*mimics 'nobody'"),
    "planar": (links("a", "b") + joint("p", "a", "b", "planar", limit=""), "planar"),
    "missing limit": (links("a", "b") + joint("j", "a", "b", limit=""), "no <limit>"),
    "inverted limit": (links("a", "b") + joint("j", "a", "b", limit='<limit lower="1" upper="0" effort="1" velocity="1"/>'),
                       "lower=1.0 > upper=0.0"),
    "zero axis": (links("a", "b") + joint("j", "a", "b").replace('xyz="0 0 1"', 'xyz="0 0 0"'), "non-zero"),
    "unknown type": (links("a", "b") + joint("j", "a", "b", "spherical"), "unknown type"),
    "duplicate link": (links("a", "a"), "duplicate link"),
    "no links": ("", "no links"),
}


@pytest.mark.parametrize("case", sorted(BAD_URDFS))
def test_bad_urdfs_raise_urdf_error(tmp_path, case):
    body, message = BAD_URDFS[case]
    with pytest.raises(URDFError, match=message):
        load_robot(write_urdf(tmp_path, body))


def test_bad_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such URDF"):
        load_robot(tmp_path / "missing.urdf")
    with pytest.raises(ValueError, match="shipped robots"):
        load_robot("no_such_robot")
    with pytest.raises(ValueError, match="geometry"):
        load_robot(PANDA, geometry="both")
    with pytest.raises(TypeError, match="urdf"):
        load_robot(3)
