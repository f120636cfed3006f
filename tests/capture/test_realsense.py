"""RealSenseCamera without hardware: synthetic recordings made with pyrealsense2's software_device and
recorder are played back through the driver; the no-device path and the pure helpers are checked too."""

from __future__ import annotations

import gc
import sys

import numpy as np
import pytest

import pyrealsense2 as rs  # the test extra installs pyrealsense2

from pointworld.capture.realsense import (  # noqa: E402
    RealSenseCamera,
    _rs,
    color_to_rgb,
    list_realsense_serials,
    opencv_dist_coeffs,
)
from pointworld.errors import CameraNotFoundError  # noqa: E402

H, W = 48, 64
SERIAL = "987654321"
DEPTH_UNITS = 1e-4  # not the usual 1 mm, so that a hard-coded scale would show
FX, FY, PPX, PPY = 50.0, 52.0, 31.5, 23.25
COEFFS = [0.11, -0.05, 0.001, 0.002, 0.01]


def _intrinsics(coeffs: list[float]) -> rs.intrinsics:
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = W, H, FX, FY, PPX, PPY
    intr.model, intr.coeffs = rs.distortion.brown_conrady, list(coeffs)
    return intr


def _video_stream(kind, fmt, bpp: int, uid: int, coeffs: list[float]) -> rs.video_stream:
    vs = rs.video_stream()
    vs.type, vs.index, vs.uid, vs.width, vs.height, vs.fps = kind, 0, uid, W, H, 30
    vs.bpp, vs.fmt, vs.intrinsics = bpp, fmt, _intrinsics(coeffs)
    return vs


def _timestamp_ms(index: int) -> float:
    # 30 fps from an arbitrary origin: librealsense's syncer then emits stale pairs, which the
    # driver must skip (with an origin of 0 it happens not to)
    return 100.0 + 1000.0 / 30.0 * index


def _video_frame(pixels: np.ndarray, bpp: int, index: int, profile) -> rs.software_video_frame:
    frame = rs.software_video_frame()
    frame.pixels, frame.bpp, frame.stride = pixels, bpp, bpp * W
    frame.timestamp, frame.frame_number = _timestamp_ms(index), index
    frame.domain, frame.profile = rs.timestamp_domain.hardware_clock, profile.as_video_stream_profile()
    return frame


def write_synthetic_recording(path, rgbs, depths_raw, *, serial=SERIAL, color_fmt="rgb8",
                              coeffs=COEFFS) -> None:
    """Record aligned synthetic frames (rgb (H, W, 3) uint8, raw depth (H, W) uint16 in DEPTH_UNITS)
    from a software device with the intrinsics above to ``path`` (.db3)."""
    dev = rs.software_device()
    dev.register_info(rs.camera_info.serial_number, serial)
    dev.register_info(rs.camera_info.name, "pointworld synthetic")
    depth_sensor, color_sensor = dev.add_sensor("Depth"), dev.add_sensor("Color")
    depth_sensor.add_read_only_option(rs.option.depth_units, DEPTH_UNITS)
    depth_profile = depth_sensor.add_video_stream(_video_stream(rs.stream.depth, rs.format.z16, 2, 0,
                                                                coeffs), True)
    color_profile = color_sensor.add_video_stream(
        _video_stream(rs.stream.color, getattr(rs.format, color_fmt), 3, 1, coeffs), True)
    identity = rs.extrinsics()
    identity.rotation, identity.translation = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0], [0.0, 0.0, 0.0]
    depth_profile.register_extrinsics_to(color_profile, identity)
    recorder = rs.recorder(str(path), dev)
    for sensor, profile in ((depth_sensor, depth_profile), (color_sensor, color_profile)):
        sensor.open(profile)
        sensor.start(lambda f: None)
    for i, (rgb, raw) in enumerate(zip(rgbs, depths_raw)):
        color = rgb[..., ::-1] if color_fmt == "bgr8" else rgb
        depth_sensor.on_video_frame(_video_frame(np.ascontiguousarray(raw), 2, i, depth_profile))
        color_sensor.on_video_frame(_video_frame(np.ascontiguousarray(color), 3, i, color_profile))
    for sensor in (depth_sensor, color_sensor):
        sensor.stop()
        sensor.close()
    del recorder, dev, depth_sensor, color_sensor
    gc.collect()


def _synthetic(n: int, seed: int = 0, smooth: bool = False) -> tuple[list, list]:
    rng = np.random.default_rng(seed)
    rgbs = [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]
    if smooth:  # a tilted plane: 0.5 m .. ~0.8 m
        v, u = np.mgrid[0:H, 0:W]
        depths = [(5000 + 40 * u + 10 * v + 100 * i).astype(np.uint16) for i in range(n)]
    else:
        depths = [rng.integers(1, 60000, (H, W), dtype=np.uint16) for _ in range(n)]
    return rgbs, depths


