"""Body of ``pointworld robot-info`` (CLI layer: turns its Hydra config into library calls)."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig, OmegaConf

from pointworld.robot.model import Robot
from pointworld.robot.sampling import sample_surface_points
from pointworld.robot.urdf import load_robot


def _limit(value: float) -> str:
    return f"{value:+9.4f}" if math.isfinite(value) else f"{'-inf' if value < 0 else '+inf':>9s}"


def joint_table(robot: Robot) -> list[str]:
    """One line per actuated joint: index, name, limits, velocity limit and its mimic followers."""
    followers: dict[str, list[str]] = {}
    for follower, (leader, multiplier, offset) in robot.mimic.items():
        followers.setdefault(leader, []).append(f"{follower} (x{multiplier:g} {offset:+g})")
    lines = [f"  {'#':>3} {'joint':28s} {'lower':>9s} {'upper':>9s} {'vel.lim':>8s}  mimic followers"]
    for j, name in enumerate(robot.joint_names):
        lo, hi = float(robot.lower[j]), float(robot.upper[j])
        vel = float(robot.velocity_limit[j])
        lines.append(f"  {j:3d} {name:28s} {_limit(lo)} {_limit(hi)} {vel:8.3f}  "
                     f"{', '.join(followers.get(name, [])) or '-'}")
    return lines


def link_table(robot: Robot, counts: torch.Tensor) -> list[str]:
    """One line per link with geometry: faces, surface area (m^2), extents (m), sampled points."""
    lines = [f"  {'link':28s} {'faces':>6s} {'area m2':>8s}  {'extent x y z (m)':22s} {'points':>6s}"]
    for i, name in enumerate(robot.link_names):
        mesh = robot.link_meshes.get(name)
        if mesh is None:
            continue
        ext = " ".join(f"{e:.3f}" for e in mesh.extents)
        lines.append(f"  {name:28s} {len(mesh.faces):6d} {mesh.area:8.4f}  {ext:22s} {int(counts[i]):6d}")
    return lines


def run_robot_info(cfg: DictConfig) -> int:
    """``pointworld robot-info``: joints, limits, links and sampled surface points of a robot."""
    package_map = OmegaConf.to_container(cfg.package_map) if cfg.package_map else None
    robot = load_robot(str(cfg.urdf), geometry=cfg.geometry, search_paths=list(cfg.search_paths),
                       package_map=package_map)
    links = None if cfg.links is None else (
        str(cfg.links) if isinstance(cfg.links, str) else [str(x) for x in cfg.links])
    surface = sample_surface_points(robot, int(cfg.num_points), links=links, seed=int(cfg.seed))
    counts = torch.bincount(surface.link_index, minlength=robot.num_links)
    print(f"robot {robot.name}: {robot.num_links} links, {robot.num_joints} actuated joints, "
          f"{len(robot.mimic)} mimic joints, {len(robot.link_meshes)} links with {cfg.geometry} geometry")
    print("\njoints (rad or m; vel.lim in rad/s or m/s):")
    print("\n".join(joint_table(robot)))
    print(f"\nlinks with geometry ({surface.num_points} surface points sampled, seed {cfg.seed}, "
          f"links {links if links is not None else 'all'}):")
    print("\n".join(link_table(robot, counts)))
    return 0
