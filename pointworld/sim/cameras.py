"""Randomized camera rigs for simulated scenes: V pinhole cameras around nominal viewpoints of the table.

Every camera looks at (a jittered point near) the table centre from one of three nominal viewpoints,
given relative to the table centre in the world frame (robot base at the origin, +x away from the robot
for the shipped table placements, +z up):

- ``front_left``: in front of the table on its +y side, raised, looking down at ~35 deg,
- ``front_right``: the mirror image on the -y side,
- ``top``: high above the table, slightly towards the far side, looking almost straight down.

View ``i`` uses nominal viewpoint ``i``; the camera centre is jittered uniformly in a cube of half-side
``position_jitter_m`` and the look-at point in a cube of half-side ``look_at_jitter_m``. The image "up"
is the world +z projected into the image (no roll), except for the top view, whose image up is world +x.
Poses are OpenCV optical frames (+x right, +y down, +z forward), ``T_world_cam`` with
``p_world = T_world_cam @ p_cam``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pointworld.capture.synthetic import look_at
from pointworld.geometry.checks import require_int

#: Nominal camera centres relative to the table centre (x, y, z), m, and image-up direction per view.
NOMINAL_VIEWPOINTS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "front_left": ((0.75, 0.65, 0.6), (0.0, 0.0, 1.0)),
    "front_right": ((0.75, -0.65, 0.6), (0.0, 0.0, 1.0)),
    "top": ((0.15, 0.0, 1.2), (1.0, 0.0, 0.0)),
}
VIEW_ORDER: tuple[str, ...] = ("front_left", "front_right", "top")


@dataclass
class CameraRigConfig:
    """A rig of 1–3 randomized pinhole cameras.

    Attributes:
        n_views: number of cameras V (1 to 3); view i uses ``VIEW_ORDER[i]``.
        width: image width W, pixels.
        height: image height H, pixels.
        fov_y_deg: vertical field of view, degrees, in (0, 180).
        position_jitter_m: half-side of the uniform cube the camera centre is drawn from, m (>= 0).
        look_at_jitter_m: half-side of the uniform cube the look-at point is drawn from, m (>= 0).
        seed: default seed of :func:`sample_cameras` when no generator is given.
    """

    n_views: int = 2
    width: int = 320
    height: int = 240
    fov_y_deg: float = 55.0
    position_jitter_m: float = 0.08
    look_at_jitter_m: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        require_int("n_views", self.n_views, 1)
        if self.n_views > len(VIEW_ORDER):
            raise ValueError(f"n_views: expected 1 to {len(VIEW_ORDER)} cameras, got {self.n_views}")
        require_int("width", self.width, 1)
        require_int("height", self.height, 1)
        if isinstance(self.fov_y_deg, bool) or not isinstance(self.fov_y_deg, (int, float)) \
                or not 0.0 < self.fov_y_deg < 180.0:
            raise ValueError(f"fov_y_deg: expected a number in (0, 180) degrees, got {self.fov_y_deg!r}")
        for name in ("position_jitter_m", "look_at_jitter_m"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < math.inf:
                raise ValueError(f"{name}: expected a finite number >= 0 m, got {value!r}")
        require_int("seed", self.seed, 0)

    def intrinsics(self) -> np.ndarray:
        """(3, 3) float64 pinhole intrinsics, pixels: square pixels, centred principal point, the
        vertical field of view spanning the full image height (MuJoCo/OpenGL convention)."""
        f = 0.5 * self.height / math.tan(math.radians(self.fov_y_deg) / 2.0)
        return np.array([[f, 0.0, 0.5 * (self.width - 1)], [0.0, f, 0.5 * (self.height - 1)], [0.0, 0.0, 1.0]])


def sample_cameras(config: CameraRigConfig, table_center: np.ndarray | tuple[float, float, float],
                   rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Draw the V camera poses of a rig around the table.

    Args:
        config: the rig.
        table_center: (3,) centre of the table top (x, y, top z), m, world frame.
        rng: random generator; None uses ``np.random.default_rng(config.seed)``.

    Returns:
        K: (V, 3, 3) float64 intrinsics, pixels (identical for all views).
        T_world_cam: (V, 4, 4) float64 poses of the OpenCV optical frames, m, world frame.
    """
    if not isinstance(config, CameraRigConfig):
        raise TypeError(f"config: expected a CameraRigConfig, got {type(config).__name__}")
    center = np.asarray(table_center, dtype=np.float64)
    if center.shape != (3,) or not np.all(np.isfinite(center)):
        raise ValueError(f"table_center: expected 3 finite coordinates (m), got {table_center!r}")
    if rng is None:
        rng = np.random.default_rng(config.seed)
    elif not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy Generator or None, got {type(rng).__name__}")
    poses = []
    for name in VIEW_ORDER[:config.n_views]:
        offset, up = NOMINAL_VIEWPOINTS[name]
        eye = center + np.asarray(offset) + rng.uniform(-1.0, 1.0, 3) * config.position_jitter_m
        target = center + rng.uniform(-1.0, 1.0, 3) * config.look_at_jitter_m
        poses.append(look_at(eye, target, up))
    K = np.broadcast_to(config.intrinsics(), (config.n_views, 3, 3)).copy()
    return K, np.stack(poses)


def check_camera_rig(K: object, T_world_cam: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert camera arrays: K (V, 3, 3) pixels, T_world_cam (V, 4, 4) m (numpy or torch);
    returns both as float64 numpy arrays. Raises ``ValueError`` naming the argument."""
    K = np.asarray(K.detach().cpu() if hasattr(K, "detach") else K, dtype=np.float64)
    T = np.asarray(T_world_cam.detach().cpu() if hasattr(T_world_cam, "detach") else T_world_cam,
                   dtype=np.float64)
    if K.ndim != 3 or K.shape[1:] != (3, 3) or not np.all(np.isfinite(K)) or np.any(K[:, [0, 1], [0, 1]] <= 0):
        raise ValueError(f"K: expected finite (V, 3, 3) intrinsics with fx, fy > 0, got shape {K.shape}")
    if T.shape != (K.shape[0], 4, 4) or not np.all(np.isfinite(T)):
        raise ValueError(f"T_world_cam: expected finite ({K.shape[0]}, 4, 4) poses, got shape {T.shape}")
    R = T[:, :3, :3]
    if np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max() > 1e-5 or np.any(np.linalg.det(R) < 0):
        raise ValueError("T_world_cam: expected rigid transforms (orthonormal rotation, det +1)")
    return K, T
