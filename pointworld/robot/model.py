"""The loaded robot: :class:`KinematicChain` (tensors for forward kinematics) and :class:`Robot`.

Both are built by :func:`pointworld.robot.urdf.load_robot`. Links are indexed in ``Robot.link_names``
order (parents before children, root first); joint vectors ``q`` (…, J) follow ``Robot.joint_names``
(actuated joints in URDF document order; fixed joints and mimic followers excluded). Joint positions are
rad (revolute/continuous) or m (prismatic).
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import trimesh

from pointworld.errors import JointMismatchError
from pointworld.geometry.checks import require_finite, require_floating
from pointworld.geometry.rotations import skew_matrix

#: ``KinematicChain.joint_type`` codes. Continuous joints are REVOLUTE (with infinite limits).
FIXED, REVOLUTE, PRISMATIC = 0, 1, 2

_FLOAT_FIELDS = ("origin", "axis", "q_multiplier", "q_offset", "motion_multiplier", "motion_offset",
                 "motion_origin", "motion_sin", "motion_cos", "motion_lin")


def require_joint_dim(name: str, q: object, num_joints: int, detail: str = "") -> torch.Tensor:
    """Return ``q`` (..., J) if it is a floating tensor with J = ``num_joints`` (``TypeError``,
    else ``JointMismatchError`` whose expectation ends with ``detail``). No value checks, so no
    device synchronisation: forward kinematics uses it inside ``torch.compile`` graphs."""
    q = require_floating(name, q)
    if q.dim() == 0 or q.shape[-1] != num_joints:
        raise JointMismatchError(f"{name}: expected shape (..., {num_joints}) (one entry per "
                                 f"actuated joint{detail}), got a tensor of shape {tuple(q.shape)}")
    return q


@dataclass(frozen=True, eq=False)
class KinematicChain:
    """Tensors describing a kinematic tree of L links driven by J actuated joints.

    For each link ``l`` (index into ``Robot.link_names``), the joint whose child is ``l`` gives
    ``T_parent_l = origin[l] @ motion(joint_type[l], axis[l], q[q_index[l]] * q_multiplier[l] + q_offset[l])``.

    Attributes:
        parent: (L,) int64 parent link index, -1 for the root.
        origin: (L, 4, 4) ``T_parent_jointframe``, the URDF joint origin (identity for the root), m.
        axis: (L, 3) unit joint axis in the joint frame (zeros for fixed joints).
        joint_type: (L,) int64 FIXED=0, REVOLUTE=1 (also continuous), PRISMATIC=2.
        q_index: (L,) int64 index into the actuated vector driving the joint, -1 if fixed.
        q_multiplier: (L,) mimic multiplier (1 unless mimic).
        q_offset: (L,) mimic offset, rad or m (0 unless mimic).
        num_joints: J, the length of the actuated joint vector.
        parent_indices: ``parent`` as Python ints (static structure for the FK loop).
        type_codes: ``joint_type`` as Python ints.
        moving_slot: for each link, its row in the ``motion_*`` tensors (-1 for fixed joints).
        motion_index: (Lm,) int64 ``q_index`` of the Lm links with a moving joint.
        motion_multiplier, motion_offset: (Lm,) their mimic multiplier and offset.
        motion_origin: (Lm, 4, 4) their ``origin``.
        motion_sin, motion_cos, motion_lin: (Lm, 4, 4) with ``K = skew(axis)`` and ``R`` the origin's
            rotation: ``[[R K, 0], [0, 0]]`` and ``[[R K K, 0], [0, 0]]`` for revolute joints and
            ``[[0, R axis], [0, 0]]`` for prismatic ones (else 0), so that the joint's local transform
            is ``origin + sin(θ) motion_sin + (1 - cos(θ)) motion_cos + θ motion_lin`` (Rodrigues).
        link_paths: for each link, (P,) int64 indices of the links with a moving joint on its path
            from the root (root first), for Jacobians.
        float64_master: the float64 chain this one was cast from (None if it is float64 itself), so
            :meth:`to` never upcasts rounded constants.
    """

    parent: torch.Tensor
    origin: torch.Tensor
    axis: torch.Tensor
    joint_type: torch.Tensor
    q_index: torch.Tensor
    q_multiplier: torch.Tensor
    q_offset: torch.Tensor
    num_joints: int
    parent_indices: tuple[int, ...]
    type_codes: tuple[int, ...]
    moving_slot: tuple[int, ...]
    motion_index: torch.Tensor
    motion_multiplier: torch.Tensor
    motion_offset: torch.Tensor
    motion_origin: torch.Tensor
    motion_sin: torch.Tensor
    motion_cos: torch.Tensor
    motion_lin: torch.Tensor
    link_paths: tuple[torch.Tensor, ...]
    float64_master: KinematicChain | None = dataclasses.field(default=None, repr=False)

    @classmethod
    def build(cls, parent: torch.Tensor, origin: torch.Tensor, axis: torch.Tensor,
              joint_type: torch.Tensor, q_index: torch.Tensor, q_multiplier: torch.Tensor,
              q_offset: torch.Tensor, num_joints: int) -> KinematicChain:
        """Build a chain from its defining tensors (shapes as in the class docstring) and derive the
        FK-ready ones."""
        types = tuple(int(t) for t in joint_type.tolist())
        moving = [i for i, t in enumerate(types) if t != FIXED]
        slot = tuple(moving.index(i) if t != FIXED else -1 for i, t in enumerate(types))
        m = torch.tensor(moving, dtype=torch.int64)
        o = origin[m]
        revolute = (joint_type[m] == REVOLUTE).to(origin.dtype)[:, None, None]
        prismatic = (joint_type[m] == PRISMATIC).to(origin.dtype)[:, None]
        k = skew_matrix(axis[m])
        sin4, cos4, lin4 = torch.zeros_like(o), torch.zeros_like(o), torch.zeros_like(o)
        sin4[:, :3, :3] = o[:, :3, :3] @ k * revolute
        cos4[:, :3, :3] = o[:, :3, :3] @ k @ k * revolute
        lin4[:, :3, 3] = (o[:, :3, :3] @ axis[m][:, :, None])[..., 0] * prismatic
        paths: list[list[int]] = []
        for i, p in enumerate(parent.tolist()):
            paths.append((paths[p] if p >= 0 else []) + ([i] if types[i] != FIXED else []))
        return cls(parent=parent, origin=origin, axis=axis, joint_type=joint_type, q_index=q_index,
                   q_multiplier=q_multiplier, q_offset=q_offset, num_joints=int(num_joints),
                   parent_indices=tuple(int(p) for p in parent.tolist()), type_codes=types,
                   moving_slot=slot, motion_index=q_index[m],
                   motion_multiplier=q_multiplier[m], motion_offset=q_offset[m],
                   motion_origin=o, motion_sin=sin4, motion_cos=cos4, motion_lin=lin4,
                   link_paths=tuple(torch.tensor(p, dtype=torch.int64) for p in paths))

    @property
    def num_links(self) -> int:
        """L, the number of links."""
        return len(self.parent_indices)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the chain's tensors."""
        return self.origin.dtype

    @property
    def device(self) -> torch.device:
        """Device of the chain's tensors."""
        return self.origin.device

    def to(self, dtype: torch.dtype | None = None,
           device: torch.device | str | None = None) -> KinematicChain:
        """Copy with floating tensors cast to ``dtype`` and all tensors moved to ``device``; casts
        start from the float64 master copy when there is one (exact float32 -> float64)."""
        master = self if self.dtype == torch.float64 else self.float64_master
        source, dtype = master or self, dtype or self.dtype
        changes: dict[str, object] = {"float64_master": None if dtype == torch.float64 else master}
        for f in dataclasses.fields(source):
            value = getattr(source, f.name)
            if isinstance(value, torch.Tensor):
                changes[f.name] = value.to(device=device, dtype=dtype if f.name in _FLOAT_FIELDS else None)
        changes["link_paths"] = tuple(p.to(device=device) for p in source.link_paths)
        return dataclasses.replace(source, **changes)


