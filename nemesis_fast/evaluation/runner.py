"""The evaluation itself: train or load the models, craft the attacks, measure accuracy, gather the shards.

Work is cut into chunks of `batch_size` test images. Each chunk's random draws (R+FGSM's noise, JSMA's
targets) are seeded by the chunk's index alone, and every chunk's outcome is cached under a key of its
settings, so the numbers do not depend on how many processes share the work, and a run that is interrupted
continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..attacks import FGSM, JSMA, CarliniWagnerL2, DeepFool, RandFGSM
from ..attacks.base import Attack, perturbation_norms
from ..bench.harness import device_name
from ..data import load_cifar10, load_mnist
from ..data.mnist import MNIST_SAMPLE_DIR
from ..defenses import FeatureSqueezing, paper_settings
from ..models import build_model, resnet
from ..training import DEFAULT_MODEL, PAPER_MODELS, evaluate_accuracy, train
from .cache import ResultCache, settings_key
from .config import ATTACK_LABELS, DEFENSE_LABELS, ConfigError, EvalConfig
from .distributed import Workers
from .report import Cell, Results

Log = Callable[[str], None]
_SPECS = {m.name: m for m in PAPER_MODELS}
SOURCE = "resnet_source"


@dataclass
class Dataset:
    train_images: torch.Tensor  # uint8 (N, C, H, W)
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    identity: dict[str, Any]  # what determines the data, for cache keys
    description: str


def load_data(config: EvalConfig) -> Dataset:
    """The training and test sets the config names (the shipped MNIST sample when no data_dir is given)."""
    if config.synthetic:
        generator = torch.Generator().manual_seed(config.seed)
        shape = (3, 32, 32) if config.dataset == "cifar10" else (1, 28, 28)
        sizes = {"train": 50_000 if config.dataset == "cifar10" else 60_000, "test": 10_000}
        train_x = torch.randint(0, 256, (sizes["train"], *shape), dtype=torch.uint8, generator=generator)
        test_x = torch.randint(0, 256, (sizes["test"], *shape), dtype=torch.uint8, generator=generator)
        train_y = torch.randint(0, 10, (sizes["train"],), generator=generator)
        test_y = torch.randint(0, 10, (sizes["test"],), generator=generator)
        description = f"synthetic {config.dataset}-shaped data (random pixels and labels: a throughput run)"
        source = "synthetic"
    else:
        root = Path(config.data_dir).expanduser() if config.data_dir else MNIST_SAMPLE_DIR
        loader = load_mnist if config.dataset == "mnist" else load_cifar10
        try:
            train_x, train_y = loader(root, "train")
            test_x, test_y = loader(root, "test")
        except FileNotFoundError as error:
            raise ConfigError(f"data_dir: {error}") from error
        source = str(root.resolve())
        description = f"{config.dataset} from {root}" + (
            " (the sample shipped with nemesis_fast)" if not config.data_dir else ""
        )
    if config.training.train_samples:
        train_x, train_y = train_x[: config.training.train_samples], train_y[: config.training.train_samples]
    if config.test_samples:
        test_x, test_y = test_x[: config.test_samples], test_y[: config.test_samples]
    identity = {"dataset": config.dataset, "source": source, "train": len(train_y), "test": len(test_y)}
    return Dataset(train_x, train_y, test_x, test_y, identity, description)


def _progress(items: list, description: str, enabled: bool) -> Iterable:
    if enabled:
        try:
            from tqdm import tqdm

            return tqdm(items, desc=description, leave=False, file=sys.stderr)
        except ImportError:
            pass
    return items


class Evaluation:
    """One evaluation run on one process of `workers` (all processes run the same code)."""

    def __init__(self, config: EvalConfig, workers: Workers, *, log: Log, progress: bool) -> None:
        self.config = config
        self.workers = workers
        self.device = workers.device
        self.log = log if workers.is_main else (lambda message: None)
        self.progress = progress and workers.is_main
        out = Path(config.out_dir).expanduser()
        self.cache = ResultCache(Path(config.cache_dir).expanduser() if config.cache_dir else out / "cache")
        self.data = load_data(config)
        self.models: dict[str, nn.Module] = {}
        self.seconds: dict[str, float] = {}
        self.chunks = [
            (start, min(start + config.batch_size, len(self.data.test_labels)))
            for start in range(0, len(self.data.test_labels), config.batch_size)
        ]

    # ------------------------------------------------------------------------------------------- models

    def _architecture(self, name: str) -> tuple[str, dict[str, Any]]:
        channels = self.data.test_images.shape[1]
        if name == SOURCE:
            return "resnet", {"depth": self.config.training.source_depth, "in_channels": channels}
        activation = _SPECS[name].activation
        return DEFAULT_MODEL[self.config.dataset], {"activation": activation, "t": self.config.defense.brelu_t}

    def _recipe_settings(self, recipe: str) -> dict[str, Any]:
        d = self.config.defense
        chosen = {
            "gda": {"sigma": d.gda_sigma, "copies": d.gda_copies},
            "label_smoothing": {"confidence": d.label_smoothing},
            "fgsm_adversarial": {"eps": d.fgsm_adversarial_eps},
            "vat": {"eps": d.vat_eps, "xi": d.vat_xi},
        }.get(recipe, {})
        settings = paper_settings(recipe, self.config.dataset, **{k: v for k, v in chosen.items() if v is not None})
        return dataclasses.asdict(settings)

    def _model_key(self, name: str) -> dict[str, Any]:
        recipe = "standard" if name == SOURCE else _SPECS[name].recipe
        arch, kwargs = self._architecture(name)
        key = {
            "model": name,
            "architecture": arch,
            "architecture_kwargs": kwargs,
            "recipe": recipe,
            "recipe_settings": self._recipe_settings(recipe),
            "training": dataclasses.asdict(self.config.training),
            "data": self.data.identity,
            "seed": self.config.seed,
        }
        if recipe in ("fgsm_adversarial", "vat") and key["recipe_settings"].get("mode") == "offline":
            key["source_model"] = self._model_key("standard")
        return key

    def model(self, name: str) -> nn.Module:
        """The trained model `name` (a defense or the black-box source), from the cache or trained now."""
        if name in self.models:
            return self.models[name]
        if name == "feature_squeezing":
            model = FeatureSqueezing(self.model("standard"), self.config.squeeze_bits, bpda=True)
        else:
            key = self._model_key(name)
            entry = self.cache.load("model", key)
            if entry is None:
                if self.workers.is_main:
                    self._train(name, key)
                self.workers.barrier()
                entry = self.cache.load("model", key)
                if entry is None:
                    raise RuntimeError(f"process {self.workers.rank} cannot read the model {name} trained by process 0")
            arch, kwargs = self._architecture(name)
            model = resnet(**kwargs) if arch == "resnet" else build_model(arch, **kwargs)
            model.load_state_dict(entry["state_dict"])
            self.seconds[f"train {name}"] = float(entry["seconds"])
        model = model.to(self.device).eval()
        self.models[name] = model
        return model

    def _train(self, name: str, key: dict[str, Any]) -> None:
        t = self.config.training
        arch, kwargs = self._architecture(name)
        torch.manual_seed(self.config.seed)
        model = resnet(**kwargs) if arch == "resnet" else build_model(arch, **kwargs)
        recipe = key["recipe"]
        source = self.model("standard") if "source_model" in key else None
        label = "black-box source ResNet" if name == SOURCE else DEFENSE_LABELS[name]
        self.log(f"training {label} ({arch}, recipe {recipe}) on {len(self.data.train_labels)} images")
        started = time.perf_counter()
        result = train(
            model,
            (self.data.train_images, self.data.train_labels),
            recipe,
            settings=key["recipe_settings"],
            dataset=self.config.dataset,
            epochs=t.epochs,
            batch_size=t.batch_size,
            lr=t.learning_rate,
            val_fraction=t.validation_fraction,
            patience=t.patience,
            seed=self.config.seed,
            device=self.device,
            amp=t.amp,
            compile=t.compile,
            source_model=source,
            progress=self.progress,
            log=self.log,
        )
        seconds = time.perf_counter() - started
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        self.cache.save("model", key, {"state_dict": state, "seconds": seconds, "val_accuracy": result.val_accuracy})

    # ------------------------------------------------------------------------------------------ attacks

    def make_attack(self, attack: str, model: nn.Module, seed: int, eps: float | None = None) -> Attack:
        a = self.config.attack
        if attack == "fgsm":
            return FGSM(model, a.fgsm_eps if eps is None else eps)
        if attack == "rfgsm":
            eps = a.rfgsm_eps if eps is None else eps
            alpha = a.rfgsm_alpha * (eps / a.rfgsm_eps) if a.rfgsm_eps > 0 else 0.0  # keep alpha / eps fixed
            return RandFGSM(model, eps, min(alpha, eps), seed=seed)
        if attack == "deepfool":
            return DeepFool(model, a.deepfool_max_iter, a.deepfool_overshoot, a.deepfool_candidates)
        if attack == "jsma":
            return JSMA(model, a.jsma_theta, a.jsma_gamma, seed=seed)
        return CarliniWagnerL2(
            model,
            confidence=a.cw_confidence,
            initial_const=a.cw_initial_const,
            binary_search_steps=a.cw_binary_search_steps,
            max_iter=a.cw_max_iter,
            learning_rate=a.cw_learning_rate,
        )

    def _attack_settings(self, attack: str) -> dict[str, Any]:
        prefix = {"fgsm": "fgsm_", "rfgsm": "rfgsm_", "deepfool": "deepfool_", "jsma": "jsma_", "cw": "cw_"}[attack]
        return {k: v for k, v in dataclasses.asdict(self.config.attack).items() if k.startswith(prefix)}

    def _chunk_seed(self, attack: str, chunk: int) -> int:
        return int(settings_key("seed", {"seed": self.config.seed, "attack": attack, "chunk": chunk}), 16) % (2**62)

    def _test_chunk(self, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
        start, stop = self.chunks[chunk]
        x = self.data.test_images[start:stop].to(self.device).float().div_(255)
        return x, self.data.test_labels[start:stop].to(self.device)

    def _predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x).argmax(1)

    def blackbox_chunk(self, attack: str, chunk: int) -> dict[str, Any]:
        """Adversarial images of `chunk` crafted on the source model (cached), and every defense's verdict."""
        key = {
            "attack": attack,
            "settings": self._attack_settings(attack),
            "source": self._model_key(SOURCE),
            "chunk": self.chunks[chunk],
            "seed": self.config.seed,
        }
        x, y = self._test_chunk(chunk)
        entry = self.cache.load("blackbox", key)
        if entry is None:
            started = time.perf_counter()
            result = self.make_attack(attack, self.model(SOURCE), self._chunk_seed(attack, chunk)).run(x, y)
            entry = {
                "x_adv": result.x_adv.cpu(),
                "l2": result.l2.float().cpu(),
                "linf": result.linf.float().cpu(),
                "l0": result.l0.float().cpu(),
                "seconds": time.perf_counter() - started,
            }
            self.cache.save("blackbox", key, entry)
        x_adv = entry["x_adv"].to(self.device)
        correct = {d: (self._predict(self.model(d), x_adv) == y).cpu() for d in self.config.defenses}
        return {**{k: entry[k] for k in ("l2", "linf", "l0", "seconds")}, "correct": correct}

    def whitebox_chunk(self, defense: str, attack: str, eps: float, chunk: int, *, bpda: bool = True) -> dict[str, Any]:
        """Accuracy of `defense` on `chunk` under `attack` crafted on the defense itself (cached)."""
        key = {
            "defense": self._model_key("standard" if defense == "feature_squeezing" else defense),
            "defense_name": defense,
            "bpda": bpda,
            "squeeze_bits": self.config.squeeze_bits,
            "attack": attack,
            "eps": eps,
            "settings": self._attack_settings(attack),
            "chunk": self.chunks[chunk],
            "seed": self.config.seed,
        }
        entry = self.cache.load("whitebox", key)
        if entry is None:
            model = self.model(defense)
            if not bpda:
                model = FeatureSqueezing(self.model("standard"), self.config.squeeze_bits, bpda=False).to(self.device)
            x, y = self._test_chunk(chunk)
            started = time.perf_counter()
            x_adv = self.make_attack(attack, model, self._chunk_seed(attack, chunk), eps).run(x, y).x_adv
            l0, l2, linf = perturbation_norms(x_adv, x)
            entry = {
                "correct": (self._predict(model, x_adv) == y).cpu(),
                "l2": l2.float().cpu(),
                "linf": linf.float().cpu(),
                "l0": l0.float().cpu(),
                "seconds": time.perf_counter() - started,
            }
            self.cache.save("whitebox", key, entry)
        return entry

    # --------------------------------------------------------------------------------------------- run

    def _work(self) -> list[tuple]:
        """Every (kind, ...) unit of work, in a fixed order; each process takes its chunks' share."""
        c = self.config
        units: list[tuple] = [("blackbox", a, k) for a in c.blackbox_attacks for k in range(len(self.chunks))]
        for defense in c.defenses:
            for attack in c.whitebox_attacks:
                for eps in c.whitebox_eps:
                    units += [("whitebox", defense, attack, eps, True, k) for k in range(len(self.chunks))]
                    if defense == "feature_squeezing":
                        units += [("whitebox", defense, attack, eps, False, k) for k in range(len(self.chunks))]
        return units

    def _models_needed(self) -> list[str]:
        """Every model to train, in an order where each comes after the models it needs."""
        names = list(self.config.defenses) + ([SOURCE] if self.config.blackbox_attacks else [])
        needs_standard = any(
            n == "feature_squeezing" or (n != SOURCE and "source_model" in self._model_key(n)) for n in names
        )
        return (["standard"] if needs_standard else []) + [n for n in names if n != "standard" or not needs_standard]

    def run(self) -> Results:
        started = time.perf_counter()
        for name in self._models_needed():  # the same order everywhere: training runs once, on process 0
            self.model(name)
        self.seconds["training (cached or run)"] = time.perf_counter() - started
        clean = {
            d: 100 * evaluate_accuracy(self.models[d], self.data.test_images, self.data.test_labels, device=self.device)
            for d in self.config.defenses
        }
        units = self._work()
        mine = [u for u in units if u[-1] % self.workers.world_size == self.workers.rank]
        images, chunks = len(self.data.test_labels), len(self.chunks)
        self.log(f"attacking {images} test images in {chunks} chunks: {len(units)} units of work")
        attack_started = time.perf_counter()
        outcomes = {}
        for unit in _progress(mine, "attacks", self.progress):
            if unit[0] == "blackbox":
                outcomes[unit] = self.blackbox_chunk(unit[1], unit[2])
            else:
                outcomes[unit] = self.whitebox_chunk(unit[1], unit[2], unit[3], unit[5], bpda=unit[4])
        gathered: dict[tuple, dict[str, Any]] = {}
        for part in self.workers.gather(outcomes):
            gathered.update(part)
        self.seconds["attacks"] = time.perf_counter() - attack_started
        results = Results(
            config=self.config.to_dict(),
            version=__version__,
            device=device_name(self.device),
            world_size=self.workers.world_size,
            clean_accuracy=clean,
            cells=self._cells(units, gathered),
            seconds={**self.seconds, "total": time.perf_counter() - started},
        )
        return results

    def _cells(self, units: list[tuple], outcomes: dict[tuple, dict[str, Any]]) -> list[Cell]:
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for unit in units:  # in chunk order, whichever process computed it
            groups.setdefault(unit[:-1], []).append(outcomes[unit])
        cells = []
        for group, parts in groups.items():
            l2, linf, l0 = (torch.cat([p[k] for p in parts]) for k in ("l2", "linf", "l0"))
            seconds = sum(float(p["seconds"]) for p in parts)
            if group[0] == "blackbox":
                for defense in self.config.defenses:
                    correct = torch.cat([p["correct"][defense] for p in parts])
                    cells.append(_cell(defense, group[1], "blackbox", None, correct, l2, linf, l0, seconds))
            else:
                _, defense, attack, eps, bpda = group
                setting = "whitebox" if bpda else "whitebox-gradient-masking"
                correct = torch.cat([p["correct"] for p in parts])
                cells.append(_cell(defense, attack, setting, eps, correct, l2, linf, l0, seconds))
        return cells

    def examples(
        self, count: int = 8
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor, dict[str, torch.Tensor], str]:
        """The first `count` test images, their black-box adversarials, and the first defense's predictions."""
        x, y = self._test_chunk(0)
        x, y = x[:count], y[:count]
        judge = self.config.defenses[0]
        adversarial, predictions = {}, {"clean": self._predict(self.model(judge), x)}
        for attack in self.config.blackbox_attacks:
            key = {
                "attack": attack,
                "settings": self._attack_settings(attack),
                "source": self._model_key(SOURCE),
                "chunk": self.chunks[0],
                "seed": self.config.seed,
            }
            entry = self.cache.load("blackbox", key)
            if entry is not None:
                adversarial[attack] = entry["x_adv"][:count].to(self.device)
                predictions[attack] = self._predict(self.model(judge), adversarial[attack])
        title = f"predictions of {DEFENSE_LABELS[judge]} (green: correct); attacks crafted on the ResNet source"
        return x, adversarial, y, predictions, title


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


__all__ = ["ATTACK_LABELS", "Dataset", "Evaluation", "load_data"]
