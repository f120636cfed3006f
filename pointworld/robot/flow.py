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
- acceleration, m/s^2: interior ``a_t = (p_{t+1} - 2 p_t + p_{t-1}) / dt^2``; with n >= 4 the
  ends use the second-order one-sided formulas ``a_0 = (2 p_0 - 5 p_1 + 4 p_2 - p_3) / dt^2`` and
  ``a_T = (2 p_T - 5 p_{T-1} + 4 p_{T-2} - p_{T-3}) / dt^2``; with n == 3 every step gets the one
  second difference ``(p_2 - 2 p_1 + p_0) / dt^2``; with n <= 2 it is 0.

Velocities are exact at every step for motions quadratic in time (constant acceleration);
accelerations are exact at every step for motions cubic in time (constant jerk) when n >= 4, and
quadratic ones when n == 3.

Features (:meth:`RobotPointFlow.features`), (B, T+1, M, C = 15), channels in this order
(``FEATURE_LAYOUT`` maps the names to slices)::

    0:3 xyz (m) | 3:6 normal (unit) | 6 gripper_open (0..1) | 7:10 velocity (m/s)
    | 10:13 acceleration (m/s^2) | 13 time (step index t as a float)
    | 14 link_id (index of the point's link in ``robot.link_names``, as a float)

all vectors in the output frame (world when ``T_world_base`` is given, else the base frame).

How it is computed: points are linear in their link's pose ``[R | t]``, so the difference stencils
are applied to the link poses, and for each link one batched matmul of its points' rows
``[x, y, z, 1, nx, ny, nz]`` (M_l, 7) with a (B, T+1, 7, C) weight matrix yields all 15 channels at
once (no (B, T+1, M, 4, 4) gather). The per-link grouping of the points is computed once when the
:class:`~pointworld.robot.sampling.RobotSurfacePoints` is built, so with ``validate=False`` a call
makes no host-device synchronisation; the input checks of ``validate=True`` make a few.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from pointworld.errors import JointMismatchError
from pointworld.geometry.checks import (require_finite, require_floating, require_positive,
                                        require_shape)
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
    "link_id": slice(14, 15),      # index of the point's link in robot.link_names, as a float
}
#: C, the number of feature channels.
FEATURE_DIM: int = 15


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
        link_index: (M,) int64 index into ``robot.link_names`` of each point's link (also the
            float ``link_id`` feature channel).
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
        """(B, T+1, M, C=15) per-point features, channels as in ``FEATURE_LAYOUT``: ``[xyz 0:3 |
        normal 3:6 | gripper_open 6:7 | velocity 7:10 | acceleration 10:13 | time 13:14 |
        link_id 14:15]`` (time is the step index t and link_id the link's index in
        ``robot.link_names``, both as floats).

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
        def coeffs(*values: float) -> torch.Tensor:
            return torch.tensor(values, dtype=like.dtype, device=like.device)

        d = (eye.roll(1, dims=1) - eye.roll(-1, dims=1)) * (0.5 / dt)  # interior rows central
        d[0] = 0.0
        d[-1] = 0.0
        d[0, :3] = coeffs(-3.0, 4.0, -1.0) * (0.5 / dt)
        d[-1, -3:] = coeffs(1.0, -4.0, 3.0) * (0.5 / dt)
        a = (eye.roll(1, dims=1) - 2 * eye + eye.roll(-1, dims=1)) / (dt * dt)
        if n == 3:
            a[0], a[-1] = a[1], a[-2]
        else:
            a[0] = 0.0
            a[-1] = 0.0
            a[0, :4] = coeffs(2.0, -5.0, 4.0, -1.0) / (dt * dt)
            a[-1, -4:] = coeffs(-1.0, 4.0, -5.0, 2.0) / (dt * dt)
    return d, a


def _feature_weights(rt: torch.Tensor, links: torch.Tensor, grip: torch.Tensor,
                     dt: float) -> torch.Tensor:
    """(B, n, U, 7, C) matrices W with ``features = [x, y, z, 1, nx, ny, nz] @ W`` for a point of
    local position x and normal n on each of the U links ``links`` (U,) whose ``[R | t]`` rows are
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
    w[..., 3, lay["link_id"].start] = links.to(rt.dtype)
    return w


