"""Brown-Conrady lens distortion on normalized image coordinates (OpenCV's 5-coefficient model).

Coefficients are in OpenCV order ``(k1, k2, p1, p2, k3)``. For a point ``(X, Y, Z)`` in the OpenCV
camera frame the undistorted normalized coordinates are ``x = X / Z``, ``y = Y / Z`` and, with
``r² = x² + y²``, the distorted ones are

    radial = 1 + k1 r² + k2 r⁴ + k3 r⁶
    x_d = x · radial + 2 p1 x y + p2 (r² + 2 x²)
    y_d = y · radial + p1 (r² + 2 y²) + 2 p2 x y

Pixels follow from ``u = fx x_d + s y_d + cx``, ``v = fy y_d + cy`` (see :mod:`.camera`). The model
is only meaningful inside the field of view it was calibrated on; far outside it the polynomial is
not invertible and :func:`undistort_normalized` returns whatever its iteration reached.
"""

from __future__ import annotations

import torch

from pointworld.geometry.checks import require_floating, require_shape

#: Number of distortion coefficients, OpenCV order (k1, k2, p1, p2, k3).
NUM_DIST_COEFFS = 5


def _check_inputs(xy_name: str, xy: object, dist_coeffs: object) -> tuple[torch.Tensor, torch.Tensor]:
    xy = require_shape(xy_name, require_floating(xy_name, xy), (None, 2))
    dist = require_shape("dist_coeffs", require_floating("dist_coeffs", dist_coeffs),
                         (NUM_DIST_COEFFS,))
    try:
        torch.broadcast_shapes(xy.shape[:-2], dist.shape[:-1])
    except RuntimeError as exc:
        raise ValueError(f"dist_coeffs: expected leading dims broadcastable with {xy_name}'s "
                         f"{tuple(xy.shape[:-2])}, got a tensor of shape {tuple(dist.shape)}") from exc
    return xy, dist.to(dtype=xy.dtype, device=xy.device)


