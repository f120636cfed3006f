"""Robot point flows: base transforms, analytic finite differences, yourdfpy reference, layout,
bad input."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import trimesh
import yourdfpy

from pointworld.geometry.rotations import axis_angle_to_matrix
from pointworld.geometry.se3 import make_transform
from pointworld.robot.assets import SHIPPED_ROBOTS, shipped_urdf_path
from pointworld.robot.flow import FEATURE_DIM, FEATURE_LAYOUT, RobotPointFlow, robot_point_flow
from pointworld.robot.kinematics import forward_kinematics
from pointworld.robot.sampling import RobotSurfacePoints, sample_surface_points
from pointworld.robot.urdf import load_robot

F64 = torch.float64
SLIDE_YAW = 0.3  # rad, yaw of the slider joint origin: the carriage moves along (cos, sin, 0)

_URDF = f"""<?xml version="1.0"?>
<robot name="slider">
  <link name="base"><collision><geometry><mesh filename="box.stl"/></geometry></collision></link>
  <link name="carriage">
    <collision><origin xyz="0 0 0.05"/><geometry><mesh filename="box.stl"/></geometry></collision>
  </link>
  <link name="flap">
    <collision><origin xyz="0.05 0 0"/><geometry><mesh filename="box.stl"/></geometry></collision>
  </link>
  <joint name="slide" type="prismatic"><parent link="base"/><child link="carriage"/>
    <origin xyz="0.1 0 0" rpy="0 0 {SLIDE_YAW}"/><axis xyz="1 0 0"/>
    <limit lower="-1" upper="1" effort="1" velocity="1"/></joint>
  <joint name="hinge" type="revolute"><parent link="carriage"/><child link="flap"/>
    <origin xyz="0 0 0.1"/><axis xyz="0 1 0"/>
    <limit lower="-2" upper="2" effort="1" velocity="1"/></joint>
