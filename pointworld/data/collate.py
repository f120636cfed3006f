"""Batching of clip samples: a list of :class:`~pointworld.data.clip_sample.ClipSample` -> one padded
:class:`ClipBatch` holding the world model's inputs (:class:`~pointworld.model.inputs.SceneInput`,
:class:`~pointworld.model.inputs.ActionInput`) and the training targets.

Samples differ in their number of scene points N_b and of robot points M_b (robots of several kinds in
one batch); both are padded to the largest one. Padding follows DESIGN.md: a (B, N) / (B, M) bool mask
is True for real points; padded positions, colors, normals, robot features and targets are exactly
zero and padded ``valid`` entries are False. The real entries are copied unchanged (no dtype or value
change), so ``batch.scene.points[b, :N_b]`` is sample b's ``points``.

Every sample must have the same horizon T (its ``target`` (T, N, 3) and ``robot_flow`` (T+1, M, 15)).
``collate_clips`` is meant as the ``collate_fn`` of a ``torch.utils.data.DataLoader``; ``ClipBatch``
has ``pin_memory()`` so ``DataLoader(pin_memory=True)`` works with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from pointworld.data.clip_sample import ClipSample
from pointworld.geometry.checks import require_dtype, require_floating, require_int, require_shape
from pointworld.model.inputs import ActionInput, SceneInput
from pointworld.robot.flow import FEATURE_DIM


@dataclass(frozen=True)
class ClipBatch:
    """A padded batch of training clips (frame: world, units: m).

    Attributes:
        scene: scene at t = 0; ``points``/``colors``/``normals`` (B, N, 3), ``mask`` (B, N) bool.
        action: robot point flows; ``flow`` (B, T+1, M, 15), ``mask`` (B, M) bool, ``robot_type``
            (B,) int64 index in the model's robot vocabulary.
        target: (B, T, N, 3) displacement of every scene point from t = 0 at steps 1..T, m, world;
            0 at padded points.
        valid: (B, T, N) bool, True where the target is known; False at padded points.
        robot_names: B robot names.
        episodes: B episode names (file stems).
        clips: B clip indices within their episodes.
    """

    scene: SceneInput
    action: ActionInput
    target: torch.Tensor
    valid: torch.Tensor
    robot_names: list[str]
    episodes: list[str]
    clips: list[int]

    @property
    def batch_size(self) -> int:
        """B."""
        return self.scene.batch_size

    @property
    def horizon(self) -> int:
        """T, the number of future steps."""
        return int(self.target.shape[1])

    def _map(self, fn) -> ClipBatch:
        """A copy with ``fn`` applied to every tensor."""
        s, a = self.scene, self.action
        feats = None if s.image_features is None else fn(s.image_features)
        scene = SceneInput(fn(s.points), fn(s.colors), fn(s.normals), fn(s.mask), feats)
        action = ActionInput(fn(a.flow), fn(a.mask), fn(a.robot_type))
        return ClipBatch(scene, action, fn(self.target), fn(self.valid), list(self.robot_names),
                         list(self.episodes), list(self.clips))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClipBatch:
        """A copy with every tensor on ``device`` (dtypes unchanged)."""
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> ClipBatch:
        """A copy with every tensor in page-locked host memory (used by ``DataLoader(pin_memory=True)``)."""
        return self._map(lambda t: t.pin_memory())


def _check_sample(i: int, s: object) -> tuple[int, int, int]:
    """Check sample ``i``'s fields; return its (T, N, M)."""
    if not isinstance(s, ClipSample):
        raise TypeError(f"samples[{i}]: expected a ClipSample, got {type(s).__name__}")
    name = f"samples[{i}]"
    require_floating(f"{name}.points", s.points)
    require_shape(f"{name}.points", s.points, (None, 3), max_leading=0)
    n = int(s.points.shape[0])
    for field in ("colors", "normals"):
        require_floating(f"{name}.{field}", getattr(s, field))
        require_shape(f"{name}.{field}", getattr(s, field), (n, 3), max_leading=0)
    require_floating(f"{name}.target", s.target)
    require_shape(f"{name}.target", s.target, (None, n, 3), max_leading=0)
    t = int(s.target.shape[0])
    require_dtype(f"{name}.valid", s.valid, torch.bool)
    require_shape(f"{name}.valid", s.valid, (t, n), max_leading=0)
    require_floating(f"{name}.robot_flow", s.robot_flow)
    require_shape(f"{name}.robot_flow", s.robot_flow, (t + 1, None, FEATURE_DIM), max_leading=0)
    require_int(f"{name}.robot_type", s.robot_type, minimum=0)
    return t, n, int(s.robot_flow.shape[1])