def _read_all(camera: RealSenseCamera, limit: int = 20) -> list:
    frames = []
    with camera:
        for _ in range(limit):
            try:
                frames.append(camera.read())
            except EOFError:
                break
    return frames


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    rgbs, depths = _synthetic(3)
    path = tmp_path_factory.mktemp("rs") / "synthetic.db3"
    write_synthetic_recording(path, rgbs, depths)
    return path, rgbs, depths


def test_playback_returns_the_injected_frames_exactly(recording):
    path, rgbs, depths = recording
    camera = RealSenseCamera(playback_from=path, align_to_color=False)
    frames = _read_all(camera)
    assert len(frames) == len(rgbs)
    K = np.array([[FX, 0, PPX], [0, FY, PPY], [0, 0, 1]])
    for i, frame in enumerate(frames):
        assert frame.serial == SERIAL
        np.testing.assert_array_equal(frame.rgb, rgbs[i])
        assert frame.depth.dtype == np.float32
        np.testing.assert_allclose(frame.depth, depths[i] * DEPTH_UNITS, rtol=1e-6, atol=0)
        np.testing.assert_allclose(frame.K, K, rtol=0, atol=1e-5)  # float32 inside librealsense
        np.testing.assert_allclose(frame.dist_coeffs, COEFFS, rtol=1e-6)
        np.testing.assert_array_equal(frame.T_world_cam, np.eye(4))
        assert frame.timestamp_s == pytest.approx(_timestamp_ms(i) / 1000.0, abs=1e-9)
    assert not camera.is_connected
    with RealSenseCamera(playback_from=path) as again:
        assert again.depth_scale_m == pytest.approx(DEPTH_UNITS, rel=1e-6)
        assert again.serial == SERIAL


def test_playback_aligned_depth_with_identity_extrinsics_keeps_a_smooth_surface(tmp_path):
    rgbs, depths = _synthetic(2, smooth=True)
    path = tmp_path / "plane.db3"
    write_synthetic_recording(path, rgbs, depths, coeffs=[0.0] * 5)
    T = np.eye(4)
    T[:3, 3] = [0.1, -0.2, 0.3]
    frames = _read_all(RealSenseCamera(SERIAL, playback_from=path, T_world_cam=T))
    assert len(frames) == 2
    for frame, raw in zip(frames, depths):
        np.testing.assert_array_equal(frame.T_world_cam, T)
        # Same intrinsics and identity extrinsics: each depth pixel lands on itself. rs.align splats
        # pixel footprints with rounding: a few pixels stay empty (0) or take a neighbour's value.
        hit = frame.depth > 0
        expected = raw * DEPTH_UNITS
        assert hit.mean() > 0.9
        assert np.isclose(frame.depth[hit], expected[hit], rtol=1e-6, atol=0).mean() > 0.97
        neighbour_step_m = 40 * DEPTH_UNITS  # the plane's largest step between adjacent pixels
        assert np.abs(frame.depth[hit] - expected[hit]).max() <= neighbour_step_m * (1 + 1e-6)


def test_playback_converts_bgr_and_checks_the_serial(tmp_path):
    rgbs, depths = _synthetic(1, seed=3)
    path = tmp_path / "bgr.db3"
    write_synthetic_recording(path, rgbs, depths, color_fmt="bgr8")
    frames = _read_all(RealSenseCamera(playback_from=path, align_to_color=False))
    np.testing.assert_array_equal(frames[0].rgb, rgbs[0])
    with pytest.raises(CameraNotFoundError, match="'111'.*'987654321'"):
        RealSenseCamera("111", playback_from=path).connect()


def test_hole_filling_filter_is_applied(tmp_path):
    rgbs, depths = _synthetic(1, smooth=True)
    depths[0][10:12, 20:22] = 0  # a hole inside the plane
    path = tmp_path / "holes.db3"
    write_synthetic_recording(path, rgbs, depths, coeffs=[0.0] * 5)
    plain = _read_all(RealSenseCamera(playback_from=path, align_to_color=False))[0]
    filled = _read_all(RealSenseCamera(playback_from=path, align_to_color=False,
                                       filters=["hole_filling"]))[0]
    assert np.all(plain.depth[10:12, 20:22] == 0)
    assert np.all(filled.depth[10:12, 20:22] > 0)
    np.testing.assert_array_equal(filled.depth[depths[0] > 0], plain.depth[depths[0] > 0])


