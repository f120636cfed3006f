"""Calibration file: round trips, merge, atomic writes, and every kind of bad file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

import pointworld.atomic as atomic_mod
from pointworld.capture.calibration import (CameraCalibration, extrinsics_for, load_calibration,
                                            save_calibration)
from pointworld.errors import CalibrationError


def _pose(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = q, rng.uniform(-1, 1, 3)
    return T


def _full(serial: str, seed: int) -> CameraCalibration:
    K = np.array([[612.3456789, 0.0, 321.5], [0.0, 611.0, 239.25], [0.0, 0.0, 1.0]])
    dist = np.array([0.1, -0.2, 1e-3, 2e-4, 0.03])
    return CameraCalibration(serial, _pose(seed), K=K, dist_coeffs=dist,
                             reprojection_error_px=0.123, T_world_board=_pose(seed + 100),
                             method="charuco", created="2026-01-30T10:00:00+00:00")


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


GOOD_ENTRY = """\
format: pointworld-calibration
version: 1
frame: world
cameras:
  '042':
    T_world_cam: [[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 1.25], [0, 0, 0, 1]]
    created: 2026-01-30 10:00:00
...
"""


def test_round_trip_is_exact(tmp_path: Path) -> None:
    cams = {s: _full(s, i) for i, s in enumerate(["123622270372", "0042"])}
    path = save_calibration(tmp_path / "sub" / "calib.yaml", cams)
    loaded = load_calibration(path)
    assert sorted(loaded) == sorted(cams)
    for serial, cal in cams.items():
        got = loaded[serial]
        for field in ("T_world_cam", "K", "dist_coeffs", "T_world_board"):
            np.testing.assert_array_equal(getattr(got, field), getattr(cal, field))  # repr round trip
        assert got.reprojection_error_px == cal.reprojection_error_px
        assert (got.method, got.created) == (cal.method, cal.created)
    doc = yaml.safe_load(path.read_text())  # plain YAML readable by any tool
    assert (doc["format"], doc["version"], doc["frame"]) == ("pointworld-calibration", 1, "world")
    assert set(doc["cameras"]) == {"123622270372", "0042"}  # serials stay strings, leading 0 kept


def test_hand_written_minimal_file(tmp_path: Path) -> None:
    cams = load_calibration(_write(tmp_path / "c.yaml", GOOD_ENTRY))
    cal = cams["042"]
    np.testing.assert_array_equal(cal.T_world_cam[:3, 3], [0.5, 0.0, 1.25])
    assert cal.K is None and cal.dist_coeffs is None and cal.reprojection_error_px is None
    assert cal.method == "manual" and cal.created.startswith("2026-01-30T10:00:00")
    np.testing.assert_array_equal(extrinsics_for(tmp_path / "c.yaml", "042"), cal.T_world_cam)


def test_created_is_filled_in_on_save(tmp_path: Path) -> None:
    save_calibration(tmp_path / "c.yaml", [CameraCalibration("a", np.eye(4))])
    created = load_calibration(tmp_path / "c.yaml")["a"].created
    assert created is not None and "+00:00" in created


def test_merge_keeps_other_serials_and_replaces_same(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    save_calibration(path, [_full("A", 1), _full("B", 2)])
    save_calibration(path, [_full("B", 3), _full("C", 4)])  # merge=True by default
    cams = load_calibration(path)
    assert sorted(cams) == ["A", "B", "C"]
    np.testing.assert_array_equal(cams["A"].T_world_cam, _pose(1))
    np.testing.assert_array_equal(cams["B"].T_world_cam, _pose(3))
    save_calibration(path, [_full("D", 5)], merge=False)
    assert sorted(load_calibration(path)) == ["D"]


def test_merge_refuses_to_overwrite_a_corrupt_file(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.yaml", "cameras: [unclosed\n")
    with pytest.raises(CalibrationError, match="not valid YAML|truncated"):
        save_calibration(path, [_full("A", 1)])
    assert path.read_text() == "cameras: [unclosed\n"
    save_calibration(path, [_full("A", 1)], merge=False)
    assert sorted(load_calibration(path)) == ["A"]


@pytest.mark.parametrize("failing", ["write", "replace"])
def test_atomic_save_keeps_old_file_on_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               failing: str) -> None:
    path = tmp_path / "c.yaml"
    save_calibration(path, [_full("A", 1)])
    before = path.read_bytes()
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, text: str) -> int:
            self.fh.write(text[: len(text) // 2])
            self.fh.flush()
            raise OSError("No space left on device")

    def fail_replace(src, dst):
        raise OSError("simulated rename failure")

    if failing == "write":
        monkeypatch.setattr(atomic_mod.os, "fdopen", lambda *a, **k: HalfWriter(real_fdopen(*a, **k)))
    else:
        monkeypatch.setattr(atomic_mod.os, "replace", fail_replace)
    with pytest.raises(OSError, match="No space|rename"):
        save_calibration(path, [_full("B", 2)])
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.yaml"]  # temp file cleaned up
    assert sorted(load_calibration(path)) == ["A"]


def test_missing_file_names_path(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(CalibrationError, match="nope.yaml.*not found") as info:
        load_calibration(path)
    assert isinstance(info.value, ValueError) and isinstance(info.value.__cause__, FileNotFoundError)
    with pytest.raises(CalibrationError, match="not found"):
        extrinsics_for(path, "A")


def test_every_truncation_is_detected(tmp_path: Path) -> None:
    path = save_calibration(tmp_path / "c.yaml", [_full("A", 1), _full("B", 2)])
    text = path.read_text()
    cuts = [i for i, ch in enumerate(text) if ch == "\n"][:-1] + list(range(0, len(text) - 1, 37))
    for cut in cuts:
        _write(tmp_path / "t.yaml", text[:cut + 1])
        with pytest.raises(CalibrationError):
            load_calibration(tmp_path / "t.yaml")


@pytest.mark.parametrize("text, match", [
    ("cameras: [unclosed\n...\n", "not valid YAML"),
    ("", "truncated"),
    ("- just\n- a list\n...\n", "expected a YAML mapping"),
    (GOOD_ENTRY.replace("pointworld-calibration", "other-format"), "format"),
    (GOOD_ENTRY.replace("version: 1", "version: 2"), "version: expected 1, got 2"),
    (GOOD_ENTRY.replace("version: 1", "version: '1'"), "version"),
    (GOOD_ENTRY.replace("version: 1", "version: true"), "version"),
    (GOOD_ENTRY.replace("frame: world", "frame: base"), "frame"),
    (GOOD_ENTRY.replace("  '042':\n", "  042:\n"), "quoted string"),
    (GOOD_ENTRY.replace("[1, 0, 0, 0.5]", "[2, 0, 0, 0.5]"), r"'042'.*T_world_cam.*rigid"),
    (GOOD_ENTRY.replace("[1, 0, 0, 0.5]", "[.nan, 0, 0, 0.5]"), r"'042'.*T_world_cam.*finite"),
    (GOOD_ENTRY.replace(", [0, 0, 0, 1]]", "]"), r"'042'.*T_world_cam.*shape"),
    (GOOD_ENTRY.replace("[1, 0, 0, 0.5]", "[1, 0, 0]"), r"'042'.*T_world_cam"),
    (GOOD_ENTRY.replace("    created", "    K: [[600, 0, 320], [0, 600, 240]]\n    created"),
     r"'042'.*K.*shape"),
    (GOOD_ENTRY.replace("    created", "    K: [[-600, 0, 320], [0, 600, 240], [0, 0, 1]]\n    created"),
     r"'042'.*K"),
    (GOOD_ENTRY.replace("    created", "    dist_coeffs: [0, 0, 0]\n    created"),
     r"'042'.*dist_coeffs"),
    (GOOD_ENTRY.replace("    created", "    reprojection_error_px: -1\n    created"),
     r"'042'.*reprojection_error_px"),
    (GOOD_ENTRY.replace("    created", "    T_world_camm: 1\n    created"),
     r"'042'.*unknown field.*T_world_camm"),
    (GOOD_ENTRY.replace("    T_world_cam:", "    K:"), r"'042'.*T_world_cam.*missing"),
    (GOOD_ENTRY.replace("created: 2026-01-30 10:00:00", "created: yesterday"), r"'042'.*created"),
    (GOOD_ENTRY.replace("cameras:\n", "cameras: 3\n").split("  '042'")[0] + "...\n", "cameras"),
])
def test_bad_files_raise_calibration_error(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(CalibrationError, match=match):
        load_calibration(_write(tmp_path / "bad.yaml", text))


def test_unknown_serial_lists_known_ones(tmp_path: Path) -> None:
    path = save_calibration(tmp_path / "c.yaml", [_full("A", 1), _full("B", 2)])
    with pytest.raises(CalibrationError, match=r"'Z'.*\['A', 'B'\]"):
        extrinsics_for(path, "Z")
    cams = load_calibration(path)
    with pytest.raises(CalibrationError, match=r"'Z'.*\['A', 'B'\]"):
        extrinsics_for(cams, "Z")
    T = extrinsics_for(cams, "A")
    T[0, 0] = 5.0  # a copy: the loaded calibration is untouched
    np.testing.assert_array_equal(cams["A"].T_world_cam, _pose(1))


def test_camera_calibration_validation() -> None:
    bad_rot = np.eye(4)
    bad_rot[:3, :3] *= 1.01
    with pytest.raises(ValueError, match="T_world_cam.*rigid"):
        CameraCalibration("a", bad_rot)
    with pytest.raises(ValueError, match="T_world_cam.*shape"):
        CameraCalibration("a", np.eye(3))
    with pytest.raises(ValueError, match="serial"):
        CameraCalibration("", np.eye(4))
    with pytest.raises(ValueError, match="reprojection_error_px"):
        CameraCalibration("a", np.eye(4), reprojection_error_px=float("nan"))
    with pytest.raises(ValueError, match="created"):
        CameraCalibration("a", np.eye(4), created="30/01/2026")
    with pytest.raises(ValueError, match="T_world_board"):
        CameraCalibration("a", np.eye(4), T_world_board=np.full((4, 4), np.inf))
    cal = CameraCalibration("a", np.eye(4).astype(np.float32).tolist())
    assert cal.T_world_cam.dtype == np.float64 and cal.T_world_cam.shape == (4, 4)


def test_save_rejects_bad_collections(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="more than once"):
        save_calibration(tmp_path / "c.yaml", [_full("A", 1), _full("A", 2)])
    with pytest.raises(ValueError, match="differs from its serial"):
        save_calibration(tmp_path / "c.yaml", {"B": _full("A", 1)})
    with pytest.raises(TypeError, match="CameraCalibration"):
        save_calibration(tmp_path / "c.yaml", [np.eye(4)])
    assert not (tmp_path / "c.yaml").exists()


def test_calibration_module_needs_no_opencv() -> None:
    code = ("import sys; sys.modules['cv2'] = None\n"
            "import numpy as np\n"
            "from pointworld.capture.calibration import CameraCalibration\n"
            "CameraCalibration('a', np.eye(4))\n"
            "assert sys.modules['cv2'] is None\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
