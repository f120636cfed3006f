"""The training loop of the world model: one code path for a single process and ``torchrun`` DDP.

``train(config)`` sets up (:mod:`pointworld.train.run_setup`: datasets, model, normalization, optimizer,
resume), then runs optimizer steps ``step + 1 .. config.steps``: forward (bf16 autocast on CUDA when
``config.amp``), :func:`~pointworld.model.loss.heteroscedastic_huber_loss` with the model's displacement
scale, backward (gradients averaged across processes by DDP), gradient clipping, AdamW, the LR schedule.

Exact resume: every random op of step k (drop path, order shuffles, robot-type dropout) draws from the
global torch RNG reseeded with :func:`step_seed` (seed, k, rank) right before the step, the data order is
the :class:`~pointworld.data.sampling.ClipSampler` sequence of (seed, epoch 0) from position
``k * batch_size``, and each clip's view choice and augmentation derive from (seed, epoch 0, index). So
steps ``k+1 .. n`` after resuming from ``last.pt`` at step k give the losses of an uninterrupted run.

Outputs under ``config.out``: ``train_config.json``, ``last.pt`` (every ``checkpoint_every`` steps, at the
end, and on Ctrl-C / SIGTERM), ``best.pt`` (lowest validation ``l2_moved``), TensorBoard logs in ``tb/``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from pointworld.data.collate import ClipBatch
from pointworld.geometry.checks import require_int
from pointworld.model.loss import heteroscedastic_huber_loss
from pointworld.train.checkpoint import capture_rng_state, save_checkpoint
from pointworld.train.config import TrainConfig
from pointworld.train.distributed import (
    all_reduce_sum,
    barrier,
    cleanup,
    init_distributed,
)
from pointworld.train.interrupt import deferred_interrupt
from pointworld.train.run_setup import Run, setup_run, train_loader
from pointworld.train.validation import validate


def step_seed(seed: int, step: int, rank: int) -> int:
    """Seed of the global torch RNG for optimizer step ``step`` (0-based) on process ``rank``."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _train_step(run: Run, batch: ClipBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on ``batch``; returns the detached loss and the pre-clip gradient norm."""
    cfg, device = run.config, run.ctx.device
    if batch.horizon != cfg.model.horizon:
        raise ValueError(f"data: the clips have T = {batch.horizon} future steps, the model predicts "
                         f"horizon = {cfg.model.horizon}; make them equal")
    torch.manual_seed(step_seed(cfg.seed, run.step, run.ctx.rank))
    batch = batch.to(device, non_blocking=True)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.amp):
        pred = run.net(batch.scene, batch.action)
    loss, _ = heteroscedastic_huber_loss(pred.displacement.float(), pred.log_var.float(), batch.target,
                                         batch.valid, run.model.displacement_scale.scale, cfg.loss)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else math.inf
    norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), clip)
    run.consistent = False  # a Ctrl-C inside the update would leave a half-updated model
    run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    run.consistent = True
    return loss.detach(), norm.detach()


def _flush_logs(run: Run, stop_requested: bool, bar: tqdm) -> bool:
    """Average the pending losses over processes, log them; return True if any process asked to stop."""
    steps = [s for s, _, _ in run.pending]
    n, world = len(steps), run.ctx.world_size
    flag = torch.tensor([float(stop_requested)], device=run.ctx.device)
    packed = torch.cat([torch.stack([x for _, x, _ in run.pending]).float(),
                        torch.stack([g for _, _, g in run.pending]).float(), flag])
    values = all_reduce_sum(packed).cpu().tolist()
    losses, norms = [v / world for v in values[:n]], [v / world for v in values[n:2 * n]]
    run.pending.clear()
    bad = [s for s, v in zip(steps, losses) if not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"training loss is not finite at steps {bad[:5]}; lower optim.lr or check "
                                 f"the data (last good checkpoint: {run.out / 'last.pt'})")
    run.history.extend([s, v] for s, v in zip(steps, losses))
    now = time.perf_counter()
    busy = now - run.tick - run.excluded_s
    clips_per_s = (run.step - run.tick_step) * run.config.batch_size * world / max(busy, 1e-9)
    run.throughput.append(clips_per_s)
    run.tick, run.tick_step, run.excluded_s = now, run.step, 0.0
    if run.writer is not None:
        for name, value in (("loss", sum(losses) / n), ("grad_norm", sum(norms) / n),
                            ("lr", run.scheduler.get_last_lr()[0]), ("clips_per_s", clips_per_s)):
            run.writer.add_scalar(f"train/{name}", value, run.step)
    bar.set_postfix(loss=f"{losses[-1]:.4g}", clips_s=f"{clips_per_s:.3g}")
    return values[-1] > 0


def _metrics(run: Run) -> dict:
    """Plain-data metrics stored in checkpoints (also how resume learns the best validation so far)."""
    return {"best_l2_moved": run.best, "val": run.last_val, "val_step": run.last_val_step,
            "loss": run.history[-1][1] if run.history else None, "world_size": run.ctx.world_size}


