"""Evaluation of flow predictors (the world model and the baselines) on a clip dataset.

Every predictor sees the same padded batches (:func:`~pointworld.data.collate.collate_clips`) in dataset
order, without gradients, on the requested device. Metrics (:mod:`pointworld.model.metrics`, errors in m)
are accumulated as sums and counts overall and per robot name, so the reported means are global means
over every valid point-step, independent of the batch size and of the padding. Letters: B batch,
T future steps, N scene points.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pointworld.atomic import atomic_open
from pointworld.data.collate import ClipBatch, collate_clips
from pointworld.geometry.checks import require_int
from pointworld.model.inputs import FlowPredictor
from pointworld.model.metrics import MetricAccumulator

#: Names of the reference predictors the others are compared with (``ratios``).
BASELINE_NAMES: tuple[str, ...] = ("zero_motion", "rigid_follow", "segment_follow")
#: Columns of :func:`format_table`: (metric, is a distance in m shown in cm).
TABLE_COLUMNS: tuple[tuple[str, bool], ...] = (("l2", True), ("l2_moved", True), ("l2_static", True),
                                               ("acc_2cm", False), ("chamfer", True),
                                               ("l2_moved_conf80", True))


def _check_predictors(predictors: object) -> dict[str, FlowPredictor]:
    if not isinstance(predictors, Mapping) or not predictors:
        raise TypeError(f"predictors: expected a non-empty mapping name -> FlowPredictor, got {predictors!r}")
    for name, predictor in predictors.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"predictors: expected non-empty string names, got {name!r}")
        if not callable(getattr(predictor, "predict", None)):
            raise TypeError(f"predictors[{name!r}]: expected a FlowPredictor (with a predict(scene, action) "
                            f"method), got {type(predictor).__name__}")
    return dict(predictors)


def _check_device(device: str | torch.device) -> torch.device:
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: expected a torch device such as 'cpu' or 'cuda:0', got {device!r}") from exc


def _prepare(predictors: dict[str, FlowPredictor], device: torch.device) -> dict[str, bool]:
    """Move module predictors to ``device`` in eval mode; returns their previous training flags."""
    modes: dict[str, bool] = {}
    for name, predictor in predictors.items():
        if isinstance(predictor, torch.nn.Module):
            modes[name] = predictor.training
            predictor.to(device).eval()
    return modes


class _Tally:
    """Metric sums of one predictor: overall and per robot name."""

    def __init__(self) -> None:
        self.overall = MetricAccumulator()
        self.per_robot: dict[str, MetricAccumulator] = {}

    def compute(self) -> dict[str, Any]:
        return {"overall": self.overall.compute(),
                "per_robot": {r: self.per_robot[r].compute() for r in sorted(self.per_robot)}}


def _update(tally: _Tally, name: str, predictor: FlowPredictor, batch: ClipBatch) -> None:
    """Predict one batch and add it to the overall and per-robot sums of predictor ``name``."""
    pred = predictor.predict(batch.scene, batch.action)
    if tuple(pred.displacement.shape) != tuple(batch.target.shape) \
            or tuple(pred.log_var.shape) != tuple(batch.valid.shape):
        raise ValueError(f"predictors[{name!r}]: expected displacement {tuple(batch.target.shape)} and "
                         f"log_var {tuple(batch.valid.shape)}, got {tuple(pred.displacement.shape)} and "
                         f"{tuple(pred.log_var.shape)}")
    disp, log_var = pred.displacement.float(), pred.log_var.float()
    tally.overall.update(disp, batch.target, batch.valid, log_var, batch.scene.points)
    for robot in sorted(set(batch.robot_names)):
        rows = [i for i, r in enumerate(batch.robot_names) if r == robot]
        idx = torch.tensor(rows, dtype=torch.int64, device=disp.device)
        acc = tally.per_robot.setdefault(robot, MetricAccumulator())
        acc.update(disp[idx], batch.target[idx], batch.valid[idx], log_var[idx], batch.scene.points[idx])


def _ratio(num: float, den: float) -> float:
    """``num / den``, NaN where either is NaN or the denominator is 0."""
    if math.isnan(num) or math.isnan(den) or den == 0.0:
        return math.nan
    return num / den


def l2_moved_ratios(per_predictor: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``l2_moved(p) / l2_moved(b)`` for every non-baseline predictor p and every present baseline b.

    Args:
        per_predictor: name -> metric means (as in ``results["predictors"][name]["overall"]``).

    Returns:
        ``{"l2_moved_<p>_vs_<b>": ratio}`` (dimensionless; NaN where undefined); below 1 = p beats b.
    """
    out: dict[str, float] = {}
    for name, metrics in per_predictor.items():
        if name in BASELINE_NAMES:
            continue
        for base in BASELINE_NAMES:
            if base in per_predictor:
                out[f"l2_moved_{name}_vs_{base}"] = _ratio(float(metrics.get("l2_moved", math.nan)),
                                                           float(per_predictor[base].get("l2_moved", math.nan)))
    return out


def _results(tallies: dict[str, _Tally], clips_per_robot: dict[str, int], dataset: Dataset) -> dict[str, Any]:
    predictors = {name: tally.compute() for name, tally in tallies.items()}
    robots = sorted(clips_per_robot)
    per_robot_ratios = {r: l2_moved_ratios({n: p["per_robot"][r] for n, p in predictors.items()})
                        for r in robots}
    describe = getattr(dataset, "describe", None)
    return {"predictors": predictors,
            "ratios": l2_moved_ratios({n: p["overall"] for n, p in predictors.items()}),
            "ratios_per_robot": per_robot_ratios,
            "dataset": describe() if callable(describe) else None,
            "clips": sum(clips_per_robot.values()),
            "clips_per_robot": {r: clips_per_robot[r] for r in robots}}


