"""Headless RGB, depth and segmentation rendering of a MuJoCo scene from arbitrary pinhole cameras.

``MUJOCO_GL`` and ``PYOPENGL_PLATFORM`` default to ``egl`` (set by :mod:`pointworld.sim` before any of
its modules imports MuJoCo, so an environment that already chose ``osmesa`` or ``glfw`` keeps it; both
must name the same backend). If ``mujoco`` was imported earlier without ``MUJOCO_GL`` (so it chose GLFW,
which needs a display), importing this module points MuJoCo's renderer at the headless backend anyway
(``_ensure_headless_context``); only ``PYOPENGL_PLATFORM`` must then already be right, or PyOpenGL not
imported yet.

Cameras: MuJoCo's OpenGL camera looks along its ``forward`` vector with ``up`` pointing up in the image;
from an OpenCV optical frame (x right, y down, z forward) that is ``forward = R[:, 2]``,
``up = -R[:, 1]``. The frustum is set from K directly (at the near plane n: the image spans columns
-0.5 … W-0.5 and rows -0.5 … H-0.5), so any fx, fy, cx, cy render exactly, not only a centred fovy.

Depth: the renderer's depth is z-depth (distance along the optical axis, not along the pixel ray), in
metres. Verified against ``mujoco.mj_ray`` with rays of camera-frame z = 1 (``tests/sim/test_render.py``):
the hit parameter equals the rendered depth within ~1e-4 m. Background pixels (nothing hit: the far
plane) get depth 0 (invalid) and segmentation -1.

Segmentation: body id per pixel. Geoms map to ``model.geom_bodyid``; a flex (the cloth) maps to
:func:`flex_segmentation_body`, the parent body of its vertex bodies (``cloth_root`` in our scenes), a
body with no geoms of its own, so its id marks exactly the flex pixels; anything else (skins, sites,
decor) gives -1.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import mujoco
import numpy as np

from pointworld.geometry.checks import require_positive
from pointworld.sim.cameras import check_camera_rig


def _ensure_headless_context() -> None:
    """If ``mujoco`` was imported before ``MUJOCO_GL`` was set (it then picked GLFW, which needs a
    display), switch its renderer to the backend named by ``MUJOCO_GL`` now (EGL or OSMesa)."""
    from mujoco.rendering.classic import gl_context

    backend = os.environ.get("MUJOCO_GL", "").lower()
    if getattr(gl_context, "_MUJOCO_GL", None) != "" or backend not in ("egl", "osmesa"):
        return
    if backend == "egl":
        from mujoco.egl import GLContext
    else:
        from mujoco.osmesa import GLContext
    gl_context.GLContext = GLContext


_ensure_headless_context()
_RENDERERS: dict[tuple[int, int], tuple[mujoco.MjModel, mujoco.Renderer]] = {}


def flex_segmentation_body(model: mujoco.MjModel, flex_id: int) -> int:
    """Body id that stands for flex ``flex_id`` in segmentation images: the parent of its first vertex
    body (for a flex without vertex bodies, the world body 0)."""
    first = int(model.flex_vertbodyid[model.flex_vertadr[flex_id]])
    return int(model.body_parentid[first]) if first > 0 else 0


def _renderer(model: mujoco.MjModel, height: int, width: int) -> mujoco.Renderer:
    """One cached renderer per image size; a new model replaces (and closes) the cached ones."""
    key = (height, width)
    cached = _RENDERERS.get(key)
    if cached is not None and cached[0] is model:
        return cached[1]
    for old_model, old in list(_RENDERERS.values()):
        if old_model is not model:
            old.close()
    for k in [k for k, (m, _) in _RENDERERS.items() if m is not model]:
        del _RENDERERS[k]
    renderer = mujoco.Renderer(model, height=height, width=width)
    _RENDERERS[key] = (model, renderer)
    return renderer


def _set_camera(renderer: mujoco.Renderer, K: np.ndarray, T_world_cam: np.ndarray, height: int,
                width: int) -> None:
    """Overwrite the scene's GL cameras (both eyes) with the OpenCV camera (K, T_world_cam)."""
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    for cam in renderer.scene.camera:
        n = float(cam.frustum_near)
        left, right = n * (-0.5 - cx) / fx, n * (width - 0.5 - cx) / fx
        cam.pos[:] = t
        cam.forward[:] = R[:, 2]
        cam.up[:] = -R[:, 1]
        cam.frustum_center = 0.5 * (left + right)
        cam.frustum_width = 0.5 * (right - left)
        cam.frustum_top = n * (cy + 0.5) / fy
        cam.frustum_bottom = -n * (height - 0.5 - cy) / fy
        cam.orthographic = 0


