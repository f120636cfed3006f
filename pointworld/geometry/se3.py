"""Rigid transforms SE(3) as (..., 4, 4) homogeneous matrices.

Convention (see :mod:`pointworld.conventions`): ``T_a_b`` maps points of frame ``b`` into frame ``a``,
``p_a = T_a_b @ p_b``; compose by matching inner letters, ``T_a_c = T_a_b @ T_b_c``. Translations are
metres. All functions are batched over arbitrary leading dims ``...`` (broadcast where two tensors meet),
take dtype and device from their inputs and are differentiable.
"""

from __future__ import annotations

import torch

from pointworld.geometry.checks import (require_dtype, require_finite, require_floating,
                                        require_shape)
from pointworld.geometry.rotations import (matrix_to_quaternion, normalize_quaternion,
                                           quaternion_to_matrix)


def _check(name: str, x: object, trailing: tuple[int | None, ...]) -> torch.Tensor:
    return require_shape(name, require_floating(name, x), trailing)


def _broadcast_leading(names: tuple[str, str], a: torch.Size, b: torch.Size) -> torch.Size:
    try:
        return torch.broadcast_shapes(a, b)
    except RuntimeError as exc:
        raise ValueError(f"{names[0]}, {names[1]}: leading dims {tuple(a)} and {tuple(b)} do not "
                         f"broadcast") from exc


def _assemble(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    lead = torch.broadcast_shapes(rotation.shape[:-2], translation.shape[:-1])
    top = torch.cat([rotation.expand(*lead, 3, 3), translation.expand(*lead, 3)[..., None]], dim=-1)
    bottom = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=rotation.dtype, device=rotation.device)
    return torch.cat([top, bottom.expand(*lead, 1, 4)], dim=-2)


