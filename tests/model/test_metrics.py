"""Flow metrics against naive per-point Python loops; aggregation across batches; empty sets."""

from __future__ import annotations

import math
import os

import pytest
import torch

from pointworld.model.metrics import (
    MetricAccumulator,
    accuracy_name,
    flow_metrics,
    metric_means,
)

DEVICE = torch.device(os.environ.get("POINTWORLD_TEST_DEVICE", "cuda"))

THRESHOLDS = (0.01, 0.02, 0.05)


def _inputs(seed: int, b: int = 3, t: int = 4, n: int = 12, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    points = torch.rand(b, n, 3, generator=gen, dtype=dtype)
    speed = (torch.rand(b, 1, n, 1, generator=gen, dtype=dtype) < 0.5) * 0.01
    steps = torch.arange(1, t + 1, dtype=dtype)[None, :, None, None]
    target = torch.randn(b, 1, n, 3, generator=gen, dtype=dtype) * speed * steps + \
        torch.randn(b, t, n, 3, generator=gen, dtype=dtype) * 0.002
    disp = target + torch.randn(b, t, n, 3, generator=gen, dtype=dtype) * 0.015
    log_var = torch.randn(b, t, n, generator=gen, dtype=dtype)
    valid = torch.rand(b, t, n, generator=gen) < 0.8
    valid[0, :, 0] = False  # a point never valid (padding)
    return disp, target, valid, log_var, points


def _dist(a, c) -> float:
    return math.sqrt(sum((x - y) ** 2 for x, y in zip(a, c)))


def _mean(xs) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def _naive(disp, target, valid, log_var, points, moving_thr=0.01, fraction=0.8):
    """Every metric by explicit loops over batch elements, steps and points (lists of floats)."""
    d, g, v, lv, p = disp.tolist(), target.tolist(), valid.tolist(), log_var.tolist(), points.tolist()
    b_, t_, n_ = valid.shape
    err = [[[_dist(d[b][t][n], g[b][t][n]) for n in range(n_)] for t in range(t_)] for b in range(b_)]
    present = [[any(v[b][t][n] for t in range(t_)) for n in range(n_)] for b in range(b_)]
    moving = [[any(v[b][t][n] and _dist(g[b][t][n], (0, 0, 0)) > moving_thr for t in range(t_))
               for n in range(n_)] for b in range(b_)]
    conf = []
    for b in range(b_):
        cand = [n for n in range(n_) if present[b][n]]
        score = {n: _mean([lv[b][t][n] for t in range(t_) if v[b][t][n]]) for n in cand}
        ranked = sorted(cand, key=lambda n: (score[n], n))
        conf.append(set(ranked[:math.ceil(fraction * len(cand) - 1e-9)]))

    def collect(keep, which):
        return [err[b][t][n] for b in range(b_) for t in range(t_) for n in range(n_)
                if v[b][t][n] and keep(b, n) and which(b, n)]

    out = {}
    for suffix, keep in (("", lambda b, n: True), ("_conf80", lambda b, n: n in conf[b])):
        out["l2" + suffix] = _mean(collect(keep, lambda b, n: True))
        moved = collect(keep, lambda b, n: moving[b][n])
        out["l2_moved" + suffix] = _mean(moved)
        out["l2_static" + suffix] = _mean(collect(keep, lambda b, n: not moving[b][n]))
        for thr in THRESHOLDS:
            out[accuracy_name(thr) + suffix] = _mean([float(e < thr) for e in moved])
    out["epe_per_step"] = [_mean([err[b][t][n] for b in range(b_) for n in range(n_) if v[b][t][n]])
                           for t in range(t_)]
    out["epe_moved_per_step"] = [_mean([err[b][t][n] for b in range(b_) for n in range(n_)
                                        if v[b][t][n] and moving[b][n]]) for t in range(t_)]
    chamfers = []
    for b in range(b_):
        idx = [n for n in range(n_) if v[b][t_ - 1][n]]
        if not idx:
            continue
        pred = [[p[b][n][c] + d[b][t_ - 1][n][c] for c in range(3)] for n in idx]
        gt = [[p[b][n][c] + g[b][t_ - 1][n][c] for c in range(3)] for n in idx]
        a = _mean([min(_dist(x, y) for y in gt) for x in pred])
        c = _mean([min(_dist(y, x) for x in pred) for y in gt])
        chamfers.append(0.5 * (a + c))
    out["chamfer"] = _mean(chamfers)
    return out


def _assert_same(got: dict, want: dict, tol: float) -> None:
    assert sorted(got) == sorted(want)
    for k, w in want.items():
        g = got[k]
        if isinstance(w, list):
            assert len(g) == len(w), k
            for a, c in zip(g, w):
                assert (math.isnan(a) and math.isnan(c)) or a == pytest.approx(c, rel=tol, abs=tol), k
        else:
            assert (math.isnan(g) and math.isnan(w)) or g == pytest.approx(w, rel=tol, abs=tol), k


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_naive_loops(seed):
    disp, target, valid, log_var, points = _inputs(seed)
    sums = flow_metrics(disp, target, valid, log_var=log_var, points=points)
    assert all(v.dtype == torch.float64 for v in sums.values())
    got = metric_means(sums)
    want = _naive(disp, target, valid, log_var, points)
    _assert_same(got, want, 1e-12)
    assert 0.0 < got["acc_1cm"] < got["acc_5cm"] <= 1.0  # the random case exercises every branch
    assert not math.isnan(got["l2_static"]) and not math.isnan(got["l2_moved"])


def test_metrics_without_optional_inputs_omit_their_metrics():
    disp, target, valid, _, _ = _inputs(3)
    got = metric_means(flow_metrics(disp, target, valid))
    assert "chamfer" not in got and not any(k.endswith("_conf80") for k in got)
    assert got["l2"] == pytest.approx(_naive(disp, target, valid, *_inputs(3)[3:])["l2"], rel=1e-12)


def test_confident_subset_keeps_ceil_of_80_percent_lowest_log_var():
    b, t, n = 1, 2, 10
    target = torch.zeros(b, t, n, 3, dtype=torch.float64)
    disp = torch.zeros_like(target)
    disp[0, :, :, 0] = torch.arange(n, dtype=torch.float64)[None] * 0.001  # error of point i: i mm
    log_var = torch.arange(n, dtype=torch.float64).flip(0)[None, None].expand(b, t, n).clone()
    got = metric_means(flow_metrics(disp, target, torch.ones(b, t, n, dtype=torch.bool), log_var=log_var))
    # lowest log_var = highest index: points 2..9 kept (8 of 10)
    assert got["l2_conf80"] == pytest.approx(sum(range(2, 10)) / 8 * 0.001, rel=1e-12)
    assert got["l2_static_conf80"] == got["l2_conf80"] and math.isnan(got["l2_moved_conf80"])


def test_empty_sets_are_nan_and_sums_finite():
    disp, target, valid, log_var, points = _inputs(4)
    target = target * 1e-3  # nothing moves more than 1 cm
    sums = flow_metrics(disp, target, valid, log_var=log_var, points=points)
    assert all(torch.isfinite(v).all() for v in sums.values())
    assert sums["l2_moved_count"].item() == 0 and sums["acc_1cm_count"].item() == 0
    got = metric_means(sums)
    for key in ("l2_moved", "acc_1cm", "acc_5cm", "l2_moved_conf80"):
        assert math.isnan(got[key]), key
    assert all(math.isnan(x) for x in got["epe_moved_per_step"])
    assert not math.isnan(got["l2"]) and not math.isnan(got["chamfer"])
    nothing = metric_means(flow_metrics(disp, target, torch.zeros_like(valid), log_var=log_var, points=points))
    assert all(math.isnan(x) for v in nothing.values() for x in (v if isinstance(v, list) else [v]))


def test_accumulator_equals_metrics_of_the_concatenated_batch():
    disp, target, valid, log_var, points = _inputs(5, b=5)
    acc = MetricAccumulator()
    assert acc.compute() == {}
    for sl in (slice(0, 2), slice(2, 3), slice(3, 5)):
        acc.update(disp[sl], target[sl], valid[sl], log_var=log_var[sl], points=points[sl])
    _assert_same(acc.compute(), metric_means(flow_metrics(disp, target, valid, log_var, points)), 1e-12)
    with pytest.raises(ValueError, match="same metrics"):
        acc.update(disp, target, valid)  # log_var/points missing now
    with pytest.raises(ValueError, match="same metrics"):
        acc.update(disp[:, :2], target[:, :2], valid[:, :2], log_var[:, :2], points)  # another T
    acc.reset()
    assert acc.compute() == {}


def test_nan_prediction_propagates_and_bad_ground_truth_is_rejected():
    disp, target, valid, log_var, points = _inputs(6)
    disp[1, -1, 3] = float("nan")
    valid[1, -1, 3] = True
    got = metric_means(flow_metrics(disp, target, valid, log_var=log_var, points=points))
    assert math.isnan(got["l2"]) and math.isnan(got["chamfer"])
    target_bad = target.clone()
    target_bad[~valid] = float("nan")  # garbage where invalid is fine
    flow_metrics(disp, target_bad, valid)
    target_bad[0, 0, 1] = float("inf")
    valid[0, 0, 1] = True
    with pytest.raises(ValueError, match="target"):
        flow_metrics(disp, target_bad, valid)


def test_float32_agrees_with_float64():
    disp, target, valid, log_var, points = _inputs(7)
    a = metric_means(flow_metrics(disp, target, valid, log_var, points))
    b = metric_means(flow_metrics(disp.float(), target.float(), valid, log_var.float(), points.float()))
    _assert_same(b, a, 1e-5)


def test_bad_arguments_are_rejected():
    disp, target, valid, _, points = _inputs(8)
    assert accuracy_name(0.01) == "acc_1cm" and accuracy_name(0.025) == "acc_2.5cm"
    with pytest.raises(ValueError, match="thresholds_m"):
        flow_metrics(disp, target, valid, thresholds_m=())
    with pytest.raises(ValueError, match="thresholds_m"):
        flow_metrics(disp, target, valid, thresholds_m=(0.01, 0.01))
    with pytest.raises(ValueError, match="thresholds_m"):
        flow_metrics(disp, target, valid, thresholds_m=(-0.01,))
    with pytest.raises(ValueError, match="confident_fraction"):
        flow_metrics(disp, target, valid, confident_fraction=1.5)
    with pytest.raises(ValueError, match="points"):
        flow_metrics(disp, target, valid, points=points[:, :-1])
    with pytest.raises(ValueError, match="target"):
        flow_metrics(disp, target[:, :-1], valid)
    with pytest.raises(TypeError, match="valid"):
        flow_metrics(disp, target, valid.float())
    with pytest.raises(ValueError, match="sums"):
        metric_means({"l2_sum": torch.tensor(1.0)})


@pytest.mark.gpu
@pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(), reason="no CUDA device")
def test_device_matches_cpu():
    inputs = _inputs(9)
    acc = MetricAccumulator()
    acc.update(*[x.to(DEVICE) for x in inputs])
    assert all(v.device.type == DEVICE.type for v in acc.sums.values())
    _assert_same(acc.compute(), metric_means(flow_metrics(*inputs)), 1e-12)
