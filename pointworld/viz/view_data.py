"""What the viewer shows (:class:`ViewData`) and how to get it from a capture, a dataset clip or a saved plan.

- :func:`view_data_from_capture`: a scene capture directory -> the fused cloud with colors (no flow).
- :func:`view_data_from_clip`: ``"DATASET_DIR:INDEX"`` (INDEX over every clip of the dataset, split "all")
  or ``"EPISODE.h5:INDEX"`` (INDEX = clip of that episode) -> the clip's cloud, robot points over time,
  ground-truth displacement with its validity, and the model's prediction when a model is given.
- :func:`view_data_from_plan`: a plan record ``.npz`` (:mod:`pointworld.planning.plan_record`) -> cloud,
  predicted flow and uncertainty, robot points along the plan, goal points and targets, top candidates.
- :func:`load_view_data`: picks one of the three from what ``source`` names.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from pointworld.geometry.checks import require_finite, require_shape

_CLIP_SPEC = re.compile(r"^(?P<path>.+):(?P<index>-?\d+)$")


@dataclass(frozen=True, eq=False)
class ViewData:
    """Everything the viewer can draw (CPU float32 tensors; optional parts None).

    Attributes:
        points: (N, 3) scene points at t = 0, m, world frame. colors: (N, 3) RGB in [0, 1].
        robot_points: (T+1, M, 3) robot surface points at steps 0..T, m, world frame.
        predicted: (T, N, 3) predicted displacement from t = 0 at steps 1..T, m, world frame.
        log_var: (T, N) predicted log variance of ``predicted``, log(m^2).
        ground_truth: (T, N, 3) true displacement at steps 1..T, m, world frame; valid: (T, N) bool where known.
        goal_indices: (P,) int64 indices of goal points; goal_targets: (P, 3) their targets, m, world frame.
        candidates: (C, T, N, 3) predicted displacement of the planner's top candidates, best first, m.
        title: what was loaded (shown in the viewer).
    """

    points: torch.Tensor
    colors: torch.Tensor
    robot_points: torch.Tensor | None = None
    predicted: torch.Tensor | None = None
    log_var: torch.Tensor | None = None
    ground_truth: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    goal_indices: torch.Tensor | None = None
    goal_targets: torch.Tensor | None = None
    candidates: torch.Tensor | None = None
    title: str = ""

    def __post_init__(self) -> None:
        n = require_shape("points", self.points, (None, 3), max_leading=0).shape[0]
        require_finite("points", self.points)
        require_shape("colors", self.colors, (n, 3), max_leading=0)
        if n and not bool(((self.colors >= 0) & (self.colors <= 1)).all()):
            raise ValueError(f"colors: expected RGB values in [0, 1], got range "
                             f"[{float(self.colors.min())}, {float(self.colors.max())}]")
        t = self.horizon
        for name, shape in (("predicted", (t, n, 3)), ("log_var", (t, n)), ("ground_truth", (t, n, 3)),
                            ("valid", (t, n)), ("robot_points", (t + 1, None, 3)), ("candidates", (None, t, n, 3))):
            value = getattr(self, name)
            if value is not None:
                require_shape(name, value, shape, max_leading=0)
        for a, b in (("ground_truth", "valid"), ("goal_indices", "goal_targets")):
            if (getattr(self, a) is None) != (getattr(self, b) is None):
                raise ValueError(f"{a}, {b}: expected both or neither, got only one of them")
        if self.goal_indices is not None:
            p = require_shape("goal_indices", self.goal_indices, (None,), max_leading=0).shape[0]
            require_shape("goal_targets", self.goal_targets, (p, 3), max_leading=0)
            if p and not (int(self.goal_indices.min()) >= 0 and int(self.goal_indices.max()) < n):
                raise ValueError(f"goal_indices: expected indices in [0, {n}), got "
                                 f"[{int(self.goal_indices.min())}, {int(self.goal_indices.max())}]")

    @property
    def horizon(self) -> int:
        """T, the number of future steps (0 when nothing moves: a bare capture)."""
        for name in ("predicted", "ground_truth", "candidates"):
            value = getattr(self, name)
            if value is not None:
                return int(value.shape[-3])
        return 0 if self.robot_points is None else int(self.robot_points.shape[0]) - 1


def _f32(x: torch.Tensor | None) -> torch.Tensor | None:
    return None if x is None else x.detach().to(device="cpu", dtype=torch.float32)


def view_data_from_capture(path: str | os.PathLike, fusion: object | None = None,
                           max_points: int = 8192) -> ViewData:
    """The fused cloud of a calibrated capture directory (``capture.json`` + PNGs).

    Args:
        path: the capture directory. fusion: a :class:`~pointworld.geometry.fusion.FusionConfig`
            (workspace box, voxel size) or None for its defaults. max_points: cap on the shown points.

    Raises:
        CaptureFormatError: not a valid capture. CalibrationError: uncalibrated (identity) camera poses.
    """
    from pointworld.capture.storage import load_capture
    from pointworld.geometry.fusion import FusionConfig
    from pointworld.planning.observation import ObservationConfig, observe_scene

    config = ObservationConfig(fusion=FusionConfig() if fusion is None else fusion, max_points=max_points)
    obs = observe_scene(load_capture(path), config)
    return ViewData(points=_f32(obs.scene.points[0]), colors=_f32(obs.scene.colors[0]),
                    title=f"capture {path}")


def parse_clip_spec(spec: str) -> tuple[Path, int]:
    """``"PATH:INDEX"`` -> (PATH, INDEX); ``ValueError`` naming the spec when it has no ``:INDEX`` suffix."""
    match = _CLIP_SPEC.match(str(spec))
    if match is None:
        raise ValueError(f"spec: expected 'DATASET_DIR:INDEX' or 'EPISODE.h5:INDEX', got {spec!r}")
    return Path(match["path"]), int(match["index"])


def _global_index(path: Path, index: int) -> tuple[Path, int]:
    """(dataset dir, index over every clip of the dataset) for a dataset dir or an episode file."""
    from pointworld.data.dataset_meta import load_meta
    from pointworld.data.episode_io import EPISODE_SUFFIX

    if path.is_dir():
        return path, index
    if not path.is_file():
        raise FileNotFoundError(f"spec: {path} is neither a dataset directory nor an episode file")
    meta = load_meta(path.parent)
    names = list(meta.episodes)
    stem = path.name.removesuffix(EPISODE_SUFFIX)
    if stem not in names:
        raise ValueError(f"spec: episode {path.name} is not listed in {path.parent / 'dataset.json'}")
    n_clips = meta.episodes[stem].n_clips
    if not 0 <= index < n_clips:
        raise IndexError(f"spec: episode {path.name} has clips 0..{n_clips - 1}, got index {index}")
    before = sum(meta.episodes[name].n_clips for name in names[:names.index(stem)])
    return path.parent, before + index


def view_data_from_clip(spec: str, model: object | None = None) -> ViewData:
    """One dataset clip: cloud, robot points over time, ground truth, and the model's prediction.

    Args:
        spec: ``"DATASET_DIR:INDEX"`` or ``"EPISODE.h5:INDEX"`` (see the module docstring).
        model: a :class:`~pointworld.model.world_model.WorldModel` in eval mode (its robot vocabulary and
            horizon are used), or None (ground truth only).

    Raises:
        ValueError: malformed spec, or a model whose horizon differs from the clip's.
        IndexError: INDEX out of range. FileNotFoundError / EpisodeFormatError: no such dataset or episode.
    """
    from pointworld.data.clip_dataset import ClipDataset, ClipDatasetConfig
    from pointworld.data.collate import collate_clips

    directory, index = _global_index(*parse_clip_spec(spec))
    extra = {} if model is None else {"robot_types": model.config.robot_types}
    dataset = ClipDataset(ClipDatasetConfig(sources=({"path": str(directory)},), split="all",
                                            random_views=False, **extra))
    sample = dataset[index]
    predicted = log_var = None
    if model is not None:
        horizon = int(sample.target.shape[0])
        if model.config.horizon != horizon:
            raise ValueError(f"model: predicts T = {model.config.horizon} steps, the clip {spec!r} has {horizon}")
        batch = collate_clips([sample]).to(next(model.parameters()).device)
        with torch.no_grad():
            pred = model.predict(batch.scene, batch.action)
        predicted, log_var = _f32(pred.displacement[0]), _f32(pred.log_var[0])
    return ViewData(points=_f32(sample.points), colors=_f32(sample.colors),
                    robot_points=_f32(sample.robot_flow[..., :3]), predicted=predicted, log_var=log_var,
                    ground_truth=_f32(sample.target), valid=sample.valid.cpu().bool(),
                    title=f"clip {sample.clip} of {sample.episode} ({spec})")


def view_data_from_plan(path: str | os.PathLike) -> ViewData:
    """A saved plan record (``.npz``): cloud, predicted flow + uncertainty, robot, goal, candidates.

    Raises:
        FileNotFoundError: no such file. PlanRecordError: not a valid plan record.
    """
    from pointworld.planning.plan_record import load_plan_record

    r = load_plan_record(path)
    return ViewData(points=r.points, colors=r.colors, robot_points=r.robot_points, predicted=r.displacement,
                    log_var=r.log_var, goal_indices=r.goal_indices, goal_targets=r.goal_targets,
                    candidates=r.candidates, title=f"plan of {r.robot_name} ({Path(path).name})")


def load_view_data(source: str | os.PathLike, model: object | None = None, fusion: object | None = None,
                   max_points: int = 8192) -> ViewData:
    """Load what ``source`` names: ``PATH:INDEX`` -> a clip, a ``.npz`` file -> a plan record, a directory
    with ``capture.json`` -> a capture (fused with ``fusion``, at most ``max_points`` points). ``model`` is
    used for clips only.

    Raises:
        ValueError: a source that is none of these (the message says what each form looks like).
        FileNotFoundError: a path that does not exist.
    """
    text = os.fspath(source)
    path = Path(text)
    if _CLIP_SPEC.match(text) and not path.exists():
        return view_data_from_clip(text, model)
    if not path.exists():
        raise FileNotFoundError(f"source: {text} does not exist")
    if path.is_file() and path.suffix == ".npz":
        return view_data_from_plan(path)
    if path.is_dir() and (path / "capture.json").is_file():
        return view_data_from_capture(path, fusion, max_points)
    hint = " (a dataset: add ':INDEX' to pick a clip)" if (path / "dataset.json").is_file() or path.suffix == ".h5" \
        else ""
    raise ValueError(f"source: expected a capture directory, a plan record .npz or a dataset clip "
                     f"'PATH:INDEX', got {text}{hint}")
