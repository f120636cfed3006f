"""TaskEnv: seeded tasks (push, drawer, cloth), observations, selection boxes, success checks, state restore."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import mujoco
import numpy as np
import pytest
import torch

from pointworld.capture.frame import SceneCapture
from pointworld.geometry.camera import depth_to_world_points
from pointworld.sim.cameras import CameraRigConfig
from pointworld.sim.config import SceneConfig
from pointworld.sim.env import SimEnv
from pointworld.sim.render import render_views
from pointworld.sim.task import TaskConfig, TaskEnv
from pointworld.sim.task_goals import Task, push_outcome

H, W = 120, 160
RIG = CameraRigConfig(n_views=2, width=W, height=H)
VISIBLE_GROUPS = np.array([1, 1, 1, 0, 0, 0], dtype=np.uint8)


def push_env(**scene: object) -> TaskEnv:
    cfg = dict(n_objects=(1, 1), include_drawer=False, object_size_m=(0.05, 0.1)) | scene
    return TaskEnv(SceneConfig(**cfg), TaskConfig(kind="push", cameras=RIG))


def set_free_pose(env: TaskEnv, name: str, T: np.ndarray) -> None:
    """Teleport a free object to the (4, 4) world pose T (no physics step)."""
    m, d = env.sim.model, env.sim.data
    adr = m.jnt_qposadr[m.joint(f"{name}_free").id]
    quat = np.empty(4)
    mujoco.mju_mat2Quat(quat, np.ascontiguousarray(T[:3, :3]).ravel())
    d.qpos[adr:adr + 3], d.qpos[adr + 3:adr + 7] = T[:3, 3], quat
    mujoco.mj_forward(m, d)


def segmented_points(env: TaskEnv) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free world points (N, 3) of every rendered pixel and their body ids (N,)."""
    K, T = env.cameras
    _, depth, seg = render_views(env.sim.model, env.sim.data, K, T, env.config.cameras.height,
                                 env.config.cameras.width)
    pts, valid = depth_to_world_points(torch.from_numpy(depth.astype(np.float64)), torch.from_numpy(K),
                                       torch.from_numpy(T))
    return pts.numpy()[valid.numpy()], seg[valid.numpy()]


def test_same_seed_same_scene_cameras_goal_and_observation() -> None:
    scene, cfg = SceneConfig(n_objects=(2, 3), include_drawer=False), TaskConfig(cameras=RIG, depth_noise=True)
    a, b = TaskEnv(scene, cfg), TaskEnv(scene, cfg)
    ta, tb = a.reset(4), b.reset(4)
    for f in dataclasses.fields(Task):
        assert np.array_equal(getattr(ta, f.name), getattr(tb, f.name)), f.name
    assert all(np.array_equal(x, y) for x, y in zip(a.cameras, b.cameras))
    ca, cb = a.observe(), b.observe()
    for fa, fb in zip(ca.frames, cb.frames):
        assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.depth, fb.depth)
    assert {k: v.tolist() for k, v in a.object_poses().items()} == {k: v.tolist() for k, v in b.object_poses().items()}
    clean = render_views(a.sim.model, a.sim.data, *a.cameras, H, W)[1]  # the noise is real but small
    both = (clean > 0) & (np.stack([f.depth for f in ca.frames]) > 0)
    diff = np.abs(np.stack([f.depth for f in ca.frames]) - clean)[both]
    assert np.mean(diff > 0) > 0.5 and np.median(diff) < 5e-3
    home = torch.as_tensor(a.sim.home_q).repeat(2, 1)
    q = a.execute(home)  # delegates to the simulator
    assert q.shape == home.shape and torch.equal(q[-1], a.joint_positions())
    other = a.reset(5)
    assert not np.allclose(other.T_world_goal, ta.T_world_goal)
    # the goal is a planar rigid motion (a turn about the vertical, a horizontal step of the stated size)
    assert np.allclose(ta.T_goal_start @ ta.T_world_start, ta.T_world_goal, atol=1e-12)
    assert np.allclose(ta.T_goal_start[2], [0.0, 0.0, 1.0, 0.0], atol=1e-12)
    step = np.linalg.norm(ta.T_world_goal[:3, 3] - ta.T_world_start[:3, 3])
    assert 0.08 - 1e-9 <= step <= 0.15 + 1e-9
    assert ta.T_world_goal[2, 3] == pytest.approx(ta.T_world_start[2, 3])


