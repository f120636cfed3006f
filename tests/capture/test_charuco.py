"""ChArUco board: spec checks, the synthetic renderer, pose detection and camera extrinsics.

The renderer is checked against the pinhole model directly (edge positions) and through OpenCV
(its own marker detector and ``projectPoints``); the pose pipeline is then checked on rendered views
with known poses.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import cv2  # the test extra installs opencv-python-headless

from pointworld.capture import charuco  # noqa: E402
from pointworld.capture.charuco import (DICTIONARY_SIZES, CharucoBoardSpec,  # noqa: E402
                                        calibrate_camera_extrinsics, detect_board_pose)
from pointworld.capture.charuco_render import render_board_view  # noqa: E402
from pointworld.capture.frame import RGBDFrame  # noqa: E402
from pointworld.errors import BoardNotFoundError  # noqa: E402
from pointworld.geometry.rotations import axis_angle_to_matrix, rotation_angle  # noqa: E402

SPEC = CharucoBoardSpec(8, 6, 0.05, 0.0375, "DICT_5X5_100")  # 40 x 30 cm, about A3
DIST = np.array([-0.12, 0.08, 8e-4, -5e-4, -0.02])
TRANS_TOL_M = 2e-3
ROT_TOL_RAD = np.deg2rad(0.2)
T_WORLD_BOARD = np.array([[0.0, -1.0, 0.0, 0.45], [-1.0, 0.0, 0.0, 0.10], [0.0, 0.0, -1.0, 0.0],
                          [0.0, 0.0, 0.0, 1.0]])  # board lying face up on the table (its z down)


def _K(width: int, height: int, fx: float) -> np.ndarray:
    return np.array([[fx, 0.0, width / 2 - 0.3], [0.0, fx * 1.001, height / 2 + 0.7], [0, 0, 1]])


CAMERAS = {"vga": (640, 480, _K(640, 480, 600.0)), "hd": (1280, 720, _K(1280, 720, 900.0))}


def _board_pose(tilt_deg: float, axis: tuple[float, float, float], distance_m: float,
                spec: CharucoBoardSpec = SPEC, offset_m: tuple[float, float] = (0.02, -0.01)
                ) -> np.ndarray:
    """T_cam_board: board centre at ``(*offset_m, distance_m)`` in the camera frame, turned by
    ``tilt_deg`` about ``axis``."""
    rotvec = torch.tensor(axis, dtype=torch.float64)
    R = axis_angle_to_matrix(rotvec / rotvec.norm() * np.deg2rad(tilt_deg)).numpy()
    centre = np.array([spec.squares_x, spec.squares_y, 0.0]) * spec.square_length_m / 2
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, np.array([*offset_m, distance_m]) - R @ centre
    return T


def _inv(T: np.ndarray) -> np.ndarray:
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = T[:3, :3].T, -T[:3, :3].T @ T[:3, 3]
    return out


def _errors(T_est: np.ndarray, T_true: np.ndarray) -> tuple[float, float]:
    angle = rotation_angle(torch.from_numpy(T_est[:3, :3]), torch.from_numpy(T_true[:3, :3]))
    return float(np.linalg.norm(T_est[:3, 3] - T_true[:3, 3])), float(angle)


def _projected_corners(ids: np.ndarray, T_cam_board: np.ndarray, K: np.ndarray,
                       dist: np.ndarray | None) -> np.ndarray:
    rvec = cv2.Rodrigues(T_cam_board[:3, :3])[0]
    uv, _ = cv2.projectPoints(SPEC.corner_points_board()[ids], rvec, T_cam_board[:3, 3], K,
                              np.zeros(5) if dist is None else dist)
    return uv.reshape(-1, 2)


# --- board spec ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"marker_length_m": 0.05}, "marker_length_m.*less than"),
    ({"marker_length_m": 0.06}, "marker_length_m.*less than"),
    ({"square_length_m": 0.0}, "square_length_m"),
    ({"square_length_m": -0.05}, "square_length_m"),
    ({"marker_length_m": float("nan")}, "marker_length_m"),
    ({"squares_x": 1}, "squares_x"),
    ({"squares_y": 6.0}, "squares_y"),
    ({"dictionary": "DICT_5X5_99"}, "dictionary: expected one of"),
    ({"squares_x": 20, "squares_y": 20, "dictionary": "DICT_4X4_100"}, "holds 100 markers.*needs 200"),
])
def test_invalid_spec_raises_value_error(kwargs: dict, match: str) -> None:
    args = {"squares_x": 8, "squares_y": 6, "square_length_m": 0.05, "marker_length_m": 0.0375}
    with pytest.raises(ValueError, match=match):
        CharucoBoardSpec(**{**args, **kwargs})


def test_dictionary_sizes_match_opencv() -> None:
    for name, size in DICTIONARY_SIZES.items():
        dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, name))
        assert dictionary.bytesList.shape[0] == size, name


@pytest.mark.parametrize("spec", [SPEC, CharucoBoardSpec(5, 7, 0.03, 0.022, "DICT_4X4_50"),
                                  CharucoBoardSpec(6, 4, 0.04, 0.03, legacy_pattern=True)])
def test_corner_table_matches_opencv(spec: CharucoBoardSpec) -> None:
    board = spec.make_board()
    assert board.getLegacyPattern() == spec.legacy_pattern
    assert board.getChessboardSize() == (spec.squares_x, spec.squares_y)
    ours = spec.corner_points_board()
    assert ours.shape == (spec.n_corners, 3) and ours.dtype == np.float64
    np.testing.assert_allclose(ours, board.getChessboardCorners(), atol=1e-7)
    ids = np.array([3, 0, spec.n_corners - 1])
    obj, _ = board.matchImagePoints(np.zeros((3, 1, 2), np.float32), ids.reshape(-1, 1).astype(np.int32))
    np.testing.assert_allclose(obj.reshape(-1, 3), ours[ids], atol=1e-7)


def test_opencv_missing_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match=r"pip install pointworld\[capture\]"):
        SPEC.make_board()


# --- renderer ------------------------------------------------------------------------------------

@pytest.mark.parametrize("frac", [0.0, 0.15, 0.3, 0.5, 0.8])
def test_render_places_edges_exactly(frac: float) -> None:
    """Fronto-parallel board: the black/white edge found by summing pixel coverage lies where the
    pinhole model puts it (to 0.01 px), so the image is an exact box-filtered projection."""
    K = np.array([[600.0, 0.0, 100.0 + frac], [0.0, 600.0, 100.0], [0.0, 0.0, 1.0]])
    T = np.eye(4)
    T[2, 3] = 0.5  # board origin at pixel (100 + frac, 100); one square = 60 px
    img = render_board_view(SPEC, K, T, 480, 640).astype(np.float64)[..., 1] / 255.0
    # Top row: square 0 is black, square 1 white; edge at u = 100 + frac + 60, marker from +9 px.
    u_edge = 160.0 + frac
    row = img[130, 155:166]  # black then white
    assert abs(155 - 0.5 + (len(row) - row.sum()) - u_edge) < 0.01
    # Left board border against the 128-gray background, read down the first column of squares.
    col = img[130, 95:106] * 255.0 / 128.0  # 1 = background, 0 = black square
    assert abs(95 - 0.5 + col.sum() - (100.0 + frac)) < 0.01


def test_render_board_frame_follows_opencv_convention() -> None:
    """With R_cam_board = I the printed face is seen upright: OpenCV's own marker detector finds
    every marker where projectPoints puts its corners from board.getObjPoints()."""
    width, height, K = CAMERAS["vga"]
    T = _board_pose(0.0, (1.0, 0.0, 0.0), 0.6)
    img = render_board_view(SPEC, K, T, height, width)
    board = SPEC.make_board()
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    detector = cv2.aruco.ArucoDetector(board.getDictionary(), params)
    corners, ids, _ = detector.detectMarkers(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    assert ids is not None and sorted(ids.ravel().tolist()) == board.getIds().ravel().tolist()
    rvec = cv2.Rodrigues(T[:3, :3])[0]
    for c, marker_id in zip(corners, ids.ravel()):
        obj = board.getObjPoints()[int(np.flatnonzero(board.getIds().ravel() == marker_id)[0])]
        uv, _ = cv2.projectPoints(np.asarray(obj, np.float64), rvec, T[:3, 3], K, np.zeros(5))
        np.testing.assert_allclose(c.reshape(4, 2), uv.reshape(4, 2), atol=0.5)
    # The markers were detected (not mirrored) with this pose: the printed face is seen, so the
    # board's +z (the normal (0, 0, 1) in the camera frame) points away from the camera.
    assert T[:3, :3][2, 2] > 0


def test_render_distortion_path_matches_pinhole_path() -> None:
    width, height, K = CAMERAS["vga"]
    T = _board_pose(30.0, (1.0, 1.0, 0.0), 0.7)
    plain = render_board_view(SPEC, K, T, height, width)
    remapped = render_board_view(SPEC, K, T, height, width, dist_coeffs=np.array([1e-12, 0, 0, 0, 0]))
    diff = np.abs(plain.astype(int) - remapped)
    assert diff.max() <= 1 and diff.mean() < 1e-3


def test_render_rejects_bad_input() -> None:
    width, height, K = CAMERAS["vga"]
    behind = _board_pose(0.0, (1.0, 0.0, 0.0), -0.5)
    with pytest.raises(ValueError, match="T_cam_board.*in front"):
        render_board_view(SPEC, K, behind, height, width)
    with pytest.raises(ValueError, match="height"):
        render_board_view(SPEC, K, _board_pose(0.0, (1, 0, 0), 0.5), 0, width)
    with pytest.raises(ValueError, match="dist_coeffs"):
        render_board_view(SPEC, K, _board_pose(0.0, (1, 0, 0), 0.5), height, width,
                          dist_coeffs=np.zeros(4))
    with pytest.raises(ValueError, match="T_cam_board"):
        render_board_view(SPEC, K, np.diag([2.0, 1.0, 1.0, 1.0]), height, width)


# --- pose detection ------------------------------------------------------------------------------

POSES = [  # camera, tilt (deg), tilt axis in the camera frame, distance (m)
    ("vga", 10.0, (1.0, 0.0, 0.0), 0.4),
    ("vga", 30.0, (0.0, 1.0, 0.0), 0.8),
    ("vga", 45.0, (1.0, -0.5, 0.2), 0.6),
    ("vga", 45.0, (1.0, 1.0, 0.0), 1.2),
    ("vga", 20.0, (0.3, 1.0, 0.0), 1.2),
    ("hd", 10.0, (1.0, 0.0, 0.0), 0.4),
    ("hd", 30.0, (0.0, 1.0, 0.0), 0.8),
    ("hd", 45.0, (1.0, 1.0, 0.0), 1.2),
    ("hd", 40.0, (0.0, 1.0, 0.3), 1.2),
]


def _check_detection(img: np.ndarray, camera: str, T_true: np.ndarray, dist: np.ndarray | None
                     ) -> charuco.BoardObservation:
    width, height, K = CAMERAS[camera]
    obs = detect_board_pose(img, K, dist, SPEC)
    for T_est, T_ref in ((obs.T_cam_board, T_true),  # and the camera pose it implies in the world
                         (T_WORLD_BOARD @ _inv(obs.T_cam_board), T_WORLD_BOARD @ _inv(T_true))):
        dt_m, dr_rad = _errors(T_est, T_ref)
        assert dt_m <= TRANS_TOL_M and dr_rad <= ROT_TOL_RAD, (dt_m, np.rad2deg(dr_rad))
    assert obs.n_corners == len(obs.corner_ids) >= 20
    assert obs.corner_ids.dtype == np.int64 and obs.corners_px.shape == (obs.n_corners, 2)
    # detected corners sit where OpenCV projects the true corners
    truth = _projected_corners(obs.corner_ids, T_true, K, dist)
    assert np.abs(obs.corners_px - truth).max() < 0.3
    # the reported reprojection error agrees with OpenCV's projection of the estimated pose
    est = _projected_corners(obs.corner_ids, obs.T_cam_board, K, dist)
    rms = np.sqrt(np.mean(np.sum((est - obs.corners_px) ** 2, axis=-1)))
    assert obs.reprojection_error_px == pytest.approx(rms, abs=1e-6)
    assert obs.reprojection_error_px < 0.25
    return obs


@pytest.mark.parametrize("camera, tilt, axis, distance", POSES)
def test_detect_pose_clean(camera: str, tilt: float, axis: tuple, distance: float) -> None:
    width, height, K = CAMERAS[camera]
    T = _board_pose(tilt, axis, distance)
    _check_detection(render_board_view(SPEC, K, T, height, width), camera, T, None)


@pytest.mark.parametrize("camera, tilt, axis, distance", POSES[1::2])
def test_detect_pose_noise_and_blur(camera: str, tilt: float, axis: tuple, distance: float) -> None:
    width, height, K = CAMERAS[camera]
    T = _board_pose(tilt, axis, distance)
    img = render_board_view(SPEC, K, T, height, width, noise_std=2.0, blur_sigma_px=0.7, seed=3)
    _check_detection(img, camera, T, None)


@pytest.mark.parametrize("camera, tilt, axis, distance, offset", [
    ("vga", 10.0, (1.0, 0.0, 0.0), 0.5, (0.1, 0.05)), ("vga", 40.0, (0.0, 1.0, 0.0), 0.9, (0.2, 0.1)),
    ("hd", 45.0, (1.0, 1.0, 0.0), 1.2, (-0.3, 0.15)), ("hd", 20.0, (0.3, 1.0, 0.0), 1.0, (0.25, -0.1))])
def test_detect_pose_with_distortion(camera: str, tilt: float, axis: tuple, distance: float,
                                     offset: tuple) -> None:
    width, height, K = CAMERAS[camera]
    T = _board_pose(tilt, axis, distance, offset_m=offset)
    img = render_board_view(SPEC, K, T, height, width, dist_coeffs=DIST)
    obs = _check_detection(img, camera, T, DIST)
    # the distortion matters here: it moves the corners by several pixels
    ids = obs.corner_ids
    shift = _projected_corners(ids, T, K, DIST) - _projected_corners(ids, T, K, None)
    assert np.abs(shift).max() > 3.0


def test_blank_image_raises_board_not_found() -> None:
    width, height, K = CAMERAS["vga"]
    blank = np.full((height, width, 3), 128, np.uint8)
    with pytest.raises(BoardNotFoundError, match="found 0 ChArUco corners.*min_corners=6"):
        detect_board_pose(blank, K, None, SPEC)


def test_too_few_corners_raises_board_not_found() -> None:
    width, height, K = CAMERAS["vga"]
    img = render_board_view(SPEC, K, _board_pose(20.0, (1, 0, 0), 0.8), height, width)
    n = detect_board_pose(img, K, None, SPEC).n_corners
    with pytest.raises(BoardNotFoundError, match=f"found {n} ChArUco corners.*min_corners={n + 1}"):
        detect_board_pose(img, K, None, SPEC, min_corners=n + 1)
    other_board = CharucoBoardSpec(8, 6, 0.05, 0.0375, "DICT_6X6_250")  # markers do not decode
    with pytest.raises(BoardNotFoundError, match="found 0"):
        detect_board_pose(img, K, None, other_board)


def test_detect_rejects_bad_input() -> None:
    width, height, K = CAMERAS["vga"]
    img = np.zeros((height, width, 3), np.uint8)
    with pytest.raises(ValueError, match="rgb"):
        detect_board_pose(img.astype(np.float32), K, None, SPEC)
    with pytest.raises(ValueError, match="min_corners"):
        detect_board_pose(img, K, None, SPEC, min_corners=3)
    bad_K = K.copy()
    bad_K[0, 0] = -1.0
    with pytest.raises(ValueError, match="K"):
        detect_board_pose(img, bad_K, None, SPEC)
    with pytest.raises(ValueError, match="dist_coeffs"):
        detect_board_pose(img, K, np.full(5, np.nan), SPEC)
    with pytest.raises(ValueError, match=r"K: expected one \(3, 3\)"):
        detect_board_pose(img, K[None], None, SPEC)


# --- camera extrinsics ---------------------------------------------------------------------------



def _frames(T_cam_board: np.ndarray, camera: str, seeds: list[int], serial: str = "cam0",
            dist: np.ndarray | None = None) -> list[RGBDFrame]:
    width, height, K = CAMERAS[camera]
    out = []
    for seed in seeds:
        img = render_board_view(SPEC, K, T_cam_board, height, width, dist_coeffs=dist,
                                noise_std=2.0, blur_sigma_px=0.6, seed=seed)
        out.append(RGBDFrame(img, np.zeros((height, width), np.float32), K, np.eye(4), serial,
                             dist_coeffs=np.zeros(5) if dist is None else dist))
    return out


@pytest.mark.parametrize("camera, tilt, axis, distance, dist", [
    ("hd", 35.0, (1.0, 0.2, 0.0), 1.0, None), ("hd", 40.0, (0.2, 1.0, 0.0), 1.2, DIST),
    ("vga", 25.0, (0.0, 1.0, 0.1), 0.7, DIST)])
def test_calibrate_camera_extrinsics(camera: str, tilt: float, axis: tuple, distance: float,
                                     dist: np.ndarray | None) -> None:
    T_cam_board = _board_pose(tilt, axis, distance)
    T_world_cam_true = T_WORLD_BOARD @ _inv(T_cam_board)
    cal = calibrate_camera_extrinsics(_frames(T_cam_board, camera, [1, 2, 3], dist=dist), SPEC,
                                      T_WORLD_BOARD)
    dt_m, dr_rad = _errors(cal.T_world_cam, T_world_cam_true)
    assert dt_m <= TRANS_TOL_M and dr_rad <= ROT_TOL_RAD, (dt_m, np.rad2deg(dr_rad))
    assert cal.serial == "cam0" and cal.method == "charuco"
    assert 0 < cal.reprojection_error_px < 0.3
    np.testing.assert_array_equal(cal.T_world_board, T_WORLD_BOARD)
    np.testing.assert_array_equal(cal.K, CAMERAS[camera][2])


def test_calibrate_single_frame_matches_detection() -> None:
    T_cam_board = _board_pose(30.0, (0.0, 1.0, 0.0), 0.8)
    frames = _frames(T_cam_board, "hd", [5])
    obs = detect_board_pose(frames[0].rgb, frames[0].K, None, SPEC)
    cal = calibrate_camera_extrinsics(frames, SPEC, T_WORLD_BOARD)
    np.testing.assert_allclose(cal.T_world_cam, T_WORLD_BOARD @ _inv(obs.T_cam_board), atol=1e-12)
    assert cal.reprojection_error_px == pytest.approx(obs.reprojection_error_px, rel=1e-9)


def test_calibrate_drops_outlier_frame_and_skips_blank_frames(caplog: pytest.LogCaptureFixture) -> None:
    T_cam_board = _board_pose(30.0, (1.0, 0.0, 0.0), 0.8)
    bumped = T_cam_board.copy()
    bumped[:3, 3] += [0.03, 0.0, 0.0]  # the camera was knocked 3 cm during one frame
    frames = _frames(T_cam_board, "hd", [1, 2, 3]) + _frames(bumped, "hd", [4])
    blank = RGBDFrame(np.full_like(frames[0].rgb, 90), frames[0].depth, frames[0].K, np.eye(4), "cam0")
    with caplog.at_level("WARNING"):
        cal = calibrate_camera_extrinsics(frames + [blank], SPEC, T_WORLD_BOARD)
    assert "frame 4" in caplog.text and "found 0" in caplog.text
    dt_m, dr_rad = _errors(cal.T_world_cam, T_WORLD_BOARD @ _inv(T_cam_board))
    assert dt_m <= 1e-3 and dr_rad <= ROT_TOL_RAD  # the 3 cm frame would pull the mean by 7.5 mm


def test_calibrate_rejects_bad_input() -> None:
    frames = _frames(_board_pose(20.0, (1.0, 0.0, 0.0), 0.6), "vga", [1])
    blank = RGBDFrame(np.zeros_like(frames[0].rgb), frames[0].depth, frames[0].K, np.eye(4), "cam0")
    with pytest.raises(BoardNotFoundError, match="none of 2 frames.*'cam0'"):
        calibrate_camera_extrinsics([blank, blank], SPEC, T_WORLD_BOARD)
    other = RGBDFrame(frames[0].rgb, frames[0].depth, frames[0].K, np.eye(4), "cam1")
    with pytest.raises(ValueError, match="single camera.*cam0.*cam1"):
        calibrate_camera_extrinsics(frames + [other], SPEC, T_WORLD_BOARD)
    with pytest.raises(TypeError, match="frames"):
        calibrate_camera_extrinsics([], SPEC, T_WORLD_BOARD)
    with pytest.raises(ValueError, match="T_world_board"):
        calibrate_camera_extrinsics(frames, SPEC, np.diag([1.0, 1.0, 2.0, 1.0]))


def test_average_poses_is_the_symmetric_mean() -> None:
    """Rotations spread symmetrically about R0 (and translations about t0) average back to them."""
    R0 = axis_angle_to_matrix(torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64))
    delta = axis_angle_to_matrix(torch.tensor([[0.1, 0.0, 0.05], [-0.1, 0.0, -0.05],
                                               [0.0, 0.2, 0.0], [0.0, -0.2, 0.0]], dtype=torch.float64))
    T = torch.eye(4, dtype=torch.float64).repeat(4, 1, 1)
    T[:, :3, :3] = R0 @ delta
    T[:, :3, 3] = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64) + torch.tensor(
        [[0.01, 0, 0], [-0.01, 0, 0], [0, 0.02, 0], [0, -0.02, 0]], dtype=torch.float64)
    mean = charuco._average_poses(T, torch.ones(4, dtype=torch.float64))
    assert float(rotation_angle(mean[:3, :3], R0)) < 1e-12
    np.testing.assert_allclose(mean[:3, 3].numpy(), [1.0, 2.0, 3.0], atol=1e-15)
