"""Synthetic RGB-D frames of a simple table-top scene, rendered headless by ray casting.

Used for the shipped demo capture, tests and benchmarks. Rendering uses Open3D's tensor
``RaycastingScene`` (no display, no OpenGL). Rays are built here with pixel centres at integer
``(u, v)`` as in OpenCV (Open3D's own ``create_rays_pinhole`` puts them at ``u + 0.5``), with
``z = 1`` in the camera frame, so the ray parameter of a hit is its z-depth in metres.

Colors are a simple Lambertian shading of each mesh's albedo by a fixed directional light (the same
in every view), so fused colors agree across cameras.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import open3d as o3d
import trimesh

from pointworld.capture.frame import RGBDFrame, SceneCapture

#: Direction towards the light, world frame (from above, slightly in front-left).
_LIGHT_DIR_WORLD = np.array([0.3, 0.2, 1.0]) / np.linalg.norm([0.3, 0.2, 1.0])
_AMBIENT = 0.35


@dataclass(frozen=True)
class SyntheticScene:
    """Triangle meshes with one albedo each, world frame, metres.

    Attributes:
        meshes: the meshes; mesh ``i`` gets geometry id ``i`` in :meth:`raycasting_scene`.
        colors: one RGB albedo per mesh, floats in ``[0, 1]``.
        names: one name per mesh (for debugging and tests).
    """

    meshes: tuple[trimesh.Trimesh, ...]
    colors: tuple[tuple[float, float, float], ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        meshes, colors, names = tuple(self.meshes), tuple(self.colors), tuple(self.names)
        if not meshes or not (len(meshes) == len(colors) == len(names)):
            raise ValueError(f"meshes/colors/names: expected the same non-zero length, got "
                             f"{len(meshes)}, {len(colors)}, {len(names)}")
        for i, (mesh, color) in enumerate(zip(meshes, colors)):
            if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
                raise TypeError(f"meshes[{i}]: expected a non-empty trimesh.Trimesh, got {mesh!r}")
            c = np.asarray(color, dtype=np.float64)
            if c.shape != (3,) or not np.all((c >= 0) & (c <= 1)):
                raise ValueError(f"colors[{i}]: expected 3 floats in [0, 1], got {color!r}")
        object.__setattr__(self, "meshes", meshes)
        object.__setattr__(self, "colors", tuple(tuple(float(x) for x in c) for c in colors))
        object.__setattr__(self, "names", names)

    def raycasting_scene(self) -> o3d.t.geometry.RaycastingScene:
        """Build an Open3D ``RaycastingScene`` of all meshes (float32), mesh ``i`` = geometry id ``i``."""
        rc = o3d.t.geometry.RaycastingScene()
        for i, mesh in enumerate(self.meshes):
            gid = rc.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, dtype=np.float32)),
                                   o3d.core.Tensor(np.asarray(mesh.faces, dtype=np.uint32)))
            if gid != i:  # geometry ids index the mesh colors: they must follow the mesh order
                raise RuntimeError(f"Open3D assigned geometry id {gid} to mesh {i}")
        return rc


@dataclass(frozen=True)
class DepthNoise:
    """Sensor-like depth corruption.

    Attributes:
        sigma_at_1m_m: std of additive Gaussian depth noise at 1 m, metres; it grows with z².
        dropout: probability that a valid pixel is lost (depth set to 0), in ``[0, 1)``.
    """

    sigma_at_1m_m: float = 0.001
    dropout: float = 0.01

    def __post_init__(self) -> None:
        if not (np.isfinite(self.sigma_at_1m_m) and self.sigma_at_1m_m >= 0):
            raise ValueError(f"sigma_at_1m_m: expected a finite value >= 0, got {self.sigma_at_1m_m!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {self.dropout!r}")


def _box(extents: Sequence[float], center: Sequence[float], yaw_rad: float = 0.0) -> trimesh.Trimesh:
    T = trimesh.transformations.rotation_matrix(yaw_rad, [0, 0, 1])
    T[:3, 3] = center
    return trimesh.creation.box(extents=extents, transform=T)


def table_scene(seed: int = 0) -> SyntheticScene:
    """A table top (surface at z = 0) with three boxes, a cylinder and a sphere at seeded places.

    The table spans x 0..1.2 m, y -0.6..0.6 m (wider than the default fusion workspace); the objects
    stand on it within x 0.35..0.85 m, y -0.3..0.3 m, at most 0.2 m tall, all in the world frame.
    """
    rng = np.random.default_rng(seed)
    xy: list[np.ndarray] = []
    while len(xy) < 5:  # rejection-sample object footprints at least 0.15 m apart
        cand = rng.uniform([0.35, -0.3], [0.85, 0.3])
        if all(np.linalg.norm(cand - p) > 0.15 for p in xy):
            xy.append(cand)
    meshes = [_box([1.2, 1.2, 0.04], [0.6, 0.0, -0.02])]
    colors = [(0.62, 0.52, 0.40)]
    names = ["table"]
    palette = [(0.85, 0.15, 0.12), (0.15, 0.55, 0.20), (0.15, 0.30, 0.80),
               (0.90, 0.75, 0.10), (0.60, 0.20, 0.65)]
    for i in range(3):
        ext = rng.uniform([0.04, 0.04, 0.04], [0.10, 0.10, 0.15])
        meshes.append(_box(ext, [*xy[i], ext[2] / 2], rng.uniform(0, np.pi)))
        names.append(f"box{i}")
    radius, height = rng.uniform(0.03, 0.05), rng.uniform(0.08, 0.2)
    cyl = trimesh.creation.cylinder(radius=radius, height=height, sections=32)
    cyl.apply_translation([*xy[3], height / 2])
    meshes.append(cyl)
    names.append("cylinder")
    r = rng.uniform(0.03, 0.06)
    sphere = trimesh.creation.icosphere(subdivisions=3, radius=r)
    sphere.apply_translation([*xy[4], r])
    meshes.append(sphere)
    names.append("sphere")
    colors += palette
    return SyntheticScene(tuple(meshes), tuple(colors), tuple(names))


def look_at(eye: Sequence[float], target: Sequence[float],
            up: Sequence[float] = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Pose of a camera at ``eye`` looking at ``target``: OpenCV optical frame (+z to target, +y down).

    Args:
        eye: (..., 3) camera centre, metres, world frame.
        target: (..., 3) point the optical axis goes through, metres, world frame.
        up: (..., 3) world direction that appears up in the image (-y of the camera).

    Returns:
        T_world_cam: (..., 4, 4) float64 rigid transform.
    """
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    for name, a in (("eye", eye), ("target", target), ("up", up)):
        if a.shape[-1:] != (3,) or not np.all(np.isfinite(a)):
            raise ValueError(f"{name}: expected finite (..., 3) coordinates, got shape {a.shape}")
    z = target - eye
    z_norm = np.linalg.norm(z, axis=-1, keepdims=True)
    x = np.cross(z, up)
    x_norm = np.linalg.norm(x, axis=-1, keepdims=True)
    if np.any(z_norm < 1e-9) or np.any(x_norm < 1e-9 * z_norm * np.linalg.norm(up, axis=-1, keepdims=True)):
        raise ValueError("eye/target/up: expected eye != target and up not parallel to the viewing "
                         f"direction, got eye={eye.tolist()}, target={target.tolist()}, up={up.tolist()}")
    z, x = z / z_norm, x / x_norm
    y = np.cross(z, x)
    T = np.zeros(z.shape[:-1] + (4, 4))
    T[..., :3, 0], T[..., :3, 1], T[..., :3, 2], T[..., :3, 3] = x, y, z, eye
    T[..., 3, 3] = 1.0
    return T


