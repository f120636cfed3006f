"""Benchmark: training throughput of the ``tiny`` preset (clips/s) and which part is the bottleneck.

On one dataset directory, measures in the same run:

- **dataloader alone**: clips/s of iterating the training DataLoader (clip reading, voxelization, normals, robot
  flows, augmentation, collate) with ``--workers`` workers, no model;
- **compute alone**: clips/s of forward + backward + optimizer step of ``tiny`` on one pre-collated batch
  repeated (no data loading): the anchor the full loop is compared against;
- **train, 1 process** and **train, 2 processes** (``torchrun --nproc_per_node=2``, gloo): clips/s of the real
  ``pointworld train`` loop (median over logged intervals, all processes together).

Usage: ``python scripts/bench_train.py --data DIR [--steps 30] [--batch-size 4] [--workers 1]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from pointworld.data.augment import default_augmentation
from pointworld.data.clip_dataset import ClipDataset, ClipDatasetConfig
from pointworld.data.collate import collate_clips
from pointworld.heap import add_heap_argument, set_heap_policy
from pointworld.model.loss import LossConfig, heteroscedastic_huber_loss
from pointworld.model.world_model import WorldModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import load_preset  # noqa: E402


def dataloader_rate(data: str, batches: int, batch_size: int, workers: int) -> float:
    """clips/s of the training DataLoader alone."""
    dataset = ClipDataset(ClipDatasetConfig(sources=({"path": data},)), augment=default_augmentation())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers,
                        collate_fn=collate_clips, generator=torch.Generator().manual_seed(0))
    it = iter(loader)
    next(it)  # worker start-up
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t0)


def compute_rate(data: str, steps: int, batch_size: int) -> float:
    """clips/s of forward + backward + AdamW step on one batch, repeated."""
    dataset = ClipDataset(ClipDatasetConfig(sources=({"path": data},)))
    batch = collate_clips([dataset[i] for i in range(batch_size)])
    model = WorldModel(load_preset("tiny"))
    model.update_normalization(batch.scene, batch.action, batch.target, batch.valid)
    model.finalize_normalization()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        pred = model(batch.scene, batch.action)
        loss, _ = heteroscedastic_huber_loss(pred.displacement, pred.log_var, batch.target, batch.valid,
                                             model.displacement_scale.scale, LossConfig())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch_size / (time.perf_counter() - t0)


def train_rate(data: str, steps: int, batch_size: int, workers: int, nproc: int) -> float:
    """clips/s of ``pointworld train`` with ``nproc`` processes (all processes together)."""
    with tempfile.TemporaryDirectory() as out:
        args = ["pointworld", "train", f"data.sources=[{data}]", f"out={out}", f"steps={steps}",
                f"batch_size={batch_size}", f"num_workers={workers}", "val_data=null", "log_every=5",
                "checkpoint_every=0", "normalization_batches=2", "device=cpu"]
        if nproc == 1:
            cmd = [sys.executable, "-m", *args]
        else:
            cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "-m", *args]
        subprocess.run(cmd, check=True, capture_output=True, text=True)
        summary = json.loads((Path(out) / "summary.json").read_text())
    return float(summary["clips_per_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    add_heap_argument(parser)
    args = parser.parse_args()
    set_heap_policy(args.heap == "retain")
    torch.manual_seed(0)
    rows = [("dataloader alone", dataloader_rate(args.data, args.steps, args.batch_size, args.workers)),
            ("compute alone (anchor)", compute_rate(args.data, args.steps, args.batch_size))]
    rows += [(f"train, {n} process{'es' if n > 1 else ''}",
              train_rate(args.data, args.steps, args.batch_size, args.workers, n)) for n in (1, 2)]
    anchor = rows[1][1]
    print(f"tiny, batch {args.batch_size} per process, {args.steps} steps, {args.workers} loader worker(s), "
          f"{torch.get_num_threads()} threads")
    for name, rate in rows:
        print(f"{name:24s} {rate:8.2f} clips/s  {rate / anchor:6.2f} x compute alone")


if __name__ == "__main__":
    main()
