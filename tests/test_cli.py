"""The pointworld command: help, config composition, errors, and the capture/calibrate runs end to end."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pointworld.cli import config_groups, main


def test_help_lists_subcommands_and_groups(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for text in ("capture", "calibrate", "source: realsense | replay", "fusion: table",
                 "board: charuco_8x6_a3"):
        assert text in out


def test_config_groups_match_yaml_files():
    groups = config_groups("capture")
    assert groups == {"source": ["realsense", "replay"], "fusion": ["table"]}


def test_subcommand_help_prints_config(capsys):
    assert main(["capture", "--help"]) == 0
    out = capsys.readouterr().out
    assert "voxel_size_m: 0.015" in out and "output_dir:" in out


def test_cfg_prints_overridden_config_without_running(capsys, tmp_path):
    assert main(["capture", f"output_dir={tmp_path / 'x'}", "fusion.voxel_size_m=0.02", "--cfg"]) == 0
    assert "voxel_size_m: 0.02" in capsys.readouterr().out
    assert not (tmp_path / "x").exists()


def test_unknown_subcommand_and_bad_override_exit_2(capsys):
    assert main(["fly"]) == 2
    assert "unknown subcommand 'fly'" in capsys.readouterr().err
    assert main(["capture", "no_such_key=1"]) == 2
    assert "no_such_key" in capsys.readouterr().err
    assert main(["capture", "source=nonexistent"]) == 2


def test_console_script_is_installed():
    exe = shutil.which("pointworld") or str(Path(sys.executable).parent / "pointworld")
    result = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "calibrate" in result.stdout


def test_capture_demo_writes_cloud_inside_workspace(tmp_path, capsys):
    from pointworld.capture.cloud import read_ply
    from pointworld.capture.storage import load_capture

    out = tmp_path / "run"
    assert main(["capture", f"output_dir={out}"]) == 0
    cloud = read_ply(out / "scene.ply")
    points = np.asarray(cloud.points_world)
    assert points.shape[0] > 500
    lo, hi = np.array([0.2, -0.5, -0.05]), np.array([1.0, 0.5, 0.6])
    assert np.all(points >= lo - 1e-6) and np.all(points <= hi + 1e-6)
    assert len(load_capture(out / "capture").frames) == 3
    # A second run refuses to overwrite unless asked.
    assert main(["capture", f"output_dir={out}"]) == 1
    assert "overwrite=true" in capsys.readouterr().err
    assert main(["capture", f"output_dir={out}", "overwrite=true", "fusion.voxel_size_m=0.03"]) == 0
    assert np.asarray(read_ply(out / "scene.ply").points_world).shape[0] < points.shape[0]


def test_capture_without_realsense_names_what_it_looked_for(tmp_path, capsys):
    assert main(["capture", "source=realsense", "source.serials=[123456789012]",
                 f"output_dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert "123456789012" in err
    assert main(["capture", "source=realsense", f"output_dir={tmp_path}"]) == 1
    assert "RealSense" in capsys.readouterr().err


def test_capture_empty_workspace_is_a_clear_error(tmp_path, capsys):
    code = main(["capture", f"output_dir={tmp_path}", "fusion.workspace_min_m=[5,5,5]",
                 "fusion.workspace_max_m=[6,6,6]"])
    assert code == 1
    assert "workspace" in capsys.readouterr().err
    assert not (tmp_path / "scene.ply").exists()


def _board_capture(tmp_path: Path, T_world_board: np.ndarray) -> tuple[Path, dict[str, np.ndarray]]:
    """Save a capture of two cameras that see the default board; return its path and the true poses."""
    from pointworld.capture.charuco import CharucoBoardSpec
    from pointworld.capture.charuco_render import render_board_view
    from pointworld.capture.frame import RGBDFrame, SceneCapture
    from pointworld.capture.storage import save_capture
    from pointworld.capture.synthetic import look_at
    from pointworld.geometry.camera import make_intrinsics

    spec = CharucoBoardSpec(squares_x=8, squares_y=6, square_length_m=0.05, marker_length_m=0.0375,
                            dictionary="DICT_5X5_100")
    K = make_intrinsics(600.0, 600.0, 319.5, 239.5).numpy()
    centre = T_world_board @ np.array([0.2, 0.15, 0.0, 1.0])
    truth, frames = {}, []
    for serial, eye in (("cam_left", [0.25, 0.3, 0.45]), ("cam_right", [0.3, -0.25, 0.5])):
        T_world_cam = look_at(eye, centre[:3])
        T_cam_board = np.linalg.inv(T_world_cam) @ T_world_board
        rgb = render_board_view(spec, K, T_cam_board, 480, 640)
        depth = np.full((480, 640), 0.6, np.float32)
        frames.append(RGBDFrame(rgb, depth, K, np.eye(4), serial))
        truth[serial] = T_world_cam
    path = save_capture(SceneCapture(tuple(frames)), tmp_path / "board_capture")
    return path, truth


def test_calibrate_recovers_camera_poses(tmp_path, capsys):
    from pointworld.capture.calibration import load_calibration
    from pointworld.capture.rig import replay_rig
    from pointworld.cli_commands import board_pose_matrix

    T_world_board = board_pose_matrix([0.5, 0.0, 0.0], [np.pi, 0.0, 0.3])
    capture_dir, truth = _board_capture(tmp_path, T_world_board)
    calib_file = tmp_path / "calib.yaml"
    assert main(["calibrate", "source=replay", f"source.path={capture_dir}", "board_pose.position_m=[0.5,0,0]",
                 f"board_pose.rpy_rad=[{np.pi!r},0,0.3]", "frames_per_camera=2", f"output={calib_file}"]) == 0
    calib = load_calibration(calib_file)
    assert sorted(calib) == ["cam_left", "cam_right"]
    for serial, T_true in truth.items():
        T = calib[serial].T_world_cam
        assert np.linalg.norm(T[:3, 3] - T_true[:3, 3]) <= 2e-3
        cos = (np.trace(T[:3, :3].T @ T_true[:3, :3]) - 1.0) / 2.0
        assert np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))) <= 0.2
    # The calibration file then drives the replayed cameras' extrinsics.
    with replay_rig(capture_dir, calibration_file=calib_file) as rig:
        capture = rig.read()
    for frame in capture.frames:
        np.testing.assert_allclose(frame.T_world_cam, calib[frame.serial].T_world_cam, atol=1e-12)


def test_calibrate_without_board_in_view_fails_clearly(tmp_path, capsys):
    # The demo scene has no board in view.
    assert main(["calibrate", "source=replay", f"output={tmp_path / 'c.yaml'}", "frames_per_camera=1"]) == 1
    assert "board" in capsys.readouterr().err.lower()
    assert not (tmp_path / "c.yaml").exists()
    # The default source is the RealSense cameras; without any it says so.
    assert main(["calibrate", f"output={tmp_path / 'c.yaml'}"]) == 1
    assert "RealSense" in capsys.readouterr().err


def test_debug_flag_shows_the_traceback(tmp_path):
    args = ["capture", f"output_dir={tmp_path}", "fusion.workspace_min_m=[5,5,5]",
            "fusion.workspace_max_m=[6,6,6]"]
    from pointworld.errors import EmptyCloudError

    with pytest.raises(EmptyCloudError, match="workspace"):
        main([*args, "--debug"])


def test_robot_info_on_a_shipped_robot(capsys):
    assert main(["robot-info", "urdf=franka_panda", "num_points=300"]) == 0
    out = capsys.readouterr().out
    assert "8 actuated joints" in out and "panda_finger_joint2" in out  # the mimic follower
    assert "panda_joint1" in out and "-2.8973" in out
    rows = [line.split() for line in out.splitlines() if line.startswith("  panda_")]
    assert sum(int(r[-1]) for r in rows if r[-1].isdigit()) == 300


def test_robot_info_link_pattern_and_errors(capsys, tmp_path):
    assert main(["robot-info", "urdf=flying_gripper", "links=*finger*", "num_points=100"]) == 0
    rows = {line.split()[0]: int(line.split()[-1]) for line in capsys.readouterr().out.splitlines()
            if line.startswith("  ") and line.split()[-1].isdigit() and "finger" in line.split()[0]}
    assert sum(rows.values()) == 100
    assert main(["robot-info", f"urdf={tmp_path / 'missing.urdf'}"]) == 1
    assert "missing.urdf" in capsys.readouterr().err
    bad = tmp_path / "bad.urdf"
    bad.write_text("<robot name='x'><link name='a'/><joint name='j' type='fixed'>")
    assert main(["robot-info", f"urdf={bad}"]) == 1
    assert "bad.urdf" in capsys.readouterr().err
