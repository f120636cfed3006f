"""Checkpoints: round trips, weights_only loading, atomic writes, and every kind of bad file."""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import pointworld
from pointworld.errors import CheckpointError
from pointworld.model.backbone import BackboneConfig
from pointworld.model.synthetic import synthetic_push_batch
from pointworld.model.world_model import WorldModel
from pointworld.model.world_model_config import WorldModelConfig
from pointworld.train.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    build_model,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)

T = 3


def micro_config(channels: int = 16) -> WorldModelConfig:
    def backbone() -> BackboneConfig:
        return BackboneConfig(in_channels=1, enc_depths=(1, 1), enc_channels=(channels, 2 * channels),
                              enc_heads=(2, 2), enc_patch_size=(64, 64), dec_depths=(1,), dec_channels=(channels,),
                              dec_heads=(2,), dec_patch_size=(64,))
    return WorldModelConfig(encoder=backbone(), mixer=backbone(), horizon=T, token_channels=16, head_hidden=32)


def fitted_model(config: WorldModelConfig, dtype: torch.dtype = torch.float32) -> WorldModel:
    torch.manual_seed(0)
    model = WorldModel(config).to(dtype)
    scene, action, target, valid = synthetic_push_batch(3, 64, 8, T, seed=11, dtype=dtype)
    model.update_normalization(scene, action, target, valid)
    model.finalize_normalization()
    return model


@pytest.fixture(scope="module")
def model() -> WorldModel:
    return fitted_model(micro_config()).eval()


@pytest.fixture()
def saved(tmp_path: Path, model: WorldModel) -> Path:
    return save_checkpoint(tmp_path / "ckpt" / "last.pt", model=model, step=7)


def raw_payload(path: Path) -> dict:
    return torch.load(path, weights_only=True)


def write_payload(path: Path, payload: object) -> Path:
    torch.save(payload, path)
    return path


def test_round_trip_gives_identical_predictions_and_all_fields(tmp_path, model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
    scene, action, _, _ = synthetic_push_batch(2, 64, 8, T, seed=3)
    model.train()
    model(scene, action).displacement.square().mean().backward()  # optimizer state worth saving
    opt.step()
    sched.step()
    opt.zero_grad()
    model.eval()
    extras = {"train_config": {"lr": 1e-3, "views": (1, 3), "out": "runs/a"},
              "dataset": {"sources": [{"path": "/d", "weight": 1.0}], "split": "train"},
              "metrics": {"l2_moved": 0.012, "nan_allowed": float("nan")}}
    path = save_checkpoint(tmp_path / "a.pt", model=model, step=12, optimizer=opt, scheduler=sched, **extras)
    ckpt = load_checkpoint(path)
    assert (ckpt.format, ckpt.version, ckpt.library_version) == (CHECKPOINT_FORMAT, CHECKPOINT_VERSION,
                                                                  pointworld.__version__)
    assert ckpt.step == 12 and ckpt.path == path
    assert ckpt.train_config == extras["train_config"] and ckpt.dataset == extras["dataset"]
    assert ckpt.metrics["l2_moved"] == 0.012 and np.isnan(ckpt.metrics["nan_allowed"])
    assert WorldModelConfig.from_dict(ckpt.model_config) == model.config
    rebuilt = build_model(ckpt)
    assert not rebuilt.training and rebuilt.fitted
    for k, v in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[k], v), k
    expected, got = model.predict(scene, action), rebuilt.predict(scene, action)
    assert torch.equal(got.displacement, expected.displacement) and torch.equal(got.log_var, expected.log_var)
    opt2 = torch.optim.AdamW(rebuilt.parameters(), lr=1e-3)
    sched2 = torch.optim.lr_scheduler.LambdaLR(opt2, lambda s: min(1.0, (s + 1) / 10))
    opt2.load_state_dict(ckpt.optimizer_state)
    sched2.load_state_dict(ckpt.scheduler_state)
    for p, q in zip(model.parameters(), rebuilt.parameters()):
        torch.testing.assert_close(opt2.state[q]["exp_avg"], opt.state[p]["exp_avg"], rtol=0, atol=0)
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_file_loads_with_plain_weights_only_torch_load(saved, model):
    data = torch.load(saved, weights_only=True)
    assert data["format"] == CHECKPOINT_FORMAT and data["step"] == 7
    assert set(data["model_state"]) == set(model.state_dict())
    assert data["optimizer_state"] is None and data["rng_state"] is None


def test_float64_model_keeps_its_dtype_and_builds_are_independent(tmp_path):
    model = fitted_model(micro_config(), torch.float64).eval()
    ckpt = load_checkpoint(save_checkpoint(tmp_path / "f64.pt", model=model, step=0))
    a, b = build_model(ckpt), build_model(ckpt)
    assert all(p.dtype == torch.float64 for p in a.parameters())
    scene, action, _, _ = synthetic_push_batch(1, 48, 6, T, seed=4, dtype=torch.float64)
    assert torch.equal(a.predict(scene, action).displacement, model.predict(scene, action).displacement)
    with torch.no_grad():
        next(a.parameters()).add_(1.0)
    assert torch.equal(next(b.parameters()), next(model.parameters()))


def test_build_model_accepts_a_path(saved, model):
    assert torch.equal(build_model(saved).head[1].weight, model.head[1].weight)


