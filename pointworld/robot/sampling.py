"""Area-weighted surface points (and normals) sampled once on a robot's link meshes.

The points live in their link's frame, so forward kinematics moves them with the robot
(:func:`pointworld.robot.flow.robot_point_flow`). Sampling, for ``M = num_points``:

1. Links: every chosen link with geometry gets ``M * area_l / sum(area)`` points, rounded by the
   largest-remainder rule so the counts sum to exactly ``M`` (each link is within one point of its
   exact area share; a tiny link may get none).
2. Triangles: within a link, each point picks a triangle independently with probability
   proportional to the triangle's area (``Generator.choice``).
3. Position: uniform in the triangle, barycentric ``(1 - sqrt(r1), sqrt(r1) (1 - r2), sqrt(r1) r2)``
   with ``r1, r2 ~ U[0, 1)``.
4. Normal: the triangle's unit face normal (trimesh ``face_normals``, outward for a consistently
   wound closed mesh) -- not interpolated vertex normals, so a point's normal is exactly its face's.

Everything is computed in float64 with a private ``numpy.random.Generator(PCG64(seed))``, so the
result depends only on the meshes, ``num_points``, the chosen links and ``seed`` (not on global
random state). The points come out grouped by link, in ``robot.link_names`` order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from pointworld.geometry.checks import require_dtype, require_floating, require_int, require_shape
from pointworld.robot.model import Robot


@dataclass(frozen=True)
class RobotSurfacePoints:
    """Points sampled on a robot's link surfaces (M points), see :func:`sample_surface_points`.

    Attributes:
        link_index: (M,) int64 index into ``robot.link_names`` of each point's link.
        points_link: (M, 3) positions in their link's frame, m.
        normals_link: (M, 3) unit outward surface normals in their link's frame.
        robot_name: name of the robot the points were sampled on (None if unknown).
        link_names: that robot's ``link_names`` (None if unknown); the point flow refuses a robot
            whose name or link names differ.
        link_groups: derived on construction (leave None): ``((link, count), ...)`` per link with
            points, by increasing link index, so that the point flow needs no host-device
            synchronisation to group the points.
    """

    link_index: torch.Tensor
    points_link: torch.Tensor
    normals_link: torch.Tensor
    robot_name: str | None = None
    link_names: tuple[str, ...] | None = None
    link_groups: tuple[tuple[int, int], ...] | None = None
    # Derived with link_groups: (U,) int64 link of each group; (M,) permutation grouping the points
    # by link, None when link_index is already non-decreasing.
    _group_links: torch.Tensor | None = dataclasses.field(default=None, repr=False, compare=False)
    _order: torch.Tensor | None = dataclasses.field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        idx = require_dtype("link_index", self.link_index, torch.int64)
        require_shape("link_index", idx, (None,), max_leading=0)
        m = idx.shape[0]
        require_shape("points_link", require_floating("points_link", self.points_link), (m, 3),
                      max_leading=0)
        require_shape("normals_link", require_floating("normals_link", self.normals_link), (m, 3),
                      max_leading=0)
        if self.link_names is not None and not isinstance(self.link_names, tuple):
            raise TypeError(f"link_names: expected a tuple of str or None, got "
                            f"{type(self.link_names).__name__}")
        if self.link_groups is not None:
            return  # derived fields passed through by to()
        order = torch.argsort(idx, stable=True)
        links, counts = torch.unique_consecutive(idx[order], return_counts=True)
        groups = tuple(zip(links.tolist(), counts.tolist()))
        if groups and groups[0][0] < 0:
            raise ValueError(f"link_index: expected indices >= 0, got {groups[0][0]}")
        if self.link_names is not None and groups and groups[-1][0] >= len(self.link_names):
            raise ValueError(f"link_index: expected indices < {len(self.link_names)} (the number "
                             f"of link_names), got {groups[-1][0]}")
        grouped = bool((idx[1:] >= idx[:-1]).all())
        object.__setattr__(self, "link_groups", groups)
        object.__setattr__(self, "_group_links", links)
        object.__setattr__(self, "_order", None if grouped else order)

    @property
    def num_points(self) -> int:
        """M, the number of points."""
        return int(self.link_index.shape[0])

    def to(self, dtype: torch.dtype | None = None,
           device: torch.device | str | None = None) -> RobotSurfacePoints:
        """Copy with floating tensors in ``dtype`` and all tensors on ``device`` (None = keep)."""
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device=device)

        return RobotSurfacePoints(
            link_index=self.link_index.to(device=device),
            points_link=self.points_link.to(dtype=dtype, device=device),
            normals_link=self.normals_link.to(dtype=dtype, device=device),
            robot_name=self.robot_name, link_names=self.link_names, link_groups=self.link_groups,
            _group_links=move(self._group_links), _order=move(self._order))


def _chosen_links(robot: Robot, links: str | Sequence[str] | None) -> list[int]:
    """Indices (sorted, unique) of the links with geometry selected by ``links``."""
    with_geometry = [i for i, n in enumerate(robot.link_names) if n in robot.link_meshes]
    if not with_geometry:
        raise ValueError(f"robot {robot.name!r}: no link has geometry (were meshes loaded?), "
                         f"links: {list(robot.link_names)}")
    if links is None:
        return with_geometry
    patterns = [links] if isinstance(links, str) else list(links)
    if not patterns or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"links: expected a link name/pattern or a non-empty sequence of them, "
                        f"got {links!r}")
    chosen: set[int] = set()
    names_geo = [robot.link_names[i] for i in with_geometry]
    for pattern in patterns:
        hits = [i for i in robot.links_matching(pattern) if i in with_geometry]
        if not hits:
            raise ValueError(f"links: pattern {pattern!r} matches no link with geometry; links "
                             f"with geometry: {names_geo}")
        chosen.update(hits)
    return sorted(chosen)


def _apportion(areas: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to ``total``, proportional to ``areas`` (largest remainder)."""
    exact = total * areas / areas.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - int(counts.sum())
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[:short]] += 1
    return counts


