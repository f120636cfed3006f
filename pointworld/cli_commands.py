"""Bodies of the ``pointworld`` subcommands (CLI layer: turns Hydra configs into library calls).

With :mod:`pointworld.cli` the only code that imports Hydra.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from pointworld.capture.calibration import save_calibration
from pointworld.capture.charuco import calibrate_camera_extrinsics
from pointworld.capture.cloud import fuse_capture, write_ply
from pointworld.capture.frame import RGBDFrame
from pointworld.capture.rig import CameraRig
from pointworld.capture.storage import save_capture
from pointworld.geometry.rotations import rpy_to_matrix
from pointworld.geometry.se3 import make_transform


def run_capture(cfg: DictConfig) -> int:
    """``pointworld capture``: read the rig once, save the capture, write the fused cloud as PLY."""
    fusion = instantiate(cfg.fusion)
    rig: CameraRig = instantiate(cfg.source)
    out = Path(cfg.output_dir)
    cloud_path = out / cfg.cloud_name
    if cloud_path.exists() and not cfg.overwrite:
        raise FileExistsError(f"output_dir: {cloud_path} exists; pass overwrite=true to replace it")
    print(f"reading cameras {rig.serials}")
    with rig:
        capture = rig.read()
    out.mkdir(parents=True, exist_ok=True)
    if cfg.save_capture:
        saved = save_capture(capture, out / "capture", overwrite=bool(cfg.overwrite))
        print(f"saved scene capture ({len(capture.frames)} views) to {saved}")
    cloud = fuse_capture(capture, fusion)
    write_ply(cloud_path, cloud)
    lo, hi = cloud.points_world.amin(0).tolist(), cloud.points_world.amax(0).tolist()
    print(f"wrote {cloud.points_world.shape[0]} points (voxel {fusion.voxel_size_m} m) to {cloud_path}")
    print(f"  bounds min {np.round(lo, 3).tolist()} max {np.round(hi, 3).tolist()} m (world frame)")
    return 0


def board_pose_matrix(position_m: list[float], rpy_rad: list[float]) -> np.ndarray:
    """T_world_board (4, 4) float64 from a position (3,) in metres and URDF roll-pitch-yaw (3,) in rad."""
    if len(position_m) != 3 or len(rpy_rad) != 3:
        raise ValueError(f"board_pose: expected position_m and rpy_rad of 3 numbers each, "
                         f"got {list(position_m)} and {list(rpy_rad)}")
    rotation = rpy_to_matrix(torch.tensor(rpy_rad, dtype=torch.float64))
    return make_transform(rotation, torch.tensor(position_m, dtype=torch.float64)).numpy()


def run_calibrate(cfg: DictConfig) -> int:
    """``pointworld calibrate``: board pose per camera -> T_world_cam per serial -> calibration file."""
    spec = instantiate(cfg.board)
    T_world_board = board_pose_matrix(list(cfg.board_pose.position_m), list(cfg.board_pose.rpy_rad))
    if cfg.frames_per_camera < 1:
        raise ValueError(f"frames_per_camera: expected >= 1, got {cfg.frames_per_camera}")
    rig: CameraRig = instantiate(cfg.source)
    frames: dict[str, list[RGBDFrame]] = {s: [] for s in rig.serials}
    with rig:
        for _ in range(cfg.frames_per_camera):
            for frame in rig.read().frames:
                frames[frame.serial].append(frame)
    results = {s: calibrate_camera_extrinsics(f, spec, T_world_board) for s, f in frames.items()}
    path = save_calibration(cfg.output, results, merge=bool(cfg.merge))
    for serial, calib in results.items():
        t = np.round(calib.T_world_cam[:3, 3], 4).tolist()
        print(f"camera {serial}: position {t} m, reprojection error "
              f"{calib.reprojection_error_px:.3f} px")
    print(f"wrote calibration of {len(results)} camera(s) to {path}")
    return 0

