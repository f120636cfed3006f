"""Rotation representations and conversions: quaternions (wxyz), rotation matrices, axis-angle, rpy.

All functions are batched over arbitrary leading dims ``...``, take dtype and device from their
inputs (float32 or float64) and are differentiable wherever the map is smooth. Angles are radians.
A rotation matrix ``R_a_b`` maps directions of frame ``b`` into frame ``a`` (``d_a = R_a_b @ d_b``).
Axis-angle vectors (rotvec) are ``angle * unit_axis`` with the angle in radians.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from pointworld.geometry.checks import require_floating, require_shape

# Below this squared angle (rad^2) the sinc-like factors use their Taylor series: exact to float64
# precision (first dropped term ~theta^8 / 9! < 1e-21) and smooth through theta = 0.
_TAYLOR_THETA_SQ = 1e-4


def _check(name: str, x: object, trailing: tuple[int, ...]) -> torch.Tensor:
    return require_shape(name, require_floating(name, x), trailing)


def _taylor_or_exact(theta_sq: torch.Tensor, exact: Callable[[torch.Tensor], torch.Tensor],
                     coeffs: Sequence[float]) -> torch.Tensor:
    """Evaluate f(theta) as ``exact(theta)``, or ``sum_k coeffs[k] * theta^(2k)`` near theta = 0.

    The exact branch only ever sees angles away from 0, so neither branch yields NaN gradients.
    """
    small = theta_sq < _TAYLOR_THETA_SQ
    theta = torch.sqrt(torch.where(small, torch.ones_like(theta_sq), theta_sq))
    series = torch.zeros_like(theta_sq)
    for c in reversed(coeffs):
        series = series * theta_sq + c
    return torch.where(small, series, exact(theta))


def skew_matrix(v: torch.Tensor) -> torch.Tensor:
    """Cross-product (skew-symmetric) matrix of a vector: ``skew_matrix(v) @ u == cross(v, u)``.

    Args:
        v: (..., 3) vector, any unit, any frame (not validated: also used on internal hot paths).

    Returns:
        (..., 3, 3) ``[[0, -z, y], [z, 0, -x], [-y, x, 0]]``, same dtype/device/frame as ``v``.
    """
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).unflatten(-1, (3, 3))


def normalize_quaternion(q_wxyz: torch.Tensor, *, name: str = "q_wxyz") -> torch.Tensor:
    """Unit quaternions ``q / |q|``.

    Args:
        q_wxyz: (..., 4) quaternions (w, x, y, z).
        name: argument name used in error messages.

    Returns:
        (..., 4) unit quaternions (w, x, y, z), sign unchanged.

    Raises:
        ValueError: a quaternion has zero (or NaN/inf) norm.
    """
    q = _check(name, q_wxyz, (4,))
    norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    bad = ~(torch.isfinite(norm) & (norm > 0))
    if bool(bad.any()):
        raise ValueError(f"{name}: expected quaternions with finite non-zero norm, got {int(bad.sum())} "
                         f"zero/NaN/inf-norm quaternion(s) in a tensor of shape {tuple(q.shape)}")
    return q / norm


def quaternion_to_matrix(q_wxyz: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of quaternions (normalized first).

    Args:
        q_wxyz: (..., 4) quaternions (w, x, y, z), any non-zero norm.

    Returns:
        (..., 3, 3) rotation matrices.

    Raises:
        ValueError: a quaternion has zero (or NaN/inf) norm.
    """
    q = normalize_quaternion(q_wxyz)
    w, x, y, z = q.unbind(-1)
    rows = [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def matrix_to_quaternion(rotation: torch.Tensor) -> torch.Tensor:
    """Unit quaternions of rotation matrices, canonical sign ``w >= 0``.

    Shepperd's method: of the four candidate formulas the one dividing by the largest of
    ``4w^2, 4x^2, 4y^2, 4z^2`` (always >= 1) is selected, so no square root of a negative number
    and no division by a small number happens for any rotation.

    Args:
        rotation: (..., 3, 3) rotation matrices.

    Returns:
        (..., 4) unit quaternions (w, x, y, z) with w >= 0.
    """
    r = _check("rotation", rotation, (3, 3))
    m = r.flatten(-2).unbind(-1)
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = m
    t = torch.stack([1 + r00 + r11 + r22, 1 + r00 - r11 - r22,
                     1 - r00 + r11 - r22, 1 - r00 - r11 + r22], dim=-1)  # 4w^2, 4x^2, 4y^2, 4z^2
    a, b, c = r21 - r12, r02 - r20, r10 - r01  # 4wx, 4wy, 4wz
    d, e, f = r10 + r01, r02 + r20, r21 + r12  # 4xy, 4xz, 4yz
    cands = torch.stack([torch.stack([t[..., 0], a, b, c], -1),
                         torch.stack([a, t[..., 1], d, e], -1),
                         torch.stack([b, d, t[..., 2], f], -1),
                         torch.stack([c, e, f, t[..., 3]], -1)], dim=-2)  # (..., 4 cand, 4)
    # Unselected candidates may have t < 0; the clamp only keeps their (discarded) values finite.
    cands = cands / (2 * torch.sqrt(t.clamp_min(0.1)))[..., None]
    best = t.argmax(dim=-1)[..., None, None].expand(*t.shape[:-1], 1, 4)
    q = cands.gather(-2, best).squeeze(-2)
    q = q / torch.linalg.vector_norm(q, dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def axis_angle_to_matrix(rotvec: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of axis-angle vectors (Rodrigues), smooth through angle 0.

    Args:
        rotvec: (..., 3) rotation vectors ``angle * unit_axis``, rad.

    Returns:
        (..., 3, 3) rotation matrices ``I + A K + B K^2`` with ``K = skew(rotvec)``.
    """
    v = _check("rotvec", rotvec, (3,))
    theta_sq = (v * v).sum(-1)
    a = _taylor_or_exact(theta_sq, lambda th: torch.sin(th) / th, [1.0, -1 / 6, 1 / 120, -1 / 5040])
    b = _taylor_or_exact(theta_sq, lambda th: (1 - torch.cos(th)) / (th * th),
                         [0.5, -1 / 24, 1 / 720, -1 / 40320])
    k = skew_matrix(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + a[..., None, None] * k + b[..., None, None] * (k @ k)


def axis_angle_to_quaternion(rotvec: torch.Tensor) -> torch.Tensor:
    """Unit quaternions of axis-angle vectors, smooth through angle 0.

    Args:
        rotvec: (..., 3) rotation vectors ``angle * unit_axis``, rad.

    Returns:
        (..., 4) unit quaternions (w, x, y, z); w < 0 for angles above pi (not canonicalized).
    """
    v = _check("rotvec", rotvec, (3,))
    theta_sq = (v * v).sum(-1)
    w = _taylor_or_exact(theta_sq, lambda th: torch.cos(th / 2), [1.0, -1 / 8, 1 / 384, -1 / 46080])
    s = _taylor_or_exact(theta_sq, lambda th: torch.sin(th / 2) / th,
                         [0.5, -1 / 48, 1 / 3840, -1 / 645120])
    return torch.cat([w[..., None], s[..., None] * v], dim=-1)


def quaternion_to_axis_angle(q_wxyz: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors of quaternions (normalized first), angle in [0, pi].

    Args:
        q_wxyz: (..., 4) quaternions (w, x, y, z), any non-zero norm.

    Returns:
        (..., 3) rotation vectors ``angle * unit_axis``, rad, with angle in [0, pi].

    Raises:
        ValueError: a quaternion has zero (or NaN/inf) norm.
    """
    q = normalize_quaternion(q_wxyz)
    q = torch.where(q[..., :1] < 0, -q, q)
    w, xyz = q[..., 0], q[..., 1:]
    s_sq = (xyz * xyz).sum(-1)
    # angle / sin(angle/2) = 2 atan2(s, w) / s; near s = 0 (so w ~ 1) its series in (s/w)^2.
    small = s_sq < _TAYLOR_THETA_SQ
    s = torch.sqrt(torch.where(small, torch.ones_like(s_sq), s_sq))
    u = s_sq / (w * w).clamp_min(0.5)  # w >= 0.99 wherever the series is used
    series = (2 / w.clamp_min(0.5)) * (1 - u / 3 + u * u / 5 - u * u * u / 7)
    factor = torch.where(small, series, 2 * torch.atan2(s, w) / s)
    return factor[..., None] * xyz


def matrix_to_axis_angle(rotation: torch.Tensor) -> torch.Tensor:
    """Axis-angle vectors of rotation matrices, angle in [0, pi], accurate near 0 and near pi.

    Args:
        rotation: (..., 3, 3) rotation matrices.

    Returns:
        (..., 3) rotation vectors ``angle * unit_axis``, rad. At exactly pi the sign of the axis is
        arbitrary (both describe the same rotation).
    """
    return quaternion_to_axis_angle(matrix_to_quaternion(rotation))


def quaternion_multiply(q1_wxyz: torch.Tensor, q2_wxyz: torch.Tensor) -> torch.Tensor:
    """Hamilton product ``q1 * q2`` (rotate by q2 first, then q1), broadcast over leading dims.

    Args:
        q1_wxyz: (..., 4) quaternions (w, x, y, z).
        q2_wxyz: (..., 4) quaternions (w, x, y, z).

    Returns:
        (..., 4) product quaternions (w, x, y, z), not renormalized.
    """
    w1, x1, y1, z1 = _check("q1_wxyz", q1_wxyz, (4,)).unbind(-1)
    w2, x2, y2, z2 = _check("q2_wxyz", q2_wxyz, (4,)).unbind(-1)
    return torch.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2,
                        w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                        w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2,
                        w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], dim=-1)


def quaternion_conjugate(q_wxyz: torch.Tensor) -> torch.Tensor:
    """Conjugate (w, -x, -y, -z); the inverse rotation for unit quaternions.

    Args:
        q_wxyz: (..., 4) quaternions (w, x, y, z).

    Returns:
        (..., 4) conjugate quaternions (w, x, y, z).
    """
    q = _check("q_wxyz", q_wxyz, (4,))
    return torch.cat([q[..., :1], -q[..., 1:]], dim=-1)


def quaternion_xyzw_to_wxyz(q_xyzw: torch.Tensor) -> torch.Tensor:
    """Reorder (..., 4) scalar-last quaternions (x, y, z, w) to our scalar-first (w, x, y, z)."""
    return _check("q_xyzw", q_xyzw, (4,)).roll(1, dims=-1)


def quaternion_wxyz_to_xyzw(q_wxyz: torch.Tensor) -> torch.Tensor:
    """Reorder (..., 4) scalar-first quaternions (w, x, y, z) to scalar-last (x, y, z, w)."""
    return _check("q_wxyz", q_wxyz, (4,)).roll(-1, dims=-1)


def rotation_angle(rotation_a: torch.Tensor, rotation_b: torch.Tensor) -> torch.Tensor:
    """Geodesic angle between two rotations, broadcast over leading dims.

    Computed as ``atan2(sin, cos)`` of the relative rotation ``R_a^T R_b``, so it stays accurate near
    0 and near pi (unlike ``acos((trace - 1) / 2)``).

    Args:
        rotation_a: (..., 3, 3) rotation matrices.
        rotation_b: (..., 3, 3) rotation matrices.

    Returns:
        (...) angle of ``R_a^T R_b``, rad, in [0, pi].
    """
    ra = _check("rotation_a", rotation_a, (3, 3))
    rb = _check("rotation_b", rotation_b, (3, 3))
    rel = ra.transpose(-1, -2) @ rb
    skew = torch.stack([rel[..., 2, 1] - rel[..., 1, 2], rel[..., 0, 2] - rel[..., 2, 0],
                        rel[..., 1, 0] - rel[..., 0, 1]], dim=-1)  # 2 sin(angle) * axis
    cos2 = rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1  # 2 cos(angle)
    return torch.atan2(torch.linalg.vector_norm(skew, dim=-1), cos2)


def rpy_to_matrix(rpy: torch.Tensor) -> torch.Tensor:
    """Rotation matrices of URDF roll-pitch-yaw angles: ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)``.

    (Extrinsic rotations about the fixed X, then Y, then Z axes, as in URDF ``<origin rpy>``.)

    Args:
        rpy: (..., 3) angles (roll, pitch, yaw), rad.

    Returns:
        (..., 3, 3) rotation matrices.
    """
    r = _check("rpy", rpy, (3,))
    cr, cp, cy = torch.cos(r).unbind(-1)
    sr, sp, sy = torch.sin(r).unbind(-1)
    rows = [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr,
            sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr,
            -sp, cp * sr, cp * cr]
    return torch.stack(rows, dim=-1).unflatten(-1, (3, 3))


def matrix_to_rpy(rotation: torch.Tensor) -> torch.Tensor:
    """URDF roll-pitch-yaw angles of rotation matrices (inverse of :func:`rpy_to_matrix`).

    Args:
        rotation: (..., 3, 3) rotation matrices.

    Returns:
        (..., 3) angles (roll, pitch, yaw), rad, with pitch in [-pi/2, pi/2]. At gimbal lock
        (pitch = ±pi/2) roll is set to 0 and the whole rotation about Z goes into yaw.
    """
    r = _check("rotation", rotation, (3, 3))
    cos_pitch = torch.hypot(r[..., 0, 0], r[..., 1, 0])
    pitch = torch.atan2(-r[..., 2, 0], cos_pitch)
    # Only an exact lock (to rounding) drops roll: away from it atan2 stays accurate in float32 too.
    locked = cos_pitch < 1e-6
    roll = torch.where(locked, torch.zeros_like(pitch), torch.atan2(r[..., 2, 1], r[..., 2, 2]))
    # Locked: R = Rz(yaw) Ry(±pi/2), whose second column is (-sin yaw, cos yaw, 0).
    yaw = torch.where(locked, torch.atan2(-r[..., 0, 1], r[..., 1, 1]),
                      torch.atan2(r[..., 1, 0], r[..., 0, 0]))
    return torch.stack([roll, pitch, yaw], dim=-1)
