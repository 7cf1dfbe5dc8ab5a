"""Sharding the evaluation across processes started by torchrun (NCCL on GPUs, gloo on CPUs).

The test set is cut into fixed chunks whose boundaries and random seeds do not depend on the number of
processes; each process takes every world_size-th chunk, and the chunks' results are gathered and put back in
order, so a sharded run gives the same numbers as a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Workers:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def my_chunks(self, num_chunks: int) -> list[int]:
        return list(range(self.rank, num_chunks, self.world_size))

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every process's `obj`, in rank order (on every process)."""
        if not self.distributed:
            return [obj]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, obj)
        return gathered


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        return torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    if name == "cuda":
        return torch.device(f"cuda:{local_rank}")
    return torch.device(name)


def start(device_name: str) -> Workers:
    """Joins the process group when launched by torchrun (WORLD_SIZE > 1), else a single worker."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    if world_size <= 1:
        return Workers(device=device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
    return Workers(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def stop(workers: Workers) -> None:
    if workers.distributed and dist.is_initialized():
        dist.destroy_process_group()
