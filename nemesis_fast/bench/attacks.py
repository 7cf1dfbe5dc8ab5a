"""Benchmark of the attacks against torchattacks and ART on the same model and images.

Each attack runs with the same settings in every provider: nemesis_fast, torchattacks and ART (through its
PyTorchClassifier), plus a bare loop of forward+backward passes for FGSM and PGD (the floor a gradient
attack cannot beat). A row gives the time per image, the images per second, and, computed the same way for
every provider from the images it returns, the success rate and the median L2 and Linf perturbation of
the successful images, and the number of model calls per attack call (torchattacks' CW, for one, stops
as soon as its loss rises between two checks).
Speedups are per image on the same images (the slow providers attack the first few of the batch, and the others
are timed on those too), against ART for DeepFool and C&W and against the bare loop for FGSM and PGD.

The timing model is the paper's CIFAR-10 CNN (:func:`nemesis_fast.models.cifar_cnn`, random weights) on
uniform random images labelled with its own predictions, so that every image starts correctly classified.
With `mnist_root` (or $NEMESIS_FAST_MNIST), the paper's MNIST CNN is also trained for one epoch and every
attack runs on the first 500 MNIST test images, for success rates and norms on a real model (a folder that cannot
be read gives a note row instead). A provider that raises gets a row with no time and the note "failed: <Type>:
<message>", and the others go on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

import torch
from torch import nn

from ..attacks import perturbation_norms
from .attack_providers import Spec, providers, specs
from .harness import (
    Report,
    Row,
    attempt,
    error_text,
    problem_size,
    record_same_images,
    same_images_speedup,
    time_interleaved,
)


def measure(
    spec: Spec,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    classes: int,
    case: str,
    *,
    slow_limit: int,
    reps: int | None = None,
) -> list[Row]:
    """One row per provider of `spec`: time per image, success rate and median norms on (x, y). The providers take
    turns (one call each per round), so that load from elsewhere falls on all of them alike: for the harness's
    least rounds and seconds (`reps` None), exactly `reps` rounds, or one round where a slow peer takes part
    (DeepFool, C&W). A provider that raises gets a row with no time and the note "failed: <Type>: <message>"."""
    device = x.device
    calls, outs, sizes, same_images = {}, {}, {}, {}
    notes: dict[str, str] = {}  # why a provider has no time: unavailable, or failed
    current: dict[str, dict[str, Any]] = {}  # the counters of the provider being called
    built = providers(spec, model, x, classes)
    for provider, fn in built.items():
        if isinstance(fn, str):
            notes[provider] = fn
            continue
        n = min(len(x), slow_limit) if provider in spec.slow_providers else len(x)
        images, labels = x[:n], y[:n]
        attempt(provider, partial(fn, images[:2], labels[:2]), notes)  # warm-up: kernels, cuDNN, lazy imports
        if provider in notes:
            continue
        out: dict[str, Any] = {"calls": 0, "forwards": 0}

        def call(fn=fn, images=images, labels=labels, out=out) -> None:
            current["out"] = out
            out["x_adv"] = fn(images, labels)
            out["calls"] += 1

        calls[provider], outs[provider], sizes[provider] = call, out, n
        if spec.slow_providers and provider not in spec.slow_providers and n > slow_limit:
            # The slow providers' images, for speed-ups on the same images.
            same_images[provider] = partial(_uncounted, current, fn, x[:slow_limit], y[:slow_limit])

    # On the last layer: ART's wrapper calls the layers of an nn.Sequential one by one, not the model.
    last = [m for m in model.modules() if not list(m.children())][-1]
    hook = last.register_forward_hook(partial(_count, current))
    turns, same_failures = _turns(spec, calls, reps), {}
    try:
        ms = time_interleaved(calls, device, **turns, failures=notes)
        same_ms = time_interleaved(same_images, device, **turns, failures=same_failures)
    finally:
        hook.remove()
    rows = []
    for provider in built:
        if provider not in ms:
            rows.append(Row(case, provider, None, note=notes[provider], item_name="image", baseline=spec.baseline))
            continue
        same = (slow_limit, same_ms[provider]) if provider in same_ms else None
        row = _row(case, provider, ms[provider], sizes[provider], outs[provider], model, x, y, same)
        row.baseline = spec.baseline
        if provider in same_failures:
            row.note = f"on the first {slow_limit} images: {same_failures[provider]}"
        rows.append(row)
    base = next((r for r in rows if r.provider == spec.baseline and r.ms), None)
    for row in rows:
        if base is not None and row.ms:
            row.speedup = same_images_speedup(base, row)
    return rows


def _turns(spec: Spec, calls: dict[str, Any], reps: int | None) -> dict[str, Any]:
    """How measure() times the providers in turns: one round where a slow peer takes part (DeepFool, C&W); else
    exactly `reps` rounds, or (None) the harness's least rounds and seconds after a warm-up round on the whole
    batch, so that the medians of the fast attacks hold still from run to run."""
    slow = spec.name in ("DeepFool", "CW-L2") and any(p in ("ART", "torchattacks") for p in calls)
    rounds = 1 if slow else reps
    if rounds is None:
        return {"warmup": 1}
    return {"warmup": 0, "min_reps": rounds, "max_reps": rounds, "min_seconds": 0.0}


def _count(current: dict[str, Any], *_: Any) -> None:
    """A forward hook: one more model call for the provider being called (none during the same-image timing)."""
    if current.get("out") is not None:
        current["out"]["forwards"] += 1


def _uncounted(current: dict[str, Any], fn: Callable, images: torch.Tensor, labels: torch.Tensor) -> None:
    current["out"] = None  # the model calls of the same-image timing count for no row
    fn(images, labels)


def _row(
    case: str,
    provider: str,
    ms: float,
    n: int,
    out: dict[str, Any],
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    same: tuple[int, float] | None,
) -> Row:
    """A provider's row: its time on its n images, its model calls per attack call (a batched call counts once:
    the iterations it really ran), its time on the slow providers' images (`same`: their count and the time), and
    its success and norms."""
    row = Row(case, provider, ms, items_per_s=n / (ms * 1e-3), item_name="image")
    row.extra = {"images": n, "ms_per_image": ms / n, "model_calls": out["forwards"] / out["calls"]}
    if same is not None:
        record_same_images(row, *same)
    if provider != "bare fwd+bwd":
        images, labels = x[:n], y[:n]
        x_adv = out["x_adv"].to(images.dtype)
        with torch.no_grad():
            success = model(x_adv).argmax(1) != labels
        _, l2, linf = perturbation_norms(x_adv, images)
        row.extra |= {
            "success": success.float().mean().item(),
            "median_l2": l2[success].median().item() if success.any() else None,
            "median_linf": linf[success].median().item() if success.any() else None,
        }
    return row


def timing_model(device: torch.device) -> nn.Module:
    """The paper's CIFAR-10 CNN with seeded random weights, in eval mode, on `device`."""
    from ..models import cifar_cnn

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = cifar_cnn()
    return model.to(device).eval()


