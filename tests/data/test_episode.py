"""Episode format: validation, exact HDF5 round trip, lazy reads, corrupt files, atomic writes, summary."""

from __future__ import annotations

import dataclasses
import json

import h5py
import numpy as np
import pytest

import pointworld.atomic as atomic
from pointworld.data.episode import Clip, Episode, EpisodeCameras
from pointworld.data.episode_io import (episode_summary, list_episodes, moved_mask, read_clip,
                                        read_episode, write_episode)
from pointworld.errors import EpisodeFormatError

V, H, W, S, J, T = 2, 6, 8, 20, 3, 4


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def make_cameras(rng: np.random.Generator) -> EpisodeCameras:
    K = np.array([[50.0, 0, 3.5], [0, 51.0, 2.5], [0, 0, 1]])
    T_world_cam = np.stack([np.eye(4)] * V)
    for v in range(V):
        T_world_cam[v, :3, :3], T_world_cam[v, :3, 3] = _rotation(rng), rng.normal(size=3)
    return EpisodeCameras(serials=("cam0", "cam1"), K=np.stack([K] * V), T_world_cam=T_world_cam,
                          height=H, width=W)


def make_clip(rng: np.random.Generator, start_step: int, n: int, seg: bool = True) -> Clip:
    depth = rng.uniform(0.3, 2.0, size=(V, H, W)).astype(np.float32)
    depth[0, 0, :3] = np.nan  # missing measurements are allowed in depth only
    pts = rng.normal(size=(n, 3)).astype(np.float32)
    positions = np.repeat(pts[None], T + 1, axis=0)
    positions[:, : n // 2] += np.linspace(0, 0.05, T + 1, dtype=np.float32)[:, None, None]
    valid = np.ones((T + 1, n), bool)
    valid[-1, -1] = False
    return Clip(start_step=start_step, rgb=rng.integers(0, 256, (V, H, W, 3), dtype=np.uint8),
                depth=depth, points_world=pts, colors=rng.integers(0, 256, (n, 3), dtype=np.uint8),
                view_index=rng.integers(0, V, n), pixel_index=rng.integers(0, H * W, n),
                body_id=rng.integers(-1, 5, n), positions=positions, valid=valid,
                segmentation=rng.integers(-1, 5, (V, H, W)).astype(np.int32) if seg else None)


def make_episode(seed: int = 0, **overrides) -> Episode:
    rng = np.random.default_rng(seed)
    scene = json.dumps({"objects": [{"name": "box0", "shape": "box", "size_m": [0.05, 0.1, 0.04]}]})
    T_base = np.eye(4)
    T_base[:3, 3] = [0.1, -0.2, 0.0]
    fields = dict(robot_name="franka_panda", urdf_id="franka_panda", control_dt_s=0.1, seed=seed,
                  created="2026-11-21T11:00:00+00:00", source="sim", scene=scene,
                  joint_names=("j1", "j2", "j3"),
                  joint_positions=rng.normal(size=(S, J)).astype(np.float32),
                  gripper_open=rng.uniform(0, 1, S).astype(np.float32), cameras=make_cameras(rng),
                  horizon=T, clips=(make_clip(rng, 0, 7), make_clip(rng, S - 1 - T, 5, seg=False)),
                  T_world_base=T_base, split_hint="train")
    fields.update(overrides)
    return Episode(**fields)


def assert_clips_equal(a: Clip, b: Clip) -> None:
    for f in dataclasses.fields(Clip):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y, f.name


def assert_episodes_equal(a: Episode, b: Episode) -> None:
    for f in dataclasses.fields(Episode):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if f.name == "clips":
            assert len(x) == len(y)
            for cx, cy in zip(x, y):
                assert_clips_equal(cx, cy)
        elif f.name == "cameras":
            assert x.serials == y.serials and (x.height, x.width) == (y.height, y.width)
            for key in ("K", "T_world_cam", "dist_coeffs"):
                np.testing.assert_array_equal(getattr(x, key), getattr(y, key))
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y and type(x) is type(y), f.name


@pytest.mark.parametrize("compression", ["gzip", "lzf", None])
def test_round_trip_is_exact(tmp_path, compression):
    ep = make_episode()
    path = write_episode(tmp_path / "ep.h5", ep, compression=compression)
    assert_episodes_equal(ep, read_episode(path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep.h5"]  # no temp files left
    with h5py.File(path, "r") as f:
        assert f.attrs["format"] == "pointworld.episode" and f.attrs["format_version"] == 1
        rgb = f["clips/000000/rgb"]
        assert rgb.chunks == ((1, H, W, 3) if compression else None)
        assert rgb.compression == compression
        assert "segmentation" not in f["clips/000001"]


def test_optional_fields_absent_round_trip(tmp_path):
    ep = make_episode(3, T_world_base=None, split_hint=None, clips=(), source="real")
    back = read_episode(write_episode(tmp_path / "e.h5", ep))
    assert_episodes_equal(ep, back)
    assert back.T_world_base is None and back.split_hint is None and back.clips == ()


def test_lazy_reads(tmp_path):
    ep = make_episode()
    path = write_episode(tmp_path / "ep.h5", ep)
    meta = read_episode(path, clips=False)
    assert meta.clips == () and meta.num_steps == S and meta.horizon == T
    np.testing.assert_array_equal(meta.joint_positions, ep.joint_positions)
    some = read_episode(path, clips=[1, 0])
    assert_clips_equal(some.clips[0], ep.clips[1])
    assert_clips_equal(some.clips[1], ep.clips[0])
    assert_clips_equal(read_clip(path, 1), ep.clips[1])
    with pytest.raises(IndexError, match="index 2"):
        read_clip(path, 2)
    with pytest.raises(TypeError, match="clips"):
        read_episode(path, clips="all")


def test_write_creates_parents_and_replaces_existing(tmp_path):
    path = write_episode(tmp_path / "a" / "ep.h5", make_episode(1))
    write_episode(path, make_episode(2))
    assert read_episode(path, clips=False).seed == 2


@pytest.mark.parametrize("field, value, match", [
    ("joint_positions", np.zeros((S, J + 1), np.float32), r"joint_positions: expected shape \(\?, 3\)"),
    ("joint_positions", np.full((S, J), np.nan, np.float32), "joint_positions: expected finite"),
    ("joint_positions", np.zeros((S, J), np.int64), "joint_positions: expected a float32"),
    ("gripper_open", np.full(S, 1.5, np.float32), r"gripper_open: expected values in \[0.0, 1.0\]"),
    ("gripper_open", np.zeros(S - 1, np.float32), "gripper_open: expected shape"),
    ("joint_names", ("a", "a", "b"), "joint_names: expected unique"),
    ("source", "blender", "source: expected one of"),
    ("created", "yesterday", "created: expected an ISO"),
    ("scene", "[1, 2]", "scene: expected a JSON object"),
    ("scene", "{not json", "scene: expected a JSON object"),
    ("control_dt_s", 0.0, "control_dt_s"),
    ("horizon", 0, "horizon: expected an integer >= 1"),
    ("horizon", T + 1, r"clips\[0\].positions: expected T\+1 = 6"),
    ("T_world_base", np.diag([1.0, 1.0, 2.0, 1.0]), "T_world_base: expected rigid"),
    ("split_hint", "holdout", "split_hint"),
    ("robot_name", "", "robot_name"),
])
def test_episode_validation_names_the_field(field, value, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make_episode(**{field: value})


def test_clip_validation_names_the_field():
    rng = np.random.default_rng(5)
    good = make_clip(rng, 0, 4)
    base = {f.name: getattr(good, f.name) for f in dataclasses.fields(Clip)}
    bad_nan = good.points_world.copy()
    bad_nan[0, 0] = np.nan
    cases = [("points_world", bad_nan, "points_world: expected finite"),
             ("positions", np.zeros((T + 1, 5, 3), np.float32), "positions: expected shape"),
             ("valid", np.ones((T, 4), bool), "valid: expected shape"),
             ("valid", np.ones((T + 1, 4), np.uint8), "valid: expected a bool"),
             ("rgb", good.rgb.astype(np.int16), "rgb: expected a uint8"),
             ("depth", good.depth[:1], "depth: expected shape"),
             ("view_index", np.full(4, V), r"view_index: expected values in \[0, 1\]"),
             ("pixel_index", np.full(4, H * W), "pixel_index: expected values"),
             ("body_id", np.full(4, -2), "body_id: expected values"),
             ("segmentation", np.zeros((V, H, W), np.float32), "segmentation: expected a int32"),
             ("start_step", -1, "start_step")]
    for field, value, match in cases:
        with pytest.raises((ValueError, TypeError), match=match):
            Clip(**{**base, field: value})


def test_clips_must_fit_the_episode():
    rng = np.random.default_rng(6)
    with pytest.raises(ValueError, match=r"clips\[0\].start_step: start_step \+ horizon = 16 \+ 4"):
        make_episode(clips=(make_clip(rng, S - T, 3),))
    cams = make_cameras(rng)
    one_view = EpisodeCameras(("c",), cams.K[:1], cams.T_world_cam[:1], H, W)
    with pytest.raises(ValueError, match=r"clips\[0\].rgb: expected \(V, H, W\) = \(1, 6, 8\)"):
        make_episode(cameras=one_view, clips=(make_clip(rng, 0, 3),))
    bad_T = cams.T_world_cam.copy()
    bad_T[1, 0, 0] = 3.0
    with pytest.raises(ValueError, match="cameras.T_world_cam: expected rigid"):
        EpisodeCameras(cams.serials, cams.K, bad_T, H, W)
    with pytest.raises(ValueError, match="cameras.K"):
        EpisodeCameras(cams.serials, cams.K[:1], cams.T_world_cam, H, W)
    with pytest.raises(ValueError, match="cameras.serials: expected unique"):
        EpisodeCameras(("a", "a"), cams.K, cams.T_world_cam, H, W)


def test_validate_catches_in_place_edits():
    ep = make_episode()
    ep.validate()
    ep.gripper_open[3] = -0.5
    with pytest.raises(ValueError, match="gripper_open"):
        ep.validate()


def test_invalid_episode_is_not_written(tmp_path):
    ep = make_episode()
    ep.joint_positions[0, 0] = np.inf
    with pytest.raises(ValueError, match="joint_positions"):
        write_episode(tmp_path / "ep.h5", ep)
    assert list(tmp_path.iterdir()) == []


# ---- corrupt files: every error names the file and the field -----------------------------------

def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


def _replace(name, data):
    def fn(f):
        del f[name]
        f.create_dataset(name, data=data)
    return fn


@pytest.mark.parametrize("edit, match", [
    (lambda f: f.attrs.__setitem__("format", "other.format"), r"/@format: expected 'pointworld.episode'"),
    (lambda f: f.attrs.__delitem__("format"), r"/@format: expected 'pointworld.episode', got None"),
    (lambda f: f.attrs.__setitem__("format_version", 2), r"/@format_version: expected 1, got 2"),
    (lambda f: f.attrs.__setitem__("format_version", "1"), r"/@format_version: expected a int"),
    (lambda f: f.attrs.__delitem__("robot_name"), r"/@robot_name: missing attribute"),
    (lambda f: f.attrs.__delitem__("n_clips"), r"/@n_clips: missing attribute"),
    (lambda f: f.attrs.__setitem__("n_clips", 3), r"/clips: expected groups 000000..000002"),
    (lambda f: f.attrs.__setitem__("horizon", 3), r"clips\[0\].positions: expected T\+1 = 4"),
    (lambda f: f.__delitem__("joint_positions"), r"/joint_positions: missing dataset"),
    (lambda f: f.__delitem__("cameras/K"), r"/cameras/K: missing dataset"),
    (lambda f: f.__delitem__("clips/000001/valid"), r"/clips/000001/valid: missing dataset"),
    (lambda f: f.__delitem__("cameras"), r"/cameras: missing group"),
    (_replace("joint_positions", np.zeros((S, J))), r"/joint_positions: expected a 2-d float32"),
    (_replace("joint_names", np.zeros(J)), r"/joint_names: expected a 1-d string dataset"),
    (_replace("gripper_open", np.zeros(S - 1, np.float32)), r"gripper_open: expected shape \(20,\)"),
    (_replace("clips/000000/positions", np.zeros((T + 1, 6, 3), np.float32)),
     r"/clips/000000: positions: expected shape \(\?, 7, 3\)"),
    (_replace("clips/000000/depth", np.zeros((V, H, W + 1), np.float32)),
     r"/clips/000000: depth: expected shape \(2, 6, 8\)"),
    (_replace("cameras/T_world_cam", np.tile(np.eye(4) * 2, (V, 1, 1))),
     "cameras.T_world_cam: expected rigid"),
])
def test_corrupt_content_is_reported(tmp_path, edit, match):
    path = write_episode(tmp_path / "ep.h5", make_episode())
    _edit(path, edit)
    with pytest.raises(EpisodeFormatError, match=match) as info:
        read_episode(path)
    assert str(path) in str(info.value)


def test_not_hdf5_and_truncated_files(tmp_path):
    text = tmp_path / "text.h5"
    text.write_text("not an episode")
    with pytest.raises(EpisodeFormatError, match=f"episode {text}: not a readable HDF5"):
        read_episode(text)
    path = write_episode(tmp_path / "ep.h5", make_episode())
    data = path.read_bytes()
    for keep in (len(data) // 2, len(data) - 10, 100):
        cut = tmp_path / f"cut{keep}.h5"
        cut.write_bytes(data[:keep])
        with pytest.raises(EpisodeFormatError, match=str(cut)):
            read_episode(cut)
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        read_episode(tmp_path / "missing.h5")


def test_corrupt_compressed_chunk_is_reported(tmp_path):
    path = write_episode(tmp_path / "ep.h5", make_episode())
    with h5py.File(path, "r") as f:
        info = f["clips/000000/rgb"].id.get_chunk_info(0)
    data = bytearray(path.read_bytes())
    data[info.byte_offset:info.byte_offset + info.size] = b"\xff" * info.size
    path.write_bytes(bytes(data))
    with pytest.raises(EpisodeFormatError, match=r"/clips/000000/rgb: unreadable data") as err:
        read_episode(path)
    assert str(path) in str(err.value)
    read_episode(path, clips=[1])  # the other clip is intact


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    import pointworld.data.episode_io as eio
    path = write_episode(tmp_path / "ep.h5", make_episode(1))
    before = path.read_bytes()
    real_put, calls = eio._put, []

    def failing_put(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("disk on fire")
        real_put(*args, **kwargs)

    monkeypatch.setattr(eio, "_put", failing_put)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_episode(path, make_episode(2))
    monkeypatch.setattr(eio, "_put", real_put)

    class HalfWriter:
        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            self.fh.write(data[: len(data) // 2])
            raise OSError("no space left on device")

    real_open = atomic.atomic_open

    def half_open(p, mode="wb", **kw):
        from contextlib import contextmanager

        @contextmanager
        def cm():
            with real_open(p, mode, **kw) as fh:
                yield HalfWriter(fh)
        return cm()

    monkeypatch.setattr(eio, "atomic_open", half_open)
    with pytest.raises(OSError, match="no space"):
        write_episode(path, make_episode(3))
    with pytest.raises(OSError, match="no space"):
        write_episode(tmp_path / "new.h5", make_episode(3))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ep.h5"]


# ---- listing and summary ---------------------------------------------------------------------------

def test_list_episodes_sorted_skips_hidden_and_others(tmp_path):
    for name in ("b.h5", "a.h5", ".tmp.h5", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.h5").mkdir()
    assert [p.name for p in list_episodes(tmp_path)] == ["a.h5", "b.h5"]
    with pytest.raises(FileNotFoundError, match="directory"):
        list_episodes(tmp_path / "nope")


def test_moved_mask_against_naive_loop():
    rng = np.random.default_rng(9)
    pos = rng.normal(scale=0.01, size=(T + 1, 50, 3)).astype(np.float32)
    valid = rng.uniform(size=(T + 1, 50)) > 0.2
    got = moved_mask(pos, valid, 0.015)
    for n in range(50):
        d = [np.linalg.norm(pos[t, n] - pos[0, n]) for t in range(T + 1) if valid[t, n] and valid[0, n]]
        assert got[n] == (max(d, default=0.0) > 0.015)


def test_episode_summary(tmp_path):
    path = write_episode(tmp_path / "ep.h5", make_episode())
    s = episode_summary(path)
    # make_clip moves the first n // 2 points (3 of 7, 2 of 5) by 5 cm per axis: 8.66 cm
    assert (s["robot"], s["steps"], s["clips"], s["views"], s["horizon"]) == ("franka_panda", S, 2, V, T)
    assert s["points"] == 12 and s["moving_points"] == 5 and s["moving_clip_share"] == 1.0
    assert s["moving_point_share"] == pytest.approx(5 / 12)
    assert episode_summary(path, moving_threshold_m=0.087)["moving_points"] == 0
    assert episode_summary(path, moving_threshold_m=0.086)["moving_points"] == 5


def test_inspect_command_prints_dataset_statistics(tmp_path, capsys):
    from pointworld.cli import main

    write_episode(tmp_path / "ep_000.h5", make_episode(0))
    write_episode(tmp_path / "ep_001.h5", make_episode(1, robot_name="bimanual"))
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 episode(s)" in out and "total: 4 clips, 24 scene points" in out
    assert "franka_panda (1 episodes)" in out and "bimanual (1 episodes)" in out
    assert "clips with motion (> 0.01 m): 100.0%" in out and "moving points: 41.7%" in out
    assert main(["inspect", str(tmp_path / "ep_000.h5"), "moving_threshold_m=0.09"]) == 0
    assert "clips with motion (> 0.09 m): 0.0%" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "missing")]) == 1
    assert "missing" in capsys.readouterr().err
    assert main(["inspect"]) == 2  # path is mandatory
