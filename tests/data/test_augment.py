"""Augmentations of clip samples: geometric consistency of points, normals, targets and robot flows
(checked against forward kinematics with a moved base, finite differences, sphere normals and explicit
formulas), exact inverses, photometric jitter, point dropout correspondences, determinism, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pointworld.data.augment import (ColorJitter, Compose, PointDropout, RandomFlip, RandomScale,
                                     RandomYaw, default_augmentation, mirror_sample, transform_sample,
                                     yaw_matrix, yaw_sample)
from pointworld.data.clip_sample import ClipSample
from pointworld.errors import EmptyCloudError
from pointworld.robot.flow import FEATURE_LAYOUT, robot_point_flow
from pointworld.robot.sampling import sample_surface_points
from pointworld.robot.urdf import load_robot

T, N, M, DT_S = 5, 40, 48, 0.1
SPHERE_C = np.array([0.5, -0.1, 0.2])
SPHERE_R = 0.15
LAY = FEATURE_LAYOUT


@pytest.fixture(scope="module")
def robot_setup():
    """Franka (float64), its gripper surface points and a smooth in-limit trajectory (1, T+1, J)."""
    robot = load_robot("franka_panda").to(dtype=torch.float64)
    surface = sample_surface_points(robot, M, links=("*hand", "*finger"), seed=0)
    mid = (robot.lower + robot.upper) / 2
    span = (robot.upper - robot.lower)
    t = torch.linspace(0, 1, T + 1, dtype=torch.float64)[:, None]
    q = mid + 0.1 * span * (t ** 2 - 0.5 * t)
    grip = torch.linspace(1, 0, T + 1, dtype=torch.float64)[None]
    return robot, surface, q[None], grip


def robot_flow(setup, T_world_base: torch.Tensor | None = None) -> torch.Tensor:
    robot, surface, q, grip = setup
    return robot_point_flow(robot, surface, q, grip, dt_s=DT_S, T_world_base=T_world_base).features()[0]


@pytest.fixture(scope="module")
def sample(robot_setup) -> ClipSample:
    """float64 sample: scene points on a sphere with outward normals, random targets and colors."""
    rng = np.random.default_rng(0)
    d = rng.normal(size=(N, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    t = torch.from_numpy
    return ClipSample(points=t(SPHERE_C + SPHERE_R * d), colors=t(rng.uniform(0.2, 0.8, (N, 3))),
                      normals=t(d.copy()), target=t(rng.normal(0, 0.02, (T, N, 3))),
                      valid=t(rng.random((T, N)) > 0.2), robot_flow=robot_flow(robot_setup).clone(),
                      robot_type=1, robot_name="franka_panda", episode="ep", clip=2)


def fd_velocity(p: np.ndarray) -> np.ndarray:
    """(T+1, M, 3) velocity by numpy's second-order finite differences (central, one-sided ends)."""
    return np.gradient(p, DT_S, axis=0, edge_order=2)


def fd_acceleration(p: np.ndarray) -> np.ndarray:
    """(T+1, M, 3) acceleration: second differences inside, 4-point one-sided ends (T+1 >= 4)."""
    a = np.empty_like(p)
    a[1:-1] = p[2:] - 2 * p[1:-1] + p[:-2]
    a[0] = 2 * p[0] - 5 * p[1] + 4 * p[2] - p[3]
    a[-1] = 2 * p[-1] - 5 * p[-2] + 4 * p[-3] - p[-4]
    return a / DT_S ** 2


def assert_flow_consistent(flow: torch.Tensor) -> None:
    """Velocity/acceleration channels are the finite differences of the xyz channel; normals unit."""
    p = flow[..., LAY["xyz"]].numpy()
    np.testing.assert_allclose(flow[..., LAY["velocity"]].numpy(), fd_velocity(p), atol=1e-9)
    np.testing.assert_allclose(flow[..., LAY["acceleration"]].numpy(), fd_acceleration(p), atol=1e-7)
    np.testing.assert_allclose(flow[..., LAY["normal"]].norm(dim=-1).numpy(), 1.0, atol=1e-12)


