"""Load a URDF (parsed by yourdfpy) into a :class:`~pointworld.robot.model.Robot`.

What we build on top of the parse: link order (parents before children, depth-first in joint
document order), the actuated joint vector (URDF document order, fixed joints and mimic followers
excluded), limits (continuous -> ±inf), mimic relations resolved to their root leader, the expansion
of ``floating`` joints into 6 virtual joints, and per-link meshes (see
:mod:`pointworld.robot.urdf_meshes` for how mesh file names are resolved). Every structural problem
raises :class:`URDFError` naming the joints/links involved.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
import yourdfpy
from lxml import etree

from pointworld.robot.assets import is_shipped_urdf, shipped_package_map, shipped_urdf_path
from pointworld.errors import URDFError
from pointworld.robot.model import Robot
from pointworld.robot.urdf_meshes import MeshResolver, load_link_meshes
from pointworld.robot.urdf_tree import (
    build_chain,
    expand_joints,
    link_order,
    resolve_mimic,
)

_GEOMETRY = ("collision", "visual")


def _urdf_path(urdf: str | Path) -> Path:
    if not isinstance(urdf, (str, Path)):
        raise TypeError(f"urdf: expected a path or a shipped robot name, got {type(urdf).__name__}")
    path = Path(urdf).expanduser()
    if path.is_file():
        return path
    if isinstance(urdf, str) and path.suffix == "" and len(path.parts) == 1:
        return shipped_urdf_path(urdf)
    raise FileNotFoundError(f"urdf: no such URDF file {str(urdf)!r}")


def parse_urdf(path: Path) -> yourdfpy.URDF:
    """Parse a URDF file strictly (malformed XML is an error, unlike yourdfpy's recovering parser).

    Mesh files are neither resolved nor loaded here (see :func:`load_robot`).

    Args:
        path: the ``.urdf`` file.

    Returns:
        yourdfpy's parse: ``robot.links`` and ``robot.joints`` in document order, mesh file names as
        written in the URDF.

    Raises:
        URDFError: malformed XML, a root element other than ``<robot>``, or a parse failure.
    """
    try:
        root = etree.fromstring(path.read_bytes())
    except etree.XMLSyntaxError as exc:
        raise URDFError(f"urdf {str(path)!r}: malformed XML: {exc}") from exc
    if root.tag != "robot":
        raise URDFError(f"urdf {str(path)!r}: expected a <robot> root element, got <{root.tag}>")
    try:
        return yourdfpy.URDF.load(str(path), build_scene_graph=False, load_meshes=False,
                                  build_collision_scene_graph=False,
                                  filename_handler=lambda fname: fname)
    except (KeyError, AttributeError, ValueError, TypeError, IndexError) as exc:
        raise URDFError(f"urdf {str(path)!r}: cannot parse ({type(exc).__name__}: {exc}); "
                        f"is a required attribute or element (name, parent, child, ...) missing?") from exc


def load_robot(urdf: str | Path, *, geometry: Literal["collision", "visual"] = "collision",
               search_paths: Sequence[str | Path] = (),
               package_map: Mapping[str, str | Path] | None = None,
               mesh_resolver: Callable[[str], Path] | None = None,
               load_meshes: bool = True) -> Robot:
    """Load a URDF into a :class:`Robot` (float32, CPU; use ``Robot.to`` for others).

    Args:
        urdf: path of a ``.urdf`` file, or a shipped robot name such as ``"franka_panda"``.
        geometry: which link elements become ``Robot.link_meshes``: ``"collision"`` or ``"visual"``.
        search_paths: directories that contain package folders (like ``ROS_PACKAGE_PATH``
            entries; ``package://PKG/x.stl`` -> ``SP/PKG/x.stl``) or relative mesh paths.
        package_map: package name -> directory, e.g. ``{"my_pkg": "/path/to/my_pkg"}``.
        mesh_resolver: ``filename -> Path`` hook tried first (return None to fall through).
        load_meshes: False skips geometry (``link_meshes`` is then empty).

    ``package://NAME/...`` of a shipped robot resolves to ``urdfs/NAME/...`` only for a URDF inside
    the shipped ``urdfs/`` folder; a copy elsewhere needs a package map like any user URDF.

    Raises:
        FileNotFoundError: ``urdf`` is neither a file nor a shipped robot name.
        URDFError: malformed XML, no links, missing links, several roots, cycles, bad mimic,
            planar joints, link geometry with zero surface area.
        MeshNotFoundError: a mesh file cannot be found (names the file and every location tried).

    Warns:
        UserWarning: links that have only the other kind of geometry (``<visual>`` but no
            ``<collision>`` with the default ``geometry="collision"``) and so get no points.
    """
    if geometry not in _GEOMETRY:
        raise ValueError(f"geometry: expected one of {_GEOMETRY}, got {geometry!r}")
    path = _urdf_path(urdf)
    parsed = parse_urdf(path)
    joints = expand_joints(parsed.robot.joints)
    link_names = link_order([link.name for link in parsed.robot.links], joints)
    by_child = {j.child: j for j in joints}
    actuated = [j for j in joints if j.type != "fixed" and j.mimic is None]
    mimic = resolve_mimic(joints, [j.name for j in actuated])
    chain64 = build_chain(link_names, by_child, [j.name for j in actuated], mimic)
    limits64 = torch.tensor([[j.lower for j in actuated], [j.upper for j in actuated],
                             [j.velocity for j in actuated]], dtype=torch.float64).reshape(3, -1)
    meshes = {}
    if load_meshes:
        shipped = shipped_package_map() if is_shipped_urdf(path) else None
        resolver = MeshResolver(path, search_paths, package_map, mesh_resolver, shipped)
        meshes = load_link_meshes(parsed.robot.links, geometry, resolver)
    robot = Robot(name=parsed.robot.name, link_names=tuple(link_names),
                  joint_names=tuple(j.name for j in actuated),
                  link_joint_names=tuple(by_child[n].name if n in by_child else "" for n in link_names),
                  chain=chain64, lower=limits64[0], upper=limits64[1], velocity_limit=limits64[2],
                  link_meshes={n: meshes[n] for n in link_names if n in meshes}, mimic=mimic,
                  urdf_path=path.resolve(), limits_float64=limits64)
    return robot.to(torch.float32)