def _save(run: Run, name: str, full: bool = True) -> None:
    """Write ``out/name`` on the main process (``full``: with optimizer, schedule and RNG states)."""
    if not run.ctx.is_main:
        return
    extra = {"optimizer": run.optimizer, "scheduler": run.scheduler, "rng_state": capture_rng_state()} if full else {}
    save_checkpoint(run.out / name, model=run.model, step=run.step, train_config=run.config.to_dict(),
                    dataset=run.dataset_info, metrics=_metrics(run), **extra)


def _validate(run: Run) -> None:
    """Validate (all processes together), log, and write ``best.pt`` when ``l2_moved`` improves."""
    if run.val_dataset is None:
        return
    metrics = validate(run.model, run.val_dataset, run.val_indices, run.config.batch_size, run.ctx, run.amp,
                       run.config.num_workers)
    run.last_val, run.last_val_step = metrics, run.step
    if run.writer is not None:
        for name, value in metrics.items():
            if isinstance(value, float) and math.isfinite(value):
                run.writer.add_scalar(f"val/{name}", value, run.step)
    score = metrics.get("l2_moved", math.nan)
    if isinstance(score, float) and math.isfinite(score) and score < run.best:
        run.best = score
        _save(run, "best.pt", full=False)


def _timed(run: Run, fn, *args) -> None:
    """Run ``fn(*args)`` with its wall time excluded from the throughput measurement."""
    t0 = time.perf_counter()
    fn(*args)
    run.excluded_s += time.perf_counter() - t0


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def _loop(run: Run, last: int, progress: bool) -> None:
    """Optimizer steps until ``last``; a stop request (agreed by all processes at a log point) saves, re-raises."""
    cfg = run.config
    bar = tqdm(total=cfg.steps, initial=run.step, desc="train", disable=not (progress and run.ctx.is_main),
               dynamic_ncols=True)
    run.tick, run.tick_step = time.perf_counter(), run.step
    try:
        with deferred_interrupt() as interrupt:
            for batch in train_loader(run):
                run.pending.append((run.step + 1,) + _train_step(run, batch))
                bar.update(1)
                end = run.step >= last
                val = _due(run.step, cfg.val_every) and not end
                save = _due(run.step, cfg.checkpoint_every) and not end
                # losses are checked (finite) and stop requests agreed before anything is saved
                flush = end or val or save or _due(run.step, cfg.log_every)
                if flush and _flush_logs(run, interrupt.requested, bar):
                    raise KeyboardInterrupt
                if val:
                    _timed(run, _validate, run)
                if save:
                    _timed(run, _save, run, "last.pt")
                if end:
                    break
    except KeyboardInterrupt:
        if run.consistent:
            _save(run, "last.pt")
            if run.ctx.is_main:
                bar.write(f"interrupted: saved {run.out / 'last.pt'} at step {run.step}")
        raise
    finally:
        bar.close()


def _summary(run: Run) -> dict:
    """JSON-able summary returned by :func:`train`."""
    return {"step": run.step, "steps": run.config.steps, "finished": run.step >= run.config.steps,
            "losses": run.history, "final_loss": run.history[-1][1] if run.history else None,
            "val": run.last_val, "best_l2_moved": run.best if math.isfinite(run.best) else None,
            "clips_per_s": float(np.median(run.throughput)) if run.throughput else None,
            "world_size": run.ctx.world_size, "device": str(run.ctx.device), "out": str(run.out),
            "checkpoint": str(run.out / "last.pt")}


def train(config: TrainConfig, progress: bool = True, *, stop_at_step: int | None = None) -> dict:
    """Train (or resume training) a world model; see the module docstring.

    Run it in one process, or under ``torchrun --nproc_per_node=P`` (every process calls it; rank 0 logs and
    writes files; ``config.batch_size`` is per process).

    Args:
        config: the run.
        progress: show a progress bar (rank 0).
        stop_at_step: stop after this global step as if interrupted (``last.pt`` written; resume with
            ``resume=True``), e.g. to split a run into time-limited jobs; None = run to ``config.steps``.

    Returns:
        Summary: ``step``, ``steps``, ``finished``, ``losses`` ([step, loss] of every step run here, averaged
        over processes), ``final_loss``, ``val`` (last validation metrics), ``best_l2_moved``, ``clips_per_s``
        (median over log intervals), ``world_size``, ``device``, ``out``, ``checkpoint``.

    Raises:
        KeyboardInterrupt: after writing ``last.pt``, on Ctrl-C or SIGTERM (honoured at the next log step,
            where the processes agree on it); a second signal stops at once (``last.pt`` written unless it
            came in the middle of a parameter update).
        FloatingPointError: the loss became NaN/inf.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config: expected a TrainConfig, got {type(config).__name__}")
    if stop_at_step is not None:
        require_int("stop_at_step", stop_at_step, 1)
    owns_group = not (dist.is_available() and dist.is_initialized())
    ctx = init_distributed(config.device)
    run = None
    try:
        run = setup_run(config, ctx)
        last = config.steps if stop_at_step is None else min(stop_at_step, config.steps)
        if run.step < last:
            _loop(run, last, progress)
        if run.step >= config.steps and run.val_dataset is not None and run.last_val_step != run.step:
            _validate(run)
        _save(run, "last.pt")
        barrier()
        return _summary(run)
    finally:
        if run is not None and run.writer is not None:
            run.writer.close()
        if owns_group:
            cleanup()
