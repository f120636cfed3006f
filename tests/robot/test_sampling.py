"""Surface sampling: points on the meshes, area-proportional density, face normals, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from pointworld.robot.assets import SHIPPED_ROBOTS
from pointworld.robot.sampling import RobotSurfacePoints, sample_surface_points
from pointworld.robot.urdf import load_robot

# Upper 0.1% quantiles of the chi-square distribution (df -> value), from tables.
CHI2_999 = {5: 20.515, 15: 37.697}

BOX_A = (0.1, 0.2, 0.4)  # link "base", extents in m
BOX_B = (0.3, 0.3, 0.05)  # link "arm"

_URDF = """<?xml version="1.0"?>
<robot name="two_boxes">
  <link name="world"/>
  <link name="base">
    <collision><origin xyz="0.01 0.02 0.03" rpy="0.1 0.2 0.3"/>
      <geometry><mesh filename="box_a.stl"/></geometry></collision>
  </link>
  <link name="arm">
    <collision><geometry><mesh filename="box_b.stl"/></geometry></collision>
  </link>
  <joint name="fix" type="fixed"><parent link="world"/><child link="base"/></joint>
  <joint name="hinge" type="revolute"><parent link="base"/><child link="arm"/>
    <origin xyz="0 0 0.3"/><axis xyz="0 1 0"/>
    <limit lower="-1" upper="1" effort="1" velocity="1"/></joint>
