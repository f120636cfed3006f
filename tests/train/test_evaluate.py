"""Evaluation of flow predictors on a tiny generated two-robot clip dataset: aggregation against a
per-clip reference, per-robot split, baselines, ratios, table and JSON output, bad input."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pointworld.data.clip_dataset import ClipDataset, ClipDatasetConfig, DataSource
from pointworld.data.collate import collate_clips
from pointworld.data.generate import generate_dataset
from pointworld.data.generate_config import GenerateConfig
from pointworld.model.backbone import BackboneConfig
from pointworld.model.baselines import RigidFollow, ZeroMotion
from pointworld.model.inputs import Prediction
from pointworld.model.metrics import flow_metrics, metric_means
from pointworld.model.world_model import WorldModel
from pointworld.model.world_model_config import WorldModelConfig
from pointworld.train.evaluate import (
    evaluate,
    format_table,
    l2_moved_ratios,
    write_results,
)

T = 4
ROBOTS = ("franka_panda", "flying_gripper")
#: Metrics every predictor reports (log_var and points are always given to the accumulators).
EXPECTED_METRICS = {"l2", "l2_moved", "l2_static", "epe_per_step", "epe_moved_per_step", "acc_1cm", "acc_2cm",
                    "acc_5cm", "chamfer", "l2_conf80", "l2_moved_conf80", "l2_static_conf80", "acc_2cm_conf80"}


def micro_config() -> WorldModelConfig:
    """A two-level encoder and a one-level mixer, small enough for fast CPU tests."""
    bb = {"in_channels": 1, "enc_depths": (1, 1), "enc_channels": (16, 32), "enc_heads": (2, 2),
          "enc_patch_size": (64, 64), "dec_depths": (1,), "dec_channels": (16,), "dec_heads": (2,),
          "dec_patch_size": (64,)}
    return WorldModelConfig(encoder=BackboneConfig(**bb), mixer=BackboneConfig(**bb), horizon=T,
                            token_channels=16, head_hidden=32)


def snap_static(sample, rng):
    """Augmentation making ground-truth static points exactly static (target 0 at every step)."""
    norm = torch.linalg.vector_norm(sample.target, dim=-1)  # (T, N)
    moving = ((norm > 0.01) & sample.valid).any(0)
    return sample.replace(target=torch.where(moving[None, :, None], sample.target, 0.0))


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    out = []
    for robot in ROBOTS:
        path = tmp_path_factory.mktemp(robot)
        generate_dataset(GenerateConfig(robot=robot, episodes=1, clips_per_episode=2, horizon=T, n_views=2,
                                        width=96, height=72, max_points=512, workers=1, out=str(path),
                                        scene={"include_drawer": False, "n_objects": [1, 2]},
                                        val_fraction=0.0, test_fraction=0.0), progress=False)
        out.append(DataSource(str(path)))
    return tuple(out)


def make_dataset(sources, augment=None) -> ClipDataset:
    config = ClipDatasetConfig(sources=sources, split="all", max_points=256, random_views=False,
                               robot_points=64, seed=0)
    return ClipDataset(config, augment=augment)


@pytest.fixture(scope="module")
def dataset(sources):
    return make_dataset(sources, augment=snap_static)


@pytest.fixture(scope="module")
def model(dataset):
    torch.manual_seed(0)
    model = WorldModel(micro_config())
    batch = collate_clips([dataset[i] for i in range(len(dataset))])
    model.update_normalization(batch.scene, batch.action, batch.target, batch.valid)
    model.finalize_normalization()
    return model.eval()


@pytest.fixture(scope="module")
def results(dataset, model):
    predictors = {"model": model, "zero_motion": ZeroMotion(), "rigid_follow": RigidFollow()}
    return evaluate(predictors, dataset, batch_size=3, progress=False)  # batches mix robots and padding


def reference(predictor, dataset) -> tuple[dict, dict]:
    """Overall and per-robot means from single-clip (unpadded) batches, summed by hand."""
    overall: dict = {}
    per_robot: dict = {}
    for i in range(len(dataset)):
        batch = collate_clips([dataset[i]])
        pred = predictor.predict(batch.scene, batch.action)
        sums = flow_metrics(pred.displacement, batch.target, batch.valid, pred.log_var, batch.scene.points)
        for acc in (overall, per_robot.setdefault(batch.robot_names[0], {})):
            for k, v in sums.items():
                acc[k] = acc[k] + v if k in acc else v.clone()
    return metric_means(overall), {r: metric_means(s) for r, s in per_robot.items()}


def assert_metrics_close(got: dict, want: dict, rtol: float, atol: float) -> None:
    assert set(got) == set(want)
    for key, value in want.items():
        g, w = torch.tensor(got[key], dtype=torch.float64), torch.tensor(value, dtype=torch.float64)
        torch.testing.assert_close(g, w, rtol=rtol, atol=atol, equal_nan=True, msg=key)


def test_dataset_mixes_two_robots(dataset, results):
    assert sorted({dataset[i].robot_name for i in range(len(dataset))}) == sorted(ROBOTS)
    assert results["clips"] == len(dataset) == 4
    assert results["clips_per_robot"] == {r: 2 for r in ROBOTS}
    for entry in results["predictors"].values():
        assert sorted(entry["per_robot"]) == sorted(ROBOTS)
    assert results["dataset"] == dataset.describe()


@pytest.mark.parametrize("name", ["zero_motion", "rigid_follow"])
def test_baselines_match_a_per_clip_reference(dataset, results, name):
    predictor = ZeroMotion() if name == "zero_motion" else RigidFollow()
    overall, per_robot = reference(predictor, dataset)
    entry = results["predictors"][name]
    assert_metrics_close(entry["overall"], overall, rtol=1e-12, atol=1e-12)
    for robot in ROBOTS:
        assert_metrics_close(entry["per_robot"][robot], per_robot[robot], rtol=1e-12, atol=1e-12)


def test_model_matches_a_per_clip_reference(dataset, model, results):
    overall, per_robot = reference(model, dataset)  # padding and batch mates must not change the metrics
    assert_metrics_close(results["predictors"]["model"]["overall"], overall, rtol=1e-4, atol=1e-6)
    for robot in ROBOTS:
        assert_metrics_close(results["predictors"]["model"]["per_robot"][robot], per_robot[robot],
                             rtol=1e-4, atol=1e-6)


def test_zero_motion_against_a_naive_loop(dataset, results):
    """l2_static is exactly 0 on exactly static points; l2_moved is the mean GT displacement norm."""
    total, count, below_2cm = 0.0, 0, 0
    for i in range(len(dataset)):
        s = dataset[i]
        for n in range(s.num_points):
            steps = [t for t in range(T) if bool(s.valid[t, n])]
            norms = [float(torch.linalg.vector_norm(s.target[t, n].double())) for t in steps]
            if any(v > 0.01 for v in norms):
                total, count = total + sum(norms), count + len(norms)
                below_2cm += sum(v < 0.02 for v in norms)
    zero = results["predictors"]["zero_motion"]["overall"]
    assert count > 0, "the fixture should contain moving points"
    assert zero["l2_static"] == 0.0
    assert zero["l2_moved"] == pytest.approx(total / count, rel=1e-6)  # float32 norms
    assert zero["acc_2cm"] == pytest.approx(below_2cm / count, rel=1e-12)


def test_ratios_are_consistent(results):
    overall = {n: e["overall"] for n, e in results["predictors"].items()}
    ratios = results["ratios"]
    assert set(ratios) == {"l2_moved_model_vs_zero_motion", "l2_moved_model_vs_rigid_follow"}
    for base in ("zero_motion", "rigid_follow"):
        want = overall["model"]["l2_moved"] / overall[base]["l2_moved"]
        assert ratios[f"l2_moved_model_vs_{base}"] == pytest.approx(want, rel=1e-12)
    for robot in ROBOTS:
        per = results["ratios_per_robot"][robot]
        want = (results["predictors"]["model"]["per_robot"][robot]["l2_moved"]
                / results["predictors"]["zero_motion"]["per_robot"][robot]["l2_moved"])
        assert per["l2_moved_model_vs_zero_motion"] == pytest.approx(want, rel=1e-12, nan_ok=True)
    partial = l2_moved_ratios({"model": {"l2_moved": 0.02}, "zero_motion": {"l2_moved": 0.0}})
    assert list(partial) == ["l2_moved_model_vs_zero_motion"] and math.isnan(partial["l2_moved_model_vs_zero_motion"])


def test_json_has_every_metric_and_nan_becomes_null(results, tmp_path):
    path = tmp_path / "sub" / "eval.json"
    write_results(results, path)
    loaded = json.loads(path.read_text())
    for name in ("model", "zero_motion", "rigid_follow"):
        entry = loaded["predictors"][name]
        assert EXPECTED_METRICS <= set(entry["overall"])
        for robot in ROBOTS:
            assert set(entry["per_robot"][robot]) == set(entry["overall"])
    assert loaded["ratios"] == pytest.approx(results["ratios"])
    write_results({"a": math.nan, "b": [1.0, math.inf], "c": (2, -math.inf)}, path)
    assert "NaN" not in path.read_text() and "Infinity" not in path.read_text()
    assert json.loads(path.read_text()) == {"a": None, "b": [1.0, None], "c": [2, None]}
    with pytest.raises(TypeError):
        write_results({"a": object()}, path)
    assert json.loads(path.read_text())["a"] is None  # the failed write left the old file intact


def test_table_rows_and_alignment(results):
    table = format_table(results).splitlines()
    rows = table[2:2 + 3 * (1 + len(ROBOTS))]
    assert table[0].split()[:3] == ["predictor", "robot", "clips"] and "l2_moved_conf80_cm" in table[0]
    assert len({len(line) for line in [table[0]] + rows}) == 1  # aligned columns
    assert [r.split()[:2] for r in rows][:3] == [["model", "all"], ["model", "flying_gripper"],
                                                 ["model", "franka_panda"]]
    zero_static = rows[3].split()[3 + 2]  # zero_motion / all / l2_static_cm
    assert zero_static == "0.00"
    assert any(line.startswith("l2_moved_model_vs_rigid_follow = ") for line in table)
    with pytest.raises(TypeError, match="results"):
        format_table({"nope": 1})


def test_max_batches_mode_and_gradients(dataset, model):
    model.train()
    try:
        out = evaluate({"model": model}, dataset, batch_size=2, max_batches=1, progress=False)
        assert model.training  # restored
        assert all(p.grad is None for p in model.parameters())
        assert out["clips"] == 2 and out["ratios"] == {}
        model.eval()
        again = evaluate({"model": model}, dataset, batch_size=2, max_batches=1, progress=False)
        assert_metrics_close(out["predictors"]["model"]["overall"], again["predictors"]["model"]["overall"],
                             rtol=0, atol=0)  # evaluated in eval mode: no robot-type dropout
    finally:
        model.eval()


class WrongShape:
    def predict(self, scene, action):
        k, n = action.batch_size, scene.points.shape[1]
        return Prediction(scene.points.new_zeros((k, T + 1, n, 3)), scene.points.new_zeros((k, T + 1, n)))


def test_bad_input(dataset):
    with pytest.raises(TypeError, match="predictors"):
        evaluate({}, dataset, progress=False)
    with pytest.raises(TypeError, match="predictors\\['x'\\]"):
        evaluate({"x": object()}, dataset, progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate({"z": ZeroMotion()}, dataset, batch_size=0, progress=False)
    with pytest.raises(ValueError, match="max_batches"):
        evaluate({"z": ZeroMotion()}, dataset, max_batches=0, progress=False)
    with pytest.raises(ValueError, match="device"):
        evaluate({"z": ZeroMotion()}, dataset, device="warp-drive", progress=False)
    with pytest.raises(ValueError, match="dataset"):
        evaluate({"z": ZeroMotion()}, [], progress=False)
    with pytest.raises(ValueError, match="predictors\\['bad'\\].*displacement"):
        evaluate({"bad": WrongShape()}, dataset, progress=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(dataset, model, results):
    out = evaluate({"model": model, "zero_motion": ZeroMotion(), "rigid_follow": RigidFollow()}, dataset,
                   batch_size=3, device="cuda", progress=False)
    model.cpu()
    for name in ("zero_motion", "rigid_follow"):
        assert_metrics_close(out["predictors"][name]["overall"], results["predictors"][name]["overall"],
                             rtol=1e-6, atol=1e-7)
    assert_metrics_close(out["predictors"]["model"]["overall"], results["predictors"]["model"]["overall"],
                         rtol=1e-3, atol=1e-5)
