"""Rotation conversions against trimesh, pybullet, matrix_exp, finite differences and round trips."""

from __future__ import annotations

import math

import numpy as np
import pybullet
import pytest
import torch
import trimesh.transformations as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from pointworld.geometry.rotations import (axis_angle_to_matrix, axis_angle_to_quaternion,
                                           matrix_to_axis_angle, matrix_to_quaternion,
                                           matrix_to_rpy, normalize_quaternion,
                                           quaternion_conjugate, quaternion_multiply,
                                           quaternion_to_axis_angle, quaternion_to_matrix,
                                           quaternion_wxyz_to_xyzw, quaternion_xyzw_to_wxyz,
                                           rotation_angle, rpy_to_matrix)

F64 = torch.float64
EYE = torch.eye(3, dtype=F64)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _random_rotvecs(n: int, lo: float, hi: float, seed: int = 0) -> torch.Tensor:
    """(n, 3) float64 rotation vectors with angles uniform in [lo, hi]."""
    g = _gen(seed)
    axis = torch.randn(n, 3, generator=g, dtype=F64)
    axis = axis / axis.norm(dim=-1, keepdim=True)
    return axis * (lo + (hi - lo) * torch.rand(n, 1, generator=g, dtype=F64))


def _skew_matrix_exp(v: torch.Tensor) -> torch.Tensor:
    """Independent reference: R = expm(skew(v)) via torch.linalg.matrix_exp."""
    k = torch.zeros(*v.shape[:-1], 3, 3, dtype=v.dtype)
    k[..., 0, 1], k[..., 0, 2], k[..., 1, 2] = -v[..., 2], v[..., 1], -v[..., 0]
    return torch.linalg.matrix_exp(k - k.transpose(-1, -2))


def _special_rotations() -> torch.Tensor:
    """Rotations that stress the branch selection: identity, half turns, near half turns."""
    axes = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, -1, 1], [0, 1, -1]], dtype=F64)
    axes = axes / axes.norm(dim=-1, keepdim=True)
    angles = torch.tensor([0.0, 1e-9, math.pi / 2, math.pi - 1e-7, math.pi], dtype=F64)
    return axis_angle_to_matrix((axes[:, None, :] * angles[None, :, None]).reshape(-1, 3))


def _sign_align(q: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    sign = torch.where((q * ref).sum(-1, keepdim=True) < 0, -1.0, 1.0).to(q.dtype)
    return q * sign


# ---------------------------------------------------------------- quaternion <-> matrix
def test_quaternion_to_matrix_matches_trimesh_and_pybullet():
    q = torch.randn(64, 4, generator=_gen(1), dtype=F64) * 3  # unnormalized on purpose
    R = quaternion_to_matrix(q)
    ref_tm = np.stack([tf.quaternion_matrix(qi)[:3, :3] for qi in q.numpy()])
    np.testing.assert_allclose(R.numpy(), ref_tm, atol=1e-13)
    xyzw = quaternion_wxyz_to_xyzw(q / q.norm(dim=-1, keepdim=True)).numpy()
    ref_pb = np.stack([np.reshape(pybullet.getMatrixFromQuaternion(qi.tolist()), (3, 3)) for qi in xyzw])
    np.testing.assert_allclose(R.numpy(), ref_pb, atol=1e-12)


def test_matrix_to_quaternion_matches_trimesh_up_to_sign():
    R = torch.cat([_special_rotations(), axis_angle_to_matrix(_random_rotvecs(64, 0, math.pi, 2))])
    q = matrix_to_quaternion(R)
    ref = torch.from_numpy(np.stack([tf.quaternion_from_matrix(Ri) for Ri in R.numpy()]))
    torch.testing.assert_close(q, _sign_align(ref, q), atol=1e-12, rtol=0)
    assert bool((q[:, 0] >= 0).all())
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(len(q), dtype=F64), atol=1e-14, rtol=0)


