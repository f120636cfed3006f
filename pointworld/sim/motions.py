"""End-effector waypoints -> smooth, limit-respecting joint trajectories (IK + interpolation).

An :class:`ArmSpec` describes one arm of a robot: its hand link, the joints IK may move, its gripper
joint, the tool centre point (TCP, between the finger pads) in the hand frame, and the hand rotation
that points the fingers straight down (``R_down``, found from FK at the home pose; the Panda
convention ``diag(1, -1, -1)`` where the home hand does not point down, e.g. the bimanual arms).
The fingers close along the hand's y axis.

:func:`plan_waypoints` turns key TCP poses (world = robot base frame) and gripper openings into a
trajectory: key poses are solved sequentially (each warm-started from the previous solution; only
if that fails, again with random restarts), then points every
``_DENSE_STEP_M`` along the straight Cartesian line between keys are solved in one batch, each
warm-started from the joint-space interpolation of its two keys, so the executed path stays close
to the straight line. Every leg is timed with a smoothstep profile (peak speed 1.5x the mean) slow
enough that no joint exceeds ``velocity_fraction`` of its velocity limit and the TCP stays under
the configured speed. Interpolating in-limit solutions keeps every command within the joint limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from pointworld.robot.ik import solve_ik
from pointworld.robot.kinematics import forward_kinematics
from pointworld.robot.model import Robot

_DENSE_STEP_M = 0.03
#: Largest joint change between consecutive dense IK points before the path counts as a branch jump.
_MAX_JUMP_RAD = 0.35
_POS_TOL_M = 2e-3
_ROT_TOL_RAD = 2e-2
_PANDA_DOWN = np.diag([1.0, -1.0, -1.0])


@dataclass(frozen=True)
class ArmSpec:
    """One arm of a robot.

    Attributes:
        name: ``"arm"`` for single-arm robots, ``"left"``/``"right"`` for the bimanual one.
        hand: name of the hand link.
        joints: names of the arm joints IK may move (gripper excluded).
        columns: (n,) their indices in the joint vector.
        gripper_column: index of the arm's gripper joint (mimic leader) in the joint vector.
        gripper_slot: index of this gripper among the robot's G grippers (column of ``(S, G)``).
        tcp_offset_m: distance from the hand origin to the TCP along the hand z axis, m.
        R_down: (3, 3) hand rotation in the base frame with the fingers pointing down (-z).
        base_xyz: (3,) origin of the first moving arm link at home, m, base frame.
        reach_m: largest TCP distance from ``base_xyz`` over 256 random in-limit configurations, m.
    """

    name: str
    hand: str
    joints: tuple[str, ...]
    columns: np.ndarray
    gripper_column: int
    gripper_slot: int
    tcp_offset_m: float
    R_down: np.ndarray
    base_xyz: np.ndarray
    reach_m: float


def arm_specs(robot: Robot, home_q: np.ndarray) -> dict[str, ArmSpec]:
    """Arms of ``robot`` keyed by name; ``home_q``: (J,) home joint positions, rad or m."""
    hands = [n for n in robot.link_names if n.endswith("hand")]
    T = forward_kinematics(robot.chain, torch.as_tensor(home_q, dtype=robot.dtype)).numpy()
    grippers = sorted(i for i, n in enumerate(robot.joint_names)
                      if "finger" in n and n not in robot.mimic)
    specs = {}
    for hand in hands:
        prefix = hand[: -len("hand")]
        name = prefix.rstrip("_") if len(hands) > 1 else "arm"
        fingers = [n for n in robot.link_names if n.startswith(prefix) and "finger" in n
                   and n.replace(prefix, "", 1) in ("leftfinger", "rightfinger")]
        h = robot.link_index(hand)
        tips = []
        for f in fingers:
            T_hf = np.linalg.solve(T[h], T[robot.link_index(f)])
            v = robot.link_meshes[f].vertices @ T_hf[:3, :3].T + T_hf[:3, 3]
            tips.append(v[:, 2].max())
        g_col = next(i for i in grippers if robot.joint_names[i].startswith(prefix))
        cols = [i for i, n in enumerate(robot.joint_names)
                if n.startswith(prefix) and "finger" not in n and n not in robot.mimic]
        R_home = T[h][:3, :3]
        R_down = R_home if R_home[2, 2] < -0.99 else _PANDA_DOWN
        joints = tuple(robot.joint_names[i] for i in cols)
        base = T[robot.link_joint_names.index(joints[0])][:3, 3]
        tcp_offset = float(max(tips)) - 0.009
        specs[name] = ArmSpec(name=name, hand=hand, joints=joints, columns=np.array(cols), gripper_column=g_col,
                              gripper_slot=grippers.index(g_col), tcp_offset_m=tcp_offset, R_down=R_down,
                              base_xyz=base, reach_m=_reach(robot, h, tcp_offset, base))
    return specs


def _reach(robot: Robot, hand: int, tcp_offset: float, base: np.ndarray) -> float:
    gen = torch.Generator().manual_seed(0)
    lo = torch.where(torch.isfinite(robot.lower), robot.lower, -math.pi)
    hi = torch.where(torch.isfinite(robot.upper), robot.upper, math.pi)
    q = lo + (hi - lo) * torch.rand(256, robot.num_joints, generator=gen, dtype=robot.dtype)
    T = forward_kinematics(robot.chain, q)[:, hand].numpy()
    tcp = T[:, :3, 3] + T[:, :3, 2] * tcp_offset
    return float(np.linalg.norm(tcp - base, axis=1).max())


def down_rotation(arm: ArmSpec, yaw: float) -> np.ndarray:
    """(3, 3) hand rotation in the base frame with the fingers down, turned by ``yaw`` rad about z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ arm.R_down


