"""Dataset metadata: splits by episode with held-out shapes/sizes, atomic JSON, validation on load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pointworld.data.dataset_meta import (DatasetMeta, EpisodeEntry, SplitRule, assign_splits, build_meta,
                                          is_held_out, load_meta, object_size_m, save_meta)
from pointworld.data.episode import Episode, EpisodeCameras
from pointworld.data.episode_io import write_episode
from pointworld.errors import EpisodeFormatError

RULE = SplitRule(held_out_shapes=("cross",), held_out_size_range_m=(0.20, 0.25), val_fraction=0.2, seed=7)


def _objects(rng: np.random.Generator, i: int) -> list[dict]:
    shapes = ["box", "cylinder", "sphere", "L", "T", "cross"]
    return [{"name": f"o{i}_{k}", "shape": shapes[rng.integers(0, 6)],
             "size_m": rng.uniform(0.03, 0.25, size=3).round(3).tolist()} for k in range(3)]


def test_held_out_rule():
    assert is_held_out([{"shape": "box", "size_m": 0.1}, {"shape": "cross", "size_m": 0.05}], RULE)
    assert is_held_out([{"shape": "box", "size_m": [0.05, 0.2, 0.01]}], RULE)  # largest extent 0.2
    assert is_held_out([{"shape": "box", "size_m": 0.25}], RULE)
    assert not is_held_out([{"shape": "box", "size_m": [0.05, 0.19, 0.01]}, {"shape": "T"}], RULE)
    assert not is_held_out([{"shape": "box", "size_m": 0.26}], RULE)
    assert not is_held_out([], RULE)
    assert object_size_m({"size_m": [0.1, 0.3]}) == 0.3 and object_size_m({"shape": "box"}) is None


def test_assign_splits_by_episode_deterministic_and_respects_held_out():
    rng = np.random.default_rng(0)
    episodes = {f"ep{i:04d}": _objects(rng, i) for i in range(600)}
    splits = assign_splits(episodes, RULE)
    assert splits == assign_splits(episodes, RULE)
    assert set(splits) == set(episodes) and set(splits.values()) == {"train", "val", "test"}
    for name, objects in episodes.items():  # naive re-statement of the rule
        held = any(o["shape"] == "cross" or 0.20 <= max(o["size_m"]) <= 0.25 for o in objects)
        assert (splits[name] == "test") == held, name
    train_shapes = {o["shape"] for n, objs in episodes.items() if splits[n] != "test" for o in objs}
    assert "cross" not in train_shapes
    rest = [n for n in episodes if splits[n] != "test"]
    share = sum(splits[n] == "val" for n in rest) / len(rest)
    assert abs(share - 0.2) < 0.08, share
    # adding episodes never moves existing ones; another seed gives another train/val assignment
    more = {**episodes, **{f"new{i}": _objects(rng, i) for i in range(50)}}
    assert {n: s for n, s in assign_splits(more, RULE).items() if n in episodes} == splits
    other = assign_splits(episodes, SplitRule(("cross",), (0.20, 0.25), 0.2, seed=8))
    assert other != splits and all((other[n] == "test") == (splits[n] == "test") for n in episodes)
    kw = assign_splits(episodes, held_out_shapes=["cross"], held_out_size_range=(0.20, 0.25),
                       val_fraction=0.2, seed=7)
    assert kw == splits
    assert set(assign_splits(episodes, SplitRule(val_fraction=0.0)).values()) == {"train"}


@pytest.mark.parametrize("kwargs, match", [
    ({"held_out_shapes": "cross"}, "held_out_shapes"),
    ({"held_out_size_range_m": (0.3, 0.2)}, "held_out_size_range_m"),
    ({"held_out_size_range_m": (0.1,)}, "held_out_size_range_m"),
    ({"val_fraction": 1.0}, "val_fraction"),
    ({"seed": 1.5}, "seed"),
])
def test_split_rule_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SplitRule(**kwargs)


def _meta() -> DatasetMeta:
    return DatasetMeta(("bimanual", "franka_panda"), {
        "b": EpisodeEntry("bimanual", "test", 3, ("cross", "box")),
        "a": EpisodeEntry("franka_panda", "train", 5, ("box",)),
        "c": EpisodeEntry("franka_panda", "val", 0)}, RULE)


def test_meta_round_trip_and_names(tmp_path):
    meta = _meta()
    path = save_meta(meta, tmp_path / "ds")
    assert path.name == "dataset.json" and sorted(p.name for p in path.parent.iterdir()) == ["dataset.json"]
    back = load_meta(tmp_path / "ds")
    assert back == meta and list(back.episodes) == ["a", "b", "c"]
    assert (back.names("train"), back.names("val"), back.names("test")) == (["a"], ["c"], ["b"])
    with pytest.raises(ValueError, match="split"):
        back.names("holdout")


def test_meta_validation():
    with pytest.raises(ValueError, match=r"episodes\['x'\].robot: 'ur5e_gripper' is not in robots"):
        DatasetMeta(("franka_panda",), {"x": EpisodeEntry("ur5e_gripper", "train", 1)})
    with pytest.raises(ValueError, match=r"episodes\['x'\].split: has a held-out shape"):
        DatasetMeta(("f",), {"x": EpisodeEntry("f", "train", 1, ("cross",))}, RULE)
    with pytest.raises(ValueError, match="robots: expected sorted unique"):
        DatasetMeta(("b", "a"), {})
    with pytest.raises(ValueError, match="split: expected one of"):
        EpisodeEntry("f", "holdout", 1)
    with pytest.raises(ValueError, match="n_clips"):
        EpisodeEntry("f", "train", -1)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(format="other"), "format: expected 'pointworld.dataset'"),
    (lambda d: d.update(format_version=2), "format_version: expected 1, got 2"),
    (lambda d: d.pop("episodes"), "episodes: missing key"),
    (lambda d: d["episodes"]["a"].update(split="holdout"), "episodes: split: expected one of"),
    (lambda d: d["episodes"]["a"].pop("n_clips"), "episodes: .*n_clips"),
    (lambda d: d["split_rule"].update(val_fraction=2), "split_rule: val_fraction"),
    (lambda d: d.update(robots=["bimanual"]), "robots: .*is not in robots"),
])
def test_load_rejects_corrupt_metadata(tmp_path, edit, match):
    path = save_meta(_meta(), tmp_path)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(EpisodeFormatError, match=match) as info:
        load_meta(tmp_path)
    assert str(path) in str(info.value)


def test_load_rejects_bad_json_and_missing_file(tmp_path):
    (tmp_path / "dataset.json").write_text('{"format": ')
    with pytest.raises(EpisodeFormatError, match="invalid JSON"):
        load_meta(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a pointworld dataset"):
        load_meta(tmp_path / "nothing")


def test_failed_save_keeps_old_metadata(tmp_path, monkeypatch):
    path = save_meta(_meta(), tmp_path)
    before = path.read_text()

    def boom(*args, **kwargs):
        raise RuntimeError("crash while dumping")

    monkeypatch.setattr(json, "dump", boom)
    with pytest.raises(RuntimeError, match="crash"):
        save_meta(DatasetMeta((), {}), tmp_path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["dataset.json"]


def _episode(robot: str, objects: list[dict]) -> Episode:
    cams = EpisodeCameras(("c0",), np.array([[[10.0, 0, 2], [0, 10, 2], [0, 0, 1]]]), np.eye(4)[None], 4, 4)
    return Episode(robot, robot, 0.1, 0, "2026-11-21T11:00:00", "sim", json.dumps({"objects": objects}),
                   ("j",), np.zeros((3, 1), np.float32), np.ones(3, np.float32), cams, horizon=2)


def test_build_meta_from_episode_files(tmp_path):
    write_episode(tmp_path / "e0.h5", _episode("franka_panda", [{"shape": "cross", "size_m": 0.1}]))
    write_episode(tmp_path / "e1.h5", _episode("bimanual", [{"shape": "box", "size_m": [0.05, 0.1, 0.1]}]))
    meta = build_meta(tmp_path, RULE)
    assert meta.robots == ("bimanual", "franka_panda")
    assert meta.episodes["e0"] == EpisodeEntry("franka_panda", "test", 0, ("cross",))
    assert meta.episodes["e1"].split in ("train", "val") and meta.episodes["e1"].object_shapes == ("box",)
    assert load_meta(save_meta(meta, tmp_path).parent) == meta
