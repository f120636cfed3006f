"""Ground truth of simulated scene points: which body each observed point belongs to, and where it goes.

Rigid points follow their body: ``p_t = T_world_body(t) @ inv(T_world_body(0)) @ p_0`` (static bodies
such as the table and floor do not move, so their points stay). Flex (cloth) points follow the flex
vertices through a fixed binding made at t = 0 (:func:`bind_flex_points`), an approximation: each point
is tied to its k nearest vertices with inverse-distance weights ``w`` (summing to 1) plus the world-frame
offset ``o = p_0 - sum_i w_i v_i(0)``, and moves as ``p_t = sum_i w_i v_i(t) + o``. Exact while the cloth
translates; under bending the error is about the offset (< half the vertex spacing plus the flex radius,
a few mm for our 3 cm grid) times the local rotation.

Typical use (one clip)::

    rgb, depth, seg = render_views(env.model, env.data, K, T, H, W)
    pts = scene_points(env.model, rgb, depth, seg, K, T, robot_body_ids(env))
    binding = bind_flex_points(env.model, env.data, pts.true_points, pts.body_id)
    rec = record_clip(env, q_traj, gripper)
    positions, valid = track_points(pts.true_points, pts.body_id, rec.body_poses, binding, rec.flex_vertices)
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np
import torch

from pointworld.geometry.camera import depth_to_world_points
from pointworld.geometry.checks import require_int
from pointworld.sim.cameras import check_camera_rig
from pointworld.sim.render import flex_segmentation_body


@dataclass(frozen=True)
class ScenePoints:
    """Observed non-robot scene points of one frame (numpy arrays, N points).

    Attributes:
        points_world: (N, 3) float64 points backprojected from the observed depth, m, world frame.
        true_points: (N, 3) float64 the same pixels backprojected from the noise-free depth, m.
        colors: (N, 3) uint8 RGB.
        view_index: (N,) int32 view of each point.
        pixel_index: (N,) int32 flat pixel index ``row * W + col``.
        body_id: (N,) int32 body of each point (flex points: :func:`flex_segmentation_body`).
    """

    points_world: np.ndarray
    true_points: np.ndarray
    colors: np.ndarray
    view_index: np.ndarray
    pixel_index: np.ndarray
    body_id: np.ndarray


def robot_body_ids(env: object) -> np.ndarray:
    """(L,) int64 body ids of the robot's links in a reset ``SimEnv`` (to exclude robot pixels)."""
    model = env.model
    if model is None:
        raise RuntimeError("env: call reset() before asking for robot bodies")
    return np.array([mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, n) for n in env.robot.link_names],
                    dtype=np.int64)


def scene_points(model: mujoco.MjModel, rgb: np.ndarray, depth: np.ndarray, segmentation: np.ndarray,
                 K: np.ndarray, T_world_cam: np.ndarray, exclude_body_ids: np.ndarray,
                 observed_depth: np.ndarray | None = None) -> ScenePoints:
    """Backproject the valid, non-excluded (robot) pixels of V views into world points.

    A pixel becomes a point if its noise-free depth and its observed depth are both > 0, its
    segmentation is a body (>= 0) and that body is not in ``exclude_body_ids``.

    Args:
        model: the MuJoCo model (for the body count).
        rgb: (V, H, W, 3) uint8 colors.
        depth: (V, H, W) noise-free z-depth, m, 0 = invalid.
        segmentation: (V, H, W) int32 body id per pixel, -1 background.
        K: (V, 3, 3) intrinsics, pixels.
        T_world_cam: (V, 4, 4) OpenCV optical frames in the world, m.
        exclude_body_ids: (L,) body ids whose pixels are dropped (the robot's links).
        observed_depth: optional (V, H, W) noisy depth, m (from :func:`add_depth_noise`); None = ``depth``.

    Returns:
        The points, in view-major then row-major pixel order.
    """
    K, T = check_camera_rig(K, T_world_cam)
    V = K.shape[0]
    depth = np.asarray(depth)
    if depth.ndim != 3 or depth.shape[0] != V:
        raise ValueError(f"depth: expected ({V}, H, W) z-depth in m, got shape {depth.shape}")
    shape = depth.shape
    obs = depth if observed_depth is None else np.asarray(observed_depth)
    for name, a, s in (("rgb", rgb, shape + (3,)), ("segmentation", segmentation, shape),
                       ("observed_depth", obs, shape)):
        if np.shape(a) != s:
            raise ValueError(f"{name}: expected shape {s}, got {np.shape(a)}")
    seg = np.asarray(segmentation)
    if seg.max(initial=-1) >= model.nbody:
        raise ValueError(f"segmentation: body ids must be < model.nbody={model.nbody}, got {seg.max()}")
    exclude = np.zeros(model.nbody + 1, dtype=bool)
    exclude[np.asarray(exclude_body_ids, dtype=np.int64)] = True
    keep = (depth > 0) & (obs > 0) & (seg >= 0) & ~exclude[seg]
    Tt = torch.from_numpy(T)
    true_pts = depth_to_world_points(torch.from_numpy(depth.astype(np.float64)), torch.from_numpy(K),
                                     Tt)[0].numpy()
    obs_pts = true_pts if obs is depth else depth_to_world_points(
        torch.from_numpy(obs.astype(np.float64)), torch.from_numpy(K), Tt)[0].numpy()
    view, row, col = np.nonzero(keep)
    return ScenePoints(points_world=obs_pts[keep], true_points=true_pts[keep],
                       colors=np.asarray(rgb)[keep].astype(np.uint8), view_index=view.astype(np.int32),
                       pixel_index=(row * shape[2] + col).astype(np.int32),
                       body_id=seg[keep].astype(np.int32))


