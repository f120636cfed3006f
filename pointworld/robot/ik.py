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
``q`` is then clamped to ``[lower, upper]``, so every iterate is within the limits. ``q_init`` must
lie within the limits (``ValueError`` naming the joint) unless ``clamp_q_init=True``. The step and
limit logic lives in :mod:`pointworld.robot.ik_step`.

Damping (``adaptive_damping``, default): each batch element keeps its own ``lambda``; a step that
lowers ``|e|`` is accepted and ``lambda`` halves, one that does not is rejected and ``lambda``
quadruples (Levenberg-Marquardt), so the error of an element never increases along one start.

Restarts (``restarts``, default on): DLS is local; from a far start it can stall in a local minimum,
typically against a joint limit. Every ``_RESTART_WINDOW`` iterations an unconverged element that is
not progressing (squared error not halved over the window; once within 10x the tolerances, not
lowered by 1%) restarts from a uniformly random in-limit configuration drawn from a private
generator seeded with ``seed``: continuous joints (revolute, infinite limits) move by a uniform
angle in [-pi, pi) from ``q_init``; other joints with an infinite limit, and frozen joints, keep
their ``q_init`` value.
The best configuration seen per element is returned (converged first, then lowest error), so a
restart never makes the result worse. Converged elements stop moving; the batch stops when all have
converged (checked every ``check_every`` iterations, limiting host-device synchronisation) or after
``max_iters``. Measured on 1000 random in-limit targets and starts (float64, one seed), converged to
1e-4 m / 1e-3 rad within 100 / 200 iterations: Franka 97.3% / 99.5%, iiwa 99.8% / 100%,
flying_gripper 100% / 100%, ur5e_gripper 97.8% / 99.5%.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pointworld.errors import JointMismatchError
from pointworld.geometry.checks import require_dtype, require_int, require_positive
from pointworld.geometry.se3 import check_rigid_transform
from pointworld.robot.ik_step import IKProblem, TaskState, bounded_step, random_start
from pointworld.robot.model import REVOLUTE, Robot

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


def _active_mask(robot: Robot, link: int, active_joints: Sequence[str] | None) -> torch.Tensor:
    """(J,) bool, True for joints the solver may move: those named (default all) that move
    ``link`` (drive a joint on its path from the root; mimic followers count for their leader)."""
    names, chain = robot.joint_names, robot.chain
    on_path = torch.zeros(robot.num_joints, dtype=torch.bool, device=robot.device)
    on_path[chain.q_index[chain.link_paths[link]]] = True
    if active_joints is not None:
        if isinstance(active_joints, str):
            raise TypeError(f"active_joints: expected a sequence of joint names, got the string "
                            f"{active_joints!r}")
        unknown = [n for n in active_joints if n not in names]
        if unknown or not active_joints:
            raise JointMismatchError(f"active_joints: expected a non-empty subset of the joints "
                                     f"{list(names)}, got {list(active_joints)} (unknown: {unknown})")
        chosen = torch.tensor([n in set(active_joints) for n in names], device=robot.device)
        on_path = on_path & chosen
    if not bool(on_path.any()):
        movers = [names[j] for j in chain.q_index[chain.link_paths[link]].tolist()]
        raise ValueError(f"link: no joint the solver may move moves link {robot.link_names[link]!r} "
                         f"(joints on its path: {sorted(set(movers))}; active_joints: "
                         f"{None if active_joints is None else list(active_joints)})")
    return on_path