@dataclass(frozen=True, eq=False)
class Robot:
    """A robot loaded from a URDF: names, kinematic chain, limits, mimic relations and link meshes.

    Attributes:
        name: the URDF robot name.
        link_names: (L names) parents before children, root first.
        joint_names: (J names) actuated joints in URDF document order (a ``floating`` joint ``j``
            becomes ``j_x, j_y, j_z, j_roll, j_pitch, j_yaw``).
        link_joint_names: (L names) the joint whose child is each link (``""`` for the root).
        chain: tensors for :func:`pointworld.robot.kinematics.forward_kinematics`.
        lower, upper: (J,) joint limits, rad or m (±inf for continuous and virtual floating joints).
        velocity_limit: (J,) rad/s or m/s (inf where the URDF gives none).
        link_meshes: link name -> its geometry merged in the LINK frame, m (links without
            geometry are absent).
        mimic: follower joint -> (root leader joint, multiplier, offset) with
            ``q_follower = multiplier * q_leader + offset``.
        urdf_path: the file it was loaded from.
        limits_float64: (3, J) float64 CPU master copy of lower/upper/velocity from which
            :meth:`to` casts (the chain keeps its own, ``chain.float64_master``), so precision is
            never lost on a round trip.
    """

    name: str
    link_names: tuple[str, ...]
    joint_names: tuple[str, ...]
    link_joint_names: tuple[str, ...]
    chain: KinematicChain
    lower: torch.Tensor
    upper: torch.Tensor
    velocity_limit: torch.Tensor
    link_meshes: dict[str, trimesh.Trimesh]
    mimic: dict[str, tuple[str, float, float]]
    urdf_path: Path | None = None
    limits_float64: torch.Tensor | None = dataclasses.field(default=None, repr=False)

    @property
    def num_joints(self) -> int:
        """J, the number of actuated joints."""
        return len(self.joint_names)

    @property
    def num_links(self) -> int:
        """L, the number of links."""
        return len(self.link_names)

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the cached tensors."""
        return self.chain.dtype

    @property
    def device(self) -> torch.device:
        """Device of the cached tensors."""
        return self.chain.device

    def to(self, dtype: torch.dtype | None = None,
           device: torch.device | str | None = None) -> Robot:
        """Copy with tensors cast/moved; casts start from the float64 master copy, so
        ``robot.to(torch.float32).to(torch.float64)`` is exact."""
        dtype = self.dtype if dtype is None else dtype
        device = self.device if device is None else device
        chain = self.chain.to(dtype, device)
        limits = self.limits_float64
        limits = torch.stack([self.lower, self.upper, self.velocity_limit]) if limits is None else limits
        limits = limits.to(dtype=dtype, device=device)
        return dataclasses.replace(self, chain=chain, lower=limits[0], upper=limits[1],
                                   velocity_limit=limits[2])

    def link_index(self, name: str) -> int:
        """Index of link ``name`` in ``link_names`` (``ValueError`` listing the links if unknown)."""
        try:
            return self.link_names.index(name)
        except ValueError:
            raise ValueError(f"link: no link named {name!r} in robot {self.name!r}; links are "
                             f"{list(self.link_names)}") from None

    def links_matching(self, pattern: str | Sequence[str]) -> list[int]:
        """Indices (in link order) of links whose names equal or fnmatch any of the patterns.

        Raises:
            ValueError: a pattern matches no link (the message lists the links).
        """
        patterns = [pattern] if isinstance(pattern, str) else list(pattern)
        if not patterns:
            raise ValueError("pattern: expected at least one link name or pattern, got none")
        chosen: set[int] = set()
        for p in patterns:
            hits = [i for i, n in enumerate(self.link_names) if n == p or fnmatch.fnmatchcase(n, p)]
            if not hits:
                raise ValueError(f"pattern: {p!r} matches no link of robot {self.name!r}; links "
                                 f"are {list(self.link_names)}")
            chosen.update(hits)
        return sorted(chosen)

    def joint_vector(self, values: Mapping[str, float], default: float = 0.0) -> torch.Tensor:
        """Actuated joint vector from a name -> position mapping, ``default`` for joints not given.

        Returns:
            (J,) joint positions, rad or m, in the robot's dtype and device.

        Raises:
            JointMismatchError: a name is not an actuated joint (mimic followers are named as such).
        """
        q = torch.full((self.num_joints,), float(default), dtype=self.dtype, device=self.device)
        unknown = [n for n in values if n not in self.joint_names]
        if unknown:
            followers = [f"{n} (mimics {self.mimic[n][0]})" for n in unknown if n in self.mimic]
            hint = f"; mimic followers cannot be set: {followers}" if followers else ""
            raise JointMismatchError(f"values: unknown joint names {unknown} for robot "
                                     f"{self.name!r}; actuated joints are {list(self.joint_names)}"
                                     f"{hint}")
        for n, v in values.items():
            q[self.joint_names.index(n)] = float(v)
        return q

    def check_joint_positions(self, q: object, name: str = "q") -> torch.Tensor:
        """Validate a joint tensor at a public boundary and return it unchanged.

        Args:
            q: (..., J) joint positions, rad or m.
            name: argument name for error messages.

        Raises:
            TypeError: not a floating-point tensor.
            JointMismatchError: the last dim is not J (the message lists the joint names).
            ValueError: NaN or inf entries.
        """
        q = require_joint_dim(name, q, self.num_joints,
                              f" of robot {self.name!r}: {list(self.joint_names)}")
        return require_finite(name, q)

    def check_joint_limits(self, q: torch.Tensor, name: str = "q", *, tol: float = 1e-6) -> torch.Tensor:
        """Raise ``ValueError`` naming the first joint of ``q`` (…, J) outside ``[lower, upper]``
        by more than ``tol`` (rad or m); return ``q`` unchanged. See :meth:`clamp_to_limits`."""
        q = self.check_joint_positions(q, name)
        lower, upper = self.lower.to(q), self.upper.to(q)
        bad = ((q < lower - tol) | (q > upper + tol)).reshape(-1, self.num_joints)
        if bool(bad.any()):
            row, j = (int(i) for i in bad.nonzero()[0])
            value = float(q.reshape(-1, self.num_joints)[row, j])
            raise ValueError(f"{name}: joint {self.joint_names[j]!r} = {value:.6g} is outside its limits "
                             f"[{float(lower[j]):.6g}, {float(upper[j]):.6g}] ({int(bad.sum())} "
                             f"out-of-limit entries); clamp with Robot.clamp_to_limits if intended")
        return q

    def clamp_to_limits(self, q: torch.Tensor) -> torch.Tensor:
        """Clamp joint positions (…, J) into ``[lower, upper]`` (only when the caller asks)."""
        q = self.check_joint_positions(q)
        return torch.clamp(q, self.lower.to(q), self.upper.to(q))
