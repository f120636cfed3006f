"""load_pretrained: explicit paths, the bundled file, and the error when the bundled file is missing."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pointworld
from pointworld.errors import CheckpointError
from pointworld.model.backbone import BackboneConfig
from pointworld.model.synthetic import synthetic_push_batch
from pointworld.model.world_model import WorldModel
from pointworld.model.world_model_config import WorldModelConfig
from pointworld.train import pretrained
from pointworld.train.checkpoint import load_checkpoint, save_checkpoint
from pointworld.train.pretrained import PRETRAINED_PATH, load_pretrained

T = 2


def micro_model() -> WorldModel:
    backbone = BackboneConfig(in_channels=1, enc_depths=(1, 1), enc_channels=(8, 16), enc_heads=(1, 2),
                              enc_patch_size=(64, 64), dec_depths=(1,), dec_channels=(8,), dec_heads=(1,),
                              dec_patch_size=(64,))
    torch.manual_seed(0)
    model = WorldModel(WorldModelConfig(encoder=backbone, mixer=backbone, horizon=T, token_channels=8,
                                        head_hidden=16))
    model.update_normalization(*synthetic_push_batch(2, 48, 6, T, seed=21))
    model.finalize_normalization()
    return model.eval()


def test_bundled_path_is_inside_the_package():
    assert PRETRAINED_PATH.resolve() == (Path(pointworld.__file__).parent / "checkpoints" / "tiny.pt").resolve()


def test_load_pretrained_from_an_explicit_path(tmp_path):
    model = micro_model()
    path = save_checkpoint(tmp_path / "m.pt", model=model, step=3)
    loaded = load_pretrained(str(path))
    assert isinstance(loaded, WorldModel) and not loaded.training and loaded.fitted
    scene, action, _, _ = synthetic_push_batch(1, 40, 6, T, seed=22)
    assert torch.equal(loaded.predict(scene, action).displacement, model.predict(scene, action).displacement)
    assert next(loaded.parameters()).device == torch.device("cpu")


def test_missing_bundled_file_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "PRETRAINED_PATH", tmp_path / "checkpoints" / "tiny.pt")
    with pytest.raises(FileNotFoundError, match=r"tiny\.pt: the bundled pretrained checkpoint is missing.*path="):
        load_pretrained()
    with pytest.raises(FileNotFoundError, match=r"tiny\.pt: the bundled"):  # the CLI's checkpoint=default
        load_pretrained("default")
    with pytest.raises(FileNotFoundError, match="elsewhere.pt"):
        load_pretrained(tmp_path / "elsewhere.pt")


def test_bundled_path_that_is_not_a_checkpoint_raises_checkpoint_error(tmp_path, monkeypatch):
    fake = tmp_path / "tiny.pt"
    fake.write_bytes(b"not a checkpoint")
    monkeypatch.setattr(pretrained, "PRETRAINED_PATH", fake)
    with pytest.raises(CheckpointError, match="tiny.pt: not a readable checkpoint"):
        load_pretrained()


@pytest.mark.skipif(not PRETRAINED_PATH.exists(), reason="the bundled checkpoint is not shipped yet")
def test_bundled_checkpoint_loads_and_predicts_finite_flow():
    ckpt = load_checkpoint(PRETRAINED_PATH)
    assert ckpt.step > 0 and ckpt.dataset is not None and ckpt.metrics is not None
    model = load_pretrained()
    assert isinstance(model, WorldModel) and not model.training and model.fitted
    scene, action, _, _ = synthetic_push_batch(1, 64, 8, model.config.horizon, seed=23)
    pred = model.predict(scene, action)
    assert pred.displacement.shape == (1, model.config.horizon, 64, 3)
    assert torch.isfinite(pred.displacement).all() and torch.isfinite(pred.log_var).all()
