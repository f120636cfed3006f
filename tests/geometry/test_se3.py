"""SE(3) transforms against a naive numpy loop, torch.linalg.inv, pybullet, trimesh and round trips."""

from __future__ import annotations

import math

import numpy as np
import pybullet
import pytest
import torch
import trimesh.transformations as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from pointworld.geometry.rotations import (axis_angle_to_matrix, quaternion_to_matrix,
                                           quaternion_wxyz_to_xyzw, quaternion_xyzw_to_wxyz)
from pointworld.geometry.se3 import (check_rigid_transform, compose_transforms, invert_transform,
                                     make_transform, pose_from_transform, rigidity_error,
                                     transform_directions, transform_from_pose, transform_points)

F64 = torch.float64
EYE4 = torch.eye(4, dtype=F64)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_transforms(shape: tuple[int, ...], seed: int, dtype: torch.dtype = F64) -> torch.Tensor:
    """(*shape, 4, 4) rigid transforms with rotations up to pi and translations up to ~2 m."""
    g = _gen(seed)
    q = torch.randn(*shape, 4, generator=g, dtype=F64)
    t = torch.randn(*shape, 3, generator=g, dtype=F64)
    return transform_from_pose(t, q).to(dtype)


def _naive_transform_points(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Reference: T (4, 4), p (N, 3); one homogeneous product per point in a Python loop."""
    return np.stack([(T @ np.append(pi, 1.0))[:3] for pi in p])


# ---------------------------------------------------------------- construction
def test_make_transform_layout_and_broadcasting():
    R = axis_angle_to_matrix(torch.randn(2, 1, 3, generator=_gen(0), dtype=F64))
    t = torch.randn(1, 5, 3, generator=_gen(1), dtype=F64)
    T = make_transform(R, t)
    assert T.shape == (2, 5, 4, 4) and T.dtype == F64
    assert torch.equal(T[..., :3, :3], R.expand(2, 5, 3, 3))
    assert torch.equal(T[..., :3, 3], t.expand(2, 5, 3))
    assert torch.equal(T[..., 3, :], torch.tensor([0, 0, 0, 1.0], dtype=F64).expand(2, 5, 4))
    assert make_transform(torch.eye(3), torch.zeros(7, 3)).shape == (7, 4, 4)


def test_transform_from_pose_matches_trimesh_and_round_trips():
    q = torch.randn(32, 4, generator=_gen(2), dtype=F64)
    pos = torch.randn(32, 3, generator=_gen(3), dtype=F64)
    T = transform_from_pose(pos, q)
    ref = np.stack([tf.translation_matrix(p) @ tf.quaternion_matrix(qi)
                    for p, qi in zip(pos.numpy(), q.numpy())])
    np.testing.assert_allclose(T.numpy(), ref, atol=1e-13)
    pos_back, q_back = pose_from_transform(T)
    assert torch.equal(pos_back, pos)
    q_unit = q / q.norm(dim=-1, keepdim=True)
    q_unit = torch.where(q_unit[:, :1] < 0, -q_unit, q_unit)
    torch.testing.assert_close(q_back, q_unit, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- inverse and composition
def test_invert_transform_matches_linalg_inv_and_round_trips():
    T = _random_transforms((2, 3, 5), seed=4)
    T_inv = invert_transform(T)
    torch.testing.assert_close(T_inv, torch.linalg.inv(T), atol=1e-13, rtol=0)
    torch.testing.assert_close(invert_transform(T_inv), T, atol=1e-12, rtol=0)
    torch.testing.assert_close(compose_transforms(T, T_inv), EYE4.expand_as(T), atol=1e-12, rtol=0)
    torch.testing.assert_close(compose_transforms(T_inv, T), EYE4.expand_as(T), atol=1e-12, rtol=0)


def test_compose_and_invert_match_pybullet():
    T_ab, T_bc = _random_transforms((16,), seed=5), _random_transforms((16,), seed=6)
    T_ac = compose_transforms(T_ab, T_bc)
    for i in range(16):
        (pa, qa), (pb, qb) = pose_from_transform(T_ab[i]), pose_from_transform(T_bc[i])
        pos, orn = pybullet.multiplyTransforms(pa.tolist(), quaternion_wxyz_to_xyzw(qa).tolist(),
                                               pb.tolist(), quaternion_wxyz_to_xyzw(qb).tolist())
        ref = transform_from_pose(torch.tensor(pos, dtype=F64),
                                  quaternion_xyzw_to_wxyz(torch.tensor(orn, dtype=F64)))
        torch.testing.assert_close(T_ac[i], ref, atol=2e-6, rtol=0)  # pybullet returns float32
        pos, orn = pybullet.invertTransform(pa.tolist(), quaternion_wxyz_to_xyzw(qa).tolist())
        ref = transform_from_pose(torch.tensor(pos, dtype=F64),
                                  quaternion_xyzw_to_wxyz(torch.tensor(orn, dtype=F64)))
        torch.testing.assert_close(invert_transform(T_ab[i]), ref, atol=2e-6, rtol=0)


def test_compose_broadcasts_and_is_associative():
    A = _random_transforms((4, 1), seed=7)
    B = _random_transforms((1, 6), seed=8)
    C = _random_transforms((6,), seed=9)
    AB = compose_transforms(A, B)
    assert AB.shape == (4, 6, 4, 4)
    torch.testing.assert_close(compose_transforms(AB, C), compose_transforms(A, compose_transforms(B, C)),
                               atol=1e-12, rtol=0)
    p = torch.randn(6, 10, 3, generator=_gen(10), dtype=F64)
    torch.testing.assert_close(transform_points(AB, p), transform_points(A, transform_points(B, p)),
                               atol=1e-12, rtol=0)


# ---------------------------------------------------------------- points and directions
@pytest.mark.parametrize("t_shape,p_shape,out_shape", [
    ((), (7, 3), (7, 3)),                 # one transform, one cloud
    ((3,), (3, 7, 3), (3, 7, 3)),         # per-view transforms (V, 4, 4), clouds (V, N, 3)
    ((), (2, 7, 3), (2, 7, 3)),           # one transform for a batch of clouds
    ((2, 1), (4, 7, 3), (2, 4, 7, 3)),    # broadcast (B, 1) x (K,)
    ((2, 3), (3, 7, 3), (2, 3, 7, 3)),
])
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (F64, 1e-13)])
def test_transform_points_matches_naive_loop(t_shape, p_shape, out_shape, dtype, atol):
    T = _random_transforms(t_shape, seed=11, dtype=dtype)
    p = (torch.randn(*p_shape, generator=_gen(12), dtype=F64)).to(dtype)
    out = transform_points(T, p)
    assert out.shape == out_shape and out.dtype == dtype
    lead = out_shape[:-2]
    T_b = T.double().expand(*lead, 4, 4).reshape(-1, 4, 4).numpy()
    p_b = p.double().expand(*lead, 7, 3).reshape(-1, 7, 3).numpy()
    ref = np.stack([_naive_transform_points(Ti, pi) for Ti, pi in zip(T_b, p_b)]).reshape(out_shape)
    np.testing.assert_allclose(out.double().numpy(), ref, atol=atol, rtol=0)
    dirs = transform_directions(T, p)
    ref_dirs = ref - T.double().expand(*lead, 4, 4)[..., None, :3, 3].numpy()
    np.testing.assert_allclose(dirs.double().numpy(), ref_dirs, atol=atol, rtol=0)


def test_transform_points_round_trip_float64():
    T = _random_transforms((2, 3, 5), seed=13)
    p = torch.randn(2, 3, 5, 50, 3, generator=_gen(14), dtype=F64) * 3
    back = transform_points(invert_transform(T), transform_points(T, p))
    torch.testing.assert_close(back, p, atol=1e-12, rtol=0)


def test_transform_directions_keeps_unit_normals():
    T = _random_transforms((4,), seed=15)
    n = torch.randn(4, 20, 3, generator=_gen(16), dtype=F64)
    n = n / n.norm(dim=-1, keepdim=True)
    out = transform_directions(T, n)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(4, 20, dtype=F64), atol=1e-14, rtol=0)
    torch.testing.assert_close(out, n @ T[:, :3, :3].transpose(-1, -2), atol=0, rtol=0)


def test_transform_points_gradients():
    T = _random_transforms((2,), seed=17).requires_grad_(True)
    p = torch.randn(2, 4, 3, generator=_gen(18), dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(transform_points, (T, p))
    assert torch.autograd.gradcheck(invert_transform, (T,))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=3, max_size=3),
       st.lists(st.floats(-1, 1, allow_nan=False), min_size=4, max_size=4).filter(
           lambda q: sum(x * x for x in q) > 1e-3),
       st.integers(0, 2**31 - 1))
def test_property_point_round_trip(position, quaternion, seed):
    T = transform_from_pose(torch.tensor(position, dtype=F64), torch.tensor(quaternion, dtype=F64))
    assert float(rigidity_error(T)) < 1e-14
    p = torch.randn(8, 3, generator=_gen(seed), dtype=F64) * 5
    back = transform_points(invert_transform(T), transform_points(T, p))
    torch.testing.assert_close(back, p, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- rigidity
def test_rigidity_error_values():
    T = _random_transforms((3,), seed=19)
    assert float(rigidity_error(T).max()) < 1e-14
    scaled = T.clone()
    scaled[:, :3, :3] *= 1.01  # |det - 1| = 1.01^3 - 1 dominates |R^T R - I| = 1.01^2 - 1
    torch.testing.assert_close(rigidity_error(scaled), torch.full((3,), 1.01**3 - 1, dtype=F64),
                               atol=1e-12, rtol=0)
    mirrored = T.clone()
    mirrored[:, :3, 0] *= -1
    torch.testing.assert_close(rigidity_error(mirrored), torch.full((3,), 2.0, dtype=F64), atol=1e-12,
                               rtol=0)
    bottom = T.clone()
    bottom[:, 3, 1] = 0.5
    torch.testing.assert_close(rigidity_error(bottom), torch.full((3,), 0.5, dtype=F64), atol=1e-14,
                               rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_check_rigid_transform_accepts_rigid(dtype):
    T = _random_transforms((2, 3), seed=20, dtype=dtype)
    assert check_rigid_transform("T_world_cam", T) is T
    assert check_rigid_transform("T_world_cam", torch.zeros(0, 4, 4)).shape == (0, 4, 4)
    big = compose_transforms(T, compose_transforms(T, T))  # float32 drift stays far below 1e-4
    check_rigid_transform("T_world_cam", big)


def test_check_rigid_transform_rejects_bad_input():
    T = _random_transforms((5,), seed=21)
    with pytest.raises(TypeError, match="T_world_cam: expected a floating-point tensor"):
        check_rigid_transform("T_world_cam", torch.eye(4, dtype=torch.int64))
    with pytest.raises(TypeError, match="T_world_cam: expected a torch.Tensor"):
        check_rigid_transform("T_world_cam", np.eye(4))
    with pytest.raises(ValueError, match=r"T_world_cam: expected shape \(\.\.\., 4, 4\)"):
        check_rigid_transform("T_world_cam", T[:, :3, :])
    nan = T.clone()
    nan[2, 0, 3] = float("nan")
    with pytest.raises(ValueError, match="T_world_cam: expected finite values, got 1 NaN/inf"):
        check_rigid_transform("T_world_cam", nan)
    scaled = T.clone()
    scaled[3, :3, :3] *= 1.01
    msg = r"T_world_cam: expected rigid .* error 0\.0303 at batch index \(3,\)"
    with pytest.raises(ValueError, match=msg):
        check_rigid_transform("T_world_cam", scaled)
    check_rigid_transform("T_world_cam", scaled, atol=0.04)  # atol is respected
    mirrored = T.clone()
    mirrored[0, :3, 2] *= -1
    with pytest.raises(ValueError, match="T_world_cam"):
        check_rigid_transform("T_world_cam", mirrored)


def test_other_functions_name_bad_arguments():
    T = _random_transforms((2,), seed=22)
    with pytest.raises(ValueError, match="points_b: expected shape"):
        transform_points(T, torch.zeros(2, 5, 4, dtype=F64))
    with pytest.raises(TypeError, match="points_b: expected dtype torch.float64"):
        transform_points(T, torch.zeros(2, 5, 3))
    with pytest.raises(ValueError, match="T_a_b, points_b: leading dims"):
        transform_points(T, torch.zeros(3, 5, 3, dtype=F64))
    with pytest.raises(ValueError, match="dirs_b"):
        transform_directions(T, torch.zeros(5, dtype=F64))
    with pytest.raises(TypeError, match="T_a_b"):
        invert_transform(torch.eye(4, dtype=torch.int32))
    with pytest.raises(ValueError, match="T_b_c"):
        compose_transforms(T, torch.eye(3, dtype=F64))
    with pytest.raises(ValueError, match="rotation, translation: leading dims"):
        make_transform(torch.eye(3).expand(2, 3, 3), torch.zeros(3, 3))
    with pytest.raises(TypeError, match="translation"):
        make_transform(torch.eye(3), torch.zeros(3, dtype=F64))
    with pytest.raises(ValueError, match="quaternion_wxyz: expected quaternions with finite non-zero"):
        transform_from_pose(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="position: expected shape"):
        transform_from_pose(torch.zeros(2), torch.tensor([1.0, 0, 0, 0]))


def test_pose_from_transform_orientation_matches_rotation():
    T = _random_transforms((3, 4), seed=23)
    _, q = pose_from_transform(T)
    torch.testing.assert_close(quaternion_to_matrix(q), T[..., :3, :3], atol=1e-13, rtol=0)
    assert bool((q[..., 0] >= 0).all())
    assert math.isclose(float(q.norm(dim=-1).max()), 1.0, abs_tol=1e-14)
