"""Heteroscedastic Huber loss and moving weights against naive per-entry loops and analytic optima."""

from __future__ import annotations

import math
import os

import pytest
import torch

from pointworld.model.loss import LossConfig, heteroscedastic_huber_loss, moving_weight

DEVICE = torch.device(os.environ.get("POINTWORLD_TEST_DEVICE", "cuda"))


def _inputs(seed: int, b: int = 2, t: int = 3, n: int = 7, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(b, t, n, 3, generator=gen, dtype=dtype) * 0.01
    disp = target + torch.randn(b, t, n, 3, generator=gen, dtype=dtype) * 0.02  # both Huber branches
    log_var = torch.randn(b, t, n, generator=gen, dtype=dtype) - 8.0
    valid = torch.rand(b, t, n, generator=gen) < 0.75
    scale = torch.rand(t, generator=gen, dtype=dtype) * 0.02 + 0.005
    return disp, log_var, target, valid, scale


def _naive_weight(target, valid, cfg: LossConfig):
    b_, t_, n_ = valid.shape
    out = torch.zeros(b_, n_, dtype=torch.float64)
    for b in range(b_):
        for n in range(n_):
            s = 0.0
            for t in range(t_):
                prev_ok = t == 0 or bool(valid[b, t - 1, n])
                if valid[b, t, n] and prev_ok:
                    prev = [0.0, 0.0, 0.0] if t == 0 else target[b, t - 1, n].tolist()
                    cur = target[b, t, n].tolist()
                    s = max(s, math.sqrt(sum((c - p) ** 2 for c, p in zip(cur, prev))))
            z = (s - cfg.moving_threshold_m) / cfg.moving_temperature_m
            out[b, n] = 1.0 + (cfg.moving_weight - 1.0) / (1.0 + math.exp(-z))
    return out


def _naive_loss(disp, log_var, target, valid, scale, cfg: LossConfig) -> float:
    w = _naive_weight(target, valid, cfg)
    num = den = 0.0
    b_, t_, n_ = valid.shape
    for b in range(b_):
        for t in range(t_):
            for n in range(n_):
                if not valid[b, t, n]:
                    continue
                h = 0.0
                for c in range(3):
                    r = abs(float(disp[b, t, n, c] - target[b, t, n, c])) / float(scale[t])
                    d = cfg.huber_delta
                    h += 0.5 * r * r if r < d else d * (r - 0.5 * d)
                lv = float(log_var[b, t, n]) - 2.0 * math.log(float(scale[t]))
                num += float(w[b, n]) * (math.exp(-lv) * h + 1.5 * lv)
                den += float(w[b, n])
    return num / den


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="huber_delta"):
        LossConfig(huber_delta=0.0)
    with pytest.raises(ValueError, match="moving_temperature_m"):
        LossConfig(moving_temperature_m=-1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_moving_weight_matches_naive_loop(seed):
    _, _, target, valid, _ = _inputs(seed)
    cfg = LossConfig()
    torch.testing.assert_close(moving_weight(target, valid, cfg), _naive_weight(target, valid, cfg),
                               rtol=1e-12, atol=1e-12)


def test_moving_weight_one_moving_one_static_point():
    cfg = LossConfig()
    target = torch.zeros(1, 4, 2, 3, dtype=torch.float64)
    target[0, :, 0, 0] = torch.arange(1, 5, dtype=torch.float64) * 0.02  # 2 cm per step
    w = moving_weight(target, torch.ones(1, 4, 2, dtype=torch.bool), cfg)[0]
    static = 1.0 + 149.0 / (1.0 + math.exp(10.0))  # s = 0: sigmoid(-5 mm / 0.5 mm)
    assert w[0].item() == pytest.approx(150.0, abs=1e-4)
    assert w[1].item() == pytest.approx(static, rel=1e-12)
    assert (w[0] / w[1]).item() == pytest.approx(150.0 / static, rel=1e-6)  # ≈ 149 with the defaults
    lone = moving_weight(target, torch.ones(1, 4, 2, dtype=torch.bool),
                         LossConfig(moving_threshold_m=0.01, moving_temperature_m=1e-4))[0]
    assert (lone[0] / lone[1]).item() == pytest.approx(150.0, rel=1e-6)  # static weight -> 1


def test_moving_weight_ignores_steps_after_an_invalid_one():
    target = torch.zeros(1, 3, 1, 3, dtype=torch.float64)
    target[0, 2, 0, 0] = 1.0  # a 1 m jump at t = 2 right after an invalid step
    valid = torch.tensor([[[True], [False], [True]]])
    w = moving_weight(target, valid, LossConfig())
    assert w.item() == pytest.approx(1.0 + 149.0 / (1.0 + math.exp(10.0)), rel=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_naive_loop(seed):
    cfg = LossConfig(huber_delta=0.7, moving_threshold_m=0.01, moving_temperature_m=0.003)
    disp, log_var, target, valid, scale = _inputs(seed)
    loss, stats = heteroscedastic_huber_loss(disp, log_var, target, valid, scale, cfg)
    assert loss.item() == pytest.approx(_naive_loss(disp, log_var, target, valid, scale, cfg), rel=1e-12)
    assert loss.item() == pytest.approx((stats["data"] + 1.5 * stats["log_var"]).item(), rel=1e-12)
    assert not stats["huber"].requires_grad


def test_invalid_entries_have_no_effect_and_no_gradient():
    disp, log_var, target, valid, scale = _inputs(3)
    cfg = LossConfig()
    ref, _ = heteroscedastic_huber_loss(disp, log_var, target, valid, scale, cfg)
    bad = ~valid
    disp_nan = torch.where(bad[..., None], float("nan"), disp).requires_grad_(True)
    lv_nan = torch.where(bad, float("inf"), log_var).requires_grad_(True)
    target_nan = torch.where(bad[..., None], float("nan"), target)
    loss, _ = heteroscedastic_huber_loss(disp_nan, lv_nan, target_nan, valid, scale, cfg)
    assert loss.item() == pytest.approx(ref.item(), rel=1e-14)
    loss.backward()
    assert torch.isfinite(disp_nan.grad).all() and torch.isfinite(lv_nan.grad).all()
    assert (disp_nan.grad[bad] == 0).all() and (lv_nan.grad[bad] == 0).all()
    assert (lv_nan.grad[valid] != 0).all()


def test_no_valid_entry_gives_zero_loss_with_gradient():
    disp, log_var, target, valid, scale = _inputs(4)
    disp.requires_grad_(True)
    loss, stats = heteroscedastic_huber_loss(disp, log_var, target, torch.zeros_like(valid), scale, LossConfig())
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (disp.grad == 0).all()
    assert all(torch.isfinite(v) for v in stats.values())


def test_optimal_log_var_is_log_of_huber_over_1_5():
    cfg = LossConfig(huber_delta=1.0)
    scale = torch.tensor([0.02], dtype=torch.float64)
    target = torch.zeros(1, 1, 1, 3, dtype=torch.float64)
    disp = torch.tensor([0.01, -0.03, 0.005], dtype=torch.float64).reshape(1, 1, 1, 3)
    r = (disp / 0.02).abs().flatten()
    h = float(sum(0.5 * x * x if x < 1.0 else x - 0.5 for x in r))
    best = math.log(h / 1.5) + 2.0 * math.log(0.02)  # raw log_var, log(m^2)
    valid = torch.ones(1, 1, 1, dtype=torch.bool)

    def f(lv: float) -> torch.Tensor:
        x = torch.tensor([[[lv]]], dtype=torch.float64, requires_grad=True)
        return heteroscedastic_huber_loss(disp, x, target, valid, scale, cfg)[0], x

    loss, x = f(best)
    loss.backward()
    assert abs(x.grad.item()) < 1e-12
    eps = 1e-4
    fd = (f(best + eps)[0].item() - f(best - eps)[0].item()) / (2 * eps)
    assert abs(fd) < 1e-8
    assert f(best + 0.1)[0].item() > loss.item() < f(best - 0.1)[0].item()


def test_gradient_matches_finite_differences():
    disp, log_var, target, valid, scale = _inputs(5, b=1, t=2, n=4)
    cfg = LossConfig()
    torch.autograd.gradcheck(
        lambda d, lv: heteroscedastic_huber_loss(d, lv, target, valid, scale, cfg)[0],
        (disp.clone().requires_grad_(True), log_var.clone().requires_grad_(True)), eps=1e-7, atol=1e-6)


def test_loss_is_invariant_to_the_unit_of_length():
    disp, log_var, target, valid, scale = _inputs(6)
    cfg = LossConfig(moving_threshold_m=0.01, moving_temperature_m=0.002)
    c = 37.5
    cfg_c = LossConfig(moving_threshold_m=0.01 * c, moving_temperature_m=0.002 * c)
    a, _ = heteroscedastic_huber_loss(disp, log_var, target, valid, scale, cfg)
    b, _ = heteroscedastic_huber_loss(disp * c, log_var + 2 * math.log(c), target * c, valid, scale * c, cfg_c)
    assert b.item() == pytest.approx(a.item(), rel=1e-12)


def test_float32_agrees_with_float64():
    disp, log_var, target, valid, scale = _inputs(7)
    a, _ = heteroscedastic_huber_loss(disp, log_var, target, valid, scale, LossConfig())
    b, _ = heteroscedastic_huber_loss(disp.float(), log_var.float(), target.float(), valid, scale.float(),
                                      LossConfig())
    assert b.dtype == torch.float32
    assert b.item() == pytest.approx(a.item(), rel=1e-5)


def test_bad_input_is_rejected():
    disp, log_var, target, valid, scale = _inputs(8)
    cfg = LossConfig()
    with pytest.raises(ValueError, match="scale"):
        heteroscedastic_huber_loss(disp, log_var, target, valid, torch.zeros_like(scale), cfg)
    with pytest.raises(ValueError, match="scale"):
        heteroscedastic_huber_loss(disp, log_var, target, valid, scale[:-1], cfg)
    with pytest.raises(ValueError, match="log_var"):
        heteroscedastic_huber_loss(disp, log_var[:, :, :-1], target, valid, scale, cfg)
    with pytest.raises(TypeError, match="valid"):
        heteroscedastic_huber_loss(disp, log_var, target, valid.double(), scale, cfg)
    with pytest.raises(ValueError, match="target"):
        moving_weight(target[..., :2], valid, cfg)


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")
def test_device_matches_cpu():
    disp, log_var, target, valid, scale = _inputs(9)
    ref, _ = heteroscedastic_huber_loss(disp, log_var, target, valid, scale, LossConfig())
    moved = [x.to(DEVICE) for x in (disp, log_var, target, valid, scale)]
    got, stats = heteroscedastic_huber_loss(*moved, LossConfig())
    assert got.device.type == DEVICE.type and stats["huber"].device.type == DEVICE.type
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)


def test_beta_one_gives_the_displacement_the_plain_huber_gradient_whatever_the_variance():
    g = torch.Generator().manual_seed(5)
    target = torch.randn(1, 3, 4, 3, generator=g, dtype=torch.float64) * 0.02
    valid = torch.ones(1, 3, 4, dtype=torch.bool)
    scale = torch.full((3,), 0.01, dtype=torch.float64)
    grads = []
    for lv in (-4.0, 0.0, 3.0):
        disp = torch.zeros(1, 3, 4, 3, dtype=torch.float64, requires_grad=True)
        log_var = torch.full((1, 3, 4), lv, dtype=torch.float64) + 2 * math.log(0.01)
        loss, _ = heteroscedastic_huber_loss(disp, log_var, target, valid, scale, LossConfig(variance_beta=1.0))
        loss.backward()
        grads.append(disp.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=0)
    torch.testing.assert_close(grads[2], grads[1], rtol=1e-12, atol=0)
    plain = torch.zeros(1, 3, 4, 3, dtype=torch.float64, requires_grad=True)
    loss, _ = heteroscedastic_huber_loss(plain, torch.full((1, 3, 4), 2 * math.log(0.01), dtype=torch.float64),
                                         target, valid, scale, LossConfig())
    loss.backward()  # lv = 0 (normalized): beta changes nothing there
    torch.testing.assert_close(grads[1], plain.grad, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="variance_beta"):
        LossConfig(variance_beta=1.5)
