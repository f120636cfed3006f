"""Scene capture directory format: exact round trips, depth quantization, atomic writes, and a
CaptureFormatError for every kind of damage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pointworld.capture import storage
from pointworld.capture.frame import RGBDFrame, SceneCapture
from pointworld.capture.storage import depth_to_png_units, load_capture, save_capture
from pointworld.errors import CaptureFormatError


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def make_frame(serial: str, seed: int, height: int = 24, width: int = 32) -> RGBDFrame:
    """A frame with awkward floats everywhere and every kind of invalid depth."""
    rng = np.random.default_rng(seed)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = _rotation(rng), rng.normal(size=3)
    K = np.array([[500.0 + rng.random(), 0.1 * rng.random(), width / 2 + rng.random()],
                  [0.0, 501.0 + rng.random(), height / 2 + rng.random()], [0.0, 0.0, 1.0]])
    depth = rng.uniform(0.1, 3.0, (height, width)).astype(np.float32)
    depth[0, :6] = [np.nan, np.inf, -np.inf, 0.0, -0.5, 70.0]
    return RGBDFrame(rgb=rng.integers(0, 256, (height, width, 3), dtype=np.uint8), depth=depth, K=K,
                     T_world_cam=T, serial=serial, timestamp_s=1.7e9 + rng.random(),
                     dist_coeffs=rng.normal(scale=0.05, size=5))


@pytest.fixture
def capture() -> SceneCapture:
    return SceneCapture((make_frame("101622071234", 0), make_frame("cam-B_2", 1, 20, 28)))


def test_round_trip_is_exact_except_depth_quantization(tmp_path, capture):
    path = save_capture(capture, tmp_path / "cap")
    assert path == tmp_path / "cap"
    loaded = load_capture(path)
    assert loaded.serials == capture.serials
    for a, b in zip(capture.frames, loaded.frames):
        np.testing.assert_array_equal(b.rgb, a.rgb)
        for name in ("K", "T_world_cam", "dist_coeffs"):
            np.testing.assert_array_equal(getattr(b, name), getattr(a, name))
        assert b.timestamp_s == a.timestamp_s
        assert b.depth.dtype == np.float32
        valid = np.isfinite(a.depth) & (a.depth > 0) & (a.depth <= 65.535)
        np.testing.assert_array_less(np.abs(b.depth[valid] - a.depth[valid]), 0.0005 + 1e-6)
        assert np.all(b.depth[~valid] == 0.0)  # invalid stays invalid as 0 m
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap"]  # no temporary leftovers


def test_pngs_read_back_by_opencv(tmp_path, capture):
    """An independent decoder sees 16-bit millimetres and the RGB image."""
    import cv2
    path = save_capture(capture, tmp_path / "cap")
    frame = capture.frames[0]
    depth_png = cv2.imread(str(path / f"{frame.serial}_depth.png"), cv2.IMREAD_UNCHANGED)
    color_png = cv2.imread(str(path / f"{frame.serial}_color.png"), cv2.IMREAD_UNCHANGED)
    assert depth_png.dtype == np.uint16
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(frame.depth) & (frame.depth > 0) & (frame.depth <= 65.535)
    np.testing.assert_array_equal(depth_png[valid], np.round(frame.depth[valid] * 1000.0))
    np.testing.assert_array_equal(color_png[..., ::-1], frame.rgb)
    meta = json.loads((path / "capture.json").read_text())
    assert meta["format"] == "pointworld.scene_capture" and meta["format_version"] == 1
    assert meta["frames"][1]["width"] == 28 and meta["frames"][1]["depth_scale_m"] == 0.001


def test_depth_to_png_units_edges():
    depth = np.array([0.0004, 0.0005001, 1.2344, 65.535, 65.5356, 100.0, np.nan, -1.0, np.inf])
    np.testing.assert_array_equal(depth_to_png_units(depth, 0.001), [0, 1, 1234, 65535, 0, 0, 0, 0, 0])
    assert depth_to_png_units(depth, 0.001).dtype == np.uint16


def test_finer_depth_scale_round_trips_to_its_quantum(tmp_path, capture):
    loaded = load_capture(save_capture(capture, tmp_path / "cap", depth_scale_m=1e-4))
    a, b = capture.frames[0].depth, loaded.frames[0].depth
    valid = np.isfinite(a) & (a > 0) & (a <= 6.5535)
    np.testing.assert_array_less(np.abs(b[valid] - a[valid]), 0.00005 + 1e-6)
    with pytest.raises(ValueError, match="depth_scale_m"):
        save_capture(capture, tmp_path / "bad", depth_scale_m=0.0)


def test_existing_directory_needs_overwrite(tmp_path, capture):
    path = save_capture(capture, tmp_path / "cap", overwrite=True)  # nothing to replace yet: fine
    with pytest.raises(FileExistsError, match=str(path)):
        save_capture(capture, path)
    other = SceneCapture((make_frame("only", 7),))
    save_capture(other, path, overwrite=True)
    assert load_capture(path).serials == ["only"]
    assert not (path / f"{capture.serials[0]}_color.png").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap"]


def test_overwrite_refuses_a_directory_that_is_not_a_capture(tmp_path, capture):
    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a scene capture"):
        save_capture(capture, precious, overwrite=True)
    assert (precious / "thesis.txt").read_text() == "keep me"


def _failing_writer(monkeypatch, fail_at: int) -> None:
    real, calls = storage._write_png, []

    def writer(path: Path, image: np.ndarray) -> None:
        calls.append(path)
        if len(calls) == fail_at:
            raise OSError("disk full (simulated)")
        real(path, image)

    monkeypatch.setattr(storage, "_write_png", writer)


def test_failed_overwrite_leaves_the_old_capture_intact(tmp_path, capture, monkeypatch):
    path = save_capture(capture, tmp_path / "cap")
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    _failing_writer(monkeypatch, fail_at=3)  # after the first frame's two PNGs
    with pytest.raises(OSError, match="simulated"):
        save_capture(SceneCapture((make_frame("x", 5), make_frame("y", 6))), path, overwrite=True)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert load_capture(path).serials == capture.serials
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cap"]


def test_failed_new_save_leaves_nothing_under_the_final_name(tmp_path, capture, monkeypatch):
    _failing_writer(monkeypatch, fail_at=2)
    with pytest.raises(OSError, match="simulated"):
        save_capture(capture, tmp_path / "cap")
    assert list(tmp_path.iterdir()) == []


def test_bad_arguments(tmp_path, capture):
    with pytest.raises(TypeError, match="capture"):
        save_capture([capture.frames[0]], tmp_path / "cap")
    with pytest.raises(ValueError, match="cannot name a file"):
        save_capture(SceneCapture((make_frame("../evil", 0),)), tmp_path / "cap")
    with pytest.raises(FileNotFoundError, match="parent"):
        save_capture(capture, tmp_path / "missing" / "cap")


# --- damage: each case edits a saved capture and expects a CaptureFormatError naming the problem ---

def _edit_json(path: Path, edit) -> None:
    meta = json.loads((path / "capture.json").read_text())
    edit(meta)
    (path / "capture.json").write_text(json.dumps(meta))


def _truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])


def _serial0(path: Path) -> str:
    return json.loads((path / "capture.json").read_text())["frames"][0]["serial"]


DAMAGE = {
    "missing capture.json": (lambda p: (p / "capture.json").unlink(), "missing capture.json"),
    "invalid JSON": (lambda p: (p / "capture.json").write_text('{"format": '), "invalid JSON"),
    "not an object": (lambda p: (p / "capture.json").write_text("[1, 2]"), "expected format"),
    "wrong format": (lambda p: _edit_json(p, lambda m: m.update(format="other")), "'other'"),
    "wrong version": (lambda p: _edit_json(p, lambda m: m.update(format_version=2)),
                      "format_version 1, got 2"),
    "no frames": (lambda p: _edit_json(p, lambda m: m.update(frames=[])), "non-empty list"),
    "missing key": (lambda p: _edit_json(p, lambda m: m["frames"][1].pop("K")), r"frames\[1\].*'K'"),
    "missing color png": (lambda p: (p / f"{_serial0(p)}_color.png").unlink(), "missing"),
    "truncated depth png": (lambda p: _truncate(p / f"{_serial0(p)}_depth.png"), "truncated"),
    "truncated color png": (lambda p: _truncate(p / f"{_serial0(p)}_color.png"), "truncated"),
    "header only": (lambda p: (p / f"{_serial0(p)}_depth.png").write_bytes(
        (p / f"{_serial0(p)}_depth.png").read_bytes()[:40]), "truncated"),
    "not a png": (lambda p: (p / f"{_serial0(p)}_depth.png").write_bytes(b"hello"), "not a PNG"),
    "8-bit depth": (lambda p: Image.fromarray(np.zeros((24, 32), np.uint8)).save(
        p / f"{_serial0(p)}_depth.png"), "16-bit grayscale"),
    "rgba color": (lambda p: Image.fromarray(np.zeros((24, 32, 4), np.uint8)).save(
        p / f"{_serial0(p)}_color.png"), "8-bit RGB"),
    "size mismatch": (lambda p: _edit_json(p, lambda m: m["frames"][0].update(width=33)),
                      "32x24 px but capture.json says 33x24"),
    "bad width": (lambda p: _edit_json(p, lambda m: m["frames"][0].update(width="32")), "width"),
    "bad scale": (lambda p: _edit_json(p, lambda m: m["frames"][0].update(depth_scale_m=-1)),
                  "depth_scale_m"),
    "path escape": (lambda p: _edit_json(p, lambda m: m["frames"][0].update(color_file="../x.png")),
                    "file name inside"),
    "non-rigid pose": (lambda p: _edit_json(p, lambda m: m["frames"][0]["T_world_cam"][0].__setitem__(
        0, 2.0)), "T_world_cam"),
    "duplicate serial": (lambda p: _edit_json(p, lambda m: m["frames"][1].update(
        serial=m["frames"][0]["serial"], color_file=m["frames"][0]["color_file"],
        depth_file=m["frames"][0]["depth_file"], width=32, height=24)), "unique"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_capture_raises_capture_format_error(tmp_path, capture, case):
    path = save_capture(capture, tmp_path / "cap")
    damage, match = DAMAGE[case]
    damage(path)
    with pytest.raises(CaptureFormatError, match=match) as info:
        load_capture(path)
    assert str(path) in str(info.value)


def test_missing_directory(tmp_path):
    with pytest.raises(CaptureFormatError, match="not a directory"):
        load_capture(tmp_path / "nowhere")