@dataclass(frozen=True)
class FlexBinding:
    """How flex (cloth) points follow the flex vertices (see the module docstring).

    Attributes:
        is_flex: (N,) bool, True for points bound to a flex.
        vertex_index: (N, k) int64 global flex vertex indices (into ``data.flexvert_xpos``); 0 if unbound.
        weights: (N, k) float64 inverse-distance weights summing to 1 (0 if unbound).
        offset: (N, 3) float64 world-frame offset of the point from the weighted vertices at t = 0, m.
    """

    is_flex: np.ndarray
    vertex_index: np.ndarray
    weights: np.ndarray
    offset: np.ndarray


def bind_flex_points(model: mujoco.MjModel, data: mujoco.MjData, points: np.ndarray, body_id: np.ndarray,
                     k: int = 3) -> FlexBinding:
    """Bind the points of each flex to their k nearest vertices of that flex at the current state.

    Args:
        model, data: the scene at t = 0 (after ``mj_forward``).
        points: (N, 3) noise-free points, m, world frame.
        body_id: (N,) body ids from the segmentation; flex points carry :func:`flex_segmentation_body`.
        k: number of vertices per point (1 to the flex's vertex count).
    """
    require_int("k", k, 1)
    points = np.asarray(points, dtype=np.float64)
    body_id = np.asarray(body_id)
    if points.ndim != 2 or points.shape[1] != 3 or body_id.shape != points.shape[:1]:
        raise ValueError(f"points, body_id: expected (N, 3) and (N,), got {points.shape} and {body_id.shape}")
    N = points.shape[0]
    is_flex = np.zeros(N, dtype=bool)
    index = np.zeros((N, k), dtype=np.int64)
    weights = np.zeros((N, k))
    offset = np.zeros((N, 3))
    verts = np.asarray(data.flexvert_xpos, dtype=np.float64)
    for f in range(model.nflex):
        sel = np.nonzero(body_id == flex_segmentation_body(model, f))[0]
        start, count = int(model.flex_vertadr[f]), int(model.flex_vertnum[f])
        if sel.size == 0:
            continue
        if k > count:
            raise ValueError(f"k: expected at most {count} (vertices of flex {f}), got {k}")
        dist = np.linalg.norm(points[sel, None, :] - verts[None, start:start + count], axis=-1)
        near = np.argsort(dist, axis=1)[:, :k]
        inv = 1.0 / np.maximum(np.take_along_axis(dist, near, axis=1), 1e-6)
        w = inv / inv.sum(axis=1, keepdims=True)
        is_flex[sel], index[sel], weights[sel] = True, start + near, w
        offset[sel] = points[sel] - np.einsum("nk,nkc->nc", w, verts[start + near])
    return FlexBinding(is_flex, index, weights, offset)


@dataclass(frozen=True)
class ClipRecording:
    """Simulated state over a clip of T control steps (index 0 = before the first step).

    Attributes:
        body_poses: (T+1, B, 4, 4) float64 ``T_world_body`` of every body (body id order), m.
        flex_vertices: (T+1, F, 3) float64 all flex vertices (``data.flexvert_xpos`` order), m.
        joint_positions: (T+1, J) float64 simulated robot joints, rad or m.
    """

    body_poses: torch.Tensor
    flex_vertices: torch.Tensor
    joint_positions: torch.Tensor


def _snapshot(env: object, names: list[str], flex_names: list[str]) -> tuple[torch.Tensor, ...]:
    flex = [env.flex_vertices(n) for n in flex_names]
    verts = torch.cat(flex) if flex else torch.zeros(0, 3, dtype=torch.float64)
    return env.body_poses(names), verts, env.joint_positions()


