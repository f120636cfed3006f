"""Goal tracking: rigid fits (Open3D as reference), perception-only ICP tracking, goals across replans, and
robot self-filtering against the simulator's segmentation."""

from __future__ import annotations

import math

import numpy as np
import open3d as o3d
import pytest
import torch

from pointworld.errors import EmptyCloudError, JointMismatchError
from pointworld.geometry.se3 import make_transform, transform_points
from pointworld.planning.observation import observe_scene
from pointworld.planning.oracle import SimOracle
from pointworld.planning.tracking import (
    fit_rigid_transform,
    near_robot,
    track_selection,
    tracked_goal,
)
from pointworld.robot.sampling import sample_surface_points
from pointworld.sim.cameras import CameraRigConfig
from pointworld.sim.config import SceneConfig
from pointworld.sim.task import TaskConfig, TaskEnv

RIG = CameraRigConfig(n_views=2, width=160, height=120)


def yaw_motion(yaw: float, t: tuple[float, float, float]) -> torch.Tensor:
    c, s = math.cos(yaw), math.sin(yaw)
    R = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return make_transform(R, torch.tensor(t, dtype=torch.float64))


def random_rotation(gen: torch.Generator) -> torch.Tensor:
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=gen, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    return q * torch.linalg.det(q)  # det +1


def box_surface(center: torch.Tensor, half: tuple[float, float, float], n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 3) random points on the 5 visible faces (not the bottom) of an axis-aligned box."""
    h = torch.tensor(half, dtype=torch.float64)
    u = torch.rand(n, 3, generator=gen, dtype=torch.float64) * 2 - 1
    face = torch.randint(0, 5, (n,), generator=gen)
    axis = torch.tensor([0, 0, 1, 1, 2])[face]
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0], dtype=torch.float64)[face]
    u[torch.arange(n), axis] = sign
    return center + u * h


def test_fit_rigid_transform_against_open3d_and_known_motions() -> None:
    gen = torch.Generator().manual_seed(0)
    src = torch.randn(2, 3, 40, 3, generator=gen, dtype=torch.float64)
    T = make_transform(torch.stack([random_rotation(gen) for _ in range(6)]).reshape(2, 3, 3, 3),
                       torch.randn(2, 3, 3, generator=gen, dtype=torch.float64))
    dst = transform_points(T, src)
    np.testing.assert_allclose(fit_rigid_transform(src, dst), T, atol=1e-10)
    noisy = dst + 0.01 * torch.randn(dst.shape, generator=gen, dtype=torch.float64)
    fit = fit_rigid_transform(src, noisy)
    corr = o3d.utility.Vector2iVector(np.stack([np.arange(40)] * 2, 1))
    for i in range(2):
        for j in range(3):
            a, b = o3d.geometry.PointCloud(), o3d.geometry.PointCloud()
            a.points = o3d.utility.Vector3dVector(src[i, j].numpy())
            b.points = o3d.utility.Vector3dVector(noisy[i, j].numpy())
            ref = o3d.pipelines.registration.TransformationEstimationPointToPoint().compute_transformation(a, b, corr)
            np.testing.assert_allclose(fit[i, j].numpy(), ref, atol=1e-9)
    flat = src[0, 0] * torch.tensor([1.0, 1.0, 0.0], dtype=torch.float64)  # planar: a reflection fits as well
    mirrored = flat * torch.tensor([1.0, -1.0, 1.0], dtype=torch.float64)
    assert torch.linalg.det(fit_rigid_transform(flat, mirrored)[:3, :3]) > 0.999
    f32 = fit_rigid_transform(src[0, 0].float(), dst[0, 0].float())
    assert f32.dtype == torch.float32 and torch.allclose(f32.double(), T[0, 0], atol=1e-4)
    with pytest.raises(ValueError, match="at least 3"):
        fit_rigid_transform(src[0, 0, :2], dst[0, 0, :2])
    with pytest.raises(ValueError, match="target"):
        fit_rigid_transform(src[0, 0], dst[0, 0, :5])


def tracking_scene(gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A box on a table: first-observation samples, the true motion, and a new observation (fresh samples
    of the moved box plus the table)."""
    half = (0.04, 0.025, 0.02)
    center = torch.tensor([0.5, 0.1, 0.02], dtype=torch.float64)
    points0 = box_surface(center, half, 300, gen)
    T_true = yaw_motion(0.4, (0.06, -0.03, 0.0))
    box_now = transform_points(T_true, box_surface(center, half, 300, gen))
    xy = torch.stack(torch.meshgrid(torch.arange(0.3, 0.8, 0.01), torch.arange(-0.2, 0.3, 0.01), indexing="ij"), -1)
    table = torch.cat([xy.reshape(-1, 2).double(), torch.zeros(xy.shape[0] * xy.shape[1], 1, dtype=torch.float64)], 1)
    return points0, T_true, torch.cat([box_now, table])


