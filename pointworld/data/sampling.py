"""Weighted, sharded, resumable sampling of clip indices for (distributed) training.

:class:`ClipSampler` draws, per epoch, ``num_samples`` global indices into a dataset that is the
concatenation of several sources (``source_sizes``, in order, as in
:meth:`~pointworld.data.clip_dataset.ClipDataset.sizes_per_source`): source s with probability
proportional to ``weights[s]`` (sources of size 0 are never drawn), then a clip uniformly within it,
with replacement. The draw depends only on (seed, epoch). Rank r of ``world_size`` takes every
``world_size``-th index starting at r, so the ranks' shards are disjoint positions of one shared
sequence and, when ``num_samples`` is a multiple of ``world_size``, their union is that sequence
whatever the world size. ``set_epoch(epoch, start=k)`` skips the first k indices of this rank's shard,
which resumes an interrupted epoch exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from pointworld.geometry.checks import require_int


def _seq(name: str, value: object) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) == 0:
        raise ValueError(f"{name}: expected a non-empty sequence, got {value!r}")
    return list(value)


class ClipSampler(torch.utils.data.Sampler[int]):
    """Weighted sampling over sources, sharded across ranks (see module docstring).

    Args:
        source_sizes: number of clips of each source (ints >= 0, at least one > 0).
        weights: sampling weight of each source (finite, >= 0, same length; the non-empty sources'
            total must be > 0).
        num_samples: global indices drawn per epoch (int >= 1).
        seed: seed of the draw (int >= 0).
        rank: this process's rank in [0, world_size).
        world_size: number of processes (>= 1).
    """

    def __init__(self, source_sizes: Sequence[int], weights: Sequence[float], num_samples: int, seed: int,
                 rank: int = 0, world_size: int = 1) -> None:
        sizes, w = _seq("source_sizes", source_sizes), _seq("weights", weights)
        for k, n in enumerate(sizes):
            if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
                raise ValueError(f"source_sizes[{k}]: expected an int >= 0, got {n!r}")
        if len(w) != len(sizes):
            raise ValueError(f"weights: expected {len(sizes)} weights (one per source), got {len(w)}")
        for k, x in enumerate(w):
            if isinstance(x, bool) or not isinstance(x, (int, float, np.number)) or not math.isfinite(x) \
                    or x < 0:
                raise ValueError(f"weights[{k}]: expected a finite number >= 0, got {x!r}")
        self.source_sizes = np.asarray(sizes, dtype=np.int64)
        p = np.asarray(w, dtype=np.float64) * (self.source_sizes > 0)
        if not p.sum() > 0:
            raise ValueError(f"weights: expected a positive weight on at least one non-empty source, got "
                             f"weights {w} for source_sizes {sizes}")
        self.probabilities = p / p.sum()
        self.num_samples = require_int("num_samples", num_samples, 1)
        self.seed = require_int("seed", seed, 0)
        self.world_size = require_int("world_size", world_size, 1)
        self.rank = require_int("rank", rank, 0)
        if self.rank >= self.world_size:
            raise ValueError(f"rank: expected an int in [0, {self.world_size}), got {rank!r}")
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        """Use epoch ``epoch`` (int >= 0) and skip the first ``start`` indices of this rank's shard
        (0 <= start <= len(self)) in the next iteration."""
        self.epoch = require_int("epoch", epoch, 0)
        self.start = require_int("start", start, 0)
        if self.start > len(self):
            raise ValueError(f"start: expected an int in [0, {len(self)}], got {start!r}")

    def global_indices(self, epoch: int) -> np.ndarray:
        """(num_samples,) int64 global dataset indices of ``epoch`` (all ranks, before sharding)."""
        rng = np.random.default_rng([self.seed, require_int("epoch", epoch, 0)])
        source = rng.choice(len(self.source_sizes), size=self.num_samples, p=self.probabilities)
        within = rng.integers(0, self.source_sizes[source])  # drawn sources are non-empty
        offsets = np.concatenate([[0], np.cumsum(self.source_sizes)[:-1]])
        return offsets[source] + within

    def shard(self, epoch: int) -> np.ndarray:
        """(len(self),) int64 this rank's indices of ``epoch`` (before skipping ``start``)."""
        return self.global_indices(epoch)[self.rank::self.world_size][:len(self)]

    def __iter__(self) -> Iterator[int]:
        return iter(self.shard(self.epoch)[self.start:].tolist())

    def __len__(self) -> int:
        """num_samples // world_size, the size of every rank's shard (the resume offset not subtracted)."""
        return self.num_samples // self.world_size
