"""World-model input features: nearest robot distances vs a naive loop and vs knn, feature layouts,
scene broadcasting, padding, bad input."""

from __future__ import annotations

import pytest
import torch

from pointworld.geometry.neighbors import knn
from pointworld.model.features import (
    NO_ROBOT_DISTANCE_M,
    ROBOT_POINT_FEATURE_DIM,
    SCENE_POINT_FEATURE_DIM,
    nearest_robot_distance,
    robot_point_features,
    scene_point_features,
    scene_step_features,
)
from pointworld.model.inputs import ActionInput, SceneInput
from pointworld.robot.flow import FEATURE_DIM, FEATURE_LAYOUT

DT = torch.float64


def _naive_distance(scene: torch.Tensor, robot: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    B, steps, M = robot.shape[:3]
    N = scene.shape[1]
    out = torch.empty(B, steps, N, dtype=scene.dtype)
    for b in range(B):
        sb = scene[min(b, scene.shape[0] - 1)]
        for t in range(steps):
            for n in range(N):
                best = NO_ROBOT_DISTANCE_M
                for m in range(M):
                    if mask[b, m]:
                        best = min(best, float(torch.linalg.vector_norm(sb[n] - robot[b, t, m])))
                out[b, t, n] = best
    return out


def _scene(B: int, N: int, gen: torch.Generator, with_image: int = 0) -> SceneInput:
    mask = torch.rand(B, N, generator=gen) < 0.8
    normals = torch.nn.functional.normalize(torch.randn(B, N, 3, dtype=DT, generator=gen), dim=-1)
    image = torch.randn(B, N, with_image, dtype=DT, generator=gen) if with_image else None
    return SceneInput(points=torch.rand(B, N, 3, dtype=DT, generator=gen), colors=torch.rand(B, N, 3, dtype=DT,
                      generator=gen), normals=normals, mask=mask, image_features=image)


def _action(B: int, steps: int, M: int, gen: torch.Generator) -> ActionInput:
    flow = torch.randn(B, steps, M, FEATURE_DIM, dtype=DT, generator=gen)
    flow[..., FEATURE_LAYOUT["xyz"]] = 0.5 + 0.3 * flow[..., FEATURE_LAYOUT["xyz"]]
    flow[..., FEATURE_LAYOUT["gripper_open"]] = torch.rand(B, steps, 1, 1, dtype=DT, generator=gen)
    mask = torch.rand(B, M, generator=gen) < 0.7
    mask[:, 0] = True
    return ActionInput(flow=flow, mask=mask, robot_type=torch.zeros(B, dtype=torch.int64))


@pytest.mark.parametrize("chunk", [1, 7, 4096])
def test_nearest_robot_distance_matches_naive_loop(chunk: int) -> None:
    gen = torch.Generator().manual_seed(0)
    B, steps, M, N = 3, 4, 9, 23
    scene = torch.rand(B, N, 3, dtype=DT, generator=gen)
    robot = torch.rand(B, steps, M, 3, dtype=DT, generator=gen)
    mask = torch.rand(B, M, generator=gen) < 0.6
    mask[0] = False  # a batch element without robot points
    mask[1, 0] = True
    robot[~mask[:, None, :].expand(B, steps, M)] = float("nan")  # padding may hold anything
    got = nearest_robot_distance(scene, robot, mask, chunk=chunk)
    ref = _naive_distance(scene, robot, mask)
    assert got.shape == (B, steps, N)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-12)
    assert bool((got[0] == NO_ROBOT_DISTANCE_M).all())