def test_quaternion_matrix_round_trip_float64():
    q = torch.randn(200, 4, generator=_gen(3), dtype=F64)
    q = torch.cat([q, torch.eye(4, dtype=F64), -torch.eye(4, dtype=F64)])  # incl. w = 0 half turns
    q_unit = q / q.norm(dim=-1, keepdim=True)
    back = matrix_to_quaternion(quaternion_to_matrix(q))
    torch.testing.assert_close(back, _sign_align(q_unit, back), atol=1e-12, rtol=0)
    R = _special_rotations()
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(R)), R, atol=1e-12, rtol=0)


def test_matrix_to_quaternion_gradient_matches_finite_differences():
    R = axis_angle_to_matrix(_random_rotvecs(4, 0.1, 3.0, 4)).requires_grad_(True)
    assert torch.autograd.gradcheck(matrix_to_quaternion, (R,))


def test_matrix_to_quaternion_gradient_is_finite_at_identity_and_half_turns():
    # At the identity 4x^2 = 4y^2 = 4z^2 = 0 exactly: the unselected branches must not poison the
    # gradient. Expected: dq_xyz/dR is the vee map / 4, dq_w/dR = 0 (the normalization removes it).
    jac = torch.autograd.functional.jacobian(matrix_to_quaternion, EYE.clone())  # (4, 3, 3)
    expected = torch.zeros(4, 3, 3, dtype=F64)
    for i, (j, k) in enumerate([(2, 1), (0, 2), (1, 0)]):
        expected[i + 1, j, k], expected[i + 1, k, j] = 0.25, -0.25
    torch.testing.assert_close(jac, expected, atol=1e-15, rtol=0)
    half_turns = axis_angle_to_matrix(torch.eye(3, dtype=F64) * math.pi)
    assert bool(torch.isfinite(torch.autograd.functional.jacobian(matrix_to_quaternion, half_turns)).all())


# ---------------------------------------------------------------- axis-angle
def test_axis_angle_to_matrix_matches_trimesh_and_matrix_exp():
    v = torch.cat([_random_rotvecs(64, 0, 2 * math.pi, 5), _random_rotvecs(8, 0, 1e-3, 6)])
    R = axis_angle_to_matrix(v)
    torch.testing.assert_close(R, _skew_matrix_exp(v), atol=1e-13, rtol=0)
    angle = v.norm(dim=-1).numpy()
    ref = np.stack([tf.rotation_matrix(a, vi / a)[:3, :3] for a, vi in zip(angle, v.numpy())])
    np.testing.assert_allclose(R.numpy(), ref, atol=1e-13)


@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-8, 1e-5, 1e-3, 1e-2 * (1 - 1e-9), 1e-2 * (1 + 1e-9),
                                   0.5, 2.0, math.pi - 1e-3, math.pi - 1e-6, math.pi - 1e-9])
def test_axis_angle_round_trip_float64(angle: float):
    v = _random_rotvecs(16, 0, 1, 7)
    v = v / v.norm(dim=-1, keepdim=True) * angle
    R = axis_angle_to_matrix(v)
    torch.testing.assert_close(R, _skew_matrix_exp(v), atol=1e-14, rtol=0)
    torch.testing.assert_close(matrix_to_axis_angle(R), v, atol=1e-12, rtol=0)
    q = axis_angle_to_quaternion(v)
    torch.testing.assert_close(quaternion_to_axis_angle(q), v, atol=1e-12, rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(q), R, atol=1e-14, rtol=0)


def test_axis_angle_at_exactly_pi_returns_either_axis_sign():
    v = _random_rotvecs(16, math.pi, math.pi, 8)
    back = matrix_to_axis_angle(axis_angle_to_matrix(v))
    err = torch.minimum((back - v).abs().amax(-1), (back + v).abs().amax(-1))
    assert float(err.max()) < 1e-12


