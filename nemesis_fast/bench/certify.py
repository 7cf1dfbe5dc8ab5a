"""Benchmark of certification by randomized smoothing: nemesis_fast's Smooth.certify against ART's
PyTorchRandomizedSmoothing.certify on the paper's MNIST CNN, the same images, n, n0, sigma and alpha.

The model is the CNN trained briefly with unclipped GDA at SIGMA on the MNIST sample shipped with the
package (cached under the temp folder); the images are the sample's first test images. Cases:

* "vs ART": nemesis_fast (float32, and bf16 autocast) and ART at the same forward batch, on the same images, with
  each one's abstention rate and mean radius (0 where abstaining) with their sampling errors, and the paired
  differences between nemesis_fast and ART: two correct implementations differ only by Monte-Carlo noise.
* "ART's default batch": ART's certify with its default batch_size (32) against nemesis_fast, on fewer images.
* "GPU target" (GPU only): nemesis_fast on TARGET_SAMPLE images at n = 100,000, and the time it projects for all
  10,000 MNIST test images (the target: under 10 minutes on one H200).
* "time split": the noise alone (gaussian_augment for the same noisy copies) and everything but the model (a
  model that costs nothing) as shares of nemesis_fast's certify time (of the GPU target's on a GPU; the target:
  the noise under 5%).

Every provider is timed once per case, after a warm-up call on one image with a few draws: these are calls of
seconds to minutes. A provider that raises gets a row with no time and the note "failed: <Type>: <message>". A figure
that does not exist (the standard error over one image, a z-score with no error to divide by) is None (JSON's null).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import torch
from torch import nn

from .._io import settings_digest, temp_cached
from ..certify import Smooth
from ..data import load_mnist
from ..data.mnist import MNIST_SAMPLE_DIR
from ..models import mnist_cnn
from ..ops import gaussian_augment
from .harness import Report, Row, attempt, problem_size, time_interleaved

SIGMA, N0, ALPHA, CLASSES = 0.5, 100, 0.001, 10  # sigma 0.5: radii below the ceiling of n = 1,000, some abstentions
# (images vs ART, n, images at ART's default batch, forward batch) per device type
SIZES = {"cpu": (40, 1000, 4, 1000), "cuda": (20, 10_000, 2, 20_000)}
GPU_TARGET = (10_000, 100_000, 600.0)  # images, n, seconds: the H200 target
TARGET_SAMPLE = 40  # images certified at the target's n on a GPU, to project its time
TRAINING = {"recipe": "gda", "sigma": SIGMA, "clip": None, "copies": 1, "steps": 150, "batch": 64, "seed": 0}
WARMUP_DRAWS = 32  # per image of the warm-up call


def smoothing_model(device: torch.device) -> nn.Module:
    """The paper's MNIST CNN after TRAINING's steps of unclipped GDA on the package's MNIST sample (cached)."""
    from ..training import train

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TRAINING["seed"])
        model = mnist_cnn()

    def trained() -> dict[str, torch.Tensor]:
        images, labels = load_mnist(MNIST_SAMPLE_DIR, "train")
        settings = {"sigma": SIGMA, "clip": None, "copies": TRAINING["copies"]}
        budget = {"epochs": 100, "batch_size": TRAINING["batch"], "max_steps": TRAINING["steps"], "val_fraction": 0.0}
        train(model, (images, labels), "gda", settings=settings, patience=None, device=device, log=False, **budget)
        return {k: v.cpu() for k, v in model.state_dict().items()}

    model.load_state_dict(temp_cached(f"nemesis_fast_bench_cache/mnist_cnn_{settings_digest(TRAINING)}.pt", trained))
    return model.to(device).eval()


def art_smoother(model: nn.Module, device: torch.device, n0: int) -> Any:
    """ART's PyTorchRandomizedSmoothing around `model` (no clipping, like nemesis_fast's noise), or why not."""
    try:
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    except ImportError:
        return "ART not installed (pip install adversarial-robustness-toolbox)"
    art = PyTorchRandomizedSmoothing(
        model, nn.CrossEntropyLoss(), (1, 28, 28), CLASSES, device_type="gpu" if device.type == "cuda" else "cpu",
        sample_size=n0, scale=SIGMA, alpha=ALPHA,
    )  # fmt: skip
    return with_statsmodels_or_scipy_bound(art)


SUBSTITUTED_BOUND = "statsmodels missing: ART's Clopper-Pearson call replaced by the same scipy quantile"


def with_statsmodels_or_scipy_bound(art: Any) -> Any:
    """ART's smoothing estimator `art`, its Clopper-Pearson bound (statsmodels' proportion_confint, which ART's
    certify imports) replaced by the same scipy quantile where statsmodels is not installed (then marked
    `substituted_bound`)."""
    try:
        import statsmodels  # noqa: F401
    except ImportError:
        from ..compat.art import PyTorchRandomizedSmoothing

        art._lower_confidence_bound = partial(PyTorchRandomizedSmoothing._lower_confidence_bound, art)
        art.substituted_bound = True
    return art