def pairwise(x: torch.Tensor) -> torch.Tensor:
    """(N, N) distances by explicit differences (torch.cdist is not exact on its diagonal)."""
    return (x[:, None] - x[None]).norm(dim=-1)


def assert_same(a: ClipSample, b: ClipSample, atol: float = 1e-12) -> None:
    for f in ("points", "colors", "normals", "target", "robot_flow"):
        torch.testing.assert_close(getattr(a, f), getattr(b, f), atol=atol, rtol=0)
    assert torch.equal(a.valid, b.valid)
    assert (a.robot_type, a.robot_name, a.episode, a.clip) == (b.robot_type, b.robot_name, b.episode, b.clip)


def test_fixture_flow_is_consistent(sample: ClipSample) -> None:
    assert_flow_consistent(sample.robot_flow)  # the reference stencils agree with robot_point_flow


def test_yaw_equals_fk_with_rotated_base(sample: ClipSample, robot_setup) -> None:
    angle = 0.7
    out = yaw_sample(sample, angle)
    c = sample.points.mean(0)
    G = torch.eye(4, dtype=torch.float64)
    G[:3, :3] = yaw_matrix(angle)
    G[:3, 3] = c - G[:3, :3] @ c
    torch.testing.assert_close(out.robot_flow, robot_flow(robot_setup, G), atol=1e-10, rtol=0)
    # scene: positions rotated about the vertical through the centroid, heights and centroid kept
    torch.testing.assert_close(out.points, sample.points @ G[:3, :3].T + G[:3, 3], atol=1e-12, rtol=0)
    torch.testing.assert_close(out.points[:, 2], sample.points[:, 2], atol=1e-12, rtol=0)
    torch.testing.assert_close(out.points.mean(0), c, atol=1e-12, rtol=0)
    torch.testing.assert_close(pairwise(out.points), pairwise(sample.points),
                               atol=1e-12, rtol=0)


def test_yaw_then_inverse_is_identity(sample: ClipSample) -> None:
    assert_same(yaw_sample(yaw_sample(sample, 2.3), -2.3), sample)


@pytest.mark.parametrize("op", ["yaw", "scale", "flip_x", "flip_y", "compose"])
def test_target_is_transformed_future_minus_transformed_start(sample: ClipSample, op: str) -> None:
    s, c = 1.0, sample.points.mean(0)
    if op == "yaw":
        A, out = yaw_matrix(-1.1), yaw_sample(sample, -1.1)
    elif op == "scale":
        s, A = 1.07, torch.eye(3, dtype=torch.float64)
        out = transform_sample(sample, A, s)
    elif op.startswith("flip"):
        A = torch.diag(torch.tensor([-1.0, 1, 1] if op == "flip_x" else [1.0, -1, 1], dtype=torch.float64))
        out = mirror_sample(sample, op[-1])
    else:
        out = Compose((RandomYaw(), RandomScale(), RandomFlip(p=1.0)))(sample, np.random.default_rng(5))
        A = torch.linalg.lstsq(sample.points - c, out.points - c).solution.T  # recover s * R
        s = float(torch.linalg.det(A).abs() ** (1 / 3))
        A = A / s

    def move(x: torch.Tensor) -> torch.Tensor:  # explicit formula, per point
        return torch.einsum("ij,...j->...i", s * A, x - c) + c

    future = sample.points[None] + sample.target
    torch.testing.assert_close(out.target, move(future) - move(sample.points)[None], atol=1e-12, rtol=0)
    torch.testing.assert_close(out.points, move(sample.points), atol=1e-12, rtol=0)
    # sphere normals stay the outward normals of the moved sphere
    torch.testing.assert_close(out.normals, (out.points - move(torch.from_numpy(SPHERE_C))) / (s * SPHERE_R),
                               atol=1e-12, rtol=0)
    assert_flow_consistent(out.robot_flow)
    torch.testing.assert_close(out.robot_flow[..., LAY["xyz"]], move(sample.robot_flow[..., LAY["xyz"]]),
                               atol=1e-12, rtol=0)
    # untouched channels and fields
    for key in ("gripper_open", "time", "link_id"):
        assert torch.equal(out.robot_flow[..., LAY[key]], sample.robot_flow[..., LAY[key]])
    assert torch.equal(out.colors, sample.colors) and torch.equal(out.valid, sample.valid)