def mnist_sets(root: str | os.PathLike) -> tuple[tuple[torch.Tensor, torch.Tensor], ...] | str:
    """MNIST's (training, test) sets from the folder `root`, or why they cannot be read there (no such folder, a
    missing file, a file that is not MNIST's): a suite then adds a note row instead of ending."""
    from ..data import load_mnist

    try:
        return load_mnist(root, "train"), load_mnist(root, "test")
    except (OSError, EOFError, ValueError) as error:
        return f"skipped: MNIST could not be read from {os.fspath(root)!r} ({error_text(error)})"


def mnist_model_and_data(
    sets: tuple[tuple[torch.Tensor, torch.Tensor], ...],
    device: torch.device,
    images: int = 500,
    train_images: int | None = None,
) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """The paper's MNIST CNN trained for one epoch (on the first `train_images` training images; default all)
    on `device`, and the first `images` test images; `sets`: MNIST's (training, test) sets (:func:`mnist_sets`)."""
    from ..models import mnist_cnn
    from ..training import train

    (train_x, train_y), (x, y) = sets
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = mnist_cnn()
    data = (train_x[:train_images], train_y[:train_images])
    train(model, data, epochs=1, val_fraction=0.0, patience=None, device=device, log=False)
    return model.to(device).eval(), (x[:images].float() / 255).to(device), y[:images].to(device)