def _standard_error(values: torch.Tensor) -> float | None:
    """The standard error of the mean of `values`; None (JSON's null, not NaN) for a single value, which has none."""
    return values.std().item() / math.sqrt(len(values)) if len(values) > 1 else None


def _summary(prediction: torch.Tensor, radius: torch.Tensor, labels: torch.Tensor) -> dict[str, float | None]:
    """Abstention rate, mean radius (0 where abstaining) and certified accuracy at 0, each with its standard error
    over the images (None for one image)."""
    out = {}
    for name, values in (
        ("abstain", (prediction < 0).double()),
        ("mean_radius", radius.double()),
        ("accuracy", (prediction == labels).double()),
    ):
        out[name] = values.mean().item()
        out[f"{name}_se"] = _standard_error(values)
    return out


def _paired(ours: dict[str, torch.Tensor], theirs: dict[str, torch.Tensor]) -> dict[str, float | None]:
    """Mean and standard error of the per-image differences (nemesis_fast - ART), and their z-scores: 0 where every
    difference is 0, None where there is no sampling error to divide by (one image, or every image differing by
    the same nonzero amount)."""
    out: dict[str, float | None] = {}
    for name, a, b in (
        ("abstain", ours["prediction"] < 0, theirs["prediction"] < 0),
        ("mean_radius", ours["radius"], theirs["radius"]),
    ):
        diff = a.double() - b.double()
        mean, se = diff.mean().item(), _standard_error(diff)
        out[f"{name}_diff"], out[f"{name}_diff_se"] = mean, se
        out[f"{name}_z"] = _z(mean, se)
    return out


def _z(mean: float, se: float | None) -> float | None:
    """mean / se; 0 where both are 0; None where there is no standard error, or it is 0 under a nonzero mean."""
    if se is None or (se == 0 and mean != 0):
        return None
    return mean / se if se > 0 else 0.0


def _agreement(paired: dict[str, float | None]) -> str:
    """The note of the paired-difference row: whether nemesis_fast and ART agree within sampling error."""
    zs = (paired["abstain_z"], paired["mean_radius_z"])
    if any(z is None for z in zs):
        return "no sampling error to judge by (one image, or every image differing alike)"
    return "agree within sampling error (|z| < 3)" if all(abs(z) < 3 for z in zs) else "DIFFER beyond sampling error"


def _time(case: str, providers: dict[str, Any], device: torch.device, images: int, baseline: str) -> list[Row]:
    """Times each runnable provider once (after a warm-up call on one image); rows with images/s and speedups. A
    provider that raises gets a row with no time and the note "failed: <Type>: <message>"."""
    notes = {k: v for k, v in providers.items() if isinstance(v, str)}  # why a provider has no time
    for name, fn in providers.items():
        if name not in notes:
            attempt(name, partial(fn, warmup=True), notes)
    runnable = {k: v for k, v in providers.items() if k not in notes}
    timings = time_interleaved(runnable, device, warmup=0, min_reps=1, min_seconds=0.0, failures=notes)
    rows = [
        Row(case, k, timings.get(k), note=notes.get(k, ""), item_name="image", baseline=baseline) for k in providers
    ]
    base = timings.get(baseline)
    for row in rows:
        if row.ms:
            row.items_per_s = images / (row.ms * 1e-3)
            row.speedup = base / row.ms if base else None
    return rows


def _providers(model, x, n, batch, art_batches, outputs, notes) -> dict[str, Any]:
    """Zero-argument callables (warmup=True: one image) for nemesis_fast and ART, keeping their last outputs in
    `outputs` and what to say about them in `notes`."""
    device = x.device
    providers: dict[str, Any] = {}
    for name, amp in (("nemesis_fast", False), ("nemesis_fast bf16", "bf16")):
        smooth = Smooth(model, SIGMA, CLASSES, amp=amp)

        def ours(warmup=False, smooth=smooth, name=name):
            draws = WARMUP_DRAWS if warmup else n
            result = smooth.certify(x[:1] if warmup else x, min(N0, draws), draws, ALPHA, batch, seed=0)
            outputs[name] = {"prediction": result.prediction, "radius": result.radius}

        providers[name] = ours
    host = x.cpu().numpy()
    for art_batch in art_batches:
        art = art_smoother(model, device, N0)
        name = f"ART (batch {art_batch})"
        if isinstance(art, str):
            providers[name] = art
            continue

        def theirs(warmup=False, art=art, name=name, art_batch=art_batch):
            prediction, radius = art.certify(host[:1] if warmup else host, n=WARMUP_DRAWS if warmup else n,
                                             batch_size=art_batch)  # fmt: skip
            outputs[name] = {"prediction": torch.from_numpy(prediction).long(), "radius": torch.from_numpy(radius)}

        providers[name] = theirs
        if getattr(art, "substituted_bound", False):
            notes[name] = SUBSTITUTED_BOUND
    return providers


