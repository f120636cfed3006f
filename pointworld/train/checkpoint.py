"""Training checkpoints: one ``torch.save`` file holding a world model and everything needed to resume.

A checkpoint is a plain dict (loadable with ``torch.load(..., weights_only=True)``, so opening one never runs
code from the file) with the keys of :data:`REQUIRED_KEYS` and :data:`OPTIONAL_KEYS`:

- ``format`` = :data:`CHECKPOINT_FORMAT`, ``version`` = :data:`CHECKPOINT_VERSION`, ``library_version``;
- ``model_config`` (``WorldModelConfig.to_dict()``) and ``model_state`` (the model's ``state_dict`` on CPU,
  normalization statistics included), ``step`` (optimizer steps taken);
- ``optimizer_state``, ``scheduler_state``, ``train_config``, ``dataset`` (``ClipDataset.describe()``),
  ``metrics``, ``rng_state`` (:func:`capture_rng_state`), each ``None`` when not given.

Files are written atomically (:func:`pointworld.atomic.atomic_open`): a crash mid-write leaves the previous
checkpoint intact. Every problem found when reading one raises :class:`~pointworld.errors.CheckpointError`
naming the file.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import pointworld
from pointworld.atomic import atomic_open
from pointworld.errors import CheckpointError
from pointworld.geometry.checks import require_int
from pointworld.model.world_model import WorldModel
from pointworld.model.world_model_config import WorldModelConfig

CHECKPOINT_FORMAT = "pointworld.checkpoint"
CHECKPOINT_VERSION = 1
REQUIRED_KEYS: tuple[str, ...] = ("format", "version", "library_version", "model_config", "model_state", "step")
OPTIONAL_KEYS: tuple[str, ...] = ("optimizer_state", "scheduler_state", "train_config", "dataset", "metrics",
                                  "rng_state")
#: Types that ``torch.load(weights_only=True)`` accepts: leaves, and containers of accepted values.
_LEAVES = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device)
_SEQUENCES = (list, tuple, set, torch.Size)
_MAPPINGS = (dict, OrderedDict)
#: How many mismatching keys an architecture error lists.
_SHOW = 5


@dataclass
class Checkpoint:
    """A checkpoint read by :func:`load_checkpoint` (field meanings in the module docstring)."""

    path: Path
    format: str
    version: int
    library_version: str
    model_config: dict[str, Any]
    model_state: dict[str, torch.Tensor]
    step: int
    optimizer_state: dict[str, Any] | None = None
    scheduler_state: dict[str, Any] | None = None
    train_config: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    rng_state: dict[str, Any] | None = None


def _require_plain(name: str, value: Any) -> None:
    """TypeError naming the first entry of ``value`` that ``weights_only`` loading would refuse.

    Types are matched exactly (not by isinstance): ``numpy.float64`` subclasses float, a namedtuple subclasses
    tuple, and both would be refused when the file is read.
    """
    if isinstance(value, torch.Tensor) or type(value) in _LEAVES:
        return
    if type(value) in _SEQUENCES:
        for i, v in enumerate(value):
            _require_plain(f"{name}[{i}]", v)
        return
    if type(value) in _MAPPINGS:
        for k, v in value.items():
            if type(k) not in _LEAVES:
                raise TypeError(f"{name}: expected keys of plain types, got key {k!r} of type {type(k).__name__}")
            _require_plain(f"{name}[{k!r}]", v)
        return
    raise TypeError(f"{name}: expected tensors, None, bool, int, float, str, ... in lists, tuples or dicts "
                    f"(loadable with weights_only=True), got {type(value).__module__}.{type(value).__name__}")


def _unwrap(model: Any) -> WorldModel:
    """The WorldModel inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    inner = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    if not isinstance(inner, WorldModel):
        raise TypeError(f"model: expected a WorldModel (or a DDP wrapper of one), got {type(model).__name__}")
    return inner


def save_checkpoint(path: str | os.PathLike, *, model: WorldModel, step: int, optimizer: Any = None,
                    scheduler: Any = None, train_config: dict | None = None, dataset: dict | None = None,
                    metrics: dict | None = None, rng_state: dict | None = None) -> Path:
    """Write a checkpoint atomically and return its path.

    Args:
        path: target file (parent directories are created; an existing file is replaced only once the new
            one is complete).
        model: the model (or its DDP wrapper); its state is stored on CPU with its dtypes.
        step: number of optimizer steps taken, int >= 0.
        optimizer, scheduler: objects with ``state_dict()`` (e.g. AdamW, LambdaLR), or None.
        train_config, dataset, metrics, rng_state: plain data (str/int/float/bool/None/tensors in
            dicts, lists, tuples), or None.

    Raises:
        TypeError: an argument is of the wrong type, or holds a value ``weights_only`` loading refuses.
    """
    inner = _unwrap(model)
    payload = {
        "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "library_version": pointworld.__version__,
        "model_config": inner.config.to_dict(),
        "model_state": {k: v.detach().cpu() for k, v in inner.state_dict().items()},
        "step": require_int("step", step, 0),
        "optimizer_state": None if optimizer is None else optimizer.state_dict(),
        "scheduler_state": None if scheduler is None else scheduler.state_dict(),
        "train_config": train_config, "dataset": dataset, "metrics": metrics, "rng_state": rng_state,
    }
    for key in ("train_config", "dataset", "metrics", "rng_state"):
        if payload[key] is not None and not isinstance(payload[key], dict):
            raise TypeError(f"{key}: expected a dict or None, got {type(payload[key]).__name__}")
    for key, value in payload.items():
        _require_plain(key, value)
    path = Path(path)
    with atomic_open(path, "wb") as fh:
        torch.save(payload, fh)
    return path


