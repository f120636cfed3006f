"""Training loop: one step against a hand computation, exact resume (stop / Ctrl-C), outputs, config errors."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
from pathlib import Path

import pytest
import torch

from pointworld.data.augment import default_augmentation
from pointworld.data.clip_dataset import ClipDataset, ClipDatasetConfig
from pointworld.data.collate import collate_clips
from pointworld.data.sampling import ClipSampler
from pointworld.errors import CheckpointError
from pointworld.model.backbone import BackboneConfig
from pointworld.model.loss import heteroscedastic_huber_loss
from pointworld.model.world_model import WorldModel
from pointworld.model.world_model_config import WorldModelConfig
from pointworld.train import loop
from pointworld.train.checkpoint import build_model, load_checkpoint, save_checkpoint
from pointworld.train.config import OptimConfig, TrainConfig
from pointworld.train.interrupt import deferred_interrupt
from pointworld.train.loop import step_seed, train
from pointworld.train.schedule import build_optimizer, lr_factor

T = 4


def micro_model(horizon: int = T) -> WorldModelConfig:
    """Two-level encoder, one-level mixer (as in tests/model/test_world_model.py); drop path on, so the
    steps use the RNG (drop path, order shuffles, robot-type dropout) and resume must restore it."""
    bb = BackboneConfig(in_channels=1, enc_depths=(1, 1), enc_channels=(16, 32), enc_heads=(2, 2),
                        enc_patch_size=(64, 64), dec_depths=(1,), dec_channels=(16,), dec_heads=(2,),
                        dec_patch_size=(64,), drop_path=0.2)
    return WorldModelConfig(encoder=bb, mixer=bb, horizon=horizon,
                            token_channels=16, head_hidden=32, robot_type_dropout=0.3)


@pytest.fixture(scope="module", autouse=True)
def deterministic_kernels():
    """Bitwise-reproducible CPU backward passes (by default the scatter/index backward kernels sum in a
    thread-dependent order, so gradients differ in the last bits between runs; losses then agree to ~1e-7)."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


@pytest.fixture(autouse=True)
def python_sigint_handler():
    """Run each test with Python's own SIGINT handler: a job started in the background by a shell without
    job control inherits SIGINT ignored, which ``deferred_interrupt`` rightly leaves ignored."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, write_tiny_dataset) -> str:
    return write_tiny_dataset(tmp_path_factory.mktemp("clips"), robot="franka_panda", horizon=T)


def make_config(data_dir: str, out: Path, **overrides) -> TrainConfig:
    data = ClipDatasetConfig(sources=({"path": data_dir},), split="all", max_points=128, robot_points=32)
    val = dataclasses.replace(data, random_views=False, max_points=256)  # keeps a few moving points
    fields = {"data": data, "val_data": val, "model": micro_model(), "out": str(out), "steps": 4,
              "batch_size": 2, "optim": OptimConfig(lr=2e-3, warmup_steps=2), "log_every": 1, "val_every": 3,
              "val_batches": 2, "checkpoint_every": 2, "normalization_batches": 1, "device": "cpu", "seed": 3}
    return TrainConfig(**{**fields, **overrides})


@pytest.fixture(scope="module")
def full_run(data_dir, tmp_path_factory) -> tuple[TrainConfig, dict]:
    """An uninterrupted 4-step run (augmentation, validation at steps 3 and 4, checkpoints every 2)."""
    config = make_config(data_dir, tmp_path_factory.mktemp("full"))
    return config, train(config, progress=False)


def test_full_run_writes_its_outputs(full_run):
    config, summary = full_run
    out = Path(config.out)
    assert summary["finished"] and summary["step"] == 4
    assert [s for s, _ in summary["losses"]] == [1, 2, 3, 4]
    assert all(math.isfinite(v) for _, v in summary["losses"])
    assert math.isfinite(summary["val"]["l2"]) and summary["clips_per_s"] > 0
    assert TrainConfig.from_dict(json.loads((out / "train_config.json").read_text())) == config
    last, best = load_checkpoint(out / "last.pt"), load_checkpoint(out / "best.pt")
    assert last.step == 4 and last.optimizer_state is not None and last.rng_state is not None
    assert best.optimizer_state is None and best.metrics["best_l2_moved"] == summary["best_l2_moved"]
    assert last.dataset["clips"] == 4
    assert any(p.name.startswith("events.out.tfevents") for p in (out / "tb").iterdir())


def _independent_first_step(config: TrainConfig, norm_state: dict) -> tuple[float, dict]:
    """Step 1 recomputed by hand: same init and normalization, the sampler's first batch, the step's seed,
    the loss, then AdamW's first update written out (m_hat = g, v_hat = g^2)."""
    torch.manual_seed(config.seed)
    model = WorldModel(config.model).train()
    model.load_state_dict(norm_state, strict=False)
    ds = ClipDataset(config.data, augment=default_augmentation())
    sampler = ClipSampler(ds.sizes_per_source(), [1.0], config.steps * config.batch_size, seed=config.seed)
    batch = collate_clips([ds[i] for i in list(sampler)[:config.batch_size]])
    torch.manual_seed(step_seed(config.seed, 0, 0))
    pred = model(batch.scene, batch.action)
    loss, _ = heteroscedastic_huber_loss(pred.displacement, pred.log_var, batch.target, batch.valid,
                                         model.displacement_scale.scale, config.loss)
    loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads.values()))
    clip = min(1.0, config.optim.grad_clip / (float(norm) + 1e-6))
    lr = config.optim.lr * lr_factor(0, config.steps, config.optim)
    embeddings = ("time_embedding.weight", "robot_embedding.weight")
    expected = {}
    for name, p in model.named_parameters():
        if name not in grads:  # AdamW skips parameters without a gradient
            expected[name] = p.detach().clone()
            continue
        g = grads[name] * clip
        decay = config.optim.weight_decay if p.dim() >= 2 and name not in embeddings else 0.0
        expected[name] = p.detach() * (1 - lr * decay) - lr * g / (g.abs() + 1e-8)
    return float(loss.detach()), expected