def _segmentation_lookup(model: mujoco.MjModel, seg: np.ndarray) -> np.ndarray:
    """(H, W, 2) (objid, objtype) -> (H, W) int32 body id or -1."""
    objid, objtype = seg[..., 0], seg[..., 1]
    out = np.full(objid.shape, -1, dtype=np.int32)
    geom = (objtype == int(mujoco.mjtObj.mjOBJ_GEOM)) & (objid >= 0)
    out[geom] = model.geom_bodyid[objid[geom]]
    flex = (objtype == int(mujoco.mjtObj.mjOBJ_FLEX)) & (objid >= 0)
    if flex.any():
        table = np.array([flex_segmentation_body(model, f) for f in range(model.nflex)], dtype=np.int32)
        out[flex] = table[objid[flex]]
    return out


def render_views(model: mujoco.MjModel, data: mujoco.MjData, K: np.ndarray, T_world_cam: np.ndarray,
                 height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render V pinhole views of the current state of ``data``.

    Call ``mujoco.mj_forward`` first if ``qpos`` changed since the last step (``mj_step`` leaves body
    poses one step behind ``qpos``). Image sizes beyond the model's offscreen buffer
    (``model.vis.global_.offwidth/offheight``, 640 x 480 by default) raise ``ValueError``.

    Args:
        model, data: the MuJoCo model and its state.
        K: (V, 3, 3) intrinsics, pixels (numpy or torch).
        T_world_cam: (V, 4, 4) poses of the OpenCV optical frames, m, world frame.
        height, width: image size H, W, pixels.

    Returns:
        rgb: (V, H, W, 3) uint8.
        depth: (V, H, W) float32 z-depth, m; 0 where nothing was hit (invalid).
        segmentation: (V, H, W) int32 body id per pixel, -1 for background.
    """
    if not isinstance(model, mujoco.MjModel) or not isinstance(data, mujoco.MjData):
        raise TypeError(f"model, data: expected mujoco.MjModel and mujoco.MjData, got "
                        f"{type(model).__name__} and {type(data).__name__}")
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1 pixels, got {value!r}")
    K, T = check_camera_rig(K, T_world_cam)
    renderer = _renderer(model, height, width)
    V = K.shape[0]
    rgb = np.empty((V, height, width, 3), dtype=np.uint8)
    depth = np.empty((V, height, width), dtype=np.float32)
    seg = np.empty((V, height, width), dtype=np.int32)
    seg_raw = np.empty((height, width, 2), dtype=np.int32)
    for v in range(V):
        renderer.update_scene(data)
        _set_camera(renderer, K[v], T[v], height, width)
        renderer.disable_depth_rendering()
        renderer.disable_segmentation_rendering()
        renderer.render(out=rgb[v])
        renderer.enable_depth_rendering()
        renderer.render(out=depth[v])
        renderer.disable_depth_rendering()
        renderer.enable_segmentation_rendering()
        renderer.render(out=seg_raw)
        renderer.disable_segmentation_rendering()
        seg[v] = _segmentation_lookup(model, seg_raw)
    depth[seg < 0] = 0.0
    return rgb, depth, seg


@dataclass
class DepthNoiseConfig:
    """Sensor-like corruption of rendered depth (structured-light / stereo RGB-D cameras).

    Attributes:
        sigma_coeff_per_m: a in the depth-dependent Gaussian noise ``sigma = a * z**2``, 1/m
            (0.0015 gives 1.5 mm at 1 m, 6 mm at 2 m); >= 0.
        edge_threshold_m: a pixel is on a depth discontinuity if a 4-neighbour differs by more than
            this (background pixels count as infinitely far), m; > 0.
        edge_dropout: probability that a pixel on a discontinuity is lost (depth 0), in [0, 1].
        holes_per_view: mean number (Poisson) of random elliptic holes per image, >= 0.
        hole_radius_px: (min, max) radius of a hole, pixels.
    """

    sigma_coeff_per_m: float = 0.0015
    edge_threshold_m: float = 0.03
    edge_dropout: float = 0.5
    holes_per_view: float = 2.0
    hole_radius_px: tuple[float, float] = (2.0, 8.0)

    def __post_init__(self) -> None:
        for name in ("sigma_coeff_per_m", "holes_per_view"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
                raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
        require_positive("edge_threshold_m", self.edge_threshold_m)
        p = self.edge_dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"edge_dropout: expected a probability in [0, 1], got {p!r}")
        r = self.hole_radius_px
        if not (isinstance(r, (tuple, list)) and len(r) == 2 and all(isinstance(x, (int, float)) for x in r)
                and 0 < r[0] <= r[1] < math.inf):
            raise ValueError(f"hole_radius_px: expected a pair 0 < min <= max pixels, got {r!r}")
        self.hole_radius_px = (float(r[0]), float(r[1]))


def _edges(depth: np.ndarray, threshold: float) -> np.ndarray:
    """(V, H, W) bool: valid pixels with a 4-neighbour more than ``threshold`` m away (or invalid)."""
    z = np.where(depth > 0, depth, np.inf)
    edge = np.zeros(depth.shape, dtype=bool)
    for axis in (1, 2):
        with np.errstate(invalid="ignore"):  # inf - inf (both invalid) is nan: masked out below
            jump = ~(np.abs(np.diff(z, axis=axis)) <= threshold)
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        edge[tuple(lo)] |= jump
        edge[tuple(hi)] |= jump
    return edge & (depth > 0)


def add_depth_noise(depth: np.ndarray, config: DepthNoiseConfig, rng: np.random.Generator) -> np.ndarray:
    """Corrupt rendered depth like a real RGB-D sensor (returns a new array; invalid stays 0).

    Order: Gaussian noise ``N(0, (a z^2)^2)`` on valid pixels, then dropout of discontinuity pixels
    with probability ``edge_dropout``, then ``Poisson(holes_per_view)`` elliptic holes per view (depth 0).

    Args:
        depth: (V, H, W) float32 z-depth, m, 0 = invalid.
        config: the noise model.
        rng: random generator (the same seed gives the same noise).

    Returns:
        (V, H, W) float32 noisy depth, m; 0 where lost. Noise never makes a depth <= 0 (such pixels
        become invalid, 0).
    """
    if not isinstance(config, DepthNoiseConfig):
        raise TypeError(f"config: expected a DepthNoiseConfig, got {type(config).__name__}")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy Generator, got {type(rng).__name__}")
    depth = np.asarray(depth)
    if depth.ndim != 3 or not np.issubdtype(depth.dtype, np.floating):
        raise ValueError(f"depth: expected a float (V, H, W) array, m, got {depth.dtype} {depth.shape}")
    valid = depth > 0
    z = depth.astype(np.float64)
    noisy = z + rng.standard_normal(z.shape) * config.sigma_coeff_per_m * z ** 2
    drop = _edges(depth, config.edge_threshold_m) & (rng.random(z.shape) < config.edge_dropout)
    noisy[~valid | drop | (noisy <= 0)] = 0.0
    V, H, W = depth.shape
    rows, cols = np.arange(H)[:, None], np.arange(W)[None, :]
    for v in range(V):
        for _ in range(rng.poisson(config.holes_per_view)):
            r0, c0 = rng.uniform(0, H), rng.uniform(0, W)
            ry, rx = rng.uniform(*config.hole_radius_px, size=2)
            noisy[v][((rows - r0) / ry) ** 2 + ((cols - c0) / rx) ** 2 <= 1.0] = 0.0
    return noisy.astype(np.float32)
