"""Pinhole cameras with Brown-Conrady distortion: intrinsics, projection and depth backprojection.

Frames and pixels follow :mod:`pointworld.conventions`: ``cam`` is the OpenCV optical frame (+x right,
+y down, +z forward), ``uv_px[..., 0]`` is the column and ``uv_px[..., 1]`` the row, and the centre
of the top-left pixel is ``(0, 0)`` (as in OpenCV and Open3D). Intrinsics are
``K = [[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` in pixels, so ``u = fx x_d + s y_d + cx`` and
``v = fy y_d + cy`` with ``(x_d, y_d)`` the distorted normalized coordinates of
:mod:`pointworld.geometry.distortion`.
"""

from __future__ import annotations

import math

import torch

from pointworld.geometry.checks import require_finite, require_floating, require_shape
from pointworld.geometry.distortion import NUM_DIST_COEFFS, distort_normalized, undistort_normalized
from pointworld.geometry.se3 import check_rigid_transform

#: Largest reprojection error, pixels, of an undistorted pixel ray; worse pixels are invalid.
_RAY_TOL_PX = 1e-3

_K_FORM = "[[fx, s, cx], [0, fy, cy], [0, 0, 1]] with finite entries, fx > 0 and fy > 0"


def _validate_intrinsics(name: str, K: object) -> tuple[torch.Tensor, bool]:
    """Check K like :func:`check_intrinsics`; also report whether any skew is non-zero.

    Both facts come back in one device-to-host transfer (the only sync of a valid call).
    """
    K = require_shape(name, require_floating(name, K), (3, 3))
    if K.numel() == 0:
        return K, False
    structure = torch.stack([K[..., 1, 0], K[..., 2, 0], K[..., 2, 1], K[..., 2, 2] - 1], dim=-1)
    problems = ((~torch.isfinite(K)).flatten(-2).any(-1) | (K[..., 0, 0] <= 0) | (K[..., 1, 1] <= 0)
                | (structure != 0).any(-1))
    bad, has_skew = torch.stack([problems.any(), (K[..., 0, 1] != 0).any()]).tolist()
    if bad:
        index = tuple(int(i) for i in torch.nonzero(problems)[0])
        raise ValueError(f"{name}: expected pinhole intrinsics {_K_FORM}, got "
                         f"{K[index].tolist()} at batch index {index} of a tensor of shape "
                         f"{tuple(K.shape)}")
    return K, bool(has_skew)


def check_intrinsics(name: str, K: object) -> torch.Tensor:
    """Validate pinhole intrinsics at a public boundary and return them unchanged.

    Args:
        name: argument name used in error messages.
        K: (..., 3, 3) floating-point intrinsics ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]``, pixels.
            The skew ``s`` may be non-zero; the other structural zeros and the 1 must be exact.

    Raises:
        TypeError: ``K`` is not a floating-point tensor.
        ValueError: wrong shape, NaN/inf entries, ``fx <= 0`` or ``fy <= 0``, or a wrong last row
            or ``K[..., 1, 0]`` (the first offending matrix is reported).
    """
    return _validate_intrinsics(name, K)[0]


def make_intrinsics(fx: float, fy: float, cx: float, cy: float, *, dtype: torch.dtype = torch.float64,
                    device: torch.device | str | None = None) -> torch.Tensor:
    """Intrinsics matrix (3, 3) without skew from focal lengths and principal point, all in pixels."""
    for name, value in (("fx", fx), ("fy", fy), ("cx", cx), ("cy", cy)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name}: expected a finite number of pixels, got {value!r}")
    for name, value in (("fx", fx), ("fy", fy)):
        if value <= 0:
            raise ValueError(f"{name}: expected a focal length > 0 px, got {value!r}")
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=dtype, device=device)


