"""The attack benchmark's settings and providers: each attack as nemesis_fast, torchattacks and ART run it with the
same settings, and the bare loop of forward+backward passes that a gradient attack cannot beat."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import attacks as nf_attacks

AttackFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
PROVIDERS = ("nemesis_fast", "torchattacks", "ART", "bare fwd+bwd")


@dataclass
class Spec:
    """One attack's settings, shared by every provider."""

    name: str
    settings: dict[str, Any]
    baseline: str
    # The slowest providers run on at most `slow_limit` images (see run()).
    slow_providers: tuple[str, ...] = ()


def specs(dataset: str, device_type: str = "cuda") -> list[Spec]:
    """The attacks and settings of the benchmark on "cifar" (8/255 budgets) or "mnist" (0.3).

    C&W runs 3 binary steps of 100 iterations on a GPU (2 of 25 on a CPU, where ART needs seconds per
    iteration); ART's C&W and torchattacks' DeepFool, which are far slower, attack fewer images.
    """
    eps, alpha, steps = (8 / 255, 2 / 255, 10) if dataset == "cifar" else (0.3, 0.01, 40)
    cw_steps, cw_iter = (3, 100) if device_type == "cuda" else (2, 25)
    cw = {"confidence": 0.0, "initial_const": 1.0, "binary_search_steps": cw_steps, "max_iter": cw_iter, "lr": 0.01}
    return [
        Spec("FGSM", {"eps": eps}, "bare fwd+bwd"),
        Spec("R+FGSM", {"eps": eps, "alpha": eps / 2}, "bare fwd+bwd"),
        Spec("PGD", {"eps": eps, "alpha": alpha, "steps": steps}, "bare fwd+bwd"),
        Spec("DeepFool", {"max_iter": 50, "overshoot": 0.02, "candidates": 10}, "ART", ("torchattacks",)),
        Spec("CW-L2", cw, "ART", ("ART",)),
    ]


def nemesis_provider(spec: Spec, model: nn.Module) -> AttackFn | str:
    s = spec.settings
    if spec.name == "FGSM":
        return nf_attacks.FGSM(model, s["eps"])
    if spec.name == "R+FGSM":
        return nf_attacks.RandFGSM(model, s["eps"], s["alpha"], seed=0)
    if spec.name == "PGD":
        return nf_attacks.PGD(model, s["eps"], s["alpha"], s["steps"], seed=0)
    if spec.name == "DeepFool":
        return nf_attacks.DeepFool(model, s["max_iter"], s["overshoot"], s["candidates"])
    return nf_attacks.CarliniWagnerL2(
        model,
        s["confidence"],
        s["initial_const"],
        s["binary_search_steps"],
        s["max_iter"],
        s["lr"],
    )


def torchattacks_provider(spec: Spec, model: nn.Module) -> AttackFn | str:
    try:
        import torchattacks
    except ImportError:
        return "torchattacks not installed (pip install torchattacks)"
    s = spec.settings
    if spec.name == "FGSM":
        return torchattacks.FGSM(model, eps=s["eps"])
    if spec.name == "R+FGSM":
        return "torchattacks' RFGSM is an iterative method, not R+FGSM"
    if spec.name == "PGD":
        return torchattacks.PGD(model, eps=s["eps"], alpha=s["alpha"], steps=s["steps"], random_start=True)
    if spec.name == "DeepFool":
        return torchattacks.DeepFool(model, steps=s["max_iter"], overshoot=s["overshoot"])
    # No binary search over c in torchattacks' CW: one c for the whole iteration budget.
    steps = s["binary_search_steps"] * s["max_iter"]
    return torchattacks.CW(model, c=s["initial_const"], kappa=s["confidence"], steps=steps, lr=s["lr"])


def art_classifier(model: nn.Module, x: torch.Tensor, classes: int) -> Any:
    """ART's PyTorchClassifier around `model` for images like `x` in [0, 1], on x's device; or, when ART is
    not installed, the reason as a string."""
    try:
        from art.estimators.classification import PyTorchClassifier
    except ImportError:
        return "ART not installed (pip install adversarial-robustness-toolbox)"
    return PyTorchClassifier(
        model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(x.shape[1:]),
        nb_classes=classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if x.is_cuda else "cpu",
    )


def art_provider(spec: Spec, model: nn.Module, x: torch.Tensor, classes: int) -> AttackFn | str:
    if spec.name == "R+FGSM":
        return "ART has no R+FGSM"
    classifier = art_classifier(model, x, classes)
    if isinstance(classifier, str):
        return classifier
    from art.attacks import evasion

    s, batch = spec.settings, x.shape[0]
    if spec.name == "FGSM":
        attack = evasion.FastGradientMethod(classifier, norm=np.inf, eps=s["eps"], batch_size=batch)
    elif spec.name == "PGD":
        attack = evasion.ProjectedGradientDescent(
            classifier,
            norm=np.inf,
            eps=s["eps"],
            eps_step=s["alpha"],
            max_iter=s["steps"],
            num_random_init=1,
            batch_size=batch,
            verbose=False,
        )
    elif spec.name == "DeepFool":
        attack = evasion.DeepFool(
            classifier,
            max_iter=s["max_iter"],
            epsilon=s["overshoot"],
            nb_grads=s["candidates"],
            batch_size=batch,
            verbose=False,
        )
    else:
        attack = evasion.CarliniL2Method(
            classifier,
            confidence=s["confidence"],
            learning_rate=s["lr"],
            binary_search_steps=s["binary_search_steps"],
            max_iter=s["max_iter"],
            initial_const=s["initial_const"],
            batch_size=batch,
            verbose=False,
        )

    def run(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x_np, y_np = images.cpu().numpy(), labels.cpu().numpy()
        return torch.from_numpy(attack.generate(x_np, y_np)).to(images.device)

    return run


def bare_provider(spec: Spec, model: nn.Module) -> AttackFn | str:
    """`steps` forward+backward passes with respect to the input and nothing else."""
    if spec.name not in ("FGSM", "R+FGSM", "PGD"):
        return "only for the one-gradient-per-step attacks"
    steps = spec.settings.get("steps", 1)

    def run(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        for _ in range(steps):
            leaf = images.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model(leaf), labels), leaf)
        return images

    return run


def providers(spec: Spec, model: nn.Module, x: torch.Tensor, classes: int) -> dict[str, AttackFn | str]:
    return {
        "nemesis_fast": nemesis_provider(spec, model),
        "torchattacks": torchattacks_provider(spec, model),
        "ART": art_provider(spec, model, x, classes),
        "bare fwd+bwd": bare_provider(spec, model),
    }
