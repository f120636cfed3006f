"""Lifting image features onto points: exact values on linear maps, occlusion, multi-view averaging,
agreement with an OpenCV-projection + hand-written bilinear reference loop, gradients, bad input."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from pointworld.geometry.camera import make_intrinsics
from pointworld.geometry.rotations import axis_angle_to_matrix
from pointworld.geometry.se3 import make_transform
from pointworld.model.lift import ImageFeatureLifter, lift_features

H, W = 12, 16
DT = torch.float64


def _K() -> torch.Tensor:
    return make_intrinsics(20.0, 22.0, 7.3, 5.6)


def _identity_view(B: int = 1, V: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """K, T_world_cam = identity, depth plane at z = 1 m, all (B, V, ...)."""
    K = _K().expand(B, V, 3, 3).clone()
    T = torch.eye(4, dtype=DT).expand(B, V, 4, 4).clone()
    depth = torch.ones(B, V, H, W, dtype=DT)
    return K, T, depth


def _point_at_pixel(u: float, v: float, z: float) -> torch.Tensor:
    """Camera-frame (= world here) point projecting to pixel (u, v) at depth z."""
    K = _K()
    return torch.tensor([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z], dtype=DT)


def _linear_map(h: int, w: int, coeffs: list[tuple[float, float, float]]) -> torch.Tensor:
    """(C, h, w) map whose channel c is a + b u + d v at each cell centre (u, v in image pixels)."""
    u = (torch.arange(w, dtype=DT) + 0.5) * W / w - 0.5
    v = (torch.arange(h, dtype=DT) + 0.5) * H / h - 0.5
    return torch.stack([a + b * u[None, :] + d * v[:, None] for a, b, d in coeffs])


COEFFS = [(1.0, 0.5, -0.25), (-2.0, 0.1, 0.3), (0.7, 0.0, 0.0)]


@pytest.mark.parametrize("h, w", [(H, W), (H // 2, W // 2), (H // 4, W // 4)])
def test_linear_map_is_sampled_exactly_at_the_projected_pixel(h: int, w: int) -> None:
    K, T, depth = _identity_view()
    # sub-pixel positions well inside the outermost cell centres (where bilinear is exact on linear maps)
    uv = [(7.3, 5.6), (4.25, 3.75), (10.6, 7.1), (8.0, 6.0)]
    points = torch.stack([_point_at_pixel(u, v, 1.0) for u, v in uv])[None]
    maps = _linear_map(h, w, COEFFS)[None, None]
    feats, visible = lift_features(maps, depth, K, T, points)
    expected = torch.tensor([[a + b * u + d * v for a, b, d in COEFFS] for u, v in uv], dtype=DT)
    assert visible.shape == (1, 4, 1) and bool(visible.all())
    torch.testing.assert_close(feats[0], expected, rtol=0, atol=1e-12)


def test_occluded_and_off_surface_points_are_excluded() -> None:
    K, T, depth = _identity_view()
    depth[0, 0, 6, 8] = 0.0          # invalid depth pixel
    depth[0, 0, 2, 3] = float("nan")  # invalid depth pixel
    points = torch.stack([
        _point_at_pixel(4.0, 4.0, 1.015),   # within 2 cm of the surface: visible
        _point_at_pixel(4.0, 4.0, 1.5),     # behind the surface: occluded
        _point_at_pixel(4.0, 4.0, 0.9),     # 10 cm in front of the measured surface: not visible
        _point_at_pixel(8.0, 6.0, 1.0),     # on a pixel with depth 0
        _point_at_pixel(3.0, 2.0, 1.0),     # on a NaN depth pixel
    ])[None]
    maps = torch.full((1, 1, 2, H, W), 3.0, dtype=DT)
    feats, visible = lift_features(maps, depth, K, T, points)
    assert visible[0, :, 0].tolist() == [True, False, False, False, False]
    assert feats[0, 0].tolist() == [3.0, 3.0]
    assert bool((feats[0, 1:] == 0).all())
    # a larger tolerance admits the point 10 cm in front, not the one 50 cm behind
    _, visible = lift_features(maps, depth, K, T, points, depth_tolerance_m=0.2)
    assert visible[0, :3, 0].tolist() == [True, False, True]


def test_points_outside_every_view_get_zeros() -> None:
    K, T, depth = _identity_view(V=2)
    points = torch.stack([
        torch.tensor([0.0, 0.0, -1.0], dtype=DT),          # behind both cameras
        _point_at_pixel(-0.6, 5.0, 1.0),                   # just left of the image edge
        _point_at_pixel(5.0, H - 0.5, 1.0),                # on the bottom edge (outside: half-open)
        _point_at_pixel(-0.49, -0.49, 1.0),                # next to the top-left image corner (inside)
    ])[None]
    maps = torch.randn(1, 2, 3, H, W, dtype=DT, generator=torch.Generator().manual_seed(0))
    feats, visible = lift_features(maps, depth, K, T, points)
    assert visible[0, :, 0].tolist() == [False, False, False, True]
    assert bool((feats[0, :3] == 0).all())
    # the corner point samples the border cell: the mean over the two identical-pose views
    torch.testing.assert_close(feats[0, 3], maps[0, :, :, 0, 0].mean(0), rtol=0, atol=1e-12)


def test_image_edges_are_half_open() -> None:
    """The image spans [-0.5, W - 0.5) x [-0.5, H - 0.5) (dyadic numbers: the projections are exact)."""
    K = make_intrinsics(16.0, 16.0, 8.0, 4.0)[None, None]
    T = torch.eye(4, dtype=DT)[None, None]
    depth = torch.ones(1, 1, H, W, dtype=DT)
    uv = [(-0.5, 3.0), (W - 0.5, 3.0), (5.0, -0.5), (5.0, H - 0.5), (W - 0.5 - 2**-20, H - 0.5 - 2**-20)]
    points = torch.tensor([[(u - 8.0) / 16.0, (v - 4.0) / 16.0, 1.0] for u, v in uv], dtype=DT)[None]
    maps = torch.arange(H * W, dtype=DT).reshape(1, 1, 1, H, W)
    feats, visible = lift_features(maps, depth, K, T, points)
    assert visible[0, :, 0].tolist() == [True, False, True, False, True]
    # border padding: between the outermost pixel centres and the image edge the edge pixel's value
    expected = torch.tensor([3.0 * W, 0.0, 5.0, 0.0, H * W - 1.0], dtype=DT)
    torch.testing.assert_close(feats[0, :, 0], expected, rtol=0, atol=1e-12)


def test_average_over_the_views_that_see_the_point() -> None:
    K, T, depth = _identity_view(V=2)
    # view 1: the camera 0.5 m to the right (world +x), looking the same way; its depth plane at z = 1
    T[0, 1, 0, 3] = 0.5
    points = torch.stack([
        _point_at_pixel(12.0, 6.0, 1.0),  # right part of view 0 -> also inside view 1
        _point_at_pixel(1.0, 6.0, 1.0),   # left part of view 0 -> left of view 1's image
    ])[None]
    maps = torch.stack([torch.full((2, H, W), 1.0, dtype=DT), torch.full((2, H, W), 5.0, dtype=DT)])[None]
    maps[0, 1, 1] = 7.0
    feats, visible = lift_features(maps, depth, K, T, points)
    assert visible[0].tolist() == [[True, True], [True, False]]
    torch.testing.assert_close(feats[0], torch.tensor([[3.0, 4.0], [1.0, 1.0]], dtype=DT), rtol=0, atol=0)


def _reference_lift(maps: np.ndarray, depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray,
                    points: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-point loop: cv2.projectPoints, nearest-pixel depth test, hand-written bilinear interpolation."""
    B, V, C, h, w = maps.shape
    N = points.shape[1]
    feats, visible = np.zeros((B, N, C)), np.zeros((B, N, V), dtype=bool)
    for b in range(B):
        for v in range(V):
            T_cam_world = np.linalg.inv(T_world_cam[b, v])
            rvec = cv2.Rodrigues(T_cam_world[:3, :3])[0]
            uv = cv2.projectPoints(points[b], rvec, T_cam_world[:3, 3], K[b, v], None)[0][:, 0]
            z = points[b] @ T_cam_world[2, :3] + T_cam_world[2, 3]
            for n in range(N):
                u, r = uv[n]
                if z[n] <= 0 or not (-0.5 <= u < W - 0.5 and -0.5 <= r < H - 0.5):
                    continue
                d = depth[b, v, math.floor(r + 0.5), math.floor(u + 0.5)]
                if not (np.isfinite(d) and d > 0 and abs(z[n] - d) <= tol):
                    continue
                visible[b, n, v] = True
                x = min(max((u + 0.5) * w / W - 0.5, 0.0), w - 1.0)  # cell coordinates, border-clamped
                y = min(max((r + 0.5) * h / H - 0.5, 0.0), h - 1.0)
                x0, y0 = min(int(x), w - 2), min(int(y), h - 2)
                fx, fy = x - x0, y - y0
                m = maps[b, v]
                feats[b, n] += ((1 - fx) * (1 - fy) * m[:, y0, x0] + fx * (1 - fy) * m[:, y0, x0 + 1]
                                + (1 - fx) * fy * m[:, y0 + 1, x0] + fx * fy * m[:, y0 + 1, x0 + 1])
    count = np.maximum(visible.sum(-1, keepdims=True), 1)
    return feats / count, visible


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_opencv_projection_and_bilinear_reference(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    B, V, C, N, h, w = 2, 3, 4, 200, 5, 7
    rot = axis_angle_to_matrix(0.3 * torch.randn(B, V, 3, dtype=DT, generator=gen))
    T = make_transform(rot, 0.2 * torch.randn(B, V, 3, dtype=DT, generator=gen))
    K = _K().expand(B, V, 3, 3).clone()
    # points in front of each view's camera; depth: a random surface, each point on/behind/in front of it
    points = torch.rand(B, N, 3, dtype=DT, generator=gen) * torch.tensor([2.0, 2.0, 1.0], dtype=DT)
    points = points + torch.tensor([-1.0, -1.0, 0.8], dtype=DT)
    depth = 0.8 + torch.rand(B, V, H, W, dtype=DT, generator=gen)
    depth[torch.rand(B, V, H, W, generator=gen) < 0.1] = 0.0
    maps = torch.randn(B, V, C, h, w, dtype=DT, generator=gen)
    feats, visible = lift_features(maps, depth, K, T, points, depth_tolerance_m=0.3)
    ref_f, ref_v = _reference_lift(maps.numpy(), depth.numpy(), K.numpy(), T.numpy(), points.numpy(), 0.3)
    assert 0.05 < ref_v.mean() < 0.7  # the case exercises both outcomes
    np.testing.assert_array_equal(visible.numpy(), ref_v)
    np.testing.assert_allclose(feats.numpy(), ref_f, rtol=0, atol=1e-10)


def test_float32_inputs_and_float64_points() -> None:
    K, T, depth = _identity_view()
    points = _point_at_pixel(4.25, 3.75, 1.0)[None, None]
    maps = _linear_map(H, W, COEFFS)[None, None].float()
    feats, visible = lift_features(maps, depth.float(), K.float(), T.float(), points)
    assert feats.dtype == torch.float32 and bool(visible.all())
    expected = torch.tensor([a + b * 4.25 + d * 3.75 for a, b, d in COEFFS])
    torch.testing.assert_close(feats[0, 0], expected, rtol=0, atol=1e-5)


def test_lifter_gradients_reach_every_encoder_parameter() -> None:
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 5, 1))
    lifter = ImageFeatureLifter(encoder)
    B, V, N = 2, 2, 30
    K, T, depth = _identity_view(B, V)
    rgb = torch.rand(B, V, 3, H, W)
    uv = torch.rand(B, N, 2) * torch.tensor([W - 1.0, H - 1.0])
    points = torch.stack([_point_at_pixel(float(u), float(v), 1.0) for u, v in uv.reshape(-1, 2)])
    points = points.reshape(B, N, 3).float()
    feats, visible = lifter(rgb, depth.float(), K.float(), T.float(), points)
    assert feats.shape == (B, N, 5) and visible.shape == (B, N, V) and bool(visible.all())
    feats.square().sum().backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_bad_inputs_are_rejected() -> None:
    K, T, depth = _identity_view()
    maps = torch.zeros(1, 1, 2, H, W, dtype=DT)
    points = torch.zeros(1, 3, 3, dtype=DT)
    with pytest.raises(ValueError, match="feature_maps"):
        lift_features(maps[:, 0], depth, K, T, points)
    with pytest.raises(ValueError, match="depth"):
        lift_features(maps, depth[:, :, None], K, T, points)
    with pytest.raises(ValueError, match="K"):
        lift_features(maps, depth, K[:, :, :2], T, points)
    with pytest.raises(ValueError, match="K"):
        lift_features(maps, depth, -K, T, points)
    bad_T = T.clone()
    bad_T[..., 0, 0] = 2.0
    with pytest.raises(ValueError, match="T_world_cam"):
        lift_features(maps, depth, K, bad_T, points)
    with pytest.raises(ValueError, match="points"):
        lift_features(maps, depth, K, T, torch.full((1, 3, 3), float("nan"), dtype=DT))
    with pytest.raises(ValueError, match=r"feature_maps: expected shape \(2,"):  # B from points
        lift_features(maps, depth, K, T, torch.zeros(2, 3, 3, dtype=DT))
    with pytest.raises(TypeError, match="points"):
        lift_features(maps, depth, K, T, torch.zeros(1, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="depth_tolerance_m"):
        lift_features(maps, depth, K, T, points, depth_tolerance_m=0.0)
    lifter = ImageFeatureLifter(nn.Conv2d(3, 2, 1).double())
    rgb = torch.rand(1, 1, 3, H, W, dtype=DT)
    with pytest.raises(ValueError, match="rgb"):
        lifter(rgb * 255.0, depth, K, T, points)
    with pytest.raises(TypeError, match="rgb"):
        lifter((rgb * 255).to(torch.uint8), depth, K, T, points)
    with pytest.raises(ValueError, match="depth"):
        lifter(rgb, depth[..., :-1], K, T, points)
    with pytest.raises(ValueError, match="encoder"):
        ImageFeatureLifter(nn.Flatten().double())(rgb, depth, K, T, points)
    with pytest.raises(TypeError, match="encoder"):
        ImageFeatureLifter(lambda x: x)  # type: ignore[arg-type]
