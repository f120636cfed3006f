"""Feature normalizer and displacement scale: batching-independent statistics equal to torch.mean/std
over the concatenated data, state_dict round trips, constant channels, floors, unfitted use, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from pointworld.model.normalization import (
    SCALE_FLOOR_M,
    STD_FLOOR,
    DisplacementScale,
    FeatureNormalizer,
)

DT = torch.float64


def _batches(seed: int, C: int = 5) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Batches of different shapes with masks; large offsets and mixed scales stress the merging."""
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([1e-3, 1.0, 50.0, 2.0, 0.1][:C], dtype=DT)
    offset = torch.tensor([1e4, -3.0, 0.0, 7.0, 1e-2][:C], dtype=DT)
    out = []
    for shape in [(3, 17), (40,), (2, 5, 9), (1,), (6, 6)]:
        x = offset + scale * torch.randn(*shape, C, dtype=DT, generator=gen)
        mask = torch.rand(*shape, generator=gen) < 0.7
        x[~mask] = float("nan")  # masked rows must not matter
        out.append((x, mask))
    return out


def _fit(batches: list[tuple[torch.Tensor, torch.Tensor]], C: int = 5) -> FeatureNormalizer:
    norm = FeatureNormalizer(C)
    for x, mask in batches:
        norm.update(x, mask)
    norm.finalize()
    return norm


def test_statistics_equal_torch_over_concatenated_data_for_any_batching() -> None:
    batches = _batches(0)
    rows = torch.cat([x[m] for x, m in batches])
    norm = _fit(batches)
    torch.testing.assert_close(norm.running_mean, rows.mean(0), rtol=1e-13, atol=0)
    torch.testing.assert_close(norm.mean, rows.mean(0), rtol=1e-13, atol=0)
    torch.testing.assert_close(norm.std, rows.std(0), rtol=1e-9, atol=0)
    assert int(norm.count) == rows.shape[0]
    # one single batch, or row by row in reverse: the same float64 statistics
    single = FeatureNormalizer(5)
    single.update(rows)
    single.finalize()
    one_by_one = FeatureNormalizer(5)
    for r in rows.flip(0):
        one_by_one.update(r[None])
    one_by_one.finalize()
    for other in (single, one_by_one):
        torch.testing.assert_close(other.running_mean, norm.running_mean, rtol=1e-13, atol=0)
        torch.testing.assert_close(other.running_m2, norm.running_m2, rtol=1e-8, atol=0)
    out = norm(rows)
    assert out.dtype == DT
    torch.testing.assert_close(out.mean(0), torch.zeros(5, dtype=DT), rtol=0, atol=1e-8)
    torch.testing.assert_close(out.std(0), torch.ones(5, dtype=DT), rtol=1e-8, atol=0)


def test_empty_batches_and_all_masked_rows_change_nothing() -> None:
    batches = _batches(1)
    norm = _fit(batches)
    other = FeatureNormalizer(5)
    other.update(torch.zeros(0, 5))
    for x, mask in batches:
        other.update(x, mask)
        other.update(x, torch.zeros_like(mask))
    other.finalize()
    for key, value in norm.state_dict().items():
        torch.testing.assert_close(other.state_dict()[key], value, rtol=0, atol=0)


def test_constant_channels_get_unit_std_and_tiny_ones_the_floor() -> None:
    norm = FeatureNormalizer(3)
    x = torch.stack([torch.full((10,), 0.1, dtype=DT), 1.0 + 1e-9 * torch.arange(10, dtype=DT),
                     torch.arange(10, dtype=DT)], -1)
    norm.update(x[:3])
    norm.update(x[3:])
    norm.finalize()
    assert norm.std[0] == 1.0  # all values identical
    assert norm.std[1] == pytest.approx(STD_FLOOR)  # std ~3e-9 < floor
    assert norm.std[2] == pytest.approx(float(torch.arange(10, dtype=DT).std()))
    single = FeatureNormalizer(3)
    single.update(x[:1])
    single.finalize()
    assert single.std.tolist() == [1.0, 1.0, 1.0]


def test_state_dict_round_trip_restores_a_fitted_module_and_accumulators() -> None:
    batches = _batches(2)
    norm = FeatureNormalizer(5)
    for x, mask in batches[:3]:
        norm.update(x, mask)
    norm.finalize()
    parent = nn.Sequential(nn.Linear(5, 5), norm)
    state = parent.state_dict()
    assert {"1.mean", "1.std", "1.count", "1.fitted_flag"} <= set(state)
    fresh = nn.Sequential(nn.Linear(5, 5), FeatureNormalizer(5))
    assert not fresh[1].fitted
    fresh.load_state_dict(state)
    assert fresh[1].fitted
    x = torch.randn(4, 5)
    torch.testing.assert_close(fresh[1](x), norm(x), rtol=0, atol=0)
    # continuing after the reload gives the same result as never stopping
    for x, mask in batches[3:]:
        fresh[1].update(x, mask)
    fresh[1].finalize()
    uninterrupted = _fit(batches)
    for key, value in uninterrupted.state_dict().items():
        torch.testing.assert_close(fresh[1].state_dict()[key], value, rtol=1e-12, atol=0)


