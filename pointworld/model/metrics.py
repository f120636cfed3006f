"""Evaluation metrics of predicted scene flow, as sums and counts so that batches aggregate exactly.

Letters: B batch, T future steps, N scene points. All errors are euclidean distances in m.

Definitions (``e[b, t, n] = ||displacement - target||``, m: the error of the predicted *position* at
step t, since both positions start from the same point at t = 0):

- a *valid point-step* is an entry with ``valid[b, t, n]`` True (padding and occlusions are False);
- a point is *present* if it has at least one valid step;
- a point is *moving* if at some valid step its ground-truth displacement from t = 0 has a norm
  strictly greater than ``moving_threshold_m`` (1 cm by default); present points that are not moving
  are *static*. This label is a property of the ground truth only.

Metrics (each a mean of ``sum / count`` over everything seen, see :func:`metric_means`):

- ``l2``, ``l2_moved``, ``l2_static``: mean ``e`` over the valid point-steps of all / moving / static
  points, m;
- ``epe_per_step``, ``epe_moved_per_step``: (T,) mean ``e`` per step over the valid point-steps of all /
  moving points, m;
- ``acc_1cm``, ``acc_2cm``, ``acc_5cm`` (one per threshold, named ``acc_{100 * threshold:g}cm``): share of
  the valid point-steps of moving points with ``e`` strictly below the threshold;
- ``chamfer`` (needs ``points``): per batch element, over the points valid at the last step T, the
  symmetric chamfer distance ``(mean_i min_j |p_i - g_j| + mean_j min_i |g_j - p_i|) / 2`` between the
  predicted and ground-truth final clouds (``points + displacement[:, T-1]`` and
  ``points + target[:, T-1]``), m, averaged over the batch elements that have such points;
- ``l2_conf80``, ``l2_moved_conf80``, ``l2_static_conf80``, ``acc_*_conf80`` (need ``log_var``): the same on
  each batch element's ``ceil(0.8 n)`` present points (n = present points of that element) with the
  lowest predicted log variance averaged over their valid steps (ties: lower index first; NaN last).
  The suffix follows ``confident_fraction`` (``_conf{100 * fraction:g}``).

Empty sets are explicit: a metric whose count is 0 (e.g. ``l2_moved`` on a batch without moving points)
has sum 0 and count 0, and :func:`metric_means` / :meth:`MetricAccumulator.compute` report it as
``float('nan')``. Non-finite predictions are not rejected: they propagate as NaN into the sums (and a
non-finite predicted final position makes that element's ``chamfer`` NaN). Ground truth must be finite
at valid entries (ValueError otherwise).

Cost: a few elementwise passes over (B, T, N) plus, for ``chamfer``, two 1-nearest-neighbour searches
(:func:`pointworld.geometry.neighbors.knn`: Open3D KD-trees on CPU, chunked brute force on CUDA); the
only host synchronisations are the input checks and the neighbour search.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from pointworld.geometry.checks import (
    require_dtype,
    require_floating,
    require_positive,
    require_shape,
)
from pointworld.geometry.neighbors import knn

#: Default accuracy thresholds, m (``acc_1cm``, ``acc_2cm``, ``acc_5cm``).
DEFAULT_THRESHOLDS_M: tuple[float, ...] = (0.01, 0.02, 0.05)
#: Tolerance of ``ceil(fraction * n)`` so that e.g. 0.8 * 10 keeps exactly 8 points.
_CEIL_TOLERANCE = 1e-9


def accuracy_name(threshold_m: float) -> str:
    """Metric name of an accuracy threshold: ``acc_{100 * threshold_m:g}cm`` (0.01 -> ``acc_1cm``)."""
    return f"acc_{threshold_m * 100:g}cm"


def _check_inputs(displacement: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                  log_var: torch.Tensor | None, points: torch.Tensor | None) -> None:
    require_floating("displacement", displacement)
    require_shape("displacement", displacement, (None, None, None, 3), max_leading=0)
    require_floating("target", target)
    require_shape("target", target, tuple(displacement.shape), max_leading=0)
    require_dtype("valid", valid, torch.bool)
    require_shape("valid", valid, tuple(displacement.shape[:3]), max_leading=0)
    if log_var is not None:
        require_floating("log_var", log_var)
        require_shape("log_var", log_var, tuple(displacement.shape[:3]), max_leading=0)
    if points is not None:
        require_floating("points", points)
        b, _, n = displacement.shape[:3]
        require_shape("points", points, (b, n, 3), max_leading=0)
    if not bool(torch.isfinite(torch.where(valid[..., None], target, 0.0)).all()):
        raise ValueError("target: expected finite ground-truth displacements where valid is True, "
                         "got NaN/inf")


def _check_settings(thresholds_m: Sequence[float], moving_threshold_m: float,
                    confident_fraction: float) -> tuple[float, ...]:
    if isinstance(thresholds_m, (str, bytes)) or not isinstance(thresholds_m, Sequence) \
            or not thresholds_m:
        raise ValueError(f"thresholds_m: expected a non-empty sequence of distances in m, "
                         f"got {thresholds_m!r}")
    thresholds = tuple(require_positive("thresholds_m", t) for t in thresholds_m)
    if len({accuracy_name(t) for t in thresholds}) != len(thresholds):
        raise ValueError(f"thresholds_m: expected distinct thresholds, got {thresholds_m!r}")
    require_positive("moving_threshold_m", moving_threshold_m)
    if isinstance(confident_fraction, bool) or not isinstance(confident_fraction, (int, float)) \
            or not 0.0 < confident_fraction <= 1.0:
        raise ValueError(f"confident_fraction: expected a number in (0, 1], got {confident_fraction!r}")
    return thresholds


def _f64(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float64)


def _error_sums(err: torch.Tensor, valid: torch.Tensor, moving: torch.Tensor, thresholds: tuple[float, ...],
                suffix: str = "") -> dict[str, torch.Tensor]:
    """Sums/counts of l2, l2_moved, l2_static and the accuracies over ``valid`` (B, T, N) entries,
    with ``moving`` (B, N) the moving label."""
    mov = valid & moving[:, None, :]
    sta = valid & ~moving[:, None, :]
    out: dict[str, torch.Tensor] = {}
    for name, sel in (("l2", valid), ("l2_moved", mov), ("l2_static", sta)):
        out[f"{name}{suffix}_sum"] = _f64(torch.where(sel, err, 0.0)).sum()
        out[f"{name}{suffix}_count"] = _f64(sel.sum())
    n_mov = _f64(mov.sum())
    for t in thresholds:
        out[f"{accuracy_name(t)}{suffix}_sum"] = _f64((mov & (err < t)).sum())
        out[f"{accuracy_name(t)}{suffix}_count"] = n_mov
    return out


def _confident_points(log_var: torch.Tensor, valid: torch.Tensor, fraction: float) -> torch.Tensor:
    """(B, N) bool: per batch element the ceil(fraction * n_present) present points with the lowest mean
    log variance over their valid steps (stable: lower index first on ties, NaN last)."""
    present = valid.any(1)
    n_steps = valid.sum(1)
    mean_lv = torch.where(valid, log_var, 0.0).sum(1) / n_steps.clamp_min(1).to(log_var.dtype)
    by_value = torch.argsort(mean_lv, dim=1, stable=True)
    present_first = torch.argsort((~present.gather(1, by_value)).to(torch.uint8), dim=1, stable=True)
    order = by_value.gather(1, present_first)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(order.shape[1], device=order.device)
                                            .expand_as(order).contiguous())
    keep = torch.ceil(_f64(present.sum(1)) * fraction - _CEIL_TOLERANCE).to(torch.int64)
    return present & (rank < keep[:, None])


def _chamfer_sums(points: torch.Tensor, displacement: torch.Tensor, target: torch.Tensor,
                  valid: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sum over batch elements of the symmetric chamfer distance of the final clouds, and their count."""
    mask = valid[:, -1]
    pred = points + displacement[:, -1].to(points.dtype)
    gt = points + target[:, -1].to(points.dtype)
    pred_ok = torch.isfinite(pred).all(-1) | ~mask
    pred = torch.where(mask[..., None] & pred_ok[..., None], pred, 0.0)
    gt = torch.where(mask[..., None], gt, 0.0)
    d_pred = knn(pred, gt, 1, mask)[0][..., 0]  # predicted point -> nearest ground-truth point
    d_gt = knn(gt, pred, 1, mask)[0][..., 0]
    n = mask.sum(-1)
    mean_pred = _f64(torch.where(mask, d_pred, 0.0)).sum(-1) / _f64(n.clamp_min(1))
    mean_gt = _f64(torch.where(mask, d_gt, 0.0)).sum(-1) / _f64(n.clamp_min(1))
    chamfer = torch.where(pred_ok.all(-1), 0.5 * (mean_pred + mean_gt), float("nan"))
    has = n > 0
    return {"chamfer_sum": torch.where(has, chamfer, 0.0).sum(), "chamfer_count": _f64(has.sum())}


