"""The evaluation itself: the data (:mod:`.dataset`), the training phase (:mod:`.train`), the attack phase
(:mod:`.attack`) cut into units of work shared out among the processes by their estimated cost, the gathering of
the shards, and the cells of the report.

Work is cut into chunks of `batch_size` test images. Every chunk's outcome is cached under a key of its settings,
bounds and images, so the numbers do not depend on how many processes share the work, and a run that is interrupted
continues where it stopped.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from .._progress import progress_bar
from .._version import __version__
from ..bench.harness import device_name
from ..parallel import Workers, share_out
from ..training import evaluate_accuracy
from .attack import Attacks, Chunk
from .cache import ResultCache
from .certified import Certification, CertifiedAccuracy, certified_defenses, certified_stats
from .checks import fgsm_zero_gradient, softmax_underflow
from .config import ATTACK_LABELS, DEFENSE_LABELS, MASKED, SWEEP_ATTACKS, ConfigError, EvalConfig
from .dataset import load_data
from .older_keys import older_form
from .report import Cell, Perturbation, Results, perturbation_stats
from .train import SOURCE, Models

Log = Callable[[str], None]


class Unit(NamedTuple):
    """One unit of the attack phase, on one chunk of test images: "blackbox" (attack, eps: the source's
    examples judged by every defense), "whitebox" (defense, attack, eps, bpda), "perturbation" (defense,
    attack, bpda: the smallest fooling perturbation) or "certify" (defense). bpda False: the defense attacked
    through its own gradient (see :meth:`Attacks.has_bpda`)."""

    kind: str
    chunk: Chunk
    attack: str | None = None
    defense: str | None = None
    eps: float | None = None
    bpda: bool = True

    def group(self) -> Unit:
        """The unit without its chunk: the cell (or row) its outcome counts towards."""
        return self._replace(chunk=None)


class Evaluation:
    """One evaluation run on one process of `workers` (all processes run the same code)."""

    def __init__(self, config: EvalConfig, workers: Workers, *, log: Log, progress: bool) -> None:
        self.config = config
        self.workers = workers
        self.device = workers.device
        self.log = log if workers.is_main else (lambda message: None)
        self.progress = progress and workers.is_main
        out = Path(config.out_dir).expanduser()
        self.data = load_data(config)
        cache = Path(config.cache_dir).expanduser() if config.cache_dir else out / "cache"
        self.cache = ResultCache(cache, legacy=self._legacy_settings)
        # Each process trains its own share of the models: their lines come from every process, marked with its rank.
        train_log = (lambda message: log(f"[rank {workers.rank}] {message}")) if workers.distributed else log
        self.models = Models(config, self.data, self.cache, workers, log=train_log, progress=self.progress)
        self.attacks = Attacks(config, self.data, self.models, self.cache)
        self.certification = Certification(config, self.data, self.models, self.cache)
        self.seconds: dict[str, float] = {}
        self._to_craft: deque[Unit] | None = None  # black-box units a process waiting on the others may craft
        self._crafted_while_waiting = 0

    def _legacy_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """A cache key `settings` in its older form (:mod:`.older_keys`), for reading caches written before."""
        return older_form(settings, self.config, self.data)

    def chunks(self, limit: int = 0) -> list[Chunk]:
        """The (start, stop) bounds of the test chunks, over the first `limit` test images (0: all)."""
        total = len(self.data.test_labels)
        total = min(total, limit) if limit else total
        size = self.config.batch_size
        return [(start, min(start + size, total)) for start in range(0, total, size)]

    def blackbox_chunks(self, attack: str) -> list[Chunk]:
        """The chunks a black-box `attack` runs on: all test images, C&W the first `cw_test_samples` (0: all)."""
        return self.chunks(self.config.attack.cw_test_samples if attack == "cw" else 0)

    def _blackbox_runs(self) -> list[tuple[str, float | None]]:
        """(attack, eps) of every black-box run: the table's attacks, then the eps sweep of FGSM and R+FGSM."""
        c = self.config
        runs = [(a, self.attacks.eps(a, None)) for a in c.blackbox_attacks]
        runs += [(a, float(e)) for a in SWEEP_ATTACKS for e in c.blackbox_eps if (a, float(e)) not in runs]
        return runs

    def _work(self) -> list[Unit]:
        """Every unit of work, in a fixed order."""
        c = self.config
        units: list[Unit] = []
        for attack, eps in self._blackbox_runs():
            units += [Unit("blackbox", chunk, attack, eps=eps) for chunk in self.blackbox_chunks(attack)]
        for defense in c.defenses:
            gradients = (True, False) if self.attacks.has_bpda(defense) else (True,)  # BPDA, then its own
            for attack in c.whitebox_attacks:
                chunks = self.chunks(c.attack.pgd_test_samples if attack == "pgd" else 0)
                for eps in c.whitebox_eps:
                    for bpda in gradients:
                        units += [Unit("whitebox", chunk, attack, defense, eps, bpda) for chunk in chunks]
            chunks = self.chunks(c.perturbation_samples)
            for attack in c.perturbation_attacks:
                for bpda in gradients:
                    units += [Unit("perturbation", chunk, attack, defense, bpda=bpda) for chunk in chunks]
        if c.certify.images:
            for defense in certified_defenses(c):
                units += [Unit("certify", chunk, defense=defense) for chunk in self.chunks(c.certify.images)]
        return units

    def _entry(self, u: Unit) -> tuple[str, dict[str, Any]]:
        """The cache kind and key of the entry that holds `u`'s outcome."""
        if u.kind == "blackbox":
            return "verdict", self.attacks.verdict_key(u.attack, u.eps, u.chunk)
        if u.kind == "whitebox":
            return u.kind, self.attacks.whitebox_key(u.defense, u.attack, u.chunk, u.bpda, eps=u.eps)
        if u.kind == "certify":
            return u.kind, self.certification.key(u.defense, u.chunk)
        return u.kind, self.attacks.perturbation_key(u.defense, u.attack, u.chunk, u.bpda)

    def _cost(self, u: Unit) -> float:
        """`u`'s estimated work, in FGSM steps (see :meth:`Attacks.cost`)."""
        start, stop = u.chunk
        if u.kind == "certify":  # a forward pass is about a third of a step
            return (stop - start) * (self.config.certify.n0 + self.config.certify.n) / 3
        return (stop - start) * self.attacks.cost(u.attack)

    def _do(self, u: Unit) -> dict[str, Any]:
        """Computes `u`'s outcome (or loads it from the cache)."""
        if u.kind == "blackbox":
            return self.attacks.blackbox(u.attack, u.eps, u.chunk)
        if u.kind == "whitebox":
            return self.attacks.whitebox(u.defense, u.attack, u.eps, u.chunk, bpda=u.bpda)
        if u.kind == "certify":
            return self.certification.run(u.defense, u.chunk)
        return self.attacks.perturbation(u.defense, u.attack, u.chunk, bpda=u.bpda)

    def _done(self, u: Unit) -> bool:
        """Whether `u`'s outcome is in this process's cache."""
        return self.cache.has(*self._entry(u))

    def _crafted(self, u: Unit) -> bool:
        """Whether `u` is a black-box unit whose adversarial images are in this process's cache."""
        if u.kind != "blackbox":
            return False
        return self.cache.has("blackbox", self.attacks.blackbox_key(u.attack, u.eps, u.chunk))

    def _craft_while_waiting(self, model: Callable[[str], nn.Module | None]) -> bool:
        """Crafts one chunk of black-box examples on the source, for a process that has trained its share of the
        models while others still train: the cheapest chunk whose examples and verdicts are not cached here and
        that no other process has claimed. False when this process does not hold the source, or nothing is left."""
        if model(SOURCE) is None:
            return False
        if self._to_craft is None:
            units = [u for u in self._work() if u.kind == "blackbox"]
            costs = [self._cost(u) for u in units]
            self._to_craft = deque(units[i] for i in sorted(range(len(units)), key=lambda i: (costs[i], i)))
            if self._to_craft:
                self.models.log("crafting the black-box examples on the source while other processes train")
        while self._to_craft:
            u = self._to_craft.popleft()
            if self._done(u) or self._crafted(u):
                continue
            if self.workers.claim(f"blackbox/{self.attacks.blackbox_key(u.attack, u.eps, u.chunk)}"):
                self.attacks.adversarial(u.attack, u.eps, u.chunk)
                self._crafted_while_waiting += 1
                return True
        return False

    def _share(self, units: list[Unit]) -> list[Unit]:
        """This process's units: those whose outcome is in its cache and in no lower rank's, and a share of the
        rest, placed by estimated cost (:func:`nemesis_fast.parallel.share_out`). A black-box unit whose
        adversarial images alone are cached goes to the lowest rank holding them, like one whose outcome is:
        what is left of it, the defenses' verdicts, costs little next to crafting them."""
        if not self.workers.distributed:
            return units
        done_here = {i for i, u in enumerate(units) if self._done(u)}
        crafted_here = {i for i, u in enumerate(units) if i not in done_here and self._crafted(u)}
        views = self.workers.gather((done_here, crafted_here))
        done = set().union(*(d for d, _ in views))
        crafted = set().union(*(c for _, c in views)) - done
        held_by = [d | (c - done) for d, c in views]  # an outcome before adversarial images alone
        costs = [self._cost(u) for u in units]
        owner = share_out(costs, self.workers.world_size, held_by)
        left = [i for i in range(len(units)) if i not in done]
        work = {i: 0.0 if i in crafted else costs[i] for i in left}
        total = sum(work.values()) or 1.0
        for rank in range(self.workers.world_size):
            todo = [i for i in left if owner[i] == rank]
            share = 100 * sum(work[i] for i in todo) / total
            self.log(f"rank {rank}: {len(todo)} units to compute ({share:.0f}% of the estimated work left)")
        return [unit for unit, rank in zip(units, owner) if rank == self.workers.rank]

    def run(self, *, cached_only: bool = False) -> Results:
        """Trains (or loads) the models, computes this process's share of the units of work (or loads them),
        gathers the outcomes and returns the results. cached_only: compute nothing; report what the cache holds
        (see :meth:`cached_results`)."""
        if cached_only:
            return self.cached_results()
        started = time.perf_counter()
        # On every process alike: each model is trained once, by one of them.
        self.models.prepare(while_waiting=self._craft_while_waiting)
        if self._crafted_while_waiting:
            self.models.log(f"crafted {self._crafted_while_waiting} chunks of black-box examples while waiting")
        self.seconds.update(self.models.seconds)
        self.seconds["training (cached or run)"] = time.perf_counter() - started
        models = {d: self.models.get(d) for d in self.config.defenses}
        clean, masking = self._clean_accuracy(models), self._masking_measures(models)
        units = self._work()
        mine = self._share(units)
        certifying = f", certifying the first {self.config.certify.images}" if self.config.certify.images else ""
        self.log(f"attacking {len(self.data.test_labels)} test images{certifying}: {len(units)} units of work")
        attack_started = time.perf_counter()
        outcomes = {unit: self._do(unit) for unit in progress_bar(self.progress, iterable=mine, desc="attacks") or mine}
        gathered: dict[Unit, dict[str, Any]] = {}
        for part in self.workers.gather(outcomes):
            gathered.update(part)
        self.seconds["attacks"] = time.perf_counter() - attack_started
        return self._results(clean, masking, units, gathered, started)

    def save_models(self, folder: Path, results: Results) -> dict[str, Path]:
        """Every model the run trained as a checkpoint `<folder>/<name>.pt` (after :meth:`run`, or after
        :meth:`cached_results`: those the cache holds; see :meth:`Models.save_checkpoints`), with the clean test
        accuracy the run measured for the defenses."""
        folder.mkdir(parents=True, exist_ok=True)
        accuracy = {d: a / 100 for d, a in results.clean_accuracy.items()}
        return self.models.save_checkpoints(folder, accuracy)

    def cached_results(self) -> Results:
        """The results of what the cache holds, computing nothing (for a look at an unfinished run): the clean
        accuracy of every model already trained, and every cell, row and certificate all of whose units of work
        are cached; `pending` counts the units not computed yet. In one process only."""
        if self.workers.distributed:
            raise ConfigError("cached_only: run it in one process, not under torchrun")
        started = time.perf_counter()
        models = {d: self.models.cached(d) for d in self.config.defenses}
        clean, masking = self._clean_accuracy(models), self._masking_measures(models)
        units = self._work()
        entries = {unit: self.cache.load(*self._entry(unit)) for unit in units}
        groups: dict[Unit, list[Unit]] = {}
        for unit in units:
            groups.setdefault(unit.group(), []).append(unit)
        complete = [u for members in groups.values() if all(entries[m] is not None for m in members) for u in members]
        results = self._results(clean, masking, complete, entries, started)
        results.pending = sum(entry is None for entry in entries.values())
        return results

    def _clean_accuracy(self, models: dict[str, nn.Module | None]) -> dict[str, float]:
        """Test accuracy (%) of each model given (None: not trained yet, left out)."""
        test = self.data.test_images, self.data.test_labels
        return {d: 100 * evaluate_accuracy(m, *test, device=self.device) for d, m in models.items() if m is not None}

    def _masking_measures(self, models: dict[str, nn.Module | None]) -> dict[str, dict[str, float]]:
        """The measures of the checks that read models, not cells, per model given (None: not trained yet, left
        out): where the minimal-perturbation JSMA follows the softmax's gradient, the percent of (test image, other
        class) pairs at probability 0 (:func:`.checks.softmax_underflow`); where white-box FGSM runs, the percent of
        test images whose FGSM gradient, through the gradient the defense's row takes, is 0
        (:func:`.checks.fgsm_zero_gradient`)."""
        test = self.data.test_images, self.data.test_labels
        trained = {d: m for d, m in models.items() if m is not None}
        measures: dict[str, dict[str, float]] = {"softmax_underflow": {}, "fgsm_zero_gradient": {}}
        if not self.config.attack.jsma_use_logits and "jsma" in self.config.perturbation_attacks:
            measures["softmax_underflow"] = {d: softmax_underflow(m, *test, self.device) for d, m in trained.items()}
        if "fgsm" in self.config.whitebox_attacks and self.config.whitebox_eps:
            measures["fgsm_zero_gradient"] = {
                d: fgsm_zero_gradient(
                    self.attacks.make("fgsm", self.attacks.target(d), 0, max(self.config.whitebox_eps)),
                    *test,
                    self.device,
                )
                for d in trained
            }
        return measures

    def _results(
        self,
        clean: dict[str, float],
        masking: dict[str, dict[str, float]],
        units: list[Unit],
        outcomes: dict[Unit, dict[str, Any]],
        started: float,
    ) -> Results:
        cells, perturbations, certified = self._cells(units, outcomes)
        if certified:  # the certificates' own compute time, as "train <name>": also where this run read them cached
            self.seconds["certify (cached or run)"] = sum(r.seconds for r in certified)
        return Results(
            config=self.config.to_dict(),
            version=__version__,
            device=device_name(self.device),
            world_size=self.workers.world_size,
            threads=self.workers.threads,
            clean_accuracy=clean,
            cells=cells,
            perturbations=perturbations,
            certified=certified,
            **masking,
            seconds={**self.seconds, "total": time.perf_counter() - started},
            data=self.data.fingerprint(),
            paper_data=self.data.paper_data,
        )

    def _cells(
        self, units: list[Unit], outcomes: dict[Unit, dict[str, Any]]
    ) -> tuple[list[Cell], list[Perturbation], list[CertifiedAccuracy]]:
        groups: dict[Unit, list[dict[str, Any]]] = {}
        for unit in units:  # in chunk order, whichever process computed it
            groups.setdefault(unit.group(), []).append(outcomes[unit])
        cells, perturbations, certified = [], [], []
        for g, parts in groups.items():
            if g.kind in ("whitebox", "perturbation") and g.bpda and self.attacks.has_bpda(g.defense):
                own = groups.get(g._replace(bpda=False))
                if own is None:  # the defense's row needs the attack through its own gradient as well
                    continue
                parts = [_either(g.kind, b, o) for b, o in zip(parts, own)]
            if g.kind == "certify":
                settings, radii = self.certification.settings(), self.config.certify.radii
                certified.append(certified_stats(g.defense, settings, radii, self.data.test_labels, parts))
                continue
            seconds = sum(float(p["seconds"]) for p in parts)
            setting = "whitebox" if g.bpda else MASKED  # (white-box kinds only)
            if g.kind == "perturbation":
                norm, fooled, clean = (torch.cat([p[k] for p in parts]) for k in ("norm", "fooled", "clean_correct"))
                perturbations.append(perturbation_stats(g.defense, g.attack, norm, fooled, clean, seconds, setting))
                continue
            l2, linf, l0 = (torch.cat([p[k] for p in parts]) for k in ("l2", "linf", "l0"))
            if g.kind == "blackbox":
                for defense in self.config.defenses:
                    correct = torch.cat([p["correct"][defense] for p in parts])
                    cells.append(_cell(defense, g.attack, "blackbox", g.eps, correct, l2, linf, l0, seconds))
            else:
                correct = torch.cat([p["correct"] for p in parts])
                cells.append(_cell(g.defense, g.attack, setting, g.eps, correct, l2, linf, l0, seconds))
        return cells, perturbations, certified

    def examples(
        self, count: int = 8
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor], str]:
        """The first `count` test images, their black-box adversarials, and the first defense's predictions."""
        chunk = self.chunks()[0]
        x, y = self.attacks.test_chunk(chunk)
        x, y = x[:count], y[:count]
        judge = self.models.get(self.config.defenses[0])
        adversarial, predictions = {}, {"clean": self.attacks.predict(judge, x)}
        for attack in self.config.blackbox_attacks:
            key = self.attacks.blackbox_key(attack, None, self.blackbox_chunks(attack)[0])
            entry = self.cache.load("blackbox", key)
            if entry is not None:
                adversarial[attack] = entry["x_adv"][:count].to(self.device)
                predictions[attack] = self.attacks.predict(judge, adversarial[attack])
        label = DEFENSE_LABELS[self.config.defenses[0]]
        title = f"predictions of {label} (green: correct); attacks crafted on the black-box source"
        return x, adversarial, y, predictions, title


