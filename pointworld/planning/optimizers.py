"""Sampling-based trajectory optimizers for the MPC planner: MPPI and CEM over (T, D) action sequences.

Pure tensor functions and two configs, without robot or model knowledge. Each iteration samples K
candidates (K, T, D) around a mean plan (T, D) with colored Gaussian noise (power ~ 1/f^beta along T),
clips them into the action bounds, scores them and moves the mean. MPPI: weights ~ exp(-(c - min c) /
(temperature * (max c - min c))); dividing by the cost range makes ``temperature`` scale-free (shifting or
positively scaling all costs changes nothing; at 0.05 a candidate 5 % of the range worse than the best
weighs e^-1 as much). CEM: mean/std of the elites (lowest costs), blended with the old ones by ``momentum``.
A cost of +inf marks an infeasible candidate (weight 0, never an elite); NaN costs are an error.
Letters: K candidates, T horizon steps, D action dims; actions are in the action space's own units.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from pointworld.geometry.checks import (
    require_floating,
    require_int,
    require_positive,
    require_shape,
)
from pointworld.planning.noise import (
    check_bounds,
    check_interval,
    check_plan,
    clip_to_bounds,
    sample_actions,
)

Std = float | tuple[float, ...]


def _check_std(name: str, value: object) -> None:
    for v in value if isinstance(value, (tuple, list)) and len(value) > 0 else [value]:
        require_positive(name, v)  # an empty tuple fails here too


def _check_flag(name: str, value: object) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {value!r}")


def sampling_std(value: Std, relative: bool, mean: torch.Tensor, low: torch.Tensor | None,
                 high: torch.Tensor | None, name: str = "std") -> torch.Tensor:
    """(T, D) sampling std of a (T, D) plan ``mean``, action units.

    Args:
        value: one std or one per action dim (D).
        relative: ``value`` is a fraction of each dim's half-range ``(high - low) / 2`` (the same setting
            then suits robots whose dims have very different bounds: m per step, rad per step, gripper
            commands in [0, 1]); when ``low`` or ``high`` is None, ``value`` is used as is.
        mean: (T, D) plan whose shape, dtype and device the std takes.
        low, high: (D,) finite action bounds (see :func:`~pointworld.planning.noise.check_bounds`), or None.
        name: the config field named in errors.
    """
    std = torch.tensor(value, dtype=mean.dtype, device=mean.device)
    if std.dim() == 1 and std.shape[0] != mean.shape[1]:
        raise ValueError(f"config.{name}: expected one std or {mean.shape[1]} (one per action dim), "
                         f"got {std.shape[0]}")
    std = std.expand(mean.shape).clone()
    if relative and low is not None and high is not None:
        std = std * (high - low) / 2
    return std


@dataclass
class MPPIConfig:
    """MPPI with a fixed sampling std: ``noise_std`` (one value, or a tuple with one per action dim, action
    units; with ``std_relative_to_bounds``, fractions of each dim's half-range instead, see
    :func:`sampling_std`), colored-noise exponent ``noise_beta`` along T (0 = white), optional
    ``elite_fraction`` (only that fraction of lowest-cost candidates is averaged), ``seed`` of the sampling."""

    num_samples: int = 64
    iterations: int = 4
    temperature: float = 0.05
    noise_std: Std = 0.1
    noise_beta: float = 2.0
    elite_fraction: float | None = None
    seed: int = 0
    std_relative_to_bounds: bool = False

    def __post_init__(self) -> None:
        require_int("num_samples", self.num_samples, 1)
        require_int("iterations", self.iterations, 1)
        _check_flag("std_relative_to_bounds", self.std_relative_to_bounds)
        require_positive("temperature", self.temperature)
        _check_std("noise_std", self.noise_std)
        check_interval("noise_beta", self.noise_beta, 0.0, 10.0)
        if self.elite_fraction is not None:
            check_interval("elite_fraction", self.elite_fraction, 0.0, 1.0, open_low=True)
        require_int("seed", self.seed)


@dataclass
class CEMConfig:
    """CEM: ``init_std`` is the first iteration's std (one value or one per action dim, action units; with
    ``std_relative_to_bounds``, fractions of each dim's half-range, see :func:`sampling_std`),
    ``min_std`` its floor (action units), ``momentum`` the fraction of the previous mean/std kept at each update,
    ``elite_fraction`` the fraction of lowest-cost candidates refitted (at least one)."""

    num_samples: int = 64
    iterations: int = 4
    elite_fraction: float = 0.1
    init_std: Std = 0.1
    min_std: float = 1e-3
    momentum: float = 0.1
    noise_beta: float = 2.0
    seed: int = 0
    std_relative_to_bounds: bool = False

    def __post_init__(self) -> None:
        require_int("num_samples", self.num_samples, 1)
        require_int("iterations", self.iterations, 1)
        _check_flag("std_relative_to_bounds", self.std_relative_to_bounds)
        check_interval("elite_fraction", self.elite_fraction, 0.0, 1.0, open_low=True)
        _check_std("init_std", self.init_std)
        check_interval("min_std", self.min_std, 0.0, math.inf, open_high=True)
        check_interval("momentum", self.momentum, 0.0, 1.0, open_high=True)
        check_interval("noise_beta", self.noise_beta, 0.0, 10.0)
        require_int("seed", self.seed)


@dataclass
class OptimResult:
    """Outcome of :func:`optimize`.

    Attributes:
        mean: (T, D) final mean of the sampling distribution, action units.
        best: (T, D) lowest-cost candidate evaluated in any iteration, action units.
        best_cost: its cost.
        cost_history: best cost so far after each iteration (non-increasing; last = ``best_cost``).
        mean_cost_history: cost of the mean each iteration sampled around (its candidate 0).
    """

    mean: torch.Tensor
    best: torch.Tensor
    best_cost: float
    cost_history: list[float] = field(default_factory=list)
    mean_cost_history: list[float] = field(default_factory=list)


def _check_costs(costs: object, k: int) -> torch.Tensor:
    require_shape("costs", require_floating("costs", costs), (k,), max_leading=0)
    bad = int((torch.isnan(costs) | (costs == -math.inf)).sum())
    if bad:
        raise ValueError(f"costs: expected finite values or +inf (infeasible), got {bad} NaN/-inf of {k}")
    if not bool(torch.isfinite(costs).any()):
        raise ValueError(f"costs: every one of the {k} candidates has infinite cost (all infeasible)")
    return costs


def _check_samples(mean: torch.Tensor, samples: object) -> torch.Tensor:
    require_floating("samples", samples)
    return require_shape("samples", samples, tuple(mean.shape), min_leading=1, max_leading=1)


def mppi_update(mean: torch.Tensor, samples: torch.Tensor, costs: torch.Tensor, temperature: float, *,
                elite_fraction: float | None = None) -> torch.Tensor:
    """MPPI mean update: sum_k w_k samples_k, w = softmax(-(c - min c) / (temperature * (max c - min c))).

    min and max are over the finite costs (all weights equal when they coincide); +inf costs weigh 0.
    With ``elite_fraction`` only the ceil(fraction * K) lowest-cost candidates take part (min/max too).

    Args:
        mean: (T, D) current mean, action units (checks shapes; the result does not depend on it).
        samples: (K, T, D) candidates, action units.
        costs: (K,) their costs, any scale (+inf = infeasible).
        temperature: > 0, relative to the cost range.

    Returns:
        new_mean: (T, D) weighted mean of ``samples``, action units.
    """
    samples = _check_samples(check_plan("mean", mean), samples)
    costs = _check_costs(costs, samples.shape[0])
    temperature = require_positive("temperature", temperature)
    use = torch.isfinite(costs)
    if elite_fraction is not None:
        check_interval("elite_fraction", elite_fraction, 0.0, 1.0, open_low=True)
        n_elite = max(1, math.ceil(elite_fraction * costs.shape[0]))
        elite = torch.topk(costs, n_elite, largest=False).indices
        use = use & torch.zeros_like(use).scatter_(0, elite, True)
    c = torch.where(use, costs, torch.where(use, costs, -math.inf).max())
    spread = c.max() - c.min()
    z = (c - c.min()) / torch.where(spread > 0, spread * temperature, torch.ones_like(spread))
    weights = torch.softmax(-torch.where(use, z, math.inf), dim=0).to(samples.dtype)
    return torch.einsum("k,ktd->td", weights, samples)


def cem_update(mean: torch.Tensor, std: torch.Tensor, samples: torch.Tensor, costs: torch.Tensor,
               elite_fraction: float, momentum: float, min_std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """CEM update: refit mean/std to the elites, keep ``momentum`` of the previous values, floor the std.

    Elites: the ceil(elite_fraction * K) lowest-cost candidates (>= 1; +inf costs never, so fewer when
    fewer are feasible); their std is the population std (ddof 0).

    Args:
        mean, std: (T, D) current mean and std, action units.
        samples: (K, T, D) candidates, action units. costs: (K,) their costs (+inf = infeasible).
        elite_fraction: in (0, 1]. momentum: in [0, 1). min_std: >= 0, action units.

    Returns:
        new_mean: (T, D) momentum * mean + (1 - momentum) * elite mean, action units.
        new_std: (T, D) max(momentum * std + (1 - momentum) * elite std, min_std), action units.
    """
    mean = check_plan("mean", mean)
    require_shape("std", require_floating("std", std), tuple(mean.shape), max_leading=0)
    costs = _check_costs(costs, _check_samples(mean, samples).shape[0])
    check_interval("elite_fraction", elite_fraction, 0.0, 1.0, open_low=True)
    check_interval("momentum", momentum, 0.0, 1.0, open_high=True)
    check_interval("min_std", min_std, 0.0, math.inf, open_high=True)
    n_elite = min(max(1, math.ceil(elite_fraction * costs.shape[0])), int(torch.isfinite(costs).sum()))
    elites = samples[torch.topk(costs, n_elite, largest=False).indices]
    new_mean = momentum * mean + (1 - momentum) * elites.mean(0)
    new_std = momentum * std + (1 - momentum) * elites.std(0, correction=0)
    return new_mean, new_std.clamp_min(min_std)


def optimize(cost_fn: Callable[[torch.Tensor], torch.Tensor], init_mean: torch.Tensor,
             config: MPPIConfig | CEMConfig, low: torch.Tensor | None = None,
             high: torch.Tensor | None = None) -> OptimResult:
    """Run MPPI or CEM (chosen by the config's type) from ``init_mean``, clipped into [low, high] first.

    Each iteration samples ``num_samples`` candidates (candidate 0 = the current mean, all clipped into
    the bounds), calls ``cost_fn`` once on them and updates the mean (CEM also the std). The generator
    lives on ``init_mean``'s device, seeded with ``config.seed``: runs are repeatable.

    Args:
        cost_fn: candidates (K, T, D) -> costs (K,) (+inf = infeasible, NaN is an error).
        init_mean: (T, D) initial mean (e.g. a shifted warm start), action units.
        config: :class:`MPPIConfig` or :class:`CEMConfig`.
        low, high: (D,) action bounds or None.

    Returns:
        :class:`OptimResult` (mean, best, best_cost, per-iteration histories).
    """
    if not isinstance(config, (MPPIConfig, CEMConfig)):
        raise TypeError(f"config: expected an MPPIConfig or CEMConfig, got {type(config).__name__}")
    mean = check_plan("init_mean", init_mean)
    mppi = isinstance(config, MPPIConfig)
    std_name, std_value = ("noise_std", config.noise_std) if mppi else ("init_std", config.init_std)
    low, high = check_bounds(low, high, mean)
    std = sampling_std(std_value, config.std_relative_to_bounds, mean, low, high, std_name)
    mean = clip_to_bounds(mean, low, high).clone()
    generator = torch.Generator(device=mean.device).manual_seed(config.seed)
    result = OptimResult(mean=mean, best=mean, best_cost=math.inf)
    for _ in range(config.iterations):
        samples = sample_actions(mean, std, config.num_samples, config.noise_beta, generator, low, high)
        costs = _check_costs(cost_fn(samples), config.num_samples)
        best = int(torch.argmin(costs))
        if float(costs[best]) < result.best_cost:
            result.best, result.best_cost = samples[best].clone(), float(costs[best])
        result.cost_history.append(result.best_cost)
        result.mean_cost_history.append(float(costs[0]))
        if mppi:
            mean = mppi_update(mean, samples, costs, config.temperature, elite_fraction=config.elite_fraction)
        else:
            mean, std = cem_update(mean, std, samples, costs, config.elite_fraction, config.momentum,
                                   config.min_std)
    result.mean = mean
    return result
