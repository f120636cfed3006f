"""``pointworld train`` and ``pointworld eval`` end to end on a tiny generated dataset."""

from __future__ import annotations

import json

import pytest

from pointworld.cli import main

T = 4
SMALL = ["data.max_points=128", "data.robot_points=32", "data.split=all"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, write_tiny_dataset) -> str:
    return write_tiny_dataset(tmp_path_factory.mktemp("clips"), robot="flying_gripper", horizon=T)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc = main(["train", f"data.sources=[{data_dir}]", *SMALL, "val_data.split=all", f"out={out}", "steps=2",
               "batch_size=2", f"model.horizon={T}", "num_workers=0", "normalization_batches=1", "val_batches=1",
               "val_every=2", "checkpoint_every=2", "device=cpu"])
    assert rc == 0
    return out


def test_train_writes_checkpoints_config_and_logs(trained, capsys):
    assert (trained / "last.pt").is_file() and (trained / "train_config.json").is_file()
    assert any((trained / "tb").iterdir()) and (trained / "summary.json").is_file()
    config = json.loads((trained / "train_config.json").read_text())
    assert config["steps"] == 2 and config["model"]["horizon"] == T
    assert config["data"]["sources"][0]["weight"] == 1.0


def test_eval_writes_every_metric_for_model_and_baselines(trained, data_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    rc = main(["eval", f"checkpoint={trained / 'last.pt'}", f"data.sources=[{data_dir}]", *SMALL, f"out={out}",
               "device=cpu"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "zero_motion" in printed and "rigid_follow" in printed and "segment_follow" in printed
    results = json.loads(out.read_text())
    assert set(results["predictors"]) == {"model", "zero_motion", "rigid_follow", "segment_follow"}
    for name in results["predictors"]:
        overall = results["predictors"][name]["overall"]
        for metric in ("l2", "l2_moved", "l2_static", "acc_1cm", "acc_2cm", "acc_5cm", "chamfer", "epe_per_step"):
            assert metric in overall, (name, metric)
        assert set(results["predictors"][name]["per_robot"]) == {"flying_gripper"}
    for baseline in ("zero_motion", "rigid_follow", "segment_follow"):
        assert f"l2_moved_model_vs_{baseline}" in results["ratios"]


def test_eval_of_a_corrupt_checkpoint_names_the_file(data_dir, tmp_path, capsys):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(b"not a checkpoint")
    rc = main(["eval", f"checkpoint={bad}", f"data.sources=[{data_dir}]", *SMALL])
    assert rc == 1
    assert "broken.pt" in capsys.readouterr().err


def test_train_without_sources_is_a_usage_error(tmp_path, capsys):
    assert main(["train", f"out={tmp_path}"]) == 2