def closing_yaw(arm: ArmSpec, direction_xy: np.ndarray) -> float:
    """Yaw (rad, in [-pi/2, pi/2)) for :func:`down_rotation` that makes the fingers close along the
    horizontal ``direction_xy`` (2,) (the gripper is symmetric under a half turn)."""
    base = math.atan2(arm.R_down[1, 1], arm.R_down[0, 1])
    yaw = math.atan2(direction_xy[1], direction_xy[0]) - base
    return (yaw + math.pi / 2) % math.pi - math.pi / 2


def hand_targets(arm: ArmSpec, tcp_xyz: np.ndarray, R: np.ndarray) -> torch.Tensor:
    """(N, 4, 4) float64 ``T_base_hand`` with the TCP at ``tcp_xyz`` (N, 3), m, base frame, and the
    hand rotation ``R`` (3, 3)."""
    T = np.tile(np.eye(4), (len(tcp_xyz), 1, 1))
    T[:, :3, :3] = R
    T[:, :3, 3] = tcp_xyz - R[:, 2] * arm.tcp_offset_m
    return torch.from_numpy(T)


def _ik(robot: Robot, arm: ArmSpec, T: torch.Tensor, q0: torch.Tensor, seed: int,
        restarts: bool = False) -> tuple[torch.Tensor, bool]:
    res = solve_ik(robot, arm.hand, T, q0, active_joints=arm.joints, max_iters=150 if restarts else 60,
                   restarts=restarts,
                   seed=seed, tol_position_m=_POS_TOL_M / 4, tol_rotation_rad=_ROT_TOL_RAD / 4)
    ok = bool(((res.position_error_m < _POS_TOL_M) & (res.rotation_error_rad < _ROT_TOL_RAD)).all())
    return res.q, ok


def _solve_path(robot: Robot, arm: ArmSpec, q_start: np.ndarray, xyz: np.ndarray, R: np.ndarray,
                seed: int) -> tuple[np.ndarray, np.ndarray, list[int]] | None:
    """Dense joint path (P, J) from ``q_start`` through the key poses, TCP points (P, 3) and the path
    index of every key; None if a pose is unreachable or the solutions jump between IK branches."""
    T_keys = hand_targets(arm, xyz, R)
    q = torch.as_tensor(q_start, dtype=torch.float64)
    keys = [q]
    for k in range(len(xyz)):
        q, ok = _ik(robot, arm, T_keys[k], keys[-1], seed)
        if not ok:  # the warm start stalled: random restarts (may land on another IK branch)
            q, ok = _ik(robot, arm, T_keys[k], keys[-1], seed, restarts=True)
        if not ok:
            return None
        keys.append(q)
    q_keys = torch.stack(keys[1:]).numpy()
    pts, inits, key_index = [xyz[:1]], [q_keys[:1]], [1]
    for k in range(1, len(xyz)):
        n = max(1, math.ceil(np.linalg.norm(xyz[k] - xyz[k - 1]) / _DENSE_STEP_M))
        a = (np.arange(1, n + 1) / n)[:, None]
        pts.append(xyz[k - 1] + a * (xyz[k] - xyz[k - 1]))
        inits.append(q_keys[k - 1] + a * (q_keys[k] - q_keys[k - 1]))
        key_index.append(key_index[-1] + n)
    pts, init = np.concatenate(pts), np.concatenate(inits)
    q_dense, ok = _ik(robot, arm, hand_targets(arm, pts, R), torch.from_numpy(init), seed)
    q_dense = q_dense.numpy()
    if not ok or (len(q_dense) > 1 and np.abs(np.diff(q_dense[:, arm.columns], axis=0)).max() > _MAX_JUMP_RAD):
        return None
    # the first leg is a joint-space move: sample it finely so its TCP arc length is known
    n0 = max(1, math.ceil(np.abs(q_dense[0] - q_start)[arm.columns].max() / 0.05))
    first = q_start + (np.arange(n0)[:, None] / n0) * (q_dense[0] - q_start)
    path = np.concatenate([first, q_dense])
    pts = np.concatenate([_tcp(robot, arm, first), pts])
    return path, pts, [k + n0 - 1 for k in key_index]