</robot>
"""


@pytest.fixture(scope="module")
def slider(tmp_path_factory):
    root = tmp_path_factory.mktemp("slider")
    trimesh.creation.box(extents=(0.1, 0.06, 0.04)).export(root / "box.stl")
    (root / "slider.urdf").write_text(_URDF)
    return load_robot(root / "slider.urdf").to(dtype=F64)


@pytest.fixture(scope="module")
def franka():
    return load_robot("franka_panda").to(dtype=F64)


def _random_q(robot, shape, gen):
    lo, hi = robot.lower.clamp(-math.pi, math.pi), robot.upper.clamp(-math.pi, math.pi)
    return lo + (hi - lo) * torch.rand(*shape, robot.num_joints, generator=gen, dtype=robot.dtype)


def _random_rigid(batch, gen):
    rot = axis_angle_to_matrix(torch.randn(batch, 3, generator=gen, dtype=F64))
    return make_transform(rot, torch.randn(batch, 3, generator=gen, dtype=F64))


def test_base_transform_moves_every_point_rigidly(franka):
    gen = torch.Generator().manual_seed(0)
    surf = sample_surface_points(franka, 300, seed=0)
    q = _random_q(franka, (3, 4), gen)
    grip = torch.rand(3, 4, generator=gen, dtype=F64)
    T = _random_rigid(3, gen)
    base = robot_point_flow(franka, surf, q, grip, dt_s=0.05)
    world = robot_point_flow(franka, surf, q, grip, dt_s=0.05, T_world_base=T)
    rot, trans = T[:, None, None, :3, :3], T[:, None, None, :3, 3]

    def rotate(v):
        return (rot @ v[..., None]).squeeze(-1)

    torch.testing.assert_close(world.points, rotate(base.points) + trans, atol=1e-12, rtol=0)
    for name in ("normals", "velocity", "acceleration"):
        torch.testing.assert_close(getattr(world, name), rotate(getattr(base, name)), atol=1e-10,
                                   rtol=0)
    single = robot_point_flow(franka, surf, q, grip, dt_s=0.05, T_world_base=T[1])
    torch.testing.assert_close(single.points[1], world.points[1], atol=1e-12, rtol=0)


def test_constant_velocity_prismatic_motion(slider):
    surf = sample_surface_points(slider, 200, seed=0)
    speed, dt, steps = 0.4, 0.1, 7
    t = torch.arange(steps, dtype=F64) * dt
    q = torch.zeros(2, steps, 2, dtype=F64)
    q[..., 0] = -0.3 + speed * t
    q[1, :, 1] = 0.7  # a fixed flap angle changes nothing about the velocity
    flow = robot_point_flow(slider, surf, q, torch.ones(2, steps, dtype=torch.bool), dt_s=dt)
    direction = torch.tensor([math.cos(SLIDE_YAW), math.sin(SLIDE_YAW), 0.0], dtype=F64)
    on_base = surf.link_index == slider.link_index("base")
    expected = torch.where(on_base[:, None], torch.zeros(3, dtype=F64), speed * direction)
    torch.testing.assert_close(flow.velocity, expected.expand_as(flow.velocity), atol=1e-12, rtol=0)
    torch.testing.assert_close(flow.acceleration, torch.zeros_like(flow.acceleration), atol=1e-9,
                               rtol=0)


@pytest.mark.parametrize("steps", [3, 5])
def test_constant_acceleration_is_exact_at_every_step_including_ends(slider, steps):
    surf = sample_surface_points(slider, 50, links="carriage", seed=1)
    accel, dt = 2.0, 0.1
    t = torch.arange(steps, dtype=F64) * dt
    q = torch.zeros(1, steps, 2, dtype=F64)
    q[..., 0] = 0.5 * accel * t * t
    flow = robot_point_flow(slider, surf, q, torch.zeros(1, steps, dtype=F64), dt_s=dt)
    direction = torch.tensor([math.cos(SLIDE_YAW), math.sin(SLIDE_YAW), 0.0], dtype=F64)
    v_expected = (accel * t)[None, :, None, None] * direction
    torch.testing.assert_close(flow.velocity, v_expected.expand_as(flow.velocity), atol=1e-10,
                               rtol=0)
    torch.testing.assert_close(flow.acceleration, (accel * direction).expand_as(flow.acceleration),
                               atol=1e-8, rtol=0)


@pytest.mark.parametrize("steps", [4, 7])
def test_constant_jerk_acceleration_is_exact_at_every_step_including_ends(slider, steps):
    """Cubic motion q = c t^3: the 4-point end stencils are exact, a_t = 6 c t at every step."""
    surf = sample_surface_points(slider, 40, links="carriage", seed=3)
    jerk, dt = 3.0, 0.07  # m/s^3, s
    t = torch.arange(steps, dtype=F64) * dt
    q = torch.zeros(1, steps, 2, dtype=F64)
    q[..., 0] = -0.2 + jerk / 6 * t**3
    flow = robot_point_flow(slider, surf, q, torch.zeros(1, steps, dtype=F64), dt_s=dt)
    direction = torch.tensor([math.cos(SLIDE_YAW), math.sin(SLIDE_YAW), 0.0], dtype=F64)
    a_expected = (jerk * t)[None, :, None, None] * direction
    torch.testing.assert_close(flow.acceleration, a_expected.expand_as(flow.acceleration),
                               atol=1e-9, rtol=0)


def test_static_robot_has_zero_velocity_and_acceleration_in_float64(franka):
    """End stencils use the trajectory's dtype (float32 constants would leave ~2e-6 m/s)."""
    gen = torch.Generator().manual_seed(3)
    surf = sample_surface_points(franka, 200, seed=0)
    q = _random_q(franka, (2, 1), gen).expand(2, 6, franka.num_joints)
    flow = robot_point_flow(franka, surf, q, torch.ones(2, 6), dt_s=0.03)
    assert float(flow.velocity.abs().max()) <= 1e-12
    assert float(flow.acceleration.abs().max()) <= 1e-9