def _check_inputs(robot: Robot, link: str, T_base_target: torch.Tensor,
                  q_init: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    if link not in robot.link_names:
        raise ValueError(f"link: expected one of the links {list(robot.link_names)}, got {link!r}")
    q = robot.check_joint_positions(q_init, name="q_init")
    T = require_dtype("T_base_target", check_rigid_transform("T_base_target", T_base_target),
                      q.dtype)
    try:
        lead = torch.broadcast_shapes(q.shape[:-1], T.shape[:-2])
    except RuntimeError as exc:
        raise ValueError(f"q_init, T_base_target: leading dims {tuple(q.shape[:-1])} and "
                         f"{tuple(T.shape[:-2])} do not broadcast") from exc
    return robot.link_index(link), q.expand(*lead, q.shape[-1]), T.expand(*lead, 4, 4)


def _stalled(problem: IKProblem, state: TaskState, window_cost: torch.Tensor) -> torch.Tensor:
    """(...) bool: unconverged elements to restart, given the cost at the start of the window."""
    slow = state.cost > _STALL_RATIO * window_cost
    near = state.pos <= _NEAR * problem.tol_p
    if not problem.position_only:
        near = near & (state.ang <= _NEAR * problem.tol_r)
    stuck = state.cost > _STUCK_RATIO * window_cost
    return ~state.done & slow & (~near | stuck)


def _iterate(problem: IKProblem, q0: torch.Tensor, lam0: float, max_iters: int, adaptive: bool,
             check_every: int, gen: torch.Generator | None) -> tuple[TaskState, int]:
    """The LM loop with optional restarts (module docstring); returns the best state per element."""
    lower, upper = problem.robot.lower, problem.robot.upper
    state = problem.evaluate(q0)
    best, window_cost = state, state.cost
    lam = torch.full_like(state.cost, lam0)
    iterations = 0
    while iterations < max_iters:
        if iterations % check_every == 0 and bool(best.done.all()):
            break
        q_next = bounded_step(state, lam, lower, upper)
        restart = None
        if gen is not None and iterations > 0 and iterations % _RESTART_WINDOW == 0:
            restart = _stalled(problem, state, window_cost)
            fresh = random_start(q0, lower, upper, problem.active, problem.revolute, gen)
            q_next = torch.where(restart[..., None], fresh, q_next)
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
             restarts: bool = True, seed: int = 0, check_every: int = 5,
             clamp_q_init: bool = False) -> IKResult:
    """Solve for joint positions that put ``link`` at ``T_base_target`` (batched DLS, see module).

    Args:
        robot: the robot; converted to the dtype/device of ``q_init`` if they differ.
        link: name of the link whose frame should reach the target (one of ``robot.link_names``).
        T_base_target: (..., 4, 4) rigid target poses of the link frame in the robot base frame;
            same dtype as ``q_init``; leading dims broadcast against those of ``q_init``.
        q_init: (..., J) start joint positions, rad or m, ``robot.joint_names`` order, within the
            limits (see ``clamp_q_init``; the solution always lies within the limits).
        position_only: ignore the target orientation (3-row task; the angle is only reported).
        orientation_weight: metres of position error worth one radian of orientation error.
        damping: DLS damping lambda (m); the initial value when ``adaptive_damping``.
        max_iters: largest number of iterations (restarts included).
        tol_position_m: convergence tolerance on the position error, m.
        tol_rotation_rad: convergence tolerance on the orientation error, rad.
        active_joints: names of the joints the solver may move (default all); the others, and
            joints that do not move ``link``, keep their ``q_init`` value.
        adaptive_damping: Levenberg-Marquardt accept/reject with a per-element ``lambda``.
        restarts: restart stalled elements from random in-limit configurations.
        seed: seed of the restart generator (results are deterministic for a seed).
        check_every: iterations between the (synchronising) all-converged checks.
        clamp_q_init: clamp an out-of-limit ``q_init`` into the limits instead of raising.

    Returns:
        :class:`IKResult`: ``q`` (..., J), per-element errors and convergence flags (...).

    Raises:
        ValueError: unknown ``link`` (lists the links), or no allowed joint moves it; ``q_init``
            without J entries in its last dim (JointMismatchError), with NaN/inf, or outside the
            limits by more than 1e-6 (unless ``clamp_q_init``); a non-rigid or wrongly shaped
            target; batch dims that do not broadcast; a non-positive option.
            JointMismatchError: ``active_joints`` names an unknown joint. TypeError: ``q_init``
            not floating point, or the target dtype differs from ``q_init``'s.
    """
    weight = require_positive("orientation_weight", orientation_weight)
    lam0 = require_positive("damping", damping)
    tol_p = require_positive("tol_position_m", tol_position_m)
    tol_r = require_positive("tol_rotation_rad", tol_rotation_rad)
    max_iters = require_int("max_iters", max_iters, minimum=1)
    check_every = require_int("check_every", check_every, minimum=1)
    if isinstance(q_init, torch.Tensor) and q_init.is_floating_point() and (
            q_init.dtype != robot.dtype or q_init.device != robot.device):
        robot = robot.to(dtype=q_init.dtype, device=q_init.device)
    link_idx, q, T_target = _check_inputs(robot, link, T_base_target, q_init)
    active = _active_mask(robot, link_idx, active_joints).to(q.dtype)
    chain = robot.chain
    revolute = torch.zeros(robot.num_joints, dtype=torch.bool, device=q.device)
    revolute[chain.q_index[(chain.joint_type == REVOLUTE) & (chain.q_index >= 0)]] = True
    problem = IKProblem(robot=robot, link=link_idx, target=T_target, weight=weight,
                        position_only=position_only, active=active, revolute=revolute, tol_p=tol_p,
                        tol_r=tol_r)
    gen = None
    if restarts:
        gen = torch.Generator(device=q.device)
        gen.manual_seed(int(seed))
    if not clamp_q_init:
        robot.check_joint_limits(q_init, "q_init")  # within 1e-6; that residual is clamped below
    q0 = torch.clamp(q, robot.lower, robot.upper)
    best, iterations = _iterate(problem, q0, lam0, max_iters, adaptive_damping, check_every, gen)
    return IKResult(q=best.q, position_error_m=best.pos, rotation_error_rad=best.ang,
                    converged=best.done, iterations=iterations)