def test_failed_write_leaves_the_old_file_and_no_temporary(saved, monkeypatch, model):
    before = saved.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(saved, model=model, step=8)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in saved.parent.iterdir()) == [saved.name]
    monkeypatch.undo()
    assert load_checkpoint(saved).step == 7


def test_save_rejects_values_weights_only_loading_would_refuse(tmp_path, model):
    with pytest.raises(TypeError, match=r"metrics\['l2'\].*numpy"):
        save_checkpoint(tmp_path / "x.pt", model=model, step=1, metrics={"l2": np.float64(0.1)})
    with pytest.raises(TypeError, match=r"train_config\['out'\].*Path"):
        save_checkpoint(tmp_path / "x.pt", model=model, step=1, train_config={"out": Path("runs")})
    with pytest.raises(TypeError, match="dataset: expected a dict"):
        save_checkpoint(tmp_path / "x.pt", model=model, step=1, dataset=["a"])
    with pytest.raises(ValueError, match="step"):
        save_checkpoint(tmp_path / "x.pt", model=model, step=-1)
    with pytest.raises(TypeError, match="model: expected a WorldModel"):
        save_checkpoint(tmp_path / "x.pt", model=torch.nn.Linear(2, 2), step=1)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["truncated", "random", "empty", "text"])
def test_unreadable_files_raise_checkpoint_error_naming_the_file(saved, kind):
    data = saved.read_bytes()
    content = {"truncated": data[: len(data) // 2], "random": np.random.default_rng(5).bytes(4096),
               "empty": b"", "text": b"model: tiny\nsteps: 100\n"}[kind]
    saved.write_bytes(content)
    with pytest.raises(CheckpointError, match="not a readable checkpoint") as info:
        load_checkpoint(saved)
    assert str(saved) in str(info.value)


def test_pickled_objects_are_refused_not_executed(tmp_path):
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"format": CHECKPOINT_FORMAT, "hook": Path("x")}, protocol=2))
    with pytest.raises(CheckpointError, match="pathlib"):
        load_checkpoint(path)


def test_plain_tensor_file_is_not_a_checkpoint(tmp_path):
    path = write_payload(tmp_path / "t.pt", torch.zeros(3))
    with pytest.raises(CheckpointError, match=r"t\.pt: not a pointworld checkpoint.*got Tensor"):
        load_checkpoint(path)
    path = write_payload(tmp_path / "sd.pt", {"weight": torch.zeros(3)})  # a bare state_dict
    with pytest.raises(CheckpointError, match=r"not a pointworld checkpoint.*\['weight'\]"):
        load_checkpoint(path)


def test_wrong_format_newer_or_bad_version_and_missing_keys(saved):
    payload = raw_payload(saved)
    cases = [({"format": "other.checkpoint"}, "wrong format.*other.checkpoint"),
             ({"version": CHECKPOINT_VERSION + 1}, f"version {CHECKPOINT_VERSION + 1} is newer"),
             ({"version": "1"}, "expected an int version"),
             ({"step": -2}, "step: expected an int >= 0"),
             ({"model_config": None}, "model_config: expected a dict"),
             ({"model_state": {"w": [1.0]}}, "model_state: expected a dict of tensors")]
    for change, message in cases:
        write_payload(saved, {**payload, **change})
        with pytest.raises(CheckpointError, match=message) as info:
            load_checkpoint(saved)
        assert str(saved) in str(info.value)
    write_payload(saved, {k: v for k, v in payload.items() if k not in ("model_state", "step")})
    with pytest.raises(CheckpointError, match=r"missing keys \['model_state', 'step'\]"):
        load_checkpoint(saved)
    with pytest.raises(FileNotFoundError, match="nothing.pt"):
        load_checkpoint(saved.parent / "nothing.pt")


def test_architecture_mismatch_names_the_file_and_the_keys(saved, tmp_path):
    payload = raw_payload(saved)
    wider = micro_config(channels=24).to_dict()
    write_payload(saved, {**payload, "model_config": wider})
    with pytest.raises(CheckpointError, match=r"shape mismatches.*model \(24") as info:
        build_model(load_checkpoint(saved))
    assert str(saved) in str(info.value)
    state = dict(payload["model_state"])
    state.pop("head.1.weight")
    state["extra.bias"] = torch.zeros(2)
    write_payload(saved, {**payload, "model_state": state})
    with pytest.raises(CheckpointError, match=r"1 missing keys: \['head.1.weight'\].*1 unexpected keys"):
        build_model(saved)
    write_payload(saved, {**payload, "model_config": {**payload["model_config"], "horizon": 0}})
    with pytest.raises(CheckpointError, match="invalid model_config.*horizon"):
        build_model(saved)


def test_rng_state_round_trips_through_a_checkpoint(tmp_path, model):
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's legacy state
    state = capture_rng_state()
    expected = (torch.rand(4), np.random.standard_normal(3), [random.random() for _ in range(3)])
    path = save_checkpoint(tmp_path / "r.pt", model=model, step=1, rng_state=state)
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    restore_rng_state(load_checkpoint(path).rng_state)
    got = (torch.rand(4), np.random.standard_normal(3), [random.random() for _ in range(3)])
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    with pytest.raises(ValueError, match="state: expected a dict with keys"):
        restore_rng_state({"torch": torch.get_rng_state()})
