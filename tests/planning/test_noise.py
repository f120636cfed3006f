"""Sampling noise of the optimizers: colored-noise spectrum (NumPy FFT) and variance, clipped candidates,
warm-start shift, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from pointworld.planning.noise import colored_noise, sample_actions, shift_warm_start

T, D = 5, 3


def test_sample_actions_bounds_and_mean() -> None:
    g = torch.Generator().manual_seed(0)
    mean = torch.linspace(-1, 1, T * D).reshape(T, D)
    low, high = torch.tensor([-0.5, -0.5, -0.5]), torch.tensor([0.5, 0.6, 0.7])
    s = sample_actions(mean, 0.5, 200, 2.0, g, low, high)
    assert s.shape == (200, T, D) and s.dtype == torch.float32
    assert bool((s >= low).all()) and bool((s <= high).all())
    assert torch.equal(s[0], torch.minimum(torch.maximum(mean, low), high))
    free = sample_actions(mean.double(), torch.tensor([0.1, 0.2, 0.0]), 4000, 0.0, g, include_mean=False)
    assert free.dtype == torch.float64
    std = (free - mean.double()).std(0)
    assert torch.allclose(std, torch.tensor([0.1, 0.2, 0.0], dtype=torch.float64).expand(T, D), atol=0.01)


def _spectrum_slope(x: np.ndarray) -> float:
    """Least-squares slope of log mean periodogram vs log frequency (NumPy FFT, interior bins)."""
    n = x.shape[-1]
    power = (np.abs(np.fft.rfft(x, axis=-1)) ** 2).mean(0)
    k = np.arange(1, n // 2)
    return float(np.polyfit(np.log(k / n), np.log(power[k]), 1)[0])


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_colored_noise_spectrum_and_variance(beta: float) -> None:
    g = torch.Generator().manual_seed(3)
    noise = colored_noise((4000, 128, 2), beta, g, dtype=torch.float64)
    assert noise.shape == (4000, 128, 2) and noise.dtype == torch.float64
    x = noise.permute(0, 2, 1).reshape(-1, 128).numpy()
    assert _spectrum_slope(x) == pytest.approx(-beta, abs=0.08)
    var = x.var(0)  # per time step, across 8000 independent series
    assert np.allclose(var, 1.0, atol=0.1) and abs(var.mean() - 1.0) < 0.02
    assert abs(x.mean()) < 0.05


@pytest.mark.parametrize("horizon", [1, 2, 7, 10])
def test_colored_noise_unit_variance_short_horizons(horizon: int) -> None:
    g = torch.Generator().manual_seed(4)
    x = colored_noise((20000, horizon, 1), 2.0, g, dtype=torch.float64)[..., 0].numpy()
    assert np.allclose(x.var(0), 1.0, atol=0.05)
    if horizon >= 7:  # beta = 2 is strongly correlated between neighbouring steps; white noise is not
        assert np.corrcoef(x[:, 0], x[:, 1])[0, 1] > 0.3
        white = colored_noise((20000, horizon, 1), 0.0, g, dtype=torch.float64)[..., 0].numpy()
        assert abs(np.corrcoef(white[:, 0], white[:, 1])[0, 1]) < 0.03


def test_shift_warm_start() -> None:
    mean = torch.arange(T * 2, dtype=torch.float32).reshape(T, 2)
    z = shift_warm_start(mean, 2)
    assert torch.equal(z[:3], mean[2:]) and torch.equal(z[3:], torch.zeros(2, 2))
    last = shift_warm_start(mean, 2, fill="last")
    assert torch.equal(last[3:], mean[-1].expand(2, 2))
    custom = shift_warm_start(mean, 1, fill=torch.tensor([0.0, 1.0]))
    assert torch.equal(custom[-1], torch.tensor([0.0, 1.0])) and torch.equal(custom[:-1], mean[1:])
    assert torch.equal(shift_warm_start(mean, 0), mean)
    assert torch.equal(shift_warm_start(mean, T, fill="last"), mean[-1].expand(T, 2))


def test_bad_arguments() -> None:
    mean = torch.zeros(T, D, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="low, high"):
        sample_actions(mean, 0.1, 4, 2.0, g, torch.ones(D), torch.zeros(D))
    with pytest.raises(ValueError, match="std"):
        sample_actions(mean, torch.ones(D + 1), 4, 2.0, g)
    with pytest.raises(ValueError, match="std"):
        sample_actions(mean, -0.1, 4, 2.0, g)
    with pytest.raises(ValueError, match="shape"):
        colored_noise((5,), 1.0, g)
    with pytest.raises(ValueError, match="beta"):
        colored_noise((2, 5, 1), math.nan, g)
    with pytest.raises(ValueError, match="steps"):
        shift_warm_start(mean, T + 1)
    with pytest.raises(ValueError, match="fill"):
        shift_warm_start(mean, 1, fill="mean")
    with pytest.raises(TypeError, match="mean"):
        shift_warm_start(torch.zeros(T, D, dtype=torch.int64), 1)
