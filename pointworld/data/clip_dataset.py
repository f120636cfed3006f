"""The clip dataset: training samples (:class:`ClipSample`) drawn from one or more episode datasets.

The index (source, episode file, clip) is built from each source's ``dataset.json`` without opening
an HDF5 file. ``__getitem__(i)`` reads clip i's point arrays (:mod:`pointworld.data.clip_reader`, no
images), crops to the workspace box, draws a subset of the cameras that see points inside it and
keeps their points, voxelizes at t = 0 (one random point per ``grid_size_m`` voxel) and applies the
same indices to every step so correspondences survive, caps the count at ``max_points``, estimates
normals oriented toward each point's own camera, and turns the joint trajectory into robot
point-flow features.

All randomness of sample i comes from ``np.random.default_rng([seed, epoch, i])``, so a sample depends
only on (config, epoch, i), never on the worker that builds it. Robots, their surface points and
episode headers are cached per process (per DataLoader worker); with persistent workers, call
:meth:`ClipDataset.set_epoch` before the workers start (they hold their own copy of the dataset).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pointworld.data.clip_dataset_config import ClipDatasetConfig, DataSource
from pointworld.data.clip_reader import ClipPoints, read_clip_points, read_episode_header
from pointworld.data.clip_sample import ClipSample
from pointworld.data.dataset_meta import load_meta
from pointworld.data.episode import Episode
from pointworld.data.episode_io import EPISODE_SUFFIX
from pointworld.errors import EmptyCloudError, EpisodeFormatError, JointMismatchError
from pointworld.geometry.normals import estimate_normals
from pointworld.geometry.pointcloud import crop_box_mask, voxel_downsample_indices
from pointworld.robot.flow import robot_point_flow
from pointworld.robot.model import Robot
from pointworld.robot.sampling import RobotSurfacePoints, sample_surface_points
from pointworld.robot.urdf import load_robot

__all__ = ["ClipDataset", "ClipDatasetConfig", "DataSource"]

#: Episode headers kept per process (joints, cameras: a few tens of kB each).
_HEADER_CACHE_SIZE = 1024


class ClipDataset(torch.utils.data.Dataset):
    """Clips of the episodes of ``config.split`` in every source (see module docstring).

    Args:
        config: :class:`ClipDatasetConfig`.
        augment: optional ``(sample, rng) -> sample`` applied last, with the sample's generator.

    Raises:
        FileNotFoundError: a source directory without ``dataset.json``.
        EpisodeFormatError: invalid metadata, or an episode it lists has no file.
        ValueError: no clip at all in the split.
    """

    def __init__(self, config: ClipDatasetConfig, augment: Callable | None = None) -> None:
        if not isinstance(config, ClipDatasetConfig):
            raise TypeError(f"config: expected a ClipDatasetConfig, got {type(config).__name__}")
        if augment is not None and not callable(augment):
            raise TypeError(f"augment: expected a callable (sample, rng) -> sample, got {augment!r}")
        self.config, self.augment, self.epoch = config, augment, 0
        self._paths: list[Path] = []
        self._episode_robot: list[str] = []
        rows = []  # (source, episode, clip)
        for s, source in enumerate(config.sources):
            for name, robot, n_clips in _split_episodes(source, config.split):
                rows += [(s, len(self._paths), c) for c in range(n_clips)]
                self._paths.append(Path(source.path) / f"{name}{EPISODE_SUFFIX}")
                self._episode_robot.append(robot)
        if not rows:
            raise ValueError(f"config: no clips in split {config.split!r} of sources "
                             f"{[s.path for s in config.sources]}")
        self._index = np.asarray(rows, dtype=np.int64)  # (len, 3), cheap to share with workers
        self._headers: dict[Path, Episode] = {}
        self._robots: dict[str, tuple[Robot, RobotSurfacePoints]] = {}

    def __getstate__(self) -> dict:  # workers rebuild their own caches
        return {**self.__dict__, "_headers": {}, "_robots": {}}

    def __len__(self) -> int:
        return len(self._index)

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` (int >= 0) in every sample's random generator from now on."""
        if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
            raise ValueError(f"epoch: expected an int >= 0, got {epoch!r}")
        self.epoch = int(epoch)

    def source_of(self, i: int) -> int:
        """Index in ``config.sources`` of the source of sample ``i``."""
        return int(self._index[self._check_index(i), 0])

    def sizes_per_source(self) -> list[int]:
        """Number of clips of each source (0 for a source with no episode in the split)."""
        counts = np.bincount(self._index[:, 0], minlength=len(self.config.sources))
        return [int(c) for c in counts]

    def robots(self) -> list[str]:
        """Sorted names of the robots in the dataset."""
        return sorted(set(self._episode_robot))

    def describe(self) -> dict:
        """JSON-able description (sources with weights and clip counts, split, clips per robot, config)."""
        sizes = self.sizes_per_source()
        per_robot: dict[str, int] = {}
        for e in self._index[:, 1]:
            per_robot[self._episode_robot[e]] = per_robot.get(self._episode_robot[e], 0) + 1
        return {"sources": [{"path": s.path, "weight": s.weight, "clips": n}
                            for s, n in zip(self.config.sources, sizes)],
                "split": self.config.split, "clips": len(self), "episodes": len(self._paths),
                "clips_per_robot": dict(sorted(per_robot.items())), "config": self.config.to_dict()}

    def _check_index(self, i: object) -> int:
        if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 0 <= i < len(self):
            raise IndexError(f"i: expected an int in [0, {len(self)}), got {i!r}")
        return int(i)

    def __getitem__(self, i: int) -> ClipSample:
        i = self._check_index(i)
        _, e, c = (int(v) for v in self._index[i])
        path = self._paths[e]
        header = self._header(path)
        clip = read_clip_points(path, c, header)
        rng = np.random.default_rng([self.config.seed, self.epoch, i])
        idx = self._select_points(clip, header, rng, f"{path} clip {c}")
        sample = self._build_sample(clip, header, idx, path.stem, c)
        return self.augment(sample, rng) if self.augment is not None else sample

    def _header(self, path: Path) -> Episode:
        header = self._headers.get(path)
        if header is None:
            if len(self._headers) >= _HEADER_CACHE_SIZE:
                self._headers.pop(next(iter(self._headers)))
            header = self._headers[path] = read_episode_header(path)
        return header

    def _select_points(self, clip: ClipPoints, header: Episode, rng: np.random.Generator,
                       where: str) -> torch.Tensor:
        """(K,) int64 sorted indices of the kept points: crop, views, voxel grid, cap.

        Views are drawn among those that see some point inside the crop box, so a sample is empty
        only when the box holds no point at all (``EmptyCloudError``)."""
        cfg = self.config
        points = torch.from_numpy(clip.points_world)
        keep = torch.ones(len(points), dtype=torch.bool)
        if cfg.crop_min_m is not None:
            keep = crop_box_mask(points, cfg.crop_min_m, cfg.crop_max_m)
        seen = np.unique(clip.view_index[keep.numpy()])
        if seen.size == 0:
            raise EmptyCloudError(f"{where}: no point inside the crop box [{cfg.crop_min_m}, "
                                  f"{cfg.crop_max_m}] (of {len(points)} points)")
        if cfg.random_views:
            lo, hi = min(cfg.views[0], seen.size), min(cfg.views[1], seen.size)
            chosen = rng.choice(seen, size=int(rng.integers(lo, hi + 1)), replace=False)
            keep &= torch.from_numpy(np.isin(clip.view_index, chosen))
        voxel_seed = int(rng.integers(0, 2**62))
        idx = voxel_downsample_indices(points, cfg.grid_size_m, keep, mode="random", seed=voxel_seed)
        if idx.numel() > cfg.max_points:
            pick = np.sort(rng.choice(idx.numel(), size=cfg.max_points, replace=False))
            idx = idx[torch.from_numpy(pick)]
        return idx

    def _build_sample(self, clip: ClipPoints, header: Episode, idx: torch.Tensor, episode: str,
                      c: int) -> ClipSample:
        cfg = self.config
        np_idx = idx.numpy()
        points = torch.from_numpy(clip.points_world[np_idx])
        centers = torch.from_numpy(header.cameras.T_world_cam[:, :3, 3].astype(np.float32))
        viewpoint = centers[torch.from_numpy(clip.view_index[np_idx]).long()]
        normals = estimate_normals(points[None], k=cfg.normals_k, viewpoint=viewpoint[None])[0]
        positions = torch.from_numpy(clip.positions[:, np_idx])
        valid = torch.from_numpy(clip.valid[:, np_idx])
        name = header.robot_name
        robot_type = cfg.robot_types.index(name) + 1 if name in cfg.robot_types else 0
        return ClipSample(points=points, colors=torch.from_numpy(clip.colors[np_idx]).float() / 255.0,
                          normals=normals, target=positions[1:] - positions[:1], valid=valid[1:] & valid[:1],
                          robot_flow=self._robot_flow(header, clip.start_step, episode), robot_type=robot_type,
                          robot_name=name, episode=episode, clip=c)

    def _robot(self, name: str) -> tuple[Robot, RobotSurfacePoints]:
        if name not in self._robots:
            robot = load_robot(name).to(dtype=torch.float64)  # see _robot_flow
            surface = sample_surface_points(robot, self.config.robot_points, links=self.config.robot_links,
                                            seed=0)
            self._robots[name] = (robot, surface)
        return self._robots[name]

    def _robot_flow(self, header: Episode, start: int, episode: str) -> torch.Tensor:
        """(T+1, M, 15) float32 robot point-flow features of steps ``start .. start + T``, world frame.

        Computed in float64 and rounded: velocities and accelerations are finite differences that
        amplify rounding, and float32 matmuls round differently with the thread count, which would
        make a sample depend on the process (main or DataLoader worker) that builds it."""
        robot, surface = self._robot(header.robot_name)
        names = list(header.joint_names)
        if sorted(names) != sorted(robot.joint_names):
            raise JointMismatchError(f"episode {episode}: joint_names {names} do not match the actuated joints "
                                     f"{list(robot.joint_names)} of robot {robot.name!r}")
        order = [names.index(n) for n in robot.joint_names]
        steps = slice(start, start + header.horizon + 1)
        q = torch.from_numpy(header.joint_positions[steps][:, order].astype(np.float64))
        gripper = torch.from_numpy(header.gripper_open[steps].astype(np.float64))
        base = None if header.T_world_base is None else torch.from_numpy(header.T_world_base)
        flow = robot_point_flow(robot, surface, q[None], gripper[None], dt_s=header.control_dt_s,
                                T_world_base=base)
        return flow.features()[0].float()


def _split_episodes(source: DataSource, split: str) -> list[tuple[str, str, int]]:
    """(name, robot, n_clips) of the source's episodes in ``split`` ("all" = every split), by name."""
    meta = load_meta(source.path)
    names = list(meta.episodes) if split == "all" else meta.names(split)
    out = []
    for name in names:
        path = Path(source.path) / f"{name}{EPISODE_SUFFIX}"
        if not path.is_file():
            raise EpisodeFormatError(f"dataset metadata {Path(source.path) / 'dataset.json'}: episodes: "
                                     f"lists {name!r} but {path} does not exist")
        entry = meta.episodes[name]
        out.append((name, entry.robot, entry.n_clips))
    return out
