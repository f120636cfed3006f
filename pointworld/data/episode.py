"""In-memory episode: a robot's joint trajectory, its cameras and the clips cut from it.

An :class:`Episode` holds S control steps at a fixed rate, the V cameras that watched it and its clips.
A :class:`Clip` is one context frame (RGB-D of every view at ``start_step``) plus the ground-truth
trajectories of N scene points over the horizon T (T + 1 positions, t = 0 included). Arrays are numpy
(this is the I/O layer). The on-disk format is in ``SCHEMA.md``; :mod:`pointworld.data.episode_io`
reads and writes it. Construction validates everything and converts arrays to the schema dtypes;
bad data raises ``ValueError``/``TypeError`` naming the field.
"""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

import numpy as np
import torch

from pointworld.geometry.camera import check_intrinsics
from pointworld.geometry.se3 import check_rigid_transform

#: Allowed values of :attr:`Episode.source`.
SOURCES = ("sim", "real")

_KINDS = {"float": "f", "int": "iu", "uint8": "u", "bool": "b"}


def _array(name: str, value: object, kind: str, dtype: type, shape: tuple[int | None, ...],
           *, finite: bool = True) -> np.ndarray:
    """``value`` as a C-contiguous array of ``dtype``; ``None`` in ``shape`` matches any size."""
    arr = np.asarray(value)
    if arr.dtype.kind not in _KINDS[kind] or (kind == "uint8" and arr.dtype != np.uint8):
        raise TypeError(f"{name}: expected a {np.dtype(dtype).name} array, got dtype {arr.dtype}")
    if arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        want = tuple("?" if s is None else s for s in shape)
        want = str(want).replace("'", "")
        raise ValueError(f"{name}: expected shape {want}, got {arr.shape}")
    if kind == "int" and arr.size and (arr.min() < np.iinfo(dtype).min or arr.max() > np.iinfo(dtype).max):
        raise ValueError(f"{name}: values out of the {np.dtype(dtype).name} range "
                         f"[{arr.min()}, {arr.max()}]")
    out = np.ascontiguousarray(arr, dtype=dtype)
    if finite and kind == "float" and not np.all(np.isfinite(out)):
        raise ValueError(f"{name}: expected finite values, got {int(np.sum(~np.isfinite(out)))} NaN/inf")
    return out


def _in_range(name: str, arr: np.ndarray, lo: float, hi: float) -> None:
    if arr.size and (arr.min() < lo or arr.max() > hi):
        raise ValueError(f"{name}: expected values in [{lo}, {hi}], got range [{arr.min()}, {arr.max()}]")


def _set(obj: object, values: dict) -> None:
    for key, value in values.items():
        object.__setattr__(obj, key, value)


