"""Body of ``pointworld view`` (CLI layer): load a capture, clip or plan record and serve the web viewer."""

from __future__ import annotations

import signal
import threading
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig


def _load_model(checkpoint: Any, device: str) -> Any:
    if checkpoint is None:
        return None
    from pointworld.train.pretrained import load_pretrained

    return load_pretrained(str(checkpoint), device=device)


def _serve(stop: threading.Event, duration_s: float | None) -> None:
    """Wait until ``stop`` is set by SIGINT/SIGTERM (handlers installed only on the main thread) or
    ``duration_s`` elapsed; the previous handlers are restored afterwards."""
    main = threading.current_thread() is threading.main_thread()
    previous = {}
    if main:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        stop.wait(duration_s)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_view(cfg: DictConfig) -> int:
    """``pointworld view INPUT [checkpoint=default] [port=8080] [duration_s=...]``: start the viewer, print
    its URL, serve until Ctrl-C / SIGTERM or ``duration_s``, stop the server, exit 0."""
    from pointworld.viz.view_data import load_view_data
    from pointworld.viz.viewer import Viewer

    duration = None if cfg.duration_s is None else float(cfg.duration_s)
    if duration is not None and not duration >= 0:
        raise ValueError(f"duration_s: expected seconds >= 0 or null, got {cfg.duration_s!r}")
    model = _load_model(cfg.checkpoint, str(cfg.device))
    data = load_view_data(str(cfg.input), model=model, fusion=instantiate(cfg.fusion),
                          max_points=int(cfg.max_points))
    stop = threading.Event()
    with Viewer(data, host=str(cfg.host), port=int(cfg.port), point_size_m=float(cfg.point_size_m),
                max_flow_lines=int(cfg.max_flow_lines)) as viewer:
        print(f"pointworld view: {data.title}: {data.points.shape[0]} points, {data.horizon} steps")
        print(f"viewer running at {viewer.url}  (Ctrl-C to stop)", flush=True)
        _serve(stop, duration)
    print("viewer stopped")
    return 0