def _tcp(robot: Robot, arm: ArmSpec, q: np.ndarray) -> np.ndarray:
    T = forward_kinematics(robot.chain, torch.as_tensor(q, dtype=robot.dtype))[..., robot.link_index(arm.hand), :, :]
    T = T.numpy()
    return T[..., :3, 3] + T[..., :3, 2] * arm.tcp_offset_m


def _leg_steps(dq: np.ndarray, dx: np.ndarray, vmax_q: np.ndarray, v_ee: float, dt: float) -> int:
    """Control steps for a smoothstep leg over pieces with joint changes ``dq`` (n, J) and TCP
    changes ``dx`` (n,), so that the peak (1.5x mean) speeds stay within ``vmax_q`` and ``v_ee``."""
    per_piece = np.maximum(np.abs(dq) / vmax_q, 0.0).max(axis=1)
    per_piece = np.maximum(per_piece, dx / v_ee)
    return max(1, math.ceil(1.5 * len(dq) * per_piece.max() / dt - 1e-9))


def _smooth_leg(path: np.ndarray, steps: int) -> np.ndarray:
    """(steps, J) samples along the piecewise-linear ``path`` (n+1, J) at smoothstep times (excl. start)."""
    t = np.arange(1, steps + 1) / steps
    u = (3 * t ** 2 - 2 * t ** 3) * (len(path) - 1)
    i = np.minimum(np.floor(u).astype(int), len(path) - 2)
    f = (u - i)[:, None]
    return path[i] * (1 - f) + path[i + 1] * f


def plan_waypoints(robot: Robot, arm: ArmSpec, q_start: np.ndarray, xyz: np.ndarray, R: np.ndarray,
                   opening: np.ndarray, *, dt: float, max_ee_speed: float, velocity_fraction: float,
                   gripper_steps: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray] | None:
    """Joint trajectory through TCP key poses, or None if IK cannot reach them all.

    Args:
        robot: the robot (float64).
        arm: the arm that moves (other joints hold their ``q_start`` value).
        q_start: (J,) current joint positions, rad or m, within the limits.
        xyz: (K, 3) TCP key positions, m, base frame. R: (3, 3) hand rotation at every key.
        opening: (K,) gripper opening in [0, 1] reached at each key (ramped along the leg before it).
        dt: control period, s. max_ee_speed: TCP speed bound, m/s.
        velocity_fraction: fraction of each joint's velocity limit the trajectory may use.
        gripper_steps: least number of control steps of a leg on which the gripper opening changes.
        seed: IK seed.

    Returns:
        ``(q_traj (S, J), opening (S,))`` one command per control step (the start excluded), with the
        arm's gripper entries of ``q_traj`` at ``opening * upper``; or None.
    """
    solved = _solve_path(robot, arm, q_start, xyz, R, seed)
    if solved is None:
        return None
    path, pts, key_index = solved
    vmax = (robot.velocity_limit.numpy() * velocity_fraction)[arm.columns]
    g0 = float(q_start[arm.gripper_column] / robot.upper[arm.gripper_column])
    g_keys = np.concatenate([[min(max(g0, 0.0), 1.0)], opening])
    bounds = [0] + key_index
    qs, gs = [], []
    for k in range(len(bounds) - 1):
        leg = path[bounds[k]: bounds[k + 1] + 1]
        dq = np.diff(leg[:, arm.columns], axis=0)
        dx = np.linalg.norm(np.diff(pts[bounds[k]: bounds[k + 1] + 1], axis=0), axis=1)
        steps = _leg_steps(dq, dx, vmax, max_ee_speed, dt)
        if abs(g_keys[k + 1] - g_keys[k]) > 1e-6:
            steps = max(steps, gripper_steps)
        qs.append(_smooth_leg(leg, steps))
        gs.append(g_keys[k] + (g_keys[k + 1] - g_keys[k]) * np.arange(1, steps + 1) / steps)
    q_traj, g_traj = np.concatenate(qs), np.clip(np.concatenate(gs), 0.0, 1.0)  # rounding only
    q_traj[:, arm.gripper_column] = g_traj * float(robot.upper[arm.gripper_column])
    return q_traj, g_traj
