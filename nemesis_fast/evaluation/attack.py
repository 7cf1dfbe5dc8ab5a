"""The evaluation's attack phase: the attacks as the config sets them, and the work on one chunk of test images
(black-box transfer, white-box accuracy, white-box minimal perturbation), each cached under a key of its
settings, the chunk's bounds and a digest of its images and labels.

A chunk's random draws (R+FGSM's noise, JSMA's targets, PGD's starts) are seeded by the chunk's bounds, the
attack and the run's seed, as the cache key is: the numbers do not depend on how many processes share the work,
and an entry is never reused under another seed. They do depend on the chunks' bounds, so on `batch_size`: another
batch size draws other noise, targets and starts for an image (the same distribution: a cell moves within its
sampling error).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch import nn

from ..attacks import FGSM, JSMA, PGD, CarliniWagnerL2, DeepFool, RandFGSM
from ..attacks.base import Attack
from ..attacks.norms import perturbation_norms
from ..data.loader import to_float
from ..defenses import FeatureSqueezing
from ..nn import with_relu_gradient
from .cache import ResultCache, settings_key
from .config import EvalConfig
from .train import SOURCE, Models

Chunk = tuple[int, int]
GradientKey = tuple[str, bool, Chunk]  # (the model's name: a defense or the source, bpda, chunk)
PERTURBATION_NORM = {"deepfool": "l2", "cw": "l2", "jsma": "l0"}


def attack_settings(config: EvalConfig, attack: str) -> dict[str, Any]:
    """The config's `<attack>_*` settings that determine the attack's outcome on a chunk, for its units' keys:
    not `<attack>_test_samples`, which says only how many test images it attacks."""
    return {k: v for k, v in all_attack_settings(config, attack).items() if not k.endswith("_test_samples")}


def all_attack_settings(config: EvalConfig, attack: str) -> dict[str, Any]:
    """The config's `<attack>_*` settings."""
    prefix = f"{attack}_"
    return {k: v for k, v in dataclasses.asdict(config.attack).items() if k.startswith(prefix)}


