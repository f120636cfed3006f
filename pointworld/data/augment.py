"""Training augmentations of clip samples.

Each augmentation is a small picklable callable ``(sample, rng) -> sample`` taking a
:class:`~pointworld.data.clip_sample.ClipSample` and a ``numpy.random.Generator`` and returning a NEW
sample (the input is never modified); all randomness comes from ``rng``, so a sample's augmentation is
reproducible from the dataset's per-sample generator. Compose them with :class:`Compose`.

Geometric augmentations are similarities ``x -> s R (x - c) + c`` about the scene centroid ``c`` (mean
of the t = 0 scene points, world frame), with ``R`` orthogonal (a rotation, or a reflection for flips)
and ``s > 0``, applied consistently (:func:`transform_sample`):

- positions (scene points, robot ``xyz``): ``s R (x - c) + c``;
- vectors (scene ``target`` displacements, robot ``velocity`` and ``acceleration``): ``s R v``;
- unit normals (scene ``normals``, robot ``normal``): ``R n`` (still unit; a uniform scale does not
  change a normal's direction);
- robot ``gripper_open``, ``time`` and ``link_id`` channels, colors and ``valid`` are unchanged.

So the transformed target is exactly the transformed future positions minus the transformed start,
and distances between points are multiplied by ``s``. The centroid is a fixed point of every such map,
so :func:`yaw_sample` by ``-a`` undoes one by ``a``, and a flip undoes itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pointworld.data.clip_sample import ClipSample
from pointworld.errors import EmptyCloudError
from pointworld.geometry.checks import require_finite, require_floating, require_shape
from pointworld.robot.flow import FEATURE_LAYOUT

#: An augmentation: ``(sample, rng) -> new sample``.
Augmentation = Callable[[ClipSample, np.random.Generator], ClipSample]

_AXES = {"x": 0, "y": 1, "z": 2}


def _check_call(sample: object, rng: object) -> None:
    if not isinstance(sample, ClipSample):
        raise TypeError(f"sample: expected a ClipSample, got {type(sample).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator, got {type(rng).__name__}")


def scene_centroid(sample: ClipSample) -> torch.Tensor:
    """(3,) mean of the sample's t = 0 scene points, m, world; raises ``EmptyCloudError`` if N = 0."""
    if sample.points.shape[0] == 0:
        raise EmptyCloudError("sample.points: expected at least one scene point to centre on, got N = 0")
    return sample.points.mean(0)


def transform_sample(sample: ClipSample, rotation: torch.Tensor, scale: float = 1.0,
                     center: torch.Tensor | None = None) -> ClipSample:
    """Apply the similarity ``x -> scale * rotation @ (x - center) + center`` to a sample's geometry.

    Args:
        sample: the sample (not modified).
        rotation: (3, 3) orthogonal matrix (det +1 rotation or det -1 reflection), world frame.
        scale: uniform scale factor, > 0.
        center: (3,) fixed point, m, world; default the scene centroid (:func:`scene_centroid`).

    Returns:
        A new sample with points, normals, target and the robot flow's xyz / normal / velocity /
        acceleration channels transformed (see the module docstring); other fields shared.
    """
    require_floating("rotation", rotation)
    require_shape("rotation", rotation, (3, 3), max_leading=0)
    eye = torch.eye(3, dtype=torch.float64)
    r64 = rotation.detach().to("cpu", torch.float64)
    if not torch.allclose(r64 @ r64.T, eye, atol=1e-5):
        raise ValueError(f"rotation: expected an orthogonal (3, 3) matrix, got {r64.tolist()}")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 < scale < math.inf:
        raise ValueError(f"scale: expected a finite number > 0, got {scale!r}")
    if center is None:
        center = scene_centroid(sample)
    require_shape("center", center, (3,), max_leading=0)
    require_finite("center", center)
    dtype = sample.points.dtype
    R = rotation.to(sample.points.device, dtype)
    c = center.to(sample.points.device, dtype)
    sR = R * scale

    def position(x: torch.Tensor) -> torch.Tensor:
        return (x - c) @ sR.T + c

    flow = sample.robot_flow.clone()
    lay = FEATURE_LAYOUT
    flow[..., lay["xyz"]] = position(sample.robot_flow[..., lay["xyz"]])
    flow[..., lay["normal"]] = sample.robot_flow[..., lay["normal"]] @ R.T
    for key in ("velocity", "acceleration"):
        flow[..., lay[key]] = sample.robot_flow[..., lay[key]] @ sR.T
    return sample.replace(points=position(sample.points), normals=sample.normals @ R.T,
                          target=sample.target @ sR.T, robot_flow=flow)