def test_short_trajectories(slider):
    surf = sample_surface_points(slider, 20, seed=0)
    q = torch.tensor([[[0.0, 0.0], [0.1, 0.0]]], dtype=F64)
    flow = robot_point_flow(slider, surf, q, torch.ones(1, 2), dt_s=0.5)
    moved = flow.points[0, 1] - flow.points[0, 0]
    torch.testing.assert_close(flow.velocity[0, 0], moved / 0.5)
    torch.testing.assert_close(flow.velocity[0, 1], moved / 0.5)
    assert not flow.acceleration.any()
    one = robot_point_flow(slider, surf, q[:, :1], torch.ones(1, 1), dt_s=0.5)
    assert one.points.shape == (1, 1, 20, 3) and not one.velocity.any()


@pytest.mark.parametrize("name", SHIPPED_ROBOTS)
def test_points_match_yourdfpy_per_point_loop(name):
    robot = load_robot(name).to(dtype=F64)
    gen = torch.Generator().manual_seed(5)
    surf = sample_surface_points(robot, 30, seed=2)
    q = _random_q(robot, (2, 2), gen)
    flow = robot_point_flow(robot, surf, q, torch.ones(2, 2))
    ref = yourdfpy.URDF.load(str(shipped_urdf_path(name)), load_meshes=False,
                             build_collision_scene_graph=False, load_collision_meshes=False)
    base = robot.link_names[0]
    for b in range(2):
        for t in range(2):
            ref.update_cfg({n: float(v) for n, v in zip(robot.joint_names, q[b, t])})
            for m in range(surf.num_points):
                link = robot.link_names[int(surf.link_index[m])]
                T = ref.get_transform(frame_to=link, frame_from=base)
                p = T[:3, :3] @ surf.points_link[m].numpy() + T[:3, 3]
                n = T[:3, :3] @ surf.normals_link[m].numpy()
                np.testing.assert_allclose(flow.points[b, t, m].numpy(), p, atol=1e-9, rtol=0)
                np.testing.assert_allclose(flow.normals[b, t, m].numpy(), n, atol=1e-9, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_and_feature_layout(franka, dtype):
    gen = torch.Generator().manual_seed(1)
    robot = franka.to(dtype=dtype)
    surf = sample_surface_points(robot, 64, links=["panda_hand", "*finger*"], seed=0)
    q = _random_q(robot, (3, 5), gen)
    grip = torch.tensor([[True, True, False, False, True]] * 3)
    flow = robot_point_flow(robot, surf, q, grip)
    assert isinstance(flow, RobotPointFlow)
    for name in ("points", "normals", "velocity", "acceleration"):
        assert getattr(flow, name).shape == (3, 5, 64, 3) and getattr(flow, name).dtype == dtype
    assert flow.gripper_open.shape == (3, 5, 64) and flow.gripper_open.dtype == dtype
    assert torch.equal(flow.time_index[2, :, 7], torch.arange(5))
    assert torch.equal(flow.link_index, surf.link_index)
    feats = flow.features()
    assert feats.shape == (3, 5, 64, FEATURE_DIM) and feats.dtype == dtype
    covered = sorted(i for s in FEATURE_LAYOUT.values() for i in range(FEATURE_DIM)[s])
    assert covered == list(range(FEATURE_DIM))
    ref = _naive_features(franka, surf.to(dtype=F64), q.to(F64), grip, 0.1)
    tol = {"atol": 1e-9, "rtol": 0} if dtype == F64 else {"atol": 2e-3, "rtol": 1e-3}
    for name, sl in FEATURE_LAYOUT.items():
        torch.testing.assert_close(feats[..., sl].to(F64), ref[name], **tol, msg=name)
    assert torch.equal(feats[..., 6], grip[:, :, None].expand(3, 5, 64).to(dtype))
    assert torch.equal(feats[..., 13], torch.arange(5, dtype=dtype)[:, None].expand(3, 5, 64))
    assert torch.equal(feats[..., 14], surf.link_index.to(dtype).expand(3, 5, 64))
    torch.testing.assert_close(flow.normals.norm(dim=-1), torch.ones(3, 5, 64, dtype=dtype))


def _naive_features(robot, surf, q, grip, dt):
    """Independent float64 reference: a (B, n, M, 4, 4) pose gather per point, numpy's gradient
    (second-order ends) for velocity and the documented acceleration stencils written out."""
    T = forward_kinematics(robot.chain, q)[:, :, surf.link_index]  # (B, n, M, 4, 4)
    p = (T[..., :3, :3] @ surf.points_link[..., None])[..., 0] + T[..., :3, 3]
    nrm = (T[..., :3, :3] @ surf.normals_link[..., None])[..., 0]
    v = torch.from_numpy(np.gradient(p.numpy(), dt, axis=1, edge_order=2))
    a = torch.empty_like(p)
    n = p.shape[1]
    for t in range(1, n - 1):
        a[:, t] = (p[:, t + 1] - 2 * p[:, t] + p[:, t - 1]) / dt**2
    a[:, 0] = (2 * p[:, 0] - 5 * p[:, 1] + 4 * p[:, 2] - p[:, 3]) / dt**2
    a[:, -1] = (2 * p[:, -1] - 5 * p[:, -2] + 4 * p[:, -3] - p[:, -4]) / dt**2
    b, m = p.shape[0], p.shape[2]
    return {"xyz": p, "normal": nrm, "velocity": v, "acceleration": a,
            "gripper_open": grip.to(F64)[:, :, None, None].expand(b, n, m, 1),
            "time": torch.arange(n, dtype=F64)[:, None, None].expand(b, n, m, 1),
            "link_id": surf.link_index.to(F64)[:, None].expand(b, n, m, 1)}


def test_differentiable_wrt_joint_positions(slider):
    surf = sample_surface_points(slider, 6, seed=0)
    q0 = torch.tensor([[[0.1, 0.2], [0.2, -0.3], [0.25, 0.4]]], dtype=F64, requires_grad=True)

    def features(q):
        return robot_point_flow(slider, surf, q, torch.ones(1, 3)).features()

    assert torch.autograd.gradcheck(features, (q0,))


def test_bad_input(franka, slider):
    surf = sample_surface_points(franka, 10, seed=0)
    j = franka.num_joints
    mid = (franka.lower + franka.upper).to(F64) / 2
    q = mid.expand(2, 3, j).clone()
    grip = torch.ones(2, 3)
    with pytest.raises(ValueError, match=f"q: expected shape \\(..., {j}\\)"):
        robot_point_flow(franka, surf, q[..., :-1], grip)
    with pytest.raises(ValueError, match="q: expected shape"):
        robot_point_flow(franka, surf, q[0], grip)
    with pytest.raises(ValueError, match="gripper_open: expected shape \\(2, 3\\)"):
        robot_point_flow(franka, surf, q, torch.ones(2, 4))
    bad = q.clone()
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="q: expected finite"):
        robot_point_flow(franka, surf, bad, grip)
    with pytest.raises(ValueError, match="gripper_open: expected finite"):
        robot_point_flow(franka, surf, q, torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match=r"gripper_open: expected values in \[0, 1\]"):
        robot_point_flow(franka, surf, q, torch.full((2, 3), 2.0))
    with pytest.raises(TypeError, match="gripper_open"):
        robot_point_flow(franka, surf, q, torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="dt_s"):
        robot_point_flow(franka, surf, q, grip, dt_s=0.0)
    with pytest.raises(ValueError, match="T_world_base: expected rigid"):
        robot_point_flow(franka, surf, q, grip, T_world_base=2 * torch.eye(4, dtype=F64))
    with pytest.raises(ValueError, match="T_world_base: expected shape \\(2, 4, 4\\)"):
        robot_point_flow(franka, surf, q, grip,
                         T_world_base=torch.eye(4, dtype=F64).expand(3, 4, 4))
    fingers = sample_surface_points(franka, 10, links="*finger*", seed=0)  # link index >= 3
    with pytest.raises(ValueError, match="surface: link_index"):
        robot_point_flow(slider, fingers, torch.zeros(2, 3, 2, dtype=F64), grip)