def intrinsics_from_fov(width_px: int, height_px: int, fov_y_rad: float, *,
                        dtype: torch.dtype = torch.float64,
                        device: torch.device | str | None = None) -> torch.Tensor:
    """Intrinsics (3, 3) of an ideal camera with square pixels and a centred principal point.

    The vertical field of view spans the full image height, from the top edge of the first row
    (v = -0.5) to the bottom edge of the last (v = H - 0.5), as in MuJoCo/OpenGL renderers:
    ``fy = fx = (H / 2) / tan(fov_y / 2)``, ``cx = (W - 1) / 2``, ``cy = (H - 1) / 2``.

    Args:
        width_px: image width W, pixels (int >= 1).
        height_px: image height H, pixels (int >= 1).
        fov_y_rad: vertical field of view, rad, in (0, pi).
    """
    for name, value in (("width_px", width_px), ("height_px", height_px)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if not isinstance(fov_y_rad, (int, float)) or not 0 < fov_y_rad < math.pi:
        raise ValueError(f"fov_y_rad: expected a number in (0, pi) rad, got {fov_y_rad!r}")
    f = 0.5 * height_px / math.tan(0.5 * fov_y_rad)
    return make_intrinsics(f, f, 0.5 * (width_px - 1), 0.5 * (height_px - 1), dtype=dtype,
                           device=device)


def pixel_grid(height: int, width: int, *, dtype: torch.dtype = torch.float64,
               device: torch.device | str | None = None) -> torch.Tensor:
    """Pixel-centre coordinates of an H x W image.

    Returns:
        uv_px: (H, W, 2) pixels, ``uv_px[v, u] = (u, v)`` (column, row); pixel (0, 0) is centred
        at (0, 0) as in OpenCV and Open3D.
    """
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name}: expected an int >= 0, got {value!r}")
    v = torch.arange(height, dtype=dtype, device=device)
    u = torch.arange(width, dtype=dtype, device=device)
    return torch.stack([u.expand(height, width), v[:, None].expand(height, width)], dim=-1)


def _check_dist(dist_coeffs: object) -> torch.Tensor:
    dist = require_shape("dist_coeffs", require_floating("dist_coeffs", dist_coeffs), (NUM_DIST_COEFFS,))
    return require_finite("dist_coeffs", dist)


