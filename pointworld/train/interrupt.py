"""Deferred stop requests for the training loop.

Inside :func:`deferred_interrupt` the first SIGINT (Ctrl-C) or SIGTERM (a scheduler preempting the job, or
torchrun stopping its workers) only sets a flag, which the loop checks between optimizer steps, so the
checkpoint it then writes never comes from a half-updated model; a second signal raises
``KeyboardInterrupt`` at once. DataLoader workers ignore SIGINT (:func:`ignore_interrupts`) so that a
Ctrl-C in the terminal, which reaches the whole process group, does not kill them under the main process.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

#: The signals whose first delivery is deferred.
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class InterruptFlag:
    """Set (``requested = True``) by the first deferred signal inside :func:`deferred_interrupt`."""

    requested: bool = False


@contextmanager
def deferred_interrupt() -> Iterator[InterruptFlag]:
    """Within the block, the first SIGINT/SIGTERM sets the yielded flag; the next one raises KeyboardInterrupt.

    Outside the main thread handlers cannot be installed and the flag never gets set; a signal that is
    ignored (SIG_IGN) stays ignored. The previous handlers are restored on exit.
    """
    flag = InterruptFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.getsignal(s) for s in DEFERRED_SIGNALS}

    def handler(signum: int, frame: object) -> None:
        if flag.requested:
            for s, h in previous.items():
                signal.signal(s, h)
            raise KeyboardInterrupt
        flag.requested = True

    for s, h in previous.items():
        if h is not signal.SIG_IGN:
            signal.signal(s, handler)
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def ignore_interrupts(worker_id: int) -> None:
    """``worker_init_fn`` of the training DataLoaders: ignore SIGINT (the main process decides when to stop)
    and use one intra-op thread (the workers already run in parallel)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)