def _permuted(surf: RobotSurfacePoints, perm: torch.Tensor) -> RobotSurfacePoints:
    """The same surface points in another order (no longer grouped by link)."""
    return RobotSurfacePoints(link_index=surf.link_index[perm], points_link=surf.points_link[perm],
                              normals_link=surf.normals_link[perm])


def test_points_in_any_link_order(franka):
    """A surface whose points are not grouped by link gives the same per-point results."""
    gen = torch.Generator().manual_seed(7)
    surf = sample_surface_points(franka, 120, seed=4)
    perm = torch.randperm(120, generator=gen)
    shuffled = _permuted(surf, perm)
    q = _random_q(franka, (2, 4), gen)
    ref = robot_point_flow(franka, surf, q, torch.ones(2, 4)).features()
    out = robot_point_flow(franka, shuffled, q, torch.ones(2, 4)).features()
    torch.testing.assert_close(out, ref[:, :, perm], atol=1e-12, rtol=0)


def test_out_of_limit_joints_are_errors_unless_clamping_is_asked(franka):
    surf = sample_surface_points(franka, 10, seed=0)
    mid = (franka.lower + franka.upper).to(F64) / 2
    q = mid.expand(1, 2, franka.num_joints).clone()
    q[0, 1, 3] = 0.5  # panda_joint4 allows [-3.0718, -0.0698]
    with pytest.raises(ValueError, match="'panda_joint4' = 0.5 is outside its limits"):
        robot_point_flow(franka, surf, q, torch.ones(1, 2))
    clamped = robot_point_flow(franka, surf, q, torch.ones(1, 2), clamp_to_limits=True)
    q_clamped = q.clone()
    q_clamped[0, 1, 3] = franka.upper[3]
    expected = robot_point_flow(franka, surf, q_clamped, torch.ones(1, 2))
    torch.testing.assert_close(clamped.points, expected.points, rtol=0, atol=1e-12)


