"""Typed configuration of simulated dataset generation (mirrored by ``configs/generate.yaml``).

One episode = one seeded scene, one randomized camera rig and ``clips_per_episode`` exploration
segments; every segment yields one clip of ``horizon`` control steps starting at a random step of it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from pointworld.geometry.checks import require_int, require_positive
from pointworld.sim.config import SceneConfig
from pointworld.sim.exploration import ExplorationConfig

#: Gap kept between training object sizes and the held-out size range (bounding boxes vs drawn extents), m.
_SIZE_MARGIN_M = 0.01


@dataclass
class GenerateConfig:
    """Settings of :func:`pointworld.data.generate.generate_dataset`.

    Attributes:
        robot: shipped robot name (or a URDF path) driving every episode.
        episodes: number of episodes to generate (indices ``start_index .. start_index + episodes - 1``).
        start_index: index of the first episode (distinct offsets let runs share a directory).
        episode_prefix: file name prefix; None = ``"<robot>_"`` (so several robots share a directory).
        clips_per_episode: exploration segments per episode, one clip each.
        horizon: T, future control steps of every clip.
        segment_steps: least length of an exploration segment, control steps (>= horizon).
        behaviour_weights: exploration behaviour name -> relative probability; None = the defaults of
            :class:`pointworld.sim.exploration.ExplorationConfig`.
        n_views, width, height: the camera rig (1 to 3 views), pixels.
        depth_noise: corrupt the observed depth with sensor-like noise (ground truth stays exact).
        voxel_size_m: scene points are voxel-subsampled at this size first, m.
        max_points: then at most this many points per clip are kept (seeded random choice).
        seed: dataset seed; episode ``i`` uses seed ``seed * 1_000_003 + i``.
        out: output directory.
        workers: worker processes (1 = generate in this process).
        compression: HDF5 compression of the episode files (``gzip``, ``lzf`` or None).
        scene: overrides of :class:`pointworld.sim.config.SceneConfig` fields (e.g. include_cloth).
        held_out_shapes: object shapes reserved for the test split.
        held_out_size_range_m: (lo, hi) object extents reserved for the test split, m; None = none.
        val_fraction: share of the remaining episodes put in the val split.
        test_fraction: share of episodes drawn as test scenes (all shapes and sizes); the others leave
            out the held-out shapes and sizes, so they land in train/val (the split itself is decided
            by the rule stored in ``dataset.json``, from the objects each scene really holds).
    """

    robot: str = "franka_panda"
    episodes: int = 2
    start_index: int = 0
    episode_prefix: str | None = None
    clips_per_episode: int = 6
    horizon: int = 10
    segment_steps: int = 20
    behaviour_weights: dict | None = None
    n_views: int = 2
    width: int = 320
    height: int = 240
    depth_noise: bool = True
    voxel_size_m: float = 0.015
    max_points: int = 4096
    seed: int = 0
    out: str = "data/sim"
    workers: int = 1
    compression: str | None = "gzip"
    scene: dict = field(default_factory=dict)
    held_out_shapes: tuple[str, ...] = ("cross",)
    held_out_size_range_m: tuple[float, float] | None = (0.2, 0.25)
    val_fraction: float = 0.1
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        if not isinstance(self.robot, str) or not self.robot:
            raise ValueError(f"robot: expected a shipped robot name or URDF path, got {self.robot!r}")
        for name, low in (("episodes", 1), ("start_index", 0), ("clips_per_episode", 1), ("horizon", 1),
                          ("segment_steps", 1), ("n_views", 1), ("width", 1), ("height", 1),
                          ("max_points", 1), ("seed", 0), ("workers", 1)):
            require_int(name, getattr(self, name), low)
        if self.segment_steps < self.horizon:
            raise ValueError(f"segment_steps: expected >= horizon={self.horizon}, got {self.segment_steps}")
        if self.episode_prefix is None:
            self.episode_prefix = f"{self.robot}_" if "/" not in self.robot else ""
        if not isinstance(self.episode_prefix, str) or "/" in self.episode_prefix:
            raise ValueError(f"episode_prefix: expected a file name prefix without '/', got "
                             f"{self.episode_prefix!r}")
        require_positive("voxel_size_m", self.voxel_size_m)
        if not isinstance(self.depth_noise, bool):
            raise TypeError(f"depth_noise: expected a bool, got {self.depth_noise!r}")
        if not isinstance(self.out, str) or not self.out:
            raise ValueError(f"out: expected a directory path, got {self.out!r}")
        if self.compression not in ("gzip", "lzf", None):
            raise ValueError(f"compression: expected gzip, lzf or None, got {self.compression!r}")
        if not isinstance(self.scene, dict) or any(k in ("robot", "seed") for k in self.scene):
            raise ValueError(f"scene: expected a dict of SceneConfig overrides other than robot and seed, "
                             f"got {self.scene!r}")
        self.scene = dict(self.scene)
        if self.behaviour_weights is not None:
            if not isinstance(self.behaviour_weights, dict):
                raise ValueError(f"behaviour_weights: expected a dict name -> weight or None, got "
                                 f"{self.behaviour_weights!r}")
            self.behaviour_weights = dict(self.behaviour_weights)
        self.exploration()  # validates the weights now rather than in a worker
        tf = self.test_fraction
        if isinstance(tf, bool) or not isinstance(tf, (int, float)) or not 0.0 <= tf <= 1.0:
            raise ValueError(f"test_fraction: expected a number in [0, 1], got {tf!r}")

    def exploration(self) -> ExplorationConfig:
        """The exploration policy settings of every episode."""
        if self.behaviour_weights is None:
            return ExplorationConfig(segment_steps=self.segment_steps)
        return ExplorationConfig(weights=self.behaviour_weights, segment_steps=self.segment_steps)
        self.held_out_shapes = tuple(self.held_out_shapes)
        if self.held_out_size_range_m is not None:
            self.held_out_size_range_m = tuple(self.held_out_size_range_m)

    def episode_seed(self, index: int) -> int:
        """Seed of episode ``index`` (scene, cameras, exploration and noise all derive from it)."""
        return self.seed * 1_000_003 + require_int("index", index, 0)

    def scene_config(self, index: int) -> SceneConfig:
        """Scene of episode ``index``: a test scene (share ``test_fraction``, drawn from the seed) uses
        the configured shapes and sizes; a training scene leaves out the held-out shapes and sizes."""
        seed = self.episode_seed(index)
        scene = SceneConfig(robot=self.robot, seed=seed, **self.scene)
        if np.random.default_rng([self.seed, index, 1]).random() < self.test_fraction:
            return scene
        shapes = tuple(s for s in scene.shapes if s not in self.held_out_shapes) or scene.shapes
        lo, hi = scene.object_size_m
        if self.held_out_size_range_m is not None:
            held_lo, held_hi = self.held_out_size_range_m
            if lo < held_lo - _SIZE_MARGIN_M and hi >= held_lo:  # keep the sizes below the held-out range
                hi = held_lo - _SIZE_MARGIN_M
            elif lo <= held_hi and hi > held_hi + _SIZE_MARGIN_M:  # or above it
                lo = held_hi + _SIZE_MARGIN_M
        return replace(scene, shapes=shapes, object_size_m=(lo, hi))

    def episode_name(self, index: int) -> str:
        """File name of episode ``index``: ``<prefix>episode_<index:06d>.h5``."""
        return f"{self.episode_prefix}episode_{require_int('index', index, 0):06d}.h5"