def flow_metrics(displacement: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
                 log_var: torch.Tensor | None = None, points: torch.Tensor | None = None,
                 thresholds_m: Sequence[float] = DEFAULT_THRESHOLDS_M, moving_threshold_m: float = 0.01,
                 confident_fraction: float = 0.8) -> dict[str, torch.Tensor]:
    """Sums and counts of the flow metrics of one batch (definitions in the module docstring).

    Args:
        displacement: (B, T, N, 3) predicted displacement from t = 0 at steps 1..T, m, world frame.
        target: (B, T, N, 3) ground-truth displacement, m, world frame; finite where ``valid``.
        valid: (B, T, N) bool, True where the ground truth is known (False for padding, occlusions).
        log_var: optional (B, T, N) predicted log variance, log(m^2); enables the ``*_conf80`` metrics.
        points: optional (B, N, 3) scene positions at t = 0, m, world frame; enables ``chamfer``.
        thresholds_m: accuracy thresholds, m, each > 0 and distinct.
        moving_threshold_m: a point is moving if its GT displacement norm exceeds this at a valid step, m.
        confident_fraction: share of each element's present points kept by the ``*_conf`` metrics, (0, 1].

    Returns:
        ``{name}_sum`` and ``{name}_count`` for every metric name, float64 tensors on the input device,
        shape () (or (T,) for ``epe_per_step`` and ``epe_moved_per_step``), detached.
    """
    _check_inputs(displacement, target, valid, log_var, points)
    thresholds = _check_settings(thresholds_m, moving_threshold_m, confident_fraction)
    with torch.no_grad():
        tgt = torch.where(valid[..., None], target.to(displacement.dtype), 0.0)
        pred = torch.where(valid[..., None], displacement, 0.0)
        err = torch.linalg.vector_norm(pred - tgt, dim=-1)  # (B, T, N), m
        moving = (valid & (torch.linalg.vector_norm(tgt, dim=-1) > moving_threshold_m)).any(1)
        out = _error_sums(err, valid, moving, thresholds)
        mov = valid & moving[:, None, :]
        for name, sel in (("epe_per_step", valid), ("epe_moved_per_step", mov)):
            out[f"{name}_sum"] = _f64(torch.where(sel, err, 0.0)).sum((0, 2))
            out[f"{name}_count"] = _f64(sel.sum((0, 2)))
        if points is not None:
            out.update(_chamfer_sums(points.detach(), displacement.detach(), target, valid))
        if log_var is not None:
            keep = _confident_points(log_var.detach(), valid, confident_fraction)
            suffix = f"_conf{confident_fraction * 100:g}"
            out.update(_error_sums(err, valid & keep[:, None, :], moving, thresholds, suffix))
    return out


