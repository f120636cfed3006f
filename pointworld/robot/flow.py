"""Robot point flows: a joint trajectory turned into the motion of points on the robot's surface.

This is the action input of the world model. Given surface points sampled once in their link frames
(:func:`pointworld.robot.sampling.sample_surface_points`) and a joint trajectory ``q`` (B, T+1, J)
(step 0 = now, steps 1..T the commanded future, ``dt_s`` apart), every point is moved by its link's
pose from one batched forward-kinematics call over all B * (T+1) configurations.

Finite differences along time (``p_t`` = position at step t, ``dt = dt_s``, ``n = T + 1`` steps):

- velocity, m/s: interior ``v_t = (p_{t+1} - p_{t-1}) / (2 dt)`` (central); ends with the
  second-order one-sided formulas ``v_0 = (-3 p_0 + 4 p_1 - p_2) / (2 dt)`` and
  ``v_T = (3 p_T - 4 p_{T-1} + p_{T-2}) / (2 dt)``. With n == 2 both steps get ``(p_1 - p_0) / dt``;
  with n == 1 the velocity is 0.
- acceleration, m/s^2: interior ``a_t = (p_{t+1} - 2 p_t + p_{t-1}) / dt^2``; each end takes the
  second difference of its three nearest steps (``a_0 = a_1``, ``a_T = a_{T-1}``). With n <= 2 it
  is 0.

Both are exact for motions that are quadratic in time (constant acceleration) at every step.

Features (:meth:`RobotPointFlow.features`), (B, T+1, M, C = 14), channels in this order
(``FEATURE_LAYOUT`` maps the names to slices)::

    0:3 xyz (m) | 3:6 normal (unit) | 6 gripper_open (0..1) | 7:10 velocity (m/s)
    | 10:13 acceleration (m/s^2) | 13 time (step index t as a float)

all vectors in the output frame (world when ``T_world_base`` is given, else the base frame). The
link id is not a channel (it is ``link_index``).

How it is computed: points are linear in their link's pose ``[R | t]``, so the difference stencils
are applied to the link poses, and for each link one batched matmul of its points' rows
``[x, y, z, 1, nx, ny, nz]`` (M_l, 7) with a (B, T+1, 7, C) weight matrix yields all 14 channels at
once (no (B, T+1, M, 4, 4) gather). Reading the per-link point counts costs one host-device
synchronisation per call on a GPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from pointworld.geometry.checks import require_finite, require_shape
from pointworld.geometry.se3 import check_rigid_transform
from pointworld.robot.kinematics import forward_kinematics
from pointworld.robot.model import Robot
from pointworld.robot.sampling import RobotSurfacePoints

#: Channels of :meth:`RobotPointFlow.features`, last dim of (B, T+1, M, C): name -> slice.
FEATURE_LAYOUT: dict[str, slice] = {
    "xyz": slice(0, 3),            # position, m, world (or base) frame
    "normal": slice(3, 6),         # unit outward surface normal, same frame
    "gripper_open": slice(6, 7),   # gripper-open state of the step, in [0, 1] (1 = open)
    "velocity": slice(7, 10),      # m/s, same frame
    "acceleration": slice(10, 13), # m/s^2, same frame
    "time": slice(13, 14),         # step index t = 0..T as a float (not seconds)
}
#: C, the number of feature channels.
FEATURE_DIM: int = 14


@dataclass(frozen=True)
class RobotPointFlow:
    """Robot surface points along a batch of trajectories (frame: world if a base pose was given,
    else the robot base frame).

    Attributes:
        points: (B, T+1, M, 3) positions, m.
        normals: (B, T+1, M, 3) unit outward normals.
        velocity: (B, T+1, M, 3) m/s (finite differences, see module docstring).
        acceleration: (B, T+1, M, 3) m/s^2.
        gripper_open: (B, T+1, M) gripper-open state of each step broadcast to the points, [0, 1].
        time_index: (B, T+1, M) int64 step index t.
        link_index: (M,) int64 index into ``robot.link_names`` of each point's link.
    """

    points: torch.Tensor
    normals: torch.Tensor
    velocity: torch.Tensor
    acceleration: torch.Tensor
    gripper_open: torch.Tensor
    time_index: torch.Tensor
    link_index: torch.Tensor
    _features: torch.Tensor = dataclasses.field(repr=False)

    def features(self) -> torch.Tensor:
        """(B, T+1, M, C=14) per-point features, channels as in ``FEATURE_LAYOUT``: ``[xyz 0:3 |
        normal 3:6 | gripper_open 6:7 | velocity 7:10 | acceleration 10:13 | time 13:14]`` (the time
        channel is the step index t as a float; the link id is not a channel).

        No copy: the other fields are views into this tensor; clone before editing it in place."""
        return self._features


def _difference_matrices(n: int, dt: float,
                         like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, n) matrices D, A with velocity ``v_t = sum_s D[t, s] p_s`` and acceleration
    ``a_t = sum_s A[t, s] p_s``: exactly the stencils of the module docstring."""
    eye = torch.eye(n, dtype=like.dtype, device=like.device)
    d, a = torch.zeros_like(eye), torch.zeros_like(eye)
    if n == 2:
        d[:, 0], d[:, 1] = -1.0 / dt, 1.0 / dt
    elif n >= 3:
        d = (eye.roll(1, dims=1) - eye.roll(-1, dims=1)) * (0.5 / dt)  # interior rows central
        d[0] = 0.0
        d[-1] = 0.0
        d[0, :3] = torch.tensor([-3.0, 4.0, -1.0]) * (0.5 / dt)
        d[-1, -3:] = torch.tensor([1.0, -4.0, 3.0]) * (0.5 / dt)
        a = (eye.roll(1, dims=1) - 2 * eye + eye.roll(-1, dims=1)) / (dt * dt)
        a[0], a[-1] = a[1], a[-2]
    return d, a


