"""Two-process DDP smoke test: ``torchrun --nproc_per_node=2`` (gloo, CPU) runs the same ``train(config)`` entry
point; both ranks finish with identical (synchronised) parameters, only rank 0 writes files, and the run can be
resumed in a single process from the checkpoint it wrote."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pointworld.data.clip_dataset import ClipDatasetConfig
from pointworld.model.backbone import BackboneConfig
from pointworld.model.world_model_config import WorldModelConfig
from pointworld.train.checkpoint import load_checkpoint
from pointworld.train.config import OptimConfig, TrainConfig
from pointworld.train.loop import train

T = 4

#: Run by every torchrun process: train, counting checkpoint writes and recording the final parameters.
WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    from pointworld.train import loop
    from pointworld.train.config import TrainConfig

    config = TrainConfig.from_dict(json.load(open(sys.argv[1])))
    saves, save, summarize = [], loop.save_checkpoint, loop._summary

    def counting_save(path, **kwargs):
        saves.append(os.path.basename(str(path)))
        return save(path, **kwargs)

    def summary_with_parameters(run):
        out = summarize(run)
        out["parameters"] = [p.detach().double().sum().item() for p in run.model.parameters()]
        return out

    loop.save_checkpoint, loop._summary = counting_save, summary_with_parameters
    summary = loop.train(config, progress=False)
    summary["saves"] = saves
    rank = int(os.environ["RANK"])
    with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as fh:
        json.dump(summary, fh)
""")


def micro_model() -> WorldModelConfig:
    bb = BackboneConfig(in_channels=1, enc_depths=(1, 1), enc_channels=(16, 32), enc_heads=(2, 2),
                        enc_patch_size=(64, 64), dec_depths=(1,), dec_channels=(16,), dec_heads=(2,),
                        dec_patch_size=(64,), drop_path=0.1)
    return WorldModelConfig(encoder=bb, mixer=bb, horizon=T,
                            token_channels=16, head_hidden=32)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, write_tiny_dataset) -> str:
    return write_tiny_dataset(tmp_path_factory.mktemp("clips"), robot="franka_panda", horizon=T)


def _torchrun(config: TrainConfig, tmp_path: Path, nproc: int = 2) -> list[dict]:
    (tmp_path / "config.json").write_text(json.dumps(config.to_dict()))
    (tmp_path / "worker.py").write_text(WORKER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(tmp_path / "worker.py"), str(tmp_path / "config.json"), str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(nproc)]


def test_two_process_gloo_run_and_single_process_resume(data_dir, tmp_path):
    data = ClipDatasetConfig(sources=({"path": data_dir},), split="all", max_points=128, robot_points=32)
    config = TrainConfig(data=data, val_data=dataclasses.replace(data, random_views=False), model=micro_model(),
                         out=str(tmp_path / "run"), steps=4, batch_size=1, log_every=1, val_every=0, val_batches=2,
                         checkpoint_every=0, normalization_batches=2, device="cpu", seed=1,
                         optim=OptimConfig(warmup_steps=1))
    rank0, rank1 = _torchrun(dataclasses.replace(config, steps=3), tmp_path)
    for summary in (rank0, rank1):
        assert summary["finished"] and summary["step"] == 3 and summary["world_size"] == 2
    assert rank0["losses"] == rank1["losses"] and [s for s, _ in rank0["losses"]] == [1, 2, 3]
    assert rank0["parameters"] == rank1["parameters"]  # gradients were averaged: identical updates
    assert rank0["val"].keys() == rank1["val"].keys() and rank0["val"]["l2"] == rank1["val"]["l2"]
    assert rank0["saves"].count("last.pt") == 1 and rank1["saves"] == []
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt.step == 3 and ckpt.metrics["world_size"] == 2
    with pytest.warns(UserWarning, match="changed since it was written"):
        resumed = train(dataclasses.replace(config, resume=True), progress=False)
    assert resumed["step"] == 4 and [s for s, _ in resumed["losses"]] == [4]