def test_axis_angle_to_quaternion_matches_trimesh():
    v = _random_rotvecs(32, 0, math.pi, 9)
    angle = v.norm(dim=-1).numpy()
    ref = np.stack([tf.quaternion_about_axis(a, vi / a) for a, vi in zip(angle, v.numpy())])
    np.testing.assert_allclose(axis_angle_to_quaternion(v).numpy(), ref, atol=1e-14)


def test_quaternion_to_axis_angle_is_sign_invariant():
    q = torch.randn(32, 4, generator=_gen(10), dtype=F64)
    torch.testing.assert_close(quaternion_to_axis_angle(q), quaternion_to_axis_angle(-q), atol=1e-14,
                               rtol=0)
    assert float(quaternion_to_axis_angle(q).norm(dim=-1).max()) <= math.pi + 1e-12


@pytest.mark.parametrize("scale", [0.0, 1e-9, 1e-4, 1e-2, 0.3])
def test_gradients_near_zero_match_finite_differences(scale: float):
    v = (_random_rotvecs(3, 1, 1, 11) * scale).requires_grad_(True)
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (v,), eps=1e-6, atol=1e-8)
    assert torch.autograd.gradcheck(axis_angle_to_quaternion, (v,), eps=1e-6, atol=1e-8)


def test_axis_angle_to_matrix_gradient_at_zero_is_the_generator():
    v = torch.zeros(3, dtype=F64, requires_grad=True)
    jac = torch.autograd.functional.jacobian(axis_angle_to_matrix, v)  # (3, 3, 3): dR_ij / dv_k
    for k in range(3):
        e = torch.zeros(3, dtype=F64)
        e[k] = 1
        torch.testing.assert_close(jac[..., k], torch.linalg.cross(e.expand(3, 3), EYE, dim=-1).T,
                                   atol=0, rtol=0)


# ---------------------------------------------------------------- quaternion algebra
def test_quaternion_multiply_matches_trimesh_and_matrix_product():
    q1 = torch.randn(32, 4, generator=_gen(12), dtype=F64)
    q2 = torch.randn(32, 4, generator=_gen(13), dtype=F64)
    prod = quaternion_multiply(q1, q2)
    ref = np.stack([tf.quaternion_multiply(a, b) for a, b in zip(q1.numpy(), q2.numpy())])
    np.testing.assert_allclose(prod.numpy(), ref, atol=1e-13)
    torch.testing.assert_close(quaternion_to_matrix(prod),
                               quaternion_to_matrix(q1) @ quaternion_to_matrix(q2), atol=1e-13, rtol=0)
    # broadcasting: (4, 1, 4) x (1, 5, 4)
    assert quaternion_multiply(q1[:4, None], q2[None, :5]).shape == (4, 5, 4)


def test_quaternion_conjugate_inverts_rotation():
    q = torch.randn(16, 4, generator=_gen(14), dtype=F64)
    qq = quaternion_multiply(q, quaternion_conjugate(q))
    expected = torch.zeros_like(q)
    expected[:, 0] = (q * q).sum(-1)
    torch.testing.assert_close(qq, expected, atol=1e-14, rtol=0)
    torch.testing.assert_close(quaternion_to_matrix(quaternion_conjugate(q)),
                               quaternion_to_matrix(q).transpose(-1, -2), atol=1e-14, rtol=0)


def test_xyzw_wxyz_reorder():
    q = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    wxyz = quaternion_xyzw_to_wxyz(q)
    assert wxyz[0, 0].tolist() == [3.0, 0.0, 1.0, 2.0]
    assert torch.equal(quaternion_wxyz_to_xyzw(wxyz), q)


def test_normalize_quaternion():
    q = torch.tensor([[0.0, 3.0, 0.0, 4.0]], dtype=F64)
    torch.testing.assert_close(normalize_quaternion(q), q / 5, atol=0, rtol=0)


