"""Simulated dataset generation: determinism, resumability, schema round trip, CLI, idle ground truth."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mujoco")

from pointworld.cli import main
from pointworld.data.dataset_meta import load_meta
from pointworld.data.episode import Episode
from pointworld.data.episode_io import read_episode
from pointworld.data.generate import generate_dataset, generate_episode
from pointworld.data.generate_config import GenerateConfig

TINY = {"episodes": 2, "clips_per_episode": 2, "horizon": 3, "segment_steps": 4, "width": 80, "height": 60,
        "n_views": 2, "max_points": 300, "seed": 3, "workers": 1}
_CLIP_ARRAYS = ("rgb", "depth", "points_world", "colors", "view_index", "pixel_index", "body_id",
                "positions", "valid", "segmentation")


def assert_same_episode(a: Episode, b: Episode) -> None:
    """Every array and attribute equal, except the creation time."""
    for key in ("robot_name", "urdf_id", "control_dt_s", "seed", "scene", "joint_names", "horizon"):
        assert getattr(a, key) == getattr(b, key), key
    np.testing.assert_array_equal(a.joint_positions, b.joint_positions)
    np.testing.assert_array_equal(a.gripper_open, b.gripper_open)
    np.testing.assert_array_equal(a.cameras.K, b.cameras.K)
    np.testing.assert_array_equal(a.cameras.T_world_cam, b.cameras.T_world_cam)
    assert len(a.clips) == len(b.clips)
    for ca, cb in zip(a.clips, b.clips):
        assert ca.start_step == cb.start_step
        for key in _CLIP_ARRAYS:
            np.testing.assert_array_equal(getattr(ca, key), getattr(cb, key), err_msg=key)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[GenerateConfig, dict]:
    out = tmp_path_factory.mktemp("gen") / "ds"
    config = GenerateConfig(**TINY, out=str(out))
    return config, generate_dataset(config, progress=False)


def test_generated_episodes_round_trip_and_validate(dataset: tuple[GenerateConfig, dict]) -> None:
    config, summary = dataset
    assert summary["episodes"] == 2 and summary["generated"] == 2 and summary["skipped"] == 0
    assert summary["clips"] == 4 and summary["mb_per_clip"] > 0 and 0.0 <= summary["moving_clip_share"] <= 1.0
    for i in range(2):
        ep = read_episode(Path(config.out) / config.episode_name(i))
        ep.validate()
        assert ep.robot_name == "franka_panda" and ep.source == "sim" and ep.horizon == 3
        assert len(ep.clips) == 2 and ep.cameras.num_views == 2 and ep.clips[0].rgb.shape == (2, 60, 80, 3)
        assert ep.seed == config.episode_seed(i)
        objects = ep.scene_objects()
        assert objects and all(0.0 < o["size_m"] < 0.4 and o["shape"] for o in objects)
        for clip in ep.clips:
            assert 0 < clip.num_points <= config.max_points
            assert clip.positions.shape == (4, clip.num_points, 3)
            # t = 0 ground truth is the noise-free backprojection of the observed (noisy) point
            err = np.linalg.norm(clip.positions[0] - clip.points_world, axis=-1)
            assert np.median(err) < 0.01
            assert clip.valid[0].all()
    meta = load_meta(config.out)
    assert meta.robots == ("franka_panda",) and len(meta.episodes) == 2
    assert meta.split_rule.held_out_shapes == ("cross",)


def test_same_seed_reproduces_the_episode(dataset: tuple[GenerateConfig, dict]) -> None:
    config, _ = dataset
    fresh = generate_episode(config, 0)
    stored = read_episode(Path(config.out) / config.episode_name(0))
    assert_same_episode(fresh, stored)
    other = generate_episode(replace(config, seed=4), 0)
    assert not np.array_equal(other.cameras.T_world_cam, stored.cameras.T_world_cam)


def test_resume_regenerates_only_missing_or_corrupt_files(dataset: tuple[GenerateConfig, dict],
                                                          tmp_path: Path) -> None:
    config, _ = dataset
    out = tmp_path / "resumed"
    shutil.copytree(config.out, out)
    resumed = replace(config, out=str(out))
    kept, lost = out / config.episode_name(0), out / config.episode_name(1)
    mtime = kept.stat().st_mtime_ns
    lost.unlink()
    summary = generate_dataset(resumed, progress=False)
    assert summary["generated"] == 1 and summary["skipped"] == 1 and summary["clips"] == 4
    assert kept.stat().st_mtime_ns == mtime
    original = Path(config.out) / config.episode_name(1)
    assert_same_episode(read_episode(lost), read_episode(original))
    lost.write_bytes(original.read_bytes()[:5000])  # a truncated file (e.g. written by other means)
    assert generate_dataset(resumed, progress=False)["generated"] == 1
    assert_same_episode(read_episode(lost), read_episode(original))
    assert not list(out.glob(".*")), "temporary files left behind"


def test_other_robot_under_the_same_name_is_refused(dataset: tuple[GenerateConfig, dict], tmp_path: Path) -> None:
    config, _ = dataset
    shutil.copy(Path(config.out) / config.episode_name(0), tmp_path / "episode_000000.h5")
    other = GenerateConfig(**{**TINY, "episodes": 1}, robot="flying_gripper", episode_prefix="", out=str(tmp_path))
    with pytest.raises(ValueError, match="flying_gripper"):
        generate_dataset(other, progress=False)


def test_idle_robot_moves_no_scene_point(tmp_path: Path) -> None:
    config = GenerateConfig(**{**TINY, "episodes": 1}, out=str(tmp_path), behaviour_weights={"idle": 1.0})
    ep = generate_episode(config, 0)
    assert np.ptp(ep.joint_positions, axis=0).max() < 1e-6  # the stored targets stay put
    for clip in ep.clips:
        disp = np.linalg.norm(clip.positions - clip.positions[:1], axis=-1)
        assert clip.num_points > 50 and clip.valid.all() and disp.max() < 1e-4


@pytest.mark.parametrize("bad, match", [
    ({"horizon": 5, "segment_steps": 4}, "segment_steps"),
    ({"episodes": 0}, "episodes"),
    ({"scene": {"seed": 1}}, "scene"),
    ({"compression": "zip"}, "compression"),
    ({"behaviour_weights": {"dance": 1.0}}, "weights"),
    ({"episode_prefix": "a/b"}, "episode_prefix"),
])
def test_bad_config_is_rejected(bad: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GenerateConfig(**{**TINY, **bad})


def test_bad_arguments_are_rejected(dataset: tuple[GenerateConfig, dict]) -> None:
    with pytest.raises(TypeError, match="config"):
        generate_episode({"robot": "franka_panda"}, 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index"):
        generate_episode(dataset[0], -1)


def test_cli_generates_and_inspects(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli"
    args = [f"{k}={v}" for k, v in {**TINY, "episodes": 1}.items()] + ["robot=flying_gripper", f"out={out}"]
    assert main(["generate", *args]) == 0
    printed = capsys.readouterr().out
    assert "1 episode(s) (1 generated" in printed and "MB per clip" in printed
    assert (out / "flying_gripper_episode_000000.h5").is_file()
    assert main(["inspect", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "flying_gripper (1 episodes)" in printed and "total: 2 clips" in printed


def test_training_scenes_leave_the_held_out_shapes_and_sizes_out() -> None:
    train = GenerateConfig(**TINY, test_fraction=0.0, held_out_shapes=("cross", "L"),
                           held_out_size_range_m=(0.2, 0.25))
    for i in range(3):
        scene = train.scene_config(i)
        assert "cross" not in scene.shapes and "L" not in scene.shapes and "box" in scene.shapes
        assert scene.object_size_m[1] < 0.2 and scene.seed == train.episode_seed(i)
    test = replace(train, test_fraction=1.0).scene_config(0)
    assert "cross" in test.shapes and test.object_size_m == (0.03, 0.25)
    low = GenerateConfig(**TINY, test_fraction=0.0, held_out_size_range_m=(0.0, 0.05)).scene_config(0)
    assert low.object_size_m[0] > 0.05
    with pytest.raises(ValueError, match="test_fraction"):
        GenerateConfig(**TINY, test_fraction=1.5)
