"""Mesh files of a URDF: resolving ``package://`` / relative / absolute names, and building each link's
geometry (meshes and box/cylinder/sphere primitives) merged in the link frame.

Resolution order for a ``<mesh filename=...>`` (the first existing file wins):

1. ``mesh_resolver(filename)`` when given and it returns a path (that path must exist);
2. ``package://PKG/REST`` (also ``model://``): ``package_map[PKG]/REST``; ``SP/PKG/REST`` for each
   search path ``SP`` (directories that contain package folders, like ``ROS_PACKAGE_PATH`` entries);
   ``A/REST`` for the URDF's directory and its ancestors ``A`` named ``PKG``; ``URDF_DIR/PKG/REST``;
   then ``default_package_map[PKG]/REST`` (the loader passes the shipped robots' packages only for a
   URDF inside the shipped ``urdfs/`` folder, never as a fallback for other URDFs);
3. ``file://PATH`` and plain paths: absolute as is; relative to the URDF's directory, then to each
   search path.

A mesh found nowhere raises :class:`MeshNotFoundError` listing every location tried.

Geometry checks: geometry without surface area raises :class:`URDFError` (a box, cylinder or sphere
size that is not positive, a ``<mesh scale>`` with a zero, a mesh file of degenerate triangles); a closed mesh file with inconsistent or inverted face winding is repaired (outward
normals), an open one with inconsistent winding is kept with a warning (its sampled normals may point
inwards); links that have only the other kind of geometry (``<visual>`` but no ``<collision>``, or the
reverse) get a warning naming them. Several elements of one link are concatenated as they are:
overlapping primitives keep their interior faces, so their shared volume is sampled twice.
"""

from __future__ import annotations

import importlib.util
import warnings
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
    if not mesh.area > 0:
        raise URDFError(f"mesh {filename!r} ({path}): the mesh has zero surface area (degenerate "
                        f"triangles); points cannot be sampled on it")
    if mesh.is_watertight and (not mesh.is_winding_consistent or mesh.volume < 0):
        trimesh.repair.fix_normals(mesh, multibody=True)   # closed: winding and outside are defined
    elif not mesh.is_winding_consistent:
        warnings.warn(f"mesh {filename!r} ({path}) is open and its face winding is inconsistent: "
                      f"some face normals (and the normals of points sampled on them) point inwards",
                      UserWarning, stacklevel=6)
    return mesh


def _element_mesh(geometry: object, resolver: MeshResolver, cache: dict[Path, trimesh.Trimesh],
                  where: str) -> trimesh.Trimesh:
    if geometry is None:
        raise URDFError(f"{where}: <geometry> is missing")
    for tag, sizes in (("box size", geometry.box and geometry.box.size),
                       ("cylinder radius/length", geometry.cylinder and (geometry.cylinder.radius,
                                                                         geometry.cylinder.length)),
                       ("sphere radius", geometry.sphere and (geometry.sphere.radius,))):
        if sizes is not None and not (np.isfinite(sizes).all() and (np.asarray(sizes) > 0).all()):
            raise URDFError(f"{where}: <{tag}> must be positive and finite (zero gives a zero "
                            f"surface area), got {np.asarray(sizes, dtype=np.float64).tolist()}")
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
        if not (np.isfinite(scale).all() and (scale != 0).all()):
            raise URDFError(f"{where}: <mesh scale> must be finite and non-zero on every axis "
                            f"(a zero flattens the mesh to zero volume), got {scale.tolist()}")
        mesh.apply_transform(np.diag([*scale, 1.0]))   # trimesh re-winds faces when det < 0
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
        Elements are concatenated as they are: overlapping ones keep their interior faces.

    Raises:
        URDFError: missing or zero-area geometry, an unreadable mesh file.
        MeshNotFoundError: a mesh file cannot be found.
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


def load_link_meshes(links: Sequence[object], geometry: str,
                     resolver: MeshResolver) -> dict[str, trimesh.Trimesh]:
    """Every link's ``geometry`` (``"collision"`` or ``"visual"``) mesh in its LINK frame, m.

    Args:
        links: parsed ``yourdfpy.Link`` objects.
        geometry: ``"collision"`` or ``"visual"``.
        resolver: resolves mesh file names (files are loaded once per robot).

    Returns:
        link name -> merged mesh, for the links that have such geometry.

    Warns:
        UserWarning: naming the links that have only the other kind of geometry (they get no mesh).
    """
    other = "visual" if geometry == "collision" else "collision"
    cache: dict[Path, trimesh.Trimesh] = {}
    meshes, only_other = {}, []
    for link in links:
        mesh = link_geometry(link, geometry, resolver, cache)
        if mesh is not None:
            meshes[link.name] = mesh
        elif link.visuals if geometry == "collision" else link.collisions:
            only_other.append(link.name)
    if only_other:
        warnings.warn(f"links {only_other} have <{other}> but no <{geometry}> geometry, so they get no "
                      f"mesh and no sampled points; load with geometry={other!r} to use their "
                      f"<{other}> elements", UserWarning, stacklevel=3)
    return meshes