def _sample_mesh(vertices: np.ndarray, faces: np.ndarray, face_normals: np.ndarray,
                 areas: np.ndarray, count: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray]:
    """``count`` area-weighted points (count, 3) and their face normals (count, 3)."""
    tri = rng.choice(len(faces), size=count, p=areas / areas.sum())
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    bary = np.stack([1.0 - s, s * (1.0 - r2), s * r2], axis=-1)
    corners = vertices[faces[tri]]  # (count, 3 corners, 3 xyz)
    return np.einsum("nc,ncx->nx", bary, corners), face_normals[tri]


def sample_surface_points(robot: Robot, num_points: int, *,
                          links: str | Sequence[str] | None = None,
                          seed: int = 0) -> RobotSurfacePoints:
    """Sample ``M = num_points`` area-weighted points on the chosen links' surfaces (see module).

    The link meshes are used as loaded: the geometries of a link (several ``<collision>`` or
    ``<visual>`` elements) are concatenated, not unioned, so overlapping primitives count their
    overlap twice in the area and put points inside one another; and each normal is the face
    normal implied by the mesh's triangle winding, so an inconsistently wound mesh gives some
    inward normals.

    Args:
        robot: a robot loaded with meshes (``robot.link_meshes``); its dtype/device are used for the
            returned tensors.
        num_points: M, the exact number of points (> 0).
        links: which links: None = all links with geometry; otherwise a link name or fnmatch
            pattern (``"panda_hand"``, ``"*finger*"``) or a sequence of them (union).
        seed: seed of the private random generator.

    Returns:
        :class:`RobotSurfacePoints` with ``link_index`` (M,), ``points_link`` (M, 3) m and
        ``normals_link`` (M, 3) unit, both in each point's link frame, plus the robot's name and
        link names (checked by the point flow) and the per-link grouping.

    Raises:
        ValueError: ``num_points`` not a positive int, a pattern matching no link with geometry
            (lists the links that have geometry), or chosen meshes with zero total area.
        TypeError: ``links`` or ``seed`` of the wrong type.
    """
    require_int("num_points", num_points, minimum=1)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    chosen = _chosen_links(robot, links)
    meshes = [robot.link_meshes[robot.link_names[i]] for i in chosen]
    face_areas = [np.asarray(m.area_faces, dtype=np.float64) for m in meshes]
    link_areas = np.array([a.sum() for a in face_areas])
    if not link_areas.sum() > 0:
        names = [robot.link_names[i] for i in chosen]
        raise ValueError(f"links: the meshes of {names} have zero total surface area")
    counts = _apportion(link_areas, num_points)
    rng = np.random.Generator(np.random.PCG64(int(seed)))
    idx, pts, nrm = [], [], []
    for link, mesh, areas, count in zip(chosen, meshes, face_areas, counts):
        if count == 0:
            continue
        p, n = _sample_mesh(np.asarray(mesh.vertices, dtype=np.float64),
                            np.asarray(mesh.faces, dtype=np.int64),
                            np.asarray(mesh.face_normals, dtype=np.float64), areas, int(count), rng)
        idx.append(np.full(int(count), link, dtype=np.int64))
        pts.append(p)
        nrm.append(n)

    def tensor(parts: list[np.ndarray], dtype: torch.dtype) -> torch.Tensor:
        return torch.from_numpy(np.concatenate(parts)).to(dtype=dtype, device=robot.device)

    return RobotSurfacePoints(link_index=tensor(idx, torch.int64),
                              points_link=tensor(pts, robot.dtype),
                              normals_link=tensor(nrm, robot.dtype),
                              robot_name=robot.name, link_names=tuple(robot.link_names))
