"""One training sample of the clip dataset: a scene at t = 0, its ground-truth future and a robot action.

A :class:`ClipSample` is what :class:`~pointworld.data.clip_dataset.ClipDataset` returns for one clip
after view selection, cropping, voxelization and point capping; augmentations
(:mod:`pointworld.data.augment`) map a sample to a new sample, and
:func:`~pointworld.data.collate.collate_clips` pads a list of samples into a batch.
All tensors live on the CPU; floats are float32. Frames and units follow :mod:`pointworld.conventions`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

#: Channels of one robot point's features (``pointworld.robot.flow.FEATURE_LAYOUT``).
ROBOT_FLOW_CHANNELS = 15


@dataclass
class ClipSample:
    """One clip, ready for collation.

    Attributes:
        points: (N, 3) scene points at t = 0, m, world frame.
        colors: (N, 3) RGB in [0, 1].
        normals: (N, 3) unit normals, oriented toward the camera that saw each point, world frame.
        target: (T, N, 3) displacement of each point from t = 0 at steps 1..T, m, world frame.
        valid: (T, N) bool, True where the ground truth is known at step t and at t = 0.
        robot_flow: (T+1, M, 15) robot point-flow features (``FEATURE_LAYOUT``), world frame.
        robot_type: index of the robot in the model's robot vocabulary (0 = unknown robot).
        robot_name: robot name as stored in the episode.
        episode: episode name (file stem).
        clip: clip index in the episode.
    """

    points: torch.Tensor
    colors: torch.Tensor
    normals: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor
    robot_flow: torch.Tensor
    robot_type: int
    robot_name: str
    episode: str
    clip: int

    @property
    def num_points(self) -> int:
        """N, the number of scene points."""
        return int(self.points.shape[0])

    @property
    def horizon(self) -> int:
        """T, the number of future steps."""
        return int(self.target.shape[0])

    @property
    def num_robot_points(self) -> int:
        """M, the number of robot surface points."""
        return int(self.robot_flow.shape[1])

    def replace(self, **changes: object) -> ClipSample:
        """A new sample with the given fields replaced (the others shared, not copied)."""
        return replace(self, **changes)

    def validate(self) -> ClipSample:
        """Check shapes and dtypes of every field; returns ``self``.

        Raises:
            TypeError: a field has the wrong type or dtype.
            ValueError: shapes disagree (N, T or M), or the feature width is not 15.
        """
        for f in ("points", "colors", "normals", "target", "valid", "robot_flow"):
            if not isinstance(getattr(self, f), torch.Tensor):
                raise TypeError(f"{f}: expected a torch.Tensor, got {type(getattr(self, f)).__name__}")
        n = self.points.shape[0] if self.points.ndim == 2 else -1
        for f in ("points", "colors", "normals"):
            t = getattr(self, f)
            if t.shape != (n, 3) or not t.is_floating_point():
                raise ValueError(f"{f}: expected a float (N, 3) tensor with N = {n}, got {t.dtype} "
                                 f"{tuple(t.shape)}")
        if self.target.ndim != 3 or self.target.shape[1:] != (n, 3) or self.target.shape[0] < 1:
            raise ValueError(f"target: expected (T, N={n}, 3) with T >= 1, got {tuple(self.target.shape)}")
        steps = self.target.shape[0]
        if self.valid.shape != (steps, n) or self.valid.dtype != torch.bool:
            raise ValueError(f"valid: expected a bool (T={steps}, N={n}) tensor, got {self.valid.dtype} "
                             f"{tuple(self.valid.shape)}")
        rf = self.robot_flow
        if rf.ndim != 3 or rf.shape[0] != steps + 1 or rf.shape[2] != ROBOT_FLOW_CHANNELS:
            raise ValueError(f"robot_flow: expected (T+1={steps + 1}, M, {ROBOT_FLOW_CHANNELS}), got "
                             f"{tuple(rf.shape)}")
        for f, kind in (("robot_type", int), ("clip", int), ("robot_name", str), ("episode", str)):
            value = getattr(self, f)
            if isinstance(value, bool) or not isinstance(value, kind):
                raise TypeError(f"{f}: expected {kind.__name__}, got {value!r}")
        return self

