"""Per-point input features of the world model, built from a :class:`SceneInput` and an :class:`ActionInput`.

Layouts (last dim; B batch, N scene points, M robot points, T future steps, F image-feature channels):

- :func:`scene_point_features` (B, N, 9 [+ F]): ``0:3`` xyz relative to the cloud's origin (m),
  ``3:6`` rgb in [0, 1], ``6:9`` unit normal, ``9:`` lifted image features if the scene has them.
- :func:`scene_step_features` (B, N, 2 (T+1)): ``0:T+1`` gripper-open state of step t (broadcast to
  every point), ``T+1:2(T+1)`` distance (m) from the point to the nearest robot point at step t,
  capped at ``max_distance_m``.
- :func:`robot_point_features` (B, T+1, M, 13): ``0:3`` xyz relative to the origin (m), ``3:6``
  normal, ``6`` gripper_open, ``7:10`` velocity (m/s), ``10:13`` acceleration (m/s^2). The time
  step and the link id are left to embeddings in the world model.

Padding entries (scene ``mask`` / robot ``mask`` False) are exactly 0 in every output.
All positions are in the world frame; ``origin`` is a per-cloud point in that frame (e.g. the grid
origin of the backbone) so that features do not depend on where the workspace sits in the world.
"""

from __future__ import annotations

import torch

from pointworld.geometry.checks import (
    require_dtype,
    require_floating,
    require_int,
    require_shape,
)
from pointworld.model.inputs import ActionInput, SceneInput
from pointworld.robot.flow import FEATURE_LAYOUT

#: Channels of :func:`scene_point_features` without image features.
SCENE_POINT_FEATURE_DIM: int = 9
#: Channels of :func:`robot_point_features`.
ROBOT_POINT_FEATURE_DIM: int = 13
#: Distance, m, reported by :func:`nearest_robot_distance` when a batch element has no robot point.
NO_ROBOT_DISTANCE_M: float = 10.0

#: Largest number of scene-robot pairs :func:`nearest_robot_distance` ranks at once (automatic chunk).
DISTANCE_CHUNK_ELEMENTS = 2**25


def _check_robot_query(scene_points: torch.Tensor, robot_points: torch.Tensor,
                       robot_mask: torch.Tensor) -> tuple[int, int, int]:
    """Check scene points (B|1, N, 3), robot points (B, T+1, M, 3) of the same dtype and a (B, M) bool
    mask; returns (B, T+1, M)."""
    require_shape("robot_points", require_floating("robot_points", robot_points), (None, None, None, 3),
                  max_leading=0)
    B, steps, M = robot_points.shape[:3]
    require_shape("robot_mask", require_dtype("robot_mask", robot_mask, torch.bool), (B, M), max_leading=0)
    require_shape("scene_points", require_dtype("scene_points", scene_points, robot_points.dtype),
                  (None, None, 3), max_leading=0)
    if scene_points.shape[0] not in (1, B):
        raise ValueError(f"scene_points: expected batch size 1 or {B} (robot_points), got shape "
                         f"{tuple(scene_points.shape)}")
    return B, steps, M