</robot>
"""


def _box_area(extents: tuple[float, float, float]) -> float:
    a, b, c = extents
    return 2 * (a * b + b * c + c * a)


@pytest.fixture(scope="module")
def boxes(tmp_path_factory):
    root = tmp_path_factory.mktemp("boxes")
    trimesh.creation.box(extents=BOX_A).export(root / "box_a.stl")
    trimesh.creation.box(extents=BOX_B).export(root / "box_b.stl")
    (root / "two_boxes.urdf").write_text(_URDF)
    return load_robot(root / "two_boxes.urdf").to(dtype=torch.float64)


@pytest.fixture(scope="module")
def franka():
    return load_robot("franka_panda").to(dtype=torch.float64)


def test_points_lie_on_their_link_mesh_and_normals_match_faces(franka):
    surf = sample_surface_points(franka, 3000, seed=1)
    assert surf.points_link.dtype == torch.float64 and surf.link_index.dtype == torch.int64
    assert torch.allclose(surf.normals_link.norm(dim=-1), torch.ones(3000, dtype=torch.float64),
                          atol=1e-12)
    exact_normal = 0
    for li in surf.link_index.unique().tolist():
        mesh = franka.link_meshes[franka.link_names[li]]
        sel = surf.link_index == li
        pts, nrm = surf.points_link[sel].numpy(), surf.normals_link[sel].numpy()
        _, dist, tri = trimesh.proximity.closest_point(mesh, pts)
        assert dist.max() <= 1e-6, franka.link_names[li]
        # The closest triangle is ambiguous only on edges between faces; elsewhere its normal
        # must be the sampled normal.
        exact_normal += int((np.einsum("nx,nx->n", nrm, mesh.face_normals[tri]) > 1 - 1e-9).sum())
    assert exact_normal >= 0.99 * 3000


def test_link_share_follows_area_within_one_point(boxes):
    m = 1001
    surf = sample_surface_points(boxes, m, seed=3)
    assert surf.num_points == m
    areas = {"base": _box_area(BOX_A), "arm": _box_area(BOX_B)}
    total = sum(areas.values())
    for name, area in areas.items():
        count = int((surf.link_index == boxes.link_index(name)).sum())
        assert abs(count - m * area / total) < 1.0, (name, count)


def test_density_within_a_link_is_uniform_in_area(boxes):
    m = 40000
    surf = sample_surface_points(boxes, m, links="arm", seed=7)
    p = surf.points_link.numpy()
    half = np.array(BOX_B) / 2
    # The coordinate at +-half extent tells which face a point is on (face = 2 * axis + positive).
    axis = np.argmax(np.abs(p) / half, axis=-1)
    coord = p[np.arange(m), axis]
    assert np.allclose(np.abs(coord), half[axis], atol=1e-9)
    face = axis * 2 + (coord > 0)
    a, b, c = BOX_B
    face_area = np.repeat([b * c, a * c, a * b], 2)
    counts = np.bincount(face, minlength=6)
    expected = m * face_area / face_area.sum()
    assert ((counts - expected) ** 2 / expected).sum() < CHI2_999[5]
    # Within the +z face (two triangles), a 4 x 4 grid of equal cells gets equal counts.
    top = p[face == 5]
    ij = np.clip(((top[:, :2] + half[:2]) / (2 * half[:2]) * 4).astype(int), 0, 3)
    grid = np.bincount(ij[:, 0] * 4 + ij[:, 1], minlength=16)
    exp = len(top) / 16
    assert ((grid - exp) ** 2 / exp).sum() < CHI2_999[15]


def test_normals_are_the_outward_face_normals(boxes):
    surf = sample_surface_points(boxes, 500, links="arm", seed=0)
    p, n = surf.points_link.numpy(), surf.normals_link.numpy()
    half = np.array(BOX_B) / 2
    axis = np.argmax(np.abs(p) / half, axis=-1)
    expected = np.zeros_like(p)
    expected[np.arange(len(p)), axis] = np.sign(p[np.arange(len(p)), axis])
    np.testing.assert_allclose(n, expected, atol=1e-12)


def test_mesh_origin_is_applied_in_link_frame(boxes):
    """Points of "base" sit on the box moved by its collision origin (independent check)."""
    surf = sample_surface_points(boxes, 300, links="base", seed=0)
    box = trimesh.creation.box(extents=BOX_A)
    box.apply_transform(trimesh.transformations.euler_matrix(0.1, 0.2, 0.3, "sxyz"))  # URDF rpy
    box.apply_translation([0.01, 0.02, 0.03])
    _, dist, _ = trimesh.proximity.closest_point(box, surf.points_link.numpy())
    assert dist.max() <= 1e-6


def test_deterministic_per_seed_and_seeds_differ(franka):
    a = sample_surface_points(franka, 500, seed=11)
    b = sample_surface_points(franka, 500, seed=11)
    c = sample_surface_points(franka, 500, seed=12)
    assert torch.equal(a.points_link, b.points_link) and torch.equal(a.normals_link, b.normals_link)
    assert torch.equal(a.link_index, b.link_index)
    assert not torch.allclose(a.points_link, c.points_link)
    torch.manual_seed(0)
    np.random.seed(0)
    d = sample_surface_points(franka, 500, seed=11)
    assert torch.equal(a.points_link, d.points_link)  # independent of global random state


def test_gripper_only_subset(franka):
    surf = sample_surface_points(franka, 500, links=["panda_hand", "*finger*"], seed=0)
    names = {franka.link_names[i] for i in surf.link_index.unique().tolist()}
    assert names == {"panda_hand", "panda_leftfinger", "panda_rightfinger"}
    only_fingers = sample_surface_points(franka, 200, links="*finger*", seed=0)
    names = {franka.link_names[i] for i in only_fingers.link_index.unique().tolist()}
    assert names == {"panda_leftfinger", "panda_rightfinger"}
    assert only_fingers.num_points == 200


@pytest.mark.parametrize("name", SHIPPED_ROBOTS)
def test_all_links_with_geometry_by_default_each_get_points(name):
    robot = load_robot(name)
    surf = sample_surface_points(robot, 2000, seed=0)
    counts = torch.bincount(surf.link_index, minlength=robot.num_links)
    with_geometry = [robot.link_index(n) for n in robot.link_meshes]
    assert all(int(counts[i]) >= 1 for i in with_geometry), counts
    assert int(counts.sum()) == int(counts[with_geometry].sum()) == 2000


def test_records_robot_and_per_link_grouping(franka):
    surf = sample_surface_points(franka, 700, links=["panda_link3", "*finger*"], seed=5)
    assert surf.robot_name == "franka_panda" and surf.link_names == franka.link_names
    counts = torch.bincount(surf.link_index, minlength=franka.num_links)
    expected = tuple((i, int(c)) for i, c in enumerate(counts.tolist()) if c > 0)
    assert surf.link_groups == expected
    assert torch.equal(surf.link_index, surf.link_index.sort(stable=True).values)  # grouped
    moved = surf.to(dtype=torch.float32)
    assert moved.link_groups == expected and moved.link_names == franka.link_names
    assert moved.points_link.dtype == torch.float32


def test_surface_points_constructor_checks_its_tensors():
    idx = torch.tensor([2, 0, 2, 1])
    pts = torch.zeros(4, 3, dtype=torch.float64)
    surf = RobotSurfacePoints(link_index=idx, points_link=pts, normals_link=pts)
    assert surf.link_groups == ((0, 1), (1, 1), (2, 2)) and surf.robot_name is None
    with pytest.raises(ValueError, match="points_link: expected shape \\(4, 3\\)"):
        RobotSurfacePoints(link_index=idx, points_link=pts[:3], normals_link=pts)
    with pytest.raises(ValueError, match="normals_link: expected shape"):
        RobotSurfacePoints(link_index=idx, points_link=pts, normals_link=pts[:, :2])
    with pytest.raises(TypeError, match="link_index: expected dtype torch.int64"):
        RobotSurfacePoints(link_index=idx.int(), points_link=pts, normals_link=pts)
    with pytest.raises(ValueError, match="link_index: expected indices >= 0"):
        RobotSurfacePoints(link_index=idx - 1, points_link=pts, normals_link=pts)
    with pytest.raises(ValueError, match="link_index: expected indices < 2"):
        RobotSurfacePoints(link_index=idx, points_link=pts, normals_link=pts,
                           link_names=("a", "b"))


def test_dtype_follows_robot_and_to(boxes):
    surf32 = sample_surface_points(boxes.to(dtype=torch.float32), 50)
    assert surf32.points_link.dtype == torch.float32
    surf64 = sample_surface_points(boxes, 50)
    assert torch.allclose(surf32.points_link.double(), surf64.points_link, atol=1e-7)
    moved = surf32.to(dtype=torch.float64)
    assert isinstance(moved, RobotSurfacePoints) and moved.normals_link.dtype == torch.float64


def test_bad_input(boxes):
    with pytest.raises(ValueError, match=r"matches no link with geometry.*'arm'"):
        sample_surface_points(boxes, 10, links="world")  # a link without geometry
    with pytest.raises(ValueError, match="links are"):
        sample_surface_points(boxes, 10, links="*gripper*")  # no link at all
    with pytest.raises(ValueError, match="num_points"):
        sample_surface_points(boxes, 0)
    with pytest.raises(ValueError, match="num_points"):
        sample_surface_points(boxes, 2.5)
    with pytest.raises(TypeError, match="links"):
        sample_surface_points(boxes, 10, links=[])
    with pytest.raises(TypeError, match="seed"):
        sample_surface_points(boxes, 10, seed="x")


def test_robot_without_meshes_raises(tmp_path):
    (tmp_path / "r.urdf").write_text(_URDF)
    robot = load_robot(tmp_path / "r.urdf", load_meshes=False)
    with pytest.raises(ValueError, match="no link has geometry"):
        sample_surface_points(robot, 10)
