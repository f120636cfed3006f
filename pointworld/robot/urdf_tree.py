"""The kinematic structure of a parsed URDF: joint specs (with ``floating`` joints expanded), link
order, mimic resolution, and the float64 :class:`~pointworld.robot.model.KinematicChain`.

Every structural problem raises :class:`URDFError` naming the joints or links involved.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pointworld.errors import URDFError
from pointworld.robot.model import FIXED, PRISMATIC, REVOLUTE, KinematicChain

_TYPE_CODES = {"fixed": FIXED, "revolute": REVOLUTE, "continuous": REVOLUTE, "prismatic": PRISMATIC}
#: Virtual joints of an expanded ``floating`` joint in CHAIN order (suffix, type, axis): the
#: translations, then yaw, pitch, roll, so that T_parent_child = origin @ Trans(x, y, z) @
#: rpy_to_matrix(roll, pitch, yaw) with the URDF convention R = Rz(yaw) Ry(pitch) Rx(roll).
_FLOATING = (("x", "prismatic", (1, 0, 0)), ("y", "prismatic", (0, 1, 0)),
             ("z", "prismatic", (0, 0, 1)), ("yaw", "continuous", (0, 0, 1)),
             ("pitch", "continuous", (0, 1, 0)), ("roll", "continuous", (1, 0, 0)))
#: Order of the expanded joints in the joint vector (and in the returned spec list).
_FLOATING_Q_ORDER = ("x", "y", "z", "roll", "pitch", "yaw")


@dataclass(frozen=True)
class JointSpec:
    """One joint after expansion: origin (4, 4) T_parent_jointframe (m), unit axis (3,), limits in
    rad or m (±inf for continuous), velocity limit, and mimic = (leader, multiplier, offset)."""

    name: str
    type: str
    parent: str
    child: str
    origin: np.ndarray
    axis: np.ndarray
    lower: float = -math.inf
    upper: float = math.inf
    velocity: float = math.inf
    mimic: tuple[str, float, float] | None = None
    virtual_child: bool = False


def _limits(joint: object) -> tuple[float, float, float]:
    limit = joint.limit
    velocity = math.inf if limit is None or limit.velocity is None else float(limit.velocity)
    if joint.type == "continuous":
        return -math.inf, math.inf, velocity
    if joint.type in ("revolute", "prismatic"):
        if limit is None:
            raise URDFError(f"joint {joint.name!r} ({joint.type}) has no <limit>; the URDF spec "
                            f"requires one for revolute and prismatic joints")
        lower = 0.0 if limit.lower is None else float(limit.lower)
        upper = 0.0 if limit.upper is None else float(limit.upper)
        if not lower <= upper:
            raise URDFError(f"joint {joint.name!r}: <limit> lower={lower} > upper={upper}")
        return lower, upper, velocity
    return 0.0, 0.0, velocity


def _floating(joint: object, origin: np.ndarray) -> list[JointSpec]:
    if joint.mimic is not None:
        raise URDFError(f"joint {joint.name!r}: a floating joint cannot have a <mimic>")
    specs, parent = {}, joint.parent
    for k, (suffix, kind, axis) in enumerate(_FLOATING):
        last = k == len(_FLOATING) - 1
        child = joint.child if last else f"{joint.name}_virtual_{suffix}"
        specs[suffix] = JointSpec(f"{joint.name}_{suffix}", kind, parent, child,
                                  origin if k == 0 else np.eye(4), np.asarray(axis, dtype=np.float64),
                                  virtual_child=not last)
        parent = child
    return [specs[suffix] for suffix in _FLOATING_Q_ORDER]


def expand_joints(joints: Sequence[object]) -> list[JointSpec]:
    """Joint specs from parsed ``yourdfpy.Joint`` objects, in document order.

    A ``floating`` joint ``j`` becomes six joints listed (and so ordered in the joint vector) as
    ``j_x, j_y, j_z`` (prismatic along the joint frame's x, y, z, m) and ``j_roll, j_pitch, j_yaw``
    (continuous, rad), chained as x -> y -> z -> yaw -> pitch -> roll through the virtual links
    ``j_virtual_{x,y,z,yaw,pitch}``, so that ``T_parent_child = origin @ Trans(x, y, z) @
    rpy_to_matrix(roll, pitch, yaw)`` (URDF convention ``R = Rz(yaw) Ry(pitch) Rx(roll)``, as
    :func:`pointworld.geometry.rotations.rpy_to_matrix`).

    Raises:
        URDFError: planar or unknown joint types, zero axes, missing limits, bad mimic tags.
    """
    specs: list[JointSpec] = []
    for j in joints:
        origin = np.eye(4) if j.origin is None else np.asarray(j.origin, dtype=np.float64)
        if j.type == "planar":
            raise URDFError(f"joint {j.name!r} is planar: planar joints are not supported "
                            f"(model it as two prismatic joints and a revolute one)")
        if j.type == "floating":
            specs.extend(_floating(j, origin))
            continue
        if j.type not in _TYPE_CODES:
            raise URDFError(f"joint {j.name!r}: unknown type {j.type!r}; expected one of "
                            f"{sorted(_TYPE_CODES) + ['floating']}")
        axis = np.zeros(3)
        if j.type != "fixed":
            axis = np.asarray(j.axis if j.axis is not None else (1.0, 0.0, 0.0), dtype=np.float64)
            norm = float(np.linalg.norm(axis))
            if not norm > 0 or not math.isfinite(norm):
                raise URDFError(f"joint {j.name!r}: <axis xyz> must be a non-zero vector, got {axis}")
            axis = axis / norm
        mimic = None
        if j.mimic is not None:
            if j.type == "fixed" or not j.mimic.joint:
                raise URDFError(f"joint {j.name!r}: <mimic> needs a moving joint and a 'joint' "
                                f"attribute (type {j.type!r}, joint={j.mimic.joint!r})")
            mult = 1.0 if j.mimic.multiplier is None else float(j.mimic.multiplier)
            offset = 0.0 if j.mimic.offset is None else float(j.mimic.offset)
            mimic = (j.mimic.joint, mult, offset)
        lower, upper, velocity = _limits(j)
        specs.append(JointSpec(j.name, j.type, j.parent, j.child, origin, axis, lower, upper,
                               velocity, mimic))
    return specs


def _duplicates(names: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({n for n in names if n in seen or seen.add(n)})


def link_order(urdf_links: Sequence[str], joints: Sequence[JointSpec]) -> list[str]:
    """All link names (URDF links + virtual ones), parents before children, root first; depth-first
    with children in joint document order.

    Raises:
        URDFError: no links, duplicate names, a joint naming a missing link, a link with two
            parent joints, no root or several roots, a kinematic cycle.
    """
    if not urdf_links:
        raise URDFError("the URDF has no links: a <robot> needs at least one <link>")
    links = list(urdf_links) + [j.child for j in joints if j.virtual_child]
    for kind, names in (("link", links), ("joint", [j.name for j in joints])):
        if dups := _duplicates(names):
            raise URDFError(f"duplicate {kind} names {dups}")
    known, parent_joint, children = set(links), {}, {n: [] for n in links}
    for j in joints:
        for role, link in (("parent", j.parent), ("child", j.child)):
            if link not in known:
                raise URDFError(f"joint {j.name!r} references missing link {link!r} as its {role}")
        if j.child in parent_joint:
            raise URDFError(f"link {j.child!r} is the child of two joints: "
                            f"{parent_joint[j.child]!r} and {j.name!r}")
        parent_joint[j.child] = j.name
        children[j.parent].append(j.child)
    roots = [n for n in links if n not in parent_joint]
    if len(roots) > 1:
        raise URDFError(f"the URDF has several root links {roots} (links without a parent joint); "
                        f"connect them with joints")
    order, stack = [], roots[:1]
    while stack:
        link = stack.pop()
        order.append(link)
        stack.extend(reversed(children[link]))
    if len(order) != len(links):
        cyclic = [n for n in links if n not in set(order)]
        raise URDFError(f"kinematic cycle: links {cyclic} are not reachable from a root")
    return order


def resolve_mimic(joints: Sequence[JointSpec],
                  actuated: Sequence[str]) -> dict[str, tuple[str, float, float]]:
    """Follower -> (root leader, multiplier, offset) with ``q_follower = m * q_leader + offset``,
    composing chains of followers.

    Raises:
        URDFError: a mimic names no joint or a fixed one (dangling), or the mimic chain loops.
    """
    by_name = {j.name: j for j in joints}
    out: dict[str, tuple[str, float, float]] = {}
    for j in joints:
        if j.mimic is None:
            continue
        names, mult, offset, current = [j.name], 1.0, 0.0, j
        while current.mimic is not None:
            leader, m, o = current.mimic
            mult, offset = mult * m, mult * o + offset
            if leader not in by_name:
                raise URDFError(f"dangling <mimic>: joint {current.name!r} mimics {leader!r}, which "
                                f"is not a joint of the robot (chain {' -> '.join(names)})")
            if leader in names:
                raise URDFError(f"cyclic <mimic>: {' -> '.join(names + [leader])}")
            if by_name[leader].type == "fixed":
                raise URDFError(f"dangling <mimic>: joint {current.name!r} mimics the fixed joint "
                                f"{leader!r}")
            names.append(leader)
            current = by_name[leader]
        assert current.name in actuated
        out[j.name] = (current.name, mult, offset)
    return out


def build_chain(link_names: Sequence[str], by_child: Mapping[str, JointSpec],
                actuated: Sequence[str],
                mimic: Mapping[str, tuple[str, float, float]]) -> KinematicChain:
    """The float64 CPU :class:`KinematicChain` of links in ``link_names`` order."""
    index = {n: i for i, n in enumerate(link_names)}
    act = {n: i for i, n in enumerate(actuated)}
    rows = []  # (parent, origin, axis, type, q_index, multiplier, offset)
    for name in link_names:
        j = by_child.get(name)
        if j is None:
            rows.append((-1, np.eye(4), np.zeros(3), FIXED, -1, 1.0, 0.0))
            continue
        leader, mult, offset = mimic.get(j.name, (j.name, 1.0, 0.0))
        q_index = -1 if j.type == "fixed" else act[leader]
        rows.append((index[j.parent], j.origin, j.axis, _TYPE_CODES[j.type], q_index, mult, offset))
    cols = list(zip(*rows))
    f64 = torch.float64
    return KinematicChain.build(
        parent=torch.tensor(cols[0], dtype=torch.int64),
        origin=torch.tensor(np.stack(cols[1]), dtype=f64), axis=torch.tensor(np.stack(cols[2]), dtype=f64),
        joint_type=torch.tensor(cols[3], dtype=torch.int64), q_index=torch.tensor(cols[4], dtype=torch.int64),
        q_multiplier=torch.tensor(cols[5], dtype=f64), q_offset=torch.tensor(cols[6], dtype=f64),
        num_joints=len(actuated))
