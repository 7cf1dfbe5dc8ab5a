"""The processes of a run started by torchrun (NCCL on GPUs, gloo on CPUs), or the one process of a plain run,
and the CPU threads each of them uses.

Work that is shared out (the evaluation's units of work, the models to train; see :mod:`.schedule`) is cut so
that the numbers do not depend on the number of processes: the results are gathered and put back in order.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .._checks import MAX_THREADS


@dataclass(frozen=True)
class Workers:
    """This process's place among the processes of the run: its rank, their number and its device."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def threads(self) -> int:
        """torch's intra-op threads in this process (CPU kernels)."""
        return torch.get_num_threads()

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def claim(self, name: str) -> bool:
        """Whether this process is the first of the run to claim `name` (always, on one process): a piece of work
        that any process may pick up is done by the one whose claim comes first. Claims last as long as the run."""
        if not self.distributed:
            return True
        return dist.distributed_c10d._get_default_store().add(f"nemesis_fast/claim/{name}", 1) == 1

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


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: taskset, cgroups cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_threads(device: torch.device, environ: Mapping[str, str] = os.environ) -> int | None:
    """The thread count a CPU process under torchrun should use, or None to keep torch's default.

    Under torchrun (LOCAL_WORLD_SIZE set) on the CPU: usable cores // the processes on this machine, at least 1.
    A user's OMP_NUM_THREADS is kept, except "1" with several local processes: torchrun itself sets that value
    when the variable was unset, so it cannot be told apart from its default (choose the count with `threads`).
    """
    local = environ.get("LOCAL_WORLD_SIZE")
    if device.type != "cpu" or local is None:
        return None
    local_processes = max(1, int(local))
    omp = environ.get("OMP_NUM_THREADS")
    if omp is not None and not (omp == "1" and local_processes > 1):
        return None
    return max(1, usable_cores() // local_processes)


WAIT_HOURS_VARIABLE = "NEMESIS_FAST_WAIT_HOURS"
DEFAULT_WAIT_HOURS = 24.0
MAX_WAIT_HOURS = 1e6  # about 114 years: timedelta's range, and the collectives', stay far away


def wait_timeout(environ: Mapping[str, str] = os.environ) -> timedelta:
    """How long a process waits at a collective (gathering results, receiving a model another process trains)
    before giving up: NEMESIS_FAST_WAIT_HOURS (default 24). The work is shared out by estimated cost, so a
    process may finish its share hours before the others (a C&W unit alone can take an hour on a CPU); torch's
    own default (30 minutes on gloo, 10 on NCCL) would end such a run in an error after all its work is done."""
    text = environ.get(WAIT_HOURS_VARIABLE)
    if text is None:
        return timedelta(hours=DEFAULT_WAIT_HOURS)
    try:
        hours = float(text)
    except ValueError:
        hours = math.nan
    if not math.isfinite(hours) or not 0 < hours <= MAX_WAIT_HOURS:
        raise ValueError(f"{WAIT_HOURS_VARIABLE} must be a number of hours > 0 and <= {MAX_WAIT_HOURS:g}, got {text!r}")
    return timedelta(hours=hours)


def set_threads(threads: int, device: torch.device) -> int:
    """Sets torch's intra-op threads: `threads` when > 0, else :func:`auto_threads`; returns the count in use."""
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= MAX_THREADS:
        raise ValueError(f"threads must be an integer in [0, {MAX_THREADS}] (0: automatic), got {threads!r}")
    chosen = threads or auto_threads(device)
    if chosen:
        torch.set_num_threads(chosen)
    return torch.get_num_threads()


def start(device_name: str, threads: int = 0) -> Workers:
    """Joins the process group when launched by torchrun (WORLD_SIZE > 1), else a single worker; sets the CPU
    threads (`threads` > 0: that many; 0: see :func:`auto_threads`)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    set_threads(threads, device)
    if world_size <= 1:
        return Workers(device=device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, timeout=wait_timeout())
    return Workers(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def stop(workers: Workers) -> None:
    if workers.distributed and dist.is_initialized():
        dist.destroy_process_group()
