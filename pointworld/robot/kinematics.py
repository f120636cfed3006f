"""Batched, differentiable forward kinematics and geometric Jacobians on a
:class:`~pointworld.robot.model.KinematicChain`.

Pure torch functions: any leading dims on ``q``, dtype and device from ``q`` (the chain is cast per
call when it differs, from its float64 master copy, so float64 ``q`` on a float32 chain still gets
float64-exact constants; ``Robot.to`` once avoids the per-call cast), autograd through everything, and
``torch.compile``-friendly (the only Python loop runs over links, from the chain's static structure).

How FK is organised for speed: the local transforms of all moving joints come from one batched
Rodrigues formula, ``T_local = origin + sin(θ) [R K, 0] + (1 - cos(θ)) [R K², 0] + θ [0, R axis]``
with the products precomputed per link (three fused multiply-adds, no matmul, no concatenation); then
one (4×4)·(4×4) batched matmul per link composes the tree (fixed joints multiply by a constant).
"""

from __future__ import annotations

import numbers
import warnings

import torch

from pointworld.geometry.checks import require_floating, require_shape
from pointworld.robot.model import (
    PRISMATIC,
    REVOLUTE,
    KinematicChain,
    require_joint_dim,
)


def _chain_like(chain: KinematicChain, q: torch.Tensor) -> KinematicChain:
    """``chain`` in ``q``'s dtype and device (cast from its float64 master copy when it has one)."""
    if chain.dtype == q.dtype and chain.device == q.device:
        return chain
    if chain.float64_master is None and torch.finfo(q.dtype).bits > torch.finfo(chain.dtype).bits:
        warnings.warn(f"q is {q.dtype} but the kinematic chain is {chain.dtype} without a float64 "
                      f"master copy: its constants keep {chain.dtype} rounding; build the chain in "
                      f"float64 (load_robot does) or use Robot.to(dtype)", stacklevel=3)
    return chain.to(q.dtype, q.device)


def _motion_transforms(chain: KinematicChain, q_flat: torch.Tensor) -> torch.Tensor:
    """(Lm, N, 4, 4) ``T_parent_link`` of the Lm links with a moving joint, for q_flat (N, J)."""
    theta = q_flat.t()[chain.motion_index] * chain.motion_multiplier[:, None] + chain.motion_offset[:, None]
    theta = theta[..., None, None]  # (Lm, N, 1, 1)
    local = torch.addcmul(chain.motion_origin[:, None], torch.sin(theta), chain.motion_sin[:, None])
    local = torch.addcmul(local, 1.0 - torch.cos(theta), chain.motion_cos[:, None])
    return torch.addcmul(local, theta, chain.motion_lin[:, None])


def forward_kinematics(chain: KinematicChain, q: torch.Tensor,
                       T_world_base: torch.Tensor | None = None) -> torch.Tensor:
    """Poses of all links for joint positions with any leading dims.

    ``q`` is not checked for NaN/inf here (that would synchronise with the device and break
    ``torch.compile`` graphs): validate user input with ``Robot.check_joint_positions``.

    Args:
        chain: the robot's kinematic chain (``Robot.chain``), L links, J joints.
        q: (..., J) actuated joint positions, rad or m (mimic followers are derived from leaders).
        T_world_base: optional (..., 4, 4) rigid base pose in the world (not re-checked for
            rigidity), broadcast against ``q``'s leading dims; same dtype as ``q``.

    Returns:
        (..., L, 4, 4) ``T_base_link`` (or ``T_world_link`` when ``T_world_base`` is given), m,
        links in ``Robot.link_names`` order.
    """
    q = require_joint_dim("q", q, chain.num_joints)
    chain = _chain_like(chain, q)
    n = q.shape[:-1].numel()
    q_flat = q.reshape(n, chain.num_joints)
    moving = _motion_transforms(chain, q_flat) if chain.motion_index.numel() else None
    world: list[torch.Tensor] = []
    for link, (parent, slot) in enumerate(zip(chain.parent_indices, chain.moving_slot)):
        local = chain.origin[link].expand(n, 4, 4) if slot < 0 else moving[slot]
        world.append(local if parent < 0 else torch.bmm(world[parent], local))
    T = torch.stack(world, dim=1).reshape(*q.shape[:-1], chain.num_links, 4, 4)
    if T_world_base is None:
        return T
    base = require_shape("T_world_base", require_floating("T_world_base", T_world_base), (4, 4))
    if base.dtype != T.dtype:
        raise TypeError(f"T_world_base: expected dtype {T.dtype} (that of q), got {base.dtype}")
    return base[..., None, :, :] @ T


def link_jacobian(chain: KinematicChain, q: torch.Tensor, link: int,
                  point_link: torch.Tensor | None = None, *,
                  T_base_link: torch.Tensor | None = None) -> torch.Tensor:
    """Geometric Jacobian of a point on one link, in the base frame.

    Column j is ``[z × (p - o); z]`` summed over the revolute joints on the path from the root to
    ``link`` driven by actuated joint j (``z`` their axis and ``o`` their origin in the base frame,
    times the mimic multiplier), and ``[z; 0]`` for prismatic ones.

    Args:
        chain: the robot's kinematic chain (``Robot.chain``).
        q: (..., J) joint positions, rad or m.
        link: index of the link in ``Robot.link_names``.
        point_link: optional (..., 3) point in the link frame, m (default: the link origin);
            broadcast against ``q``'s leading dims.
        T_base_link: optional (..., L, 4, 4) ``forward_kinematics(chain, q)`` when the caller
            already has it (saves recomputing FK, e.g. in IK iterations).

    Returns:
        (..., 6, J): rows 0-2 the point's linear velocity (m/s per unit joint velocity), rows 3-5
        the link's angular velocity (rad/s per unit joint velocity), base frame.
    """
    q = require_joint_dim("q", q, chain.num_joints)
    chain = _chain_like(chain, q)
    integral = isinstance(link, numbers.Integral) and not isinstance(link, bool)
    if not integral or not -chain.num_links <= link < chain.num_links:
        raise ValueError(f"link: expected an integer link index in [-{chain.num_links}, "
                         f"{chain.num_links}), got {link!r}")
    link = int(link) % chain.num_links
    T = forward_kinematics(chain, q) if T_base_link is None else T_base_link
    idx = chain.link_paths[link]  # links with a moving joint from the root down to `link`
    p = T[..., link, :3, 3]
    if point_link is not None:
        pt = require_shape("point_link", require_floating("point_link", point_link), (3,)).to(q)
        p = p + (T[..., link, :3, :3] @ pt[..., None])[..., 0]
    jac = q.new_zeros(*torch.broadcast_shapes(q.shape[:-1], p.shape[:-1]), 6, chain.num_joints)
    if idx.numel() == 0:
        return jac
    frames = T[..., idx, :3, :]  # (..., P, 3, 4)
    z = (frames[..., :3] @ chain.axis[idx][:, :, None])[..., 0]  # (..., P, 3)
    revolute = (chain.joint_type[idx] == REVOLUTE).to(q.dtype)[:, None]
    prismatic = (chain.joint_type[idx] == PRISMATIC).to(q.dtype)[:, None]
    linear = torch.linalg.cross(z, p[..., None, :] - frames[..., 3], dim=-1) * revolute + z * prismatic
    cols = torch.cat([linear, z * revolute], dim=-1) * chain.q_multiplier[idx][:, None]  # (..., P, 6)
    cols = cols.expand(*jac.shape[:-2], *cols.shape[-2:])
    return jac.index_add(-1, chain.q_index[idx], cols.transpose(-1, -2))

