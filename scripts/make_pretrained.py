"""Reproduce the bundled checkpoint end to end: generate data, train ``tiny``, evaluate, ship.

One command (``python scripts/make_pretrained.py --work /tmp/pretrained``) runs, through the ``pointworld`` CLI:

1. ``pointworld generate`` a multi-robot dataset (Franka, bimanual, flying gripper; 3 cameras) into
   ``WORK/data/train_mix`` and a small test set of the robot left out of training (UR5e + gripper) into
   ``WORK/data/unseen_ur5e``;
2. ``pointworld train`` the ``tiny`` preset on it in two stages (each resumable: rerun the same command):
   ``WORK/run_base``, the network alone (no segment prior, no nearest-robot-motion features, plain
   heteroscedastic loss), then ``WORK/run``, a fine-tune from it (``init_from``) with the segment-follow
   prior switched on, so the network learns the correction to the prior;
3. ``pointworld eval`` the result on the held-out test split and on the unseen robot (with the zero-motion,
   rigid-follow and segment-follow baselines);
4. copies the weights of the best validated checkpoint (no optimizer state) to
   ``pointworld/checkpoints/tiny.pt`` with ``tiny_eval.json`` (both evaluations) and
   ``tiny_train_config.json`` next to it.

Every step skips work already done (finished episodes, a finished run), so an interrupted run can simply be
started again. Use ``--steps`` / ``--episodes`` to make a quicker (weaker) model. It trains with the current
``configs/train.yaml`` and ``configs/model/tiny.yaml``; the exact config of the shipped file is in
``pointworld/checkpoints/tiny_train_config.json`` (and inside ``tiny.pt``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from pointworld.train.checkpoint import build_model, load_checkpoint, save_checkpoint

REPO = Path(__file__).resolve().parents[1]
TRAIN_ROBOTS = ("franka_panda", "bimanual", "flying_gripper")
UNSEEN_ROBOT = "ur5e_gripper"
SHIP_DIR = REPO / "pointworld" / "checkpoints"


def pointworld(*args: str) -> None:
    """Run one ``pointworld`` CLI command (the same path a user takes); stop on failure."""
    cmd = [sys.executable, "-m", "pointworld", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def generate(work: Path, episodes: int, unseen_episodes: int, workers: int) -> tuple[Path, Path]:
    """Steps 1: the training mix and the unseen-robot test set (resumable)."""
    mix, unseen = work / "data" / "train_mix", work / "data" / "unseen_ur5e"
    for robot in TRAIN_ROBOTS:
        pointworld("generate", f"robot={robot}", f"episodes={episodes}", f"workers={workers}", "n_views=3",
                   f"out={mix}", "seed=1")
    pointworld("generate", f"robot={UNSEEN_ROBOT}", f"episodes={unseen_episodes}", f"workers={workers}",
               "n_views=3", f"out={unseen}", "seed=2")
    return mix, unseen


#: Model overrides of both stages (the shipped architecture: the network sees no nearest-robot motion).
MODEL_ARGS = ("model=tiny", "model.robot_motion_features=false", "model.scale_moving_threshold_m=0.0")


def train_stage(run: Path, mix: Path, steps: int, batch_size: int, *extra: str) -> Path:
    """Train one stage into ``run`` (resumes a stopped run; skipped when it already finished)."""
    last = run / "last.pt"
    if last.is_file() and load_checkpoint(last).step >= steps:
        print(f"{last}: already trained for {steps} steps")
        return run
    pointworld("train", f"data.sources=[{mix}]", f"out={run}", *MODEL_ARGS, f"steps={steps}",
               f"batch_size={batch_size}", "num_workers=1", "val_batches=8", "checkpoint_every=50",
               f"resume={str(last.is_file()).lower()}", *extra)
    return run


def train(work: Path, mix: Path, steps: int, finetune_steps: int, batch_size: int) -> Path:
    """Step 2: the network alone, then the fine-tune with the segment prior on."""
    base = train_stage(work / "run_base", mix, steps, batch_size, "model.segment_prior=null",
                       "loss.variance_beta=0.0", "val_every=300")
    return train_stage(work / "run", mix, finetune_steps, batch_size, f"init_from={base / 'last.pt'}",
                       "optim.lr=3e-4", "optim.warmup_steps=50", "val_every=400")


def shipped_checkpoint(run: Path) -> Path:
    """The checkpoint that is evaluated and shipped: ``best.pt`` (lowest validation l2_moved) if the run
    validated, else ``last.pt``."""
    best = run / "best.pt"
    return best if best.is_file() else run / "last.pt"


def evaluate(run: Path, mix: Path, unseen: Path) -> dict:
    """Step 3: evaluation JSONs on the held-out test split and on the unseen robot."""
    results = {}
    for name, source, split in (("held_out_test", mix, "test"), ("unseen_robot", unseen, "all")):
        out = run / f"eval_{name}.json"
        pointworld("eval", f"checkpoint={shipped_checkpoint(run)}", f"data.sources=[{source}]", f"data.split={split}",
                   f"out={out}")
        results[name] = json.loads(out.read_text())
    return results


def ship(run: Path, results: dict) -> None:
    """Step 4: weights + normalization + config + data description + metrics into the package."""
    ckpt = load_checkpoint(shipped_checkpoint(run))
    model = build_model(ckpt)
    metrics = {name: {"ratios": r["ratios"], "model": r["predictors"]["model"]["overall"]}
               for name, r in results.items()}
    SHIP_DIR.mkdir(exist_ok=True)
    save_checkpoint(SHIP_DIR / "tiny.pt", model=model, step=ckpt.step, train_config=ckpt.train_config,
                    dataset=ckpt.dataset, metrics=json.loads(json.dumps(metrics, default=str)))
    (SHIP_DIR / "tiny_eval.json").write_text(json.dumps(results, indent=1, allow_nan=False, default=str) + "\n")
    (SHIP_DIR / "tiny_train_config.json").write_text(json.dumps(ckpt.train_config, indent=1) + "\n")
    print(f"shipped {SHIP_DIR / 'tiny.pt'} ({(SHIP_DIR / 'tiny.pt').stat().st_size / 2**20:.1f} MB)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="working directory (data + run)")
    parser.add_argument("--episodes", type=int, default=120, help="episodes per training robot (6 clips each)")
    parser.add_argument("--unseen-episodes", type=int, default=24)
    parser.add_argument("--steps", type=int, default=1200, help="steps of the first stage (network alone)")
    parser.add_argument("--finetune-steps", type=int, default=2000, help="steps of the fine-tune with the prior")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="generation worker processes")
    args = parser.parse_args()
    mix, unseen = generate(args.work, args.episodes, args.unseen_episodes, args.workers)
    run = train(args.work, mix, args.steps, args.finetune_steps, args.batch_size)
    ship(run, evaluate(run, mix, unseen))


if __name__ == "__main__":
    main()