def test_scale_distances_and_inverse(sample: ClipSample) -> None:
    out = RandomScale((1.2, 1.2))(sample, np.random.default_rng(0))
    torch.testing.assert_close(pairwise(out.points), 1.2 * pairwise(sample.points),
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(out.robot_flow[..., LAY["velocity"]], 1.2 * sample.robot_flow[..., LAY["velocity"]],
                               atol=1e-12, rtol=0)
    torch.testing.assert_close(out.normals, sample.normals, atol=0, rtol=0)
    assert_same(transform_sample(out, torch.eye(3, dtype=torch.float64), 1 / 1.2), sample)


def test_flip_is_an_involution_and_mirrors(sample: ClipSample) -> None:
    out = RandomFlip("y", p=1.0)(sample, np.random.default_rng(0))
    cy = sample.points[:, 1].mean()
    torch.testing.assert_close(out.points[:, 1], 2 * cy - sample.points[:, 1], atol=1e-12, rtol=0)
    torch.testing.assert_close(out.points[:, [0, 2]], sample.points[:, [0, 2]], atol=1e-15, rtol=0)
    torch.testing.assert_close(out.normals.norm(dim=-1), torch.ones(N, dtype=torch.float64), atol=1e-12, rtol=0)
    assert torch.equal(out.normals[:, 1], -sample.normals[:, 1])
    rn = out.robot_flow[..., LAY["normal"]]
    assert torch.equal(rn[..., 1], -sample.robot_flow[..., LAY["normal"]][..., 1])
    assert_same(mirror_sample(out, "y"), sample)
    kept = RandomFlip("y", p=0.0)(sample, np.random.default_rng(0))
    assert kept is not sample
    assert_same(kept, sample, atol=0)


def test_flip_probability() -> None:
    rng, flip = np.random.default_rng(3), RandomFlip(p=0.3)
    draws = [flip.p > rng.random() for _ in range(2000)]  # RandomFlip draws exactly one uniform
    rng2 = np.random.default_rng(3)
    assert 0.25 < np.mean(draws) < 0.35
    assert [rng2.random() < 0.3 for _ in range(2000)] == draws


def test_color_jitter(sample: ClipSample) -> None:
    out = ColorJitter(brightness=0.3, contrast=0.5, noise=0.1)(sample, np.random.default_rng(1))
    assert out.colors.min() >= 0 and out.colors.max() <= 1 and not torch.equal(out.colors, sample.colors)
    assert torch.equal(out.points, sample.points)
    shifted = ColorJitter(brightness=0.1, contrast=0.0, noise=0.0)(sample, np.random.default_rng(2))
    delta = shifted.colors - sample.colors  # inputs in [0.2, 0.8]: nothing clipped, one shift everywhere
    assert delta.abs().max() <= 0.1 and torch.allclose(delta, delta[0, 0].expand_as(delta), atol=1e-12)
    contrast = ColorJitter(brightness=0.0, contrast=0.2, noise=0.0)(sample, np.random.default_rng(2))
    g = sample.colors.mean()
    ratio = (contrast.colors - g) / (sample.colors - g)
    assert torch.allclose(ratio, ratio[0, 0].expand_as(ratio), atol=1e-9) and 0.8 <= ratio[0, 0] <= 1.2
    torch.testing.assert_close(contrast.colors.mean(), g, atol=1e-12, rtol=0)
    same = ColorJitter(0.0, 0.0, 0.0)(sample, np.random.default_rng(0))
    torch.testing.assert_close(same.colors, sample.colors, atol=1e-15, rtol=0)


def test_point_dropout_keeps_correspondences(sample: ClipSample) -> None:
    for seed in range(20):
        out = PointDropout(0.5)(sample, np.random.default_rng(seed))
        # find each kept point's original row by exact match (points are distinct)
        idx = torch.cdist(out.points, sample.points).argmin(1)
        assert torch.equal(out.points, sample.points[idx])
        assert bool((idx[1:] > idx[:-1]).all())  # order kept, no duplicates
        assert out.num_points >= N - math.floor(0.5 * N)
        for f in ("colors", "normals"):
            assert torch.equal(getattr(out, f), getattr(sample, f)[idx])
        assert torch.equal(out.target, sample.target[:, idx]) and torch.equal(out.valid, sample.valid[:, idx])
        assert torch.equal(out.robot_flow, sample.robot_flow)
    sizes = {PointDropout(0.5)(sample, np.random.default_rng(s)).num_points for s in range(20)}
    assert len(sizes) > 3
    assert PointDropout(0.0)(sample, np.random.default_rng(0)).num_points == N
    one = sample.replace(points=sample.points[:1], colors=sample.colors[:1], normals=sample.normals[:1],
                         target=sample.target[:, :1], valid=sample.valid[:, :1])
    assert PointDropout(0.99)(one, np.random.default_rng(0)).num_points == 1


def test_compose_deterministic_float32_and_input_untouched(sample: ClipSample) -> None:
    s32 = sample.replace(**{f: getattr(sample, f).float() for f in
                            ("points", "colors", "normals", "target", "robot_flow")})
    before = {f: getattr(s32, f).clone() for f in ("points", "colors", "normals", "target", "valid", "robot_flow")}
    aug = default_augmentation()
    a, b = aug(s32, np.random.default_rng(9)), aug(s32, np.random.default_rng(9))
    assert_same(a, b, atol=0)
    assert a.points.dtype == torch.float32 and a.robot_flow.dtype == torch.float32
    assert a.num_points < N or not torch.equal(a.points, s32.points)
    for f, v in before.items():
        assert torch.equal(getattr(s32, f), v), f
    # Compose = the transforms applied one after the other on the same generator
    rng = np.random.default_rng(9)
    manual = s32
    for t in aug.transforms:
        manual = t(manual, rng)
    assert_same(manual, a, atol=0)
    assert_same(Compose(())(s32, np.random.default_rng(0)), s32, atol=0)


def test_bad_input(sample: ClipSample) -> None:
    rng = np.random.default_rng(0)
    bad_configs = [(lambda: RandomScale((0.0, 1.1)), r"range\[0\]"),
                   (lambda: RandomScale((1.2, 1.1)), r"range\[1\]"),
                   (lambda: RandomScale(1.1), "range"), (lambda: RandomFlip(axis="w"), "axis"),
                   (lambda: RandomFlip(p=1.5), "p:"), (lambda: RandomYaw(-1.0), "max_angle_rad"),
                   (lambda: RandomYaw(float("nan")), "max_angle_rad"),
                   (lambda: PointDropout(1.0), "max_fraction"), (lambda: ColorJitter(noise=-0.1), "noise")]
    for make, match in bad_configs:
        with pytest.raises(ValueError, match=match):
            make()
    with pytest.raises(TypeError, match=r"transforms\[1\]"):
        Compose((RandomYaw(), 3))
    with pytest.raises(TypeError, match="rng: expected a numpy.random.Generator"):
        RandomYaw()(sample, 0)
    with pytest.raises(TypeError, match="sample: expected a ClipSample"):
        PointDropout()({"points": sample.points}, rng)
    with pytest.raises(ValueError, match="rotation: expected an orthogonal"):
        transform_sample(sample, 2 * torch.eye(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="scale"):
        transform_sample(sample, torch.eye(3, dtype=torch.float64), 0.0)
    with pytest.raises(ValueError, match="axis"):
        mirror_sample(sample, "q")
    empty = sample.replace(points=sample.points[:0], colors=sample.colors[:0], normals=sample.normals[:0],
                           target=sample.target[:, :0], valid=sample.valid[:, :0])
    with pytest.raises(EmptyCloudError, match="sample.points"):
        yaw_sample(empty, 0.1)
