"""Which process trains which model: one fixed schedule, computed alike on every process, shared by the
evaluation and `nemesis-fast train --paper`.

Every model still to train (held by no process) goes to exactly one rank. Models are placed one at a time, the
most urgent first: the one with the longest chain of work waiting on it (its own cost plus that of the models
that need it: critical-path list scheduling), each on the rank where it would finish soonest given when the
models it needs are ready. Without dependencies this is the longest-processing-time-first rule. A rank trains
its models in the order they were placed, so a model always comes after those it needs. A model whose
interrupted training some ranks can resume (its checkpoint is in their cache) goes to one of them.

The evaluation's attack phase shares its independent units of work (attack, eps, chunk) by the same rule
(:func:`share_out`), so that its few costly units (PGD, C&W, certification) land on different processes.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# Rough cost of one training image (forward, backward, Adam step) relative to the paper's CNNs, measured on one
# core of an AMD EPYC CPU (1280 MNIST images, batch 128, one thread): small_resnet ~1.0, ResNet-8 1.7,
# ResNet-20 4.2 (CIFAR-10: 1.6 and 4.7 of cifar_cnn), i.e. about 0.21 per layer of depth. GPUs favour the
# wider batches (GDA, ResNets) more; the schedule needs only the order of magnitude.
_ARCHITECTURE_FACTOR = {"mnist_cnn": 1.0, "cifar_cnn": 1.0, "small_resnet": 1.0}
_RESNET_PER_LAYER = 0.21
# Work per training image and epoch, in plain training passes, measured likewise: label smoothing 1.0; GDA
# 1.2 per row (the noise) on copies + 1 rows (13.0 for 10 copies); offline FGSM adv. training 3.0 and VAT 3.3
# (two rows per image plus making the examples once); online FGSM 2.9 and VAT 3.1 (extra passes per batch).
_RECIPE_PASSES = {"standard": 1.0, "label_smoothing": 1.0, "fgsm_adversarial": 3.0, "vat": 3.2}
_GDA_PASSES_PER_ROW = 1.2


def training_cost(
    architecture: str,
    architecture_kwargs: Mapping[str, Any],
    recipe: str,
    recipe_settings: Mapping[str, Any],
    images: int,
) -> float:
    """Estimated cost of training a model, in CNN image-passes per epoch (arbitrary but common units).

    Args:
        architecture: a builder name of :mod:`nemesis_fast.models` ("mnist_cnn", "resnet"...).
        architecture_kwargs: its arguments (the ResNet's depth counts).
        recipe: "standard", "gda", "label_smoothing", "fgsm_adversarial" or "vat".
        recipe_settings: the recipe's settings (GDA's copies count).
        images: training images per epoch, before augmentation.
    """
    if architecture == "resnet":
        factor = _RESNET_PER_LAYER * int(architecture_kwargs.get("depth", 20))
    else:
        factor = _ARCHITECTURE_FACTOR.get(architecture, 1.0)
    if recipe == "gda":
        passes = _GDA_PASSES_PER_ROW * (int(recipe_settings.get("copies", 10)) + 1)
    else:
        passes = _RECIPE_PASSES.get(recipe, 1.0)
    return max(1, images) * factor * passes


@dataclass(frozen=True)
class Job:
    """A model every process must end up holding: its name, its estimated training cost (> 0, in any unit
    common to the jobs, e.g. :func:`training_cost`) and the names of the models its training needs."""

    name: str
    cost: float
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """Who trains what, and whose weights every process takes."""

    order: tuple[str, ...]  # every job: those held somewhere (in job order), then those to train, as placed
    source: dict[str, int]  # model -> the rank every process takes its weights from (its trainer or holder)
    trainer: dict[str, int]  # model to train -> the rank that trains it
    transfers: tuple[tuple[str, int, int], ...]  # (model, from rank, to rank): a dependency sent ahead, in order
    busy: tuple[float, ...]  # estimated training cost of each rank, dependency waits included

    def to_train(self, rank: int) -> list[str]:
        """The models `rank` trains, in the order it trains them."""
        return [name for name in self.order if self.trainer.get(name) == rank]

    def describe(self, costs: Mapping[str, float]) -> list[str]:
        """One line per rank with models to train (and their share of the estimated work), one for held ones."""
        total = sum(costs[name] for name in self.trainer) or 1.0
        lines = []
        for rank in range(len(self.busy)):
            mine = self.to_train(rank)
            if mine:
                share = sum(costs[name] for name in mine) / total
                lines.append(
                    f"schedule: rank {rank} trains {', '.join(mine)} ({100 * share:.0f}% of the estimated work)"
                )
        for rank in sorted(set(self.source.values())):
            held = [name for name in self.order if name not in self.trainer and self.source[name] == rank]
            if held:
                lines.append(f"schedule: from the cache of rank {rank}: {', '.join(held)}")
        return lines


def _check_jobs(jobs: Sequence[Job]) -> dict[str, Job]:
    by_name: dict[str, Job] = {}
    for job in jobs:
        if not isinstance(job, Job):
            raise TypeError(f"jobs must hold Job objects, got {type(job).__name__}")
        if job.name in by_name:
            raise ValueError(f"jobs: {job.name!r} appears twice")
        if not (isinstance(job.cost, (int, float)) and math.isfinite(job.cost) and job.cost > 0):
            raise ValueError(f"jobs: the cost of {job.name!r} must be a finite number > 0, got {job.cost!r}")
        by_name[job.name] = job
    for job in jobs:
        unknown = [name for name in job.needs if name not in by_name]
        if unknown:
            raise ValueError(f"jobs: {job.name!r} needs {unknown[0]!r}, which is not among the jobs")
    return by_name


def _per_rank(sets: Sequence[Any] | None, world_size: int, name: str) -> list[set[Any]]:
    if sets is None:
        return [set() for _ in range(world_size)]
    if len(sets) != world_size:
        raise ValueError(f"{name} must hold one set per rank ({world_size}), got {len(sets)}")
    return [set(s) for s in sets]


def _urgency(todo: dict[str, Job]) -> dict[str, float]:
    """Each job's cost plus the longest chain of jobs to train that need it (its bottom level)."""
    urgency: dict[str, float] = {}
    visiting: set[str] = set()

    def level(name: str) -> float:
        if name not in urgency:
            if name in visiting:
                raise ValueError(f"jobs: the dependencies of {name!r} form a cycle")
            visiting.add(name)
            after = [level(job.name) for job in todo.values() if name in job.needs]
            urgency[name] = todo[name].cost + max(after, default=0.0)
        return urgency[name]

    for name in todo:
        level(name)
    return urgency


