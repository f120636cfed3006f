"""Simulated exploration datasets: seeded MuJoCo episodes with ground-truth 3D point flows.

:func:`generate_episode` builds one episode from ``(config.seed, index)`` alone: a scene, a camera rig
and ``clips_per_episode`` scripted exploration segments. Each segment is executed in three parts: up
to a random offset (in the last 60 % of the segment, where contact happens after the approach), then ``horizon`` recorded steps (the clip: RGB-D + segmentation of every view at
its first step, the observed non-robot scene points, subsampled, and their ground-truth trajectories),
then the rest. The episode stores exactly the executed joint targets (row 0 = the start targets, row
``s`` = the targets reached at the end of control step ``s``), so clip ``start_step`` indexes the state
before its first recorded step. :func:`generate_dataset` writes many episodes (in parallel worker
processes), skips finished ones, and writes the split metadata.
"""

from __future__ import annotations

import os

os.environ.setdefault("MUJOCO_GL", "egl")  # before MuJoCo is imported (headless rendering)
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import datetime
import json
import multiprocessing
import time
from pathlib import Path

import mujoco
import numpy as np
import torch

from pointworld.data.dataset_meta import SplitRule, build_meta, save_meta
from pointworld.data.episode import Clip, Episode, EpisodeCameras
from pointworld.data.episode_io import (
    episode_summary,
    num_clips,
    read_episode,
    write_episode,
)
from pointworld.data.generate_config import GenerateConfig
from pointworld.errors import EpisodeFormatError
from pointworld.geometry.checks import require_int
from pointworld.geometry.pointcloud import voxel_downsample_indices
from pointworld.sim.cameras import CameraRigConfig, sample_cameras
from pointworld.sim.env import SimEnv
from pointworld.sim.exploration import explore_episode
from pointworld.sim.ground_truth import (
    bind_flex_points,
    record_clip,
    robot_body_ids,
    scene_points,
    track_points,
)
from pointworld.sim.render import DepthNoiseConfig, add_depth_noise, render_views

PHASES = ("plan", "physics", "render", "ground_truth", "write")
_CORNERS = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)


def _body_extent_m(model: mujoco.MjModel, body: int) -> float:
    """Largest side of the body-frame bounding box of a body's geoms, m."""
    corners = []
    for g in range(model.body_geomadr[body], model.body_geomadr[body] + model.body_geomnum[body]):
        R = np.empty(9)
        mujoco.mju_quat2Mat(R, model.geom_quat[g])
        box = model.geom_aabb[g]
        corners.append((box[:3] + _CORNERS * box[3:]) @ R.reshape(3, 3).T + model.geom_pos[g])
    if not corners:
        return 0.0
    pts = np.concatenate(corners)
    return float((pts.max(0) - pts.min(0)).max())


def scene_description(env: SimEnv) -> str:
    """Scene JSON of a reset env: ``{"objects": [{"name", "shape", "size_m"}], "articulated": [...],
    "deformables": [...], "table_top_z_m": z}`` (sizes: largest bounding-box side, m)."""
    model, scene = env.model, env.scene
    if model is None or scene is None:
        raise RuntimeError("env: call reset() before describing the scene")
    objects = [{"name": n, "shape": s, "size_m": round(_body_extent_m(model, model.body(n).id), 5)}
               for n, s in zip(scene.object_names, scene.object_shapes)]
    return json.dumps({"objects": objects, "articulated": list(scene.articulated_names),
                       "deformables": list(scene.deformable_names), "table_top_z_m": scene.table_top_z})


def _subsample(points: np.ndarray, config: GenerateConfig, rng: np.random.Generator) -> np.ndarray:
    """Indices kept: one random point per voxel, then a seeded random cap of ``max_points``."""
    if points.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    idx = voxel_downsample_indices(torch.from_numpy(points), config.voxel_size_m, mode="random",
                                   seed=int(rng.integers(2**31))).numpy()
    if idx.size > config.max_points:
        idx = np.sort(rng.choice(idx, config.max_points, replace=False))
    return idx


