"""Sampling of candidate action sequences for the MPC optimizers: colored noise, clipping, warm starts.

Candidates are ``mean + std * noise`` with Gaussian noise whose power falls as 1/f^beta along the T
steps (beta = 2: smooth, Brownian-like motions; 0: white), clipped into the action bounds; after an
MPC round the previous plan is shifted left by the executed steps (:func:`shift_warm_start`). Also the
small argument checks the optimizers share with the sampling (plans, bounds, intervals).
Letters: K candidates, T horizon steps, D action dims; actions are in the action space's own units.
"""

from __future__ import annotations

import math

import torch

from pointworld.geometry.checks import (
    require_finite,
    require_floating,
    require_int,
    require_shape,
    require_tensor,
)


def check_interval(name: str, value: object, low: float, high: float, open_low: bool = False,
                    open_high: bool = False) -> None:
    """ValueError unless ``value`` is a finite number in the interval [low, high] (ends open as asked)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if open_low else low <= value) and (value < high if open_high else value <= high)
    if not ok:
        interval = f"{'(' if open_low else '['}{low}, {high}{')' if open_high else ']'}"
        raise ValueError(f"{name}: expected a number in {interval}, got {value!r}")



def check_plan(name: str, mean: object) -> torch.Tensor:
    """Check a plan ``mean`` (T, D): floating, two-dimensional, finite; returns it."""
    require_shape(name, require_floating(name, mean), (None, None), max_leading=0)
    return require_finite(name, mean)


def check_bounds(low: torch.Tensor | None, high: torch.Tensor | None, like: torch.Tensor) -> tuple:
    """Check optional action bounds low/high (D,) against ``like`` (..., D) and low <= high; returns them
    cast to ``like``'s dtype and device (None stays None)."""
    out = []
    for name, bound in (("low", low), ("high", high)):
        if bound is not None:
            require_shape(name, require_tensor(name, bound), (like.shape[-1],), max_leading=0)
            bound = require_finite(name, bound).to(like)
        out.append(bound)
    if out[0] is not None and out[1] is not None and bool((out[0] > out[1]).any()):
        raise ValueError(f"low, high: expected low <= high in every dim, got {out[0].tolist()}, "
                         f"{out[1].tolist()}")
    return tuple(out)


def clip_to_bounds(x: torch.Tensor, low: torch.Tensor | None, high: torch.Tensor | None) -> torch.Tensor:
    """``x`` (..., D) clipped into [low, high] (D,) (a None bound is not applied)."""
    x = x if low is None else torch.maximum(x, low)
    return x if high is None else torch.minimum(x, high)



