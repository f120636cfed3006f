"""Setting up a training run: datasets, data loaders, the model with its normalization, the optimizer, resume.

Random streams derived from the run's seed (besides the model initialisation, seeded by ``seed`` itself):
the training :class:`~pointworld.data.sampling.ClipSampler` (``seed``), the normalization batches
(:data:`_NORM_STREAM`), the validation subset (:mod:`pointworld.train.validation`) and the DataLoaders'
own generators (:data:`_LOADER_STREAM`), so none of them consumes the global RNG the steps reseed.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from pointworld.atomic import atomic_open
from pointworld.data.augment import default_augmentation
from pointworld.data.clip_dataset import ClipDataset
from pointworld.data.collate import ClipBatch, collate_clips
from pointworld.data.sampling import ClipSampler
from pointworld.errors import CheckpointError
from pointworld.model.world_model import WorldModel
from pointworld.model.world_model_config import WorldModelConfig
from pointworld.train.checkpoint import (
    Checkpoint,
    load_checkpoint,
    restore_rng_state,
    state_mismatch,
)
from pointworld.train.config import TrainConfig
from pointworld.train.distributed import DistributedContext, broadcast_module_buffers
from pointworld.train.interrupt import ignore_interrupts
from pointworld.train.schedule import build_optimizer, build_scheduler
from pointworld.train.validation import validation_indices

_NORM_STREAM = 1
_LOADER_STREAM = 3


def derived_seed(seed: int, *stream: int) -> int:
    """A 32-bit seed for the random stream ``stream`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1)[0])


@dataclass
class Run:
    """Everything the loop works with (built by :func:`setup_run`)."""

    config: TrainConfig
    ctx: DistributedContext
    model: WorldModel                      # the unwrapped model (checkpoints, validation)
    net: torch.nn.Module                   # what the steps call: the DDP wrapper or the model itself
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    train_dataset: ClipDataset
    val_dataset: ClipDataset | None
    val_indices: list[int]
    out: Path
    amp: bool
    dataset_info: dict[str, Any]
    writer: Any = None                     # SummaryWriter on the main process
    step: int = 0
    best: float = math.inf
    last_val: dict = field(default_factory=dict)
    last_val_step: int = -1
    history: list = field(default_factory=list)      # [step, loss] of every step run in this call
    pending: list = field(default_factory=list)      # (step, loss, grad norm) tensors not yet logged
    throughput: list = field(default_factory=list)   # clips/s of each log interval
    consistent: bool = True
    tick: float = 0.0
    tick_step: int = 0
    excluded_s: float = 0.0


def _loader(dataset: ClipDataset, sampler: ClipSampler, config: TrainConfig, ctx: DistributedContext,
            ) -> torch.utils.data.DataLoader:
    workers = config.num_workers
    return torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, sampler=sampler, collate_fn=collate_clips, num_workers=workers,
        drop_last=True, pin_memory=ctx.device.type == "cuda", worker_init_fn=ignore_interrupts if workers else None,
        generator=torch.Generator().manual_seed(derived_seed(config.seed, _LOADER_STREAM, ctx.rank)))


def _weights(dataset: ClipDataset) -> list[float]:
    return [s.weight for s in dataset.config.sources]


def train_loader(run: Run) -> torch.utils.data.DataLoader:
    """The rest of the run's training batches: the (seed, epoch 0) sampler sequence of this rank, from
    position ``step * batch_size`` (one epoch spans the whole run)."""
    cfg, ctx, ds = run.config, run.ctx, run.train_dataset
    sampler = ClipSampler(ds.sizes_per_source(), _weights(ds), cfg.steps * cfg.batch_size * ctx.world_size,
                          seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size)
    sampler.set_epoch(0, start=run.step * cfg.batch_size)
    ds.set_epoch(0)
    return _loader(ds, sampler, cfg, ctx)


def _normalization_batches(dataset: ClipDataset, config: TrainConfig, ctx: DistributedContext,
                           ) -> Iterator[ClipBatch]:
    """The ``normalization_batches`` training batches statistics are fitted on (their own sampler stream), on
    the run's device."""
    n = config.normalization_batches * config.batch_size
    sampler = ClipSampler(dataset.sizes_per_source(), _weights(dataset), n,
                          seed=derived_seed(config.seed, _NORM_STREAM))
    dataset.set_epoch(0)
    for batch in _loader(dataset, sampler, config, ctx):
        if batch.horizon != config.model.horizon:
            raise ValueError(f"data: the clips have T = {batch.horizon} future steps, the model predicts "
                             f"horizon = {config.model.horizon}; make them equal")
        yield batch.to(ctx.device)


def fit_normalization(model: WorldModel, dataset: ClipDataset, config: TrainConfig, ctx: DistributedContext,
                      ) -> None:
    """Fit the model's normalization on ``normalization_batches`` training batches (main process, its own
    sampler stream), then broadcast the statistics to every process."""
    if ctx.is_main:
        for batch in _normalization_batches(dataset, config, ctx):
            model.update_normalization(batch.scene, batch.action, batch.target, batch.valid)
        model.finalize_normalization()
    broadcast_module_buffers(model)


def refit_displacement_scale(model: WorldModel, dataset: ClipDataset, config: TrainConfig,
                             ctx: DistributedContext) -> None:
    """Refit only the displacement scale (as :func:`fit_normalization` would, with the run's
    ``model.scale_moving_threshold_m``) and zero the head's displacement outputs, whose old values were in
    units of the old scale: the fine-tune starts from the prior alone (or zero motion) in the new units.
    The scene and robot feature statistics are kept."""
    if ctx.is_main:
        model.displacement_scale.reset()
        for batch in _normalization_batches(dataset, config, ctx):
            model.displacement_scale.update(batch.target, batch.valid)
        model.displacement_scale.finalize()
    broadcast_module_buffers(model)
    model.zero_displacement_head()


def _resume_checkpoint(config: TrainConfig, ctx: DistributedContext) -> Checkpoint | None:
    """``out/last.pt`` when resuming (checked against the config), else None."""
    path = Path(config.out) / "last.pt"
    if not config.resume:
        if path.exists() and ctx.is_main:
            warnings.warn(f"{path} exists and resume=False: starting a new run that will overwrite it",
                          stacklevel=3)
        return None
    if not path.exists():
        if ctx.is_main:
            warnings.warn(f"resume=True but {path} does not exist: starting from step 0", stacklevel=3)
        return None
    ckpt = load_checkpoint(path)
    if WorldModelConfig.from_dict(ckpt.model_config) != config.model:
        raise CheckpointError(f"{path}: its model_config differs from the run's model config; resume with "
                              f"the same model or start a new run in another out directory")
    if ckpt.optimizer_state is None or ckpt.scheduler_state is None:
        raise CheckpointError(f"{path}: not a training checkpoint (no optimizer or scheduler state)")
    if ckpt.step > config.steps:
        raise ValueError(f"steps: {path} is at step {ckpt.step}, beyond the run's steps = {config.steps}")
    old = ckpt.train_config or {}
    changed = [k for k in ("seed", "batch_size", "steps") if old.get(k) != getattr(config, k)]
    world = (ckpt.metrics or {}).get("world_size")
    if (changed or world not in (None, ctx.world_size)) and ctx.is_main:
        warnings.warn(f"{path}: {changed or 'world_size'} changed since it was written: the run continues, "
                      f"but not exactly as an uninterrupted run would", stacklevel=3)
    return ckpt


def _grown_inputs(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with every 2-D weight that has fewer input columns than ``expected``'s widened by zero
    columns at the end (new trailing input features that start with no effect, e.g. the segment prior's
    channels of the scene-token layer); every other entry unchanged."""
    out = dict(state)
    for k, want in expected.items():
        got = state.get(k)
        if got is not None and got.dim() == want.dim() == 2 and got.shape[0] == want.shape[0] \
                and got.shape[1] < want.shape[1]:
            out[k] = torch.cat([got, got.new_zeros((got.shape[0], want.shape[1] - got.shape[1]))], 1)
    return out


def _load_initial_weights(model: WorldModel, path: Path) -> bool:
    """Load ``init_from``'s weights and normalization statistics into the new run's model (same shapes,
    except layers that gained trailing input channels: see :func:`_grown_inputs`). Returns True when its
    displacement scale was fitted with another ``scale_moving_threshold_m`` than the run's (to be refit)."""
    ckpt = load_checkpoint(path)
    expected = model.state_dict()
    state = _grown_inputs(expected, ckpt.model_state)
    problem = state_mismatch(expected, state)
    if problem:
        raise CheckpointError(f"{path}: init_from: its weights do not fit the run's model config: {problem}")
    model.load_state_dict(state, strict=True)
    old = WorldModelConfig.from_dict(ckpt.model_config).scale_moving_threshold_m
    return old != model.config.scale_moving_threshold_m


def _restore(run: Run, ckpt: Checkpoint) -> None:
    run.optimizer.load_state_dict(ckpt.optimizer_state)
    run.scheduler.load_state_dict(ckpt.scheduler_state)
    run.step = ckpt.step
    metrics = ckpt.metrics or {}
    run.best = float(metrics.get("best_l2_moved", math.inf))
    run.last_val, run.last_val_step = dict(metrics.get("val") or {}), int(metrics.get("val_step", -1))
    if ckpt.rng_state is not None:
        restore_rng_state(ckpt.rng_state)


def _write_config(config: TrainConfig, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with atomic_open(out / "train_config.json", "w") as fh:
        json.dump(config.to_dict(), fh, indent=2)


def setup_run(config: TrainConfig, ctx: DistributedContext) -> Run:
    """Build the run: datasets, model (normalization fitted, or restored from ``last.pt``), DDP wrapper,
    optimizer and schedule, TensorBoard writer, validation subset."""
    out = Path(config.out)
    if ctx.is_main:
        _write_config(config, out)
    train_ds = ClipDataset(config.data, augment=default_augmentation() if config.augment else None)
    val_ds = ClipDataset(config.val_data) if config.val_data is not None else None
    ckpt = _resume_checkpoint(config, ctx)
    torch.manual_seed(config.seed)
    model = WorldModel(config.model).to(ctx.device)
    if ckpt is not None:
        model.load_state_dict(ckpt.model_state, strict=True)
    elif config.init_from is not None:
        if _load_initial_weights(model, Path(config.init_from)):
            refit_displacement_scale(model, train_ds, config, ctx)
    else:
        fit_normalization(model, train_ds, config, ctx)
    net = model
    if ctx.world_size > 1:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
    optimizer = build_optimizer(model, config.optim)
    scheduler = build_scheduler(optimizer, config.steps, config.optim)
    val_idx = [] if val_ds is None else validation_indices(len(val_ds), config.val_batches * config.batch_size,
                                                           config.seed)
    run = Run(config=config, ctx=ctx, model=model, net=net, optimizer=optimizer, scheduler=scheduler,
              train_dataset=train_ds, val_dataset=val_ds, val_indices=val_idx, out=out,
              amp=config.amp and ctx.device.type == "cuda", dataset_info=train_ds.describe())
    if ckpt is not None:
        _restore(run, ckpt)
    model.train()
    if ctx.is_main:
        # imported here: slow, and only rank 0 logs
        from torch.utils.tensorboard import SummaryWriter

        run.writer = SummaryWriter(str(out / "tb"), purge_step=run.step + 1 if ckpt is not None else None)
    run.tick = time.perf_counter()
    return run
