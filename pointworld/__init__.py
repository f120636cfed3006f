"""pointworld: 3D point-cloud world models for robotic manipulation.

Layers (imports only go down): geometry ← capture, robot ← data ← model ← train, planning.
See ``pointworld.conventions`` for frames, units and shapes.

``pointworld.load_pretrained()`` returns the bundled world model (:func:`pointworld.train.pretrained.load_pretrained`).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "load_pretrained"]


def load_pretrained(path: str | None = None, device: str = "cpu") -> Any:
    """The bundled pretrained world model (``tiny``, in eval mode), or the checkpoint at ``path``.

    See :func:`pointworld.train.pretrained.load_pretrained`; imported lazily so ``import pointworld`` stays light.
    """
    from pointworld.train.pretrained import load_pretrained as _load

    return _load(path, device=device)