def _pad(items: Sequence[torch.Tensor], lengths: torch.Tensor, axis: int) -> torch.Tensor:
    """Stack tensors that differ only in dim ``axis`` into (B, ...) with that dim padded with zeros.

    One concatenation and one indexed write (no per-sample copy loop): row j of the concatenation
    lands in sample ``b[j]`` at position ``pos[j]`` along ``axis``.
    """
    moved = [x.movedim(axis, 0) for x in items]                 # (L_b, ...)
    flat = torch.cat(moved, 0)                                   # (sum L_b, ...)
    total, width = int(lengths.sum()), int(lengths.max())
    b = torch.repeat_interleave(torch.arange(len(items)), lengths)
    starts = torch.cumsum(lengths, 0) - lengths
    pos = torch.arange(total) - starts[b]
    out = flat.new_zeros((len(items), width) + tuple(flat.shape[1:]))
    out[b, pos] = flat
    return out.movedim(1, axis + 1).contiguous()


def _lengths_mask(lengths: torch.Tensor) -> torch.Tensor:
    """(B, max L) bool, True at positions < L_b."""
    return torch.arange(int(lengths.max()))[None, :] < lengths[:, None]


def collate_clips(samples: Sequence[ClipSample]) -> ClipBatch:
    """Pad and stack clip samples into one batch.

    Args:
        samples: B >= 1 samples with the same horizon T; sample b has ``points``/``colors``/``normals``
            (N_b, 3) (m, world / [0, 1] / unit), ``target`` (T, N_b, 3) m world, ``valid`` (T, N_b) bool,
            ``robot_flow`` (T+1, M_b, 15) world, ``robot_type`` an int >= 0.

    Returns:
        A :class:`ClipBatch` with N = max N_b and M = max M_b: scene tensors (B, N, 3) + mask (B, N),
        action flow (B, T+1, M, 15) + mask (B, M) + robot_type (B,) int64, target (B, T, N, 3) (0 at
        padding), valid (B, T, N) (False at padding). Real entries keep their values and dtypes.

    Raises:
        TypeError: ``samples`` is not a sequence of ``ClipSample``, or a field has the wrong dtype.
        ValueError: empty ``samples``, inconsistent shapes within a sample, or different horizons T.
    """
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Sequence):
        raise TypeError(f"samples: expected a sequence of ClipSample, got {type(samples).__name__}")
    if len(samples) == 0:
        raise ValueError("samples: expected at least one ClipSample, got an empty sequence")
    dims = [_check_sample(i, s) for i, s in enumerate(samples)]
    horizons = sorted({t for t, _, _ in dims})
    if len(horizons) != 1:
        raise ValueError(f"samples: expected the same horizon T in every sample, got T values {horizons}")
    n_len = torch.tensor([n for _, n, _ in dims], dtype=torch.int64)
    m_len = torch.tensor([m for _, _, m in dims], dtype=torch.int64)

    scene = SceneInput(
        points=_pad([s.points for s in samples], n_len, 0),
        colors=_pad([s.colors for s in samples], n_len, 0),
        normals=_pad([s.normals for s in samples], n_len, 0),
        mask=_lengths_mask(n_len))
    action = ActionInput(
        flow=_pad([s.robot_flow for s in samples], m_len, 1),
        mask=_lengths_mask(m_len),
        robot_type=torch.tensor([s.robot_type for s in samples], dtype=torch.int64))
    return ClipBatch(
        scene=scene, action=action,
        target=_pad([s.target for s in samples], n_len, 1),
        valid=_pad([s.valid for s in samples], n_len, 1),
        robot_names=[str(s.robot_name) for s in samples],
        episodes=[str(s.episode) for s in samples],
        clips=[int(s.clip) for s in samples])