def _rays(K: np.ndarray, T_world_cam: np.ndarray, height: int, width: int) -> np.ndarray:
    """(V, H, W, 6) float32 rays (origin, direction) in the world frame; direction has cam z = 1."""
    v, u = np.meshgrid(np.arange(height, dtype=np.float64), np.arange(width, dtype=np.float64),
                       indexing="ij")
    pix = np.stack([u, v, np.ones_like(u)], axis=-1)  # (H, W, 3)
    dirs_cam = np.einsum("vij,hwj->vhwi", np.linalg.inv(K), pix)  # (V, H, W, 3), z = 1
    dirs_world = np.einsum("vij,vhwj->vhwi", T_world_cam[:, :3, :3], dirs_cam)
    origins = np.broadcast_to(T_world_cam[:, None, None, :3, 3], dirs_world.shape)
    return np.concatenate([origins, dirs_world], axis=-1).astype(np.float32)


def _check_cameras(K: np.ndarray, T_world_cams: np.ndarray, height: int, width: int,
                   t_name: str) -> tuple:
    T = np.asarray(T_world_cams, dtype=np.float64)
    if T.shape[-2:] != (4, 4) or T.ndim not in (2, 3):
        raise ValueError(f"{t_name}: expected shape (4, 4) or (V, 4, 4), got {T.shape}")
    T = T.reshape(-1, 4, 4)
    K = np.asarray(K, dtype=np.float64)
    if K.shape == (3, 3):
        K = np.broadcast_to(K, (len(T), 3, 3))
    if K.shape != (len(T), 3, 3):
        raise ValueError(f"K: expected shape (3, 3) or ({len(T)}, 3, 3), got {K.shape}")
    for name, n in (("height", height), ("width", width)):
        if not isinstance(n, (int, np.integer)) or n <= 0:
            raise ValueError(f"{name}: expected a positive int, got {n!r}")
    return K, T


