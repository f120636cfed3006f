"""RGBDFrame / SceneCapture: validation of every field, stacking, lookup by serial."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointworld.capture.frame import RGBDFrame, SceneCapture

K = np.array([[600.0, 0.0, 319.5], [0.0, 600.0, 239.5], [0.0, 0.0, 1.0]])


def _frame(serial: str = "cam0", h: int = 48, w: int = 64, **overrides) -> RGBDFrame:
    rng = np.random.default_rng(0)
    args = dict(rgb=rng.integers(0, 255, (h, w, 3), dtype=np.uint8),
                depth=rng.uniform(0.3, 2.0, (h, w)).astype(np.float32), K=K, T_world_cam=np.eye(4),
                serial=serial, timestamp_s=1.5)
    args.update(overrides)
    return RGBDFrame(**args)


def test_valid_frame_normalizes_dtypes():
    f = _frame(depth=np.full((48, 64), 1.0), K=K.astype(np.float32), dist_coeffs=[0.1, 0, 0, 0, 0])
    assert f.depth.dtype == np.float32 and f.K.dtype == np.float64
    assert f.dist_coeffs.dtype == np.float64 and (f.height, f.width) == (48, 64)


def test_invalid_depth_values_are_kept_not_rejected():
    depth = np.ones((48, 64), np.float32)
    depth[0, :4] = [np.nan, np.inf, -1.0, 0.0]
    f = _frame(depth=depth)
    assert np.isnan(f.depth[0, 0]) and np.isinf(f.depth[0, 1]) and f.depth[0, 2] == -1.0


@pytest.mark.parametrize("field, value, words", [
    ("rgb", np.zeros((48, 64, 3), np.float32), ["rgb", "uint8"]),
    ("rgb", np.zeros((48, 64), np.uint8), ["rgb", "(H, W, 3)"]),
    ("depth", np.zeros((48, 64), np.uint16), ["depth", "metres"]),
    ("depth", np.zeros((24, 64), np.float32), ["depth", "(48, 64)"]),
    ("K", np.eye(3)[:2], ["K", "(3, 3)"]),
    ("K", np.diag([-600.0, 600.0, 1.0]), ["K"]),
    ("K", np.full((3, 3), np.nan), ["K"]),
    ("T_world_cam", np.diag([2.0, 1.0, 1.0, 1.0]), ["T_world_cam"]),
    ("T_world_cam", np.full((4, 4), np.inf), ["T_world_cam"]),
    ("T_world_cam", np.eye(3), ["T_world_cam", "(4, 4)"]),
    ("dist_coeffs", [0.0, 0.0, np.nan, 0.0, 0.0], ["dist_coeffs"]),
    ("dist_coeffs", [0.0, 0.0], ["dist_coeffs", "(5,)"]),
    ("serial", "", ["serial"]),
    ("timestamp_s", float("nan"), ["timestamp_s"]),
    ("timestamp_s", "yesterday", ["timestamp_s"]),
])
def test_bad_fields_name_the_argument(field, value, words):
    with pytest.raises((ValueError, TypeError)) as info:
        _frame(**{field: value})
    for word in words:
        assert word in str(info.value)


def test_with_pose_returns_a_new_validated_frame():
    f = _frame()
    T = np.eye(4)
    T[:3, 3] = [0.1, 0.2, 0.3]
    g = f.with_pose(T)
    np.testing.assert_array_equal(g.T_world_cam, T)
    np.testing.assert_array_equal(f.T_world_cam, np.eye(4))
    with pytest.raises(ValueError, match="T_world_cam"):
        f.with_pose(np.zeros((4, 4)))


def test_scene_capture_lookup_and_stacking():
    frames = (_frame("a"), _frame("b"))
    capture = SceneCapture(frames)
    assert capture.serials == ["a", "b"] and capture.frame("b") is frames[1]
    with pytest.raises(KeyError, match="'zz'.*\\['a', 'b'\\]"):
        capture.frame("zz")
    stacked = capture.stacked(torch.float64)
    assert stacked["rgb"].shape == (2, 48, 64, 3) and stacked["rgb"].dtype == torch.uint8
    assert stacked["depth"].dtype == torch.float64 and stacked["K"].shape == (2, 3, 3)
    np.testing.assert_array_equal(stacked["depth"][1].numpy(), frames[1].depth)


def test_scene_capture_rejects_bad_frame_sets():
    with pytest.raises(ValueError, match="at least one"):
        SceneCapture(())
    with pytest.raises(ValueError, match="unique"):
        SceneCapture((_frame("a"), _frame("a")))
    with pytest.raises(TypeError, match="frames\\[1\\]"):
        SceneCapture((_frame("a"), "not a frame"))
    mixed = SceneCapture((_frame("a"), _frame("b", h=24, w=32)))
    with pytest.raises(ValueError, match="one image size"):
        mixed.stacked()