def test_all_filters_run_on_playback(tmp_path):
    rgbs, depths = _synthetic(2, smooth=True)
    depths[1] = depths[0].copy()  # a static scene, so that the temporal filter has nothing to blend
    path = tmp_path / "filters.db3"
    write_synthetic_recording(path, rgbs, depths, coeffs=[0.0] * 5)
    frames = _read_all(RealSenseCamera(playback_from=path, filters=True, align_to_color=False))
    assert len(frames) == 2
    for frame, raw in zip(frames, depths):
        change_m = np.abs(frame.depth - raw * DEPTH_UNITS)
        assert np.all(frame.depth > 0)
        assert change_m.max() > 1e-4  # the spatial filter did smooth the sloped plane ...
        assert change_m.max() < 0.5 * 40 * DEPTH_UNITS  # ... by less than half its per-pixel step


def test_no_camera_raises_camera_not_found_naming_the_serial():
    if list_realsense_serials():
        pytest.skip("a RealSense device is attached")
    with pytest.raises(CameraNotFoundError, match=r"'123456789012'.*connected serials: none"):
        RealSenseCamera("123456789012").connect()
    with pytest.raises(CameraNotFoundError, match=r"'123456789012'"):
        RealSenseCamera(123456789012).connect()  # as an unquoted YAML serial arrives
    with pytest.raises(CameraNotFoundError, match="serial=None"):
        RealSenseCamera().connect()
    assert list_realsense_serials() == []


def test_opencv_dist_coeffs_match_librealsense_projection():
    import cv2
    K = np.array([[615.0, 0, 322.0], [0, 614.0, 238.5], [0, 0, 1]])
    intr = rs.intrinsics()
    intr.width, intr.height, intr.fx, intr.fy, intr.ppx, intr.ppy = 640, 480, 615.0, 614.0, 322.0, 238.5
    rng = np.random.default_rng(1)
    points = np.column_stack([rng.uniform(-0.5, 0.5, 200), rng.uniform(-0.38, 0.38, 200), np.ones(200)])
    realsense_like = [-0.055, 0.066, -0.0003, 0.0007, -0.021]  # a D455 color stream's magnitudes
    for model, coeffs, tol_px in (("brown_conrady", COEFFS, 1e-3),
                                  ("inverse_brown_conrady", realsense_like, 0.02),
                                  ("modified_brown_conrady", realsense_like, 0.02),
                                  ("none", [0.0] * 5, 1e-3)):
        intr.model, intr.coeffs = getattr(rs.distortion, model), coeffs
        expected = np.array([rs.rs2_project_point_to_pixel(intr, list(p)) for p in points])
        dist = opencv_dist_coeffs(model, coeffs)
        got = cv2.projectPoints(points, np.zeros(3), np.zeros(3), K, dist)[0].reshape(-1, 2)
        assert np.abs(got - expected).max() < tol_px, model


def test_opencv_dist_coeffs_rejects_fisheye_and_bad_coefficients():
    with pytest.raises(ValueError, match="model.*kannala_brandt4"):
        opencv_dist_coeffs("kannala_brandt4", [0.0] * 5)
    with pytest.raises(ValueError, match="coeffs"):
        opencv_dist_coeffs("brown_conrady", [0.0] * 4)
    with pytest.raises(ValueError, match="coeffs"):
        opencv_dist_coeffs("brown_conrady", [0.0, np.nan, 0, 0, 0])


def test_color_to_rgb():
    image = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(color_to_rgb(image, "bgra8"), image[..., [2, 1, 0]])
    np.testing.assert_array_equal(color_to_rgb(image[..., :3], "rgb8"), image[..., :3])
    with pytest.raises(ValueError, match="fmt.*yuyv"):
        color_to_rgb(image, "yuyv")


@pytest.mark.parametrize("kwargs, match", [
    ({"record_to": "a.db3", "playback_from": "b.db3"}, "record_to, playback_from"),
    ({"width": 0}, "width"), ({"fps": 2.5}, "fps"), ({"warmup_frames": -1}, "warmup_frames"),
    ({"filters": "spatial"}, "filters"), ({"filters": ["median"]}, "filters"),
    ({"timeout_s": 0}, "timeout_s"), ({"serial": ""}, "serial"), ({"serial": 1.5}, "serial"),
    ({"T_world_cam": np.ones((4, 4))}, "T_world_cam"),
])
def test_constructor_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RealSenseCamera(**kwargs)


def test_state_errors(tmp_path):
    camera = RealSenseCamera()
    with pytest.raises(RuntimeError, match="serial"):
        _ = camera.serial
    with pytest.raises(RuntimeError, match="connect"):
        RealSenseCamera("1").read()
    with pytest.raises(FileNotFoundError, match="missing.db3"):
        RealSenseCamera(playback_from=tmp_path / "missing.db3").connect()


def test_missing_pyrealsense2_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "pyrealsense2", None)
    with pytest.raises(ImportError, match=r"pointworld\[capture\]"):
        _rs()