def evaluate(predictors: Mapping[str, FlowPredictor], dataset: Dataset, batch_size: int = 4,
             device: str | torch.device = "cpu", max_batches: int | None = None, progress: bool = True,
             num_workers: int = 0) -> dict[str, Any]:
    """Flow metrics of every predictor on a clip dataset, overall and per robot.

    Args:
        predictors: name -> :class:`~pointworld.model.inputs.FlowPredictor` (e.g. ``{"model": world_model,
            "zero_motion": ZeroMotion(), "rigid_follow": RigidFollow()}``). ``torch.nn.Module`` predictors
            are moved to ``device`` and put in eval mode for the run (their training flag is restored).
        dataset: a map-style dataset of :class:`~pointworld.data.clip_sample.ClipSample` (normally a
            :class:`~pointworld.data.clip_dataset.ClipDataset`), read in order.
        batch_size: clips per batch, >= 1.
        device: where the batches and predictions live ("cpu", "cuda", ...).
        max_batches: stop after this many batches (None = the whole dataset).
        progress: show a progress bar.
        num_workers: DataLoader worker processes (0 = load in this process).

    Returns:
        ``{"predictors": {name: {"overall": metrics, "per_robot": {robot: metrics}}}, "ratios":
        {"l2_moved_<name>_vs_<baseline>": r}, "ratios_per_robot": {robot: {...}}, "dataset":
        dataset.describe() (None without it), "clips": n, "clips_per_robot": {robot: n}}`` with metrics as
        in :meth:`~pointworld.model.metrics.MetricAccumulator.compute` (distances in m, NaN for empty sets).
    """
    predictors = _check_predictors(predictors)
    dev = _check_device(device)
    require_int("batch_size", batch_size, 1)
    require_int("num_workers", num_workers, 0)
    if max_batches is not None:
        require_int("max_batches", max_batches, 1)
    if not isinstance(dataset, Dataset) or len(dataset) == 0:
        raise ValueError(f"dataset: expected a non-empty map-style Dataset of ClipSample, got {dataset!r}")
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_clips,
                        num_workers=num_workers, pin_memory=dev.type == "cuda")
    total = len(loader) if max_batches is None else min(len(loader), max_batches)
    tallies = {name: _Tally() for name in predictors}
    clips: dict[str, int] = {}
    modes = _prepare(predictors, dev)
    try:
        with torch.no_grad():
            batches = itertools.islice(loader, total)
            for batch in tqdm(batches, total=total, disable=not progress, desc="evaluate"):
                batch = batch.to(dev, non_blocking=True)
                for name, predictor in predictors.items():
                    _update(tallies[name], name, predictor, batch)
                for robot in batch.robot_names:
                    clips[robot] = clips.get(robot, 0) + 1
    finally:
        for name, was_training in modes.items():
            predictors[name].train(was_training)
    return _results(tallies, clips, dataset)


def _fmt(value: Any, distance: bool) -> str:
    if not isinstance(value, (int, float)) or math.isnan(value):
        return "n/a"
    return f"{value * 100:.2f}" if distance else f"{value * 100:.1f}"


def format_table(results: Mapping[str, Any]) -> str:
    """Aligned text table of :func:`evaluate` results: one row per predictor x (all robots, each robot).

    Distances (l2, l2_moved, l2_static, chamfer, l2_moved_conf80) are shown in cm, acc_2cm in %,
    "n/a" for empty sets; the ``ratios`` follow the table, one per line.
    """
    if not isinstance(results, Mapping) or not isinstance(results.get("predictors"), Mapping):
        raise TypeError("results: expected the dict returned by evaluate() (with a 'predictors' mapping), "
                         f"got {type(results).__name__}")
    clips = results.get("clips_per_robot", {})
    header = ["predictor", "robot", "clips"] + [f"{c}_cm" if d else f"{c}_%" for c, d in TABLE_COLUMNS]
    rows = [header]
    for name, entry in results["predictors"].items():
        groups = [("all", entry["overall"], results.get("clips", ""))]
        groups += [(r, m, clips.get(r, "")) for r, m in entry["per_robot"].items()]
        for robot, metrics, n in groups:
            rows.append([name, robot, str(n)] + [_fmt(metrics.get(c), d) for c, d in TABLE_COLUMNS])
    widths = [max(len(row[j]) for row in rows) for j in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if j < 2 else cell.rjust(w) for j, (cell, w) in
                       enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    for key, value in results.get("ratios", {}).items():
        lines.append(f"{key} = {'n/a' if math.isnan(value) else f'{value:.3f}'}")
    return "\n".join(lines)


def _jsonable(value: Any) -> Any:
    """Plain JSON data: non-finite floats -> None, tuples -> lists, tensors -> lists."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_results(results: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write :func:`evaluate` results as JSON, atomically (NaN and inf become ``null``).

    Raises:
        TypeError: ``results`` holds something JSON cannot represent.
    """
    if not isinstance(results, Mapping):
        raise TypeError(f"results: expected a mapping, got {type(results).__name__}")
    text = json.dumps(_jsonable(results), indent=2, allow_nan=False)
    with atomic_open(path, "w") as f:
        f.write(text + "\n")