def _features(link_poses: torch.Tensor, surface: RobotSurfacePoints, grip: torch.Tensor,
              dt: float) -> torch.Tensor:
    """(B, n, M, C) features from link poses (B, n, L, 4, 4): per link one batched matmul of its
    points' ``[x, 1, n]`` rows (M_l, 7) with its (B, n, 7, C) weights, concatenated along M.
    Uses the grouping precomputed in ``surface`` (no host-device synchronisation)."""
    links = surface._group_links
    local = torch.cat([surface.points_link, torch.ones_like(surface.points_link[:, :1]),
                       surface.normals_link], dim=-1)  # (M, 7)
    if surface._order is not None:
        local = local.index_select(0, surface._order)  # grouped by link
    w = _feature_weights(link_poses[:, :, links, :3, :], links, grip, dt)
    parts, start = [], 0
    for i, (_, count) in enumerate(surface.link_groups):
        parts.append(local[start:start + count] @ w[:, :, i])
        start += count
    if not parts:  # M == 0
        return w.new_zeros(*link_poses.shape[:2], 0, FEATURE_DIM)
    feats = torch.cat(parts, dim=2)
    if surface._order is not None:  # undo the grouping
        feats = feats.index_select(2, torch.argsort(surface._order))
    return feats


def _check_gripper(gripper_open: torch.Tensor, q: torch.Tensor, validate: bool) -> torch.Tensor:
    g = require_shape("gripper_open", gripper_open, (q.shape[0], q.shape[1]), max_leading=0)
    if g.dtype == torch.bool:
        return g.to(dtype=q.dtype, device=q.device)
    if not g.is_floating_point():
        raise TypeError(f"gripper_open: expected a bool or floating-point tensor, got {g.dtype}")
    if not validate:
        return g.to(dtype=q.dtype, device=q.device)
    g = require_finite("gripper_open", g).to(dtype=q.dtype, device=q.device)
    if bool(((g < 0) | (g > 1)).any()):
        raise ValueError(f"gripper_open: expected values in [0, 1], got min {float(g.min()):.3g} "
                         f"and max {float(g.max()):.3g}")
    return g


def _check_base(T_world_base: torch.Tensor | None, q: torch.Tensor,
                validate: bool) -> torch.Tensor | None:
    if T_world_base is None:
        return None
    if validate:
        T_world_base = check_rigid_transform("T_world_base", T_world_base)
    T = require_shape("T_world_base", T_world_base, (4, 4), max_leading=1)
    if T.dtype != q.dtype:
        raise TypeError(f"T_world_base: expected dtype {q.dtype} like q, got {T.dtype}")
    if T.dim() == 3 and T.shape[0] != q.shape[0]:
        raise ValueError(f"T_world_base: expected shape ({q.shape[0]}, 4, 4) or (4, 4) to match "
                         f"q's batch, got {tuple(T.shape)}")
    return T[:, None] if T.dim() == 3 else T  # broadcasts over (B, T+1)


def _check_q(robot: Robot, q: torch.Tensor, clamp_to_limits: bool, validate: bool) -> torch.Tensor:
    q = require_shape("q", q, (None, None, None), max_leading=0)
    if validate:
        if clamp_to_limits:
            return robot.clamp_to_limits(q)
        return robot.check_joint_limits(q, name="q")
    q = require_floating("q", q)
    if q.shape[-1] != robot.num_joints:
        raise JointMismatchError(f"q: expected shape (B, T+1, {robot.num_joints}) for the actuated "
                                 f"joints of robot {robot.name!r}, got {tuple(q.shape)}")
    return torch.clamp(q, robot.lower.to(q), robot.upper.to(q)) if clamp_to_limits else q