def _capture_clip(env: SimEnv, config: GenerateConfig, rig: tuple[np.ndarray, np.ndarray], q: torch.Tensor,
                  g: torch.Tensor, start_step: int, rng: np.random.Generator, timings: dict) -> Clip:
    """Observe the current state, then record the ``horizon`` steps ``q`` (T, J), ``g`` (T, G)."""
    K, T = rig
    t0 = time.perf_counter()
    rgb, depth, seg = render_views(env.model, env.data, K, T, config.height, config.width)
    obs = add_depth_noise(depth, DepthNoiseConfig(), rng) if config.depth_noise else depth
    t1 = time.perf_counter()
    pts = scene_points(env.model, rgb, depth, seg, K, T, robot_body_ids(env), observed_depth=obs)
    min_z = env.scene.table_top_z - 0.1  # below: the floor, or objects that fell off the table
    above = np.nonzero(pts.true_points[:, 2] >= min_z)[0]
    keep = above[_subsample(pts.true_points[above], config, rng)]
    binding = bind_flex_points(env.model, env.data, pts.true_points[keep], pts.body_id[keep])
    t2 = time.perf_counter()
    rec = record_clip(env, q, g)
    t3 = time.perf_counter()
    positions, valid = track_points(pts.true_points[keep], pts.body_id[keep], rec.body_poses, binding,
                                    rec.flex_vertices, min_z_m=min_z)
    t4 = time.perf_counter()
    timings["render"] += t1 - t0
    timings["ground_truth"] += (t2 - t1) + (t4 - t3)
    timings["physics"] += t3 - t2
    return Clip(start_step=start_step, rgb=rgb, depth=obs, points_world=pts.points_world[keep],
                colors=pts.colors[keep], view_index=pts.view_index[keep], pixel_index=pts.pixel_index[keep],
                body_id=pts.body_id[keep], positions=positions.numpy().astype(np.float32),
                valid=valid.numpy(), segmentation=seg)


