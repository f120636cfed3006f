"""Typed configuration of world-model training (mirrored by ``configs/train.yaml``).

:class:`TrainConfig` gathers the data (:class:`~pointworld.data.clip_dataset.ClipDatasetConfig`), the model
(:class:`~pointworld.model.world_model_config.WorldModelConfig`), the optimizer (:class:`OptimConfig`), the
loss (:class:`~pointworld.model.loss.LossConfig`) and the loop settings. Nested configs may be given as
mappings of their fields (as Hydra/YAML produce them); they are converted and validated here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from pointworld.data.clip_dataset import ClipDatasetConfig
from pointworld.config_dict import dataclass_from_dict
from pointworld.geometry.checks import require_int, require_positive
from pointworld.model.loss import LossConfig
from pointworld.model.world_model_config import WorldModelConfig

SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")


def _fraction(name: str, value: object, *, closed_top: bool) -> float:
    """A number in [0, 1] (or [0, 1) when ``closed_top`` is False), else ValueError naming ``name``."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 <= value
    ok = ok and (value <= 1.0 if closed_top else value < 1.0)
    if not ok:
        bound = "]" if closed_top else ")"
        raise ValueError(f"{name}: expected a number in [0, 1{bound}, got {value!r}")
    return float(value)


@dataclass
class OptimConfig:
    """AdamW with a linear warm-up then a cosine (or constant) learning rate.

    Attributes:
        lr: peak learning rate, > 0.
        weight_decay: AdamW decoupled weight decay of the weight matrices (biases, norms, embeddings: 0).
        betas: AdamW (beta1, beta2), each in [0, 1).
        grad_clip: clip the global gradient L2 norm to this; 0 = no clipping (the norm is still logged).
        warmup_steps: steps of the linear warm-up from ~0 to ``lr``.
        schedule: ``"cosine"`` (decay to ``min_lr_ratio * lr`` at the last step) or ``"constant"``.
        min_lr_ratio: final learning rate of the cosine schedule, relative to ``lr``, in [0, 1].
    """

    lr: float = 1e-3
    weight_decay: float = 0.05
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = 1.0
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.05

    def __post_init__(self) -> None:
        require_positive("lr", self.lr)
        wd = self.weight_decay
        if isinstance(wd, bool) or not isinstance(wd, (int, float)) or not 0.0 <= wd < math.inf:
            raise ValueError(f"weight_decay: expected a finite number >= 0, got {wd!r}")
        if isinstance(self.betas, (str, bytes)) or len(tuple(self.betas)) != 2:
            raise ValueError(f"betas: expected two numbers (beta1, beta2), got {self.betas!r}")
        self.betas = tuple(_fraction("betas", b, closed_top=False) for b in self.betas)
        gc = self.grad_clip
        if isinstance(gc, bool) or not isinstance(gc, (int, float)) or not 0.0 <= gc < math.inf:
            raise ValueError(f"grad_clip: expected a finite number >= 0 (0 = off), got {gc!r}")
        require_int("warmup_steps", self.warmup_steps, 0)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule: expected one of {SCHEDULES}, got {self.schedule!r}")
        self.min_lr_ratio = _fraction("min_lr_ratio", self.min_lr_ratio, closed_top=True)


def _convert(name: str, value: Any, cls: type, from_mapping: Any = None) -> Any:
    """Return ``value`` if it is a ``cls``, build one from a mapping, else TypeError naming ``name``."""
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        return from_mapping(value) if from_mapping is not None else cls(**value)
    raise TypeError(f"{name}: expected a {cls.__name__} or a mapping of its fields, got {type(value).__name__}")


@dataclass
class TrainConfig:
    """Everything :func:`pointworld.train.loop.train` needs.

    Attributes:
        data: the training clips (use ``split="train"``).
        val_data: the validation clips (``split="val"``, ideally ``random_views=False``); None = no validation.
        model: the world-model architecture (its ``horizon`` must equal the data's clip horizon T).
        optim: optimizer and learning-rate schedule.
        loss: the heteroscedastic Huber loss settings.
        steps: optimizer steps of the whole run (the schedule's length), >= 1.
        batch_size: clips per step *per process* (the global batch is ``batch_size * world_size``).
        num_workers: DataLoader worker processes per process (0 = load in the training process).
        seed: seeds the model initialisation, the data order, the augmentation and every random op of a
            step (derived from (seed, step, rank)), so a run is reproducible and resumes exactly.
        out: output directory (``last.pt``, ``best.pt``, ``train_config.json``, ``tb/``).
        val_every, checkpoint_every, log_every: periods in steps (0 = only at the end).
        val_batches: validation batches (of ``batch_size`` clips) per validation.
        normalization_batches: training batches used to fit the model's normalization statistics.
        augment: apply the default augmentation (yaw, scale, flip, color jitter, point dropout) to training
            clips.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        resume: continue from ``out/last.pt`` (model, optimizer, schedule, step, RNG states).
        init_from: start a new run (step 0, fresh optimizer) from the weights and normalization statistics of
            this checkpoint (fine-tuning); its state must fit ``model``, except that a layer may gain
            trailing input channels, which start at zero weight (e.g. switching ``segment_prior`` on adds its
            channels to the scene tokens). Ignored when resuming from ``last.pt``.
        amp: bf16 autocast of the forward pass on CUDA (ignored on CPU, which always runs float32).
    """

    data: ClipDatasetConfig
    out: str
    steps: int
    batch_size: int
    model: WorldModelConfig = field(default_factory=WorldModelConfig)
    val_data: ClipDatasetConfig | None = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    num_workers: int = 0
    seed: int = 0
    val_every: int = 200
    val_batches: int = 20
    checkpoint_every: int = 200
    log_every: int = 10
    normalization_batches: int = 20
    augment: bool = True
    device: str = "auto"
    resume: bool = False
    amp: bool = True
    init_from: str | None = None

    def __post_init__(self) -> None:
        self.data = _convert("data", self.data, ClipDatasetConfig)
        if self.val_data is not None:
            self.val_data = _convert("val_data", self.val_data, ClipDatasetConfig)
        self.model = _convert("model", self.model, WorldModelConfig, WorldModelConfig.from_dict)
        self.optim = _convert("optim", self.optim, OptimConfig)
        self.loss = _convert("loss", self.loss, LossConfig)
        if not isinstance(self.out, str) or not self.out:
            raise ValueError(f"out: expected an output directory path, got {self.out!r}")
        for name, low in (("steps", 1), ("batch_size", 1), ("num_workers", 0), ("seed", 0), ("val_every", 0),
                          ("val_batches", 1), ("checkpoint_every", 0), ("log_every", 1),
                          ("normalization_batches", 1)):
            require_int(name, getattr(self, name), low)
        for name in ("augment", "resume", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name}: expected a bool, got {getattr(self, name)!r}")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"init_from: expected None or a checkpoint path, got {self.init_from!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device: expected one of {DEVICES}, got {self.device!r}")
        if self.model.image_feature_channels:
            raise ValueError(f"model.image_feature_channels: the clip dataset provides no lifted image features, "
                             f"expected 0, got {self.model.image_feature_channels}")
        for name in ("data", "val_data"):
            cfg = getattr(self, name)
            if cfg is not None and tuple(cfg.robot_types) != tuple(self.model.robot_types):
                raise ValueError(f"{name}.robot_types: expected the model's robot vocabulary "
                                 f"{self.model.robot_types}, got {tuple(cfg.robot_types)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-able; written to ``out/train_config.json`` and stored in checkpoints)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict` output (nested configs as mappings)."""
        return dataclass_from_dict(cls, data)