def _read(path: Path, map_location: Any) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint file at this path")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated, corrupt, not a torch.save file, "
                              f"or holding objects that weights_only loading refuses): {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    """The informative part of a torch.load error, on one line."""
    text = str(exc)
    if "WeightsUnpickler error:" in text:  # skip torch's generic advice, keep what was refused
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def _check_payload(path: Path, data: Any) -> None:
    """CheckpointError naming ``path`` if ``data`` is not a pointworld checkpoint this library can read."""
    if not isinstance(data, dict) or "format" not in data:
        got = f"a dict with keys {sorted(map(str, data))[:8]}" if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path}: not a pointworld checkpoint: expected a dict with format "
                              f"{CHECKPOINT_FORMAT!r}, got {got}")
    if data["format"] != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: wrong format: expected {CHECKPOINT_FORMAT!r}, got {data['format']!r}")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path}: expected an int version >= 1, got {version!r}")
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: checkpoint version {version} is newer than this library reads "
                              f"(up to {CHECKPOINT_VERSION}); upgrade pointworld")
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"{path}: missing keys {missing} (required: {list(REQUIRED_KEYS)})")
    if not isinstance(data["model_config"], dict):
        raise CheckpointError(f"{path}: model_config: expected a dict, got {type(data['model_config']).__name__}")
    state = data["model_state"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: model_state: expected a dict of tensors, got {type(state).__name__}")
    step = data["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"{path}: step: expected an int >= 0, got {step!r}")


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> Checkpoint:
    """Read and check a checkpoint written by :func:`save_checkpoint` (never executes code from the file).

    Args:
        path: the checkpoint file.
        map_location: where tensors are loaded (``torch.load``'s argument), default CPU.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: not a checkpoint, truncated or corrupt, wrong format, newer version, missing keys.
    """
    path = Path(path)
    data = _read(path, map_location)
    _check_payload(path, data)
    fields = {k: data[k] for k in REQUIRED_KEYS}
    fields.update({k: data.get(k) for k in OPTIONAL_KEYS})
    return Checkpoint(path=path, **fields)


def state_mismatch(expected: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> str:
    """Describe how ``got`` differs from ``expected`` in keys and shapes ('' if it does not)."""
    parts = []
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [f"{k}: model {tuple(v.shape)} vs checkpoint {tuple(got[k].shape)}"
              for k, v in expected.items() if k in got and v.shape != got[k].shape]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
            parts.append(f"{len(items)} {label}: {items[:_SHOW]}{more}")
    return "; ".join(parts)


def build_model(checkpoint: Checkpoint | str | os.PathLike) -> WorldModel:
    """The WorldModel stored in a checkpoint (architecture from ``model_config``, weights and normalization
    statistics from ``model_state``, each tensor keeping its saved dtype), on the checkpoint's device, in eval mode.

    Raises:
        CheckpointError: the config is invalid, or the state does not fit the architecture (the message names
            the file and the first missing / unexpected keys and mismatching shapes).
    """
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    try:
        config = WorldModelConfig.from_dict(ckpt.model_config)
        model = WorldModel(config)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{ckpt.path}: invalid model_config: {exc}") from exc
    problem = state_mismatch(model.state_dict(), ckpt.model_state)
    if problem:
        raise CheckpointError(f"{ckpt.path}: model_state does not match the architecture of its model_config: "
                              f"{problem}")
    # assign keeps each saved dtype; the clones keep two models built from one Checkpoint independent
    model.load_state_dict({k: v.clone() for k, v in ckpt.model_state.items()}, strict=True, assign=True)
    return model.eval()


def capture_rng_state() -> dict[str, Any]:
    """The global torch (CPU and CUDA), numpy and Python RNG states as checkpoint-safe plain data."""
    np_state = np.random.get_state(legacy=False)
    py_version, py_words, py_gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
                  "pos": int(np_state["state"]["pos"]), "has_gauss": int(np_state["has_gauss"]),
                  "gauss": float(np_state["gauss"])},
        "python": {"version": py_version, "state": list(py_words), "gauss_next": py_gauss},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Set the global RNGs from :func:`capture_rng_state` output (CUDA states only if the device count matches)."""
    if not isinstance(state, dict) or not {"torch", "numpy", "python"} <= set(state):
        got = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise ValueError(f"state: expected a dict with keys 'torch', 'numpy', 'python', got {got}")
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    n = state["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"], "has_gauss": n["has_gauss"], "gauss": n["gauss"],
                         "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]}})
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss_next"]))
