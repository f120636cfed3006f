"""World model: shapes, broadcasting over candidate actions, invariances, gradients, errors, overfitting."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from pointworld.model.backbone import BackboneConfig
from pointworld.model.inputs import ActionInput, SceneInput
from pointworld.model.loss import LossConfig, heteroscedastic_huber_loss
from pointworld.model.synthetic import synthetic_push_batch
from pointworld.model.world_model import WorldModel
from pointworld.model.world_model_config import WorldModelConfig

T = 4


def micro_config(patch: int = 64, **overrides) -> WorldModelConfig:
    """A two-level encoder and a one-level mixer, small enough for fast CPU tests."""
    enc = BackboneConfig(in_channels=1, enc_depths=(1, 1), enc_channels=(16, 32), enc_heads=(2, 2),
                         enc_patch_size=(patch, patch), dec_depths=(1,), dec_channels=(16,), dec_heads=(2,),
                         dec_patch_size=(patch,))
    mix = BackboneConfig(in_channels=1, enc_depths=(1, 1), enc_channels=(16, 32), enc_heads=(2, 2),
                         enc_patch_size=(patch, patch), dec_depths=(1,), dec_channels=(16,), dec_heads=(2,),
                         dec_patch_size=(patch,))
    return WorldModelConfig(**{"encoder": enc, "mixer": mix, "horizon": T, "token_channels": 16,
                               "head_hidden": 32, **overrides})


def fitted_model(config: WorldModelConfig, dtype: torch.dtype = torch.float32, seed: int = 0) -> WorldModel:
    torch.manual_seed(seed)
    model = WorldModel(config).to(dtype)
    scene, action, target, valid = synthetic_push_batch(4, 96, 12, T, seed=123, dtype=dtype)
    model.update_normalization(scene, action, target, valid)
    model.finalize_normalization()
    return model


def test_shapes_padding_and_different_counts():
    model = fitted_model(micro_config()).eval()
    scene, action, _, _ = synthetic_push_batch(2, 80, 10, T, seed=1)
    mask = scene.mask.clone()
    mask[1, 50:] = False  # the second cloud has 50 points
    scene = dataclasses.replace(scene, mask=mask)
    pred = model.predict(scene, action)
    assert pred.displacement.shape == (2, T, 80, 3) and pred.log_var.shape == (2, T, 80)
    assert torch.isfinite(pred.displacement).all() and torch.isfinite(pred.log_var).all()
    assert (pred.displacement[1, :, 50:] == 0).all() and (pred.log_var[1, :, 50:] == 0).all()


def test_one_scene_many_actions_reuses_the_encoding():
    model = fitted_model(micro_config(), torch.float64).eval()
    scene, _, _, _ = synthetic_push_batch(1, 64, 8, T, seed=2, dtype=torch.float64)
    _, action, _, _ = synthetic_push_batch(3, 64, 8, T, seed=3, dtype=torch.float64)
    encoding = model.encode_scene(scene)
    cached = model.predict(encoding, action)
    direct = model.predict(scene, action)
    expanded = model.predict(scene.expand(3), action)
    torch.testing.assert_close(cached.displacement, direct.displacement, rtol=0, atol=1e-12)
    torch.testing.assert_close(cached.displacement, expanded.displacement, rtol=1e-9, atol=1e-12)
    for k in range(3):
        one = ActionInput(action.flow[k:k + 1], action.mask[k:k + 1], action.robot_type[k:k + 1])
        torch.testing.assert_close(model.predict(encoding, one).displacement[0], cached.displacement[k],
                                   rtol=1e-9, atol=1e-12)


def test_prediction_is_invariant_to_the_order_of_input_points():
    model = fitted_model(micro_config(patch=512), torch.float64).eval()  # every cloud is one patch
    scene, action, _, _ = synthetic_push_batch(1, 96, 12, T, seed=4, dtype=torch.float64)
    pred = model.predict(scene, action)
    perm, rperm = torch.randperm(96), torch.randperm(12)
    scene_p = SceneInput(scene.points[:, perm], scene.colors[:, perm], scene.normals[:, perm], scene.mask[:, perm])
    action_p = ActionInput(action.flow[:, :, rperm], action.mask[:, rperm], action.robot_type)
    pred_p = model.predict(scene_p, action_p)
    torch.testing.assert_close(pred_p.displacement, pred.displacement[:, :, perm], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(pred_p.log_var, pred.log_var[:, :, perm], rtol=1e-9, atol=1e-12)


def test_shifting_scene_and_robot_by_grid_multiples_leaves_displacements_unchanged():
    config = micro_config()
    model = fitted_model(config, torch.float64).eval()
    scene, action, _, _ = synthetic_push_batch(2, 80, 10, T, seed=5, dtype=torch.float64)
    shift = torch.tensor([7.0, -3.0, 2.0], dtype=torch.float64) * config.encoder.grid_size_m
    flow = action.flow.clone()
    flow[..., :3] += shift
    moved = model.predict(dataclasses.replace(scene, points=scene.points + shift),
                          ActionInput(flow, action.mask, action.robot_type))
    pred = model.predict(scene, action)
    torch.testing.assert_close(moved.displacement, pred.displacement, rtol=1e-7, atol=1e-10)
    torch.testing.assert_close(moved.log_var, pred.log_var, rtol=1e-7, atol=1e-9)


def test_gradient_reaches_every_parameter():
    model = fitted_model(micro_config(robot_type_dropout=0.0)).train()
    scene, action, target, valid = synthetic_push_batch(2, 64, 8, T, seed=6)
    pred = model(scene, action)
    loss, _ = heteroscedastic_huber_loss(pred.displacement, pred.log_var, target, valid,
                                         model.displacement_scale.scale, LossConfig())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        used = p.grad[action.robot_type] if name == "robot_embedding.weight" else p.grad  # rows of seen robots
        assert used.abs().sum() > 0, name


def test_errors_name_the_problem():
    model = WorldModel(micro_config())
    scene, action, _, _ = synthetic_push_batch(2, 32, 4, T, seed=7)
    with pytest.raises(RuntimeError, match="normalization"):
        model.predict(scene, action)
    model = fitted_model(micro_config()).eval()
    _, long_action, _, _ = synthetic_push_batch(2, 32, 4, T + 2, seed=7)
    with pytest.raises(ValueError, match="T = 4"):
        model.predict(scene, long_action)
    _, three, _, _ = synthetic_push_batch(3, 32, 4, T, seed=7)
    with pytest.raises(ValueError, match="scene"):
        model.predict(scene, three)
    with_features = dataclasses.replace(scene, image_features=torch.zeros(2, 32, 5))
    with pytest.raises(ValueError, match="image_features"):
        model.predict(with_features, action)
    with pytest.raises(TypeError, match="config"):
        WorldModel({"horizon": 4})


def test_config_round_trips_through_plain_data():
    config = micro_config()
    again = WorldModelConfig.from_dict(config.to_dict())
    assert again == config
    with pytest.raises(ValueError, match="unknown"):
        WorldModelConfig.from_dict({**config.to_dict(), "bogus": 1})
    with pytest.raises(ValueError, match="robot_type_dropout"):
        micro_config(robot_type_dropout=1.0)
    assert config.robot_type_index("franka_panda") == 1 and config.robot_type_index("new_robot") == 0


@pytest.mark.slow
def test_tiny_model_overfits_one_batch():
    """The mean error on moving points falls at least 10x within a few hundred CPU steps."""
    model = fitted_model(micro_config(robot_type_dropout=0.0))
    scene, action, target, valid = synthetic_push_batch(2, 256, 16, T, seed=8)
    moving = target.norm(dim=-1).amax(1) > 0.01  # (B, N)

    def moved_error() -> float:
        with torch.no_grad():
            pred = model.eval()(scene, action)
        model.train()
        err = (pred.displacement - target).norm(dim=-1).mean(1)
        return float(err[moving].mean())

    start = moved_error()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):
        pred = model(scene, action)
        loss, _ = heteroscedastic_huber_loss(pred.displacement, pred.log_var, target, valid,
                                             model.displacement_scale.scale, LossConfig())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert moved_error() < start / 10


def test_robot_motion_features_change_the_token_width_and_keep_invariances():
    config = micro_config(robot_motion_features=True)
    model = fitted_model(config, torch.float64).eval()
    assert model.scene_token[0].in_features == model.encoder.out_channels + 2 * (T + 1) + 3 * T
    scene, action, _, _ = synthetic_push_batch(2, 80, 10, T, seed=9, dtype=torch.float64)
    shift = torch.tensor([3.0, 1.0, -2.0], dtype=torch.float64) * config.encoder.grid_size_m
    flow = action.flow.clone()
    flow[..., :3] += shift
    moved = model.predict(dataclasses.replace(scene, points=scene.points + shift),
                          ActionInput(flow, action.mask, action.robot_type))
    torch.testing.assert_close(moved.displacement, model.predict(scene, action).displacement, rtol=1e-7, atol=1e-10)


def test_scale_moving_threshold_reaches_the_displacement_scale_and_is_validated():
    model = WorldModel(micro_config(scale_moving_threshold_m=0.005))
    assert model.displacement_scale.moving_threshold_m == 0.005
    assert WorldModel(micro_config()).displacement_scale.moving_threshold_m == 0.0  # old checkpoints: all points
    restored = WorldModelConfig.from_dict(micro_config(scale_moving_threshold_m=0.01).to_dict())
    assert restored.scale_moving_threshold_m == 0.01
    for bad in (-1.0, float("inf"), True):
        with pytest.raises(ValueError, match="scale_moving_threshold_m"):
            micro_config(scale_moving_threshold_m=bad)
