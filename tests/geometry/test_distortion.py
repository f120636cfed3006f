"""Brown-Conrady distortion against OpenCV (projectPoints / undistortPoints) and round trips."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from pointworld.geometry.distortion import distort_normalized, undistort_normalized

# Realistic lens models (k1, k2, p1, p2, k3): RealSense-like, strong barrel, pincushion, tangential.
COEFF_SETS = [
    [0.12, -0.25, 1e-3, -8e-4, 0.1],
    [-0.3, 0.1, 1e-3, -1e-3, -0.02],
    [0.2, 0.05, 0.0, 0.0, 0.0],
    [0.0, 0.0, 4e-3, 3e-3, 0.0],
]


def _points(n: int, extent: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-extent, extent, size=(n, 2))


@pytest.mark.parametrize("coeffs", COEFF_SETS)
def test_distort_matches_opencv_project_points(coeffs: list[float]) -> None:
    xy = _points(500, 0.7, seed=1)
    pts3 = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
    ref, _ = cv2.projectPoints(pts3[:, None, :], np.zeros(3), np.zeros(3), np.eye(3), np.array(coeffs))
    ours = distort_normalized(torch.from_numpy(xy), torch.tensor(coeffs, dtype=torch.float64))
    np.testing.assert_allclose(ours.numpy(), ref[:, 0, :], rtol=0, atol=1e-12)


@pytest.mark.parametrize("coeffs", COEFF_SETS)
def test_undistort_matches_opencv_undistort_points(coeffs: list[float]) -> None:
    xd = _points(500, 0.6, seed=2)
    criteria = (cv2.TERM_CRITERIA_COUNT, 300, 0.0)
    ref = cv2.undistortPoints(xd[:, None, :], np.eye(3), np.array(coeffs), criteria=criteria)
    ours = undistort_normalized(torch.from_numpy(xd), torch.tensor(coeffs, dtype=torch.float64))
    np.testing.assert_allclose(ours.numpy(), ref[:, 0, :], rtol=0, atol=1e-10)


@pytest.mark.parametrize("coeffs", COEFF_SETS)
def test_round_trips_float64(coeffs: list[float]) -> None:
    dist = torch.tensor(coeffs, dtype=torch.float64)
    x = torch.from_numpy(_points(1000, 0.6, seed=3))
    back = undistort_normalized(distort_normalized(x, dist), dist)
    assert (back - x).abs().max().item() < 1e-12
    xd = torch.from_numpy(_points(1000, 0.6, seed=4))
    again = distort_normalized(undistort_normalized(xd, dist), dist)
    assert (again - xd).abs().max().item() < 1e-12


def test_round_trip_float32() -> None:
    dist = torch.tensor(COEFF_SETS[1], dtype=torch.float32)
    xd = torch.from_numpy(_points(1000, 0.6, seed=5)).float()
    out = undistort_normalized(xd, dist)
    assert out.dtype == torch.float32
    assert (distort_normalized(out, dist) - xd).abs().max().item() < 1e-6


def test_few_newton_iterations_already_converge() -> None:
    dist = torch.tensor(COEFF_SETS[1], dtype=torch.float64)
    xd = torch.from_numpy(_points(1000, 0.6, seed=6))
    six = undistort_normalized(xd, dist, iterations=6)
    assert (distort_normalized(six, dist) - xd).abs().max().item() < 1e-12
    one = undistort_normalized(xd, dist, iterations=1)
    assert (distort_normalized(one, dist) - xd).abs().max().item() > 1e-6  # the check can fail


def test_zero_coefficients_are_an_exact_identity_copy() -> None:
    xy = torch.from_numpy(_points(100, 2.0, seed=7))
    zero = torch.zeros(5, dtype=torch.float64)
    out = undistort_normalized(xy, zero)
    assert torch.equal(out, xy) and out.data_ptr() != xy.data_ptr()
    assert torch.equal(distort_normalized(xy, zero), xy)
    batched = undistort_normalized(xy, torch.zeros(3, 5, dtype=torch.float64))
    assert batched.shape == (3, 100, 2) and torch.equal(batched[2], xy)


def test_batched_coefficients_equal_per_batch_results() -> None:
    dist = torch.tensor(COEFF_SETS, dtype=torch.float64)  # (B, 5)
    xy = torch.from_numpy(_points(4 * 50, 0.5, seed=8)).reshape(4, 50, 2)
    # The Newton loop stops when the whole batch has converged: per-batch runs may take a step
    # fewer, hence ulp-level (not bitwise) agreement.
    for fn in (distort_normalized, undistort_normalized):
        out = fn(xy, dist)
        for b in range(4):
            torch.testing.assert_close(out[b], fn(xy[b], dist[b]), rtol=0, atol=1e-15)
    # One (5,) set broadcast over a (B, N, 2) batch.
    out = undistort_normalized(xy, dist[1])
    torch.testing.assert_close(out[3], undistort_normalized(xy[3], dist[1]), rtol=0, atol=1e-15)


def test_bad_input_names_the_argument() -> None:
    xy = torch.zeros(10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="^dist_coeffs: expected shape"):
        distort_normalized(xy, torch.zeros(4, dtype=torch.float64))
    with pytest.raises(TypeError, match="^dist_coeffs: expected a floating"):
        undistort_normalized(xy, torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="^xy: expected shape"):
        distort_normalized(torch.zeros(10, 3), torch.zeros(5))
    with pytest.raises(TypeError, match="^xy_distorted: expected a torch.Tensor"):
        undistort_normalized(np.zeros((10, 2)), torch.zeros(5))
    with pytest.raises(ValueError, match="^dist_coeffs: expected leading dims"):
        undistort_normalized(torch.zeros(3, 10, 2), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="^iterations: expected an int >= 1, got 0"):
        undistort_normalized(xy, torch.ones(5), iterations=0)


def test_nan_input_does_not_stall_the_other_points() -> None:
    dist = torch.tensor(COEFF_SETS[1], dtype=torch.float64)
    xd = torch.from_numpy(_points(200, 0.6, seed=9))
    xd[17] = torch.nan
    out = undistort_normalized(xd, dist)
    assert torch.isnan(out[17]).all()
    keep = torch.arange(200) != 17
    assert (distort_normalized(out[keep], dist) - xd[keep]).abs().max().item() < 1e-12