def test_nearest_robot_distance_broadcasts_one_scene_and_agrees_with_knn() -> None:
    gen = torch.Generator().manual_seed(1)
    K, steps, M, N = 4, 3, 50, 300
    scene = torch.rand(1, N, 3, dtype=DT, generator=gen)
    robot = torch.rand(K, steps, M, 3, dtype=DT, generator=gen)
    mask = torch.rand(K, M, generator=gen) < 0.5
    mask[:, 0] = True
    got = nearest_robot_distance(scene, robot, mask, chunk=64)
    flat_robot = robot.reshape(K * steps, M, 3)
    flat_mask = mask[:, None].expand(K, steps, M).reshape(K * steps, M)
    dist, _ = knn(scene.expand(K * steps, N, 3), flat_robot, 1, flat_mask, backend="torch")
    torch.testing.assert_close(got, dist[..., 0].reshape(K, steps, N), rtol=0, atol=1e-12)


def test_nearest_robot_distance_float32_is_accurate_far_from_the_origin() -> None:
    gen = torch.Generator().manual_seed(2)
    offset = torch.tensor([30.0, -20.0, 5.0], dtype=DT)  # a workspace far from the world origin
    robot = offset + 0.1 * torch.rand(2, 3, 40, 3, dtype=DT, generator=gen)
    scene = robot[:, 0, :25] + 1e-3 * torch.randn(2, 25, 3, dtype=DT, generator=gen)
    mask = torch.ones(2, 40, dtype=torch.bool)
    ref = nearest_robot_distance(scene, robot, mask)
    got = nearest_robot_distance(scene.float(), robot.float(), mask)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=0, atol=5e-6)


def test_nearest_robot_distance_gradient_matches_finite_differences() -> None:
    gen = torch.Generator().manual_seed(3)
    scene = torch.rand(1, 5, 3, dtype=DT, generator=gen).requires_grad_()
    robot = torch.rand(2, 2, 6, 3, dtype=DT, generator=gen).requires_grad_()
    mask = torch.ones(2, 6, dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda s, r: nearest_robot_distance(s, r, mask), (scene, robot))


def test_scene_step_features_layout_broadcast_and_padding() -> None:
    gen = torch.Generator().manual_seed(4)
    K, steps, M, N = 3, 4, 8, 20
    scene, action = _scene(1, N, gen), _action(K, steps, M, gen)
    feats = scene_step_features(scene, action, max_distance_m=0.4)
    assert feats.shape == (K, N, 2 * steps) and feats.dtype == DT
    dist = _naive_distance(scene.points, action.points, action.mask).clamp_max(0.4)  # (K, T+1, N)
    real = scene.mask[0]
    torch.testing.assert_close(feats[:, real, steps:], dist.transpose(1, 2)[:, real], rtol=0, atol=1e-12)
    gripper = action.gripper_open[:, None, :].expand(K, int(real.sum()), steps)
    torch.testing.assert_close(feats[:, real, :steps], gripper, rtol=0, atol=0)
    assert bool((feats[:, ~real] == 0).all())
    assert float(feats[:, real, steps:].max()) <= 0.4
    # the same scene given once per action gives the same features
    expanded = SceneInput(*(t.expand((K,) + t.shape[1:]) for t in (scene.points, scene.colors, scene.normals,
                                                                     scene.mask)))
    torch.testing.assert_close(scene_step_features(expanded, action, 0.4), feats, rtol=0, atol=0)


def test_scene_point_features_layout_and_origin() -> None:
    gen = torch.Generator().manual_seed(5)
    scene = _scene(2, 15, gen, with_image=4)
    origin = torch.tensor([[0.1, -0.2, 0.3], [1.0, 2.0, 3.0]], dtype=DT)
    feats = scene_point_features(scene, origin)
    assert feats.shape == (2, 15, SCENE_POINT_FEATURE_DIM + 4)
    m = scene.mask
    torch.testing.assert_close(feats[..., 0:3][m], (scene.points - origin[:, None])[m], rtol=0, atol=0)
    torch.testing.assert_close(feats[..., 3:6][m], scene.colors[m], rtol=0, atol=0)
    torch.testing.assert_close(feats[..., 6:9][m], scene.normals[m], rtol=0, atol=0)
    torch.testing.assert_close(feats[..., 9:][m], scene.image_features[m], rtol=0, atol=0)
    assert bool((feats[~m] == 0).all())
    # translating the cloud and its origin together leaves the features unchanged
    shift = torch.tensor([0.45, -0.3, 0.15], dtype=DT)
    moved = SceneInput(scene.points + shift, scene.colors, scene.normals, scene.mask, scene.image_features)
    torch.testing.assert_close(scene_point_features(moved, origin + shift), feats, rtol=0, atol=1e-12)
    without = SceneInput(scene.points, scene.colors, scene.normals, scene.mask)
    assert scene_point_features(without, origin).shape == (2, 15, SCENE_POINT_FEATURE_DIM)


