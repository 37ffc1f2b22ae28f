"""DistributedDataParallel set-up for ``torchrun``: gloo on CPU, NCCL on GPU, rank 0 writes.

``torchrun --nproc_per_node=N -m unetseg train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` in each process; :func:`init` reads them. Without them training runs in a single
process and every helper here is a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes files and prints."""
        return self.rank == 0


def from_env() -> DistInfo:
    """Rank, world size and local rank as torchrun sets them (single process otherwise).

    Examples
    --------
    >>> from_env().world_size >= 1
    True
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    return DistInfo(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")))


def init(device: torch.device, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group when launched by torchrun; pick the backend for ``device``.

    ``timeout_s``: a collective that waits longer for another process fails (a dead rank makes
    the others exit non-zero instead of hanging; ``runtime.collective_timeout_s``)."""
    info = from_env()
    if not info.enabled or dist.is_initialized():
        return info
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    timeout = timedelta(seconds=timeout_s)
    if restarted_by_torchrun():
        dist.init_process_group(backend=backend, timeout=timeout, store=_attempt_store(info, timeout), rank=info.rank,
                                world_size=info.world_size)
    else:
        dist.init_process_group(backend=backend, timeout=timeout)
    return info


def _attempt_store(info: DistInfo, timeout: timedelta) -> dist.Store:
    """torchrun's store, with keys of this restart attempt only: the keys the dead group left
    (its processes' addresses) would otherwise send the new group to sockets that are gone."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # then the launcher hosts it
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), info.world_size,
                          is_master=not agent and info.rank == 0, timeout=timeout, multi_tenant=not agent)
    return dist.PrefixStore(f"unetseg/attempt_{os.environ['TORCHELASTIC_RESTART_COUNT']}", store)


def device_for(device: torch.device, info: DistInfo) -> torch.device:
    """One GPU per process under torchrun (``cuda:LOCAL_RANK``); CPU stays CPU."""
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def wrap(model: nn.Module, device: torch.device, info: DistInfo) -> nn.Module:
    """Wrap in DistributedDataParallel when running distributed (identity otherwise)."""
    if not info.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=True)


def any_flag(flag: bool, device: torch.device, info: DistInfo) -> bool:
    """True on every rank when ``flag`` is true on any rank (NaN stop, signal, early stop)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def max_value(value: float, device: torch.device, info: DistInfo) -> float:
    """Largest value of a float over ranks (a time-fitted schedule position)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def mean_value(value: float, device: torch.device, info: DistInfo) -> float:
    """Mean of a float over ranks (for logging the loss)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item() / info.world_size)


def broadcast_object(obj, info: DistInfo):
    """Rank 0's Python object on every rank (small metadata only)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def max_param_difference(model: nn.Module, device: torch.device, info: DistInfo) -> float:
    """Largest absolute difference of any parameter between this rank and rank 0 (on all ranks).

    DDP keeps replicas identical; this checks it at the end of training.
    """
    if not info.enabled:
        return 0.0
    flat = torch.cat([p.detach().float().reshape(-1) for p in model.parameters()]).to(device)
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    diff = torch.tensor([float((flat - ref).abs().max())], device=device)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def restarted_by_torchrun(env: Mapping[str, str] | None = None) -> bool:
    """Whether torchrun restarted this process's group after a failure (``--max-restarts``), as
    its ``TORCHELASTIC_RESTART_COUNT`` says (``env``: default the process environment).

    Examples
    --------
    >>> restarted_by_torchrun({}), restarted_by_torchrun({"TORCHELASTIC_RESTART_COUNT": "0"})
    (False, False)
    >>> restarted_by_torchrun({"TORCHELASTIC_RESTART_COUNT": "1"})
    True
    """
    env = os.environ if env is None else env
    return int(env.get("TORCHELASTIC_RESTART_COUNT", "0") or 0) > 0