def _unpack(dist: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Split (..., 5) coefficients into five (..., 1) tensors that broadcast over the N points."""
    return tuple(dist[..., i:i + 1] for i in range(NUM_DIST_COEFFS))


def _distort(x: torch.Tensor, y: torch.Tensor, coeffs: tuple[torch.Tensor, ...]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distorted coordinates plus the radial factor and its derivative with respect to r²."""
    k1, k2, p1, p2, k3 = coeffs
    x2, y2, xy = x * x, y * y, x * y
    r2 = x2 + y2
    radial = 1 + r2 * (k1 + r2 * (k2 + r2 * k3))
    d_radial = k1 + r2 * (2 * k2 + 3 * k3 * r2)
    xd = x * radial + 2 * p1 * xy + p2 * (r2 + 2 * x2)
    yd = y * radial + p1 * (r2 + 2 * y2) + 2 * p2 * xy
    return xd, yd, radial, d_radial


def distort_normalized(xy: torch.Tensor, dist_coeffs: torch.Tensor) -> torch.Tensor:
    """Apply Brown-Conrady distortion to normalized image coordinates.

    Args:
        xy: (..., N, 2) undistorted normalized coordinates ``(X/Z, Y/Z)``, unitless, OpenCV camera
            frame.
        dist_coeffs: (..., 5) coefficients ``(k1, k2, p1, p2, k3)``; leading dims broadcast with
            those of ``xy``. Cast to ``xy``'s dtype and device.

    Returns:
        (..., N, 2) distorted normalized coordinates, unitless, in ``xy``'s dtype.
    """
    xy, dist = _check_inputs("xy", xy, dist_coeffs)
    xd, yd, _, _ = _distort(xy[..., 0], xy[..., 1], _unpack(dist))
    return torch.stack([xd, yd], dim=-1)


def _newton_step(x: torch.Tensor, y: torch.Tensor, neg_xd: torch.Tensor, neg_yd: torch.Tensor,
                 coeffs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """One Newton step on ``distort(x, y) = (-neg_xd, -neg_yd)``; OpenCV's fixed-point update
    instead where the Jacobian determinant is below a small threshold (beyond the fold of the
    polynomial)."""
    k1, k2, p1, p2, k3 = coeffs
    x2, y2, xy = x * x, y * y, x * y
    r2 = x2 + y2
    radial = torch.addcmul(k1, r2, torch.addcmul(k2, r2, k3)).mul_(r2).add_(1)
    d_radial2 = torch.addcmul(k1, r2, torch.addcmul(2 * k2, r2, 3 * k3)).mul_(2)  # 2 d radial / d r²
    # Residual of the distortion model (see the module docstring) at the current estimate.
    rx = torch.addcmul(neg_xd, x, radial).addcmul_(2 * p1, xy).addcmul_(p2, r2 + 2 * x2)
    ry = torch.addcmul(neg_yd, y, radial).addcmul_(2 * p2, xy).addcmul_(p1, r2 + 2 * y2)
    # Symmetric Jacobian [[a, b], [b, d]] of the distortion map.
    a = torch.addcmul(radial, x2, d_radial2).addcmul_(2 * p1, y).addcmul_(6 * p2, x)
    b = (xy * d_radial2).addcmul_(2 * p1, x).addcmul_(2 * p2, y)
    d = torch.addcmul(radial, y2, d_radial2).addcmul_(6 * p1, y).addcmul_(2 * p2, x)
    det = torch.addcmul(a * d, b, b, value=-1)
    use_newton = det > 1e-6
    step_x = torch.where(use_newton, torch.addcmul(d * rx, b, ry, value=-1).div_(det), rx / radial)
    step_y = torch.where(use_newton, torch.addcmul(a * ry, b, rx, value=-1).div_(det), ry / radial)
    return x - step_x, y - step_y


def undistort_normalized(xy_distorted: torch.Tensor, dist_coeffs: torch.Tensor,
                         iterations: int = 20) -> torch.Tensor:
    """Invert :func:`distort_normalized` by Newton iterations.

    Starts at the distorted coordinates (as OpenCV's ``undistortPoints`` does) and takes
    at most ``iterations`` Newton steps on the 2x2 system ``distort(x, y) = (x_d, y_d)``, falling
    back to OpenCV's fixed-point update where the Jacobian is near-singular. It stops early once
    no point moves by more than a few ulps (one device-to-host sync per step; typical lenses
    converge in 3 to 6 steps). When every coefficient is zero the input is returned unchanged
    (an exact copy).

    Args:
        xy_distorted: (..., N, 2) distorted normalized coordinates ``((u - cx - s y_d)/fx,
            (v - cy)/fy)``, unitless, OpenCV camera frame.
        dist_coeffs: (..., 5) coefficients ``(k1, k2, p1, p2, k3)``; leading dims broadcast with
            those of ``xy_distorted``. Cast to its dtype and device.
        iterations: maximum number of Newton steps, >= 1.

    Returns:
        (..., N, 2) undistorted normalized coordinates ``(X/Z, Y/Z)``, unitless.
    """
    xy, dist = _check_inputs("xy_distorted", xy_distorted, dist_coeffs)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations: expected an int >= 1, got {iterations!r}")
    out_shape = torch.broadcast_shapes(xy.shape, dist.shape[:-1] + (1, 2))
    if not bool(dist.any()):
        return xy.expand(out_shape).clone()
    coeffs = _unpack(dist)
    x, y = xy[..., 0], xy[..., 1]
    neg_xd, neg_yd = -x, -y
    # Converged once no point moves by more than a few ulps of the largest finite coordinate
    # (NaN/inf inputs stay NaN and are ignored by the test).
    scale = torch.nan_to_num(xy.abs(), nan=0.0, posinf=0.0).amax() if xy.numel() else 0.0
    tol = 8 * torch.finfo(xy.dtype).eps * (1 + float(scale))
    for _ in range(iterations):
        x_new, y_new = _newton_step(x, y, neg_xd, neg_yd, coeffs)
        moving = ((x_new - x).abs_() > tol) | ((y_new - y).abs_() > tol)
        x, y = x_new, y_new
        if not bool(moving.any()):
            break
    return torch.stack([x, y], dim=-1).expand(out_shape)