def test_robot_point_features_layout() -> None:
    gen = torch.Generator().manual_seed(6)
    action = _action(2, 3, 10, gen)
    origin = torch.tensor([[0.1, 0.2, 0.3], [-1.0, 0.0, 1.0]], dtype=DT)
    feats = robot_point_features(action, origin)
    assert feats.shape == (2, 3, 10, ROBOT_POINT_FEATURE_DIM)
    flow, m = action.flow, action.mask[:, None, :].expand(2, 3, 10)
    expected = torch.cat([flow[..., 0:3] - origin[:, None, None], flow[..., 3:13]], -1)  # FEATURE_LAYOUT 0:13
    torch.testing.assert_close(feats[m], expected[m], rtol=0, atol=0)
    assert bool((feats[~m] == 0).all())


def test_bad_inputs_are_rejected() -> None:
    gen = torch.Generator().manual_seed(7)
    scene, action = _scene(2, 6, gen), _action(3, 3, 4, gen)
    with pytest.raises(ValueError, match="scene"):
        scene_step_features(scene, action)  # B = 2 scenes for 3 actions
    with pytest.raises(ValueError, match="max_distance_m"):
        scene_step_features(_scene(1, 6, gen), action, max_distance_m=0.0)
    with pytest.raises(ValueError, match="origin"):
        scene_point_features(scene, torch.zeros(3, 3, dtype=DT))
    with pytest.raises(TypeError, match="origin"):
        robot_point_features(action, torch.zeros(3, 3, dtype=torch.int64))
    robot, mask = action.points, action.mask
    with pytest.raises(ValueError, match="scene_points"):
        nearest_robot_distance(scene.points, robot, mask)
    with pytest.raises(TypeError, match="scene_points"):
        nearest_robot_distance(scene.points[:1].float(), robot, mask)
    with pytest.raises(TypeError, match="robot_mask"):
        nearest_robot_distance(scene.points[:1], robot, mask.long())
    with pytest.raises(ValueError, match="robot_mask"):
        nearest_robot_distance(scene.points[:1], robot, mask[:, :2])
    with pytest.raises(ValueError, match="robot_points"):
        nearest_robot_distance(scene.points[:1], robot[0], mask)
    with pytest.raises(ValueError, match="chunk"):
        nearest_robot_distance(scene.points[:1], robot, mask, chunk=0)


def test_nearest_robot_motion_matches_a_naive_loop():
    from pointworld.model.features import nearest_robot_motion

    g = torch.Generator().manual_seed(3)
    scene = torch.rand(2, 7, 3, generator=g, dtype=torch.float64)
    robot = torch.rand(2, 4, 5, 3, generator=g, dtype=torch.float64)
    mask = torch.tensor([[True, False, True, True, True], [False] * 5])
    out = nearest_robot_motion(scene, robot, mask, chunk=3)
    assert out.shape == (2, 3, 7, 3)
    for n in range(7):
        d = [float((scene[0, n] - robot[0, 0, m]).norm()) if mask[0, m] else float("inf") for m in range(5)]
        m = d.index(min(d))
        for t in range(1, 4):
            torch.testing.assert_close(out[0, t - 1, n], robot[0, t, m] - robot[0, 0, m], rtol=0, atol=1e-12)
    assert (out[1] == 0).all()  # no real robot point
