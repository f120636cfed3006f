"""Small shared test fixtures' builders: a micro world model with fitted normalization, its checkpoint, and
a tiny generated simulation dataset (import as ``from tests.micro import ...``)."""

from __future__ import annotations

from pathlib import Path

import torch

from pointworld.model.backbone import BackboneConfig
from pointworld.model.synthetic import synthetic_push_batch
from pointworld.model.world_model import WorldModel
from pointworld.model.world_model_config import WorldModelConfig


def micro_world_model(horizon: int) -> WorldModel:
    """A seeded ~20k-parameter world model predicting ``horizon`` steps, normalization fitted on a synthetic
    push batch, in eval mode (robot types franka_panda, flying_gripper)."""
    def backbone() -> BackboneConfig:
        return BackboneConfig(in_channels=1, enc_depths=(1, 1), enc_channels=(16, 32), enc_heads=(2, 2),
                              enc_patch_size=(64, 64), dec_depths=(1,), dec_channels=(16,), dec_heads=(2,),
                              dec_patch_size=(64,))

    config = WorldModelConfig(encoder=backbone(), mixer=backbone(), horizon=horizon, token_channels=16,
                              head_hidden=32, robot_types=("franka_panda", "flying_gripper"))
    torch.manual_seed(0)
    model = WorldModel(config)
    model.update_normalization(*synthetic_push_batch(4, 96, 12, horizon, seed=123))
    model.finalize_normalization()
    return model.eval()


def micro_checkpoint(path: Path, horizon: int) -> Path:
    """:func:`micro_world_model` saved as a checkpoint at ``path`` (step 1); returns the path."""
    from pointworld.train.checkpoint import save_checkpoint

    return save_checkpoint(path, model=micro_world_model(horizon), step=1)


def tiny_dataset(out: Path, episodes: int, horizon: int, max_objects: int = 1) -> Path:
    """A tiny Franka push dataset (2 clips per episode, 2 views of 96 x 72, no drawer, every episode in the
    train split) generated into ``out``; returns ``out``."""
    from pointworld.data.generate import generate_dataset
    from pointworld.data.generate_config import GenerateConfig

    generate_dataset(GenerateConfig(robot="franka_panda", episodes=episodes, clips_per_episode=2, horizon=horizon,
                                    n_views=2, width=96, height=72, max_points=512, workers=1, out=str(out),
                                    scene={"include_drawer": False, "n_objects": [1, max_objects]},
                                    val_fraction=0.0, test_fraction=0.0), progress=False)
    return out
