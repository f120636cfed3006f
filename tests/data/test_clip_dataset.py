"""ClipDataset on a tiny generated dataset: index, determinism, correspondences against the raw file,
view subsets, crop, point cap, normals, robot flow, config checks and broken files."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

pytest.importorskip("mujoco")

from pointworld.data.clip_dataset import ClipDataset, ClipDatasetConfig, DataSource
from pointworld.data.clip_sample import ClipSample
from pointworld.data.episode_io import read_episode
from pointworld.data.generate import generate_dataset
from pointworld.data.generate_config import GenerateConfig
from pointworld.errors import EmptyCloudError, EpisodeFormatError
from pointworld.model.world_model_config import DEFAULT_ROBOT_TYPES
from pointworld.robot.flow import robot_point_flow
from pointworld.robot.sampling import sample_surface_points
from pointworld.robot.urdf import load_robot

TINY = {"episodes": 1, "clips_per_episode": 2, "horizon": 4, "n_views": 3, "width": 96, "height": 72,
        "max_points": 512, "workers": 1, "val_fraction": 0.0, "test_fraction": 0.0,
        "scene": {"include_drawer": False, "n_objects": [1, 2]}}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("clips") / "ds"
    generate_dataset(GenerateConfig(robot="franka_panda", **{**TINY, "episodes": 2}, out=str(out)), progress=False)
    generate_dataset(GenerateConfig(robot="flying_gripper", **TINY, out=str(out)), progress=False)
    return out


def make(data_dir: Path, **kwargs: object) -> ClipDataset:
    return ClipDataset(ClipDatasetConfig(sources=(DataSource(str(data_dir)),), split="all", **kwargs))


def raw_clip(ds: ClipDataset, i: int):
    """The episode (full reader, images included) and clip of sample i."""
    s = ds[i]
    ep = read_episode(Path(ds.config.sources[ds.source_of(i)].path) / f"{s.episode}.h5", clips=[s.clip])
    return s, ep, ep.clips[0]


def raw_indices(points: torch.Tensor, raw: np.ndarray) -> np.ndarray:
    """Index into ``raw`` (N0, 3) of every sample point (exact match required)."""
    lookup = {tuple(p): k for k, p in enumerate(raw.tolist())}
    assert len(lookup) == len(raw)  # raw points are distinct
    return np.asarray([lookup[tuple(p)] for p in points.numpy().tolist()])


def cells(points: np.ndarray, size_m: float) -> set:
    """Distinct voxels floor(p / size) of float32 points (the arithmetic of the voxel grid)."""
    return {tuple(c) for c in np.floor(points.astype(np.float32) / size_m).tolist()}


def same(a: ClipSample, b: ClipSample) -> bool:
    return all(torch.equal(getattr(a, k), getattr(b, k))
               for k in ("points", "colors", "normals", "target", "valid", "robot_flow"))


def test_index_sizes_robots_and_description(data_dir: Path) -> None:
    ds = ClipDataset(ClipDatasetConfig(sources=[{"path": str(data_dir)}, {"path": str(data_dir), "weight": 2}],
                                       split="all"))
    assert len(ds) == 12 and ds.sizes_per_source() == [6, 6]
    assert [ds.source_of(i) for i in (0, 5, 6, 11)] == [0, 0, 1, 1]
    assert ds.robots() == ["flying_gripper", "franka_panda"]
    desc = json.loads(json.dumps(ds.describe()))
    assert desc["clips"] == 12 and desc["clips_per_robot"] == {"flying_gripper": 4, "franka_panda": 8}
    assert [s["weight"] for s in desc["sources"]] == [1.0, 2.0] and desc["split"] == "all"
    assert ClipDatasetConfig(**desc["config"]) == ds.config


def test_same_seed_epoch_index_give_identical_samples_and_epochs_differ(data_dir: Path) -> None:
    a, b = make(data_dir, grid_size_m=0.03), make(data_dir, grid_size_m=0.03)
    first = [a[i].validate() for i in range(len(a))]
    assert all(same(s, b[i]) for i, s in enumerate(first))
    a.set_epoch(1)
    second = [a[i] for i in range(len(a))]
    assert any(s.num_points != t.num_points or not torch.equal(s.points, t.points)
               for s, t in zip(first, second))
    b.set_epoch(1)
    assert all(same(s, b[i]) for i, s in enumerate(second))


def test_samples_do_not_depend_on_the_number_of_workers(data_dir: Path) -> None:
    ds = make(data_dir, grid_size_m=0.03)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=list)
    from_workers = [s for batch in loader for s in batch]
    assert all(same(s, ds[i]) for i, s in enumerate(from_workers))


def test_targets_keep_correspondences_with_the_raw_file(data_dir: Path) -> None:
    ds = make(data_dir, grid_size_m=0.03, random_views=False)
    for i in range(len(ds)):
        s, _, clip = raw_clip(ds, i)
        idx = raw_indices(s.points, clip.points_world)
        pos = torch.from_numpy(clip.positions[:, idx])
        torch.testing.assert_close(s.target, pos[1:] - pos[:1], rtol=0, atol=0)
        assert torch.equal(s.valid, torch.from_numpy(clip.valid[1:, idx] & clip.valid[:1, idx]))
        torch.testing.assert_close(s.colors, torch.from_numpy(clip.colors[idx] / 255.0).float())
        # one point per occupied 3 cm voxel of the raw cloud (no cap reached)
        assert len(cells(s.points.numpy(), 0.03)) == s.num_points == len(cells(clip.points_world, 0.03))
        assert s.target.shape == (4, s.num_points, 3) and s.target.dtype == torch.float32


@pytest.mark.parametrize("views", [(1, 1), (2, 2), (1, 3)])
def test_view_subsets_keep_only_points_of_the_chosen_views(data_dir: Path, views: tuple[int, int]) -> None:
    ds = make(data_dir, views=views)
    seen_sets = set()
    for epoch in range(2):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            s, _, clip = raw_clip(ds, i)
            chosen = set(clip.view_index[raw_indices(s.points, clip.points_world)].tolist())
            assert len(chosen) <= views[1]
            if views[0] == views[1]:
                assert len(chosen) == views[0]  # every view of the tiny scenes sees some points
            seen_sets.add(frozenset(chosen))
    assert len(seen_sets) > 1  # the subset is drawn, not fixed


def test_crop_keeps_exactly_the_voxels_inside_the_box(data_dir: Path) -> None:
    box_min, box_max = (-0.2, -0.3, -0.05), (0.6, 0.3, 0.5)
    ds = make(data_dir, random_views=False, crop_min_m=box_min, crop_max_m=box_max)
    for i in range(len(ds)):
        s, _, clip = raw_clip(ds, i)
        pts = clip.points_world
        inside = np.all((pts >= box_min) & (pts <= box_max), axis=1)
        assert s.num_points > 0 and inside.sum() < len(pts)
        assert set(raw_indices(s.points, pts).tolist()) <= set(np.flatnonzero(inside).tolist())
        assert s.num_points == len(cells(pts[inside], 0.015))
    nothing = make(data_dir, crop_min_m=(5.0, 5.0, 5.0), crop_max_m=(6.0, 6.0, 6.0))
    with pytest.raises(EmptyCloudError, match="flying_gripper_episode_000000.h5 clip 0: no point inside"):
        nothing[0]


def test_max_points_caps_the_cloud_without_breaking_correspondences(data_dir: Path) -> None:
    ds = make(data_dir, max_points=40)
    for i in range(len(ds)):
        s, _, clip = raw_clip(ds, i)
        assert s.num_points == 40 and s.target.shape == (4, 40, 3) and s.valid.shape == (4, 40)
        idx = raw_indices(s.points, clip.points_world)
        assert len(set(idx.tolist())) == 40
        torch.testing.assert_close(s.target[-1], torch.from_numpy(clip.positions[-1, idx] - clip.positions[0, idx]))


def test_normals_are_unit_face_their_camera_and_match_open3d(data_dir: Path) -> None:
    o3d = pytest.importorskip("open3d")
    ds = make(data_dir, random_views=False)
    for i in (0, 5):
        s, ep, clip = raw_clip(ds, i)
        torch.testing.assert_close(s.normals.norm(dim=-1), torch.ones(s.num_points), atol=1e-5, rtol=0)
        centers = ep.cameras.T_world_cam[:, :3, 3][clip.view_index[raw_indices(s.points, clip.points_world)]]
        assert (((centers - s.points.numpy()) * s.normals.numpy()).sum(-1) >= -1e-6).all()
        cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(s.points.double().numpy()))
        cloud.estimate_normals(o3d.geometry.KDTreeSearchParamKNN(16))
        cos = np.abs((np.asarray(cloud.normals) * s.normals.double().numpy()).sum(-1))
        assert np.median(cos) > 0.999 and (cos > 0.99).mean() > 0.95  # ties in kNN may differ


def test_robot_flow_equals_a_direct_point_flow_call(data_dir: Path) -> None:
    ds, robots = make(data_dir), {}
    for i in range(len(ds)):
        s, ep, clip = raw_clip(ds, i)
        if ep.robot_name not in robots:
            robot = load_robot(ep.robot_name)
            robots[ep.robot_name] = robot, sample_surface_points(robot, 256, links=("*hand", "*finger"), seed=0)
        robot, surface = robots[ep.robot_name]
        steps = slice(clip.start_step, clip.start_step + ep.horizon + 1)
        base = None if ep.T_world_base is None else torch.from_numpy(ep.T_world_base)
        q = torch.from_numpy(ep.joint_positions[steps])[None].double()
        grip = torch.from_numpy(ep.gripper_open[steps])[None].double()
        flow = robot_point_flow(robot.to(dtype=torch.float64), surface, q, grip, dt_s=ep.control_dt_s,
                                T_world_base=base).features()[0]
        assert s.robot_flow.dtype == torch.float32 and s.robot_flow.shape == (5, 256, 15)
        torch.testing.assert_close(s.robot_flow.double(), flow, rtol=1e-6, atol=1e-6)
        flow32 = robot_point_flow(robot, surface, q.float(), grip.float(), dt_s=ep.control_dt_s,
                                  T_world_base=None if base is None else base.float()).features()[0]
        torch.testing.assert_close(s.robot_flow, flow32, rtol=1e-4, atol=1e-4)  # float32 rounding only
        assert s.robot_name == ep.robot_name and s.robot_type == DEFAULT_ROBOT_TYPES.index(ep.robot_name) + 1


def test_unknown_robot_gets_type_zero_and_augment_sees_the_sample_rng(data_dir: Path) -> None:
    calls = []

    def augment(sample: ClipSample, rng: np.random.Generator) -> ClipSample:
        calls.append(rng.random())
        return sample.replace(points=sample.points + 1.0)

    ds = ClipDataset(ClipDatasetConfig(sources=(DataSource(str(data_dir)),), split="all",
                                       robot_types=("flying_gripper",)), augment=augment)
    plain = make(data_dir, robot_types=("flying_gripper",))
    for i in range(len(ds)):
        s = ds[i]
        assert s.robot_type == (1 if s.robot_name == "flying_gripper" else 0)
        torch.testing.assert_close(s.points, plain[i].points + 1.0)
    ds[3]
    assert calls[3] == calls[-1] and len(set(calls[:-1])) == len(ds)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"sources": ()}, ValueError, "sources"),
    ({"sources": "data"}, ValueError, "sources"),
    ({"sources": [{"path": "x", "weight": 0.0}]}, ValueError, "weight"),
    ({"sources": [{"path": "x", "wieght": 1.0}]}, ValueError, r"sources\[0\]"),
    ({"sources": [3]}, TypeError, r"sources\[0\]"),
    ({"split": "training"}, ValueError, "split"),
    ({"grid_size_m": 0.0}, ValueError, "grid_size_m"),
    ({"max_points": 0}, ValueError, "max_points"),
    ({"views": (2, 1)}, ValueError, "views"),
    ({"views": (0, 2)}, ValueError, "views"),
    ({"random_views": 1}, TypeError, "random_views"),
    ({"crop_min_m": (0, 0, 0)}, ValueError, "crop"),
    ({"crop_min_m": (0, 0, 1), "crop_max_m": (1, 1, 0)}, ValueError, "crop_min_m"),
    ({"crop_min_m": (0, 0), "crop_max_m": (1, 1, 1)}, ValueError, "crop_min_m"),
    ({"robot_points": 0}, ValueError, "robot_points"),
    ({"robot_links": "*hand"}, ValueError, "robot_links"),
    ({"robot_types": ("a", "a")}, ValueError, "robot_types"),
    ({"normals_k": 2}, ValueError, "normals_k"),
    ({"seed": -1}, ValueError, "seed"),
])
def test_bad_configs_are_rejected(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        ClipDatasetConfig(**{"sources": [{"path": "x"}], **kwargs})


def test_bad_arguments_and_empty_splits(data_dir: Path, tmp_path: Path) -> None:
    ds = make(data_dir)
    with pytest.raises(IndexError, match="i"):
        ds[len(ds)]
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-1)
    with pytest.raises(TypeError, match="config"):
        ClipDataset({"sources": [{"path": str(data_dir)}]})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no clips in split 'val'"):
        ClipDataset(replace(ds.config, split="val"))
    with pytest.raises(FileNotFoundError, match="dataset.json"):
        make(tmp_path)


def test_missing_truncated_and_corrupt_files_raise_episode_format_errors(data_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ds"
    shutil.copytree(data_dir, copy)
    episodes = sorted(copy.glob("*.h5"))
    data = episodes[0].read_bytes()
    episodes[0].write_bytes(data[: len(data) // 2])
    with h5py.File(episodes[1], "r+") as f:
        del f["clips/000001/positions"]
    ds = make(copy)
    names = [ds[i].episode if i >= 4 else None for i in range(len(ds))]
    assert names[4:] == [episodes[2].stem] * 2  # the intact episode still reads
    with pytest.raises(EpisodeFormatError, match=episodes[0].name):
        ds[0]
    with pytest.raises(EpisodeFormatError, match="/clips/000001/positions: missing dataset"):
        ds[3]
    episodes[2].unlink()
    with pytest.raises(EpisodeFormatError, match=episodes[2].name):
        make(copy)
