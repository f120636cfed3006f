"""Synthetic camera views of a ChArUco board through the exact camera model.

Used by the tests and by users who want to check a calibration setup before printing a board. The
board frame is the one documented in :mod:`pointworld.capture.charuco`.
"""

from __future__ import annotations

import numpy as np
import torch

from pointworld.capture.charuco import CharucoBoardSpec, _check_camera, _cv2
from pointworld.geometry.distortion import undistort_normalized
from pointworld.geometry.se3 import check_rigid_transform


def _texture_from_board(spec: CharucoBoardSpec, pixels_per_square: int) -> np.ndarray:
    """(3, 3) map from board-plane (X, Y, 1), m, to texture pixels (pixel centres at integers)."""
    scale = pixels_per_square / float(spec.square_length_m)
    return np.array([[scale, 0.0, -0.5], [0.0, scale, -0.5], [0.0, 0.0, 1.0]])


def _distorted_texture_maps(K: np.ndarray, dist: np.ndarray, tex_from_ray: np.ndarray,
                            height: int, width: int, f: int) -> tuple[np.ndarray, np.ndarray]:
    """For every sub-pixel of an f-times finer grid, the texture pixel it sees (remap maps).

    Rays are undistorted on the pixel grid padded by one pixel and mapped to homogeneous texture
    coordinates (linear in the ray), which are interpolated bilinearly to the sub-pixel centres
    (``cv2.resize`` puts sub-pixel U at pixel ``(U - (f - 1) / 2) / f``) and divided there.
    """
    cv2 = _cv2()
    u, v = np.meshgrid(np.arange(-1.0, width + 1), np.arange(-1.0, height + 1))
    y_d = (v - K[1, 2]) / K[1, 1]
    x_d = (u - K[0, 2] - K[0, 1] * y_d) / K[0, 0]
    xy_d = torch.from_numpy(np.stack([x_d, y_d], axis=-1).reshape(-1, 2))
    xy = undistort_normalized(xy_d, torch.from_numpy(dist)).numpy().reshape(height + 2, width + 2, 2)
    p = xy @ tex_from_ray[:, :2].T + tex_from_ray[:, 2]  # (H+2, W+2, 3) homogeneous texture coords
    p = cv2.resize(p.astype(np.float32), ((width + 2) * f, (height + 2) * f),
                   interpolation=cv2.INTER_LINEAR)[f:-f, f:-f]
    in_front = p[..., 2] > 0  # 1 / depth at which the ray meets the board plane
    with np.errstate(divide="ignore", invalid="ignore"):
        map_x = np.where(in_front, p[..., 0] / p[..., 2], np.float32(-1e6))
        map_y = np.where(in_front, p[..., 1] / p[..., 2], np.float32(-1e6))
    return map_x, map_y


def render_board_view(spec: CharucoBoardSpec, K: np.ndarray, T_cam_board: np.ndarray, height: int,
                      width: int, *, dist_coeffs: np.ndarray | None = None,
                      background: tuple[int, int, int] = (128, 128, 128), pixels_per_square: int = 96,
                      supersample: int = 3, noise_std: float = 0.0, blur_sigma_px: float = 0.0,
                      seed: int = 0) -> np.ndarray:
    """Render what a camera sees of a flat board (for tests and for checking a setup).

    Every sub-pixel of a ``supersample``-times finer grid is traced through the exact camera model
    (undistorted with ``dist_coeffs``, then intersected with the board plane z = 0) into the board
    texture from ``generateImage``, sampled bilinearly and box-filtered down to the image size.

    Args:
        spec: the board.
        K: (3, 3) intrinsics, pixels.
        T_cam_board: (4, 4) board pose in the OpenCV camera frame, m; the whole board must be in
            front of the camera (z > 0).
        height: image height H, pixels.
        width: image width W, pixels.
        dist_coeffs: (5,) (k1, k2, p1, p2, k3) OpenCV order, or None for an ideal pinhole.
        background: RGB color around the board, 0-255.
        pixels_per_square: board texture resolution.
        supersample: sub-pixels per image pixel along each axis (antialiasing).
        noise_std: std of additive Gaussian noise, 0-255 intensity units.
        blur_sigma_px: std of a Gaussian blur applied before the noise, pixels (0 = none).
        seed: seed of the noise.

    Returns:
        (H, W, 3) uint8 RGB image.
    """
    cv2 = _cv2()
    K, dist = _check_camera(K, dist_coeffs)
    T = check_rigid_transform("T_cam_board", torch.as_tensor(T_cam_board, dtype=torch.float64)).numpy()
    for name, value in (("height", height), ("width", width), ("pixels_per_square", pixels_per_square),
                        ("supersample", supersample)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    size = np.array([spec.squares_x, spec.squares_y]) * float(spec.square_length_m)
    outline = np.array([[0, 0, 0], [size[0], 0, 0], [0, size[1], 0], [*size, 0]])
    if np.any(outline @ T[:3, :3].T[:, 2] + T[2, 3] <= 0):
        raise ValueError("T_cam_board: expected the whole board in front of the camera (z > 0), "
                         f"got board corner depths {(outline @ T[:3, :3].T + T[:3, 3])[:, 2].tolist()}")
    texture = cv2.cvtColor(spec.make_board().generateImage(
        (spec.squares_x * pixels_per_square, spec.squares_y * pixels_per_square), marginSize=0),
        cv2.COLOR_GRAY2RGB)
    f = supersample
    fine_from_pixel = np.array([[f, 0.0, (f - 1) / 2], [0.0, f, (f - 1) / 2], [0.0, 0.0, 1.0]])
    tex_from_board = _texture_from_board(spec, pixels_per_square)
    ray_from_board = T[:3][:, [0, 1, 3]]  # board plane (X, Y, 1) -> camera ray (x z, y z, z)
    border = {"borderMode": cv2.BORDER_CONSTANT, "borderValue": tuple(int(c) for c in background)}
    if np.any(dist):
        board_from_ray = np.linalg.inv(ray_from_board)
        map_x, map_y = _distorted_texture_maps(K, dist, tex_from_board @ board_from_ray,
                                               height, width, f)
        fine = cv2.remap(texture, map_x, map_y, cv2.INTER_LINEAR, **border)
    else:
        homography = fine_from_pixel @ K @ ray_from_board @ np.linalg.inv(tex_from_board)
        fine = cv2.warpPerspective(texture, homography, (width * f, height * f),
                                   flags=cv2.INTER_LINEAR, **border)
    image = cv2.resize(fine, (width, height), interpolation=cv2.INTER_AREA).astype(np.float64)
    if blur_sigma_px > 0:
        image = cv2.GaussianBlur(image, (0, 0), blur_sigma_px)
    if noise_std > 0:
        image = image + np.random.default_rng(seed).normal(0.0, noise_std, image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)
