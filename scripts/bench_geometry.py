"""Benchmark: depth -> cropped voxelized world cloud, ours (torch, CPU) vs Open3D in the same process.

Cases (inputs are synthetic table-top frames rendered by pointworld.capture.synthetic):
  single-frame 640x480 / 1280x720: backprojection to the world frame + workspace crop + compaction +
      voxel downsampling, depth only. Open3D: PointCloud.create_from_depth_image + crop(AABB) +
      voxel_down_sample (which also averages the points of each voxel; ours keeps one point).
  fusion 3x640x480, voxel only: colors, 3 views, one voxel grid. Open3D: create_from_rgbd_image per
      view + crop + merge + voxel_down_sample.
  fusion 3x640x480, default config: + statistical outlier removal (k=20, 2 std) + normals (k=16).
      Open3D: + remove_statistical_outlier(20, 2.0) + estimate_normals(KNN 16); ours additionally
      orients every normal toward its own camera (Open3D has no per-point viewpoint here).

Prints medians over --repeats interleaved runs after warm-up, the ratio open3d/ours (> 1: ours is faster), the
points kept by each, and a per-stage breakdown of our single-frame path.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import numpy as np
import open3d as o3d
import torch

from pointworld.capture.synthetic import look_at, render_frames, table_scene
from pointworld.geometry.camera import depth_to_world_points
from pointworld.geometry.fusion import FusionConfig, fuse_views
from pointworld.geometry.pointcloud import crop_box_mask, voxel_downsample_indices

EYES = ([1.3, 0.55, 0.65], [1.3, -0.55, 0.65], [0.5, 0.0, 1.25])
TARGET = [0.6, 0.0, 0.05]


def realsense_like_K(width: int, height: int) -> np.ndarray:
    f = 0.96 * width  # ~615 px at 640 wide, ~1230 at 1280 (D435 color-like field of view)
    return np.array([[f, 0, (width - 1) / 2 + 0.7], [0, f, (height - 1) / 2 - 1.1], [0, 0, 1]])


def make_views(width: int, height: int, n_views: int) -> dict[str, torch.Tensor]:
    T = np.stack([look_at(e, TARGET) for e in EYES[:n_views]])
    capture = render_frames(table_scene(0), realsense_like_K(width, height), T, height, width,
                            [f"cam{i}" for i in range(n_views)])
    return capture.stacked(torch.float32)


def median_ms(fns: tuple[Callable[[], int], ...], repeats: int) -> list[tuple[float, int]]:
    """Median wall time (ms) and kept-point count of each function; runs are interleaved so that
    load from other processes affects all of them alike."""
    kept = [fn() for fn in fns for _ in range(3)][2::3]  # warm-up
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            kept[i] = fn()
            times[i].append(time.perf_counter() - t0)
    return [(1e3 * statistics.median(t), k) for t, k in zip(times, kept)]


def ours_single(v: dict[str, torch.Tensor], cfg: FusionConfig, stages: dict[str, list[float]] | None = None
                ) -> int:
    """Our single-frame path, stage by stage as in fusion.lift_views (without the color gather)."""
    t = [time.perf_counter()]
    pts, valid = depth_to_world_points(v["depth"], v["K"], v["T_world_cam"], min_depth_m=cfg.min_depth_m,
                                       max_depth_m=cfg.max_depth_m)
    pts = pts.reshape(-1, 3)
    t.append(time.perf_counter())
    keep = valid.reshape(-1) & crop_box_mask(pts, cfg.workspace_min_m, cfg.workspace_max_m)
    t.append(time.perf_counter())
    pts = pts.index_select(0, keep.nonzero().squeeze(1))
    t.append(time.perf_counter())
    idx = voxel_downsample_indices(pts, cfg.voxel_size_m, origin=cfg.workspace_min_m)
    t.append(time.perf_counter())
    if stages is not None:
        for name, a, b in zip(("depth_to_world", "crop", "compact", "voxel"), t, t[1:]):
            stages.setdefault(name, []).append(1e3 * (b - a))
    return int(idx.numel())


def o3d_cloud(v: dict[str, torch.Tensor], i: int, cfg: FusionConfig, color: bool) -> o3d.geometry.PointCloud:
    H, W = v["depth"].shape[1:]
    K = v["K"][i].double().numpy()
    intr = o3d.camera.PinholeCameraIntrinsic(W, H, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    extr = np.linalg.inv(v["T_world_cam"][i].double().numpy())
    depth = o3d.geometry.Image(np.ascontiguousarray(v["depth"][i].numpy()))
    if not color:
        return o3d.geometry.PointCloud.create_from_depth_image(depth, intr, extr, depth_scale=1.0,
                                                               depth_trunc=cfg.max_depth_m)
    rgbd = o3d.geometry.RGBDImage.create_from_color_and_depth(
        o3d.geometry.Image(np.ascontiguousarray(v["rgb"][i].numpy())), depth, depth_scale=1.0,
        depth_trunc=cfg.max_depth_m, convert_rgb_to_intensity=False)
    return o3d.geometry.PointCloud.create_from_rgbd_image(rgbd, intr, extr)


def o3d_pipeline(v: dict[str, torch.Tensor], cfg: FusionConfig, color: bool, clean: bool) -> int:
    box = o3d.geometry.AxisAlignedBoundingBox(np.array(cfg.workspace_min_m), np.array(cfg.workspace_max_m))
    merged = o3d.geometry.PointCloud()
    for i in range(v["depth"].shape[0]):
        merged += o3d_cloud(v, i, cfg, color).crop(box)
    down = merged.voxel_down_sample(cfg.voxel_size_m)
    if clean:
        down, _ = down.remove_statistical_outlier(cfg.outlier_k, cfg.outlier_std_ratio)
        down.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(cfg.normals_k))
    return len(down.points)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per case (median reported)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; open3d {o3d.__version__} "
          f"(its own OpenMP threads); float32, CPU")
    cfg = FusionConfig()
    bare = dataclasses.replace(cfg, normals_k=0, outlier_k=0)
    single = {size: make_views(*size, 1) for size in ((640, 480), (1280, 720))}
    multi = make_views(640, 480, 3)
    rgb_views = lambda c: (lambda: fuse_views(multi["depth"], multi["rgb"], multi["K"],  # noqa: E731
                                              multi["T_world_cam"], c).num_points)
    cases = [(f"single-frame {w}x{h}", lambda v=v: ours_single(v, cfg),
              lambda v=v: o3d_pipeline(v, cfg, color=False, clean=False)) for (w, h), v in single.items()]
    cases += [("fusion 3x640x480 voxel only", rgb_views(bare),
               lambda: o3d_pipeline(multi, cfg, color=True, clean=False)),
              ("fusion 3x640x480 +outliers+normals", rgb_views(cfg),
               lambda: o3d_pipeline(multi, cfg, color=True, clean=True))]
    print(f"{'case':38s} {'ours ms':>9s} {'open3d ms':>10s} {'ratio':>7s} {'ours pts':>9s} {'o3d pts':>8s}")
    for name, ours, theirs in cases:
        (t_ours, n_ours), (t_o3d, n_o3d) = median_ms((ours, theirs), args.repeats)
        print(f"{name:38s} {t_ours:9.2f} {t_o3d:10.2f} {t_o3d / t_ours:7.2f} {n_ours:9d} {n_o3d:8d}")
    for (w, h), v in single.items():
        stages: dict[str, list[float]] = {}
        for _ in range(args.repeats):
            ours_single(v, cfg, stages)
        parts = ", ".join(f"{k} {statistics.median(x):.2f}" for k, x in stages.items())
        print(f"ours single-frame {w}x{h} stages (median ms): {parts}")


if __name__ == "__main__":
    main()
