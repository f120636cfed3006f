"""ZeroMotion and RigidFollow baselines: shapes, broadcasting of one scene to K actions, and the
attachment rule against a naive nearest-point loop."""

from __future__ import annotations

import math
import os

import pytest
import torch

from pointworld.model.baselines import RigidFollow, ZeroMotion
from pointworld.model.inputs import ActionInput, Prediction, SceneInput
from pointworld.robot.flow import FEATURE_DIM, FEATURE_LAYOUT

DEVICE = torch.device(os.environ.get("POINTWORLD_TEST_DEVICE", "cuda"))


def _scene(points: torch.Tensor, mask: torch.Tensor | None = None) -> SceneInput:
    mask = torch.ones(points.shape[:2], dtype=torch.bool) if mask is None else mask
    return SceneInput(points, torch.zeros_like(points), torch.zeros_like(points), mask)


def _action(robot: torch.Tensor, mask: torch.Tensor | None = None) -> ActionInput:
    """robot: (K, T+1, M, 3) positions; other feature channels zero."""
    flow = torch.zeros(robot.shape[:3] + (FEATURE_DIM,), dtype=robot.dtype)
    flow[..., FEATURE_LAYOUT["xyz"]] = robot
    mask = torch.ones(robot.shape[0], robot.shape[2], dtype=torch.bool) if mask is None else mask
    return ActionInput(flow, mask, torch.zeros(robot.shape[0], dtype=torch.int64))


def _naive_rigid_follow(scene_pts, scene_mask, robot, robot_mask, radius):
    k_, t1, m_ = robot.shape[:3]
    n_ = scene_pts.shape[1]
    out = torch.zeros(k_, t1 - 1, n_, 3, dtype=torch.float64)
    for k in range(k_):
        b = 0 if scene_pts.shape[0] == 1 else k
        for n in range(n_):
            if not scene_mask[b, n]:
                continue
            cands = [(math.dist(scene_pts[b, n].tolist(), robot[k, 0, m].tolist()), m)
                     for m in range(m_) if robot_mask[k, m]]
            if not cands or min(cands)[0] > radius:
                continue
            j = min(cands)[1]
            for t in range(1, t1):
                out[k, t - 1, n] = robot[k, t, j] - robot[k, 0, j]
    return out


def _random_case(seed: int, k: int = 3, t: int = 4, n: int = 40, m: int = 15):
    gen = torch.Generator().manual_seed(seed)
    scene_pts = torch.rand(1, n, 3, generator=gen, dtype=torch.float64) * 0.3
    scene_mask = torch.rand(1, n, generator=gen) < 0.9
    scene_pts[~scene_mask] = float("nan")  # padding may hold anything
    robot = torch.rand(k, t + 1, m, 3, generator=gen, dtype=torch.float64) * 0.3  # not rigid at all
    robot_mask = torch.rand(k, m, generator=gen) < 0.8
    return scene_pts, scene_mask, robot, robot_mask


def test_zero_motion_shapes_and_values():
    scene_pts, scene_mask, robot, robot_mask = _random_case(0)
    pred = ZeroMotion().predict(_scene(scene_pts, scene_mask), _action(robot, robot_mask))
    assert isinstance(pred, Prediction)
    assert pred.displacement.shape == (3, 4, 40, 3) and pred.log_var.shape == (3, 4, 40)
    assert pred.displacement.dtype == torch.float64
    assert (pred.displacement == 0).all() and (pred.log_var == 0).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_rigid_follow_matches_naive_loop(seed):
    scene_pts, scene_mask, robot, robot_mask = _random_case(seed)
    radius = 0.04
    pred = RigidFollow(radius).predict(_scene(scene_pts, scene_mask), _action(robot, robot_mask))
    want = _naive_rigid_follow(scene_pts, scene_mask, robot, robot_mask, radius)
    torch.testing.assert_close(pred.displacement, want, rtol=0, atol=1e-15)
    moved = (want != 0).any(-1).any(1)
    assert 0 < int(moved.sum()) < int(scene_mask.sum()) * 3  # some points attached, some not
    assert (pred.log_var == 0).all()


