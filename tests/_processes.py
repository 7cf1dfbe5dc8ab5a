"""Running a function in several processes joined the way torchrun joins them (RANK, WORLD_SIZE, LOCAL_RANK,
LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT in the environment; gloo on the CPU), for the multi-process tests.

The processes are forked from a server that imported torch and nemesis_fast once, so a test pays for those
imports once per session rather than once per process (seconds each on a busy 2-core machine).
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import time
from collections.abc import Callable

import torch.multiprocessing as mp

PRELOAD = ["torch", "matplotlib.pyplot", "nemesis_fast", "nemesis_fast.evaluation", "nemesis_fast.parallel", __name__]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, fn: Callable, world_size: int, local_world_size: int, port: int, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank % local_world_size),
        LOCAL_WORLD_SIZE=str(local_world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    fn(*args)


def run_processes(
    fn: Callable, world_size: int, *args, local_world_size: int | None = None, timeout: float = 300.0
) -> None:
    """fn(*args) in `world_size` processes (`local_world_size` per simulated machine, default all on one);
    raises if one of them fails, or when they have not all finished after `timeout` seconds (a deadlock)."""
    multiprocessing.set_forkserver_preload(PRELOAD)
    local = local_world_size or world_size
    context = mp.start_processes(
        _entry,
        args=(fn, world_size, local, free_port(), args),
        nprocs=world_size,
        join=False,
        start_method="forkserver",
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"the {world_size} processes did not finish within {timeout} s")