def test_feature_normalizer_misuse_and_bad_input() -> None:
    norm = FeatureNormalizer(2)
    with pytest.raises(RuntimeError, match="not fitted"):
        norm(torch.zeros(3, 2))
    with pytest.raises(RuntimeError, match="finalize"):
        norm.finalize()
    with pytest.raises(ValueError, match="x"):
        norm.update(torch.zeros(3, 4))
    with pytest.raises(TypeError, match="x"):
        norm.update(torch.zeros(3, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match="mask"):
        norm.update(torch.zeros(3, 2), torch.ones(4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        norm.update(torch.zeros(3, 2), torch.ones(3))
    with pytest.raises(ValueError, match="finite"):
        norm.update(torch.tensor([[0.0, float("inf")]]))
    with pytest.raises(ValueError, match="num_channels"):
        FeatureNormalizer(0)
    norm.update(torch.randn(5, 2))
    norm.finalize()
    with pytest.raises(ValueError, match="x"):
        norm(torch.zeros(3, 3))


def _displacements(seed: int, T: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for B, N in [(2, 30), (1, 7), (3, 11)]:
        d = torch.randn(B, T, N, 3, dtype=DT, generator=gen) * torch.tensor([0.001, 0.01, 0.02, 0.05])[:T, None, None]
        valid = torch.rand(B, T, N, generator=gen) < 0.8
        d[~valid] = float("nan")
        out.append((d, valid))
    return out


def test_displacement_scale_is_the_per_step_rms_of_one_component() -> None:
    T = 4
    batches = _displacements(3, T)
    scale = DisplacementScale(T)
    for d, valid in batches:
        scale.update(d, valid)
    scale.finalize()
    for t in range(T):
        comps = torch.cat([d[:, t][valid[:, t]].reshape(-1) for d, valid in batches])
        expected = max(float(comps.square().mean().sqrt()), SCALE_FLOOR_M)
        assert float(scale.scale[t]) == pytest.approx(expected, rel=1e-12)
    x = torch.randn(2, T, 5, 3, dtype=DT)
    normalized = scale(x)
    torch.testing.assert_close(normalized * scale.scale.double()[:, None, None], x, rtol=1e-12, atol=0)
    torch.testing.assert_close(scale.denormalize(normalized), x, rtol=1e-12, atol=0)
    fresh = DisplacementScale(T)
    fresh.load_state_dict(scale.state_dict())
    assert fresh.fitted
    torch.testing.assert_close(fresh(x), normalized, rtol=0, atol=0)


def test_displacement_scale_floor_and_errors() -> None:
    scale = DisplacementScale(2)
    with pytest.raises(RuntimeError, match="not fitted"):
        scale(torch.zeros(1, 2, 3, 3))
    d = torch.zeros(1, 2, 5, 3, dtype=DT)
    valid = torch.ones(1, 2, 5, dtype=torch.bool)
    valid[:, 1] = False
    scale.update(d, valid)
    with pytest.raises(RuntimeError, match=r"steps \[1\]"):
        scale.finalize()
    scale.update(d, torch.ones_like(valid))
    scale.finalize()
    assert scale.scale.tolist() == pytest.approx([SCALE_FLOOR_M, SCALE_FLOOR_M])
    with pytest.raises(ValueError, match="displacement"):
        scale.update(torch.zeros(1, 3, 5, 3), torch.ones(1, 3, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="valid"):
        scale.update(d, valid[0])
    with pytest.raises(ValueError, match="valid"):
        scale.update(d, valid[..., :4])
    bad = d.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="finite"):
        scale.update(bad, torch.ones_like(valid))
    with pytest.raises(ValueError, match="normalized"):
        scale.denormalize(torch.zeros(1, 3, 5, 3))
    with pytest.raises(ValueError, match="horizon"):
        DisplacementScale(0)


def test_displacement_scale_with_a_moving_threshold_uses_only_the_moving_entries() -> None:
    T, threshold = 3, 0.005
    batches = _displacements(4, T)
    for d, valid in batches:  # most points static (sub-mm jitter), a few moving by centimetres
        d[:, :, 3:] *= 1e-3
    scale = DisplacementScale(T, moving_threshold_m=threshold)
    everything = DisplacementScale(T)
    for d, valid in batches:
        scale.update(d, valid)
        everything.update(d, valid)
    scale.finalize()
    everything.finalize()
    for t in range(T):  # naive loop over the entries
        comps = []
        for d, valid in batches:
            for b in range(d.shape[0]):
                for n in range(d.shape[2]):
                    if valid[b, t, n] and float(d[b, t, n].norm()) > threshold:
                        comps.extend(d[b, t, n].tolist())
        expected = max(float(torch.tensor(comps, dtype=DT).square().mean().sqrt()), SCALE_FLOOR_M) \
            if comps else SCALE_FLOOR_M
        assert float(scale.scale[t]) == pytest.approx(expected, rel=1e-12)
    # step 0 (1 mm motions) has no entry above 5 mm: the floor; later steps are no longer shrunk by the
    # static majority
    assert float(scale.scale[0]) == SCALE_FLOOR_M
    assert bool((scale.scale[1:] > 2 * everything.scale[1:]).all())


def test_displacement_scale_with_a_threshold_and_no_motion_falls_back_to_the_floor() -> None:
    scale = DisplacementScale(2, moving_threshold_m=0.01)
    scale.update(torch.full((1, 2, 4, 3), 1e-3, dtype=DT), torch.ones(1, 2, 4, dtype=torch.bool))
    scale.finalize()
    assert scale.scale.tolist() == pytest.approx([SCALE_FLOOR_M, SCALE_FLOOR_M])
    for bad in (-0.1, float("inf"), float("nan"), True, "1"):
        with pytest.raises(ValueError, match="moving_threshold_m"):
            DisplacementScale(2, moving_threshold_m=bad)
