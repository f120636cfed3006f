"""pointworld: 3D point-cloud world models for robotic manipulation.

Layers (imports only go down): geometry ← capture, robot ← data ← model ← train, planning.
See ``pointworld.conventions`` for frames, units and shapes.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
