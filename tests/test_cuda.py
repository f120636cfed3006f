"""CUDA paths of the geometry core give the CPU results (run with ``pytest -m gpu`` on a GPU machine).

``POINTWORLD_TEST_DEVICE`` picks the device under test (default ``cuda``); setting it to ``cpu``
checks the test logic itself on a machine without a GPU.
"""

from __future__ import annotations

import os

import pytest
import torch

from pointworld.geometry.camera import backproject_depth, make_intrinsics, project_points
from pointworld.geometry.fusion import FusionConfig, fuse_views
from pointworld.geometry.neighbors import farthest_point_sampling, knn
from pointworld.geometry.normals import estimate_normals, statistical_outlier_mask
from pointworld.geometry.pointcloud import crop_box_mask, voxel_downsample
from pointworld.geometry.rotations import axis_angle_to_matrix, matrix_to_quaternion
from pointworld.geometry.se3 import invert_transform, make_transform, transform_points

DEVICE = torch.device(os.environ.get("POINTWORLD_TEST_DEVICE", "cuda"))

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device"),
]


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _on(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.to(DEVICE) for t in tensors]


def test_transforms_match_cpu():
    g = _gen()
    R = axis_angle_to_matrix(torch.randn(8, 3, generator=g, dtype=torch.float64))
    T = make_transform(R, torch.randn(8, 3, generator=g, dtype=torch.float64))
    p = torch.randn(8, 100, 3, generator=g, dtype=torch.float64)
    (Td, pd) = _on(T, p)
    torch.testing.assert_close(transform_points(Td, pd).cpu(), transform_points(T, p), rtol=0, atol=1e-12)
    torch.testing.assert_close(invert_transform(Td).cpu(), invert_transform(T), rtol=0, atol=1e-12)
    torch.testing.assert_close(matrix_to_quaternion(Td[:, :3, :3]).cpu(), matrix_to_quaternion(R),
                               rtol=0, atol=1e-12)


def test_camera_round_trip_matches_cpu():
    g = _gen()
    K = make_intrinsics(500.0, 510.0, 63.5, 47.5)
    depth = torch.rand(2, 96, 128, generator=g, dtype=torch.float64) + 0.5
    depth[:, :5] = float("nan")
    dist = torch.tensor([[0.1, -0.05, 0.001, 0.002, 0.01]] * 2, dtype=torch.float64)
    pts, valid = backproject_depth(depth, K, dist)
    ptsd, validd = backproject_depth(*_on(depth, K, dist))
    assert torch.equal(validd.cpu(), valid)
    torch.testing.assert_close(ptsd.cpu(), pts, rtol=0, atol=1e-9)
    uv, z = project_points(ptsd.reshape(2, -1, 3), K.to(DEVICE), dist.to(DEVICE))
    uv_cpu, z_cpu = project_points(pts.reshape(2, -1, 3), K, dist)
    torch.testing.assert_close(z.cpu(), z_cpu, rtol=0, atol=1e-12)
    keep = valid.reshape(2, -1)
    torch.testing.assert_close(uv.cpu()[keep], uv_cpu[keep], rtol=0, atol=1e-9)
    # project(backproject(pixel)) is the pixel itself on the device too
    grid = torch.stack(torch.meshgrid(torch.arange(128.0), torch.arange(96.0), indexing="xy"), -1)
    torch.testing.assert_close(uv.cpu()[keep], grid.to(uv.dtype).reshape(-1, 2).expand(2, -1, -1)[keep],
                               rtol=0, atol=1e-6)


def test_point_cloud_ops_match_cpu():
    g = _gen()
    pts = torch.rand(2, 3000, 3, generator=g, dtype=torch.float64)
    mask = torch.rand(2, 3000, generator=g) > 0.1
    (ptsd, maskd) = _on(pts, mask)
    assert torch.equal(crop_box_mask(ptsd, [0.1] * 3, [0.9] * 3).cpu(), crop_box_mask(pts, [0.1] * 3, [0.9] * 3))
    assert torch.equal(voxel_downsample(ptsd, 0.05, maskd).cpu(), voxel_downsample(pts, 0.05, mask))
    d, i = knn(pts, pts, 8, mask)
    dd, idd = knn(ptsd, ptsd, 8, maskd)
    torch.testing.assert_close(dd.cpu(), d, rtol=0, atol=1e-12)
    assert torch.equal(idd.cpu(), i)
    assert torch.equal(farthest_point_sampling(ptsd, 64, maskd)[0].cpu(), farthest_point_sampling(pts, 64, mask)[0])
    n = estimate_normals(pts, mask, k=12)
    nd = estimate_normals(ptsd, maskd, k=12).cpu()
    assert torch.all((n * nd).sum(-1).abs()[mask] > 1 - 1e-9)
    assert torch.equal(statistical_outlier_mask(ptsd, maskd).cpu(), statistical_outlier_mask(pts, mask))


def test_fusion_matches_cpu():
    from pointworld.capture.synthetic import look_at, render_frames, table_scene

    scene = table_scene(0)
    K = make_intrinsics(140.0, 140.0, 79.5, 59.5).numpy()
    poses = look_at([[0.0, 0.6, 0.7], [0.0, -0.6, 0.7]], [0.6, 0.0, 0.0])
    capture = render_frames(scene, K, poses, 120, 160, ["a", "b"], noise=None)
    views = capture.stacked(torch.float64)
    args = (views["depth"], views["rgb"], views["K"], views["T_world_cam"], FusionConfig())
    cpu = fuse_views(*args)
    dev = fuse_views(*_on(*args[:4]), args[4])
    assert dev.points_world.device.type == DEVICE.type
    torch.testing.assert_close(dev.points_world.cpu(), cpu.points_world, rtol=0, atol=1e-9)
    assert torch.equal(dev.pixel_index.cpu(), cpu.pixel_index)