def test_observe_gives_a_capture_on_the_scene_geometry() -> None:
    env = push_env(n_objects=(2, 2))
    env.reset(1)
    cap = env.observe()
    assert isinstance(cap, SceneCapture) and cap.serials == ["sim_front_left", "sim_front_right"]
    K, T = env.cameras
    m, d = env.sim.model, env.sim.data
    robot = {m.body(n).id for n in env.robot.link_names}
    scene_bodies = {m.body(n).id for n in ["table", "floor"] + env.sim.scene.object_names}
    for v, frame in enumerate(cap.frames):
        assert frame.depth.shape == (H, W) and np.allclose(frame.K, K[v]) and np.allclose(frame.T_world_cam, T[v])
        pts = depth_to_world_points(torch.from_numpy(frame.depth.astype(np.float64)), torch.from_numpy(frame.K),
                                    torch.from_numpy(frame.T_world_cam))[0].numpy()
        checked = 0
        for r in range(0, H, 4):  # independent check: MuJoCo ray casts along every 4th pixel ray
            for c in range(0, W, 4):
                if frame.depth[r, c] <= 0:
                    continue
                ray = T[v, :3, :3] @ np.array([(c - K[v, 0, 2]) / K[v, 0, 0], (r - K[v, 1, 2]) / K[v, 1, 1], 1.0])
                gid = np.zeros(1, dtype=np.int32)
                hit = mujoco.mj_ray(m, d, T[v, :3, 3], ray, VISIBLE_GROUPS, 1, -1, gid)
                body = int(m.geom_bodyid[gid[0]])
                if body in robot:
                    continue
                assert body in scene_bodies
                assert np.linalg.norm(pts[r, c] - (T[v, :3, 3] + hit * ray)) < 2e-3
                checked += 1
        assert checked > 0.5 * (H // 4) * (W // 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_push_selection_box_holds_the_target_and_little_else(seed: int) -> None:
    env = push_env(n_objects=(3, 3), object_size_m=(0.04, 0.14))
    task = env.reset(seed)
    pts, body = segmented_points(env)
    target = env.sim.model.body(task.target).id
    inside = task.contains(pts)
    mine = body == target
    assert mine.sum() > 20
    assert inside[mine].mean() > 0.9  # all but the bottom 4 mm
    assert (inside & ~mine).sum() <= 0.02 * mine.sum()


def test_drawer_selection_box() -> None:
    rig3 = CameraRigConfig(n_views=3, width=W, height=H)
    env = TaskEnv(SceneConfig(n_objects=(0, 0)), TaskConfig(kind="drawer", cameras=rig3))
    task = env.reset(0)
    pts, body = segmented_points(env)
    m = env.sim.model
    drawer = np.isin(body, [m.body("drawer").id, m.body("drawer_handle").id])
    assert drawer.sum() > 20 and task.contains(pts)[drawer].mean() > 0.9
    assert (task.contains(pts) & ~drawer).sum() <= 0.05 * drawer.sum()


@pytest.mark.parametrize("seed", [0, 1])
def test_cloth_selection_box(seed: int) -> None:
    rig = CameraRigConfig(n_views=2, width=320, height=240)  # the corner is small: finer images
    env = TaskEnv(SceneConfig(n_objects=(0, 0), include_drawer=False, include_cloth=True),
                  TaskConfig(kind="cloth", cameras=rig))
    task = env.reset(seed)
    corner = env.sim.flex_vertices("cloth")[task.cloth_vertex].numpy()
    assert np.allclose((task.select_min_world + task.select_max_world)[:2] / 2, corner[:2], atol=1e-9)
    pts, body = segmented_points(env)
    cloth = body == env.sim.model.body("cloth_root").id
    near = cloth & (np.linalg.norm(pts[:, :2] - corner[:2], axis=1) < 0.015)
    top = near & (pts[:, 2] > env.sim.scene.table_top_z + 0.005)  # the upper surface (not the rounded rim)
    inside = task.contains(pts)
    assert top.sum() >= 3 and inside[top].all() and inside[near].mean() > 0.5
    assert not (inside & ~cloth).any()


def test_push_goals_are_free_and_on_the_table() -> None:
    env = push_env(n_objects=(4, 4), object_size_m=(0.04, 0.12))
    for seed in range(4):
        task = env.reset(seed)
        m, d, sim = env.sim.model, env.sim.data, env.sim
        x, y, _ = sim.config.table_placement(env.robot.name)
        half = np.asarray(sim.config.table_size_m) / 2
        set_free_pose(env, task.target, task.T_world_goal)
        target = m.body(task.target).id
        for i in range(d.ncon):  # no contact of the target at its goal with another object
            bodies = {int(m.geom_bodyid[d.contact[i].geom1]), int(m.geom_bodyid[d.contact[i].geom2])}
            assert target not in bodies or bodies <= {target, m.body("table").id}, bodies
        gids = range(m.body_geomadr[target], m.body_geomadr[target] + m.body_geomnum[target])
        xy = d.geom_xpos[list(gids)][:, :2]
        assert np.all(np.abs(xy - [x, y]) <= half - 0.05)


def test_push_success_at_goal_only() -> None:
    env = push_env(shapes=("box",))
    task = env.reset(3)
    assert task.yaw_period_rad == pytest.approx(math.pi) and task.yaw_tolerance_rad == 0.35
    start = env.evaluate()
    assert not start.success and start.position_error_m == pytest.approx(
        np.linalg.norm(task.T_world_goal[:3, 3] - task.T_world_start[:3, 3]), abs=1e-6)
    corners0 = env.sim.data.geom_xpos[env.sim.model.body(task.target).geomadr[0]].copy()
    set_free_pose(env, task.target, task.T_world_goal)
    at_goal = env.evaluate()
    assert at_goal.success and at_goal.position_error_m < 1e-6 and at_goal.yaw_error_rad < 1e-6
    # the rigid motion moves the object's geometry to where the teleported object is
    moved = task.T_goal_start @ np.append(corners0, 1.0)
    assert np.allclose(moved[:3], env.sim.data.geom_xpos[env.sim.model.body(task.target).geomadr[0]], atol=1e-6)
    flipped = task.T_world_goal.copy()  # a box turned by pi is the same box
    flipped[:3, :2] *= -1
    assert push_outcome(task, flipped).success
    turned = task.T_world_goal.copy()
    c, s = math.cos(0.5), math.sin(0.5)
    turned[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ turned[:3, :3]
    out = push_outcome(task, turned)
    assert not out.success and out.yaw_error_rad == pytest.approx(0.5)
    shifted = task.T_world_goal.copy()
    shifted[0, 3] += 0.031
    assert not push_outcome(task, shifted).success


def test_round_objects_have_no_yaw_goal() -> None:
    task = push_env(shapes=("sphere",)).reset(0)
    assert task.yaw_tolerance_rad is None and np.allclose(task.T_goal_start[:3, :3], np.eye(3))
    assert push_outcome(task, task.T_world_goal).yaw_error_rad is None


def test_drawer_success_when_opened_to_the_goal() -> None:
    env = TaskEnv(SceneConfig(n_objects=(0, 0)), TaskConfig(kind="drawer", cameras=RIG))
    task = env.reset(2)
    assert 0.06 <= task.goal_opening_m <= 0.10 and not env.evaluate().success
    m, d = env.sim.model, env.sim.data
    handle0 = env.sim.body_poses(["drawer_handle"])[0].numpy()
    d.qpos[m.joint("drawer_slide").qposadr[0]] = task.goal_opening_m
    mujoco.mj_forward(m, d)
    out = env.evaluate()
    assert out.success and out.position_error_m < 1e-9 and out.yaw_error_rad is None
    assert np.allclose(task.T_goal_start @ handle0, env.sim.body_poses(["drawer_handle"])[0].numpy(), atol=1e-9)
    d.qpos[m.joint("drawer_slide").qposadr[0]] = task.goal_opening_m + 0.025
    mujoco.mj_forward(m, d)
    assert not env.evaluate().success


def test_cloth_success_when_the_corner_reaches_its_goal() -> None:
    env = TaskEnv(SceneConfig(n_objects=(0, 0), include_drawer=False, include_cloth=True),
                  TaskConfig(kind="cloth", cameras=RIG))
    task = env.reset(1)
    v = env.sim.flex_vertices("cloth").numpy()
    dist = np.linalg.norm(v[:, :2] - v[:, :2].mean(0), axis=1)
    assert dist[task.cloth_vertex] == pytest.approx(dist.max(), abs=2e-3)  # a corner
    assert not env.evaluate().success
    m, d = env.sim.model, env.sim.data
    body = m.flex_vertbodyid[m.flex_vertadr[0] + task.cloth_vertex]
    delta = task.T_goal_start[:3, 3]
    for j in range(m.body_jntadr[body], m.body_jntadr[body] + m.body_jntnum[body]):  # 3 slide joints
        d.qpos[m.jnt_qposadr[j]] += delta @ d.xaxis[j]
    mujoco.mj_forward(m, d)
    out = env.evaluate()
    assert out.success and out.position_error_m < 1e-6


def test_get_state_set_state_reproduces_the_continuation() -> None:
    env = SimEnv(SceneConfig(n_objects=(2, 2), include_drawer=False))
    env.reset(0)
    home = torch.as_tensor(env.home_q)
    j = env.robot.joint_names.index("panda_joint2")
    plan = home.repeat(6, 1)
    plan[:, j] += torch.linspace(0.05, 0.3, 6, dtype=torch.float64)
    env.execute(plan[:2])
    saved = env.get_state()
    q_a, poses_a, state_a = env.execute(plan[2:]), env.object_poses(), env.get_state()
    env.execute(plan[:3].flip(0))  # wander off
    env.set_state(torch.from_numpy(saved))
    q_b, poses_b = env.execute(plan[2:]), env.object_poses()
    assert torch.equal(q_a, q_b) and np.array_equal(state_a, env.get_state())
    assert all(torch.equal(poses_a[k], poses_b[k]) for k in poses_a)
    with pytest.raises(ValueError, match="state"):
        env.set_state(saved[:-1])
    bad = saved.copy()
    bad[3] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        env.set_state(bad)


@pytest.mark.parametrize("field,value,error", [
    ("kind", "lift", ValueError), ("push_distance_m", (0.2, 0.1), ValueError),
    ("push_distance_m", (-0.1, 0.1), ValueError), ("push_yaw_rad", (-4.0, 0.0), ValueError),
    ("push_yaw_rad", (0.0, 4.0), ValueError), ("position_tolerance_m", 0.0, ValueError),
    ("yaw_tolerance_rad", -1.0, ValueError), ("drawer_open_m", (0.1,), ValueError),
    ("cloth_tolerance_m", math.nan, ValueError), ("table_margin_m", -0.01, ValueError),
    ("cameras", "front", TypeError), ("cameras", {"n_views": 5}, ValueError), ("depth_noise", "yes", TypeError),
])
def test_bad_config_values_name_the_field(field: str, value: object, error: type) -> None:
    with pytest.raises(error, match=field if field != "cameras" or error is TypeError else "n_views"):
        TaskConfig(**{field: value})


def test_wrong_task_scene_combinations_and_misuse() -> None:
    with pytest.raises(ValueError, match="include_drawer"):
        TaskEnv(SceneConfig(include_drawer=False), TaskConfig(kind="drawer"))
    with pytest.raises(ValueError, match="include_cloth"):
        TaskEnv(SceneConfig(), TaskConfig(kind="cloth"))
    with pytest.raises(ValueError, match="n_objects"):
        TaskEnv(SceneConfig(n_objects=(0, 0)), TaskConfig())
    with pytest.raises(TypeError, match="scene"):
        TaskEnv({"robot": "franka_panda"}, TaskConfig())  # type: ignore[arg-type]
    env = TaskEnv(SceneConfig(n_objects=(0, 0)), TaskConfig(kind="drawer", drawer_open_m=(0.2, 0.3)))
    with pytest.raises(RuntimeError, match="reset"):
        env.observe()
    with pytest.raises(ValueError, match="drawer_open_m"):
        env.reset(0)
    big = push_env(object_size_m=(0.2, 0.24))
    with pytest.raises(ValueError, match="max_object_extent_m"):
        big.reset(0)


@pytest.mark.parametrize("kind", ["push", "drawer", "cloth"])
def test_yaml_mirrors_the_dataclass(kind: str) -> None:
    import yaml

    path = Path(__file__).resolve().parents[2] / "configs" / "task" / f"{kind}.yaml"
    values = yaml.safe_load(path.read_text())
    names = {f.name for f in dataclasses.fields(TaskConfig)}
    assert values["kind"] == kind and set(values) <= names and {"cameras", "depth_noise"} <= set(values)
    cfg = TaskConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    views = 3 if kind == "drawer" else 2  # the drawer front faces away from the front views
    assert cfg == TaskConfig(kind=kind, cameras=CameraRigConfig(n_views=views))


@pytest.mark.parametrize("robot", ["franka_panda", "ur5e_gripper"])
def test_workspace_box_covers_the_table_and_the_objects_on_it(robot: str) -> None:
    """The UR5e's table lies at -x: a fixed crop box in front of the Franka would see nothing there."""
    env = push_env(robot=robot)
    env.reset(3)
    (lx, ly, lz), (hx, hy, hz) = env.workspace_box(margin_m=0.05, height_m=0.6)
    cx, cy, _ = env.sim.config.table_placement(robot)
    sx, sy = env.sim.config.table_size_m
    top = env.sim.scene.table_top_z
    assert (lx, hx) == pytest.approx((cx - sx / 2 - 0.05, cx + sx / 2 + 0.05))
    assert (ly, hy) == pytest.approx((cy - sy / 2 - 0.05, cy + sy / 2 + 0.05))
    assert (lz, hz) == pytest.approx((top - 0.05, top + 0.6))
    pts, body = segmented_points(env)
    table = (np.abs(pts[:, 0] - cx) < sx / 2 - 0.01) & (np.abs(pts[:, 1] - cy) < sy / 2 - 0.01) \
        & (np.abs(pts[:, 2] - top) < 0.01)
    assert table.sum() > 100  # the cameras see the table top
    inside = (pts >= [lx, ly, lz]).all(1) & (pts <= [hx, hy, hz]).all(1)
    assert inside[table].all()
    with pytest.raises(ValueError, match="margin_m"):
        env.workspace_box(margin_m=0.0)
