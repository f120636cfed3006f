"""Mesh files of a URDF: resolving ``package://`` / relative / absolute names, and building each link's
geometry (meshes and box/cylinder/sphere primitives) merged in the link frame.

Resolution order for a ``<mesh filename=...>`` (the first existing file wins):

1. ``mesh_resolver(filename)`` when given and it returns a path (that path must exist);
2. ``package://PKG/REST`` (also ``model://``): ``package_map[PKG]/REST``; ``SP/PKG/REST`` for each
   search path ``SP`` (directories that contain package folders, like ``ROS_PACKAGE_PATH`` entries);
   ``A/REST`` for the URDF's directory and its ancestors ``A`` named ``PKG``; ``URDF_DIR/PKG/REST``;
   then the shipped robots' packages;
3. ``file://PATH`` and plain paths: absolute as is; relative to the URDF's directory, then to each
   search path.

A mesh found nowhere raises :class:`MeshNotFoundError` listing every location tried.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import trimesh

from pointworld.errors import MeshNotFoundError, URDFError

_PACKAGE_SCHEMES = ("package://", "model://")
_CYLINDER_SECTIONS = 32
_SPHERE_SUBDIVISIONS = 3


def _directories(name: str, paths: Mapping[str, str | Path] | Sequence[str | Path]) -> dict:
    items = paths.items() if isinstance(paths, Mapping) else enumerate(paths)
    out = {}
    for key, value in items:
        if not isinstance(value, (str, Path)):
            raise TypeError(f"{name}[{key!r}]: expected a str or Path, got {type(value).__name__}")
        path = Path(value).expanduser()
        if not path.is_dir():
            raise ValueError(f"{name}[{key!r}]: expected an existing directory, got {str(value)!r}")
        out[key] = path.resolve()
    return out


class MeshResolver:
    """Maps URDF mesh file names to existing files (rules in the module docstring).

    Args:
        urdf_path: the URDF file (relative names are resolved against its directory).
        search_paths: directories containing package folders and/or relative mesh paths.
        package_map: package name -> package directory, for ``package://`` names.
        mesh_resolver: user hook ``filename -> Path | None``; ``None`` falls through to the rules.
        default_package_map: lowest-priority package map (the shipped robots).
    """

    def __init__(self, urdf_path: Path, search_paths: Sequence[str | Path] = (),
                 package_map: Mapping[str, str | Path] | None = None,
                 mesh_resolver: Callable[[str], Path | str | None] | None = None,
                 default_package_map: Mapping[str, Path] | None = None) -> None:
        if isinstance(search_paths, (str, Path)):
            search_paths = [search_paths]
        if mesh_resolver is not None and not callable(mesh_resolver):
            raise TypeError(f"mesh_resolver: expected a callable filename -> Path, got "
                            f"{type(mesh_resolver).__name__}")
        self.urdf_dir = Path(urdf_path).resolve().parent
        self.search_paths = list(_directories("search_paths", search_paths).values())
        self.package_map = _directories("package_map", package_map or {})
        self.default_package_map = dict(default_package_map or {})
        self.mesh_resolver = mesh_resolver

    def _package_candidates(self, package: str, rest: str) -> list[Path]:
        out = [self.package_map[package] / rest] if package in self.package_map else []
        out += [sp / package / rest for sp in self.search_paths]
        out += [a / rest for a in (self.urdf_dir, *self.urdf_dir.parents) if a.name == package]
        out.append(self.urdf_dir / package / rest)
        if package in self.default_package_map:
            out.append(Path(self.default_package_map[package]) / rest)
        return out

    def candidates(self, filename: str) -> list[Path]:
        """Every location tried for ``filename``, in order (without the user hook)."""
        for scheme in _PACKAGE_SCHEMES:
            if filename.startswith(scheme):
                package, _, rest = filename[len(scheme):].partition("/")
                return self._package_candidates(package, rest)
        name = filename.removeprefix("file://")
        path = Path(name).expanduser()
        if path.is_absolute():
            return [path]
        return [self.urdf_dir / path] + [sp / path for sp in self.search_paths]

    def resolve(self, filename: str) -> Path:
        """The existing file for a URDF mesh name.

        Raises:
            MeshNotFoundError: nothing exists at any candidate (all of them are listed).
        """
        if self.mesh_resolver is not None:
            hooked = self.mesh_resolver(filename)
            if hooked is not None:
                if not Path(hooked).is_file():
                    raise MeshNotFoundError(f"mesh {filename!r}: mesh_resolver returned "
                                            f"{str(hooked)!r}, which is not an existing file")
                return Path(hooked)
        tried = self.candidates(filename)
        for path in tried:
            if path.is_file():
                return path
        listing = "\n  ".join(str(p) for p in tried)
        raise MeshNotFoundError(
            f"mesh {filename!r} not found; tried (package_map={ {k: str(v) for k, v in self.package_map.items()} }, "
            f"search_paths={[str(p) for p in self.search_paths]}, URDF directory {str(self.urdf_dir)!r}):"
            f"\n  {listing}\nPass load_robot(..., package_map={{'PKG': '/path/to/PKG'}}), "
            f"search_paths=[...] or mesh_resolver=...")


def _collada_hint(path: Path) -> str:
    if path.suffix.lower() in (".dae", ".zae") and importlib.util.find_spec("collada") is None:
        return " (COLLADA .dae files need the 'pycollada' package: pip install pycollada)"
    return ""


def _load_mesh_file(path: Path, filename: str) -> trimesh.Trimesh:
    try:
        mesh = trimesh.load(str(path), force="mesh", skip_materials=True)
    except Exception as exc:  # trimesh raises many types; re-raised naming the file
        raise URDFError(f"mesh {filename!r} ({path}): trimesh failed to load it{_collada_hint(path)}: "
                        f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise URDFError(f"mesh {filename!r} ({path}): expected a triangle mesh, got no faces")
    return mesh


def _element_mesh(geometry: object, resolver: MeshResolver, cache: dict[Path, trimesh.Trimesh],
                  where: str) -> trimesh.Trimesh:
    if geometry is None:
        raise URDFError(f"{where}: <geometry> is missing")
    if geometry.box is not None:
        return trimesh.creation.box(extents=np.asarray(geometry.box.size, dtype=np.float64))
    if geometry.cylinder is not None:
        return trimesh.creation.cylinder(radius=geometry.cylinder.radius,
                                         height=geometry.cylinder.length, sections=_CYLINDER_SECTIONS)
    if geometry.sphere is not None:
        return trimesh.creation.icosphere(subdivisions=_SPHERE_SUBDIVISIONS,
                                          radius=geometry.sphere.radius)
    if geometry.mesh is None:
        raise URDFError(f"{where}: <geometry> has no box, cylinder, sphere or mesh")
    if not geometry.mesh.filename:
        raise URDFError(f"{where}: <mesh> has no filename")
    path = resolver.resolve(geometry.mesh.filename)
    if path not in cache:
        cache[path] = _load_mesh_file(path, geometry.mesh.filename)
    mesh = cache[path].copy()
    if geometry.mesh.scale is not None:
        scale = np.broadcast_to(np.asarray(geometry.mesh.scale, dtype=np.float64), (3,))
        mesh.apply_transform(np.diag([*scale, 1.0]))
    return mesh


def link_geometry(link: object, geometry: str, resolver: MeshResolver,
                  cache: dict[Path, trimesh.Trimesh]) -> trimesh.Trimesh | None:
    """One link's collision or visual elements merged into one mesh in the LINK frame, m.

    Args:
        link: a parsed ``yourdfpy.Link``.
        geometry: ``"collision"`` or ``"visual"``.
        resolver: resolves mesh file names.
        cache: loaded files by path (shared across links of one robot).

    Returns:
        The merged mesh (element origins and mesh scales applied), or None if the link has none.
    """
    elements = link.collisions if geometry == "collision" else link.visuals
    meshes = []
    for i, element in enumerate(elements):
        where = f"link {link.name!r} <{geometry}> #{i}"
        mesh = _element_mesh(element.geometry, resolver, cache, where)
        if element.origin is not None:
            mesh.apply_transform(np.asarray(element.origin, dtype=np.float64))
        meshes.append(mesh)
    if not meshes:
        return None
    return meshes[0] if len(meshes) == 1 else trimesh.util.concatenate(meshes)