# ---------------------------------------------------------------- rpy
def test_rpy_matches_trimesh_sxyz_and_pybullet():
    rpy = (torch.rand(64, 3, generator=_gen(15), dtype=F64) * 2 - 1) * math.pi
    R = rpy_to_matrix(rpy)
    ref = np.stack([tf.euler_matrix(r, p, y, "sxyz")[:3, :3] for r, p, y in rpy.numpy()])
    np.testing.assert_allclose(R.numpy(), ref, atol=1e-14)
    xyzw = torch.tensor([pybullet.getQuaternionFromEuler(a.tolist()) for a in rpy], dtype=F64)
    torch.testing.assert_close(quaternion_to_matrix(quaternion_xyzw_to_wxyz(xyzw)), R, atol=1e-12, rtol=0)


def test_rpy_round_trip_including_gimbal_lock():
    rpy = (torch.rand(64, 3, generator=_gen(16), dtype=F64) * 2 - 1) * torch.tensor([math.pi, 1.5, math.pi],
                                                                                    dtype=F64)
    torch.testing.assert_close(matrix_to_rpy(rpy_to_matrix(rpy)), rpy, atol=1e-12, rtol=0)
    locked = torch.tensor([[0.3, math.pi / 2, -0.4], [1.0, -math.pi / 2, 2.0]], dtype=F64)
    R = rpy_to_matrix(locked)
    back = matrix_to_rpy(R)
    assert torch.equal(back[:, 0], torch.zeros(2, dtype=F64))
    torch.testing.assert_close(rpy_to_matrix(back), R, atol=1e-12, rtol=0)


@pytest.mark.parametrize("offset", [1e-2, 1e-3, 9e-4, 1e-4])
def test_rpy_round_trip_near_gimbal_lock_in_float32(offset: float):
    rpy = torch.tensor([[0.3, math.pi / 2 - offset, -0.4], [1.0, -math.pi / 2 + offset, 2.0]])
    R = rpy_to_matrix(rpy)
    torch.testing.assert_close(rpy_to_matrix(matrix_to_rpy(R)), R, atol=2e-5, rtol=0)


# ---------------------------------------------------------------- rotation_angle
@pytest.mark.parametrize("angle", [0.0, 1e-12, 1e-9, 1e-6, 0.7, math.pi - 1e-7, math.pi])
def test_rotation_angle_is_accurate_near_zero_and_pi(angle: float):
    Ra = axis_angle_to_matrix(_random_rotvecs(16, 0, math.pi, 17))
    delta = axis_angle_to_matrix(_random_rotvecs(16, angle, angle, 18))
    got = rotation_angle(Ra, Ra @ delta)
    torch.testing.assert_close(got, torch.full((16,), angle, dtype=F64), atol=1e-14, rtol=1e-9)
    torch.testing.assert_close(rotation_angle(Ra @ delta, Ra), got, atol=1e-14, rtol=1e-9)


def test_rotation_angle_broadcasts():
    Ra = axis_angle_to_matrix(_random_rotvecs(5, 0, 3, 19)).reshape(5, 1, 3, 3)
    Rb = axis_angle_to_matrix(_random_rotvecs(4, 0, 3, 20))
    got = rotation_angle(Ra, Rb)
    assert got.shape == (5, 4)
    ref = matrix_to_axis_angle(Ra.transpose(-1, -2) @ Rb).norm(dim=-1)
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- shapes, dtypes
@pytest.mark.parametrize("dtype,atol", [(torch.float32, 2e-6), (torch.float64, 1e-12)])
def test_arbitrary_leading_dims_and_dtypes(dtype: torch.dtype, atol: float):
    v = _random_rotvecs(30, 0, 3.0, 21).reshape(2, 3, 5, 3).to(dtype)
    R = axis_angle_to_matrix(v)
    q = matrix_to_quaternion(R)
    assert R.shape == (2, 3, 5, 3, 3) and q.shape == (2, 3, 5, 4)
    for out in (R, q, matrix_to_axis_angle(R), axis_angle_to_quaternion(v), quaternion_to_matrix(q),
                rpy_to_matrix(v), matrix_to_rpy(R), rotation_angle(R, R)):
        assert out.dtype == dtype
    ref = axis_angle_to_matrix(v.double().reshape(-1, 3)).reshape(2, 3, 5, 3, 3)
    torch.testing.assert_close(R.double(), ref, atol=atol, rtol=0)
    torch.testing.assert_close(matrix_to_axis_angle(R).double(), v.double(), atol=20 * atol, rtol=0)
    assert matrix_to_quaternion(torch.eye(3)).shape == (4,)
    assert axis_angle_to_matrix(torch.zeros(0, 3)).shape == (0, 3, 3)


