"""torchrun / DistributedDataParallel plumbing: joining the group, and the few collectives training needs."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["Dist", "init_distributed", "all_reduce_sum", "broadcast", "gather", "sync_buffers", "ranks_agree"]


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_name: str) -> tuple[Dist, torch.device]:
    """Join the process group torchrun set up (if any) and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    want_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise ValueError(f"device {device_name!r} asked for, but CUDA is not available")
    if world == 1:
        return Dist(), torch.device(device_name if device_name != "auto" else ("cuda" if want_cuda else "cpu"))
    d = Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if want_cuda:
        torch.cuda.set_device(d.local_rank)
        device = torch.device("cuda", d.local_rank)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if want_cuda else "gloo")
    return d, device


def all_reduce_sum(values: list[float], d: Dist, device: torch.device) -> list[float]:
    if not d.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def broadcast(obj: Any, d: Dist) -> Any:
    if not d.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, d: Dist) -> list[Any]:
    if not d.enabled:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def sync_buffers(model: nn.Module, d: Dist) -> None:
    """Copy rank 0's buffers (BN running statistics, which each rank updates from its own batches) to all ranks."""
    if d.enabled:
        for b in model.buffers():
            dist.broadcast(b, 0)


def ranks_agree(model: nn.Module, d: Dist) -> bool:
    """Whether every rank holds bit-identical weights (a DDP run must)."""
    if not d.enabled:
        return True
    fingerprint = torch.stack([p.detach().double().sum() for p in model.state_dict().values() if p.is_floating_point()])
    gathered = [torch.zeros_like(fingerprint) for _ in range(d.world_size)]
    dist.all_gather(gathered, fingerprint)
    return all(torch.equal(g, gathered[0]) for g in gathered)