def test_validate_false_gives_the_same_flow_and_skips_only_value_checks(franka, slider):
    gen = torch.Generator().manual_seed(9)
    surf = sample_surface_points(franka, 80, seed=1)
    perm = torch.randperm(80, generator=gen)
    shuffled = _permuted(surf, perm)
    q = _random_q(franka, (2, 5), gen)
    grip = torch.rand(2, 5, generator=gen, dtype=F64)
    T = _random_rigid(2, gen)
    for s in (surf, shuffled):
        ref = robot_point_flow(franka, s, q, grip, T_world_base=T).features()
        out = robot_point_flow(franka, s, q, grip, T_world_base=T, validate=False).features()
        assert torch.equal(out, ref)
    beyond = q.clone()
    beyond[0, 1, 3] = 0.5  # outside panda_joint4's limits: only checked when validating
    robot_point_flow(franka, surf, beyond, grip, validate=False)
    clamped = robot_point_flow(franka, surf, beyond, grip, clamp_to_limits=True, validate=False)
    expected = robot_point_flow(franka, surf, beyond, grip, clamp_to_limits=True)
    assert torch.equal(clamped.features(), expected.features())
    with pytest.raises(ValueError, match="q: expected shape"):
        robot_point_flow(franka, surf, q[..., :-1], grip, validate=False)
    with pytest.raises(ValueError, match="gripper_open: expected shape"):
        robot_point_flow(franka, surf, q, grip[:, :4], validate=False)
    with pytest.raises(ValueError, match="surface: link_index refers to the links of robot "
                                         "'franka_panda'"):
        robot_point_flow(slider, surf, torch.zeros(2, 5, 2, dtype=F64), grip, validate=False)


def test_surface_from_another_robot_is_rejected(franka):
    """Checked by robot and link names, not only by the link count."""
    bimanual = load_robot("bimanual").to(dtype=F64)
    assert bimanual.num_links > franka.num_links
    surf = sample_surface_points(franka, 20, seed=0)
    q = ((bimanual.lower + bimanual.upper) / 2).expand(1, 2, bimanual.num_joints)
    with pytest.raises(ValueError, match="surface: link_index refers to the links of robot "
                                         "'franka_panda'.*not to those of robot"):
        robot_point_flow(bimanual, surf, q, torch.ones(1, 2))
    renamed = dataclasses.replace(surf, robot_name="other")
    q = ((franka.lower + franka.upper) / 2).expand(1, 2, franka.num_joints)
    with pytest.raises(ValueError, match="robot 'other'"):
        robot_point_flow(franka, renamed, q, torch.ones(1, 2))