def _feature_weights(rt: torch.Tensor, grip: torch.Tensor, dt: float) -> torch.Tensor:
    """(B, n, U, 7, C) matrices W with ``features = [x, y, z, 1, nx, ny, nz] @ W`` for a point of
    local position x and normal n on each of the U links whose ``[R | t]`` rows are
    ``rt`` (B, n, U, 3, 4); ``grip`` (B, n)."""
    b, n, u = rt.shape[:3]
    d, a = _difference_matrices(n, dt, rt)
    lay = FEATURE_LAYOUT
    w = rt.new_zeros(b, n, u, 7, FEATURE_DIM)
    w[..., :4, lay["xyz"]] = rt.transpose(-1, -2)
    w[..., 4:, lay["normal"]] = rt[..., :3].transpose(-1, -2)
    w[..., :4, lay["velocity"]] = torch.einsum("ts,bsuij->btuji", d, rt)
    w[..., :4, lay["acceleration"]] = torch.einsum("ts,bsuij->btuji", a, rt)
    w[..., 3, lay["gripper_open"].start] = grip[:, :, None]
    w[..., 3, lay["time"].start] = torch.arange(n, dtype=rt.dtype, device=rt.device)[:, None]
    return w


def _features(link_poses: torch.Tensor, surface: RobotSurfacePoints, grip: torch.Tensor,
              dt: float) -> torch.Tensor:
    """(B, n, M, C) features from link poses (B, n, L, 4, 4): per link one batched matmul of its
    points' ``[x, 1, n]`` rows (M_l, 7) with its (B, n, 7, C) weights, concatenated along M."""
    idx = surface.link_index
    order = torch.argsort(idx, stable=True)
    links, counts = torch.unique_consecutive(idx[order], return_counts=True)
    local = torch.cat([surface.points_link, torch.ones_like(surface.points_link[:, :1]),
                       surface.normals_link], dim=-1)[order]  # (M, 7), grouped by link
    w = _feature_weights(link_poses[:, :, links, :3, :], grip, dt)
    parts = [local[start:start + c] @ w[:, :, i] for i, (start, c) in
             enumerate(zip(torch.cumsum(counts, 0).sub(counts).tolist(), counts.tolist()))]
    feats = torch.cat(parts, dim=2)
    if bool((idx[1:] < idx[:-1]).any()):  # points not grouped by link: undo the sort
        feats = feats.index_select(2, torch.argsort(order))
    return feats