def colored_noise(shape: tuple[int, ...], beta: float, generator: torch.Generator, *,
                  dtype: torch.dtype = torch.float32,
                  device: torch.device | str | None = None) -> torch.Tensor:
    """Gaussian noise with power spectrum ~ 1/f^beta along dim -2 and unit variance per entry.

    Fourier coefficients at f = k / T (k = 0..T//2; the DC term uses f = 1/T) get Gaussian real/imaginary
    parts scaled by f^(-beta/2); the inverse real FFT is divided by the exact std this gives, so every
    entry has mean 0 and variance 1 (circular-stationary along T). ``beta = 0`` or T = 1: white noise.

    Args:
        shape: (K, T, D), or any shape of >= 2 dims colored along the second-to-last.
        beta: spectral exponent in [0, 10] (2 = Brownian-like, smooth over time).
        generator: random generator; its device is used unless ``device`` is given.

    Returns:
        noise: (shape) dimensionless, ``dtype`` (float32/float64) on that device.
    """
    shape = tuple(shape)
    if len(shape) < 2 or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in shape):
        raise ValueError(f"shape: expected a tuple of at least 2 non-negative ints (K, T, D), got {shape!r}")
    check_interval("beta", beta, 0.0, 10.0)
    device, t = generator.device if device is None else torch.device(device), shape[-2]
    if beta == 0 or t <= 1:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)
    freqs = torch.arange(t // 2 + 1, dtype=dtype, device=device) / t
    freqs[0] = freqs[1]
    scale = freqs.pow(-beta / 2)
    spec_shape = (*shape[:-2], shape[-1], t // 2 + 1)
    real = torch.randn(spec_shape, generator=generator, dtype=dtype, device=device)
    imag = torch.randn(spec_shape, generator=generator, dtype=dtype, device=device)
    power = 4 * scale.square()  # an interior frequency adds 2 Re(X_k e^(i theta)) to each entry
    imag[..., 0], power[0] = 0, scale[0].square()  # DC and (even T) Nyquist terms are real
    if t % 2 == 0:
        imag[..., -1], power[-1] = 0, scale[-1].square()
    noise = torch.fft.irfft(torch.complex(real, imag) * scale, n=t, dim=-1) * (t / power.sum().sqrt())
    return noise.transpose(-1, -2).contiguous()



def sample_actions(mean: torch.Tensor, std: torch.Tensor | float, num_samples: int, beta: float,
                   generator: torch.Generator, low: torch.Tensor | None = None,
                   high: torch.Tensor | None = None, include_mean: bool = True) -> torch.Tensor:
    """Candidates mean + std * :func:`colored_noise`, clipped into [low, high].

    Args:
        mean: (T, D) mean action sequence, action units.
        std: (T, D), (D,) or a scalar, >= 0: sampling std, action units.
        num_samples: K >= 1. beta: colored-noise exponent along T (0 = white).
        generator: random generator on ``mean``'s device type.
        low, high: (D,) action bounds, or None for unbounded.
        include_mean: candidate 0 is the (clipped) mean itself.

    Returns:
        samples: (K, T, D) candidate action sequences, action units, dtype and device of ``mean``.
    """
    mean = check_plan("mean", mean)
    num_samples = require_int("num_samples", num_samples, 1)
    std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device)
    if tuple(std.shape) not in ((), mean.shape[1:], tuple(mean.shape)):
        raise ValueError(f"std: expected a scalar or shape ({mean.shape[1]},) or {tuple(mean.shape)}, "
                         f"got shape {tuple(std.shape)}")
    if not bool((std >= 0).all() & torch.isfinite(std).all()):
        raise ValueError("std: expected finite values >= 0, got negative or NaN/inf entries")
    low, high = check_bounds(low, high, mean)
    if generator.device.type != mean.device.type:
        raise ValueError(f"generator: expected one on {mean.device.type} like mean, got {generator.device}")
    samples = mean + std * colored_noise((num_samples, *mean.shape), beta, generator, dtype=mean.dtype,
                                         device=mean.device)
    if include_mean:
        samples[0] = mean
    return clip_to_bounds(samples, low, high)


def shift_warm_start(mean: torch.Tensor, steps: int, fill: str | torch.Tensor = "zero") -> torch.Tensor:
    """Shift a plan left by the ``steps`` already executed and pad its end for the next MPC round.

    Args:
        mean: (T, D) previous plan, action units.
        steps: executed steps, 0 <= steps <= T.
        fill: "zero" (pad with 0), "last" (repeat the last action) or a (D,) tensor of pad values.

    Returns:
        shifted: (T, D), shifted[t] = mean[t + steps] for t < T - steps, then the fill.
    """
    mean = check_plan("mean", mean)
    t, d = mean.shape
    if require_int("steps", steps, 0) > t:
        raise ValueError(f"steps: expected at most the horizon T = {t}, got {steps}")
    if isinstance(fill, torch.Tensor):
        pad = require_finite("fill", require_shape("fill", fill, (d,), max_leading=0)).to(mean)
    elif fill in ("zero", "last"):
        pad = mean.new_zeros(d) if fill == "zero" else mean[-1]
    else:
        raise ValueError(f"fill: expected 'zero', 'last' or a ({d},) tensor, got {fill!r}")
    return torch.cat([mean[steps:], pad.expand(steps, d)], dim=0)