def attack_names(attacks: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """run()'s `attacks`, checked: None (all), one name, or several, each of specs()'s names exactly (a plain
    string is one name, not a set of letters to match); ValueError listing the valid names otherwise."""
    if attacks is None:
        return None
    if not isinstance(attacks, Iterable):
        raise TypeError(f"attacks must be an attack's name or several names, got {type(attacks).__name__}")
    names = (attacks,) if isinstance(attacks, str) else tuple(attacks)
    valid = ", ".join(spec.name for spec in specs("cifar"))
    unknown = [name for name in names if name not in valid.split(", ")]
    if unknown:
        raise ValueError(f"attacks: unknown attack {', '.join(map(repr, unknown))}; choose from {valid}")
    if not names:
        raise ValueError(f"attacks is empty; name one or more of {valid}, or give None for all")
    return names


def run(
    device: torch.device | str,
    *,
    numel: int | None = None,
    mnist_root: str | None = None,
    attacks: str | Iterable[str] | None = None,
) -> Report:
    """Times every attack and provider on `numel` CIFAR-shaped images (default 256 on a GPU, 8 on a CPU).

    Args:
        device: where the model, the images and every provider run (ART copies to numpy and back).
        numel: the batch of images per call.
        mnist_root: MNIST's folder for the success rows on a trained model; default $NEMESIS_FAST_MNIST. A folder
            that cannot be read gives a note row instead of those rows.
        attacks: the attack to run, or several (FGSM, R+FGSM, PGD, DeepFool, CW-L2, exactly); default all.
            ValueError listing the valid names for any other.
    """
    names = attack_names(attacks)
    device = torch.device(device)
    batch = problem_size(numel, 256 if device.type == "cuda" else 8)
    slow_limit = 32 if device.type == "cuda" else 4
    report = Report("attacks", device, settings={"batch": batch, "slow_provider_images": slow_limit})
    model = timing_model(device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=g).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    for spec in specs("cifar", device.type):
        if names is None or spec.name in names:
            case = f"{spec.name} (CIFAR CNN, batch {batch})"
            for row in measure(spec, model, x, y, 10, case, slow_limit=slow_limit):
                report.add(row)
    mnist_root = mnist_root or os.environ.get("NEMESIS_FAST_MNIST")
    if mnist_root:
        mnist_rows(report, mnist_root, names, slow_limit * 4)
    return report


def mnist_rows(report: Report, root: str, names: tuple[str, ...] | None, slow_limit: int) -> None:
    """The attacks `names` (None: all) on the paper's MNIST CNN trained for one epoch, on the first 500 test
    images, for success rates and norms on a real model (one round each); a note row where MNIST cannot be read
    from `root`."""
    device = report.device
    sets = mnist_sets(root)
    if isinstance(sets, str):
        report.add(Row("MNIST CNN (trained)", "every provider", None, note=sets))
        return
    model, x, y = mnist_model_and_data(sets, device)
    with torch.no_grad():
        report.settings["mnist_clean_accuracy"] = (model(x).argmax(1) == y).float().mean().item()
    for spec in specs("mnist", device.type):
        if names is None or spec.name in names:
            case = f"{spec.name} (MNIST CNN, {len(x)} test images)"
            for row in measure(spec, model, x, y, 10, case, slow_limit=slow_limit, reps=1):
                report.add(row)
