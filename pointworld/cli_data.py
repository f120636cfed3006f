"""Body of ``pointworld inspect`` (CLI layer: turns its Hydra config into library calls)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from omegaconf import DictConfig

from pointworld.data.dataset_meta import load_meta
from pointworld.data.episode_io import episode_summary, list_episodes

_META_FILE = "dataset.json"


def _episode_line(s: dict) -> str:
    return (f"  {Path(s['path']).name:32s} {s['robot']:16s} {s['source']:5s} {s['steps']:6d} "
            f"{s['clips']:6d} {s['views']:3d} {s['points']:9d} {100 * s['moving_clip_share']:7.1f}%")


def run_inspect(cfg: DictConfig) -> int:
    """``pointworld inspect PATH``: per-episode and total statistics, robots and splits."""
    path = Path(str(cfg.path))
    if not path.exists():
        raise FileNotFoundError(f"path: no dataset directory or episode file at {path}")
    files = list_episodes(path) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"path: {path} holds no episode files")
    threshold = float(cfg.moving_threshold_m)
    summaries = [episode_summary(f, moving_threshold_m=threshold) for f in files]
    print(f"{path}: {len(summaries)} episode(s)")
    print(f"  {'episode':32s} {'robot':16s} {'src':5s} {'steps':>6s} {'clips':>6s} {'V':>3s} "
          f"{'points':>9s} {'moving':>8s}")
    print("\n".join(_episode_line(s) for s in summaries))
    clips = sum(s["clips"] for s in summaries)
    moving_clips = sum(s["moving_clip_share"] * s["clips"] for s in summaries)
    points = sum(s["points"] for s in summaries)
    moving_points = sum(s["moving_points"] for s in summaries)
    robots = Counter(s["robot"] for s in summaries)
    print(f"total: {clips} clips, {points} scene points; clips with motion (> {threshold} m): "
          f"{moving_clips / clips:.1%}" if clips else "total: no clips")
    if points:
        print(f"moving points: {moving_points / points:.1%}")
    print("robots: " + ", ".join(f"{r} ({n} episodes)" for r, n in sorted(robots.items())))
    if path.is_dir() and (path / _META_FILE).exists():
        meta = load_meta(path)
        splits = Counter(e.split for e in meta.episodes.values())
        print("splits (by episode): " + ", ".join(f"{k} {v}" for k, v in sorted(splits.items())))
    return 0
