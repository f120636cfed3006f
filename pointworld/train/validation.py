"""Validation during training: flow metrics of the model on a fixed subset of the validation clips.

The subset is the same at every validation of a run (the first ``val_batches * batch_size`` clips of a
permutation seeded by the run's seed) and every clip is built with dataset epoch 0, so successive
validations compare the same inputs. Under data parallelism the subset is split across processes and
the metric sums are all-reduced before the means are taken (exact, not a mean of means).
"""

from __future__ import annotations

import numpy as np
import torch

from pointworld.data.clip_dataset import ClipDataset
from pointworld.data.collate import collate_clips
from pointworld.model.metrics import MetricAccumulator
from pointworld.model.world_model import WorldModel
from pointworld.train.distributed import DistributedContext, all_reduce_sum
from pointworld.train.interrupt import ignore_interrupts

#: Stream id separating the validation subset's generator from the other streams derived from the seed.
_VAL_STREAM = 2


def validation_indices(num_clips: int, num_samples: int, seed: int) -> list[int]:
    """The clip indices validated by every validation of a run.

    Args:
        num_clips: clips in the validation dataset, >= 1.
        num_samples: clips wanted (``val_batches * batch_size``); all clips when larger.
        seed: the run's seed.

    Returns:
        ``min(num_clips, num_samples)`` distinct indices (a seeded random subset, in a fixed order).
    """
    order = np.random.default_rng([seed, _VAL_STREAM]).permutation(num_clips)
    return [int(i) for i in order[:min(num_clips, num_samples)]]


def _shard(indices: list[int], ctx: DistributedContext) -> tuple[list[int], bool]:
    """This process's share of ``indices`` and whether the sums must be all-reduced.

    With fewer clips than processes every process validates all of them (no reduction needed)."""
    if ctx.world_size == 1 or len(indices) < ctx.world_size:
        return indices, False
    return indices[ctx.rank::ctx.world_size], True


def _batches(dataset: ClipDataset, indices: list[int], batch_size: int, num_workers: int,
             ) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, indices), batch_size=batch_size,
                                       collate_fn=collate_clips, num_workers=num_workers,
                                       worker_init_fn=ignore_interrupts if num_workers else None)


@torch.no_grad()
def validate(model: WorldModel, dataset: ClipDataset, indices: list[int], batch_size: int,
             ctx: DistributedContext, amp: bool = False, num_workers: int = 0) -> dict[str, float | list[float]]:
    """Metrics of ``model`` on the clips ``indices`` of ``dataset`` (model in eval mode meanwhile).

    Args:
        model: the (unwrapped) world model on ``ctx.device``.
        dataset: validation clips (no augmentation).
        indices: from :func:`validation_indices` (the same on every process).
        batch_size: clips per forward pass.
        ctx: the process's place in the job (all processes must call this together).
        amp: run the forward pass under bf16 autocast (CUDA only).
        num_workers: DataLoader workers building the clips.

    Returns:
        :meth:`~pointworld.model.metrics.MetricAccumulator.compute` means (``l2``, ``l2_moved``, ...; m).
    """
    mine, reduce = _shard(indices, ctx)
    was_training = model.training
    model.eval()
    acc = MetricAccumulator()
    try:
        for batch in _batches(dataset, mine, batch_size, num_workers):
            batch = batch.to(ctx.device)
            with torch.autocast(ctx.device.type, dtype=torch.bfloat16, enabled=amp):
                pred = model(batch.scene, batch.action)
            acc.update(pred.displacement.float(), batch.target, batch.valid, pred.log_var.float(),
                       batch.scene.points)
    finally:
        model.train(was_training)
    if reduce:
        for key in sorted(acc.sums):
            all_reduce_sum(acc.sums[key])
    return acc.compute()