def make_transform(rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """Homogeneous transforms from rotations and translations (leading dims broadcast).

    Args:
        rotation: (..., 3, 3) rotation ``R_a_b``.
        translation: (..., 3) origin of frame b expressed in frame a, m; same dtype as ``rotation``.

    Returns:
        (..., 4, 4) ``T_a_b`` = [[R, t], [0, 0, 0, 1]].
    """
    r = _check("rotation", rotation, (3, 3))
    t = require_dtype("translation", _check("translation", translation, (3,)), r.dtype)
    _broadcast_leading(("rotation", "translation"), r.shape[:-2], t.shape[:-1])
    return _assemble(r, t)


def invert_transform(T_a_b: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid transforms, ``[[R^T, -R^T t], [0, 1]]`` (no general matrix inverse).

    Args:
        T_a_b: (..., 4, 4) rigid transforms (not re-checked for rigidity).

    Returns:
        (..., 4, 4) ``T_b_a``.
    """
    T = _check("T_a_b", T_a_b, (4, 4))
    r_t = T[..., :3, :3].transpose(-1, -2)
    return _assemble(r_t, -(r_t @ T[..., :3, 3:]).squeeze(-1))


def compose_transforms(T_a_b: torch.Tensor, T_b_c: torch.Tensor) -> torch.Tensor:
    """Compose transforms, ``T_a_c = T_a_b @ T_b_c`` (leading dims broadcast).

    Args:
        T_a_b: (..., 4, 4) transforms from frame b to frame a.
        T_b_c: (..., 4, 4) transforms from frame c to frame b; same dtype as ``T_a_b``.

    Returns:
        (..., 4, 4) ``T_a_c``.
    """
    a = _check("T_a_b", T_a_b, (4, 4))
    b = require_dtype("T_b_c", _check("T_b_c", T_b_c, (4, 4)), a.dtype)
    _broadcast_leading(("T_a_b", "T_b_c"), a.shape[:-2], b.shape[:-2])
    return a @ b


def transform_points(T_a_b: torch.Tensor, points_b: torch.Tensor) -> torch.Tensor:
    """Apply rigid transforms to point sets, ``p_a = R p_b + t``.

    The leading dims of ``T_a_b`` broadcast against those of ``points_b`` (e.g. T (V, 4, 4) with
    points (V, N, 3), or T (4, 4) with points (B, N, 3)).

    Args:
        T_a_b: (..., 4, 4) transforms from frame b to frame a.
        points_b: (..., N, 3) points in frame b, m; same dtype as ``T_a_b``.

    Returns:
        (..., N, 3) the points in frame a, m.
    """
    T = _check("T_a_b", T_a_b, (4, 4))
    p = require_dtype("points_b", _check("points_b", points_b, (None, 3)), T.dtype)
    _broadcast_leading(("T_a_b", "points_b"), T.shape[:-2], p.shape[:-2])
    return p @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def transform_directions(T_a_b: torch.Tensor, dirs_b: torch.Tensor) -> torch.Tensor:
    """Rotate direction vectors (e.g. normals) by the rotation part only, ``d_a = R d_b``.

    Args:
        T_a_b: (..., 4, 4) transforms from frame b to frame a (broadcast as in
            :func:`transform_points`).
        dirs_b: (..., N, 3) directions in frame b (unitless or m); same dtype as ``T_a_b``.

    Returns:
        (..., N, 3) the directions in frame a.
    """
    T = _check("T_a_b", T_a_b, (4, 4))
    d = require_dtype("dirs_b", _check("dirs_b", dirs_b, (None, 3)), T.dtype)
    _broadcast_leading(("T_a_b", "dirs_b"), T.shape[:-2], d.shape[:-2])
    return d @ T[..., :3, :3].transpose(-1, -2)


def rigidity_error(T: torch.Tensor) -> torch.Tensor:
    """How far transforms are from rigid: the largest of ``|R^T R - I|``, ``|det R - 1|`` and
    ``|bottom row - (0, 0, 0, 1)|`` (element-wise maxima).

    Args:
        T: (..., 4, 4) homogeneous transforms.

    Returns:
        (...) rigidity error, unitless (0 for an exact rigid transform).
    """
    T = _check("T", T, (4, 4))
    r = T[..., :3, :3]
    eye = torch.eye(3, dtype=T.dtype, device=T.device)
    orth = (r.transpose(-1, -2) @ r - eye).abs().amax(dim=(-2, -1))
    det = (torch.linalg.det(r) - 1).abs()
    bottom_ref = torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=T.dtype, device=T.device)
    bottom = (T[..., 3, :] - bottom_ref).abs().amax(dim=-1)
    return torch.maximum(torch.maximum(orth, det), bottom)


def check_rigid_transform(name: str, T: object, atol: float = 1e-4) -> torch.Tensor:
    """Validate rigid transforms at a public boundary and return them unchanged.

    Args:
        name: argument name used in error messages.
        T: (..., 4, 4) floating-point homogeneous transforms.
        atol: largest accepted :func:`rigidity_error`, unitless.

    Raises:
        TypeError: ``T`` is not a floating-point tensor.
        ValueError: wrong shape, NaN/inf entries, or a rigidity error above ``atol`` (the worst
            one found is reported).
    """
    T = require_finite(name, _check(name, T, (4, 4)))
    if T.numel() == 0:
        return T
    err = rigidity_error(T)
    worst = float(err.max())
    if worst > atol:
        where = tuple(int(i) for i in torch.unravel_index(err.argmax(), err.shape))
        raise ValueError(f"{name}: expected rigid transforms (rotation orthonormal with det +1, bottom "
                         f"row 0 0 0 1) within atol={atol:g}, got rigidity error {worst:.3g} at batch "
                         f"index {where} of a tensor of shape {tuple(T.shape)}")
    return T


def transform_from_pose(position: torch.Tensor, quaternion_wxyz: torch.Tensor) -> torch.Tensor:
    """Transforms from positions and orientations (leading dims broadcast).

    Args:
        position: (..., 3) origin of frame b in frame a, m.
        quaternion_wxyz: (..., 4) orientation of frame b in frame a, (w, x, y, z), normalized here.

    Returns:
        (..., 4, 4) ``T_a_b``.
    """
    q = normalize_quaternion(quaternion_wxyz, name="quaternion_wxyz")
    t = require_dtype("position", _check("position", position, (3,)), q.dtype)
    _broadcast_leading(("position", "quaternion_wxyz"), t.shape[:-1], q.shape[:-1])
    return _assemble(quaternion_to_matrix(q), t)


def pose_from_transform(T_a_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions and orientations of rigid transforms (inverse of :func:`transform_from_pose`).

    Args:
        T_a_b: (..., 4, 4) rigid transforms.

    Returns:
        position: (..., 3) origin of frame b in frame a, m.
        quaternion_wxyz: (..., 4) unit quaternion (w, x, y, z) of ``R_a_b``, w >= 0.
    """
    T = _check("T_a_b", T_a_b, (4, 4))
    return T[..., :3, 3], matrix_to_quaternion(T[..., :3, :3])