def yaw_matrix(angle_rad: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """(3, 3) rotation by ``angle_rad`` (rad, counter-clockwise seen from +z) about the world z axis."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=dtype)


def yaw_sample(sample: ClipSample, angle_rad: float) -> ClipSample:
    """Rotate a sample by ``angle_rad`` (rad) about the vertical world axis (+z) through its centroid."""
    if not math.isfinite(angle_rad):
        raise ValueError(f"angle_rad: expected a finite angle, got {angle_rad!r}")
    return transform_sample(sample, yaw_matrix(angle_rad))


def mirror_sample(sample: ClipSample, axis: str) -> ClipSample:
    """Mirror a sample across the plane through its centroid normal to world ``axis`` ("x"|"y"|"z")."""
    if axis not in _AXES:
        raise ValueError(f"axis: expected one of {sorted(_AXES)}, got {axis!r}")
    reflection = torch.eye(3, dtype=torch.float64)
    reflection[_AXES[axis], _AXES[axis]] = -1.0
    return transform_sample(sample, reflection)


def _check_number(name: str, value: object, low: float, high: float = math.inf,
                  low_open: bool = False) -> float:
    """Return ``value`` as a float if it is a finite real in [low, high] (or (low, high] if ``low_open``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if low_open else value >= low) and value <= high
    if not ok:
        left = "(" if low_open else "["
        raise ValueError(f"{name}: expected a finite number in {left}{low}, {high}], got {value!r}")
    return float(value)


@dataclass(frozen=True)
class RandomYaw:
    """Rotate about the vertical world axis through the centroid by an angle uniform in
    [-max_angle_rad, max_angle_rad] (rad)."""

    max_angle_rad: float = math.pi

    def __post_init__(self) -> None:
        _check_number("max_angle_rad", self.max_angle_rad, 0.0)

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        _check_call(sample, rng)
        return yaw_sample(sample, float(rng.uniform(-self.max_angle_rad, self.max_angle_rad)))


@dataclass(frozen=True)
class RandomScale:
    """Scale about the centroid by a factor uniform in ``range`` = (low, high), 0 < low <= high;
    positions, displacements, velocities and accelerations all scale."""

    range: tuple[float, float] = (0.9, 1.1)

    def __post_init__(self) -> None:
        if not isinstance(self.range, Sequence) or len(self.range) != 2:
            raise ValueError(f"range: expected (low, high) with 0 < low <= high, got {self.range!r}")
        low = _check_number("range[0]", self.range[0], 0.0, low_open=True)
        _check_number("range[1]", self.range[1], low)

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        _check_call(sample, rng)
        factor = float(rng.uniform(self.range[0], self.range[1]))
        return transform_sample(sample, torch.eye(3, dtype=torch.float64), factor)


@dataclass(frozen=True)
class RandomFlip:
    """With probability ``p``, mirror across the plane through the centroid normal to world ``axis``."""

    axis: str = "y"
    p: float = 0.5

    def __post_init__(self) -> None:
        if self.axis not in _AXES:
            raise ValueError(f"axis: expected one of {sorted(_AXES)}, got {self.axis!r}")
        _check_number("p", self.p, 0.0, 1.0)

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        _check_call(sample, rng)
        if rng.random() < self.p:
            return mirror_sample(sample, self.axis)
        return sample.replace()


@dataclass(frozen=True)
class ColorJitter:
    """Photometric jitter of the scene colors, clipped back to [0, 1]:
    ``clip((colors - g) * k + g + b + e, 0, 1)`` with ``g`` the mean gray level of the sample,
    contrast ``k ~ U(1 - contrast, 1 + contrast)``, brightness ``b ~ U(-brightness, brightness)`` (both
    shared by all points and channels, so hues are kept) and per-point, per-channel noise
    ``e ~ N(0, noise^2)``."""

    brightness: float = 0.1
    contrast: float = 0.1
    noise: float = 0.02

    def __post_init__(self) -> None:
        _check_number("brightness", self.brightness, 0.0, 1.0)
        _check_number("contrast", self.contrast, 0.0, 1.0)
        _check_number("noise", self.noise, 0.0, 1.0)

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        _check_call(sample, rng)
        colors = sample.colors
        k = float(rng.uniform(1.0 - self.contrast, 1.0 + self.contrast))
        b = float(rng.uniform(-self.brightness, self.brightness))
        e = torch.from_numpy(rng.normal(0.0, self.noise, size=tuple(colors.shape)))
        gray = colors.mean() if colors.numel() else colors.new_zeros(())
        out = (colors - gray) * k + gray + b + e.to(colors.device, colors.dtype)
        return sample.replace(colors=out.clamp(0.0, 1.0))


@dataclass(frozen=True)
class PointDropout:
    """Drop a random fraction ``f ~ U(0, max_fraction)`` of the scene points (``floor(f N)`` of them,
    at least one point is always kept): the same rows are removed from points, colors, normals, target
    and valid, the kept points keep their order, so correspondences survive. The robot flow is unchanged."""

    max_fraction: float = 0.2

    def __post_init__(self) -> None:
        _check_number("max_fraction", self.max_fraction, 0.0, 1.0)
        if self.max_fraction >= 1.0:
            raise ValueError(f"max_fraction: expected a number in [0, 1), got {self.max_fraction!r}")

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        _check_call(sample, rng)
        n = int(sample.points.shape[0])
        drop = math.floor(float(rng.uniform(0.0, self.max_fraction)) * n)
        keep_np = np.sort(rng.choice(n, size=n - drop, replace=False))
        keep = torch.from_numpy(keep_np).to(sample.points.device)
        return sample.replace(points=sample.points[keep], colors=sample.colors[keep],
                              normals=sample.normals[keep], target=sample.target[:, keep],
                              valid=sample.valid[:, keep])


@dataclass(frozen=True)
class Compose:
    """Apply ``transforms`` in order, all drawing from the same ``rng``."""

    transforms: tuple[Augmentation, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.transforms, (str, bytes)) or not isinstance(self.transforms, Sequence):
            raise TypeError(f"transforms: expected a sequence of callables, got {type(self.transforms).__name__}")
        for i, t in enumerate(self.transforms):
            if not callable(t):
                raise TypeError(f"transforms[{i}]: expected a callable (sample, rng) -> sample, "
                                f"got {type(t).__name__}")
        object.__setattr__(self, "transforms", tuple(self.transforms))

    def __call__(self, sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        _check_call(sample, rng)
        out = sample.replace()
        for t in self.transforms:
            out = t(out, rng)
        return out


def default_augmentation() -> Compose:
    """The training augmentation: RandomYaw(pi), RandomScale((0.9, 1.1)), RandomFlip("y", 0.5),
    ColorJitter(0.1, 0.1, 0.02), PointDropout(0.2), in this order."""
    return Compose((RandomYaw(), RandomScale(), RandomFlip(), ColorJitter(), PointDropout()))
