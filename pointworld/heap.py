"""Process heap tuning for CPU inference and training: keep freed memory for reuse instead of unmapping it.

glibc's ``malloc`` serves every block above ``M_MMAP_THRESHOLD`` (128 KiB to 32 MiB, adapting) with a fresh
``mmap`` and gives it back with ``munmap`` on ``free``, and it returns the top of the heap to the kernel
once more than ``M_TRIM_THRESHOLD`` is free there. PyTorch's CPU allocator forwards to ``malloc``, so a
model that allocates tensors of tens to hundreds of MB per layer (the world model on K candidates at once:
200k points x 48 channels x 4 B = 40 MB per feature map, 265 MB per neighbour gather) maps fresh pages for
every temporary, and the kernel zero-fills each 4 KiB page on first touch. On this project's 2-core VM
those page faults took over half of a planning step: ``scripts/bench_planning.py`` measured model
inference at 2.4 s instead of 4.5 s for K = 32 with both thresholds raised. Each alone is not enough (single
profiling runs of that step): the mmap threshold alone gave 4.0 s, as freed memory at the top of the heap is
still returned to the kernel; the trim threshold alone 8.8 s, as setting it fixes the mmap threshold at 128 KiB.

:func:`retain_freed_memory` raises both thresholds with ``mallopt`` so that large blocks come from the heap
and freed ones stay there for the next allocation. The cost is resident memory: the process keeps its peak
heap instead of shrinking after it. The ``pointworld`` command calls it at start; library users call it
once themselves (``pointworld.heap.retain_freed_memory()``). It does nothing where the C library is not
glibc (macOS, Windows, musl), where the user set ``MALLOC_MMAP_THRESHOLD_`` or ``MALLOC_TRIM_THRESHOLD_``
in the environment (their choice wins) and where ``POINTWORLD_RETAIN_FREED_MEMORY=0`` (glibc's own
behaviour, e.g. to measure the difference or on a machine short of memory).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import platform

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Largest value ``mallopt`` takes (a C int), bytes.
MAX_THRESHOLD_BYTES = 2**31 - 1
#: Environment variables through which a user sets the thresholds; when either is set we leave both alone.
USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
#: Set to ``0`` to keep glibc's behaviour (the function then does nothing).
OPT_OUT_VARIABLE = "POINTWORLD_RETAIN_FREED_MEMORY"


def _glibc() -> ctypes.CDLL | None:
    """The process's glibc (its global symbols), or None when the C library is something else."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    libc = ctypes.CDLL(None)
    return libc if hasattr(libc, "mallopt") else None


def retain_freed_memory(mmap_threshold_bytes: int = 1 << 30, trim_threshold_bytes: int = 1 << 30) -> bool:
    """Serve blocks below ``mmap_threshold_bytes`` from the heap and keep up to ``trim_threshold_bytes`` of
    freed heap memory for reuse (process-wide; see the module docstring for why and what it costs).

    Args:
        mmap_threshold_bytes: blocks at least this large still get their own mapping, bytes, in
            [1, 2**31 - 1].
        trim_threshold_bytes: free memory at the top of the heap beyond this is returned to the kernel,
            bytes, in [1, 2**31 - 1].

    Returns:
        True when both thresholds were set; False when the C library is not glibc, when the user set
        either ``MALLOC_*_THRESHOLD_`` variable or ``POINTWORLD_RETAIN_FREED_MEMORY=0``, or when glibc
        refused a value.

    Raises:
        ValueError: a threshold that is not an int in [1, 2**31 - 1].
    """
    for name, value in (("mmap_threshold_bytes", mmap_threshold_bytes),
                        ("trim_threshold_bytes", trim_threshold_bytes)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_THRESHOLD_BYTES:
            raise ValueError(f"{name}: expected an int in [1, {MAX_THRESHOLD_BYTES}] (bytes), got {value!r}")
    if os.environ.get(OPT_OUT_VARIABLE, "").strip() == "0" or any(v in os.environ for v in USER_VARIABLES):
        return False
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    # The trim threshold first: setting either one freezes glibc's adaptive thresholds.
    trimmed = libc.mallopt(_M_TRIM_THRESHOLD, trim_threshold_bytes) == 1
    return libc.mallopt(_M_MMAP_THRESHOLD, mmap_threshold_bytes) == 1 and trimmed


def set_heap_policy(retain: bool) -> bool:
    """Choose the heap behaviour of this process and of the processes it starts (benchmarks compare both).

    Args:
        retain: True = :func:`retain_freed_memory` with its defaults; False = glibc's own behaviour, here and
            in child processes (sets ``POINTWORLD_RETAIN_FREED_MEMORY=0`` in ``os.environ``).

    Returns:
        Whether freed memory is now retained in this process.
    """
    if retain:
        return retain_freed_memory()
    os.environ[OPT_OUT_VARIABLE] = "0"
    return False


def add_heap_argument(parser: argparse.ArgumentParser) -> None:
    """Add ``--heap retain|default`` to a benchmark's parser; pass ``args.heap == "retain"`` to
    :func:`set_heap_policy`."""
    parser.add_argument("--heap", choices=["retain", "default"], default="retain",
                        help="retain: freed memory stays in the heap (pointworld.heap, as the CLI runs); "
                             "default: glibc's behaviour")