def test_scene_per_action_equals_broadcast_scene():
    scene_pts, scene_mask, robot, robot_mask = _random_case(2)
    one = RigidFollow(0.05).predict(_scene(scene_pts, scene_mask), _action(robot, robot_mask))
    many = RigidFollow(0.05).predict(_scene(scene_pts.expand(3, -1, -1).clone(), scene_mask.expand(3, -1)),
                                     _action(robot, robot_mask))
    torch.testing.assert_close(one.displacement, many.displacement, rtol=0, atol=0)


def test_rigid_translation_moves_exactly_the_near_points():
    gripper = torch.tensor([[0.0, 0.0, 0.0], [0.01, 0.0, 0.0], [0.0, 0.01, 0.0]], dtype=torch.float64)
    shift = torch.tensor([[0.0, 0.0, 0.05], [0.02, -0.01, 0.0]], dtype=torch.float64)  # per action, per step
    steps = torch.arange(4, dtype=torch.float64)  # T = 3
    robot = gripper[None, None] + shift[:, None, None, :] * steps[None, :, None, None]  # (2, 4, 3, 3)
    near = torch.tensor([[0.0, 0.0, 0.02], [0.012, 0.0, -0.02], [0.0, 0.03, 0.0]], dtype=torch.float64)
    far = torch.tensor([[0.2, 0.0, 0.0], [0.0, 0.0, 0.08]], dtype=torch.float64)
    scene = _scene(torch.cat([near, far])[None])
    pred = RigidFollow(radius_m=0.05).predict(scene, _action(robot))
    expected_near = shift[:, None, None, :] * steps[1:, None, None] + torch.zeros(2, 3, 3, 3, dtype=torch.float64)
    torch.testing.assert_close(pred.displacement[:, :, :3], expected_near, rtol=0, atol=1e-15)
    assert (pred.displacement[:, :, 3:] == 0).all()


def test_no_valid_robot_point_means_no_motion():
    scene_pts, scene_mask, robot, _ = _random_case(3)
    none = torch.zeros(robot.shape[0], robot.shape[2], dtype=torch.bool)
    pred = RigidFollow(1.0).predict(_scene(scene_pts, scene_mask), _action(robot, none))
    assert (pred.displacement == 0).all()
    empty = RigidFollow(1.0).predict(_scene(scene_pts, scene_mask), _action(robot[:, :, :0], none[:, :0]))
    assert empty.displacement.shape == (3, 4, 40, 3) and (empty.displacement == 0).all()


def test_float32_scene_with_float64_action():
    scene_pts, scene_mask, robot, robot_mask = _random_case(4)
    pred = RigidFollow(0.04).predict(_scene(scene_pts.float(), scene_mask), _action(robot, robot_mask))
    want = _naive_rigid_follow(scene_pts, scene_mask, robot, robot_mask, 0.04)
    assert pred.displacement.dtype == torch.float32
    torch.testing.assert_close(pred.displacement.double(), want, rtol=0, atol=1e-6)


def test_bad_arguments_are_rejected():
    scene_pts, scene_mask, robot, robot_mask = _random_case(5)
    two = _scene(scene_pts.expand(2, -1, -1), scene_mask.expand(2, -1))
    for predictor in (ZeroMotion(), RigidFollow()):
        with pytest.raises(ValueError, match="scene"):
            predictor.predict(two, _action(robot, robot_mask))
        with pytest.raises(TypeError, match="action"):
            predictor.predict(_scene(scene_pts, scene_mask), robot)
        with pytest.raises(TypeError, match="scene"):
            predictor.predict(scene_pts, _action(robot, robot_mask))
    with pytest.raises(ValueError, match="radius_m"):
        RigidFollow(radius_m=0.0)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")
def test_device_matches_cpu():
    scene_pts, scene_mask, robot, robot_mask = _random_case(6)
    ref = RigidFollow(0.04).predict(_scene(scene_pts, scene_mask), _action(robot, robot_mask))
    got = RigidFollow(0.04).predict(_scene(scene_pts.to(DEVICE), scene_mask.to(DEVICE)),
                                    _action(robot.to(DEVICE), robot_mask.to(DEVICE)))
    assert got.displacement.device.type == DEVICE.type
    torch.testing.assert_close(got.displacement.cpu(), ref.displacement, rtol=0, atol=1e-15)
    zero = ZeroMotion().predict(_scene(scene_pts.to(DEVICE), scene_mask.to(DEVICE)),
                                _action(robot.to(DEVICE), robot_mask.to(DEVICE)))
    assert zero.log_var.device.type == DEVICE.type