class SweptFGSM(FGSM):
    """FGSM whose loss gradient at a chunk's images is taken once and kept in `gradients` under `key`: the gradient
    does not depend on eps, so the units of an eps sweep on one model and chunk step along the same one."""

    def __init__(self, model: nn.Module, eps: float, *, labels: str, gradients: dict, key: GradientKey) -> None:
        super().__init__(model, eps, labels=labels)
        self.gradients, self.key = gradients, key

    def loss_gradient(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.key not in self.gradients:
            self.gradients[self.key] = super().loss_gradient(x, labels)
        return self.gradients[self.key]


class Attacks:
    """Builds the attacks of `config` and runs them chunk by chunk against the models of `models`."""

    def __init__(self, config: EvalConfig, data: Any, models: Models, cache: ResultCache) -> None:
        self.config, self.data, self.models, self.cache = config, data, models, cache
        self.device = models.device
        self._relu_gradient: dict[str, nn.Module] = {}  # BReLU defenses with ReLU's gradient (BPDA)
        self._fgsm_gradients: dict[GradientKey, tuple[torch.Tensor, torch.Tensor]] = {}  # see SweptFGSM

    def eps(self, attack: str, eps: float | None) -> float | None:
        """The budget of `attack`: `eps`, or the config's for FGSM and R+FGSM when None; None for the others (PGD,
        white-box only, is always given its eps)."""
        if attack in ("fgsm", "rfgsm") and eps is None:
            return getattr(self.config.attack, f"{attack}_eps")
        return eps

    def make(
        self, attack: str, model: nn.Module, seed: int, eps: float | None = None, *, confidence: float | None = None
    ) -> Attack:
        """`attack` on `model` with the config's settings; eps: FGSM, R+FGSM and PGD's budget (None: the config's);
        confidence: C&W's (None: the config's)."""
        a = self.config.attack
        eps = self.eps(attack, eps)
        if attack == "fgsm":
            return FGSM(model, eps, labels=a.fgsm_labels)
        if attack == "rfgsm":
            if a.rfgsm_alpha_fixed:
                alpha = a.rfgsm_alpha
            else:  # alpha / eps as set
                alpha = a.rfgsm_alpha * (eps / a.rfgsm_eps) if a.rfgsm_eps > 0 else 0.0
            return RandFGSM(model, eps, min(alpha, eps), labels=a.rfgsm_labels, seed=seed)
        if attack == "pgd":
            if eps is None:
                raise ValueError("pgd: an eps must be given (the config has none for it: it runs over whitebox_eps)")
            step = a.pgd_step_ratio * eps / a.pgd_steps
            return PGD(model, eps, step, a.pgd_steps, restarts=a.pgd_restarts, seed=seed)
        if attack == "deepfool":
            return DeepFool(model, a.deepfool_max_iter, a.deepfool_overshoot, a.deepfool_candidates)
        if attack == "jsma":
            return JSMA(model, a.jsma_theta, a.jsma_gamma, use_logits=a.jsma_use_logits, seed=seed)
        if attack != "cw":
            raise ValueError(f"the evaluation has no attack {attack!r}")
        return CarliniWagnerL2(
            model,
            confidence=a.cw_confidence if confidence is None else confidence,
            initial_const=a.cw_initial_const,
            binary_search_steps=a.cw_binary_search_steps,
            max_iter=a.cw_max_iter,
            learning_rate=a.cw_learning_rate,
        )

    def _make_on_chunk(
        self, attack: str, model: nn.Module, chunk: Chunk, eps: float | None, name: str, bpda: bool = True
    ) -> Attack:
        """`attack` on `model` (the defense or source `name`, through BPDA or not) for the images of `chunk`:
        FGSM as :class:`SweptFGSM`, whose gradients are kept for `name`'s models only."""
        if attack != "fgsm":
            return self.make(attack, model, self.seed(attack, chunk), eps)
        for key in [k for k in self._fgsm_gradients if k[0] != name]:
            del self._fgsm_gradients[key]
        labels, gradients = self.config.attack.fgsm_labels, self._fgsm_gradients
        return SweptFGSM(model, self.eps(attack, eps), labels=labels, gradients=gradients, key=(name, bpda, chunk))

    def cost(self, attack: str) -> float:
        """Estimated work of `attack` per image, in FGSM steps (one forward and backward pass), for sharing the
        units out among processes. Measured on the `paper` preset's MNIST run (one CPU thread per process):
        PGD 0.7 per step and restart, DeepFool about 7 iterations of every candidate's gradient, JSMA 17 at
        gamma 1, C&W 0.8 per iteration (early abort) of every binary-search step."""
        a = self.config.attack
        if attack == "pgd":
            return 0.7 * a.pgd_steps * a.pgd_restarts
        if attack == "deepfool":
            return float(a.deepfool_candidates * min(a.deepfool_max_iter, 7))
        if attack == "jsma":
            return 17.0 * a.jsma_gamma
        if attack == "cw":
            return 0.8 * a.cw_binary_search_steps * a.cw_max_iter
        if attack in ("fgsm", "rfgsm"):
            return 1.0
        raise ValueError(f"the evaluation has no attack {attack!r}")

    def settings(self, attack: str) -> dict[str, Any]:
        return attack_settings(self.config, attack)

    def seed(self, attack: str, chunk: Chunk) -> int:
        key = {"seed": self.config.seed, "attack": attack, "chunk": list(chunk)}
        return int(settings_key("seed", key), 16) % (2**62)

    def test_chunk(self, chunk: Chunk) -> tuple[torch.Tensor, torch.Tensor]:
        start, stop = chunk
        x = to_float(self.data.test_images[start:stop].to(self.device))
        return x, self.data.test_labels[start:stop].to(self.device)

    def predict(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x).argmax(1)

    def blackbox_key(self, attack: str, eps: float | None, chunk: Chunk) -> dict[str, Any]:
        return {
            "attack": attack,
            "eps": self.eps(attack, eps),
            "settings": self.settings(attack),
            "source": self.models.key(SOURCE),
            "chunk": list(chunk),
            "test_images": self.data.test_digest(*chunk),
            "seed": self.config.seed,
        }

    def verdict_key(self, attack: str, eps: float | None, chunk: Chunk) -> dict[str, Any]:
        """The key of a black-box unit's verdicts: its adversarial images' key and the judging defenses."""
        judges = {d: {**self.models.key(d), "name": d, **self.models.squeeze_key(d)} for d in self.config.defenses}
        return {**self.blackbox_key(attack, eps, chunk), "defenses": judges}

    def blackbox(self, attack: str, eps: float | None, chunk: Chunk) -> dict[str, Any]:
        """Adversarial images of `chunk` crafted on the source model (cached: "blackbox"), and every defense's
        verdict on them (cached apart: "verdict", a few kB, so that the verdicts can be kept where the
        adversarial images, 4 bytes a pixel, cannot)."""
        verdict_key = self.verdict_key(attack, eps, chunk)
        verdict = self.cache.load("verdict", verdict_key)
        if verdict is not None:
            return verdict
        _, y = self.test_chunk(chunk)
        entry = self.adversarial(attack, eps, chunk)
        x_adv = entry["x_adv"].to(self.device)
        correct = {d: (self.predict(self.models.get(d), x_adv) == y).cpu() for d in self.config.defenses}
        verdict = {**{k: entry[k] for k in ("l2", "linf", "l0", "seconds")}, "correct": correct}
        self.cache.save("verdict", verdict_key, verdict)
        return verdict

    def adversarial(self, attack: str, eps: float | None, chunk: Chunk) -> dict[str, Any]:
        """The adversarial images of `chunk` crafted on the source model, from the cache ("blackbox") or crafted
        now and cached: x_adv (B, C, H, W) on the CPU, their l2, linf and l0 distances (B,), the seconds taken."""
        key = self.blackbox_key(attack, eps, chunk)
        entry = self.cache.load("blackbox", key)
        if entry is None:
            x, y = self.test_chunk(chunk)
            started = time.perf_counter()
            # The attack's call, not its run(): the source's predictions on its own examples are never read.
            x_adv = self._make_on_chunk(attack, self.models.get(SOURCE), chunk, eps, SOURCE)(x, y)
            l0, l2, linf = perturbation_norms(x_adv, x)
            entry = {
                "x_adv": x_adv.cpu(),
                "l2": l2.float().cpu(),
                "linf": linf.float().cpu(),
                "l0": l0.float().cpu(),
                "seconds": time.perf_counter() - started,
            }
            self.cache.save("blackbox", key, entry)
        return entry

    def has_bpda(self, defense: str) -> bool:
        """Whether `defense` has a part whose own gradient hides the input's influence, so that white-box attacks
        differentiate through an approximation (BPDA, Athalye, Carlini, Wagner 2018): feature squeezing's
        rounding (zero gradient almost everywhere; the straight-through gradient) or BoundedReLU's upper bound
        (zero gradient wherever a unit saturates; ReLU's gradient). Such a defense is attacked both ways: its
        table rows count an image as fooled when either attack fools it; the rows labelled gradient masking
        show the attacks through its own gradient alone."""
        return defense == "feature_squeezing" or self._has_brelu(defense)

    def _has_brelu(self, defense: str) -> bool:
        return self.models.architecture(defense)[1].get("activation") == "brelu"

    def target(self, defense: str, bpda: bool = True) -> nn.Module:
        """The model a white-box attack differentiates; its outputs are the defense's. With bpda (and for every
        defense without a BPDA variant): feature squeezing through the straight-through gradient, a BReLU model
        through ReLU's gradient; without: the defense's own gradient."""
        model = self.models.get(defense)
        if isinstance(model, FeatureSqueezing) and not bpda:
            return FeatureSqueezing(model.model, self.config.squeeze_bits, bpda=False).to(self.device)
        if bpda and self._has_brelu(defense):
            if defense not in self._relu_gradient:
                self._relu_gradient[defense] = with_relu_gradient(model)
            return self._relu_gradient[defense]
        return model

    def whitebox_key(self, defense: str, attack: str, chunk: Chunk, bpda: bool = True, **extra: Any) -> dict[str, Any]:
        """Everything that determines a white-box unit: the defense's weights, the attack's settings, the chunk,
        the gradient attacked. "bpda" holds feature squeezing's choice (True for every other defense); a BReLU
        model attacked through ReLU's gradient has "brelu_gradient": "relu" besides, so that the entries of its
        own gradient keep the keys they had before BPDA came to BReLU models."""
        brelu = self._has_brelu(defense)
        return {
            "defense": self.models.key(defense),
            "defense_name": defense,
            "bpda": bpda or brelu,
            **self.models.squeeze_key(defense),
            "attack": attack,
            **({"brelu_gradient": "relu"} if brelu and bpda else {}),
            **extra,
            "settings": self.settings(attack),
            "chunk": list(chunk),
            "test_images": self.data.test_digest(*chunk),
            "seed": self.config.seed,
        }

    def whitebox(self, defense: str, attack: str, eps: float, chunk: Chunk, *, bpda: bool = True) -> dict[str, Any]:
        """Accuracy of `defense` on `chunk` under `attack` crafted on the defense itself (cached), through BPDA
        (bpda, the default) or through its own gradient where the defense has a BPDA variant (:meth:`has_bpda`)."""
        key = self.whitebox_key(defense, attack, chunk, bpda, eps=eps)
        entry = self.cache.load("whitebox", key)
        if entry is None:
            model = self.target(defense, bpda)
            x, y = self.test_chunk(chunk)
            started = time.perf_counter()
            # run() classifies its examples with `model` and measures them: their predictions and norms, not again.
            result = self._make_on_chunk(attack, model, chunk, eps, defense, bpda).run(x, y)
            entry = {
                "correct": (result.predictions == y).cpu(),
                "l2": result.l2.float().cpu(),
                "linf": result.linf.float().cpu(),
                "l0": result.l0.float().cpu(),
                "seconds": time.perf_counter() - started,
            }
            self.cache.save("whitebox", key, entry)
        return entry

    def perturbation_key(self, defense: str, attack: str, chunk: Chunk, bpda: bool = True) -> dict[str, Any]:
        """The key of a minimal-perturbation unit: a white-box key, with C&W's confidence for this figure."""
        extra = {"confidence": self.config.perturbation_confidence} if attack == "cw" else {}
        return self.whitebox_key(defense, attack, chunk, bpda, **extra)

    def perturbation(self, defense: str, attack: str, chunk: Chunk, *, bpda: bool = True) -> dict[str, Any]:
        """The white-box minimal perturbation of `attack` against `defense` on `chunk` (cached): per image the
        norm (L2 for DeepFool and C&W, L0 for JSMA) of the adversarial found, whether it fools the defense, and
        whether the defense classified the clean image correctly. bpda: as for :meth:`whitebox`."""
        key = self.perturbation_key(defense, attack, chunk, bpda)
        entry = self.cache.load("perturbation", key)
        if entry is None:
            model = self.models.get(defense)
            x, y = self.test_chunk(chunk)
            started = time.perf_counter()
            confidence = self.config.perturbation_confidence if attack == "cw" else None
            attacker = self.make(attack, self.target(defense, bpda), self.seed(attack, chunk), confidence=confidence)
            result = attacker.run(x, y)
            fooled = self.predict(model, result.x_adv) != y
            entry = {
                "norm": getattr(result, PERTURBATION_NORM[attack]).float().cpu(),
                "fooled": fooled.cpu(),
                "clean_correct": (self.predict(model, x) == y).cpu(),
                "seconds": time.perf_counter() - started,
            }
            self.cache.save("perturbation", key, entry)
        return entry