def generate_episode(config: GenerateConfig, index: int, timings: dict | None = None) -> Episode:
    """Simulate episode ``index`` of a dataset; deterministic given ``(config, index)``.

    Args:
        config: generation settings.
        index: episode index (>= 0); the episode seed is ``config.episode_seed(index)``.
        timings: optional dict that receives the seconds spent per phase (:data:`PHASES` keys).

    Returns:
        The episode: ``clips_per_episode`` clips of ``horizon`` steps, joint targets (S, J) of the whole
        executed trajectory, gripper openings (S,) (mean over the robot's grippers), cameras, scene JSON.
    """
    if not isinstance(config, GenerateConfig):
        raise TypeError(f"config: expected a GenerateConfig, got {type(config).__name__}")
    seed = config.episode_seed(require_int("index", index, 0))
    timings = {k: 0.0 for k in PHASES} if timings is None else timings
    for k in PHASES:
        timings.setdefault(k, 0.0)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    env = SimEnv(config.scene_config(index))
    env.reset(seed)
    timings["physics"] += time.perf_counter() - t0
    x, y, _ = env.config.table_placement(env.robot.name)
    rig_config = CameraRigConfig(n_views=config.n_views, width=config.width, height=config.height)
    rig = sample_cameras(rig_config, (x, y, env.scene.table_top_z), rng)
    upper = torch.from_numpy(np.asarray(env.index.gripper_upper, dtype=np.float64))
    g0 = (torch.from_numpy(env.home_q[env.index.gripper]) / upper).clamp(0.0, 1.0)
    q_rows, g_rows, clips, steps = [torch.from_numpy(env.home_q.copy())[None]], [g0[None]], [], 0
    T = config.horizon
    segments = explore_episode(env, config.clips_per_episode, rng, config.exploration())
    while True:
        t0 = time.perf_counter()
        b = next(segments, None)
        timings["plan"] += time.perf_counter() - t0
        if b is None:
            break
        q, g = b.q_traj, b.gripper
        S = q.shape[0]  # contact comes after the approach: start in the last 60 % of the segment
        off = int(rng.integers(2 * (S - T) // 5, S - T + 1))
        t0 = time.perf_counter()
        if off:
            env.execute(q[:off], g[:off])
        timings["physics"] += time.perf_counter() - t0
        clips.append(_capture_clip(env, config, rig, q[off:off + T], g[off:off + T], steps + off, rng, timings))
        t0 = time.perf_counter()
        if off + T < S:
            env.execute(q[off + T:], g[off + T:])
        timings["physics"] += time.perf_counter() - t0
        executed = q.clone()
        executed[:, env.index.gripper] = g * upper
        q_rows.append(executed)
        g_rows.append(g)
        steps += S
    K, T_world_cam = rig
    cameras = EpisodeCameras(serials=tuple(f"sim{v}" for v in range(config.n_views)), K=K,
                             T_world_cam=T_world_cam, height=config.height, width=config.width)
    return Episode(robot_name=env.robot.name, urdf_id=config.robot, control_dt_s=env.config.control_dt_s,
                   seed=seed, created=datetime.datetime.now(datetime.timezone.utc).isoformat(), source="sim",
                   scene=scene_description(env), joint_names=tuple(env.robot.joint_names),
                   joint_positions=torch.cat(q_rows).numpy().astype(np.float32),
                   gripper_open=torch.cat(g_rows).mean(dim=1).clamp(0.0, 1.0).numpy().astype(np.float32),
                   cameras=cameras, horizon=T, clips=tuple(clips), T_world_base=np.eye(4))


def _finished(path: Path, config: GenerateConfig) -> bool:
    """True if ``path`` holds a readable episode of this config's robot and clip count."""
    if not path.is_file():
        return False
    try:
        ep = read_episode(path, clips=False)
        n = num_clips(path)
    except EpisodeFormatError:
        return False
    if ep.urdf_id != config.robot:
        raise ValueError(f"out: {path} holds an episode of robot {ep.urdf_id!r}, not {config.robot!r}; "
                         f"use another episode_prefix or start_index")
    return n == config.clips_per_episode and ep.horizon == config.horizon


def _generate_one(config: GenerateConfig, index: int) -> dict:
    """Generate and write episode ``index``; returns its clip count and per-phase seconds."""
    timings = {k: 0.0 for k in PHASES}
    t0 = time.perf_counter()
    episode = generate_episode(config, index, timings)
    t1 = time.perf_counter()
    write_episode(Path(config.out) / config.episode_name(index), episode, compression=config.compression)
    timings["write"] += time.perf_counter() - t1
    return {"index": index, "clips": len(episode.clips), "seconds": time.perf_counter() - t0, **timings}


def _worker_init() -> None:
    torch.set_num_threads(1)  # one core per worker process


def _run(config: GenerateConfig, todo: list[int], progress: bool) -> list[dict]:
    from tqdm import tqdm

    bar = tqdm(total=len(todo), desc=f"generate {config.robot}", unit="episode", disable=not progress)
    results = []
    if config.workers == 1 or len(todo) <= 1:
        for i in todo:
            results.append(_generate_one(config, i))
            bar.update(1)
    else:
        ctx = multiprocessing.get_context("spawn")
        with ctx.Pool(min(config.workers, len(todo)), initializer=_worker_init) as pool:
            jobs = [(config, i) for i in todo]
            for result in pool.imap_unordered(_star_generate, jobs):
                results.append(result)
                bar.update(1)
    bar.close()
    return results


def _star_generate(args: tuple[GenerateConfig, int]) -> dict:
    return _generate_one(*args)


def generate_dataset(config: GenerateConfig, progress: bool = True) -> dict:
    """Generate the episodes ``start_index .. start_index + episodes - 1`` into ``config.out``.

    Finished episodes (readable files of the same robot and clip count) are skipped, so an interrupted
    run resumes; files are written atomically. Afterwards ``dataset.json`` (robots, per-episode split
    with the configured held-out shapes and sizes) is rewritten from every episode in the directory.

    Returns:
        Summary dict: ``episodes`` (in the range), ``generated``, ``skipped``, ``clips``,
        ``moving_clip_share`` (clips where some scene point moves > 1 cm), ``seconds_per_clip``
        (generation wall time per generated clip, summed over workers), ``phase_seconds_per_clip``
        (:data:`PHASES` split), ``mb_per_clip`` (file size on disk) and ``out``.
    """
    if not isinstance(config, GenerateConfig):
        raise TypeError(f"config: expected a GenerateConfig, got {type(config).__name__}")
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    indices = range(config.start_index, config.start_index + config.episodes)
    todo = [i for i in indices if not _finished(out / config.episode_name(i), config)]
    results = _run(config, todo, progress)
    generated = sum(r["clips"] for r in results)
    paths = [out / config.episode_name(i) for i in indices]
    stats = [episode_summary(p) for p in paths]
    clips = sum(s["clips"] for s in stats)
    moving = sum(s["moving_clip_share"] * s["clips"] for s in stats)
    rule = SplitRule(held_out_shapes=config.held_out_shapes,
                     held_out_size_range_m=config.held_out_size_range_m,
                     val_fraction=config.val_fraction, seed=config.seed)
    save_meta(build_meta(out, rule), out)
    per_clip = {k: sum(r[k] for r in results) / generated if generated else 0.0 for k in PHASES}
    return {"out": str(out), "robot": config.robot, "episodes": len(paths), "generated": len(results),
            "skipped": len(paths) - len(results), "clips": clips,
            "moving_clip_share": moving / clips if clips else 0.0,
            "seconds_per_clip": sum(r["seconds"] for r in results) / generated if generated else 0.0,
            "phase_seconds_per_clip": per_clip,
            "mb_per_clip": sum(p.stat().st_size for p in paths) / 1e6 / clips if clips else 0.0}