def test_track_selection_refines_a_rough_prediction() -> None:
    gen = torch.Generator().manual_seed(1)
    points0, T_true, cloud = tracking_scene(gen)
    T_est = yaw_motion(0.1, (0.02, 0.0, 0.0))  # motion up to the previous observation
    predicted = T_true @ torch.linalg.inv(T_est) @ torch.linalg.inv(yaw_motion(0.05, (0.008, -0.006, 0.0)))
    T_new = track_selection(points0, T_est, cloud.float(), predicted, min_z_m=0.004)
    assert T_new.dtype == torch.float64

    def error(T: torch.Tensor) -> float:
        return float((transform_points(T, points0) - transform_points(T_true, points0)).norm(dim=-1).mean())

    assert error(predicted @ T_est) > 0.009  # the prior is off by about a centimetre
    assert error(T_new) < 0.003  # ICP on the observation fixes it
    np.testing.assert_allclose(T_new[:3, :3] @ T_new[:3, :3].T, torch.eye(3, dtype=torch.float64), atol=1e-9)


def test_track_selection_keeps_the_prior_without_overlap() -> None:
    gen = torch.Generator().manual_seed(2)
    points0, _, cloud = tracking_scene(gen)
    T_est, predicted = yaw_motion(0.2, (0.01, 0.0, 0.0)), yaw_motion(0.0, (0.01, 0.02, 0.0))
    far = cloud + torch.tensor([2.0, 0.0, 0.0], dtype=torch.float64)
    assert torch.equal(track_selection(points0, T_est, far, predicted), predicted @ T_est)
    assert torch.equal(track_selection(points0, T_est, far), T_est)
    bad = T_est.clone()
    bad[0, 0] = 2.0
    with pytest.raises(ValueError, match="T_est"):
        track_selection(points0, bad, cloud)
    with pytest.raises(ValueError, match="min_fitness"):
        track_selection(points0, T_est, cloud, min_fitness=2.0)
    with pytest.raises(ValueError, match="cloud_points"):
        track_selection(points0, T_est, cloud[:, :2])


def test_track_selection_survives_a_wrong_prediction() -> None:
    """A model predicted a 10 cm push (and a dive into the table) but the object stayed where it was last
    seen: the "did not move" hypothesis wins and the object is not lost."""
    gen = torch.Generator().manual_seed(4)
    points0, T_true, cloud = tracking_scene(gen)
    wrong = yaw_motion(0.3, (0.10, 0.05, -0.04))
    T_new = track_selection(points0, T_true, cloud, wrong, min_z_m=0.004)
    err = (transform_points(T_new, points0) - transform_points(T_true, points0)).norm(dim=-1).mean()
    assert float(err) < 0.003
    # only a sparse remnant of the object is seen (ICP cannot confirm either hypothesis): the hypothesis
    # that overlaps the observation more, the unmoved one, is kept rather than the prediction
    table = cloud[cloud[:, 2] < 1e-9]
    remnant = transform_points(T_true, points0[:2])
    kept = track_selection(points0, T_true, torch.cat([table, remnant]), wrong, min_z_m=0.004)
    assert torch.equal(kept, T_true)
    # a right prediction still wins over "did not move" (ties and better fits go to the prediction)
    T_prev = yaw_motion(0.1, (0.02, 0.0, 0.0))
    right = T_true @ torch.linalg.inv(T_prev)
    T_new = track_selection(points0, T_prev, cloud, right, min_z_m=0.004)
    err = (transform_points(T_new, points0) - transform_points(T_true, points0)).norm(dim=-1).mean()
    assert float(err) < 0.003