def metric_means(sums: dict[str, torch.Tensor]) -> dict[str, float | list[float]]:
    """Means ``sum / count`` of a dict of ``{name}_sum`` / ``{name}_count`` tensors (as returned by
    :func:`flow_metrics`): a float per () metric, a list per (T,) metric, ``nan`` where the count is 0."""
    names = sorted(k[:-4] for k in sums if k.endswith("_sum"))
    missing = [n for n in names if f"{n}_count" not in sums]
    if missing or len(names) * 2 != len(sums):
        raise ValueError(f"sums: expected matching '<name>_sum' and '<name>_count' keys, got {sorted(sums)}")
    out: dict[str, float | list[float]] = {}
    for name in names:
        s, c = sums[f"{name}_sum"].detach().cpu(), sums[f"{name}_count"].detach().cpu()
        mean = [a / b if b > 0 else math.nan for a, b in zip(s.reshape(-1).tolist(), c.reshape(-1).tolist())]
        out[name] = mean if s.dim() > 0 else mean[0]
    return out


class MetricAccumulator:
    """Accumulates :func:`flow_metrics` sums over validation batches; :meth:`compute` gives global means
    (sum of errors over all batches / sum of counts), not means of per-batch means.

    The sums stay on the device of the inputs (float64) until :meth:`compute`, so :meth:`update` adds no
    host synchronisation beyond those of :func:`flow_metrics`. For data-parallel evaluation, all-reduce
    the tensors of :attr:`sums` (a sum) before :meth:`compute`.

    Args:
        thresholds_m, moving_threshold_m, confident_fraction: as in :func:`flow_metrics`, fixed for every
            update.
    """

    def __init__(self, thresholds_m: Sequence[float] = DEFAULT_THRESHOLDS_M, moving_threshold_m: float = 0.01,
                 confident_fraction: float = 0.8) -> None:
        self.thresholds_m = _check_settings(thresholds_m, moving_threshold_m, confident_fraction)
        self.moving_threshold_m = float(moving_threshold_m)
        self.confident_fraction = float(confident_fraction)
        self.sums: dict[str, torch.Tensor] = {}
        self.num_updates = 0

    def reset(self) -> None:
        """Forget every accumulated batch."""
        self.sums, self.num_updates = {}, 0

    def update(self, displacement: torch.Tensor, target: torch.Tensor, valid: torch.Tensor,
               log_var: torch.Tensor | None = None,
               points: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Add one batch; arguments (shapes, units) as in :func:`flow_metrics`.

        Every update must produce the same metrics as the first one (``log_var`` and ``points`` given or
        not alike, same T), else ``ValueError``. Returns the batch's own sums and counts.
        """
        batch = flow_metrics(displacement, target, valid, log_var, points, self.thresholds_m,
                             self.moving_threshold_m, self.confident_fraction)
        if self.num_updates == 0:
            self.sums = {k: v.clone() for k, v in batch.items()}
        else:
            shapes = {k: tuple(v.shape) for k, v in batch.items()}
            expected = {k: tuple(v.shape) for k, v in self.sums.items()}
            if shapes != expected:
                raise ValueError(f"update: expected the same metrics and horizon as the first update "
                                 f"{sorted(expected.items())}, got {sorted(shapes.items())} (log_var/points "
                                 f"given in some updates only, or another T)")
            for k, v in batch.items():
                self.sums[k] += v.to(self.sums[k].device)
        self.num_updates += 1
        return batch

    def compute(self) -> dict[str, float | list[float]]:
        """Global means over every update (:func:`metric_means`); ``nan`` for empty sets; ``{}`` before
        the first update."""
        return metric_means(self.sums) if self.sums else {}
