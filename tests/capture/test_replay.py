"""ReplayCamera over in-memory captures, capture directories and recordings; capture_scene."""

from __future__ import annotations

import numpy as np
import pytest

from pointworld.capture.camera import Camera, ReplayCamera, capture_scene
from pointworld.capture.frame import RGBDFrame, SceneCapture
from pointworld.capture.storage import load_capture, save_capture
from pointworld.errors import CaptureFormatError

SERIALS = ("A1", "B2")


def _frame(serial: str, t: float, seed: int) -> RGBDFrame:
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, 3] = rng.normal(size=3)
    return RGBDFrame(rgb=rng.integers(0, 256, (6, 8, 3), dtype=np.uint8),
                     depth=rng.uniform(0.2, 2.0, (6, 8)).astype(np.float32),
                     K=np.array([[10.0, 0, 4], [0, 10.0, 3], [0, 0, 1]]), T_world_cam=T,
                     serial=serial, timestamp_s=t)


def _capture(t: float, seed: int = 0) -> SceneCapture:
    return SceneCapture(tuple(_frame(s, t, seed + i) for i, s in enumerate(SERIALS)))


@pytest.fixture
def recording(tmp_path):
    """Three captures in subdirectories, plus a hidden leftover and an unrelated folder."""
    root = tmp_path / "rec"
    root.mkdir()
    for i, name in enumerate(["002", "000", "001"]):  # written out of order, played sorted
        save_capture(_capture(t=float(name), seed=10 * i), root / name)
    (root / ".003.tmp-deadbeef").mkdir()
    (root / "notes").mkdir()
    return root


def test_in_memory_capture_plays_its_frame_and_loops():
    capture = _capture(1.5)
    camera = ReplayCamera(capture, "B2")
    assert camera.serial == "B2" and not camera.is_connected
    with pytest.raises(RuntimeError, match="connect"):
        camera.read()
    with camera:
        assert camera.is_connected
        first, second = camera.read(), camera.read()
    assert not camera.is_connected
    assert first is capture.frame("B2") and second is first


def test_loop_false_ends_with_eof():
    camera = ReplayCamera(_capture(0.0), "A1", loop=False).connect()
    camera.read()
    with pytest.raises(EOFError, match="loop=False"):
        camera.read()
    camera.close()
    camera.close()  # idempotent


def test_capture_directory_matches_load_capture(tmp_path):
    path = save_capture(_capture(2.0), tmp_path / "cap")
    with ReplayCamera(path, "A1") as camera:
        frame = camera.read()
    expected = load_capture(path).frame("A1")
    for name in ("rgb", "depth", "K", "T_world_cam", "dist_coeffs"):
        np.testing.assert_array_equal(getattr(frame, name), getattr(expected, name))


def test_recording_plays_captures_in_sorted_order_and_loops(recording):
    camera = ReplayCamera(str(recording), "B2")
    assert len(camera) == 3
    with camera:
        times = [camera.read().timestamp_s for _ in range(5)]
        assert times == [0.0, 1.0, 2.0, 0.0, 1.0]
    with ReplayCamera(recording, "B2", loop=False) as camera:
        assert [camera.read().timestamp_s for _ in range(3)] == [0.0, 1.0, 2.0]
        with pytest.raises(EOFError):
            camera.read()
    with ReplayCamera(recording, "B2") as camera:  # connect() rewinds
        assert camera.read().timestamp_s == 0.0


def test_recording_frames_equal_each_saved_capture(recording):
    with ReplayCamera(recording, "A1") as camera:
        for name in ("000", "001", "002"):
            np.testing.assert_array_equal(camera.read().rgb, load_capture(recording / name).frame("A1").rgb)


def test_pose_override_replaces_the_stored_pose(recording):
    T = np.eye(4)
    T[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]
    T[:3, 3] = [0.5, 0.0, 1.0]
    with ReplayCamera(recording, "A1", T_world_cam=T) as camera:
        frames = [camera.read() for _ in range(2)]
    for frame in frames:
        np.testing.assert_array_equal(frame.T_world_cam, T)
    stored = load_capture(recording / "000").frame("A1")
    np.testing.assert_array_equal(frames[0].depth, stored.depth)
    assert not np.array_equal(stored.T_world_cam, T)


def test_serial_selection_errors(tmp_path):
    with pytest.raises(KeyError, match=r"'C3'.*\['A1', 'B2'\]"):
        ReplayCamera(_capture(0.0), "C3")
    with pytest.raises(ValueError, match="several cameras"):
        ReplayCamera(_capture(0.0))
    single = SceneCapture((_frame("solo", 0.0, 1),))
    assert ReplayCamera(single).serial == "solo"


def test_bad_sources(tmp_path):
    with pytest.raises(TypeError, match="source"):
        ReplayCamera(42, "A1")
    with pytest.raises(CaptureFormatError, match="recording directory"):
        ReplayCamera(tmp_path, "A1")
    with pytest.raises(CaptureFormatError, match="not a directory"):
        ReplayCamera(tmp_path / "nowhere", "A1")
    for bad, match in ((np.ones((4, 4)), "rigid"), (np.eye(3), "T_world_cam")):
        with pytest.raises(ValueError, match=match):
            ReplayCamera(_capture(0.0), "A1", T_world_cam=bad)


def test_capture_scene_reads_one_frame_per_camera(recording):
    cameras = [ReplayCamera(recording, s) for s in reversed(SERIALS)]
    for camera in cameras:
        camera.connect()
    scene = capture_scene(cameras)
    assert scene.serials == ["B2", "A1"]
    assert all(f.timestamp_s == 0.0 for f in scene.frames)
    assert [f.timestamp_s for f in capture_scene(cameras).frames] == [1.0, 1.0]


def test_capture_scene_errors():
    with pytest.raises(ValueError, match="at least one"):
        capture_scene([])
    with pytest.raises(TypeError, match=r"cameras\[0\]"):
        capture_scene(["A1"])
    with pytest.raises(RuntimeError, match="connect"):
        capture_scene([ReplayCamera(_capture(0.0), "A1")])
    twice = [ReplayCamera(_capture(0.0), "A1").connect(), ReplayCamera(_capture(0.0), "A1").connect()]
    with pytest.raises(ValueError, match="unique"):
        capture_scene(twice)


def test_camera_is_abstract():
    with pytest.raises(TypeError):
        Camera()  # type: ignore[abstract]
