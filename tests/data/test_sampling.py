"""ClipSampler: source weights, uniformity within a source, determinism, sharding across ranks, resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pointworld.data.sampling import ClipSampler


def _source_of(indices: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Naive source lookup of global indices by walking the cumulative sizes."""
    out = []
    for i in indices:
        s, total = 0, sizes[0]
        while i >= total:
            s += 1
            total += sizes[s]
        out.append(s)
    return np.asarray(out)


def test_empirical_source_frequencies_follow_the_weights() -> None:
    sizes, weights = [100, 50, 10], [1.0, 2.0, 1.0]
    sampler = ClipSampler(sizes, weights, num_samples=40_000, seed=5)
    idx = np.asarray(list(sampler))
    assert idx.shape == (40_000,) and idx.min() >= 0 and idx.max() < sum(sizes)
    freq = np.bincount(_source_of(idx, sizes), minlength=3) / idx.size
    # binomial standard deviation is <= 0.0025 at n = 40000; 0.012 is about 5 sigma
    np.testing.assert_allclose(freq, [0.25, 0.5, 0.25], atol=0.012)


def test_clips_are_uniform_within_a_source() -> None:
    sizes = [10, 5]
    idx = np.asarray(list(ClipSampler(sizes, [1.0, 1.0], num_samples=30_000, seed=1)))
    counts = np.bincount(idx, minlength=15)
    expected = np.r_[np.full(10, 15_000 / 10), np.full(5, 15_000 / 5)]
    assert counts.min() > 0
    np.testing.assert_allclose(counts, expected, rtol=0.1)  # each count ~1-3 % relative std


def test_empty_or_zero_weight_sources_are_never_drawn() -> None:
    idx = np.asarray(list(ClipSampler([4, 0, 6, 3], [1.0, 5.0, 0.0, 1.0], num_samples=2000, seed=0)))
    src = _source_of(idx, [4, 0, 6, 3])
    assert set(src.tolist()) == {0, 3}


def test_same_seed_and_epoch_give_the_same_draw_and_others_differ() -> None:
    a = ClipSampler([30, 20], [1.0, 1.0], num_samples=64, seed=3)
    b = ClipSampler([30, 20], [1.0, 1.0], num_samples=64, seed=3)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    c = ClipSampler([30, 20], [1.0, 1.0], num_samples=64, seed=4)
    assert list(c) != first


@pytest.mark.parametrize("world_size", [2, 3, 4])
def test_shards_are_disjoint_and_their_union_does_not_depend_on_world_size(world_size: int) -> None:
    sizes, weights, n = [7, 11], [2.0, 1.0], 48
    whole = list(ClipSampler(sizes, weights, n, seed=9))
    shards = [list(ClipSampler(sizes, weights, n, seed=9, rank=r, world_size=world_size))
              for r in range(world_size)]
    assert all(len(s) == n // world_size for s in shards)
    assert len(ClipSampler(sizes, weights, n, seed=9, rank=1, world_size=world_size)) == n // world_size
    # rank r holds positions r, r + ws, ...: interleaving the shards rebuilds the single-process sequence
    rebuilt = [shards[p % world_size][p // world_size] for p in range(n)]
    assert rebuilt == whole


def test_uneven_num_samples_gives_equal_shards_of_the_leading_positions() -> None:
    whole = list(ClipSampler([20], [1.0], 10, seed=2))
    shards = [list(ClipSampler([20], [1.0], 10, seed=2, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [3, 3, 3]
    assert sorted(s for shard in shards for s in shard) == sorted(whole[:9])


def test_resume_with_start_skips_exactly_the_consumed_indices() -> None:
    sampler = ClipSampler([13, 8], [1.0, 3.0], num_samples=40, seed=11, rank=1, world_size=2)
    sampler.set_epoch(2)
    full = list(sampler)
    for k in (0, 1, 7, 20):
        resumed = ClipSampler([13, 8], [1.0, 3.0], num_samples=40, seed=11, rank=1, world_size=2)
        resumed.set_epoch(2, start=k)
        assert list(resumed) == full[k:]
    assert len(resumed) == 20  # __len__ stays the shard size


def test_sampler_drives_a_dataloader() -> None:
    data = torch.arange(21)
    sampler = ClipSampler([9, 12], [1.0, 1.0], num_samples=16, seed=0)
    loader = torch.utils.data.DataLoader(data, batch_size=4, sampler=sampler)
    got = torch.cat(list(loader)).tolist()
    assert got == list(sampler)


@pytest.mark.parametrize("kwargs, match", [
    ({"source_sizes": []}, "source_sizes"),
    ({"source_sizes": [3, -1]}, r"source_sizes\[1\]"),
    ({"source_sizes": [3, 2.5]}, r"source_sizes\[1\]"),
    ({"weights": [1.0]}, "weights"),
    ({"weights": [1.0, float("nan")]}, r"weights\[1\]"),
    ({"weights": [1.0, -2.0]}, r"weights\[1\]"),
    ({"weights": [0.0, 0.0]}, "weights"),
    ({"source_sizes": [0, 0]}, "weights"),
    ({"num_samples": 0}, "num_samples"),
    ({"seed": -1}, "seed"),
    ({"rank": 2, "world_size": 2}, "rank"),
    ({"world_size": 0}, "world_size"),
])
def test_bad_arguments_are_rejected(kwargs: dict, match: str) -> None:
    args = {"source_sizes": [3, 4], "weights": [1.0, 1.0], "num_samples": 8, "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        ClipSampler(**args)


def test_bad_epoch_or_start_is_rejected() -> None:
    sampler = ClipSampler([3], [1.0], num_samples=8, seed=0, world_size=2)
    with pytest.raises(ValueError, match="epoch"):
        sampler.set_epoch(-1)
    with pytest.raises(ValueError, match="start"):
        sampler.set_epoch(0, start=5)  # the shard holds 4
    with pytest.raises(ValueError, match="start"):
        sampler.set_epoch(0, start=-1)
