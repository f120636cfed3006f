"""Multi-view fusion against the true meshes (Open3D ray casting) and Open3D's own depth->voxel pipeline."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import open3d as o3d
import pytest
import torch

from pointworld.capture.synthetic import look_at, render_frames, table_scene
from pointworld.errors import EmptyCloudError
from pointworld.geometry import neighbors
from pointworld.geometry.fusion import (
    FusedCloud,
    FusionConfig,
    fuse_lifted,
    fuse_views,
    lift_views,
)
from pointworld.geometry.normals import estimate_normals, statistical_outlier_mask
from pointworld.geometry.pointcloud import voxel_downsample_indices

H, W = 120, 160
K = np.array([[150.0, 0.0, 79.3], [0.0, 148.0, 60.2], [0.0, 0.0, 1.0]])
EYES = ([1.3, 0.55, 0.65], [1.3, -0.55, 0.65], [0.5, 0.0, 1.25])
BARE = FusionConfig(normals_k=0, outlier_k=0)


@pytest.fixture(scope="module")
def scene():
    return table_scene(0)


@pytest.fixture(scope="module")
def views(scene):
    T = np.stack([look_at(e, [0.6, 0.0, 0.05]) for e in EYES])
    return render_frames(scene, K, T, H, W, ["a", "b", "c"]).stacked(torch.float64)


def _fuse(views, config, dtype=torch.float32, select=slice(None)) -> FusedCloud:
    v = {k: (t.to(dtype) if t.is_floating_point() else t)[select] for k, t in views.items()}
    return fuse_views(v["depth"], v["rgb"], v["K"], v["T_world_cam"], config, v["dist_coeffs"])


def _voxels(points: np.ndarray, config: FusionConfig) -> np.ndarray:
    return np.floor((points - np.array(config.workspace_min_m)) / config.voxel_size_m).astype(np.int64)


def test_fused_points_lie_on_the_meshes_and_keep_their_pixel(views, scene):
    cloud = _fuse(views, FusionConfig())
    assert cloud.points_world.dtype == torch.float32 and cloud.num_points > 1000
    pts = cloud.points_world.numpy()
    dist = scene.raycasting_scene().compute_distance(o3d.core.Tensor(pts)).numpy()
    assert dist.max() < 1e-4
    # Re-projecting each point into its own view (numpy, float64) lands on its pixel.
    view, pix = cloud.view_index.numpy(), cloud.pixel_index.numpy()
    assert set(np.unique(view)) == {0, 1, 2}
    T = views["T_world_cam"].numpy()[view]
    p_cam = np.einsum("nji,nj->ni", T[:, :3, :3], pts.astype(np.float64) - T[:, :3, 3])
    uv = p_cam[:, :2] / p_cam[:, 2:] * [K[0, 0], K[1, 1]] + [K[0, 2], K[1, 2]]
    np.testing.assert_allclose(uv, np.stack([pix % W, pix // W], 1), atol=2e-3)
    rgb = views["rgb"].numpy().reshape(3, H * W, 3)[view, pix]
    np.testing.assert_allclose(cloud.colors.numpy(), rgb / 255.0, atol=1e-7)


def test_voxel_set_equals_open3d_pipeline(views):
    cfg, box = BARE, o3d.geometry.AxisAlignedBoundingBox(np.array(BARE.workspace_min_m),
                                                         np.array(BARE.workspace_max_m))
    merged = o3d.geometry.PointCloud()
    for i in range(3):
        intr = o3d.camera.PinholeCameraIntrinsic(W, H, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        depth = o3d.geometry.Image(views["depth"][i].float().numpy())
        merged += o3d.geometry.PointCloud.create_from_depth_image(
            depth, intr, np.linalg.inv(views["T_world_cam"][i].numpy()), depth_scale=1.0,
            depth_trunc=cfg.max_depth_m).crop(box)
    # Open3D anchors its grid at (min bound - voxel / 2): a sentinel point half a voxel below the
    # workspace corner aligns that grid with ours (and occupies one voxel outside the workspace).
    sentinel = np.array(cfg.workspace_min_m) - cfg.voxel_size_m / 2
    merged.points.append(sentinel)
    centroids = np.asarray(merged.voxel_down_sample(cfg.voxel_size_m).points)
    theirs = {tuple(v) for v in _voxels(centroids, cfg)} - {(-1, -1, -1)}
    ours = _voxels(_fuse(views, cfg, torch.float64).points_world.numpy(), cfg)
    assert len({tuple(v) for v in ours}) == len(ours)  # one point per voxel
    assert {tuple(v) for v in ours} == theirs
    assert len(theirs) > 1000


def test_normals_match_the_mesh_and_face_their_camera(views, scene):
    cloud = _fuse(views, FusionConfig())
    pts, n = cloud.points_world.numpy(), cloud.normals.numpy()
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-5)
    closest = scene.raycasting_scene().compute_closest_points(o3d.core.Tensor(pts))
    true_n = closest["primitive_normals"].numpy()
    agree = np.abs(np.sum(n * true_n, axis=1)) > 0.95
    # Criterion: >= 90% of points within ~18 deg of the mesh normal (misses sit on edges and the sphere).
    assert agree.mean() >= 0.9, agree.mean()
    centers = views["T_world_cam"].numpy()[cloud.view_index.numpy(), :3, 3]
    assert np.all(np.sum(n * (centers - pts), axis=1) > 0)


@pytest.mark.parametrize("knn_backend", ["open3d", "torch"])
@pytest.mark.parametrize("outlier_k, normals_k", [(20, 16), (5, 16)])
def test_shared_neighbour_search_equals_separate_steps(views, monkeypatch, knn_backend, outlier_k, normals_k):
    """Outlier removal and normals share one kNN search; the cloud equals the separate steps: voxels,
    then outliers, then normals estimated on the remaining points alone. Bit for bit with Open3D's
    exact search; the torch search ranks by ``|q|^2 + |p|^2 - 2 q.p`` in float32, so neighbours at
    distances equal to ~1e-6 relative may swap between the two ways (a few normals move by ~1e-7)."""
    if knn_backend == "torch":  # "auto" then picks the torch search everywhere
        monkeypatch.setattr(neighbors, "open3d_unusable_reason", lambda query, points: "disabled")
    cfg = FusionConfig(outlier_k=outlier_k, normals_k=normals_k)
    v = {k: t.float() if t.is_floating_point() else t for k, t in views.items()}
    lifted = lift_views(v["depth"], v["rgb"], v["K"], v["T_world_cam"], cfg)
    cloud = fuse_lifted(lifted, v["T_world_cam"][:, :3, 3], cfg)
    sel = voxel_downsample_indices(lifted.points_world, cfg.voxel_size_m, origin=cfg.workspace_min_m)
    inlier = statistical_outlier_mask(lifted.points_world[sel][None], k=outlier_k, std_ratio=2.0)[0]
    sel = sel[inlier]
    points, centers = lifted.points_world[sel], v["T_world_cam"][lifted.view_index[sel], :3, 3]
    normals = estimate_normals(points[None], k=normals_k, viewpoint=centers[None])[0]
    assert 0 < int((~inlier).sum()) and torch.equal(cloud.points_world, points)
    if knn_backend == "open3d":
        assert torch.equal(cloud.normals, normals)
    else:
        assert (cloud.normals != normals).any(-1).float().mean() < 0.005
        torch.testing.assert_close(cloud.normals, normals, rtol=0, atol=1e-5)


def test_overlapping_views_add_no_duplicate_voxels(views):
    once = _fuse(views, FusionConfig(), select=slice(0, 2))
    twice = _fuse(views, FusionConfig(), select=[0, 1, 0, 1])
    for field in ("points_world", "colors", "normals", "view_index", "pixel_index"):
        torch.testing.assert_close(getattr(twice, field), getattr(once, field), rtol=0, atol=0)
    both = _voxels(once.points_world.numpy(), BARE)
    single = [_voxels(_fuse(views, FusionConfig(), select=[i]).points_world.numpy(), BARE) for i in (0, 1)]
    assert len(both) < len(single[0]) + len(single[1])  # the two views overlap


def test_empty_workspace_raises_with_the_box_and_the_valid_pixel_count(views):
    far = FusionConfig(workspace_min_m=(5, 5, 5), workspace_max_m=(6, 6, 6))
    n_valid = int(((views["depth"] > 0.1) & (views["depth"] <= 3.0)).sum())
    with pytest.raises(EmptyCloudError, match=rf"workspace_min_m=\(5.0, 5.0, 5.0\).*\({n_valid} pixels"):
        _fuse(views, far)
    no_depth = dict(views, depth=torch.zeros_like(views["depth"]))
    with pytest.raises(EmptyCloudError, match=r"\(0 pixels"):
        _fuse(no_depth, FusionConfig())


def test_outlier_removal_drops_flying_pixels(views):
    depth = views["depth"].clone()
    flyers = [(2, v * W + u) for v in range(30, 100, 25) for u in range(40, 140, 30)]
    for view, pix in flyers:  # lift a table pixel of the top view ~0.35 m into the air
        depth[view].view(-1)[pix] *= 0.7
    noisy = dict(views, depth=depth)

    def found(cloud):
        return {(int(v), int(p)) for v, p in zip(cloud.view_index, cloud.pixel_index)}

    assert set(flyers) <= found(_fuse(noisy, BARE))
    assert not set(flyers) & found(_fuse(noisy, dataclasses.replace(BARE, outlier_k=20)))
    assert not set(flyers) & found(_fuse(noisy, FusionConfig()))


def test_max_points_is_a_seeded_subset_with_unchanged_normals(views):
    full = _fuse(views, FusionConfig())
    sub = _fuse(views, FusionConfig(max_points=500))
    again = _fuse(views, FusionConfig(max_points=500))
    other = _fuse(views, FusionConfig(max_points=500, seed=1))
    assert sub.num_points == 500
    torch.testing.assert_close(sub.points_world, again.points_world, rtol=0, atol=0)
    assert not torch.equal(sub.points_world, other.points_world)
    rows = {(int(v), int(p)): i for i, (v, p) in enumerate(zip(full.view_index, full.pixel_index))}
    idx = torch.tensor([rows[(int(v), int(p))] for v, p in zip(sub.view_index, sub.pixel_index)])
    torch.testing.assert_close(sub.points_world, full.points_world[idx], rtol=0, atol=0)
    torch.testing.assert_close(sub.normals, full.normals[idx], rtol=0, atol=0)


def test_random_voxel_mode_and_disabled_normals(views):
    first = _voxels(_fuse(views, BARE, torch.float64).points_world.numpy(), BARE)
    rnd = _fuse(views, dataclasses.replace(BARE, voxel_mode="random", seed=3), torch.float64)
    assert {tuple(v) for v in _voxels(rnd.points_world.numpy(), BARE)} == {tuple(v) for v in first}
    assert rnd.points_world.dtype == torch.float64
    assert torch.all(rnd.normals == 0)


def test_zero_distortion_equals_no_distortion(views):
    v = {k: t.float() if t.is_floating_point() else t for k, t in views.items()}
    a = fuse_views(v["depth"], v["rgb"], v["K"], v["T_world_cam"], BARE, torch.zeros(3, 5))
    b = fuse_views(v["depth"], v["rgb"], v["K"], v["T_world_cam"], BARE, None)
    torch.testing.assert_close(a.points_world, b.points_world, rtol=0, atol=1e-7)


@pytest.mark.parametrize("field, value", [
    ("workspace_min_m", (0.0, 0.0)), ("workspace_min_m", (0.0, math.nan, 0.0)),
    ("workspace_max_m", (0.1, 0.5, 0.6)), ("voxel_size_m", 0.0), ("voxel_size_m", math.inf),
    ("min_depth_m", -0.1), ("max_depth_m", 0.05), ("voxel_mode", "mean"), ("seed", -1),
    ("normals_k", 2.5), ("normals_k", 2), ("outlier_k", -1), ("outlier_std_ratio", math.nan),
    ("outlier_std_ratio", -1.0), ("max_points", 0),
    ("max_points", True)])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        FusionConfig(**{field: value})


def test_config_accepts_lists_and_infinite_range():
    cfg = FusionConfig(workspace_min_m=[0, 0, 0], workspace_max_m=[1, 1, 1], max_depth_m=math.inf)
    assert cfg.workspace_min_m == (0.0, 0.0, 0.0) and cfg.workspace_max_m == (1.0, 1.0, 1.0)


def test_bad_view_tensors_name_the_argument(views):
    v = {k: t.float() if t.is_floating_point() else t for k, t in views.items()}
    with pytest.raises(TypeError, match="rgb"):
        fuse_views(v["depth"], v["rgb"].float(), v["K"], v["T_world_cam"], BARE)
    with pytest.raises(ValueError, match="depth_m"):
        fuse_views(v["depth"][0], v["rgb"], v["K"], v["T_world_cam"], BARE)
    with pytest.raises(ValueError, match="K"):
        fuse_views(v["depth"], v["rgb"], v["K"][:2], v["T_world_cam"], BARE)
    with pytest.raises(ValueError, match="dist_coeffs"):
        fuse_views(v["depth"], v["rgb"], v["K"], v["T_world_cam"], BARE, torch.zeros(3, 4))
    scaled = v["T_world_cam"].clone()
    scaled[1, :3, :3] *= 1.1
    with pytest.raises(ValueError, match="T_world_cam.*rigid"):
        fuse_views(v["depth"], v["rgb"], v["K"], scaled, BARE)
    lifted = lift_views(v["depth"], v["rgb"], v["K"], v["T_world_cam"], BARE)
    with pytest.raises(ValueError, match="camera_centers_world"):
        fuse_lifted(lifted, v["T_world_cam"][:, :3, :], BARE)
