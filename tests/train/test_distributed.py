"""Distributed helpers: torchrun environment parsing, single-process no-ops, and a real 2-process gloo job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

from pointworld.train.distributed import (
    DistributedContext,
    all_reduce_sum,
    barrier,
    broadcast_module_buffers,
    cleanup,
    init_distributed,
    ranks_from_env,
    resolve_device,
)

TORCHRUN_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@pytest.fixture()
def single_process_env(monkeypatch):
    for name in TORCHRUN_VARS:
        monkeypatch.delenv(name, raising=False)


def test_ranks_from_env():
    assert ranks_from_env({}) == (0, 1, 0)
    assert ranks_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == (3, 4, 1)
    with pytest.raises(ValueError, match=r"all of \['RANK', 'WORLD_SIZE', 'LOCAL_RANK'\].*\['RANK'\]"):
        ranks_from_env({"RANK": "0"})
    with pytest.raises(ValueError, match="WORLD_SIZE: expected an integer, got 'two'"):
        ranks_from_env({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="RANK=2, WORLD_SIZE=2"):
        ranks_from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
    assert resolve_device("auto") == expected
    with pytest.raises(ValueError, match="device: expected 'auto', 'cpu'"):
        resolve_device("gpu0")
    with pytest.raises(ValueError, match="device: expected 'auto', 'cpu'"):
        resolve_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_single_process_context_is_a_no_op(single_process_env):
    ctx = init_distributed("cpu")
    assert ctx == DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert ctx.is_main and not ctx.is_distributed
    assert not dist.is_initialized()
    x = torch.arange(4.0)
    assert all_reduce_sum(x) is x and torch.equal(x, torch.arange(4.0))
    module = torch.nn.BatchNorm1d(3)
    module.running_mean.fill_(2.0)
    broadcast_module_buffers(module)
    assert torch.equal(module.running_mean, torch.full((3,), 2.0))
    barrier()
    cleanup()
    with pytest.raises(TypeError, match="tensor: expected a torch.Tensor"):
        all_reduce_sum([1.0])
    with pytest.raises(TypeError, match="module: expected a torch.nn.Module"):
        broadcast_module_buffers(x)


def test_world_size_one_from_torchrun_is_single_process(monkeypatch):
    for name, value in zip(TORCHRUN_VARS, ("0", "1", "0")):
        monkeypatch.setenv(name, value)
    ctx = init_distributed("auto")
    assert ctx.world_size == 1 and not dist.is_initialized()


# The workers run in fresh interpreters started by torch.multiprocessing.spawn from a script, with the
# environment torchrun would give them; each writes what it observed to a JSON file.
WORKER = textwrap.dedent("""
    import json, os, sys
    import torch
    import torch.multiprocessing as mp
    from pointworld.model.normalization import FeatureNormalizer
    from pointworld.train import distributed as d

    def worker(rank, port, out):
        os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        ctx = d.init_distributed("cpu")
        total = d.all_reduce_sum(torch.tensor([rank + 1.0, 10.0 * rank], dtype=torch.float64))
        norm = FeatureNormalizer(2)
        if ctx.is_main:  # statistics fitted on rank 0 only, as the training loop does
            norm.update(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
            norm.finalize()
        d.broadcast_module_buffers(norm)
        d.barrier()
        result = {"rank": ctx.rank, "world_size": ctx.world_size, "is_main": ctx.is_main,
                  "backend": torch.distributed.get_backend(), "sum": total.tolist(),
                  "fitted": norm.fitted, "mean": norm.mean.tolist(), "count": int(norm.count)}
        d.cleanup()
        with open(os.path.join(out, f"rank{rank}.json"), "w") as fh:
            json.dump(result, fh)

    if __name__ == "__main__":
        torch.set_num_threads(1)
        mp.spawn(worker, args=(int(sys.argv[1]), sys.argv[2]), nprocs=2, join=True)
""")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_gloo_all_reduce_and_buffer_broadcast(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_VARS}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, str(script), str(free_port()), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for rank, res in enumerate(results):
        assert (res["rank"], res["world_size"], res["is_main"], res["backend"]) == (rank, 2, rank == 0, "gloo")
        assert res["sum"] == [3.0, 10.0]  # (1 + 2, 0 + 10)
        assert res["fitted"] is True and res["count"] == 2
        assert res["mean"] == pytest.approx([2.0, 4.0], abs=1e-12)
