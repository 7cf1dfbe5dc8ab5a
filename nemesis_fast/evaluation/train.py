"""The evaluation's training phase: every model it needs, trained once (shared out among the processes by
:mod:`nemesis_fast.parallel`) and cached under a key of all that determines its weights (architecture, recipe
and settings, training budget, data, seed)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._validation_rows import held_out_rows, training_rows
from ..checkpoints import save_checkpoint
from ..defenses import FeatureSqueezing, paper_settings
from ..defenses.recipes import Recipe, make_recipe
from ..models import build_model, builder_digest
from ..paper_models import DEFAULT_MODEL, PAPER_MODELS
from ..parallel import Job, Trained, Workers, train_models, training_cost
from ..training import train
from .cache import CachedCheckpoint, ResultCache
from .config import DEFENSE_LABELS, EvalConfig

Log = Callable[[str], None]
SOURCE = "resnet_source"
EXAMPLES_CNN = "fgsm_examples_cnn"  # the CNN of FGSM adversarial training's examples, where not the standard one
_LABELS = {SOURCE: "black-box source", EXAMPLES_CNN: "CNN of the FGSM training examples"}
_SPECS = {m.name: m for m in PAPER_MODELS}


class Models:
    """The trained models of one evaluation: the defenses and the black-box source, each from a cache or
    trained now, once, by one of the processes."""

    def __init__(
        self,
        config: EvalConfig,
        data: Any,
        cache: ResultCache,
        workers: Workers,
        *,
        log: Log,
        progress: bool,
    ) -> None:
        self.config, self.data, self.cache, self.workers = config, data, cache, workers
        self.device = workers.device
        self.log, self.progress = log, progress
        self.loaded: dict[str, nn.Module] = {}
        self.meta: dict[str, dict[str, Any]] = {}  # of each trained model: its training's seconds, val_accuracy
        self.seconds: dict[str, float] = {}
        self.prepared = False

    def _squeezes_standard(self, name: str) -> bool:
        """Feature squeezing in front of the standard model at prediction only (nothing trained of its own)."""
        return name == "feature_squeezing" and not self.config.defense.squeeze_training

    def squeeze_key(self, defense: str) -> dict[str, int]:
        """The squeeze bits, for the keys of the units of `defense` where it is feature squeezing (none for the
        others, whose outcomes do not depend on them)."""
        return {"squeeze_bits": self.config.squeeze_bits} if defense == "feature_squeezing" else {}

    def recipe(self, name: str) -> str:
        if name in (SOURCE, EXAMPLES_CNN, "feature_squeezing"):
            return "standard"
        return _SPECS[name].recipe

    def examples_source(self, name: str) -> str | None:
        """The model whose examples offline adversarial training of `name` appends (None: model `name` trains
        without one): the standard CNN, or for FGSM adversarial training with
        `defense.fgsm_adversarial_source_images` set, a CNN trained like it on the first images only."""
        if self._squeezes_standard(name) or not self._recipe(name).needs_source:
            return None
        if name == "fgsm_adversarial" and self.config.defense.fgsm_adversarial_source_images:
            return EXAMPLES_CNN
        return "standard"

    def architecture(self, name: str) -> tuple[str, dict[str, Any]]:
        """(builder name, its kwargs) of model `name` (for feature squeezing: of the model behind it)."""
        t = self.config.training
        channels, size = self.data.test_images.shape[1], self.data.test_images.shape[2]
        if name == SOURCE:
            if t.source_architecture == "small_resnet":
                return "small_resnet", {"in_channels": channels, "input_size": size}
            return "resnet", {"depth": t.source_depth, "in_channels": channels}
        activation = "relu" if name in ("feature_squeezing", EXAMPLES_CNN) else _SPECS[name].activation
        # (a ReLU model's t is unused: the default)
        kwargs = {"activation": activation, "t": self.config.defense.brelu_t if activation == "brelu" else 1.0}
        if self.config.training.cifar_conv2_padding != "valid":  # (where "valid", the keys written before stay valid)
            kwargs["conv2_padding"] = self.config.training.cifar_conv2_padding
        return DEFAULT_MODEL[self.config.dataset], kwargs

    def recipe_settings(self, recipe: str) -> dict[str, Any]:
        d = self.config.defense
        unset_is_default = {  # None: the recipe's default for the data set
            "gda": {"sigma": d.gda_sigma, "copies": d.gda_copies},
            "label_smoothing": {"confidence": d.label_smoothing},
            "fgsm_adversarial": {"eps": d.fgsm_adversarial_eps, "mode": d.fgsm_adversarial_mode},
            "vat": {"eps": d.vat_eps, "xi": d.vat_xi, "mode": d.vat_mode},
        }.get(recipe, {})
        chosen = {k: v for k, v in unset_is_default.items() if v is not None}
        if recipe == "gda":  # here None is a value: no clipping
            chosen.update(clip=(0.0, 1.0) if d.gda_clip else None, fixed_set=d.gda_fixed_set)
        return dataclasses.asdict(paper_settings(recipe, self.config.dataset, **chosen))

    def key(self, name: str) -> dict[str, Any]:
        """Everything that determines the weights of model `name` (for feature squeezing at prediction only:
        of the standard model behind it)."""
        if self._squeezes_standard(name):
            return self.key("standard")
        recipe = self.recipe(name)
        arch, kwargs = self.architecture(name)
        key = {
            "model": name,
            "architecture": arch,
            "architecture_kwargs": kwargs,
            "recipe": recipe,
            "recipe_settings": self.recipe_settings(recipe),
            "training": self._training(name),
            "data": self.data.identity,
            "seed": self.config.seed,
        }
        builder = builder_digest(arch)
        if builder is not None:  # (absent for the package's own builders: the keys written before stay valid)
            key["builder"] = builder
        if name == "feature_squeezing":
            key["squeeze_bits_in_training"] = self.config.squeeze_bits
        source = self.examples_source(name)
        if source is not None:
            key["source_model"] = self.key(source)
        return key

    def _training(self, name: str) -> dict[str, Any]:
        """The training settings of model `name`: the run's, with the source's own epochs (as "epochs") for the
        source, and the first images it trains on (as "first_images", where set) for the source and the CNN of the
        FGSM examples. `source_epochs` and `source_train_images` are left out of the key, and
        `augmented_validation` too where it is "images" or model `name` trains on the images alone (so that keys
        written before they existed stay valid)."""
        t = self.config.training
        training = dataclasses.asdict(t)
        source_epochs, source_images = training.pop("source_epochs"), training.pop("source_train_images")
        del training["cifar_conv2_padding"]  # in the key's architecture_kwargs, where it is not the default
        if name != SOURCE:  # the source's architecture, in its own key's architecture
            del training["source_architecture"], training["source_depth"]
        if name == SOURCE and source_epochs is not None:
            training["epochs"] = source_epochs
        first = {SOURCE: source_images, EXAMPLES_CNN: self.config.defense.fgsm_adversarial_source_images}.get(name)
        if first:
            training["first_images"] = first
        if training["augmented_validation"] == "images" or not self._trains_on_enlarged_set(name):
            del training["augmented_validation"]
        else:  # the last rows validate: where Keras' count of them differs from round(), which models trained
            # before held out, the key says so (and so is not the key of those models)
            total, fraction = training_rows(self._recipe(name), len(self.data.train_labels)), t.validation_fraction
            held = held_out_rows(total, fraction)
            if held != round(total * fraction):
                training["held_out_rows"] = held
        return training

    def _trains_on_enlarged_set(self, name: str) -> bool:
        """Whether model `name` trains on a fixed set larger than the images: GDA's fixed copies, or the
        examples of offline adversarial training."""
        if self._squeezes_standard(name):
            return False
        recipe = self._recipe(name)
        return recipe.needs_source or recipe.expansion() is not None

    def _recipe(self, name: str) -> Recipe:
        """The recipe object model `name` trains with (its settings, not its random state)."""
        recipe = self.recipe(name)
        return make_recipe(recipe, self.recipe_settings(recipe), dataset=self.config.dataset)

    def build(self, name: str) -> nn.Module:
        arch, kwargs = self.architecture(name)
        model = build_model(arch, **kwargs)
        return FeatureSqueezing(model, self.config.squeeze_bits, bpda=True) if name == "feature_squeezing" else model

    def get(self, name: str) -> nn.Module:
        """The trained model `name` (a defense or the black-box source), in eval mode on the device (trained or
        loaded by :meth:`prepare` first, which every process must call alike)."""
        if name not in self.loaded:
            if self._squeezes_standard(name):
                self._install(name, FeatureSqueezing(self.get("standard"), self.config.squeeze_bits, bpda=True))
            elif not self.prepared:
                self.prepare()
        if name not in self.loaded:
            raise KeyError(f"model {name!r} is not among those this evaluation trains ({', '.join(self.needed())})")
        return self.loaded[name]

    def cached(self, name: str) -> nn.Module | None:
        """The model `name` if its weights are in the cache (loaded, in eval mode on the device), else None;
        never trains (for a report of an unfinished run)."""
        if name in self.loaded:
            return self.loaded[name]
        if self._squeezes_standard(name):
            standard = self.cached("standard")
            if standard is None:
                return None
            return self._install(name, FeatureSqueezing(standard, self.config.squeeze_bits, bpda=True))
        stored = _CacheStore(self.cache, {name: self.key(name)}).load(name)
        if stored is None:
            return None
        self.meta[name] = stored[1]
        return self._install(name, self.build(name), stored[0])

    def _install(self, name: str, model: nn.Module, state: dict[str, torch.Tensor] | None = None) -> nn.Module:
        """Puts `model` (with the weights `state`, when given) in eval mode on the device as model `name`."""
        if state is not None:
            model.load_state_dict(state)
        self.loaded[name] = model.to(self.device).eval()
        return self.loaded[name]

    def cost(self, name: str) -> float:
        """The estimated cost of training model `name` (for sharing the training out among processes)."""
        key = self.key(name)
        (_, labels), validation = self._training_data(name)
        images = len(labels) if validation else round(len(labels) * (1 - self.config.training.validation_fraction))
        return training_cost(
            key["architecture"], key["architecture_kwargs"], key["recipe"], key["recipe_settings"], images
        )

    def jobs(self) -> list[Job]:
        """The models with weights of their own, their estimated costs and dependencies (for the schedule)."""
        names = [name for name in self.needed() if not self._squeezes_standard(name)]
        sources = {n: self.examples_source(n) for n in names}
        return [Job(n, self.cost(n), () if sources[n] is None else (sources[n],)) for n in names]

    def prepare(self, while_waiting: Callable[[Callable[[str], nn.Module | None]], bool] | None = None) -> None:
        """Every model the evaluation needs, on every process: read from the caches, or trained once, each by
        one process, and shared over torch.distributed (:func:`~nemesis_fast.parallel.train_models`).

        while_waiting: work for a process that has trained its share while others still train, called over and
        over with a function that gives the trained model of a name when this process holds it (else None);
        each call does a short piece of work and returns False when there is nothing (left) to do."""
        jobs = self.jobs()
        store = _CacheStore(self.cache, {job.name: self.key(job.name) for job in jobs})
        trained = train_models(
            jobs,
            self.workers,
            template=lambda name: self.build(name).state_dict(),
            train=self._train,
            store=store,
            log=self.log,
            while_waiting=None if while_waiting is None else lambda held: while_waiting(self._holding(held)),
        )
        for name, (state, meta) in trained.items():
            self._install(name, self.build(name), state)
            self.meta[name] = meta
            self.seconds[f"train {name}"] = float(meta["seconds"])
        self.prepared = True

    def save_checkpoints(self, folder: Path, test_accuracy: dict[str, float]) -> dict[str, Path]:
        """Every model with weights of its own (after :meth:`prepare`; else those the cache holds) as a checkpoint
        `<folder>/<name>.pt` (:func:`~nemesis_fast.checkpoints.save_checkpoint`: architecture, recipe and settings;
        as metrics its validation accuracy, the seconds of the process that finished its training
        ("training_seconds") and the test accuracy (a fraction) given for it). Feature squeezing in front of the
        standard model has no file of its own; the model trained on squeezed images is saved behind its squeezer
        (which load_checkpoint and `nemesis-fast certify` put back). Returns name -> path."""
        if not self.prepared:
            for name in self.needed():
                self.cached(name)
        paths = {}
        for name in self.meta:
            model = self.loaded[name]
            meta = self.meta[name]
            metrics = {"val_accuracy": meta.get("val_accuracy"), "training_seconds": meta.get("seconds")}
            if name in test_accuracy:
                metrics["test_accuracy"] = test_accuracy[name]
            recipe = self.recipe(name)
            path = folder / f"{name}.pt"
            save_checkpoint(path, model, recipe=recipe, settings=self.recipe_settings(recipe), metrics=metrics)
            paths[name] = path
        return paths

    def _holding(self, held: dict[str, Trained]) -> Callable[[str], nn.Module | None]:
        """The models of `held` (name -> (state, meta)), each built and installed when first asked for."""

        def model(name: str) -> nn.Module | None:
            if name not in self.loaded and name in held:
                self._install(name, self.build(name), held[name][0])
            return self.loaded.get(name)

        return model

    def needed(self) -> list[str]:
        """Every model to train, in an order where each comes after the models it needs."""
        c = self.config
        names = list(c.defenses) + ([SOURCE] if c.blackbox_attacks or c.blackbox_eps else [])
        sources = {self.examples_source(n) for n in names}
        needs_standard = "standard" in sources or any(self._squeezes_standard(n) for n in names)
        first = (["standard"] if needs_standard else []) + ([EXAMPLES_CNN] if EXAMPLES_CNN in sources else [])
        return first + [n for n in names if n != "standard" or not needs_standard]

    def budget(self, name: str) -> dict[str, Any]:
        """The arguments of :func:`nemesis_fast.train` for model `name` (dataset, epochs: the source's own where
        the config gives them, batch, learning rate, validation fraction and rows, patience, seed, device, mixed
        precision, compile)."""
        t = self.config.training
        return {
            "dataset": self.config.dataset,
            "epochs": self._training(name)["epochs"],
            "batch_size": t.batch_size,
            "lr": t.learning_rate,
            "val_fraction": t.validation_fraction,
            "val_rows": "last" if "augmented_validation" in self._training(name) else "images",
            "patience": t.patience,
            "seed": self.config.seed,
            "device": self.device,
            "amp": t.amp,
            "compile": t.compile,
        }

    def _training_data(self, name: str) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, Any]]:
        """((images, labels) model `name` trains on, the validation arguments of :func:`nemesis_fast.train` that
        replace its budget's): the training set, or for a model trained on the first images only, those
        images with the last validation fraction of them held out, unshuffled."""
        data = (self.data.train_images, self.data.train_labels)
        first = self._training(name).get("first_images")
        if not first:
            return data, {}
        held = round(first * self.config.training.validation_fraction)
        x, y = data[0][:first], data[1][:first]
        val_data = (x[first - held :], y[first - held :]) if held else None
        return (x[: first - held], y[: first - held]), {"val_fraction": 0.0, "val_rows": "images", "val_data": val_data}

    def _train(self, name: str, needs: dict[str, dict[str, torch.Tensor]]) -> Trained:
        """Trains model `name` on this process (resuming from its checkpoint in the cache), given the state dicts
        of the models it needs; returns its state dict on the CPU and its metadata."""
        key = self.key(name)
        torch.manual_seed(self.config.seed)
        model = self.build(name)
        recipe = key["recipe"]
        source = None
        for need, state in needs.items():  # at most one: the model whose examples offline training appends
            source = self.build(need)
            source.load_state_dict(state)
            source = source.to(self.device).eval()
        label = _LABELS.get(name) or DEFENSE_LABELS[name]
        arch = key["architecture"]
        data, validation = self._training_data(name)
        budget = {**self.budget(name), **validation}
        self.log(f"training {label} ({arch}, recipe {recipe}) on {len(data[1])} images")
        started = time.perf_counter()
        result = train(
            model,
            data,
            recipe,
            settings=key["recipe_settings"],
            **budget,
            source_model=source,
            checkpoint=CachedCheckpoint(self.cache, key),
            progress=self.progress,
            log=self.log,
        )
        seconds = time.perf_counter() - started  # of this process only, when it resumed an earlier one's training
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        return state, {"seconds": seconds, "val_accuracy": result.val_accuracy}


class _CacheStore:
    """The evaluation's cache as the training's store: each model under its key; a model's training checkpoint
    is discarded once the model is saved."""

    def __init__(self, cache: ResultCache, keys: dict[str, dict[str, Any]]) -> None:
        self.cache, self.keys = cache, keys

    def load(self, name: str) -> Trained | None:
        entry = self.cache.load("model", self.keys[name])
        if entry is None:
            return None
        return entry["state_dict"], {k: v for k, v in entry.items() if k not in ("state_dict", "settings")}

    def save(self, name: str, state: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        self.cache.save("model", self.keys[name], {"state_dict": state, **meta})
        CachedCheckpoint(self.cache, self.keys[name]).discard()

    def exists(self, name: str) -> bool:
        return self.cache.has("model", self.keys[name])

    def resumable(self, name: str) -> bool:
        return self.cache.has("training", self.keys[name])
