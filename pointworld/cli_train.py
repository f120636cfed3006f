"""Bodies of ``pointworld train`` and ``pointworld eval`` (CLI layer: Hydra config -> library calls)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf


def _sources(value: Any) -> list[dict]:
    """``[DIR, ...]`` or ``[{path, weight}, ...]`` (or one DIR) -> list of DataSource mappings."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [{"path": str(v)} if not isinstance(v, dict) else dict(v) for v in items]


def train_config_from(cfg: DictConfig) -> Any:
    """The :class:`~pointworld.train.config.TrainConfig` of a composed ``train`` config."""
    from pointworld.train.config import TrainConfig

    raw = OmegaConf.to_container(cfg, resolve=True)
    raw["data"]["sources"] = _sources(raw["data"]["sources"])
    val = raw.pop("val_data")
    raw["val_data"] = None if val is None else {**raw["data"], **val}
    return TrainConfig(**raw)


def run_train(cfg: DictConfig) -> int:
    """``pointworld train data.sources=[DIR] out=DIR [model=tiny steps=...]``: train, print a summary and
    write it to ``out/summary.json`` (losses per logged step, validation metrics, throughput)."""
    from pointworld.train.loop import train

    import os

    import json

    from pointworld.atomic import atomic_open

    s = train(train_config_from(cfg), progress=True)
    if os.environ.get("RANK", "0") == "0":
        with atomic_open(Path(s["out"]) / "summary.json", "w") as f:
            json.dump(s, f, indent=1, default=str)
        best = "n/a" if s["best_l2_moved"] is None else f"{100 * s['best_l2_moved']:.2f} cm"
        speed = "n/a" if s["clips_per_s"] is None else f"{s['clips_per_s']:.2f}"
        print(f"step {s['step']}/{s['steps']} on {s['world_size']} x {s['device']}: final loss "
              f"{s['final_loss']:.4g}, best val l2_moved {best}, {speed} clips/s; checkpoints in {s['out']}")
    return 0


def run_eval(cfg: DictConfig) -> int:
    """``pointworld eval checkpoint=default|PATH data.sources=[DIR]``: metrics table + JSON."""
    from pointworld.data.clip_dataset import ClipDataset, ClipDatasetConfig
    from pointworld.model.baselines import RigidFollow, ZeroMotion
    from pointworld.model.segment_prior import SegmentFollow
    from pointworld.train.checkpoint import build_model, load_checkpoint
    from pointworld.train.distributed import resolve_device
    from pointworld.train.evaluate import evaluate, format_table, write_results
    from pointworld.train.pretrained import PRETRAINED_PATH
    from pointworld.viz.figure_files import write_eval_figure

    path = PRETRAINED_PATH if cfg.checkpoint == "default" else Path(str(cfg.checkpoint))
    model = build_model(load_checkpoint(path))
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data["sources"] = _sources(data["sources"])
    dataset = ClipDataset(ClipDatasetConfig(**data, robot_types=model.config.robot_types))
    predictors: dict[str, Any] = {"model": model}
    if cfg.baselines:
        # segment_follow: the model's own prior (its settings) alone, so the table shows what the network adds
        predictors.update(zero_motion=ZeroMotion(), rigid_follow=RigidFollow(cfg.rigid_follow_radius_m),
                          segment_follow=SegmentFollow(model.config.segment_prior))
    device = resolve_device(str(cfg.device))
    results = evaluate(predictors, dataset, batch_size=cfg.batch_size, device=device,
                       max_batches=cfg.max_batches, progress=True)
    results["checkpoint"] = str(path)
    print(format_table(results))
    out = Path(cfg.out) if cfg.out else (Path("eval.json") if cfg.checkpoint == "default"
                                         else path.with_name(f"{path.stem}_eval.json"))
    write_results(results, out)
    png = write_eval_figure(out, out.with_name(f"{out.stem}_error_over_horizon.png"))
    print(f"wrote {out} and {png}")
    return 0
