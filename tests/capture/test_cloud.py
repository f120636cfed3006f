"""Capture -> fused cloud (views of mixed sizes, distortion passed on) and PLY writing/reading."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import open3d as o3d
import pytest
import torch

from pointworld.capture.cloud import fuse_capture, read_ply, write_ply
from pointworld.capture.frame import SceneCapture
from pointworld.capture.synthetic import look_at, render_frames, table_scene
from pointworld.errors import CaptureFormatError
from pointworld.geometry.fusion import FusedCloud, FusionConfig, fuse_views

BARE = FusionConfig(normals_k=0, outlier_k=0)
EYES = ([1.3, 0.55, 0.65], [1.3, -0.55, 0.65], [0.5, 0.0, 1.25])


def _K(scale: float) -> np.ndarray:
    return np.array([[150.0 * scale, 0, 79.5 * scale], [0, 150.0 * scale, 59.5 * scale], [0, 0, 1]])


@pytest.fixture(scope="module")
def mixed_capture() -> SceneCapture:
    """Views 0 and 2 at 160x120, view 1 at 120x90."""
    scene = table_scene(0)
    frames = []
    for i, eye in enumerate(EYES):
        scale = 0.75 if i == 1 else 1.0
        capture = render_frames(scene, _K(scale), look_at(eye, [0.6, 0, 0.05])[None],
                                round(120 * scale), round(160 * scale), [f"cam{i}"])
        frames.append(capture.frames[0])
    return SceneCapture(tuple(frames))


def _voxel_set(cloud: FusedCloud, cfg: FusionConfig) -> set[tuple[int, ...]]:
    vox = np.floor((cloud.points_world.double().numpy() - cfg.workspace_min_m) / cfg.voxel_size_m)
    return {tuple(v) for v in vox.astype(np.int64)}


def test_same_size_capture_equals_fuse_views_with_distortion():
    T = np.stack([look_at(e, [0.6, 0, 0.05]) for e in EYES])
    capture = render_frames(table_scene(1), _K(1.0), T, 120, 160, ["a", "b", "c"])
    dist = np.array([0.05, -0.02, 0.001, 0.0005, 0.0])
    capture = SceneCapture(tuple(dataclasses.replace(f, dist_coeffs=dist) for f in capture.frames))
    ours = fuse_capture(capture, FusionConfig())
    v = capture.stacked(torch.float32)
    ref = fuse_views(v["depth"], v["rgb"], v["K"], v["T_world_cam"], FusionConfig(), v["dist_coeffs"])
    plain = fuse_views(v["depth"], v["rgb"], v["K"], v["T_world_cam"], FusionConfig())
    torch.testing.assert_close(ours.points_world, ref.points_world, rtol=0, atol=0)
    torch.testing.assert_close(ours.normals, ref.normals, rtol=0, atol=0)
    assert ours.num_points != plain.num_points or not torch.equal(ours.points_world, plain.points_world)


def test_mixed_image_sizes_fuse_on_one_grid(mixed_capture):
    cloud = fuse_capture(mixed_capture, BARE)
    assert set(cloud.view_index.tolist()) == {0, 1, 2}
    singles = [fuse_capture(SceneCapture((f,)), BARE) for f in mixed_capture.frames]
    union = set().union(*(_voxel_set(c, BARE) for c in singles))
    assert _voxel_set(cloud, BARE) == union and len(union) == cloud.num_points
    for i, frame in enumerate(mixed_capture.frames):  # every point re-projects onto its own pixel
        sel = cloud.view_index == i
        pts = cloud.points_world[sel].double().numpy()
        p_cam = (pts - frame.T_world_cam[:3, 3]) @ frame.T_world_cam[:3, :3]
        uv = (p_cam / p_cam[:, 2:]) @ frame.K.T
        pix = cloud.pixel_index[sel].numpy()
        np.testing.assert_allclose(uv[:, :2], np.stack([pix % frame.width, pix // frame.width], 1), atol=2e-3)


def test_fuse_capture_rejects_wrong_types(mixed_capture):
    with pytest.raises(TypeError, match="capture"):
        fuse_capture(mixed_capture.frames[0], BARE)
    with pytest.raises(TypeError, match="config"):
        fuse_capture(mixed_capture, {"voxel_size_m": 0.01})


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ply_round_trip_and_open3d_reads_it(mixed_capture, tmp_path, dtype):
    cloud = fuse_capture(mixed_capture, FusionConfig(), dtype=dtype)
    path = write_ply(tmp_path / "sub" / "scene.ply", cloud)
    back = read_ply(path)
    assert back.points_world.dtype == dtype
    for field in ("points_world", "normals", "view_index", "pixel_index"):
        torch.testing.assert_close(getattr(back, field), getattr(cloud, field), rtol=0, atol=0)
    torch.testing.assert_close(back.colors, cloud.colors, rtol=0, atol=0.5 / 255 + 1e-7)
    pcd = o3d.io.read_point_cloud(str(path))
    np.testing.assert_allclose(np.asarray(pcd.points), cloud.points_world.double().numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(np.asarray(pcd.normals), cloud.normals.double().numpy(), rtol=0, atol=0)
    np.testing.assert_allclose(np.asarray(pcd.colors), back.colors.double().numpy(), atol=1e-6)
    assert [p.name for p in path.parent.iterdir()] == ["scene.ply"]  # no temporary file left


def test_reads_open3d_written_ply_without_our_fields(tmp_path):
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.random.default_rng(0).random((50, 3))))
    pcd.colors = o3d.utility.Vector3dVector(np.full((50, 3), 0.2))
    o3d.io.write_point_cloud(str(tmp_path / "o3d.ply"), pcd, write_ascii=False)
    cloud = read_ply(tmp_path / "o3d.ply")
    np.testing.assert_allclose(cloud.points_world.double().numpy(), np.asarray(pcd.points), atol=1e-6)
    np.testing.assert_allclose(cloud.colors.numpy(), round(0.2 * 255) / 255, atol=1e-6)
    assert torch.all(cloud.view_index == -1) and torch.all(cloud.normals == 0)
    o3d.io.write_point_cloud(str(tmp_path / "ascii.ply"), pcd, write_ascii=True)
    with pytest.raises(CaptureFormatError, match="binary_little_endian"):
        read_ply(tmp_path / "ascii.ply")


def test_truncated_or_foreign_files_are_clear_errors(mixed_capture, tmp_path):
    path = write_ply(tmp_path / "scene.ply", fuse_capture(mixed_capture, BARE))
    raw = path.read_bytes()
    (tmp_path / "cut.ply").write_bytes(raw[:-7])
    with pytest.raises(CaptureFormatError, match="truncated"):
        read_ply(tmp_path / "cut.ply")
    (tmp_path / "header.ply").write_bytes(raw[:40])
    with pytest.raises(CaptureFormatError, match="end_header"):
        read_ply(tmp_path / "header.ply")
    (tmp_path / "png.ply").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(CaptureFormatError, match="not a PLY"):
        read_ply(tmp_path / "png.ply")
    with pytest.raises(TypeError, match="cloud"):
        write_ply(tmp_path / "x.ply", {"points_world": torch.zeros(1, 3)})
    for bad in (b"element vertex\n", b"element vertex many\n", b"property float\n"):
        (tmp_path / "bad.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\n" + bad + b"end_header\n")
        with pytest.raises(CaptureFormatError, match="malformed PLY header line"):
            read_ply(tmp_path / "bad.ply")


def test_colors_outside_unit_range_are_rejected_not_clamped(mixed_capture, tmp_path):
    import dataclasses

    cloud = fuse_capture(mixed_capture, BARE)
    bad = dataclasses.replace(cloud, colors=cloud.colors * 2.0 + 0.01)
    with pytest.raises(ValueError, match="cloud.colors"):
        write_ply(tmp_path / "x.ply", bad)
    assert not (tmp_path / "x.ply").exists()


def test_failed_write_keeps_the_old_file(mixed_capture, tmp_path, monkeypatch):
    path = tmp_path / "scene.ply"
    path.write_bytes(b"old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_ply(path, fuse_capture(mixed_capture, BARE))
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["scene.ply"]