def _cast(scene: SyntheticScene, K: np.ndarray, T_world_cams: np.ndarray, height: int,
          width: int, t_name: str = "T_world_cams") -> dict[str, np.ndarray]:
    K, T = _check_cameras(K, T_world_cams, height, width, t_name)
    rays = _rays(K, T, height, width)
    hit = scene.raycasting_scene().cast_rays(o3d.core.Tensor(rays))
    t_hit = hit["t_hit"].numpy()
    return {"depth": np.where(np.isfinite(t_hit), t_hit, 0.0).astype(np.float32),
            "geometry_ids": hit["geometry_ids"].numpy().astype(np.int64),
            "normals_world": hit["primitive_normals"].numpy(), "rays": rays, "K": K, "T": T}


def render_depth(scene: SyntheticScene, K: np.ndarray, T_world_cam: np.ndarray, height: int,
                 width: int) -> np.ndarray:
    """Exact z-depth of the scene surfaces seen by pinhole cameras (no noise).

    Args:
        K: (3, 3) or (V, 3, 3) intrinsics, pixels.
        T_world_cam: (4, 4) or (V, 4, 4) camera poses (OpenCV optical frame in world).

    Returns:
        depth: (H, W) or (V, H, W) float32 z-depth, metres; 0 where a ray hits nothing.
    """
    depth = _cast(scene, K, T_world_cam, height, width, "T_world_cam")["depth"]
    return depth[0] if np.asarray(T_world_cam).ndim == 2 else depth


def _shade(scene: SyntheticScene, hit: dict[str, np.ndarray]) -> np.ndarray:
    """(V, H, W, 3) uint8 Lambertian colors; background black."""
    ids = hit["geometry_ids"]
    valid = ids != o3d.t.geometry.RaycastingScene.INVALID_ID
    albedo = np.zeros(ids.shape + (3,))
    albedo[valid] = np.asarray(scene.colors)[ids[valid]]
    n = hit["normals_world"].astype(np.float64)
    facing = np.sign(-np.sum(n * hit["rays"][..., 3:], axis=-1, keepdims=True))  # flip to the camera
    n = n * np.where(facing == 0, 1.0, facing)
    lambert = np.clip(n @ _LIGHT_DIR_WORLD, 0.0, 1.0)[..., None]
    rgb = albedo * (_AMBIENT + (1 - _AMBIENT) * lambert)
    return np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def render_frames(scene: SyntheticScene, K: np.ndarray, T_world_cams: np.ndarray, height: int,
                  width: int, serials: Sequence[str], *, noise: DepthNoise | None = None,
                  seed: int = 0, timestamp_s: float = 0.0) -> SceneCapture:
    """Render V aligned RGB-D frames of ``scene``.

    Args:
        scene: the meshes to render.
        K: (3, 3) shared or (V, 3, 3) per-view pinhole intrinsics, pixels (no distortion).
        T_world_cams: (V, 4, 4) camera poses, OpenCV optical frame in the world frame.
        height, width: image size H, W, pixels.
        serials: V unique camera names.
        noise: optional depth noise and dropout; ``None`` renders exact depth.
        seed: seed of the noise.
        timestamp_s: timestamp given to every frame, seconds.

    Returns:
        A capture whose frames hold rgb (H, W, 3) uint8, depth (H, W) float32 metres (0 = no
        return), the given K and T_world_cam.
    """
    hit = _cast(scene, K, T_world_cams, height, width)
    if len(serials) != len(hit["T"]):
        raise ValueError(f"serials: expected {len(hit['T'])} names (one per view), got {list(serials)}")
    depth, rgb = hit["depth"], _shade(scene, hit)
    if noise is not None:
        rng = np.random.default_rng(seed)
        noisy = depth + rng.standard_normal(depth.shape) * noise.sigma_at_1m_m * depth**2
        lost = rng.random(depth.shape) < noise.dropout
        depth = np.where((depth > 0) & ~lost & (noisy > 0), noisy, 0.0).astype(np.float32)
    frames = tuple(RGBDFrame(rgb[i], depth[i], hit["K"][i], hit["T"][i], str(serials[i]),
                             timestamp_s) for i in range(len(serials)))
    return SceneCapture(frames)
