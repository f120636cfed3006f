"""Dataset statistics kept inside the model: feature normalization and displacement scales.

Both modules follow one pattern: ``update(...)`` accumulates exact running statistics in float64
over any number of batches (no host synchronisation except the finiteness check of the data),
``finalize()`` turns them into the buffers used by ``forward``, and everything (statistics,
accumulators, the fitted flag) lives in the ``state_dict``, so a checkpoint restores a fitted module
and more data can still be added after loading. ``forward`` on a module that was never finalized
raises ``RuntimeError`` instead of silently passing data through un-normalized.
"""

from __future__ import annotations

import math

from typing import Any

import torch
from torch import nn

from pointworld.geometry.checks import (
    require_dtype,
    require_floating,
    require_int,
    require_shape,
)

#: Smallest std of a (non-constant) feature channel, in the channel's units.
STD_FLOOR: float = 1e-6
#: Smallest displacement scale of a step, m.
SCALE_FLOOR_M: float = 1e-4


class _FittedStatistics(nn.Module):
    """A persisted ``fitted`` flag mirrored in a Python bool (read without a device sync)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("fitted_flag", torch.zeros((), dtype=torch.bool))
        self._fitted = False
        self.register_load_state_dict_post_hook(_FittedStatistics._sync_flag)

    @staticmethod
    def _sync_flag(module: nn.Module, incompatible_keys: Any) -> None:
        module._fitted = bool(module.fitted_flag)

    def _mark_fitted(self) -> None:
        self.fitted_flag.fill_(True)
        self._fitted = True

    @property
    def fitted(self) -> bool:
        """Whether :meth:`finalize` has run (here or before the state_dict was saved)."""
        return self._fitted

    def _require_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError(f"{type(self).__name__}: not fitted; call update(...) on the training data "
                               f"and finalize() (or load a fitted state_dict) before using it")


def _check_mask(name: str, mask: torch.Tensor | None, shape: torch.Size) -> None:
    if mask is not None:
        require_shape(name, require_dtype(name, mask, torch.bool), tuple(shape), max_leading=0)


def _check_finite_where(name: str, x: torch.Tensor, keep: torch.Tensor) -> None:
    """ValueError if ``x`` (..., C) holds NaN/inf in rows where ``keep`` (...) is True (one sync)."""
    bad = (~torch.isfinite(x)).any(-1) & keep
    if bool(bad.any()):
        raise ValueError(f"{name}: expected finite values at the entries to accumulate, got "
                         f"{int(bad.sum())} rows with NaN/inf in a tensor of shape {tuple(x.shape)}")


class FeatureNormalizer(_FittedStatistics):
    """Per-channel standardization ``(x - mean) / std`` fitted on data.

    Args:
        num_channels: C, int >= 1.

    Buffers (persisted): ``mean`` (C,), ``std`` (C,) (float64, set by :meth:`finalize`, cast to the
    input's dtype in :meth:`forward`); ``count`` () int64
    number of accumulated rows; float64 accumulators ``running_mean`` (C,), ``running_m2`` (C,)
    (sum of squared deviations, merged batch by batch with Chan's parallel formula), ``minimum``
    and ``maximum`` (C,); ``fitted_flag``.
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.num_channels = require_int("num_channels", num_channels, 1)
        C = self.num_channels
        self.register_buffer("mean", torch.zeros(C, dtype=torch.float64))
        self.register_buffer("std", torch.ones(C, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.int64))
        self.register_buffer("running_mean", torch.zeros(C, dtype=torch.float64))
        self.register_buffer("running_m2", torch.zeros(C, dtype=torch.float64))
        self.register_buffer("minimum", torch.full((C,), float("inf"), dtype=torch.float64))
        self.register_buffer("maximum", torch.full((C,), float("-inf"), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Accumulate the rows of ``x`` selected by ``mask``.

        Args:
            x: (..., C) feature rows, any units (finite where selected).
            mask: (...) bool, True for rows to include; None = all rows.
        """
        require_shape("x", require_floating("x", x), (self.num_channels,))
        _check_mask("mask", mask, x.shape[:-1])
        keep = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device) if mask is None else mask
        rows = x.reshape(-1, self.num_channels).to(self.running_mean.device, torch.float64)
        keep = keep.reshape(-1, 1).to(rows.device)
        if rows.shape[0] == 0:
            return
        _check_finite_where("x", rows, keep[:, 0])
        n_b = keep.sum().to(torch.float64)
        mean_b = torch.where(keep, rows, 0.0).sum(0) / n_b.clamp_min(1.0)
        m2_b = torch.where(keep, (rows - mean_b) ** 2, 0.0).sum(0)
        n_a = self.count.to(torch.float64)
        n = n_a + n_b
        delta = mean_b - self.running_mean
        self.running_mean += delta * (n_b / n.clamp_min(1.0))
        self.running_m2 += m2_b + delta * delta * (n_a * n_b / n.clamp_min(1.0))
        self.minimum.copy_(torch.minimum(self.minimum, torch.where(keep, rows, float("inf")).amin(0)))
        self.maximum.copy_(torch.maximum(self.maximum, torch.where(keep, rows, float("-inf")).amax(0)))
        self.count += keep.sum()

    @torch.no_grad()
    def finalize(self) -> None:
        """Set ``mean`` and ``std`` from everything accumulated so far.

        ``std`` is the unbiased sample standard deviation (as ``torch.std``), at least ``STD_FLOOR``;
        a channel whose values were all identical (or with a single row) gets ``std = 1``.

        Raises:
            RuntimeError: nothing was accumulated.
        """
        n = int(self.count)
        if n == 0:
            raise RuntimeError("FeatureNormalizer: finalize() called before any update() with data")
        var = self.running_m2 / max(n - 1, 1)
        std = var.clamp_min(0.0).sqrt().clamp_min(STD_FLOOR)
        constant = self.maximum == self.minimum
        self.mean.copy_(self.running_mean.to(self.mean.dtype))
        self.std.copy_(torch.where(constant, 1.0, std).to(self.std.dtype))
        self._mark_fitted()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Standardize features.

        Args:
            x: (..., C) features in the fitted units.

        Returns:
            (..., C) ``(x - mean) / std`` in ``x``'s dtype.
        """
        self._require_fitted()
        require_shape("x", require_floating("x", x), (self.num_channels,))
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


class DisplacementScale(_FittedStatistics):
    """Per-step scale of ground-truth displacements: the RMS of one displacement component.

    ``scale[t] = max(sqrt(sum ||d_t||^2 / (3 n_t)), SCALE_FLOOR_M)`` over the ``n_t`` accumulated entries
    of step t (d_t: displacement from t = 0, m). With ``moving_threshold_m = 0`` every valid entry is
    accumulated; with ``moving_threshold_m > 0`` only the valid entries that moved farther than it
    (``||d_t|| > moving_threshold_m``), so the scale is that of the motion the model must predict rather
    than one shrunk toward 0 by the static majority of the scene (a step without such an entry gets
    ``SCALE_FLOOR_M``).

    Args:
        horizon: T, the number of future steps, int >= 1.
        moving_threshold_m: displacement an entry must exceed to be accumulated, m (>= 0; 0 = all).

    Buffers (persisted): ``scale`` (T,) m (float64, set by :meth:`finalize`); float64 ``sum_sq`` (T,) m^2 and
    int64 ``count`` (T,) accumulators; ``fitted_flag``.
    """

    def __init__(self, horizon: int, moving_threshold_m: float = 0.0) -> None:
        super().__init__()
        self.horizon = require_int("horizon", horizon, 1)
        t = moving_threshold_m
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0.0 <= t < math.inf:
            raise ValueError(f"moving_threshold_m: expected a finite number >= 0 m, got {t!r}")
        self.moving_threshold_m = float(t)
        self.register_buffer("scale", torch.ones(self.horizon, dtype=torch.float64))
        self.register_buffer("sum_sq", torch.zeros(self.horizon, dtype=torch.float64))
        self.register_buffer("count", torch.zeros(self.horizon, dtype=torch.int64))

    def _check(self, name: str, x: torch.Tensor) -> None:
        require_shape(name, require_floating(name, x), (self.horizon, None, 3))

    @torch.no_grad()
    def update(self, displacement: torch.Tensor, valid: torch.Tensor) -> None:
        """Accumulate ground-truth displacements.

        Args:
            displacement: (B, T, N, 3) displacement from t = 0 at steps 1..T, m, world frame (finite
                where valid).
            valid: (B, T, N) bool, True for entries to include.
        """
        require_shape("displacement", require_floating("displacement", displacement),
                      (self.horizon, None, 3), min_leading=1, max_leading=1)
        _check_mask("valid", valid, displacement.shape[:-1])
        d = displacement.to(self.sum_sq.device, torch.float64)
        keep = valid.to(d.device)
        _check_finite_where("displacement", d, keep)
        if self.moving_threshold_m > 0:
            keep = keep & (torch.linalg.vector_norm(torch.where(keep[..., None], d, 0.0), dim=-1)
                           > self.moving_threshold_m)
        self.sum_sq += torch.where(keep[..., None], d * d, 0.0).sum((0, 2, 3))
        self.count += keep.sum((0, 2))

    @torch.no_grad()
    def reset(self) -> None:
        """Clear the accumulators (``scale`` keeps its value until the next :meth:`finalize`), to refit the
        scale on new data, e.g. after loading statistics fitted with another ``moving_threshold_m``."""
        self.sum_sq.zero_()
        self.count.zero_()

    @torch.no_grad()
    def finalize(self) -> None:
        """Set ``scale`` from everything accumulated so far.

        Raises:
            RuntimeError: with ``moving_threshold_m = 0``, some step has no valid entry (its scale would
                be undefined).
        """
        empty = (self.count == 0).nonzero().flatten().tolist()
        if empty and self.moving_threshold_m == 0:
            raise RuntimeError(f"DisplacementScale: no valid displacement accumulated for steps {empty} "
                               f"(0-based, of T = {self.horizon}); call update() with data covering them")
        rms = (self.sum_sq / (3.0 * self.count.clamp_min(1).to(torch.float64))).sqrt()
        self.scale.copy_(rms.clamp_min(SCALE_FLOOR_M).to(self.scale.dtype))
        self._mark_fitted()

    def forward(self, displacement: torch.Tensor) -> torch.Tensor:
        """Normalize displacements: ``displacement / scale[t]``.

        Args:
            displacement: (..., T, N, 3) displacements, m.

        Returns:
            (..., T, N, 3) unitless, in ``displacement``'s dtype.
        """
        self._require_fitted()
        self._check("displacement", displacement)
        return displacement / self.scale.to(displacement.dtype)[:, None, None]

    def denormalize(self, normalized: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`forward`: (..., T, N, 3) unitless -> (..., T, N, 3) m."""
        self._require_fitted()
        self._check("normalized", normalized)
        return normalized * self.scale.to(normalized.dtype)[:, None, None]
