"""Body of ``pointworld render`` (CLI layer): static PNG figures of an evaluation, a plan, a clip or a capture."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

#: Input kinds ``pointworld render`` understands (``kind=auto`` picks one from the input).
RENDER_KINDS = ("eval", "plan", "clip", "capture")

_CLIP_SPEC = re.compile(r"^.+:-?\d+$")


def detect_kind(source: str) -> str:
    """The kind of ``source``: ``eval`` (a .json file), ``plan`` (a .npz file), ``clip`` (``PATH:INDEX``
    whose PATH exists) or ``capture`` (a directory with ``capture.json``).

    Raises:
        FileNotFoundError: nothing exists at ``source`` (nor at the PATH of ``PATH:INDEX``).
        ValueError: an existing path of none of these kinds.
    """
    path = Path(source)
    if not path.exists() and _CLIP_SPEC.match(source):
        if not Path(source.rsplit(":", 1)[0]).exists():
            raise FileNotFoundError(f"input: no dataset directory or episode file at {source.rsplit(':', 1)[0]}")
        return "clip"
    if not path.exists():
        raise FileNotFoundError(f"input: {source} does not exist")
    if path.is_file() and path.suffix == ".json":
        return "eval"
    if path.is_file() and path.suffix == ".npz":
        return "plan"
    if path.is_dir() and (path / "capture.json").is_file():
        return "capture"
    hint = " (a dataset: add ':INDEX' to pick a clip)" if (path / "dataset.json").is_file() or \
        path.suffix == ".h5" else ""
    raise ValueError(f"input: expected an evaluation JSON, a plan record .npz, a dataset clip 'PATH:INDEX' or "
                     f"a capture directory, got {source}{hint}")


def _model(cfg: DictConfig) -> Any:
    if cfg.checkpoint is None:
        return None
    from pointworld.train.pretrained import load_pretrained

    return load_pretrained(str(cfg.checkpoint), device=str(cfg.device))


def _view(cfg: DictConfig) -> Any:
    from pointworld.viz.viewpoint import ViewpointConfig

    return ViewpointConfig(**OmegaConf.to_container(cfg.view, resolve=True))


def render_input(cfg: DictConfig, kind: str) -> list[Path]:
    """Write the figures of ``cfg.input`` (of ``kind``) into ``cfg.out``; return their paths."""
    from pointworld.viz import figure_files as ff

    source, out = str(cfg.input), Path(str(cfg.out))
    arrows = {"max_arrows": int(cfg.max_arrows), "min_arrow_m": float(cfg.min_arrow_m)}
    if kind == "eval":
        png = out / f"{Path(source).stem}_error_over_horizon.png"
        return [ff.write_eval_figure(source, png, int(cfg.curves.width_px), int(cfg.curves.height_px))]
    if kind == "plan":
        from pointworld.planning.plan_record import load_plan_record

        size = (int(cfg.curves.width_px), int(cfg.curves.height_px))
        return ff.write_plan_figures(load_plan_record(source), out, _view(cfg), int(cfg.step),
                                     curve_size_px=size, **arrows)
    if kind == "clip":
        from pointworld.viz.view_data import view_data_from_clip

        data = view_data_from_clip(source, _model(cfg))
        return ff.write_clip_figures(data, out, _view(cfg), int(cfg.step), **arrows)
    from pointworld.viz.view_data import view_data_from_capture

    data = view_data_from_capture(source, instantiate(cfg.fusion), max_points=int(cfg.max_points))
    return [ff.write_cloud_figure(data, out / "capture_cloud.png", _view(cfg))]


def run_render(cfg: DictConfig) -> int:
    """``pointworld render input=PATH [kind=auto] [checkpoint=default] out=DIR``: PNG figures, paths printed."""
    kind = str(cfg.kind)
    if kind != "auto" and kind not in RENDER_KINDS:
        raise ValueError(f"kind: expected 'auto' or one of {list(RENDER_KINDS)}, got {kind!r}")
    if kind == "auto":
        kind = detect_kind(str(cfg.input))
    paths = render_input(cfg, kind)
    for path in paths:
        print(path)
    print(f"wrote {len(paths)} figure(s) of {kind} {cfg.input} to {cfg.out}")
    return 0
