"""Rebuilding typed config dataclasses from their plain-data form (JSON, checkpoints, Hydra containers)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

C = TypeVar("C")


def dataclass_from_dict(cls: type[C], data: Any) -> C:
    """``cls(**data)`` after checking that ``data`` is a mapping with no unknown field names.

    Raises:
        TypeError: ``data`` is not a mapping.
        ValueError: ``data`` names fields ``cls`` does not have (listed with the known ones).
    """
    if not isinstance(data, dict):
        raise TypeError(f"data: expected a mapping of {cls.__name__} fields, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"data: unknown {cls.__name__} fields {unknown}; known: {sorted(known)}")
    return cls(**data)
