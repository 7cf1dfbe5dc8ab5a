"""Training a set of models across the processes of a run, each model once, and handing every process the same
weights: the part shared by the evaluation and `nemesis-fast train --paper`.

1. Consensus: every rank says which models its cache holds and which trainings it can resume (all_gather), and
   all compute the same :func:`~.schedule.plan`; a model some rank holds is not trained again.
2. Each rank trains its own models in the plan's order. A model that another rank's training needs is sent to
   it point to point as soon as it exists (isend, never waited on before the end: a rank blocks only on
   receiving a model that comes earlier in the plan's order than the one it is about to train, so no cycle of
   waits can form).
3. A rank that has trained its share while others still train may do other work meanwhile (`while_waiting`,
   piece by piece, until every rank has arrived at a barrier and finished the piece it was doing then).
4. Every model is broadcast from its trainer (or the lowest rank holding it) to all ranks, in the plan's order,
   with its metadata; each rank writes what its cache lacks, so an interrupted run resumes from any cache.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
import torch.distributed as dist

from . import exchange
from .schedule import Job, Plan, plan
from .workers import Workers

State = dict[str, torch.Tensor]
Trained = tuple[State, dict[str, Any]]  # (state dict on the CPU, metadata: numbers, strings, lists of them)
Log = Callable[[str], None]


class ModelStore(Protocol):
    """Where one process keeps trained models between runs (e.g. the evaluation's cache)."""

    def load(self, name: str) -> Trained | None:
        """The stored model `name`, or None."""

    def save(self, name: str, state: State, meta: dict[str, Any]) -> None: ...

    def exists(self, name: str) -> bool: ...

    def resumable(self, name: str) -> bool:
        """Whether an interrupted training of `name` left a checkpoint here."""


class _Inbox:
    """The dependencies this rank receives, taken in the order their senders send them."""

    def __init__(self, plan: Plan, rank: int, template: Callable[[str], State], device: torch.device) -> None:
        self.pending: dict[int, deque[str]] = {}
        for name, src, dst in plan.transfers:
            if dst == rank:
                self.pending.setdefault(src, deque()).append(name)
        self.plan, self.template, self.device = plan, template, device

    def take(self, name: str, models: dict[str, Trained]) -> None:
        """Receives models from the source of `name` until `name` has arrived."""
        src = self.plan.source[name]
        while name not in models:
            arrived = self.pending[src].popleft()
            models[arrived] = (exchange.receive(self.template(arrived), src, self.device), {})


def train_models(
    jobs: Sequence[Job],
    workers: Workers,
    *,
    template: Callable[[str], State],
    train: Callable[[str, dict[str, State]], Trained],
    store: ModelStore | None = None,
    log: Log = lambda message: None,
    while_waiting: Callable[[dict[str, Trained]], bool] | None = None,
) -> dict[str, Trained]:
    """Every job's model on every process, each trained by one process (or read from a cache).

    Args:
        jobs: the models, with their costs and dependencies, in the same order on every process.
        workers: this process's rank among `world_size` (one process: everything is trained here).
        template: a state dict of an untrained model `name` (names, shapes and dtypes of its tensors).
        train: trains model `name` given the state dicts of the models it needs (by name); returns its state
            dict on the CPU and metadata (the rank, process count and threads are added).
        store: this process's cache: models found there are not trained; every model ends up there.
        log: where process 0 says which rank trains what, and from where the others come.
        while_waiting: called over and over on a rank that has trained its share while other ranks still train
            (or finish a piece of their own such work), with the models this rank holds (its cache's, its own,
            those it received); each call does a short piece of work and returns False when there is nothing
            (left) to do. Several ranks may call it at once: work any of them could pick up is claimed first
            (:meth:`Workers.claim`). Never called on one process. Every rank must pass it alike (a function or
            None).

    Returns: name -> (state dict on the CPU, metadata), bit-identical on every process.
    """
    rank = workers.rank
    models: dict[str, Trained] = {}
    if store is not None:
        models = {job.name: found for job in jobs if (found := store.load(job.name)) is not None}
    resumable = [job.name for job in jobs if job.name not in models and store is not None and store.resumable(job.name)]
    views = workers.gather((sorted(models), resumable))
    schedule = plan(jobs, workers.world_size, [v[0] for v in views], [v[1] for v in views])
    if workers.is_main:
        for line in schedule.describe({job.name: job.cost for job in jobs}):
            log(line)
    needs = {job.name: job.needs for job in jobs}
    own = set(models)
    sending = [
        exchange.send(models[name][0], dst, workers.device)
        for name, src, dst in schedule.transfers
        if src == rank and name not in schedule.trainer
    ]
    inbox = _Inbox(schedule, rank, template, workers.device)
    for name in schedule.to_train(rank):
        for need in needs[name]:
            inbox.take(need, models)
        state, meta = train(name, {need: models[need][0] for need in needs[name]})
        meta = {**meta, "trained_by": rank, "processes": workers.world_size, "threads": workers.threads}
        models[name] = (state, meta)
        own.add(name)
        if store is not None:
            store.save(name, state, meta)
        sending += [exchange.send(state, dst, workers.device) for n, _, dst in schedule.transfers if n == name]
    for request, _ in sending:
        request.wait()
    if workers.distributed:
        if while_waiting is not None:
            _work_until_all_arrive(lambda: while_waiting(dict(models)))
        _share(schedule, models, own, workers, template, store)
    return {name: models[name] for name in schedule.order}


SETTLE_SECONDS = 0.2


def _work_until_all_arrive(work: Callable[[], bool]) -> None:
    """Calls `work` between polls of two barriers, until it returns False or the barrier completes: the first
    completes when every rank has arrived here, the second when every rank has finished the piece of work it was
    doing then. So the last rank to arrive starts no work, and a rank that arrives while another is in the middle
    of a piece works until that piece ends instead of idling."""
    more = True
    for _ in range(2):
        barrier = dist.barrier(async_op=True)
        _settle(barrier)
        while more and not barrier.is_completed():
            more = work()
        barrier.wait()


def _settle(barrier: dist.Work) -> None:
    """Gives a barrier that every other rank has joined time to complete (up to SETTLE_SECONDS): completion
    reaches the last rank to join a moment after it joins, and without this it would start a piece of work."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while not barrier.is_completed() and time.monotonic() < deadline:
        time.sleep(0.001)


def _share(
    schedule: Plan,
    models: dict[str, Trained],
    own: set[str],
    workers: Workers,
    template: Callable[[str], State],
    store: ModelStore | None,
) -> None:
    """Broadcasts every model from its source rank, in the plan's order, and stores what this rank lacked."""
    metas: dict[str, Any] = {}
    for part in workers.gather({n: models[n][1] for n in schedule.order if schedule.source[n] == workers.rank}):
        metas.update(part)
    for name in schedule.order:
        src = schedule.source[name]
        mine = models[name][0] if src == workers.rank else None
        models[name] = (exchange.broadcast(mine, template(name), src, workers.device), metas[name])
        if name not in own and store is not None and not store.exists(name):
            store.save(name, *models[name])