# ---------------------------------------------------------------- properties
_floats = st.floats(-1.0, 1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(st.tuples(_floats, _floats, _floats, _floats).filter(lambda t: sum(x * x for x in t) > 1e-4))
def test_property_quaternion_gives_rotation(q_tuple):
    q = torch.tensor(q_tuple, dtype=F64)
    R = quaternion_to_matrix(q)
    torch.testing.assert_close(R.T @ R, EYE, atol=1e-13, rtol=0)
    assert abs(float(torch.linalg.det(R)) - 1) < 1e-13
    back = matrix_to_quaternion(R)
    torch.testing.assert_close(back, _sign_align(q / q.norm(), back), atol=1e-12, rtol=0)


@settings(max_examples=60, deadline=None)
@given(st.tuples(_floats, _floats, _floats).filter(lambda t: sum(x * x for x in t) > 1e-6),
       st.floats(0.0, math.pi - 1e-6))
def test_property_axis_angle_round_trip(axis_tuple, angle):
    axis = torch.tensor(axis_tuple, dtype=F64)
    v = axis / axis.norm() * angle
    torch.testing.assert_close(matrix_to_axis_angle(axis_angle_to_matrix(v)), v, atol=1e-12, rtol=0)


# ---------------------------------------------------------------- bad input
def test_zero_and_nan_quaternions_are_rejected():
    q = torch.tensor([[1.0, 0, 0, 0], [0.0, 0, 0, 0]])
    for fn in (quaternion_to_matrix, quaternion_to_axis_angle, normalize_quaternion):
        with pytest.raises(ValueError, match="q_wxyz.*1 zero"):
            fn(q)
    with pytest.raises(ValueError, match="q_wxyz"):
        quaternion_to_matrix(torch.tensor([float("nan"), 0, 0, 1]))


@pytest.mark.parametrize("fn,name,good_shape", [
    (quaternion_to_matrix, "q_wxyz", (4,)), (matrix_to_quaternion, "rotation", (3, 3)),
    (axis_angle_to_matrix, "rotvec", (3,)), (matrix_to_axis_angle, "rotation", (3, 3)),
    (axis_angle_to_quaternion, "rotvec", (3,)), (quaternion_conjugate, "q_wxyz", (4,)),
    (quaternion_xyzw_to_wxyz, "q_xyzw", (4,)), (rpy_to_matrix, "rpy", (3,)),
    (matrix_to_rpy, "rotation", (3, 3))])
def test_wrong_shape_and_dtype_name_the_argument(fn, name, good_shape):
    with pytest.raises(ValueError, match=rf"{name}: expected shape"):
        fn(torch.zeros(2, 5))
    with pytest.raises(TypeError, match=rf"{name}: expected a floating-point tensor"):
        fn(torch.ones(good_shape, dtype=torch.int64))
    with pytest.raises(TypeError, match=rf"{name}: expected a torch.Tensor"):
        fn(np.ones(good_shape))


def test_two_argument_functions_name_the_bad_argument():
    with pytest.raises(ValueError, match="q2_wxyz"):
        quaternion_multiply(torch.ones(4), torch.ones(3))
    with pytest.raises(ValueError, match="rotation_b"):
        rotation_angle(torch.eye(3), torch.eye(4))
    with pytest.raises(TypeError, match="rotation_a"):
        rotation_angle(torch.eye(3, dtype=torch.int32), torch.eye(3))