def record_clip(env: object, q_traj: torch.Tensor, gripper: torch.Tensor | None = None) -> ClipRecording:
    """Execute T control steps on a reset ``SimEnv`` one at a time, recording the state before and
    after each (uses only the env's public API: ``execute``, ``body_poses``, ``flex_vertices``).

    Args:
        env: a reset ``SimEnv``.
        q_traj: (T, J) joint targets of the T steps (``SimEnv.execute``'s S = T), rad or m.
        gripper: optional (T,) or (T, G) gripper openings in [0, 1].
    """
    if env.model is None:
        raise RuntimeError("env: call reset() before recording a clip")
    if not isinstance(q_traj, torch.Tensor) or q_traj.dim() != 2 or q_traj.shape[0] < 1:
        raise ValueError(f"q_traj: expected a (T, J) tensor with T >= 1, got "
                         f"{getattr(q_traj, 'shape', type(q_traj).__name__)}")
    model = env.model
    names = env.body_names()
    ids = sorted(range(model.nflex), key=lambda f: int(model.flex_vertadr[f]))
    flex_names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_FLEX, f) for f in ids]
    frames = [_snapshot(env, names, flex_names)]
    for t in range(q_traj.shape[0]):
        g = None if gripper is None else gripper[t:t + 1]
        env.execute(q_traj[t:t + 1], g)
        frames.append(_snapshot(env, names, flex_names))
    poses, verts, joints = (torch.stack(x) for x in zip(*frames))
    return ClipRecording(poses, verts, joints)


def track_points(points: torch.Tensor | np.ndarray, body_id: torch.Tensor | np.ndarray,
                 body_poses: torch.Tensor, flex_binding: FlexBinding | None = None,
                 flex_vertices: torch.Tensor | None = None, *, min_z_m: float = -np.inf
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Ground-truth trajectories of scene points over a clip.

    Args:
        points: (N, 3) true positions at t = 0, m, world frame.
        body_id: (N,) body of each point (-1: unknown, never valid).
        body_poses: (T+1, B, 4, 4) ``T_world_body`` per step of every body, m (``ClipRecording``).
        flex_binding: binding of the flex points (required if any point is bound to a flex).
        flex_vertices: (T+1, F, 3) flex vertex positions per step, m (with ``flex_binding``).
        min_z_m: points whose true position falls below this height are invalid at that step (objects
            that fell off the table), m.

    Returns:
        positions: (T+1, N, 3) float64 positions, m, world frame (``positions[0] == points``).
        valid: (T+1, N) bool, False for unknown bodies, non-finite poses or positions below ``min_z_m``.
    """
    p = torch.as_tensor(points, dtype=torch.float64)
    bid = torch.as_tensor(body_id).long()
    poses = torch.as_tensor(body_poses, dtype=torch.float64)
    if p.dim() != 2 or p.shape[1] != 3 or bid.shape != p.shape[:1]:
        raise ValueError(f"points, body_id: expected (N, 3) and (N,), got {tuple(p.shape)} and {tuple(bid.shape)}")
    if poses.dim() != 4 or poses.shape[-2:] != (4, 4) or poses.shape[0] < 1:
        raise ValueError(f"body_poses: expected (T+1, B, 4, 4), got {tuple(poses.shape)}")
    if bid.numel() and int(bid.max()) >= poses.shape[1]:
        raise ValueError(f"body_id: expected ids < B={poses.shape[1]}, got {int(bid.max())}")
    known = bid >= 0
    rel = poses @ torch.linalg.inv(poses[:1])  # (T+1, B, 4, 4): body motion since t = 0
    positions = p[None].repeat(poses.shape[0], 1, 1)  # unknown bodies keep p (and are invalid)
    order = torch.argsort(bid, stable=True)  # group the points by body: one small product per body
    bodies, counts = torch.unique_consecutive(bid[order], return_counts=True)
    for b, group in zip(bodies.tolist(), torch.split(order, counts.tolist())):
        if b >= 0:
            positions[:, group] = p[group] @ rel[:, b, :3, :3].transpose(-1, -2) + rel[:, b, None, :3, 3]
    if flex_binding is not None and flex_binding.is_flex.any():
        if flex_vertices is None:
            raise ValueError("flex_vertices: required when flex_binding has bound points")
        fv = torch.as_tensor(flex_vertices, dtype=torch.float64)
        if fv.dim() != 3 or fv.shape[0] != poses.shape[0]:
            raise ValueError(f"flex_vertices: expected ({poses.shape[0]}, F, 3), got {tuple(fv.shape)}")
        if flex_binding.is_flex.shape != (p.shape[0],):
            raise ValueError(f"flex_binding: expected a binding of {p.shape[0]} points, got "
                             f"{flex_binding.is_flex.shape[0]}")
        sel = torch.from_numpy(np.nonzero(flex_binding.is_flex)[0])
        idx = torch.from_numpy(flex_binding.vertex_index[sel.numpy()])
        w = torch.from_numpy(flex_binding.weights[sel.numpy()])
        off = torch.from_numpy(flex_binding.offset[sel.numpy()])
        positions[:, sel] = torch.einsum("nk,tnkc->tnc", w, fv[:, idx]) + off
    valid = known[None] & torch.isfinite(positions).all(-1) & (positions[..., 2] >= min_z_m)
    return positions, valid
