"""Where the segment prior's ``l2_moved`` error comes from, segment by segment.

Every clip of a dataset split is segmented the way the prior does it (support and what lies below it
removed, connected components of the rest). Each segment with moving points (ground truth over 1 cm at
some step, as in ``l2_moved``) falls in one category:

- ``support / unlabelled``: the points belong to no segment (support surface, table sides);
- ``furniture``: the segment is larger than ``max_segment_extent_m``, so the prior never moves it (the
  drawer with its cabinet, or several touching objects merged);
- ``missed, moving at t=0``: the prior leaves it still, and it already moves over the first step (more
  than 3 mm on average): momentum from before the clip (a rolling or sliding object), which a single
  capture cannot show;
- ``missed, robot within 4 cm`` / ``missed, robot further``: the prior leaves it still, and it starts
  moving later with the robot near it (a contact the prior missed) or not (pushed by another object,
  toppled);
- ``both move``: the prior moves it too.

For each category the table gives the moving point-steps, their share of the prior's summed error, the
prior's mean error, the ground-truth mean displacement (the zero-motion error) and the mean error of the
best rigid motion per segment and step (Kabsch on the ground truth: what a perfect rigid-segment predictor
would still miss). Distances in cm.

Usage: ``python scripts/error_breakdown.py --data DIR [--split test] [--checkpoint PATH]``; the prior's
settings and the robot vocabulary come from the checkpoint (default: the bundled model).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pointworld.data.clip_dataset import ClipDataset, ClipDatasetConfig
from pointworld.data.collate import ClipBatch, collate_clips
from pointworld.heap import retain_freed_memory
from pointworld.model.segment_prior import (
    SegmentFollowConfig,
    segment_follow,
    segment_scene,
)
from pointworld.planning.tracking import fit_rigid_transform
from pointworld.train.checkpoint import build_model, load_checkpoint
from pointworld.train.pretrained import PRETRAINED_PATH

MOVING_M = 0.01  # the l2_moved threshold
AT_START_M = 0.003  # mean displacement over the first step that counts as "already moving"
NEAR_M = 0.04  # robot distance at the onset of motion that counts as "robot near"


def _category(b: int, seg: torch.Tensor, batch: ClipBatch, pred: torch.Tensor, tgt: torch.Tensor,
              wide: bool) -> str:
    """Category (module docstring) of segment mask ``seg`` (N,) of clip ``b``."""
    if wide:
        return "furniture"
    if float(pred[b][:, seg].norm(dim=-1).amax()) >= 0.002:
        return "both move"
    mean_step = tgt[b][:, seg].norm(dim=-1).mean(1)  # (T,) mean displacement of the segment, m
    if float(mean_step[0]) > AT_START_M:
        return "missed, moving at t=0"
    onset = int((mean_step > 0.005).nonzero()[0]) if bool((mean_step > 0.005).any()) else len(mean_step) - 1
    robot = batch.action.points[b][onset + 1][batch.action.mask[b]].double()
    at_onset = batch.scene.points[b][seg].double() + tgt[b][onset, seg]
    near = float(torch.cdist(at_onset, robot).min()) < NEAR_M
    return "missed, robot within 4 cm" if near else "missed, robot further"


def _rigid_error(points: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(T, P) error of the best rigid motion per step of points (P, 3) displaced by target (T, P, 3)."""
    out = torch.zeros(valid.shape, dtype=points.dtype)
    for t in range(valid.shape[0]):
        v = valid[t]
        if int(v.sum()) >= 3:
            T = fit_rigid_transform(points[v], points[v] + target[t, v])
            fit = points[v] @ T[:3, :3].T + T[:3, 3]
            out[t, v] = (fit - points[v] - target[t, v]).norm(dim=-1)
    return out


def breakdown(dataset: ClipDataset, prior: SegmentFollowConfig) -> dict[str, dict[str, float]]:
    """Per category: summed prior error, |gt| and rigid-fit error (m) and count over moving point-steps."""
    sums: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for batch in DataLoader(dataset, batch_size=4, collate_fn=collate_clips):
        scene = batch.scene
        pred = segment_follow(scene, batch.action, prior).double()
        tgt = torch.where(batch.valid[..., None], batch.target.double(), 0.0)
        err = (pred - tgt).norm(dim=-1)  # (B, T, N)
        moving = batch.valid & (batch.valid & (tgt.norm(dim=-1) > MOVING_M)).any(1)[:, None]
        label, movable = segment_scene(scene.points, scene.normals, scene.mask, prior)
        for b in range(label.shape[0]):
            for root in torch.unique(label[b]).tolist():
                seg = (label[b] == root) & scene.mask[b]
                sel = moving[b][:, seg]
                if not bool(sel.any()):
                    continue
                wide = not bool(movable[b][seg].any())
                name = "support / unlabelled" if root < 0 else _category(b, seg, batch, pred, tgt, wide)
                rigid = _rigid_error(scene.points[b][seg].double(), tgt[b][:, seg], batch.valid[b][:, seg])
                for key, value in (("error", err[b][:, seg]), ("gt", tgt[b][:, seg].norm(dim=-1)),
                                   ("rigid", rigid)):
                    sums[name][key] += float(value[sel].sum())
                sums[name]["count"] += float(sel.sum())
    return sums


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="dataset directory")
    parser.add_argument("--split", default="test", help="train | val | test | all")
    parser.add_argument("--checkpoint", type=Path, default=PRETRAINED_PATH)
    args = parser.parse_args()
    retain_freed_memory()  # large CPU tensors reuse freed heap memory (pointworld.heap)
    config = build_model(load_checkpoint(args.checkpoint)).config
    dataset = ClipDataset(ClipDatasetConfig(sources=({"path": str(args.data)},), split=args.split, views=(1, 3),
                                            random_views=False, max_points=4096, robot_points=256, seed=0,
                                            robot_types=config.robot_types))
    sums = breakdown(dataset, config.segment_prior or SegmentFollowConfig())
    total = sum(s["error"] for s in sums.values())
    count = sum(s["count"] for s in sums.values())
    print(f"{args.data} [{args.split}]: {len(dataset)} clips, prior l2_moved {100 * total / count:.2f} cm")
    print(f"{'category':28s} {'point-steps':>11s} {'err share':>9s} {'prior':>6s} {'|gt|':>6s} {'rigid':>6s}")
    for name, s in sorted(sums.items(), key=lambda kv: -kv[1]["error"]):
        n = s["count"]
        print(f"{name:28s} {int(n):11d} {s['error'] / total:9.3f} {100 * s['error'] / n:6.2f} "
              f"{100 * s['gt'] / n:6.2f} {100 * s['rigid'] / n:6.2f}")


if __name__ == "__main__":
    main()
