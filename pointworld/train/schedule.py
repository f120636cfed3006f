"""Optimizer and learning-rate schedule of world-model training.

AdamW over two parameter groups (weight matrices with decoupled weight decay; biases, norm scales and
embeddings without), and a ``LambdaLR`` whose factor is a linear warm-up followed by a cosine decay to
``min_lr_ratio`` (or a constant). Both have a ``state_dict``, so a checkpoint restores them exactly.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from pointworld.geometry.checks import require_int
from pointworld.train.config import OptimConfig


def lr_factor(step: int, total_steps: int, config: OptimConfig) -> float:
    """Learning rate of optimizer step ``step`` (0-based) relative to ``config.lr``.

    Warm-up: ``(step + 1) / warmup_steps`` for ``step < warmup_steps`` (so the first step is not wasted at
    lr 0). Then ``"constant"`` gives 1; ``"cosine"`` goes from 1 at the end of the warm-up to
    ``min_lr_ratio`` at the last step ``total_steps - 1`` along a half cosine.

    Args:
        step: the optimizer step about to run, >= 0.
        total_steps: steps of the whole run, >= 1.
        config: warm-up length, schedule kind, final ratio.

    Returns:
        The factor, in (0, 1].
    """
    require_int("step", step, 0)
    require_int("total_steps", total_steps, 1)
    warm = config.warmup_steps
    if step < warm:
        return (step + 1) / warm
    if config.schedule == "constant":
        return 1.0
    span = max(total_steps - 1 - warm, 1)
    progress = min((step - warm) / span, 1.0)
    low = config.min_lr_ratio
    return low + (1.0 - low) * 0.5 * (1.0 + math.cos(math.pi * progress))


def _no_decay(name: str, param: nn.Parameter, embeddings: set[int]) -> bool:
    return param.dim() < 2 or id(param) in embeddings or name.endswith(".bias")


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters of ``model``: weight matrices decay by
    ``config.weight_decay``; biases, 1-D parameters (norm scales) and embedding tables do not."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, plain = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (plain if _no_decay(name, p, embeddings) else decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay},
              {"params": plain, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=config.lr, betas=config.betas)


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int,
                    config: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` applying :func:`lr_factor`; call ``scheduler.step()`` once after every optimizer step."""
    require_int("total_steps", total_steps, 1)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, total_steps, config))