def nearest_robot_distance(scene_points: torch.Tensor, robot_points: torch.Tensor, robot_mask: torch.Tensor,
                           chunk: int | None = None) -> torch.Tensor:
    """Distance from every scene point to the nearest real robot point, at every time step.

    The nearest point is ranked with squared distances from one matrix product (coordinates centred
    on the robot), then its distance is recomputed exactly as ``|p - r|`` (differentiable w.r.t.
    both point sets). Memory: about ``B (T+1) chunk M`` values at a time.

    Args:
        scene_points: (B, N, 3) or (1, N, 3) scene positions, m, world frame (B = 1 is broadcast
            against the B actions); same dtype as ``robot_points``.
        robot_points: (B, T+1, M, 3) robot point positions per step, m, world frame; finite where
            ``robot_mask`` is True (padding entries may hold anything).
        robot_mask: (B, M) bool, True for real robot points.
        chunk: scene points handled per step, int >= 1; None picks the largest chunk that keeps
            ``B (T+1) chunk M`` under ``DISTANCE_CHUNK_ELEMENTS`` (2^25, 128 MB in float32).

    Returns:
        distance_m: (B, T+1, N) distance to the nearest real robot point, m; ``NO_ROBOT_DISTANCE_M``
            (10.0) for every point of a batch element with no real robot point.
    """
    B, steps, M = _check_robot_query(scene_points, robot_points, robot_mask)
    if chunk is None:
        chunk = max(1, DISTANCE_CHUNK_ELEMENTS // max(1, B * steps * M))
    chunk = require_int("chunk", chunk, 1)
    valid = robot_mask[:, None, :, None]
    centre = (torch.where(valid, robot_points, 0.0).sum((1, 2))
              / (robot_mask.sum(-1, keepdim=True) * steps).clamp_min(1))[:, None, None, :]  # (B,1,1,3)
    robot_c = torch.where(valid, robot_points - centre, 0.0)  # (B, T+1, M, 3)
    robot_sq = (robot_c * robot_c).sum(-1).masked_fill(~valid[..., 0], float("inf"))
    robot_aug = torch.cat([robot_c, robot_sq[..., None], torch.ones_like(robot_sq)[..., None]], -1)
    scene_c = scene_points[:, None] - centre  # (B, 1, N, 3)
    out = []
    for start in range(0, scene_points.shape[1], chunk):
        q = scene_c[:, :, start:start + chunk]
        q_aug = torch.cat([-2.0 * q, torch.ones_like(q[..., :1]), (q * q).sum(-1, keepdim=True)], -1)
        with torch.no_grad():
            nearest = torch.matmul(q_aug, robot_aug.transpose(-1, -2)).argmin(-1)  # (B, T+1, n)
        picked = torch.gather(robot_c, 2, nearest[..., None].expand(-1, -1, -1, 3))
        out.append(torch.linalg.vector_norm(q - picked, dim=-1))
    if not out:
        return robot_points.new_zeros(B, steps, 0)
    distance = torch.cat(out, -1)
    has_robot = robot_mask.any(-1)[:, None, None]
    return torch.where(has_robot, distance, NO_ROBOT_DISTANCE_M)


def nearest_robot_motion(scene_points: torch.Tensor, robot_points: torch.Tensor, robot_mask: torch.Tensor,
                         chunk: int | None = None) -> torch.Tensor:
    """Motion of the robot point nearest to every scene point at t = 0 (a "rigid follow" prior).

    Args:
        scene_points: (B, N, 3) or (1, N, 3) scene positions at t = 0, m, world frame.
        robot_points: (B, T+1, M, 3) robot point positions per step, m, world frame; same dtype.
        robot_mask: (B, M) bool, True for real robot points.
        chunk: scene points ranked at once; None keeps ``B chunk M`` under ``DISTANCE_CHUNK_ELEMENTS``.

    Returns:
        (B, T, N, 3) displacement ``r_t - r_0`` of that robot point at steps 1..T, m; zeros for a batch
        element without real robot points. Not differentiable through the choice of the point.
    """
    B, steps, M = _check_robot_query(scene_points, robot_points, robot_mask)
    chunk = max(1, DISTANCE_CHUNK_ELEMENTS // max(1, B * M)) if chunk is None else require_int("chunk", chunk, 1)
    start = robot_points[:, 0]  # (B, M, 3)
    scene = scene_points.expand(B, -1, -1)
    picks = []
    with torch.no_grad():
        for lo in range(0, scene.shape[1], chunk):
            d = torch.cdist(scene[:, lo:lo + chunk], start).masked_fill(~robot_mask[:, None, :], float("inf"))
            picks.append(d.argmin(-1))  # (B, n)
    nearest = torch.cat(picks, -1) if picks else scene.new_zeros((B, 0), dtype=torch.int64)
    motion = robot_points[:, 1:] - robot_points[:, :1]  # (B, T, M, 3)
    out = torch.gather(motion, 2, nearest[:, None, :, None].expand(B, steps - 1, -1, 3))
    return torch.where(robot_mask.any(-1)[:, None, None, None], out, torch.zeros_like(out))


def _broadcast_scene(scene: SceneInput, action: ActionInput) -> SceneInput:
    """The scene with B matching the action's (a scene with B = 1 is expanded)."""
    if scene.batch_size not in (1, action.batch_size):
        raise ValueError(f"scene: expected batch size 1 or {action.batch_size} (the action's), got "
                         f"{scene.batch_size}")
    return scene.expand(action.batch_size)


def scene_step_features(scene: SceneInput, action: ActionInput, max_distance_m: float = 1.0) -> torch.Tensor:
    """Per-step action features of every scene point: gripper state and distance to the robot.

    Args:
        scene: B = 1 (broadcast to the actions) or B scenes; ``points`` (B, N, 3) m, world frame.
        action: B actions; robot points (B, T+1, M, 3) m, world frame, and their gripper state.
        max_distance_m: distances are capped at this value, m (> 0).

    Returns:
        (B, N, 2 (T+1)) features in ``scene.points``' dtype: ``[..., t]`` gripper-open state of step t
        in [0, 1], ``[..., T+1+t]`` min(distance to the nearest robot point at step t, max_distance_m),
        m; 0 at padding points.
    """
    if not (isinstance(max_distance_m, (int, float)) and not isinstance(max_distance_m, bool)
            and 0 < max_distance_m < float("inf")):
        raise ValueError(f"max_distance_m: expected a finite number > 0 m, got {max_distance_m!r}")
    scene = _broadcast_scene(scene, action)
    dtype = scene.points.dtype
    distance = nearest_robot_distance(scene.points, action.points.to(dtype), action.mask)
    distance = distance.clamp_max(max_distance_m).transpose(1, 2)  # (B, N, T+1)
    gripper = action.gripper_open.to(dtype)[:, None, :].expand_as(distance)
    features = torch.cat([gripper, distance], -1)
    return torch.where(scene.mask[..., None], features, 0.0)


def _check_origin(origin: torch.Tensor, batch_size: int) -> torch.Tensor:
    require_shape("origin", require_floating("origin", origin), (batch_size, 3), max_leading=0)
    return origin


def scene_point_features(scene: SceneInput, origin: torch.Tensor) -> torch.Tensor:
    """Static features of every scene point.

    Args:
        scene: B scenes: points (B, N, 3) m, world frame; colors (B, N, 3) in [0, 1]; normals
            (B, N, 3); optional image_features (B, N, F).
        origin: (B, 3) per-cloud origin, m, world frame (cast to the points' dtype).

    Returns:
        (B, N, 9 [+ F]) xyz - origin (m), rgb, normal [, image features]; 0 at padding points.
    """
    origin = _check_origin(origin, scene.batch_size).to(scene.points)
    parts = [scene.points - origin[:, None, :], scene.colors.to(scene.points), scene.normals.to(scene.points)]
    if scene.image_features is not None:
        parts.append(scene.image_features.to(scene.points))
    return torch.where(scene.mask[..., None], torch.cat(parts, -1), 0.0)


def robot_point_features(action: ActionInput, origin: torch.Tensor) -> torch.Tensor:
    """Features of every robot point at every step.

    Args:
        action: B actions with ``flow`` (B, T+1, M, 15) in ``FEATURE_LAYOUT`` order, world frame.
        origin: (B, 3) per-cloud origin, m, world frame (cast to the flow's dtype).

    Returns:
        (B, T+1, M, 13) xyz - origin (m), normal, gripper_open, velocity (m/s), acceleration (m/s^2);
        0 at padding robot points.
    """
    flow = action.flow
    origin = _check_origin(origin, action.batch_size).to(flow)
    parts = [flow[..., FEATURE_LAYOUT["xyz"]] - origin[:, None, None, :]]
    parts += [flow[..., FEATURE_LAYOUT[name]] for name in ("normal", "gripper_open", "velocity", "acceleration")]
    return torch.where(action.mask[:, None, :, None], torch.cat(parts, -1), 0.0)