@dataclass(frozen=True, eq=False)
class EpisodeCameras:
    """The V calibrated, static cameras of an episode (one image size for all views).

    Attributes:
        serials: (V,) unique camera serials (non-empty strings).
        K: (V, 3, 3) float64 pinhole intrinsics, pixels.
        T_world_cam: (V, 4, 4) float64 rigid poses of the OpenCV camera frames in the world frame.
        height: image height H, pixels.
        width: image width W, pixels.
        dist_coeffs: (V, 5) float64 Brown-Conrady coefficients (OpenCV order); ``None`` = zeros.
    """

    serials: tuple[str, ...]
    K: np.ndarray
    T_world_cam: np.ndarray
    height: int
    width: int
    dist_coeffs: np.ndarray | None = None

    def __post_init__(self) -> None:
        serials = tuple(self.serials)
        if not serials or not all(isinstance(s, str) and s for s in serials):
            raise ValueError(f"cameras.serials: expected >= 1 non-empty strings, got {serials!r}")
        if len(set(serials)) != len(serials):
            raise ValueError(f"cameras.serials: expected unique serials, got {serials!r}")
        V = len(serials)
        for key in ("height", "width"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
                raise ValueError(f"cameras.{key}: expected a positive integer of pixels, got {value!r}")
        K = _array("cameras.K", self.K, "float", np.float64, (V, 3, 3))
        T = _array("cameras.T_world_cam", self.T_world_cam, "float", np.float64, (V, 4, 4))
        dist = np.zeros((V, 5)) if self.dist_coeffs is None else self.dist_coeffs
        dist = _array("cameras.dist_coeffs", dist, "float", np.float64, (V, 5))
        check_intrinsics("cameras.K", torch.from_numpy(K))
        check_rigid_transform("cameras.T_world_cam", torch.from_numpy(T))
        _set(self, {"serials": serials, "K": K, "T_world_cam": T, "dist_coeffs": dist,
                    "height": int(self.height), "width": int(self.width)})

    @property
    def num_views(self) -> int:
        """Number of views V."""
        return len(self.serials)


@dataclass(frozen=True, eq=False)
class Clip:
    """One context frame and the ground-truth future of its scene points.

    Attributes:
        start_step: control step of the context frame (t = 0 of the clip), index into the episode.
        rgb: (V, H, W, 3) uint8 color of every view at ``start_step``.
        depth: (V, H, W) float32 depth along the optical axis, m; NaN/inf/<= 0 = no measurement.
        points_world: (N, 3) float32 observed scene points at t = 0 (backprojected), m, world frame.
        colors: (N, 3) uint8 RGB of the points.
        view_index: (N,) int32 view v in [0, V) each point was seen in.
        pixel_index: (N,) int32 flat pixel index ``row * W + col`` of the point in its view.
        body_id: (N,) int32 id of the body the point belongs to (-1 unknown/background).
        positions: (T+1, N, 3) float32 ground-truth positions over the clip, m, world frame;
            ``positions[0]`` is the true position at t = 0 (differs from ``points_world`` by sensor
            noise only).
        valid: (T+1, N) bool, False where the ground truth of a point at a step is unknown.
        segmentation: optional (V, H, W) int32 body id per pixel, -1 background.
    """

    start_step: int
    rgb: np.ndarray
    depth: np.ndarray
    points_world: np.ndarray
    colors: np.ndarray
    view_index: np.ndarray
    pixel_index: np.ndarray
    body_id: np.ndarray
    positions: np.ndarray
    valid: np.ndarray
    segmentation: np.ndarray | None = None

    def __post_init__(self) -> None:
        _set(self, self._normalized())

    def _normalized(self) -> dict:
        if isinstance(self.start_step, bool) or not isinstance(self.start_step, (int, np.integer)) \
                or self.start_step < 0:
            raise ValueError(f"start_step: expected an integer >= 0, got {self.start_step!r}")
        rgb = _array("rgb", self.rgb, "uint8", np.uint8, (None, None, None, 3))
        V, H, W = rgb.shape[:3]
        out = {"start_step": int(self.start_step), "rgb": rgb,
               "depth": _array("depth", self.depth, "float", np.float32, (V, H, W), finite=False),
               "points_world": _array("points_world", self.points_world, "float", np.float32, (None, 3))}
        N = out["points_world"].shape[0]
        out["colors"] = _array("colors", self.colors, "uint8", np.uint8, (N, 3))
        for key in ("view_index", "pixel_index", "body_id"):
            out[key] = _array(key, getattr(self, key), "int", np.int32, (N,))
        _in_range("view_index", out["view_index"], 0, V - 1)
        _in_range("pixel_index", out["pixel_index"], 0, H * W - 1)
        _in_range("body_id", out["body_id"], -1, np.iinfo(np.int32).max)
        out["positions"] = _array("positions", self.positions, "float", np.float32, (None, N, 3))
        if out["positions"].shape[0] < 1:
            raise ValueError("positions: expected T+1 >= 1 steps, got 0")
        out["valid"] = _array("valid", self.valid, "bool", np.bool_, (out["positions"].shape[0], N))
        if self.segmentation is not None:
            out["segmentation"] = _array("segmentation", self.segmentation, "int", np.int32, (V, H, W))
            _in_range("segmentation", out["segmentation"], -1, np.iinfo(np.int32).max)
        return out

    @property
    def horizon(self) -> int:
        """Number of future steps T."""
        return int(self.positions.shape[0]) - 1

    @property
    def num_points(self) -> int:
        """Number of scene points N."""
        return int(self.points_world.shape[0])


@dataclass(frozen=True, eq=False)
class Episode:
    """One recording: a joint trajectory of S steps, its cameras and its clips (schema: ``SCHEMA.md``).

    Attributes:
        robot_name: name of the robot (a shipped robot name for simulated data).
        urdf_id: which URDF: a shipped robot name, a path or a content hash.
        control_dt_s: time between control steps, s (> 0).
        seed: seed that generated the episode (any integer; 0 for real recordings).
        created: creation time, ISO 8601 string.
        source: ``"sim"`` or ``"real"``.
        scene: JSON object as a string describing the scene; by convention ``{"objects": [{"name",
            "shape", "size_m", ...}, ...]}`` (see :meth:`scene_objects`).
        joint_names: (J,) names of the actuated joints, the columns of ``joint_positions``.
        joint_positions: (S, J) float32 commanded joint positions, rad or m.
        gripper_open: (S,) float32 gripper opening command in [0, 1] (1 = open).
        cameras: the V cameras.
        horizon: T, future steps of every clip (each clip has T + 1 positions).
        clips: the clips (all of them, or the subset a lazy read asked for; see ``read_episode``).
        T_world_base: optional (4, 4) float64 pose of the robot base in the world frame.
        split_hint: optional split suggested by the writer (``"train"``, ``"val"``, ``"test"``).
    """

    robot_name: str
    urdf_id: str
    control_dt_s: float
    seed: int
    created: str
    source: str
    scene: str
    joint_names: tuple[str, ...]
    joint_positions: np.ndarray
    gripper_open: np.ndarray
    cameras: EpisodeCameras
    horizon: int
    clips: tuple[Clip, ...] = ()
    T_world_base: np.ndarray | None = None
    split_hint: str | None = None

    def __post_init__(self) -> None:
        _set(self, self._normalized())

    def validate(self) -> None:
        """Re-run every check (after arrays were modified in place); raises like the constructor."""
        self._normalized()
        for c in self.clips:
            c._normalized()

    def _normalized(self) -> dict:
        out = _check_attributes(self)
        names = tuple(self.joint_names)
        if not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
            raise ValueError(f"joint_names: expected unique non-empty strings, got {names!r}")
        out["joint_names"] = names
        q = _array("joint_positions", self.joint_positions, "float", np.float32, (None, len(names)))
        S = q.shape[0]
        if S < 1:
            raise ValueError("joint_positions: expected S >= 1 control steps, got 0")
        g = _array("gripper_open", self.gripper_open, "float", np.float32, (S,))
        _in_range("gripper_open", g, 0.0, 1.0)
        out.update(joint_positions=q, gripper_open=g)
        if self.T_world_base is not None:
            T = _array("T_world_base", self.T_world_base, "float", np.float64, (4, 4))
            out["T_world_base"] = check_rigid_transform("T_world_base", torch.from_numpy(T)).numpy()
        if not isinstance(self.cameras, EpisodeCameras):
            raise TypeError(f"cameras: expected EpisodeCameras, got {type(self.cameras).__name__}")
        out["clips"] = tuple(self.clips)
        for i, clip in enumerate(out["clips"]):
            _check_clip_fits(i, clip, self.cameras, out["horizon"], S)
        return out

    @property
    def num_steps(self) -> int:
        """Number of control steps S."""
        return int(self.joint_positions.shape[0])

    def scene_objects(self) -> list[dict]:
        """The ``objects`` list of :attr:`scene` (empty if the scene has none)."""
        objects = json.loads(self.scene).get("objects", [])
        return list(objects) if isinstance(objects, list) else []


def _check_attributes(ep: Episode) -> dict:
    for key in ("robot_name", "urdf_id"):
        if not isinstance(getattr(ep, key), str) or not getattr(ep, key):
            raise ValueError(f"{key}: expected a non-empty string, got {getattr(ep, key)!r}")
    dt = ep.control_dt_s
    if isinstance(dt, bool) or not isinstance(dt, (int, float, np.number)) or not 0 < dt < np.inf:
        raise ValueError(f"control_dt_s: expected a finite number of seconds > 0, got {dt!r}")
    for key, lo in (("seed", None), ("horizon", 1)):
        value = getattr(ep, key)
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (lo and value < lo):
            raise ValueError(f"{key}: expected an integer{f' >= {lo}' if lo else ''}, got {value!r}")
    if not np.iinfo(np.int64).min <= ep.seed <= np.iinfo(np.int64).max:
        raise ValueError(f"seed: expected an integer that fits in int64, got {ep.seed!r}")
    try:
        datetime.datetime.fromisoformat(ep.created)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"created: expected an ISO 8601 time string, got {ep.created!r}") from exc
    if ep.source not in SOURCES:
        raise ValueError(f"source: expected one of {SOURCES}, got {ep.source!r}")
    try:
        scene = json.loads(ep.scene)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"scene: expected a JSON object as a string, got {ep.scene!r:.80}") from exc
    if not isinstance(scene, dict):
        raise ValueError(f"scene: expected a JSON object, got {type(scene).__name__}")
    if ep.split_hint is not None and ep.split_hint not in ("train", "val", "test"):
        raise ValueError(f"split_hint: expected None, 'train', 'val' or 'test', got {ep.split_hint!r}")
    return {"control_dt_s": float(dt), "seed": int(ep.seed), "horizon": int(ep.horizon)}


def _check_clip_fits(i: int, clip: Clip, cameras: EpisodeCameras, horizon: int, S: int) -> None:
    if not isinstance(clip, Clip):
        raise TypeError(f"clips[{i}]: expected a Clip, got {type(clip).__name__}")
    want = (cameras.num_views, cameras.height, cameras.width)
    if clip.rgb.shape[:3] != want:
        raise ValueError(f"clips[{i}].rgb: expected (V, H, W) = {want} from the cameras, "
                         f"got {clip.rgb.shape[:3]}")
    if clip.horizon != horizon:
        raise ValueError(f"clips[{i}].positions: expected T+1 = {horizon + 1} steps (horizon), "
                         f"got {clip.horizon + 1}")
    if clip.start_step + horizon > S - 1:
        raise ValueError(f"clips[{i}].start_step: start_step + horizon = {clip.start_step} + {horizon} "
                         f"exceeds the last control step {S - 1}")
