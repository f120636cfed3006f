"""observe_scene: fused synthetic captures -> SceneInput, checked against the rendered meshes."""

from __future__ import annotations

import dataclasses

import numpy as np
import open3d as o3d
import pytest
import torch

from pointworld.capture.frame import SceneCapture
from pointworld.capture.synthetic import look_at, render_frames, table_scene
from pointworld.errors import CalibrationError, EmptyCloudError
from pointworld.geometry.fusion import FusionConfig
from pointworld.model.inputs import SceneInput
from pointworld.planning.observation import (
    Observation,
    ObservationConfig,
    observe_scene,
)

H, W = 60, 80
K = np.array([[75.0, 0.0, 39.5], [0.0, 74.0, 29.5], [0.0, 0.0, 1.0]])
EYES = ([1.3, 0.55, 0.65], [1.3, -0.55, 0.65])


@pytest.fixture(scope="module")
def mesh_scene():
    return table_scene(0)


@pytest.fixture(scope="module")
def capture(mesh_scene) -> SceneCapture:
    T = np.stack([look_at(e, [0.6, 0.0, 0.05]) for e in EYES])
    return render_frames(mesh_scene, K, T, H, W, ["a", "b"])


def test_points_lie_on_meshes_inside_workspace(capture, mesh_scene):
    config = ObservationConfig(max_points=100_000)
    obs = observe_scene(capture, config, dtype=torch.float64)
    assert isinstance(obs, Observation) and isinstance(obs.scene, SceneInput)
    pts = obs.scene.points[0]
    n = obs.num_points
    assert n > 200 and pts.shape == (n, 3) and pts.dtype == torch.float64
    assert obs.scene.mask.shape == (1, n) and bool(obs.scene.mask.all())
    torch.testing.assert_close(pts, obs.cloud.points_world, rtol=0, atol=0)
    lo = torch.tensor(config.fusion.workspace_min_m, dtype=pts.dtype)
    hi = torch.tensor(config.fusion.workspace_max_m, dtype=pts.dtype)
    assert bool(((pts >= lo) & (pts <= hi)).all())
    # independent check: every fused point is a backprojected pixel, so it lies on a rendered surface
    dist = mesh_scene.raycasting_scene().compute_distance(o3d.core.Tensor(pts.numpy().astype(np.float32)))
    assert float(dist.numpy().max()) < 1e-4
    colors, normals = obs.scene.colors[0], obs.scene.normals[0]
    assert bool(((colors >= 0) & (colors <= 1)).all())
    torch.testing.assert_close(normals.norm(dim=-1), torch.ones(n, dtype=pts.dtype), atol=1e-6, rtol=0)
    # the table top (z ~ 0, away from objects) has normals close to +z
    flat = pts[:, 2].abs() < 1e-3
    assert int(flat.sum()) > 50
    assert float((normals[flat, 2] > 0.9).double().mean()) > 0.9


def test_max_points_caps_and_is_deterministic(capture):
    full = observe_scene(capture, ObservationConfig(max_points=100_000), dtype=torch.float64)
    capped = observe_scene(capture, ObservationConfig(max_points=150), dtype=torch.float64)
    again = observe_scene(capture, ObservationConfig(max_points=150), dtype=torch.float64)
    assert full.num_points > 150 and capped.num_points == 150
    torch.testing.assert_close(capped.scene.points, again.scene.points, rtol=0, atol=0)
    # the cap selects a subset of the uncapped cloud's voxels
    d = (capped.scene.points[0][:, None] - full.scene.points[0][None]).norm(dim=-1).amin(1)
    assert float(d.max()) < 1e-9
    # a smaller cap in the fusion config wins
    both = ObservationConfig(fusion=FusionConfig(max_points=80), max_points=150)
    assert observe_scene(capture, both).num_points == 80


def test_pixel_indices_reproduce_the_points(capture):
    obs = observe_scene(capture, ObservationConfig(max_points=300), dtype=torch.float64)
    view, pix = obs.cloud.view_index.numpy(), obs.cloud.pixel_index.numpy()
    u, v = pix % W, pix // W
    depth = np.stack([f.depth for f in capture.frames])[view, v, u].astype(np.float64)
    p_cam = np.stack([(u - K[0, 2]) / K[0, 0] * depth, (v - K[1, 2]) / K[1, 1] * depth, depth], -1)
    T = np.stack([f.T_world_cam for f in capture.frames])[view]
    p_world = np.einsum("nij,nj->ni", T[:, :3, :3], p_cam) + T[:, :3, 3]
    np.testing.assert_allclose(obs.scene.points[0].numpy(), p_world, atol=1e-5)


def test_uncalibrated_capture_raises_calibration_error(capture):
    bare = SceneCapture(tuple(f.with_pose(np.eye(4)) for f in capture.frames))
    with pytest.raises(CalibrationError, match="pointworld calibrate"):
        observe_scene(bare)
    # one calibrated view is enough to accept the capture
    mixed = SceneCapture((capture.frames[0], bare.frames[1]))
    assert observe_scene(mixed, ObservationConfig(max_points=50)).num_points == 50


def test_empty_workspace_raises(capture):
    far = FusionConfig(workspace_min_m=(5.0, 5.0, 5.0), workspace_max_m=(6.0, 6.0, 6.0))
    with pytest.raises(EmptyCloudError):
        observe_scene(capture, ObservationConfig(fusion=far))


def test_bad_arguments(capture):
    with pytest.raises(TypeError, match="capture"):
        observe_scene("not a capture")
    with pytest.raises(TypeError, match="config"):
        observe_scene(capture, FusionConfig())
    with pytest.raises(ValueError, match="max_points"):
        ObservationConfig(max_points=0)
    with pytest.raises(TypeError, match="fusion"):
        ObservationConfig(fusion={"voxel_size_m": 0.01})
    with pytest.raises(TypeError, match="dtype"):
        observe_scene(capture, dtype=torch.int64)


def test_device_and_dtype_follow_arguments(capture):
    obs = observe_scene(capture, dataclasses.replace(ObservationConfig(), max_points=64),
                        dtype=torch.float32, device="cpu")
    assert obs.scene.points.dtype == torch.float32 and obs.scene.points.device.type == "cpu"
    assert obs.cloud.view_index.dtype == torch.int64