def project_points(points_cam: torch.Tensor, K: torch.Tensor, dist_coeffs: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera-frame points to pixels (the model of OpenCV's ``projectPoints``).

    Points with ``z <= 0`` (on or behind the image plane) get ``uv_px = NaN``; their depth is
    still returned as is. Far outside the calibrated field of view the distortion polynomial
    gives meaningless (but finite) pixels; callers crop to the image.

    Args:
        points_cam: (..., N, 3) points, m, OpenCV camera frame.
        K: (..., 3, 3) intrinsics, pixels; leading dims broadcast with those of ``points_cam``.
            Cast to the dtype and device of ``points_cam``.
        dist_coeffs: (..., 5) distortion ``(k1, k2, p1, p2, k3)`` or None for an ideal pinhole.

    Returns:
        uv_px: (..., N, 2) pixel coordinates (column, row), pixels, in ``points_cam``'s dtype.
        depth_m: (..., N) z of each point, m, camera frame.
    """
    p = require_shape("points_cam", require_floating("points_cam", points_cam), (None, 3))
    K = _validate_intrinsics("K", K)[0].to(dtype=p.dtype, device=p.device)
    shapes = [p.shape[:-2], K.shape[:-2]]
    if dist_coeffs is not None:
        shapes.append(_check_dist(dist_coeffs).shape[:-1])
    try:
        torch.broadcast_shapes(*shapes)
    except RuntimeError as exc:
        raise ValueError(f"points_cam, K, dist_coeffs: expected broadcastable leading (batch) dims, "
                         f"got {', '.join(str(tuple(s)) for s in shapes)}") from exc
    z = p[..., 2]
    inv_z = torch.where(z > 0, 1.0 / z, torch.nan)
    xy = p[..., :2] * inv_z[..., None]
    if dist_coeffs is not None:
        xy = distort_normalized(xy, dist_coeffs)
    x, y = xy[..., 0], xy[..., 1]
    u = K[..., 0, 0, None] * x + K[..., 0, 1, None] * y + K[..., 0, 2, None]
    v = K[..., 1, 1, None] * y + K[..., 1, 2, None]
    return torch.stack([u, v], dim=-1), z


def _check_depth(depth_m: object, min_depth_m: float, max_depth_m: float) -> torch.Tensor:
    depth = require_floating("depth_m", depth_m)
    depth = require_shape("depth_m", depth, (None, None))
    if depth.shape[-1] == 1:
        raise ValueError(f"depth_m: expected (..., H, W) depth without a channel dim, got shape "
                         f"{tuple(depth.shape)} (width 1 is taken for a trailing channel dim; "
                         f"squeeze it)")
    if not isinstance(min_depth_m, (int, float)) or not 0 <= min_depth_m < math.inf:
        raise ValueError(f"min_depth_m: expected a finite number >= 0 m, got {min_depth_m!r}")
    if not isinstance(max_depth_m, (int, float)) or not max_depth_m > min_depth_m:
        raise ValueError(f"max_depth_m: expected a number > min_depth_m={min_depth_m!r} m (inf "
                         f"allowed), got {max_depth_m!r}")
    return depth


def _normalized_rays(K: torch.Tensor, dist: torch.Tensor | None, has_skew: bool, height: int,
                     width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Undistorted normalized coordinates x = X/Z, y = Y/Z of every pixel centre.

    Without distortion x has shape (..., 1, W) (or (..., H, W) with skew), y (..., H, 1) and the
    third result is None; with distortion x, y and a mask of the pixels whose ray reprojects to
    within ``_RAY_TOL_PX`` (the others, beyond the fold of the distortion polynomial, get
    x = y = 0) are (..., H, W). Leading dims: those of K (and dist).
    """
    fx, s, cx = (K[..., 0, i, None, None] for i in range(3))
    fy, cy = K[..., 1, 1, None, None], K[..., 1, 2, None, None]
    u = torch.arange(width, dtype=K.dtype, device=K.device)
    v = torch.arange(height, dtype=K.dtype, device=K.device)[:, None]
    y = (v - cy) / fy
    x = (u - cx - s * y) / fx if has_skew else (u - cx) / fx
    if dist is None:
        return x, y, None
    lead, dist = torch.broadcast_shapes(x.shape[:-2], dist.shape[:-1]), dist.to(K.dtype)
    xy = torch.stack(torch.broadcast_tensors(x, y), dim=-1).expand(*lead, height, width, 2)
    xy = xy.reshape(*lead, height * width, 2)
    rays = undistort_normalized(xy, dist)
    error = (distort_normalized(rays, dist) - xy).abs()
    focal = torch.stack([K[..., 0, 0], K[..., 1, 1]], dim=-1)[..., None, :]
    ok = ((error * focal).amax(dim=-1) <= _RAY_TOL_PX).reshape(*lead, height, width)  # NaN -> False
    rays = torch.where(ok[..., None], rays.reshape(*lead, height, width, 2), 0.0)
    return rays[..., 0], rays[..., 1], ok


def _require_leading_into(name: str, shape: torch.Size, lead: torch.Size) -> None:
    """Require that leading dims ``shape`` broadcast to depth_m's leading dims ``lead``."""
    try:
        fits = torch.broadcast_shapes(lead, shape) == lead
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(f"{name}: expected leading dims that broadcast to depth_m's {tuple(lead)}, "
                         f"got {tuple(shape)}")


def _depth_and_rays(depth_m: object, K: object, dist_coeffs: object, min_depth_m: float,
                    max_depth_m: float) -> tuple[torch.Tensor, ...]:
    """Checked inputs -> z (..., H, W) zeroed where invalid, valid (..., H, W), and the pixel rays
    x, y of :func:`_normalized_rays` in depth's dtype."""
    depth = _check_depth(depth_m, min_depth_m, max_depth_m)
    K, has_skew = _validate_intrinsics("K", K)
    dist = None if dist_coeffs is None else _check_dist(dist_coeffs)
    lead, (height, width) = depth.shape[:-2], depth.shape[-2:]
    _require_leading_into("K", K.shape[:-2], lead)
    if dist is not None:
        _require_leading_into("dist_coeffs", dist.shape[:-1], lead)
        dist = dist.to(device=depth.device)
    # Rays are computed in K's precision when it is higher (they cost O(H + W) without distortion).
    K = K.to(dtype=torch.promote_types(K.dtype, depth.dtype), device=depth.device)
    x, y, ray_ok = _normalized_rays(K, dist, has_skew, height, width)
    # `depth <= upper` with a finite upper bound rejects NaN and +inf, `depth > min >= 0` rejects
    # -inf and negatives: two comparisons, no separate isfinite pass.
    upper = min(max_depth_m, torch.finfo(depth.dtype).max)
    valid = (depth > min_depth_m) & (depth <= upper)
    if ray_ok is not None:
        valid &= ray_ok
    # depth * valid is NaN only at NaN/inf depths (all invalid): several times faster than where().
    z = (depth * valid).nan_to_num_(0.0, 0.0, 0.0)
    return z, valid, x.to(depth.dtype), y.to(depth.dtype)


def backproject_depth(depth_m: torch.Tensor, K: torch.Tensor, dist_coeffs: torch.Tensor | None = None,
                      *, min_depth_m: float = 0.0, max_depth_m: float = math.inf
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lift z-depth images to camera-frame points, one point per pixel.

    A pixel is valid iff its depth is finite and ``min_depth_m < depth <= max_depth_m``. Invalid
    pixels (0, NaN, ±inf, negative, out of range) are not errors: they get ``valid = False`` and
    points exactly 0 (``== 0``; the sign bit may be set), never NaN. Pixel (row v, column u)
    lands at ``[..., v, u, :]``, so ``points_cam[valid]`` is in row-major order (as Open3D's
    ``create_from_depth_image``).
    With distortion the pixel centres are undistorted once per distinct (K, dist_coeffs); pixels
    whose undistorted ray does not reproject to within 1e-3 px (beyond the fold of the distortion
    polynomial, outside any sane calibration) are invalid too.

    Args:
        depth_m: (..., H, W) z-depth along the optical axis, m (not the ray length).
        K: (..., 3, 3) intrinsics, pixels; leading dims broadcast to those of ``depth_m`` (e.g. one
            K (3, 3) for V views (V, H, W), or K (V, 3, 3)).
        dist_coeffs: (..., 5) distortion ``(k1, k2, p1, p2, k3)`` of the depth image, or None for an
            ideal pinhole; leading dims broadcast to those of ``depth_m``.
        min_depth_m: depths at or below this are invalid, m (finite, >= 0).
        max_depth_m: depths above this are invalid, m (> ``min_depth_m``, may be inf).

    Returns:
        points_cam: (..., H, W, 3) points, m, OpenCV camera frame, in ``depth_m``'s dtype.
        valid: (..., H, W) bool mask of pixels that became points.
    """
    z, valid, x, y = _depth_and_rays(depth_m, K, dist_coeffs, min_depth_m, max_depth_m)
    points = torch.empty(*z.shape, 3, dtype=z.dtype, device=z.device)
    points[..., 2] = z
    torch.mul(z, x, out=points[..., 0])
    torch.mul(z, y, out=points[..., 1])
    return points, valid


def depth_to_world_points(depth_m: torch.Tensor, K: torch.Tensor, T_world_cam: torch.Tensor,
                          dist_coeffs: torch.Tensor | None = None, *, min_depth_m: float = 0.0,
                          max_depth_m: float = math.inf) -> tuple[torch.Tensor, torch.Tensor]:
    """Lift z-depth images to world-frame points: ``T_world_cam`` applied to :func:`backproject_depth`.

    Computed as ``p_world = z (R ray) + t`` with the pixel rays rotated before scaling (O(H + W)
    work without distortion) and ``t`` added to valid pixels only, so no per-point matrix product.

    Args:
        depth_m: (..., H, W) z-depth, m; invalid pixels as in :func:`backproject_depth`.
        K: (..., 3, 3) intrinsics, pixels; leading dims broadcast to those of ``depth_m``.
        T_world_cam: (..., 4, 4) finite rigid pose of the OpenCV camera frame in the world frame, m;
            leading dims broadcast to those of ``depth_m``. Cast to ``depth_m``'s dtype and device.
        dist_coeffs: (..., 5) distortion ``(k1, k2, p1, p2, k3)`` or None.
        min_depth_m: depths at or below this are invalid, m.
        max_depth_m: depths above this are invalid, m.

    Returns:
        points_world: (..., H, W, 3) points, m, world frame; exactly 0 where not valid.
        valid: (..., H, W) bool mask of pixels that became points.
    """
    T = require_shape("T_world_cam", require_floating("T_world_cam", T_world_cam), (4, 4))
    z, valid, x, y = _depth_and_rays(depth_m, K, dist_coeffs, min_depth_m, max_depth_m)
    _require_leading_into("T_world_cam", T.shape[:-2], z.shape[:-2])
    T = check_rigid_transform("T_world_cam", T).to(dtype=z.dtype, device=z.device)
    # Channel by channel, p_world[c] = z (R[c, 0] x + R[c, 1] y + R[c, 2]) + t[c] valid: on CPU,
    # element-wise ops over a trailing dim of 3 (or a transposing copy) are several times slower.
    R, t = T[..., :3, :3, None, None], T[..., :3, 3, None, None]
    valid_f = valid.to(z.dtype)
    points = torch.empty(*z.shape, 3, dtype=z.dtype, device=z.device)
    for c in range(3):
        ray = x * R[..., c, 0, :, :] + (y * R[..., c, 1, :, :] + R[..., c, 2, :, :])
        torch.addcmul(ray * z, valid_f, t[..., c, :, :], out=points[..., c])
    return points, valid
