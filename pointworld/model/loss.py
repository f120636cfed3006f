"""Training loss of the world model: a Huber loss on normalized displacements inside a heteroscedastic
likelihood, with moving points weighted far more than static ones.

Letters: B batch, T future steps, N scene points. Displacements are from t = 0, in m, world frame.

Per valid point-step ``(b, t, n)``, with ``scale[t]`` the per-step displacement scale (m, e.g. the RMS
of :class:`~pointworld.model.normalization.DisplacementScale`):

- normalized residual ``r = (displacement - target) / scale[t]`` (unitless, 3 components),
- normalized log variance ``lv = log_var - 2 log scale[t]`` (the log variance in units of scale^2),
- ``L = exp(-lv) * sum_xyz huber(r, delta) + 1.5 * lv``.

``L`` is the negative log likelihood (up to a constant) of a 3-D Gaussian-like density whose log
normaliser contributes ``(3 / 2) lv``; per entry it is minimised by ``lv* = log(H / 1.5)`` with ``H`` the
summed Huber term. The loss is the moving-weighted mean ``sum(w L) / sum(w)`` over valid entries, with
``w`` = :func:`moving_weight` of the point. Because ``r`` and ``lv`` are normalized, the loss is unchanged
when every length (displacements, scale, thresholds) is multiplied by the same factor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pointworld.geometry.checks import (
    require_dtype,
    require_finite,
    require_floating,
    require_positive,
    require_shape,
)


@dataclass(frozen=True)
class LossConfig:
    """Settings of :func:`heteroscedastic_huber_loss`.

    Attributes:
        huber_delta: Huber transition point, in normalized units (residual / scale), > 0.
        moving_threshold_m: per-step motion (m) at which the sigmoid moving label is 0.5, > 0.
        moving_temperature_m: width (m) of the sigmoid moving label, > 0.
        moving_weight: weight of a clearly moving point (a clearly static one tends to 1), > 0.
        variance_beta: β of β-NLL in [0, 1]: each entry's loss is multiplied by ``stopgrad(exp(lv))^β``.
            0 = the plain heteroscedastic loss; 1 = the displacement gets exactly the Huber gradient
            whatever the predicted variance, so a large variance cannot absorb the error of moving points
            instead of the displacement learning them (the variance still learns from the same loss).
    """

    huber_delta: float = 1.0
    moving_threshold_m: float = 0.005
    moving_temperature_m: float = 0.0005
    moving_weight: float = 150.0
    variance_beta: float = 0.0

    def __post_init__(self) -> None:
        for name in ("huber_delta", "moving_threshold_m", "moving_temperature_m", "moving_weight"):
            require_positive(name, getattr(self, name))
        b = self.variance_beta
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 <= b <= 1.0:
            raise ValueError(f"variance_beta: expected a number in [0, 1], got {b!r}")


def _check_flow_pair(name: str, x: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> None:
    """Check ``x`` (B, T, N, 3) floating like ``target`` and ``valid`` (B, T, N) bool."""
    require_floating(name, x)
    require_shape(name, x, (None, None, None, 3), max_leading=0)
    require_shape("target", target, tuple(x.shape), max_leading=0)
    require_floating("target", target)
    require_dtype("valid", valid, torch.bool)
    require_shape("valid", valid, tuple(x.shape[:3]), max_leading=0)


def _step_motion(target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, N) largest per-step motion ``||x_t - x_{t-1}||`` (m) over steps t where t and t-1 are valid
    (x_0 = 0 is always valid); 0 for a point without such a step. Garbage in invalid entries is ignored."""
    x = torch.where(valid[..., None], target, 0.0)
    prev = torch.cat([torch.zeros_like(x[:, :1]), x[:, :-1]], 1)
    prev_valid = torch.cat([torch.ones_like(valid[:, :1]), valid[:, :-1]], 1)
    step = torch.linalg.vector_norm(x - prev, dim=-1)  # (B, T, N)
    return torch.where(valid & prev_valid, step, 0.0).amax(1)


