"""One damped-least-squares IK iteration: the task error and Jacobian of a link pose, the DLS step
with joint limits, and random in-limit restarts (used by :func:`pointworld.robot.ik.solve_ik`).

The task error, step and limit handling are described in :mod:`pointworld.robot.ik`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from pointworld.geometry.rotations import matrix_to_axis_angle
from pointworld.robot.kinematics import forward_kinematics, link_jacobian
from pointworld.robot.model import Robot


@dataclass(frozen=True)
class TaskState:
    """One IK iterate of a batch (``...`` batch dims, R task rows, J joints).

    Attributes:
        q: (..., J) joint positions, rad or m.
        err: (..., R) weighted task error: position m, then orientation rad times the weight (m/rad).
        jac: (..., R, J) Jacobian of ``err``'s task, rows weighted like ``err``, frozen columns zero.
        cost: (...) ``|err|^2``, m^2.
        pos: (...) position error, m.
        ang: (...) orientation error, rad.
        done: (...) bool, both errors within tolerance.
    """

    q: torch.Tensor
    err: torch.Tensor
    jac: torch.Tensor
    cost: torch.Tensor
    pos: torch.Tensor
    ang: torch.Tensor
    done: torch.Tensor

    def where(self, mask: torch.Tensor, other: TaskState) -> TaskState:
        """Element-wise ``self`` where ``mask`` (...) bool, else ``other``."""
        fields = {}
        for f in dataclasses.fields(self):
            mine = getattr(self, f.name)
            m = mask.reshape(mask.shape + (1,) * (mine.dim() - mask.dim()))
            fields[f.name] = torch.where(m, mine, getattr(other, f.name))
        return TaskState(**fields)


@dataclass(frozen=True)
class IKProblem:
    """A validated IK problem: reach ``target`` (..., 4, 4) ``T_base_target`` with link ``link``.

    ``weight`` is m per rad of orientation error, ``active`` (J,) 1.0 for the joints that may move
    and 0.0 for frozen ones, ``revolute`` (J,) bool for the joints driving a revolute joint,
    ``tol_p`` m and ``tol_r`` rad the convergence tolerances.
    """

    robot: Robot
    link: int
    target: torch.Tensor
    weight: float
    position_only: bool
    active: torch.Tensor
    revolute: torch.Tensor
    tol_p: float
    tol_r: float

    def evaluate(self, q: torch.Tensor) -> TaskState:
        """Task error and Jacobian at ``q`` (..., J) rad or m (one FK shared by both)."""
        T = forward_kinematics(self.robot.chain, q)
        T_link = T[..., self.link, :, :]
        e_pos = self.target[..., :3, 3] - T_link[..., :3, 3]
        r_link = T_link[..., :3, :3]
        rotvec_link = matrix_to_axis_angle(r_link.transpose(-1, -2) @ self.target[..., :3, :3])
        jac = link_jacobian(self.robot.chain, q, self.link, T_base_link=T) * self.active[..., None, :]
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
        return TaskState(q=q, err=err, jac=jac, cost=(err * err).sum(-1), pos=pos, ang=ang,
                         done=done)


def dls_step(jac: torch.Tensor, err: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Damped-least-squares step ``J^T (J J^T + lam^2 I)^-1 e`` (a linear solve, no inverse).

    Args:
        jac: (..., R, J) task Jacobian.
        err: (..., R) task error.
        lam: (...) damping, in the unit of ``err`` (m).

    Returns:
        (..., J) joint step, rad or m.
    """
    eye = torch.eye(jac.shape[-2], dtype=jac.dtype, device=jac.device)
    gram = jac @ jac.transpose(-1, -2) + (lam * lam)[..., None, None] * eye
    x = torch.linalg.solve(gram, err[..., None])
    return (jac.transpose(-1, -2) @ x).squeeze(-1)


def bounded_step(state: TaskState, lam: torch.Tensor, lower: torch.Tensor,
                 upper: torch.Tensor) -> torch.Tensor:
    """Next joint positions within the limits (active set of one round).

    The DLS step is solved again without the joints it pushes out through a limit they sit at,
    then ``q + step`` is clamped to ``[lower, upper]``.

    Args:
        state: the current iterate (``q`` (..., J), ``err``, ``jac``).
        lam: (...) damping, m.
        lower, upper: (J,) joint limits, rad or m.

    Returns:
        (..., J) next joint positions, rad or m.
    """
    q = state.q
    step = dls_step(state.jac, state.err, lam)
    blocked = ((q <= lower) & (step < 0)) | ((q >= upper) & (step > 0))
    step = dls_step(state.jac * (~blocked)[..., None, :].to(q.dtype), state.err, lam)
    return torch.clamp(q + step, lower, upper)


def random_start(q_init: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                 active: torch.Tensor, revolute: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Restart configurations: uniform in the limits for the active, finitely limited joints;
    ``q_init`` + uniform [-pi, pi) for active revolute joints with an infinite limit (continuous).

    Args:
        q_init: (..., J) start joint positions, rad or m (kept for the other joints).
        lower, upper: (J,) joint limits, rad or m (may be infinite).
        active: (J,) 1.0 for joints the solver may move, else 0.0.
        revolute: (J,) bool, True for joints driving a revolute (or continuous) joint.
        gen: the random generator (on ``q_init``'s device).

    Returns:
        (..., J) joint positions, rad or m.
    """
    u = torch.rand(q_init.shape, generator=gen, dtype=q_init.dtype, device=q_init.device)
    finite = torch.isfinite(lower) & torch.isfinite(upper)
    free, spin = finite & (active > 0), ~finite & revolute & (active > 0)
    span = torch.where(free, upper - lower, torch.zeros_like(lower))
    q = torch.where(spin, q_init + (2.0 * u - 1.0) * math.pi, q_init)
    return torch.where(free, torch.where(free, lower, torch.zeros_like(lower)) + u * span, q)
