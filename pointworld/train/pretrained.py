"""The pretrained world model shipped inside the package (``pointworld/checkpoints/tiny.pt``).

It is a small model; the checkpoint's ``train_config``, ``dataset`` and ``metrics`` entries record how it
was trained, on which data, and how it scored.
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

import torch

from pointworld.model.world_model import WorldModel
from pointworld.train.checkpoint import build_model, load_checkpoint
from pointworld.train.distributed import resolve_device

#: The bundled checkpoint file (package data; it may be absent from an installation built without it).
PRETRAINED_PATH: Path = Path(str(files("pointworld").joinpath("checkpoints", "tiny.pt")))


def load_pretrained(path: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> WorldModel:
    """Load a trained world model in eval mode.

    Args:
        path: a checkpoint file; None or ``"default"`` (the CLI's ``checkpoint=default``) = the bundled
            :data:`PRETRAINED_PATH`.
        device: "cpu", "cuda", "cuda:i" or "auto".

    Raises:
        FileNotFoundError: the file does not exist (for the bundled one, the message says how to get it).
        CheckpointError: the file is not a valid checkpoint.
    """
    if path is None or path == "default":
        bundled = PRETRAINED_PATH  # read at call time (tests may point it elsewhere)
        if not bundled.is_file():
            raise FileNotFoundError(f"{bundled}: the bundled pretrained checkpoint is missing from this "
                                    f"installation of pointworld; reinstall the package with its data files, or "
                                    f"pass path= to a checkpoint written by `pointworld train`")
        path = bundled
    model = build_model(load_checkpoint(path, map_location="cpu"))
    return model.to(resolve_device(device)).eval()