def _either(kind: str, bpda: dict[str, Any], own: dict[str, Any]) -> dict[str, Any]:
    """One chunk's outcome against a defense attacked both through BPDA and through its own gradient, per image
    the attack that fools it: white-box, an image is correct only if neither fools it (its perturbation: the
    one that fooled, BPDA's where both or neither did); minimal perturbation, the smaller of those that fool."""
    seconds = float(bpda["seconds"]) + float(own["seconds"])
    if kind == "perturbation":
        fooled_b, fooled_o = bpda["fooled"], own["fooled"]
        norm = torch.where(fooled_o & ~(fooled_b & (bpda["norm"] <= own["norm"])), own["norm"], bpda["norm"])
        return {"norm": norm, "fooled": fooled_b | fooled_o, "clean_correct": bpda["clean_correct"], "seconds": seconds}
    only_own = bpda["correct"] & ~own["correct"]
    norms = {k: torch.where(only_own, own[k], bpda[k]) for k in ("l2", "linf", "l0")}
    return {"correct": bpda["correct"] & own["correct"], **norms, "seconds": seconds}


def _cell(defense, attack, setting, eps, correct, l2, linf, l0, seconds) -> Cell:
    return Cell(
        defense=defense,
        attack=attack,
        setting=setting,
        eps=eps,
        accuracy=100 * correct.float().mean().item(),
        samples=len(correct),
        mean_l2=l2.mean().item(),
        mean_linf=linf.mean().item(),
        mean_l0=l0.mean().item(),
        seconds=seconds,
    )


__all__ = ["ATTACK_LABELS", "Evaluation", "Unit"]