def _time_split(model: nn.Module, x: torch.Tensor, n: int, batch: int, certify_ms: float) -> Row:
    """The noise alone and everything but the model, as shares of certify's time for the same noisy copies."""
    rows = len(x) * (N0 + n)
    first = x[:1].float().div(255) if x.dtype == torch.uint8 else x[:1]

    def noise() -> None:
        for k, start in enumerate(range(0, rows, batch)):
            size = min(batch, rows - start)
            gaussian_augment(first.expand(size, *x.shape[1:]), 1, SIGMA, None, include_original=False, seed=k)

    null = nn.Linear(1, CLASSES).to(x.device)  # a "model" that costs nothing: logits from one feature

    def overhead() -> None:
        Smooth(lambda z: null(z.flatten(1)[:, :1]), SIGMA, CLASSES).certify(x, N0, n, ALPHA, batch, seed=0)

    failures: dict[str, str] = {}
    parts = {"noise": noise, "overhead": overhead}
    timings = time_interleaved(parts, x.device, warmup=1, min_reps=1, min_seconds=0, failures=failures)
    noise_ms, overhead_ms = timings.get("noise"), timings.get("overhead")
    extra = {
        "noise_ms": noise_ms,
        "noise_share": noise_ms / certify_ms if noise_ms is not None else None,
        "all_but_model_ms": overhead_ms,
        "all_but_model_share": overhead_ms / certify_ms if overhead_ms is not None else None,
    }
    note = "; ".join(f"{part}: {why}" for part, why in failures.items())
    return Row(f"time split ({rows} noisy copies)", "nemesis_fast", certify_ms, note=note, extra=extra)


def run(device: torch.device | str, *, numel: int | None = None, n: int | None = None) -> Report:
    """Runs the cases; `numel` is the number of images certified by each provider in the "vs ART" case (default 40
    on a CPU, 20 on a GPU), `n` the estimation draws per image (default 1,000 on a CPU, 10,000 on a GPU)."""
    device = torch.device(device)
    images, default_n, art_default_images, batch = SIZES["cuda" if device.type == "cuda" else "cpu"]
    images, n = problem_size(numel, images), problem_size(n, default_n)
    art_default_images = min(art_default_images, images)
    settings = {"sigma": SIGMA, "n0": N0, "n": n, "alpha": ALPHA, "images": images, "batch": batch}
    settings["model"] = {"architecture": "mnist_cnn", "data": "the package's MNIST sample", **TRAINING}
    report = Report("certify", device, settings=settings)
    model = smoothing_model(device)
    test_x, test_y = load_mnist(MNIST_SAMPLE_DIR, "test")
    x, y = (test_x[:images].float() / 255).to(device), test_y[:images]
    outputs: dict[str, dict[str, torch.Tensor]] = {}
    notes: dict[str, str] = {}
    case = f"vs ART: {images} MNIST images, n={n}"
    providers = _providers(model, x, n, batch, (batch,), outputs, notes)
    rows = _time(case, providers, device, images, f"ART (batch {batch})")
    timed = {row.provider for row in rows if row.ms is not None}  # the others' outputs are their warm-ups' or none
    for row in rows:
        if row.provider in timed:
            row.extra = _summary(outputs[row.provider]["prediction"], outputs[row.provider]["radius"], y)
            row.note = notes.get(row.provider, row.note)
        report.add(row)
    if {"nemesis_fast", f"ART (batch {batch})"} <= timed:
        extra = _paired(outputs["nemesis_fast"], outputs[f"ART (batch {batch})"])
        case_name = f"{case}: nemesis_fast - ART, per image"
        report.add(Row(case_name, "paired difference", None, note=_agreement(extra), extra=extra))
    small = x[:art_default_images]
    case = f"ART's default batch: {len(small)} images, n={n}"
    default = _providers(model, small, n, batch, (32,), {}, notes)
    del default["nemesis_fast bf16"]
    for row in _time(case, default, device, len(small), "ART (batch 32)"):
        if row.ms is not None:
            row.note = notes.get(row.provider, row.note)
        report.add(row)
    if device.type == "cuda":
        x, n, rows = _gpu_target(report, model, test_x, device, batch)
    certify_ms = next((r.ms for r in rows if r.provider == "nemesis_fast"), None)
    if certify_ms is None:
        report.add(Row("time split", "nemesis_fast", None, note="skipped: nemesis_fast's certify has no time"))
    else:
        report.add(_time_split(model, x, n, batch, certify_ms))
    return report


def _gpu_target(
    report: Report, model: nn.Module, test_x: torch.Tensor, device: torch.device, batch: int
) -> tuple[torch.Tensor, int, list[Row]]:
    """nemesis_fast (float32 and bf16) on TARGET_SAMPLE images at the target's n, with the projected time of the
    whole target; returns the images, n and the rows."""
    images, n, seconds = GPU_TARGET
    x = (test_x[:TARGET_SAMPLE].float() / 255).to(device)
    case = f"GPU target: {len(x)} images, n={n}, projected to {images}"
    providers = _providers(model, x, n, batch, (), {}, {})
    rows = _time(case, providers, device, len(x), "nemesis_fast")
    for row in rows:
        if row.ms is not None:
            projected = row.ms * 1e-3 * images / len(x)
            row.extra = {"projected_s": projected, "target_s": seconds, "met": projected < seconds}
        report.add(row)
    return x, n, rows