def test_track_selection_re_detects_an_object_pushed_elsewhere() -> None:
    """The object moved 12 cm off the prediction and 11 cm from where it was (a prediction in the wrong direction, and "did not move"):
    it is found again among the observed segments, not confused with an identical object farther away."""
    gen = torch.Generator().manual_seed(5)
    points0, T_true, cloud = tracking_scene(gen)
    twin = transform_points(yaw_motion(0.0, (0.0, 0.30, 0.0)), cloud[cloud[:, 2] > 1e-9])  # 30 cm away
    T_prev = yaw_motion(0.1, (0.02, 0.0, 0.0))
    off = yaw_motion(0.0, (-0.09, -0.08, 0.0)) @ T_true @ torch.linalg.inv(T_prev)  # 12 cm off the truth
    scene = torch.cat([cloud, twin])
    T_new = track_selection(points0, T_prev, scene, off, min_z_m=0.004)
    err = (transform_points(T_new, points0) - transform_points(T_true, points0)).norm(dim=-1).mean()
    assert float(err) < 0.003
    # with no segment in reach, neither hypothesis fits: the old fallback keeps one of them
    kept = track_selection(points0, T_prev, scene, off, min_z_m=0.004, search_radius_m=0.01)
    assert torch.equal(kept, off @ T_prev) or torch.equal(kept, T_prev)
    with pytest.raises(ValueError, match="search_radius_m"):
        track_selection(points0, T_prev, scene, off, search_radius_m=0.0)


def test_tracked_goal_keeps_the_world_targets_of_the_first_observation() -> None:
    gen = torch.Generator().manual_seed(3)
    points0, T_new, _ = tracking_scene(gen)
    T_goal_start = yaw_motion(-0.3, (0.1, 0.05, 0.0))
    table = torch.tensor([[0.5, 0.1, 0.0], [0.55, 0.05, 0.001]], dtype=torch.float64)
    far = torch.tensor([[0.9, -0.3, 0.02]], dtype=torch.float64)
    now = transform_points(T_new, points0)
    points = torch.cat([table, now, far]).float()
    goal = tracked_goal(points, points0, T_new, T_goal_start, min_z_m=0.004)
    on_box = now[:, 2] >= 0.004
    expect = torch.arange(2, 2 + points0.shape[0])[on_box]
    assert torch.equal(goal.indices, expect)  # the moved box points, not the table nor the far point
    np.testing.assert_allclose(goal.targets.double(), transform_points(T_goal_start, points0)[on_box], atol=2e-6)
    with pytest.raises(EmptyCloudError, match="lost"):
        tracked_goal(far.float(), points0, T_new, T_goal_start)


def flying_env(seed: int = 0) -> TaskEnv:
    env = TaskEnv(SceneConfig(robot="flying_gripper", n_objects=(1, 1), include_drawer=False,
                              object_size_m=(0.05, 0.08)), TaskConfig(kind="push", cameras=RIG))
    env.reset(seed)
    return env


def test_near_robot_matches_the_simulator_segmentation() -> None:
    env = flying_env(seed=1)
    obs = observe_scene(env.observe())
    oracle = SimOracle(env)
    oracle.bind(obs.cloud)
    robot_ids = [env.sim.body_names().index(n) for n in env.robot.link_names]
    truth = torch.from_numpy(np.isin(oracle.body_id, robot_ids))
    surface = sample_surface_points(env.robot, 2048, seed=0)
    mask = near_robot(obs.scene.points[0], env.robot, surface, env.joint_positions())
    assert truth.sum() > 20
    assert mask[truth].float().mean() > 0.95  # the robot's own points are found ...
    assert mask[~truth].sum() == 0  # ... and nothing else (the gripper is in the air)
    with pytest.raises(JointMismatchError):
        near_robot(obs.scene.points[0], env.robot, surface, env.joint_positions()[:-1])
