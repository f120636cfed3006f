"""Small data files shipped inside the package (the demo recording)."""

from __future__ import annotations

from pathlib import Path

_ASSETS = Path(__file__).resolve().parent


def demo_capture_path() -> Path:
    """Directory of the shipped demo scene capture (3 synthetic RGB-D views of a table-top scene).

    It is produced by ``scripts/make_demo_capture.py`` and follows the format of
    :mod:`pointworld.capture.storage`.
    """
    return _ASSETS / "demo_capture"