def moving_weight(target: torch.Tensor, valid: torch.Tensor, config: LossConfig) -> torch.Tensor:
    """Per-point loss weight from a soft "is moving" label.

    ``w = 1 + (config.moving_weight - 1) * sigmoid((s - moving_threshold_m) / moving_temperature_m)``
    where ``s`` is the point's largest per-step motion ``||x_t - x_{t-1}||`` (m) over the steps t whose
    entries at t and t-1 are both valid (``x_0 = 0``, the t = 0 position, always counts as valid).
    A point with no such step gets ``s = 0``. With the defaults (5 mm, 1 mm, 150) a static point
    weighs ``1 + 149 sigmoid(-5) ≈ 2.0`` and a point moving 1 cm per step ≈ 150.

    Args:
        target: (B, T, N, 3) ground-truth displacement from t = 0 at steps 1..T, m, world frame.
        valid: (B, T, N) bool, True where the target is known (and the point is not padding).
        config: the thresholds and the weight.

    Returns:
        weight: (B, N) weights >= min(1, moving_weight), dtype of ``target``, no gradient.
    """
    _check_flow_pair("target", target, target, valid)
    with torch.no_grad():
        s = _step_motion(target.detach(), valid)
        label = torch.sigmoid((s - config.moving_threshold_m) / config.moving_temperature_m)
        return 1.0 + (config.moving_weight - 1.0) * label


def _check_loss_inputs(displacement: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor,
                       valid: torch.Tensor, scale: torch.Tensor) -> None:
    _check_flow_pair("displacement", displacement, target, valid)
    require_floating("log_var", log_var)
    require_shape("log_var", log_var, tuple(displacement.shape[:3]), max_leading=0)
    require_floating("scale", scale)
    require_shape("scale", scale, (displacement.shape[1],), max_leading=0)
    require_finite("scale", scale)
    if bool((scale <= 0).any()):
        raise ValueError(f"scale: expected per-step scales > 0 m, got {scale.tolist()}")


def heteroscedastic_huber_loss(displacement: torch.Tensor, log_var: torch.Tensor, target: torch.Tensor,
                               valid: torch.Tensor, scale: torch.Tensor, config: LossConfig,
                               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Moving-weighted heteroscedastic Huber loss (see the module docstring for the formula).

    Invalid entries may hold anything (even NaN): they contribute neither to the loss nor to its
    gradient. With no valid entry at all the loss is an exact 0 that still has a (zero) gradient.
    ``log_var`` is not clamped: bound it in the prediction head if needed.

    Args:
        displacement: (B, T, N, 3) predicted displacement from t = 0 at steps 1..T, m, world frame.
        log_var: (B, T, N) predicted log variance of each displacement component, log(m^2).
        target: (B, T, N, 3) ground-truth displacement, m, world frame.
        valid: (B, T, N) bool, True where the target is known (False for padding and occlusions).
        scale: (T,) per-step displacement scale, m, > 0.
        config: Huber delta and moving-weight settings.

    Returns:
        loss: () scalar, dtype of ``displacement``.
        stats: detached () tensors, each the same weighted mean over valid entries as the loss:
            ``"data"`` (``exp(-lv) * H``), ``"huber"`` (``H``, normalized units), ``"log_var"``
            (``lv``, normalized), so ``loss = data + 1.5 * log_var``; and ``"weight"`` (mean weight of
            the valid entries).
    """
    _check_loss_inputs(displacement, log_var, target, valid, scale)
    scale = scale.to(dtype=displacement.dtype, device=displacement.device)
    w = moving_weight(target, valid, config)[:, None, :] * valid.to(displacement.dtype)  # (B, T, N)
    pred = torch.where(valid[..., None], displacement, 0.0)
    tgt = torch.where(valid[..., None], target.to(displacement.dtype), 0.0)
    lv_raw = torch.where(valid, log_var.to(displacement.dtype), 0.0)
    r = (pred - tgt) / scale[None, :, None, None]
    lv = lv_raw - 2.0 * torch.log(scale)[None, :, None]
    huber = F.huber_loss(r, torch.zeros_like(r), reduction="none", delta=config.huber_delta).sum(-1)
    data = torch.exp(-lv) * huber
    denom = w.sum().clamp_min(torch.finfo(w.dtype).tiny)

    def wmean(x: torch.Tensor) -> torch.Tensor:
        return (w * x).sum() / denom

    per_entry = data + 1.5 * lv
    if config.variance_beta > 0:
        per_entry = per_entry * torch.exp(config.variance_beta * lv.detach())
    loss = wmean(per_entry)
    with torch.no_grad():
        n_valid = valid.sum().clamp_min(1).to(w.dtype)
        stats = {"data": wmean(data.detach()), "huber": wmean(huber.detach()),
                 "log_var": wmean(lv.detach()), "weight": w.sum() / n_valid}
    return loss, stats
