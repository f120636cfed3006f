"""Segment-follow flow: a non-learned guess of how the robot moves the objects it touches.

The scene at t = 0 is split into segments: the support surface is found (the most populated height
band among points whose normals point up) and removed with everything below it (the table's sides),
and the remaining points are grouped into connected components (neighbours within ``link_radius_m``).
The robot's points are then stepped through the horizon; a segment that a robot point comes within
``contact_radius_m`` of (at its current, already displaced position) moves, for that step, by the mean
motion of the touching robot points:

- horizontally always (a push or a drag);
- vertically only while it is held: a touching gripper closed part way (``gripper_open`` strictly
  between ``held_open_range``), as around a grasped object; a free object is neither pressed into the
  support nor lifted by a push;
- with ``push_only``, a touching point that does not hold the segment counts only while it moves
  into the segment (a push, not a pull or a graze);
- a segment larger than ``max_segment_extent_m`` (height, or the long side of its smallest-area footprint
  rectangle, whatever its heading: furniture, a wall, the merged clutter of a pile)
  never moves.

A free segment moves as a rigid body pushed at the mean of its contact points (quasi-static
sticking contact, :func:`push_twist`): a push through its centroid translates it with the pusher, an
off-centre push turns it about the vertical and moves it less. No momentum: a segment stops when the
robot leaves it. Everything is batched over B (one scene per action) and runs on the scene's device.
Letters: B batch, N scene points, M robot points, T future steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pointworld.geometry.checks import require_positive
from pointworld.geometry.neighbors import knn
from pointworld.model.baselines import check_predictor_args
from pointworld.model.inputs import ActionInput, Prediction, SceneInput
from pointworld.robot.flow import FEATURE_LAYOUT

_HEIGHT_BIN_M = 0.005
_UP_NORMAL_MIN = 0.9
_NEIGHBOURS = 8
_MIN_PIVOT_M = 0.005
_EXTENT_ANGLES = 12  # headings of the bounding rectangles tried by _segment_extent (every 7.5 deg)


@dataclass
class SegmentFollowConfig:
    """Settings of :func:`segment_follow` (all lengths in m).

    Attributes:
        link_radius_m: scene points closer than this (among each one's 8 nearest) share a segment.
        contact_radius_m: a robot point this close to a movable scene point touches its segment.
        support_band_m: half-height of the band around the support surface whose up-facing points are
            the support (never moved).
        max_segment_extent_m: segments taller, or with a longer smallest-area footprint rectangle, never move.
        held_open_range: (lo, hi): a touching robot point whose ``gripper_open`` lies strictly between
            them holds the segment (it then also follows vertical motion).
        push_only: a touching robot point that does not hold the segment moves it only while its step
            heads into it (positive component towards its nearest segment point): free objects are
            pushed, never pulled or dragged along by a point sliding past. False: every touching point.
        rotate: a free (not held) segment moves as a body pushed at its contact (:func:`push_twist`,
            pivot length = mean horizontal distance of its points to their centroid): an off-centre
            push turns it and moves its centre less than the pusher. False: it translates with the
            pusher's mean step.
        pivot_scale: factor on that pivot length (a support pressure concentrated towards the rim, e.g.
            on a few corners, resists turning more: > 1 turns less).
    """

    link_radius_m: float = 0.035
    contact_radius_m: float = 0.01
    support_band_m: float = 0.01
    max_segment_extent_m: float = 0.4
    held_open_range: tuple[float, float] = (0.02, 0.9)
    push_only: bool = True
    rotate: bool = True
    pivot_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("push_only", "rotate"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {type(getattr(self, name)).__name__}")
        for name in ("link_radius_m", "contact_radius_m", "support_band_m", "max_segment_extent_m", "pivot_scale"):
            setattr(self, name, require_positive(name, getattr(self, name)))
        r = tuple(self.held_open_range)
        if len(r) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in r) \
                or not 0.0 <= r[0] < r[1]:
            raise ValueError(f"held_open_range: expected (lo, hi) with 0 <= lo < hi, got {self.held_open_range!r}")
        self.held_open_range = (float(r[0]), float(r[1]))


def support_height(points: torch.Tensor, normals: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) height of the horizontal support surface (table top) of each scene, m (NaN without one).

    Args:
        points: (B, N, 3) scene points, m, world frame with +z up.
        normals: (B, N, 3) unit normals (zeros where unknown), world frame.
        mask: (B, N) bool, real points.

    Returns:
        (B,) centre of the most populated 5 mm height band among real points with an upward (or
        downward: normals may be flipped) normal, m; NaN for a scene without such points.
    """
    up = mask & (normals[..., 2].abs() >= _UP_NORMAL_MIN)
    z = points[..., 2]
    out = points.new_full((points.shape[0],), float("nan"))
    for b in range(points.shape[0]):
        zs = z[b][up[b]]
        if zs.numel() == 0:
            continue
        lo = zs.min()
        counts = torch.bincount(((zs - lo) / _HEIGHT_BIN_M).long())
        out[b] = lo + (counts.argmax().to(zs.dtype) + 0.5) * _HEIGHT_BIN_M
    return out


def _support(points: torch.Tensor, normals: torch.Tensor, mask: torch.Tensor,
             band_m: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1) :func:`support_height` and (B, N) bool :func:`support_mask` of the same scenes."""
    surface = support_height(points, normals, mask)[:, None]
    up = mask & (normals[..., 2].abs() >= _UP_NORMAL_MIN)
    return surface, up & ((points[..., 2] - surface).abs() <= band_m)


def support_mask(points: torch.Tensor, normals: torch.Tensor, mask: torch.Tensor,
                 band_m: float) -> torch.Tensor:
    """(B, N) bool: points of the horizontal support surface (table top) of each scene.

    Args:
        points: (B, N, 3) scene points, m, world frame with +z up.
        normals: (B, N, 3) unit normals (zeros where unknown), world frame.
        mask: (B, N) bool, real points.
        band_m: half-height of the support band around :func:`support_height`, m.

    Returns:
        (B, N) bool, True for real points within ``band_m`` of the support height with an upward
        (or downward: normals may be flipped) normal. A scene without upward-facing points has none.
    """
    return _support(points, normals, mask, band_m)[1]


def object_mask(points: torch.Tensor, normals: torch.Tensor, mask: torch.Tensor, band_m: float) -> torch.Tensor:
    """(B, N) bool: real points that may belong to an object standing on the support: neither the
    support surface (:func:`support_mask`) nor more than ``band_m`` (m) below it (the table's sides and
    legs, the floor). Arguments as in :func:`support_mask`; without a support, every real point."""
    surface, support = _support(points, normals, mask, band_m)
    return mask & ~support & ~(points[..., 2] < surface - band_m)


def connected_segments(points: torch.Tensor, valid: torch.Tensor, link_radius_m: float) -> torch.Tensor:
    """(B, N) int64 segment label of every valid point (-1 elsewhere): connected components of the
    graph linking each valid point to its nearest valid neighbours within ``link_radius_m`` (m).

    A label is the smallest point index of its component (min-label propagation with pointer jumping).
    """
    B, N = valid.shape
    if N == 0:
        return torch.full((B, N), -1, dtype=torch.long, device=points.device)
    query = torch.where(valid[..., None], points, 0.0)
    dist, idx = knn(query, points, min(_NEIGHBOURS + 1, N), valid)
    edge = valid[..., None] & (idx >= 0) & (dist <= link_radius_m)
    nb = torch.where(edge, idx, torch.arange(N, device=points.device)[None, :, None])
    label = torch.arange(N, device=points.device).expand(B, N).clone()
    while True:
        new = torch.minimum(label, torch.gather(label, 1, nb.flatten(1)).view(B, N, -1).amin(-1))
        # the smallest label reached by a neighbour also lowers that neighbour's root (both directions)
        new = new.scatter_reduce(1, nb.flatten(1), new[..., None].expand_as(nb).flatten(1), "amin")
        new = torch.gather(new, 1, new)  # pointer jumping
        if torch.equal(new, label):
            break
        label = new
    return torch.where(valid, label, -1)


def _segment_extent(points: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """(B, N) size (m) of the segment of each point (0 for unlabelled): the larger of its height and the
    longer side of its smallest-area horizontal bounding rectangle (over ``_EXTENT_ANGLES`` headings), so
    an object's size does not depend on how it is turned."""
    real = (label >= 0)[..., None]  # unlabelled points must not widen segment 0 (their clamped index)
    angles = torch.arange(_EXTENT_ANGLES, dtype=points.dtype, device=points.device) * (torch.pi / 2 / _EXTENT_ANGLES)
    u = points[..., :1] * torch.cos(angles) + points[..., 1:2] * torch.sin(angles)  # (B, N, A)
    v = points[..., 1:2] * torch.cos(angles) - points[..., :1] * torch.sin(angles)
    coords = torch.cat([u, v, points[..., 2:]], -1)  # (B, N, 2A + 1)
    idx = label.clamp_min(0)[..., None].expand_as(coords)
    big = torch.finfo(points.dtype).max
    hi = torch.full_like(coords, -big).scatter_reduce(1, idx, torch.where(real, coords, -big), "amax")
    lo = torch.full_like(coords, big).scatter_reduce(1, idx, torch.where(real, coords, big), "amin")
    side = (hi - lo).clamp_min(0.0)  # per root index
    su, sv = side[..., :_EXTENT_ANGLES], side[..., _EXTENT_ANGLES:-1]
    best = (su * sv).argmin(-1, keepdim=True)  # the smallest-area rectangle
    flat = torch.gather(torch.maximum(su, sv), -1, best)[..., 0]
    ext = torch.maximum(flat, side[..., -1])
    return torch.where(label >= 0, torch.gather(ext, 1, label.clamp_min(0)), 0.0)


def segment_scene(points: torch.Tensor, normals: torch.Tensor, mask: torch.Tensor,
                  config: SegmentFollowConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The prior's segmentation of each scene at t = 0.

    Args:
        points: (B, N, 3) scene points, m, world frame with +z up.
        normals: (B, N, 3) unit normals (zeros where unknown), world frame.
        mask: (B, N) bool, real points.
        config: the prior's radii and size limit.

    Returns:
        label: (B, N) int64 segment of each :func:`object_mask` point (:func:`connected_segments`), -1
            for the support, what lies below it and padding.
        movable: (B, N) bool, points of segments within ``max_segment_extent_m`` (:func:`_segment_extent`).
    """
    valid = object_mask(points, normals, mask, config.support_band_m)
    label = connected_segments(points, valid, config.link_radius_m)
    return label, valid & (_segment_extent(points, label) <= config.max_segment_extent_m)


def _segment_frames(points: torch.Tensor, label: torch.Tensor, movable: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per segment root index: (B, N, 3) centroid of its movable points (m, world) and (B, N) their mean
    horizontal distance to it (m), the push model's pivot length ``c`` (uniform support pressure)."""
    B, N = label.shape
    idx = label.clamp_min(0)
    w = movable.to(points.dtype)
    count = points.new_zeros((B, N)).scatter_add(1, idx, w).clamp_min(1.0)
    centroid = points.new_zeros((B, N, 3)).scatter_add(1, idx[..., None].expand(B, N, 3), points * w[..., None])
    centroid = centroid / count[..., None]
    rel = points - torch.gather(centroid, 1, idx[..., None].expand(B, N, 3))
    radius = torch.linalg.vector_norm(rel[..., :2], dim=-1) * w
    return centroid, points.new_zeros((B, N)).scatter_add(1, idx, radius) / count


def push_twist(step: torch.Tensor, contact: torch.Tensor, c: torch.Tensor,
               max_turn_rad: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Planar motion of a pushed body under quasi-static sticking contact with an ellipsoidal limit
    surface (the pusher and the body move together at the contact; the body turns about its centre).

    Args:
        step: (..., 2) pusher displacement over the step, m, world xy.
        contact: (..., 2) contact point relative to the body's centre, m, world xy.
        c: (...) pivot length (ratio of the largest friction moment to the largest friction force), m, > 0.
        max_turn_rad: bound on the returned turn, rad.

    Returns:
        translation: (..., 2) displacement of the body's centre, m; equals ``step`` for a push through it.
        turn: (...) rotation about the vertical through the centre, rad (counter-clockwise positive).
    """
    c2 = c.square()
    rx, ry, ux, uy = contact[..., 0], contact[..., 1], step[..., 0], step[..., 1]
    denom = c2 + rx.square() + ry.square()
    vx = ((c2 + rx.square()) * ux + rx * ry * uy) / denom
    vy = (rx * ry * ux + (c2 + ry.square()) * uy) / denom
    turn = ((rx * vy - ry * vx) / c2).clamp(-max_turn_rad, max_turn_rad)
    return torch.stack([vx, vy], -1), turn


def _step_segments(cur: torch.Tensor, label: torch.Tensor, movable: torch.Tensor, centre: torch.Tensor,
                   pivot: torch.Tensor, robot: torch.Tensor, robot_prev: torch.Tensor, robot_mask: torch.Tensor,
                   grip: torch.Tensor, config: SegmentFollowConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Motion of each segment over one step, per segment root index: (B, N, 3) translation of its centre
    (m, world) and (B, N) turn about the vertical through it (rad).

    ``cur`` (B, N, 3) current scene positions, ``centre`` (B, N, 3) current segment centres and ``pivot``
    (B, N) pivot lengths per root index, ``robot_prev`` / ``robot`` (B, M, 3) robot positions before /
    after the step, ``robot_mask`` (B, M), ``grip`` (B, M) gripper_open after the step.
    """
    B, N = label.shape
    dist, idx = knn(robot_prev, cur, 1, movable)  # nearest movable scene point of each robot point
    near = idx[..., 0].clamp_min(0)
    touch = robot_mask & (idx[..., 0] >= 0) & (dist[..., 0] <= config.contact_radius_m)
    seg = torch.where(touch, torch.gather(label, 1, near), 0)  # (B, M) touched root
    lo, hi = config.held_open_range
    holds = touch & (grip > lo) & (grip < hi)
    nearest = torch.gather(cur, 1, near[..., None].expand(-1, -1, 3))
    if config.push_only:
        heading = ((robot - robot_prev) * (nearest - robot_prev)).sum(-1) > 0
        touch = touch & (heading | holds)
    w = touch.to(cur.dtype)[..., None]
    seg3 = seg[..., None].expand(B, -1, 3)
    count = cur.new_zeros((B, N)).scatter_add(1, seg, w[..., 0]).clamp_min(1.0)[..., None]
    step = cur.new_zeros((B, N, 3)).scatter_add(1, seg3, (robot - robot_prev) * w) / count
    contact = cur.new_zeros((B, N, 3)).scatter_add(1, seg3, nearest * w) / count - centre
    held = cur.new_zeros((B, N)).scatter_add(1, seg, holds.to(cur.dtype)) > 0
    turn = cur.new_zeros((B, N))
    move = step.clone()
    if config.rotate:
        planar, turn = push_twist(step[..., :2], contact[..., :2],
                                  (pivot * config.pivot_scale).clamp_min(_MIN_PIVOT_M))
        move[..., :2] = torch.where(held[..., None], step[..., :2], planar)
        turn = torch.where(held, 0.0, turn)
    move[..., 2] = torch.where(held, step[..., 2], 0.0)
    return move, turn


def _posed(points: torch.Tensor, centre0: torch.Tensor, shift: torch.Tensor, yaw: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) points turned by ``yaw`` (B, N) rad about the vertical through ``centre0`` (B, N, 3), then
    shifted by ``shift`` (B, N, 3), m (all per point)."""
    rel = points - centre0
    cos, sin = torch.cos(yaw), torch.sin(yaw)
    x = cos * rel[..., 0] - sin * rel[..., 1]
    y = sin * rel[..., 0] + cos * rel[..., 1]
    return centre0 + torch.stack([x, y, rel[..., 2]], -1) + shift


def segment_follow(scene: SceneInput, action: ActionInput, config: SegmentFollowConfig) -> torch.Tensor:
    """Segment-follow displacement of every scene point under each action (no gradient).

    Args:
        scene: scene at t = 0, B_s = 1 (segmented once, shared by the K actions) or B_s = K; points m,
            world frame with +z up, normals, mask.
        action: K robot point flows (``action.points`` (K, T+1, M, 3) m, world frame).
        config: the heuristic's radii and thresholds.

    Returns:
        (K, T, N, 3) displacement from t = 0 at steps 1..T, m, world frame, dtype of ``scene.points``;
        zeros at padded, support and unmovable points.
    """
    K, T = action.batch_size, action.horizon
    pts = scene.points
    with torch.no_grad():
        label, movable = segment_scene(pts, scene.normals, scene.mask, config)
        centre0, pivot = _segment_frames(pts, label, movable)
        if scene.batch_size != K:
            pts, label, movable, centre0, pivot = (x.expand((K,) + tuple(x.shape[1:]))
                                                   for x in (pts, label, movable, centre0, pivot))
        robot = action.points.to(pts.dtype)
        grip = action.flow[..., FEATURE_LAYOUT["gripper_open"]][..., 0].to(pts.dtype)
        root = label.clamp_min(0)
        root3 = root[..., None].expand(-1, -1, 3)
        at_point = torch.gather(centre0, 1, root3)
        shift = pts.new_zeros((K,) + tuple(pts.shape[1:]))  # per segment root: centre translation, m
        yaw = pts.new_zeros(root.shape)  # per segment root: turn about the vertical, rad
        cur, out = pts, []  # current positions; unmovable points stay where they are
        for t in range(1, T + 1):
            move, turn = _step_segments(cur, label, movable, centre0 + shift, pivot, robot[:, t],
                                        robot[:, t - 1].contiguous(), action.mask, grip[:, t], config)
            shift, yaw = shift + move, yaw + turn
            moved = _posed(pts, at_point, torch.gather(shift, 1, root3), torch.gather(yaw, 1, root))
            cur = torch.where(movable[..., None], moved, pts)
            out.append(cur - pts)
    return torch.stack(out, 1)


class SegmentFollow:
    """:class:`~pointworld.model.inputs.FlowPredictor` of :func:`segment_follow` (log_var all zero).

    Args:
        config: the heuristic's settings (defaults when None).
    """

    def __init__(self, config: SegmentFollowConfig | None = None) -> None:
        if config is not None and not isinstance(config, SegmentFollowConfig):
            raise TypeError(f"config: expected a SegmentFollowConfig or None, got {type(config).__name__}")
        self.config = config or SegmentFollowConfig()

    def predict(self, scene: SceneInput, action: ActionInput) -> Prediction:
        """Prediction with displacement (K, T, N, 3), m, world frame, and log_var (K, T, N) zeros."""
        check_predictor_args(scene, action)
        disp = segment_follow(scene, action, self.config)
        return Prediction(disp, disp.new_zeros(disp.shape[:3]))
