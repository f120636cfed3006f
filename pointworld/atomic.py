"""Atomic file writes: readers see the old file or the complete new one, never a partial write.

Every data file pointworld writes (calibrations, point clouds, later checkpoints and episodes) goes
through :func:`atomic_open`: the content is written to a temporary file in the target's directory,
flushed to disk, given the permissions a plain ``open()`` would give, then renamed over the target
with ``os.replace`` (atomic on POSIX and Windows), and the directory entry is flushed too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: The process umask, read once at import (reading it means setting it, which is not thread-safe).
_UMASK = _read_umask()


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a directory entry (after a rename into it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and Windows) cannot fsync a directory; the rename still happened
    finally:
        os.close(fd)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", *,
                encoding: str | None = None) -> Iterator[IO]:
    """Open ``path`` for writing so that it only appears, complete, when the block exits normally.

    Args:
        path: the final file; its parent directories are created.
        mode: ``"wb"`` (binary) or ``"w"`` (text).
        encoding: text encoding for ``mode="w"`` (default UTF-8).

    Yields:
        A writable file object on a temporary sibling of ``path``. If the block raises, the temporary
        file is removed and ``path`` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode: expected 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; match open()'s permissions
        text = {} if mode == "wb" else {"encoding": encoding or "utf-8"}
        with os.fdopen(fd, mode, **text) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
