"""Multi-process training under ``torchrun``: process group set-up, reductions and buffer broadcasts.

``torchrun --nproc_per_node=P`` starts P processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT`` in each; :func:`init_distributed` reads them and joins the process group
(gloo on CPU, NCCL on CUDA, one GPU per local rank). Without those variables it is a no-op and everything
here works unchanged in a single process, so the training loop has one code path.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job.

    Attributes:
        rank: global rank in [0, world_size).
        world_size: number of processes (1 = single process, no process group).
        local_rank: rank on this machine (selects the GPU).
        device: the device this process computes on.
    """

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the process that logs and writes checkpoints)."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """True when several processes take part (a process group is used)."""
        return self.world_size > 1


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name}: expected an integer, got {raw!r}") from None


def ranks_from_env(env: Mapping[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from torchrun's variables in ``env`` (default ``os.environ``).

    Missing variables mean a single process: (0, 1, 0).

    Raises:
        ValueError: a variable is not an integer, only some are set, or the ranks are out of range.
    """
    env = os.environ if env is None else env
    present = [k for k in _ENV if env.get(k)]
    if present and len(present) != len(_ENV):
        raise ValueError(f"environment: expected all of {list(_ENV)} (as set by torchrun) or none, got only "
                         f"{present}")
    rank, world, local = (_env_int(env, "RANK", 0), _env_int(env, "WORLD_SIZE", 1), _env_int(env, "LOCAL_RANK", 0))
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"environment: expected WORLD_SIZE >= 1, 0 <= RANK < WORLD_SIZE and "
                         f"LOCAL_RANK >= 0, got RANK={rank}, WORLD_SIZE={world}, LOCAL_RANK={local}")
    return rank, world, local


def resolve_device(device: str | torch.device, local_rank: int = 0) -> torch.device:
    """The compute device for ``device`` = "auto" (CUDA if available, else CPU), "cpu", "cuda" (the GPU of
    ``local_rank``) or an explicit "cuda:i".

    Raises:
        ValueError: an unknown device string, or CUDA asked for but not available.
    """
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:<i>', got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device: {device!r} asked for, but CUDA is not available on this machine")
        return torch.device("cuda", local_rank if dev.index is None else dev.index)
    if dev.type != "cpu":
        raise ValueError(f"device: expected 'auto', 'cpu', 'cuda' or 'cuda:<i>', got {device!r}")
    return dev


def init_distributed(device: str | torch.device = "auto") -> DistributedContext:
    """Join the torchrun process group if there is one and pick this process's device.

    Single process (no torchrun variables, or WORLD_SIZE=1): nothing is initialised. Otherwise the process
    group is created from the environment (``env://``) with gloo on CPU or NCCL on CUDA, unless one already
    exists; on CUDA each process uses GPU ``local_rank``.

    Args:
        device: "auto", "cpu", "cuda" or "cuda:i" (see :func:`resolve_device`).

    Raises:
        ValueError: bad device or environment; an existing process group of another world size.
    """
    rank, world, local = ranks_from_env()
    dev = resolve_device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1:
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", init_method="env://",
                                    rank=rank, world_size=world)
        elif dist.get_world_size() != world:
            raise ValueError(f"WORLD_SIZE: the existing process group has {dist.get_world_size()} processes, "
                             f"the environment says {world}")
    return DistributedContext(rank=rank, world_size=world, local_rank=local, device=dev)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def cleanup() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every process (a no-op in a single process)."""
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes, in place, and return it (unchanged in a single process).

    Args:
        tensor: (...) any shape and dtype, on this process's device (a CUDA tensor under NCCL).
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor: expected a torch.Tensor, got {type(tensor).__name__}")
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_module_buffers(module: nn.Module, src: int = 0) -> None:
    """Copy every persistent buffer of ``module`` (e.g. normalization statistics) from rank ``src`` to all
    processes, then run the module's state-dict load hooks (so Python-side flags follow the buffers).

    A no-op in a single process. Every rank must call it with a module of the same structure.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module: expected a torch.nn.Module, got {type(module).__name__}")
    if not _active():
        return
    names = {name for name, _ in module.named_buffers()}
    state = {k: v for k, v in module.state_dict().items() if k in names}  # views sharing the buffers' storage
    for value in state.values():
        if value.dtype == torch.bool:
            as_bytes = value.to(torch.uint8)  # not every backend reduces/broadcasts bool tensors
            dist.broadcast(as_bytes, src=src)
            value.copy_(as_bytes.bool())
        else:
            dist.broadcast(value, src=src)
    module.load_state_dict(state, strict=False)
