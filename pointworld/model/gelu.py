"""GELU computed by ATen's own CPU kernels instead of oneDNN's.

For a contiguous float32 tensor on CPU, PyTorch runs ``F.gelu`` and its backward through a oneDNN eltwise
primitive. oneDNN JIT-compiles one primitive per tensor shape and keeps it in its primitive cache (1024
entries unless ``ONEDNN_PRIMITIVE_CACHE_CAPACITY`` says otherwise). The world model sees a new shape at
almost every call: the point count of a capture, the voxel count of each candidate's robot points (48
shapes in one plan below). So a long closed loop kept compiling and caching primitives, and its resident
memory grew plan after plan.

Measured on this project's 2-core VM (planner on the bundled ``tiny`` model, Franka push seed 1004, one
thread, ``retain_freed_memory`` on):

- 6 plans on one observation: resident memory 2.26 GB after the first plan and 2.85 GB after the sixth with
  oneDNN's GELU. With the primitive cache off (``ONEDNN_PRIMITIVE_CACHE_CAPACITY=0``) it stayed at 0.87 GB,
  and with oneDNN off around GELU it moved between 1.0 and 2.0 GB with no trend.
- Closed loop (seeds 1004 on): with oneDNN's GELU, 2.7 GB after the first plan and 5.4 GB after the eighth
  (earlier runs of three episodes reached 5.9 GB, and two such processes filled the machine's 24 GB);
  with :class:`Gelu`, between 0.8 and 2.3 GB over 20 plans, with no trend.
- Speed is about the same. A plan of that episode (K = 32, two threads) makes 107 GELU calls on 48 shapes;
  they took 0.4 to 1.0 s of a 16 to 19 s plan with either kernel. On one thread, a (220960, 192) tensor
  whose primitive is cached took 85 ms with oneDNN and 89 ms with ATen; 200 tensors of new shapes took
  4.1 s with oneDNN (compiling each) and 2.8 s with ATen.

:class:`Gelu` switches oneDNN off for the duration of its own forward and backward kernels only. The switch
is process-wide state, so another thread running a oneDNN-eligible op at that instant also takes ATen's
kernel; both compute the exact GELU (``approximate='none'``), equal to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


def _without_onednn(kernel: Callable[..., torch.Tensor], *args: torch.Tensor) -> torch.Tensor:
    """``kernel(*args)`` with PyTorch's oneDNN backend off; the previous setting is restored after."""
    backend = torch.backends.mkldnn
    previous = backend.enabled
    backend.enabled = False
    try:
        return kernel(*args)
    finally:
        backend.enabled = previous


class _AtenGelu(torch.autograd.Function):
    """Exact GELU whose forward and backward both run on ATen's CPU kernels."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return _without_onednn(F.gelu, x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return _without_onednn(torch.ops.aten.gelu_backward, grad, x)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU, ``x * Phi(x)``, elementwise; any shape, dtype and device.

    On CPU it runs ATen's kernels, never oneDNN's (see the module docstring); elsewhere it is ``F.gelu``.
    The gradient is ATen's ``gelu_backward`` either way.
    """
    if x.device.type != "cpu":
        return F.gelu(x)
    return _AtenGelu.apply(x)


class Gelu(nn.Module):
    """:func:`gelu` as a module: a drop-in for ``nn.GELU()`` (no parameters, the same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise exact GELU of ``x`` (any shape)."""
        return gelu(x)