def _check_surface(robot: Robot, surface: RobotSurfacePoints) -> None:
    """The surface must come from this robot (same name and links); no host-device sync."""
    if surface.link_names is not None and (surface.link_names != robot.link_names
                                           or surface.robot_name != robot.name):
        raise ValueError(f"surface: link_index refers to the links of robot {surface.robot_name!r} "
                         f"{list(surface.link_names)}, not to those of robot {robot.name!r} "
                         f"{list(robot.link_names)}")
    if surface.link_groups and surface.link_groups[-1][0] >= robot.num_links:
        raise ValueError(f"surface: link_index refers to link {surface.link_groups[-1][0]} but "
                         f"robot {robot.name!r} has {robot.num_links} links")


def robot_point_flow(robot: Robot, surface: RobotSurfacePoints, q: torch.Tensor,
                     gripper_open: torch.Tensor, *, dt_s: float = 0.1,
                     T_world_base: torch.Tensor | None = None,
                     clamp_to_limits: bool = False, validate: bool = True) -> RobotPointFlow:
    """Move the sampled surface points along joint trajectories (see module docstring).

    Args:
        robot: the robot the points were sampled on; converted to ``q``'s dtype/device if needed.
        surface: M points in their link frames (moved to ``q``'s dtype/device), sampled on a robot
            with the same name and link names as ``robot``.
        q: (B, T+1, J) joint positions per step, rad or m, ``robot.joint_names`` order, finite.
        gripper_open: (B, T+1) bool or float in [0, 1] gripper-open state per step (1 = open).
        dt_s: time between steps, s (> 0).
        T_world_base: (B, 4, 4) or (4, 4) rigid pose of the robot base in the world, or None to
            stay in the base frame; same dtype as ``q``.
        clamp_to_limits: clamp ``q`` into the joint limits; by default a value outside them (by
            more than 1e-6 rad or m) is an error naming the joint.
        validate: check the values of ``q`` (finite, within limits), ``gripper_open`` (finite, in
            [0, 1]) and the rigidity of ``T_world_base``, which synchronises host and device.
            ``False`` (e.g. in a planner's inner loop, on inputs already checked) keeps only the
            shape, dtype and robot checks: no synchronisation, bad values go through unnoticed.

    Returns:
        :class:`RobotPointFlow` with points/normals/velocity/acceleration (B, T+1, M, 3),
        gripper_open and time_index (B, T+1, M) and link_index (M,); ``.features()``
        (B, T+1, M, 15).

    Raises:
        ValueError: ``q`` not (B, T+1, J) for this robot or not finite, ``gripper_open`` not
            (B, T+1) or outside [0, 1], non-rigid ``T_world_base``, ``surface`` sampled on another
            robot or pointing at links the robot does not have, or ``dt_s`` <= 0. TypeError:
            wrong dtypes.
    """
    dt = require_positive("dt_s", dt_s)
    q = _check_q(robot, q, clamp_to_limits, validate)
    g = _check_gripper(gripper_open, q, validate)
    base = _check_base(T_world_base, q, validate)
    _check_surface(robot, surface)
    if q.dtype != robot.dtype or q.device != robot.device:
        robot = robot.to(dtype=q.dtype, device=q.device)
    surface = surface.to(dtype=q.dtype, device=q.device)
    feats = _features(forward_kinematics(robot.chain, q, base), surface, g, dt)
    b, n, m = feats.shape[:3]
    lay = FEATURE_LAYOUT
    time_index = torch.arange(n, device=q.device)[None, :, None].expand(b, n, m)
    return RobotPointFlow(points=feats[..., lay["xyz"]], normals=feats[..., lay["normal"]],
                          velocity=feats[..., lay["velocity"]],
                          acceleration=feats[..., lay["acceleration"]],
                          gripper_open=feats[..., lay["gripper_open"].start], time_index=time_index,
                          link_index=surface.link_index, _features=feats)
