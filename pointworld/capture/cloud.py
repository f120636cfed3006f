"""From a :class:`SceneCapture` to one fused world-frame cloud, and that cloud as a PLY file.

PLY layout written by :func:`write_ply` (binary little-endian, one ``vertex`` element):
``x y z`` (float, or double for float64 clouds; m, world frame), ``nx ny nz`` (same type; unit
normals), ``red green blue`` (uchar), ``view_index pixel_index`` (int; which camera and which flat
pixel ``v * W + u`` each point came from). Viewers and Open3D read it as an ordinary colored cloud
with normals and ignore the extra properties.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pointworld.capture.frame import SceneCapture
from pointworld.atomic import atomic_open
from pointworld.errors import CaptureFormatError
from pointworld.geometry.fusion import FusedCloud, FusionConfig, LiftedPoints, fuse_lifted, lift_views

_PLY_TYPES = {"char": "i1", "uchar": "u1", "short": "<i2", "ushort": "<u2", "int": "<i4",
              "uint": "<u4", "float": "<f4", "double": "<f8", "int8": "i1", "uint8": "u1",
              "int16": "<i2", "uint16": "<u2", "int32": "<i4", "uint32": "<u4",
              "float32": "<f4", "float64": "<f8"}


def fuse_capture(capture: SceneCapture, config: FusionConfig,
                 dtype: torch.dtype = torch.float32) -> FusedCloud:
    """Fuse every view of ``capture`` into one cloud (views of different image sizes are lifted in
    groups, then voxelized together on one grid).

    Args:
        capture: V calibrated RGB-D frames (depth in metres, distortion coefficients applied).
        config: workspace, voxel size, normals and cleaning settings.
        dtype: floating dtype of the result.

    Returns:
        The fused cloud; ``view_index`` indexes ``capture.frames``.
    """
    if not isinstance(capture, SceneCapture):
        raise TypeError(f"capture: expected a SceneCapture, got {type(capture).__name__}")
    if not isinstance(config, FusionConfig):
        raise TypeError(f"config: expected a FusionConfig, got {type(config).__name__}")
    groups: dict[tuple[int, int], list[int]] = {}
    for i, frame in enumerate(capture.frames):
        groups.setdefault((frame.height, frame.width), []).append(i)
    parts = []
    for indices in groups.values():
        stacked = SceneCapture(tuple(capture.frames[i] for i in indices)).stacked(dtype)
        lifted = lift_views(stacked["depth"], stacked["rgb"], stacked["K"], stacked["T_world_cam"],
                            config, stacked["dist_coeffs"])
        parts.append((lifted, torch.tensor(indices, dtype=torch.int64)))
    lifted = LiftedPoints(
        torch.cat([p.points_world for p, _ in parts]), torch.cat([p.rgb for p, _ in parts]),
        torch.cat([idx[p.view_index] for p, idx in parts]), torch.cat([p.pixel_index for p, _ in parts]),
        sum(p.num_valid_depth for p, _ in parts))
    centers = torch.from_numpy(np.stack([f.T_world_cam[:3, 3] for f in capture.frames])).to(dtype)
    return fuse_lifted(lifted, centers, config)


def _vertex_dtype(float_type: str) -> np.dtype:
    f = "<f4" if float_type == "float" else "<f8"
    return np.dtype([("x", f), ("y", f), ("z", f), ("nx", f), ("ny", f), ("nz", f),
                     ("red", "u1"), ("green", "u1"), ("blue", "u1"),
                     ("view_index", "<i4"), ("pixel_index", "<i4")])


def write_ply(path: str | Path, cloud: FusedCloud) -> Path:
    """Write ``cloud`` as a binary PLY atomically (temporary file in the same folder, then rename).

    Args:
        path: the ``.ply`` file to write (parent directories are created).
        cloud: N points: ``points_world`` (N, 3) m and ``normals`` (N, 3) in the world frame,
            ``colors`` (N, 3) in [0, 1] (rounded to 8 bits), ``view_index``/``pixel_index`` (N,)
            written as the extra int properties of the same names. Float64 clouds are written as
            double, others as float.

    Returns:
        The path written.
    """
    if not isinstance(cloud, FusedCloud):
        raise TypeError(f"cloud: expected a FusedCloud, got {type(cloud).__name__}")
    path = Path(path)
    float_type = "double" if cloud.points_world.dtype == torch.float64 else "float"
    data = np.empty(cloud.num_points, dtype=_vertex_dtype(float_type))
    for names, values in ((("x", "y", "z"), cloud.points_world), (("nx", "ny", "nz"), cloud.normals)):
        arr = values.detach().cpu().numpy()
        for j, name in enumerate(names):
            data[name] = arr[:, j]
    colors = cloud.colors.detach().cpu()
    if colors.numel() and not bool(((colors >= 0) & (colors <= 1)).all()):
        raise ValueError(f"cloud.colors: expected values in [0, 1], got min {float(colors.min()):.4g} "
                         f"max {float(colors.max()):.4g}")
    rgb = np.round(colors.numpy() * 255).astype(np.uint8)
    data["red"], data["green"], data["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    data["view_index"] = cloud.view_index.cpu().numpy()
    data["pixel_index"] = cloud.pixel_index.cpu().numpy()
    header = ["ply", "format binary_little_endian 1.0", "comment pointworld fused cloud, world frame, m",
              f"element vertex {cloud.num_points}"]
    header += [f"property {float_type} {n}" for n in ("x", "y", "z", "nx", "ny", "nz")]
    header += [f"property uchar {n}" for n in ("red", "green", "blue")]
    header += ["property int view_index", "property int pixel_index", "end_header"]
    with atomic_open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(data.tobytes())
    return path


def _parse_header(path: Path, raw: bytes) -> tuple[int, np.dtype, int]:
    """(vertex count, vertex record dtype, byte offset of the data) of a binary little-endian PLY."""
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise CaptureFormatError(f"path: {path} is not a PLY file (no 'ply' magic or no end_header)")
    lines = raw[:end].decode("ascii", errors="replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise CaptureFormatError(f"path: {path}: only binary_little_endian PLY is supported, got "
                                 f"{[ln for ln in lines if ln.startswith('format')]}")
    count, fields, element = None, [], None
    for line in lines:
        tok = line.split()
        if tok[:1] in (["element"], ["property"]) and (len(tok) < 3 or
                                                       (tok[0] == "element" and not tok[2].isdigit())):
            raise CaptureFormatError(f"path: {path}: malformed PLY header line {line!r}")
        if tok[:1] == ["element"]:
            element = tok[1]
            if element == "vertex":
                count = int(tok[2])
            elif count is None:
                raise CaptureFormatError(f"path: {path}: element {element!r} before 'vertex' "
                                         "is not supported")
        elif tok[:1] == ["property"] and element == "vertex":
            if tok[1] == "list" or tok[1] not in _PLY_TYPES:
                raise CaptureFormatError(f"path: {path}: unsupported vertex property {line!r}")
            fields.append((tok[2], _PLY_TYPES[tok[1]]))
    if count is None or not {"x", "y", "z"} <= {n for n, _ in fields}:
        raise CaptureFormatError(f"path: {path}: expected a vertex element with x, y, z properties")
    return count, np.dtype(fields), end + len(b"end_header\n")


def read_ply(path: str | Path) -> FusedCloud:
    """Read a binary little-endian PLY point cloud (as written by :func:`write_ply` or Open3D).

    Missing normals read as zeros, missing colors as zeros, missing view/pixel indices as -1. A file
    that is not a PLY, has a malformed header or is shorter than its header announces raises
    :class:`CaptureFormatError`.

    Args:
        path: the ``.ply`` file.

    Returns:
        A :class:`FusedCloud` with float32 (or float64 if stored as double) tensors.
    """
    path = Path(path)
    raw = path.read_bytes()
    count, dtype, offset = _parse_header(path, raw)
    need = count * dtype.itemsize
    if len(raw) - offset < need:
        raise CaptureFormatError(f"path: {path} is truncated: the header announces {count} vertices "
                                 f"({need} bytes), the file holds {len(raw) - offset} bytes of data")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    names = set(dtype.names or ())
    ftype = np.float64 if data["x"].dtype == np.float64 else np.float32
    tdtype = torch.float64 if ftype is np.float64 else torch.float32

    def cols(keys: tuple[str, str, str], scale: float = 1.0) -> torch.Tensor:
        if not set(keys) <= names:
            return torch.zeros(count, 3, dtype=tdtype)
        return torch.from_numpy(np.stack([data[k].astype(ftype) for k in keys], axis=1) / ftype(scale))

    def index(key: str) -> torch.Tensor:
        values = data[key].astype(np.int64) if key in names else np.full(count, -1, dtype=np.int64)
        return torch.from_numpy(values)

    return FusedCloud(cols(("x", "y", "z")), cols(("red", "green", "blue"), 255.0),
                      cols(("nx", "ny", "nz")), index("view_index"), index("pixel_index"))