def _check_gripper(gripper_open: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    g = require_shape("gripper_open", gripper_open, (q.shape[0], q.shape[1]), max_leading=0)
    if g.dtype == torch.bool:
        return g.to(dtype=q.dtype, device=q.device)
    if not g.is_floating_point():
        raise TypeError(f"gripper_open: expected a bool or floating-point tensor, got {g.dtype}")
    g = require_finite("gripper_open", g).to(dtype=q.dtype, device=q.device)
    if bool(((g < 0) | (g > 1)).any()):
        raise ValueError(f"gripper_open: expected values in [0, 1], got min {float(g.min()):.3g} "
                         f"and max {float(g.max()):.3g}")
    return g


def _check_base(T_world_base: torch.Tensor | None, q: torch.Tensor) -> torch.Tensor | None:
    if T_world_base is None:
        return None
    T = require_shape("T_world_base", check_rigid_transform("T_world_base", T_world_base), (4, 4),
                      max_leading=1)
    if T.dtype != q.dtype:
        raise TypeError(f"T_world_base: expected dtype {q.dtype} like q, got {T.dtype}")
    if T.dim() == 3 and T.shape[0] != q.shape[0]:
        raise ValueError(f"T_world_base: expected shape ({q.shape[0]}, 4, 4) or (4, 4) to match "
                         f"q's batch, got {tuple(T.shape)}")
    return T[:, None] if T.dim() == 3 else T  # broadcasts over (B, T+1)


def robot_point_flow(robot: Robot, surface: RobotSurfacePoints, q: torch.Tensor,
                     gripper_open: torch.Tensor, *, dt_s: float = 0.1,
                     T_world_base: torch.Tensor | None = None,
                     clamp_to_limits: bool = False) -> RobotPointFlow:
    """Move the sampled surface points along joint trajectories (see module docstring).

    Args:
        robot: the robot the points were sampled on; converted to ``q``'s dtype/device if needed.
        surface: M points in their link frames (moved to ``q``'s dtype/device).
        q: (B, T+1, J) joint positions per step, rad or m, ``robot.joint_names`` order, finite.
        gripper_open: (B, T+1) bool or float in [0, 1] gripper-open state per step (1 = open).
        dt_s: time between steps, s (> 0).
        T_world_base: (B, 4, 4) or (4, 4) rigid pose of the robot base in the world, or None to
            stay in the base frame; same dtype as ``q``.
        clamp_to_limits: clamp ``q`` into the joint limits; by default a value outside them (by
            more than 1e-6 rad or m) is an error naming the joint.

    Returns:
        :class:`RobotPointFlow` with points/normals/velocity/acceleration (B, T+1, M, 3),
        gripper_open and time_index (B, T+1, M) and link_index (M,); ``.features()``
        (B, T+1, M, 14).

    Raises:
        ValueError: ``q`` not (B, T+1, J) for this robot or not finite, ``gripper_open`` not
            (B, T+1) or outside [0, 1], non-rigid ``T_world_base``, ``surface`` pointing at links
            the robot does not have, or ``dt_s`` <= 0. TypeError: wrong dtypes.
    """
    if isinstance(dt_s, bool) or not isinstance(dt_s, (int, float)) or not 0 < dt_s < float("inf"):
        raise ValueError(f"dt_s: expected a finite number > 0, got {dt_s!r}")
    q = require_shape("q", q, (None, None, None), max_leading=0)
    q = robot.clamp_to_limits(q) if clamp_to_limits else robot.check_joint_limits(q, name="q")
    if not q.is_floating_point():
        raise TypeError(f"q: expected a floating-point tensor, got dtype {q.dtype}")
    g = _check_gripper(gripper_open, q)
    base = _check_base(T_world_base, q)
    if surface.link_index.numel() and int(surface.link_index.max()) >= robot.num_links:
        raise ValueError(f"surface: link_index refers to link {int(surface.link_index.max())} but "
                         f"robot {robot.name!r} has {robot.num_links} links")
    if q.dtype != robot.dtype or q.device != robot.device:
        robot = robot.to(dtype=q.dtype, device=q.device)
    surface = surface.to(dtype=q.dtype, device=q.device)
    feats = _features(forward_kinematics(robot.chain, q, base), surface, g, float(dt_s))
    b, n, m = feats.shape[:3]
    lay = FEATURE_LAYOUT
    time_index = torch.arange(n, device=q.device)[None, :, None].expand(b, n, m)
    return RobotPointFlow(points=feats[..., lay["xyz"]], normals=feats[..., lay["normal"]],
                          velocity=feats[..., lay["velocity"]],
                          acceleration=feats[..., lay["acceleration"]],
                          gripper_open=feats[..., lay["gripper_open"].start], time_index=time_index,
                          link_index=surface.link_index, _features=feats)
