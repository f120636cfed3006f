"""Argument checks for tensors at public boundaries.

Every check raises a ``TypeError`` (wrong type or dtype) or ``ValueError`` (wrong shape or values)
whose message names the argument, what was expected and what was received.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Shape = Sequence[int | None]


def _describe(x: torch.Tensor) -> str:
    return f"tensor of shape {tuple(x.shape)} and dtype {x.dtype}"


def require_tensor(name: str, x: object) -> torch.Tensor:
    """Return ``x`` if it is a ``torch.Tensor``, else raise ``TypeError`` naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    return x


def require_floating(name: str, x: object) -> torch.Tensor:
    """Return ``x`` if it is a floating-point tensor (float16/32/64, bfloat16), else ``TypeError``."""
    x = require_tensor(name, x)
    if not x.is_floating_point():
        raise TypeError(f"{name}: expected a floating-point tensor, got {_describe(x)}")
    return x


def require_dtype(name: str, x: object, dtype: torch.dtype) -> torch.Tensor:
    """Return ``x`` if it is a tensor of exactly ``dtype``, else ``TypeError``."""
    x = require_tensor(name, x)
    if x.dtype != dtype:
        raise TypeError(f"{name}: expected dtype {dtype}, got {_describe(x)}")
    return x


def require_shape(name: str, x: object, trailing: Shape, *, min_leading: int = 0,
                  max_leading: int | None = None) -> torch.Tensor:
    """Check the trailing dimensions of ``x``.

    Args:
        name: argument name used in the error message.
        x: the tensor to check.
        trailing: expected sizes of the last ``len(trailing)`` dims; ``None`` accepts any size.
        min_leading: minimum number of leading (batch) dims before the trailing ones.
        max_leading: maximum number of leading dims (``None`` = unlimited).

    Returns:
        ``x`` unchanged.
    """
    x = require_tensor(name, x)
    pattern = "(" + ", ".join("…" if s is None else str(s) for s in trailing) + ")"
    lead = x.dim() - len(trailing)
    ok = lead >= min_leading and (max_leading is None or lead <= max_leading)
    if ok:
        ok = all(s is None or s == d for s, d in zip(trailing, x.shape[lead:]))
    if not ok:
        if max_leading == 0:
            expect = pattern
        elif min_leading == 0:
            expect = f"(..., {pattern[1:]}"
        else:
            expect = f"{min_leading}+ leading dims then {pattern}"
        raise ValueError(f"{name}: expected shape {expect}, got {_describe(x)}")
    return x


def require_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    """Raise ``ValueError`` if ``x`` holds NaN or ±inf (reports how many entries are bad)."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise ValueError(f"{name}: expected finite values, got {int(bad.sum())} NaN/inf entries "
                         f"in a {_describe(x)}")
    return x


def require_positive(name: str, value: float) -> float:
    """Return a Python scalar if it is finite and > 0, else ``ValueError``."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value < float("inf")):
        raise ValueError(f"{name}: expected a finite number > 0, got {value!r}")
    return float(value)


def require_int(name: str, value: object, minimum: int | None = None) -> int:
    """Return ``value`` if it is a Python int (not a bool) that is >= ``minimum``, else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        bound = "" if minimum is None else f" >= {minimum}"
        raise ValueError(f"{name}: expected an int{bound}, got {value!r}")
    return value


def require_same_leading(names: Sequence[str], tensors: Sequence[torch.Tensor], ndim: int) -> None:
    """Require that all tensors share their first ``ndim`` dimensions (e.g. B and N)."""
    ref = tuple(tensors[0].shape[:ndim])
    for name, t in zip(names[1:], tensors[1:]):
        if tuple(t.shape[:ndim]) != ref:
            raise ValueError(f"{name}: expected leading shape {ref} to match {names[0]}, "
                             f"got {_describe(t)}")