def plan(
    jobs: Sequence[Job],
    world_size: int,
    held: Sequence[Any] | None = None,
    resumable: Sequence[Any] | None = None,
) -> Plan:
    """The schedule of `jobs` over ranks 0..world_size-1 (deterministic: the same inputs give the same plan).

    Args:
        jobs: the models, in a fixed order (ties go to the earlier job, then to the lower rank).
        world_size: the number of processes (>= 1).
        held: per rank, the names of the models already in its cache: not trained again; every process takes
            the weights of the lowest rank holding one.
        resumable: per rank, the names of the models whose interrupted training it can resume: such a model
            is trained by one of these ranks.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    by_name = _check_jobs(jobs)
    held_by = _per_rank(held, world_size, "held")
    can_resume = _per_rank(resumable, world_size, "resumable")
    source = {
        job.name: min(r for r in range(world_size) if job.name in held_by[r])
        for job in jobs
        if any(job.name in h for h in held_by)
    }
    todo = {job.name: job for job in jobs if job.name not in source}
    urgency = _urgency(todo)
    ready_at = dict.fromkeys(source, 0.0)
    busy = [0.0] * world_size
    trainer: dict[str, int] = {}
    position = {name: i for i, name in enumerate(by_name)}
    while len(trainer) < len(todo):
        ready = [job for job in todo.values() if job.name not in trainer and all(d in ready_at for d in job.needs)]
        job = max(ready, key=lambda j: (urgency[j.name], -position[j.name]))
        allowed = [r for r in range(world_size) if job.name in can_resume[r]] or range(world_size)
        needs_done = max((ready_at[d] for d in job.needs), default=0.0)
        rank = min(allowed, key=lambda r: (max(busy[r], needs_done) + job.cost, r))
        busy[rank] = ready_at[job.name] = max(busy[rank], needs_done) + job.cost
        trainer[job.name] = rank
        source[job.name] = rank
    order = tuple(name for name in by_name if name not in trainer) + tuple(trainer)
    transfers: list[tuple[str, int, int]] = []
    for name in trainer:
        for need in by_name[name].needs:
            rank = trainer[name]
            move = (need, source[need], rank)
            if source[need] != rank and need not in held_by[rank] and move not in transfers:
                transfers.append(move)
    transfers.sort(key=lambda move: (order.index(move[0]), move[2]))
    return Plan(order, source, trainer, tuple(transfers), tuple(busy))


def share_out(costs: Sequence[float], world_size: int, held: Sequence[Any] | None = None) -> list[int]:
    """The rank that does each of a list of independent units of work (deterministic, like :func:`plan`).

    A unit some rank already holds (its result is in that rank's cache) goes to the lowest such rank, at no
    cost. The others are placed costliest first (ties: the earlier unit), each on the rank with the least
    estimated work so far (ties: the lower rank): the longest-processing-time-first rule, which :func:`plan`
    also follows when no model needs another.

    Args:
        costs: each unit's estimated cost (finite, >= 0; any unit common to the list).
        world_size: the number of processes (>= 1).
        held: per rank, the indices of the units already in its cache.
    """
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    for i, cost in enumerate(costs):
        if isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost) or cost < 0:
            raise ValueError(f"costs[{i}] must be a finite number >= 0, got {cost!r}")
    held_by = _per_rank(held, world_size, "held")
    owner = [-1] * len(costs)
    for rank in reversed(range(world_size)):
        for i in held_by[rank]:
            if not (isinstance(i, int) and 0 <= i < len(costs)):
                raise ValueError(f"held[{rank}] holds {i!r}, not the index of a unit (0..{len(costs) - 1})")
            owner[i] = rank
    load = [(0.0, rank) for rank in range(world_size)]
    for i in sorted((i for i in range(len(costs)) if owner[i] < 0), key=lambda i: (-costs[i], i)):
        busy, rank = heapq.heappop(load)
        owner[i] = rank
        heapq.heappush(load, (busy + costs[i], rank))
    return owner