def test_first_step_matches_a_hand_computation(data_dir, tmp_path):
    config = make_config(data_dir, tmp_path, steps=1, val_data=None)
    summary = train(config, progress=False)
    state = load_checkpoint(tmp_path / "last.pt").model_state
    norm_state = {k: v for k, v in state.items() if k.startswith(("scene_norm", "robot_norm", "displacement"))}
    loss, expected = _independent_first_step(config, norm_state)
    assert summary["losses"][0][0] == 1
    assert summary["losses"][0][1] == pytest.approx(loss, rel=1e-6, abs=1e-7)
    for name, value in expected.items():
        torch.testing.assert_close(state[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert any(not torch.equal(state[n], v) for n, v in WorldModel(config.model).state_dict().items()
               if n in expected)


def _assert_same_losses(summary: dict, reference: dict, steps: range) -> None:
    """``summary`` ran exactly ``steps`` and its losses equal the reference run's at those steps (bitwise)."""
    assert [s for s, _ in summary["losses"]] == list(steps)
    expected = dict(reference["losses"])
    assert {s: loss for s, loss in summary["losses"]} == {s: expected[s] for s in steps}


def test_resume_after_a_stop_reproduces_the_uninterrupted_losses(full_run, data_dir, tmp_path):
    reference_config, reference = full_run
    config = dataclasses.replace(reference_config, out=str(tmp_path))
    first = train(config, progress=False, stop_at_step=2)
    assert first["step"] == 2 and not first["finished"]
    assert load_checkpoint(tmp_path / "last.pt").step == 2
    _assert_same_losses(first, reference, range(1, 3))
    # clips depend on (seed, epoch, index) only, so loading them in a worker process changes nothing
    resumed = train(dataclasses.replace(config, resume=True, num_workers=1), progress=False)
    _assert_same_losses(resumed, reference, range(3, 5))
    assert json.dumps(resumed["val"], sort_keys=True) == json.dumps(reference["val"], sort_keys=True)  # NaN-safe
    a = load_checkpoint(tmp_path / "last.pt").model_state
    b = load_checkpoint(Path(reference_config.out) / "last.pt").model_state
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in b)


def test_second_signal_interrupts_at_once_and_handlers_are_restored():
    before = signal.getsignal(signal.SIGINT)
    with deferred_interrupt() as flag:
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_saves_last_checkpoint_and_resume_continues_exactly(full_run, tmp_path, monkeypatch, signum):
    reference_config, reference = full_run
    config = dataclasses.replace(reference_config, out=str(tmp_path))
    calls = []

    def loss_then_sigint(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # during step 1: deferred, honoured at the end of the step
            os.kill(os.getpid(), signum)
        return heteroscedastic_huber_loss(*args, **kwargs)

    monkeypatch.setattr(loop, "heteroscedastic_huber_loss", loss_then_sigint)
    with pytest.raises(KeyboardInterrupt):
        train(config, progress=False)
    assert load_checkpoint(tmp_path / "last.pt").step == 1
    monkeypatch.undo()
    resumed = train(dataclasses.replace(config, resume=True), progress=False)
    _assert_same_losses(resumed, reference, range(2, 5))


def test_non_finite_loss_stops_before_a_checkpoint_is_written(data_dir, tmp_path, monkeypatch):
    def nan_at_step_2(*args, **kwargs):
        loss, stats = heteroscedastic_huber_loss(*args, **kwargs)
        nan_at_step_2.calls += 1
        return (loss * math.nan if nan_at_step_2.calls == 2 else loss), stats

    nan_at_step_2.calls = 0
    monkeypatch.setattr(loop, "heteroscedastic_huber_loss", nan_at_step_2)
    config = make_config(data_dir, tmp_path, log_every=5, checkpoint_every=2, val_data=None)
    with pytest.raises(FloatingPointError, match=r"not finite at steps \[2\]"):
        train(config, progress=False)
    assert not (tmp_path / "last.pt").exists()


def test_lr_schedule_matches_closed_form():
    cfg = OptimConfig(lr=1.0, warmup_steps=4, min_lr_ratio=0.1)
    assert [lr_factor(s, 20, cfg) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_factor(4, 20, cfg) == pytest.approx(1.0)
    assert lr_factor(19, 20, cfg) == pytest.approx(0.1)
    mid = 4 + (19 - 4) / 2
    assert lr_factor(int(mid), 20, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 7 / 15)))
    assert lr_factor(10, 20, dataclasses.replace(cfg, schedule="constant")) == 1.0
    with pytest.raises(ValueError, match="step"):
        lr_factor(-1, 20, cfg)


def test_weight_decay_only_on_weight_matrices():
    model = WorldModel(micro_model())
    decay, plain = build_optimizer(model, OptimConfig(weight_decay=0.1)).param_groups
    assert decay["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    ids = {id(p) for p in decay["params"]}
    assert id(model.robot_embedding.weight) not in ids and id(model.film.bias) not in ids
    assert id(model.film.weight) in ids
    assert len(decay["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_config_validation_and_round_trip(data_dir, tmp_path):
    config = make_config(data_dir, tmp_path)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="robot_types"):
        make_config(data_dir, tmp_path, model=dataclasses.replace(micro_model(), robot_types=("ur5e_gripper",)))
    with pytest.raises(ValueError, match="image_feature_channels"):
        make_config(data_dir, tmp_path, model=dataclasses.replace(micro_model(), image_feature_channels=8))
    with pytest.raises(ValueError, match="steps"):
        make_config(data_dir, tmp_path, steps=0)
    with pytest.raises(ValueError, match="device"):
        make_config(data_dir, tmp_path, device="tpu")
    with pytest.raises(TypeError, match="optim"):
        make_config(data_dir, tmp_path, optim=3)
    with pytest.raises(ValueError, match="schedule"):
        OptimConfig(schedule="linear")
    with pytest.raises(ValueError, match="betas"):
        OptimConfig(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="unknown TrainConfig fields"):
        TrainConfig.from_dict({**config.to_dict(), "epochs": 3})
    with pytest.raises(TypeError, match="config"):
        train(config.to_dict(), progress=False)


def test_horizon_mismatch_and_foreign_checkpoint_are_reported(data_dir, tmp_path):
    with pytest.raises(ValueError, match="horizon"):
        train(make_config(data_dir, tmp_path / "a", model=micro_model(horizon=3), steps=1), progress=False)
    train(make_config(data_dir, tmp_path / "b", steps=1, val_data=None), progress=False)
    other = dataclasses.replace(micro_model(), head_hidden=16)
    with pytest.raises(CheckpointError, match="model_config"):
        train(make_config(data_dir, tmp_path / "b", model=other, steps=2, resume=True), progress=False)


def _state_before_first_step(config: TrainConfig, monkeypatch) -> tuple[dict[str, torch.Tensor], dict]:
    """The model's state (weights and normalization) just before optimizer step 1 of ``train(config)``, and
    the run's summary."""
    first, real_step = {}, loop._train_step

    def spy(run, batch):
        first.setdefault("state", {k: v.clone() for k, v in run.model.state_dict().items()})
        return real_step(run, batch)

    monkeypatch.setattr(loop, "_train_step", spy)
    summary = train(config, progress=False)
    monkeypatch.setattr(loop, "_train_step", real_step)
    return first["state"], summary


def test_init_from_starts_a_new_run_from_a_checkpoints_weights(full_run, data_dir, tmp_path, monkeypatch):
    from pointworld.model.segment_prior import SegmentFollowConfig

    config, _ = full_run
    source = Path(config.out) / "last.pt"
    # the prior adds no weights: the trained micro model fine-tunes with it switched on
    model = dataclasses.replace(micro_model(), segment_prior=SegmentFollowConfig())
    tuned = make_config(data_dir, tmp_path / "tuned", model=model, init_from=str(source), steps=2, val_every=0)
    first, summary = _state_before_first_step(tuned, monkeypatch)
    assert summary["step"] == 2 and load_checkpoint(tmp_path / "tuned" / "last.pt").step == 2
    want = load_checkpoint(source).model_state
    assert set(first) == set(want)
    for k, v in want.items():  # weights and normalization statistics, before step 1
        got = first[k]
        if k == "scene_token.0.weight":  # gained the prior's 3 T input channels, at zero weight
            assert got.shape == (v.shape[0], v.shape[1] + 3 * T)
            assert torch.equal(got[:, :v.shape[1]], v) and not got[:, v.shape[1]:].any()
        else:
            assert torch.equal(got, v), k
    wider = dataclasses.replace(micro_model(), token_channels=24)
    bad = make_config(data_dir, tmp_path / "bad", model=wider, init_from=str(source))
    with pytest.raises(CheckpointError, match=r"last\.pt: init_from: .*token"):
        train(bad, progress=False)
    with pytest.raises(ValueError, match="init_from"):
        make_config(data_dir, tmp_path / "x", init_from="")


def test_init_from_refits_a_displacement_scale_fitted_with_another_threshold(full_run, data_dir, tmp_path,
                                                                             monkeypatch):
    config, _ = full_run
    trained = build_model(Path(config.out) / "last.pt")  # scale_moving_threshold_m = 0: all points
    trained.displacement_scale.scale.copy_(torch.linspace(0.01, 0.04, T, dtype=torch.float64))  # recognisable
    source = load_checkpoint(save_checkpoint(tmp_path / "source.pt", model=trained, step=4))
    model = dataclasses.replace(micro_model(), scale_moving_threshold_m=0.002)
    common = {"model": model, "steps": 1, "val_every": 0}
    tuned, _ = _state_before_first_step(
        make_config(data_dir, tmp_path / "tuned", init_from=str(source.path), **common), monkeypatch)
    fresh, _ = _state_before_first_step(make_config(data_dir, tmp_path / "fresh", **common), monkeypatch)
    # the scale is the one a new run with this threshold fits on the same normalization batches ...
    for k in ("scale", "sum_sq", "count"):
        assert torch.equal(tuned[f"displacement_scale.{k}"], fresh[f"displacement_scale.{k}"]), k
    assert not torch.allclose(tuned["displacement_scale.scale"], source.model_state["displacement_scale.scale"])
    # ... the head's displacement outputs restart at zero, and everything else is the checkpoint's
    n = 3 * T
    for k in ("head.3.weight", "head.3.bias"):
        assert not tuned[k][:n].any() and torch.equal(tuned[k][n:], source.model_state[k][n:])
    kept = [k for k in source.model_state if not k.startswith(("displacement_scale.", "head.3."))]
    assert any(k.startswith("scene_norm.") for k in kept)
    for k in kept:
        assert torch.equal(tuned[k], source.model_state[k]), k


def test_zero_displacement_head_predicts_no_motion(data_dir):
    ds = ClipDataset(ClipDatasetConfig(sources=({"path": data_dir},), split="all", max_points=128, robot_points=32))
    batch = collate_clips([ds[0], ds[1]])
    model = WorldModel(micro_model())
    model.update_normalization(batch.scene, batch.action, batch.target, batch.valid)
    model.finalize_normalization()
    model.eval()
    before = model(batch.scene, batch.action)
    model.zero_displacement_head()
    after = model(batch.scene, batch.action)
    assert before.displacement.abs().amax() > 0 and not after.displacement.any()
    assert torch.equal(after.log_var, before.log_var)  # the variance head is untouched
