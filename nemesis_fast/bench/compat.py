"""Benchmark of nemesis_fast.compat against the peers, each called through its own API, side by side in one run.

Every case runs the peer's class (torchattacks' or ART's) and the drop-in class of nemesis_fast.compat with the
same arguments on the paper's CIFAR-10 CNN (:func:`nemesis_fast.models.cifar_cnn`, seeded random weights) and
uniform random images labelled with its own predictions. A row gives the time per image; the speed-up is the peer's
time per image over the drop-in's, and `max_diff` the largest difference between the two results on the images
both attacked, from the same random state (0 where the drop-in reproduces the peer's arithmetic; the rounding of
reordered sums for DeepFool). The speed-up is always taken on the same images: an attack's cost varies from image
to image (the steps until it succeeds), so per-image times on different images do not compare. On a GPU the slow
peers attack the first few images of the batch only (`images` says how many); the drop-in then attacks those
images too (`same_images_ms_per_image`), besides the whole batch (`ms_per_image`, what batching gives).
`image_rows` counts the images each side ran through the model per call (:mod:`.image_rows`): an image attacked
for s steps counts about s times, so it shows where one side stepped on and the other stopped.
ART's C&W is compared at equal iterations with ``algorithm="paper"`` (Adam, no early abort): another algorithm,
so no `max_diff`. Both sides are warmed up alike before they are timed (a warm-up round; in the slow cases, one
call of each on one image), and a side that raises gets a row with no time and the note "failed: <Type>:
<message>". GaussianAugmentation is timed through ART's numpy call and through the PyTorch preprocessor path;
PyTorchRandomizedSmoothing's certify through ART's call on both sides (other noise draws: no `max_diff`).

The last case is torchattacks' JSMA on one 3 x 224 x 224 image (n = 150,528 features) with a ResNet-18 of random
weights: torchattacks holds n x n score matrices, whose peak is measured at small n and extrapolated (the bytes
per feature pair are constant); the drop-in's peak extra memory is measured on the image itself.
"""

from __future__ import annotations

import contextlib
import io
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from .attack_providers import art_classifier
from .attacks import timing_model
from .harness import (
    Case,
    Report,
    Row,
    attempt,
    problem_size,
    record_same_images,
    same_images_speedup,
    synchronize,
    time_interleaved,
    time_ms,
)
from .image_rows import ImageRows
from .jsma import peak_extra_mb

Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
IMAGENET_FEATURES = 3 * 224 * 224


@dataclass
class Pair:
    """One case: the peer's attack and the drop-in's, as functions of (images, labels) returning torch images."""

    name: str
    peer: Callable[[], Attack] | str  # builds the attack (fresh per call of the case), or why it cannot run
    ours: Callable[[], Attack] | str
    peer_images: int | None = None  # the peer attacks only this many images (None: the whole batch)
    compare: bool = True  # the same algorithm: report the largest difference
    rounds: int | None = None  # a slow case: this many calls of each side in turns (the median), after one warm-up
    # call of each side on one image (rather than warm-up rounds on the whole batch)


def _slow_rounds(gpu: bool) -> int:
    """Calls of each side of a slow case, in turns: 3 on a CPU (single calls of the peers vary up to 2x there), 1
    on a GPU (the GPU check's time limit)."""
    return 1 if gpu else 3


def _quiet(fn: Attack) -> Attack:
    """`fn` with its prints (torchattacks' mode messages, ART's progress bars) discarded."""

    def run(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return fn(images, labels)

    return run


def torchattacks_pairs(model: nn.Module, gpu: bool) -> list[Pair]:
    try:
        import torchattacks

        from ..compat import torchattacks as compat
    except ImportError:
        return [Pair("torchattacks", "torchattacks not installed (pip install torchattacks)", "")]
    eps, alpha = 8 / 255, 2 / 255
    settings = {  # name: (arguments, the images the peer attacks (None: all), rounds of a slow case)
        "FGSM": ({"eps": eps}, None, None),
        "PGD": ({"eps": eps, "alpha": alpha, "steps": 10}, None, None),
        "RFGSM": ({"eps": eps, "alpha": alpha, "steps": 10}, None, None),
        "CW": ({"c": 1.0, "kappa": 0.0, "steps": 50, "lr": 0.01}, None, None),
        "DeepFool": ({"steps": 50, "overshoot": 0.02}, 32 if gpu else None, _slow_rounds(gpu)),
        "JSMA": ({"theta": 1.0, "gamma": 0.1}, 2, 1),  # tens of seconds per image on a CPU
    }
    pairs = []
    for name, (kwargs, limit, rounds) in settings.items():
        peer, ours = getattr(torchattacks, name), getattr(compat, name)
        pairs.append(
            Pair(
                f"torchattacks {name}",
                lambda cls=peer, kw=kwargs: _quiet(cls(model, **kw)),
                lambda cls=ours, kw=kwargs: _quiet(cls(model, **kw)),
                limit,
                rounds=rounds,
            )
        )
    return pairs


def _art_attack(make: Callable[[], Any], targets: bool = False) -> Attack:
    """An ART attack object (built by `make`) as a function of torch (images, labels); with `targets`, y is the
    target (label + 1) % 10, as JSMA takes it."""
    attack = make()

    def run(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        y = labels.cpu().numpy()
        y = (y + 1) % 10 if targets else y
        return torch.from_numpy(attack.generate(images.cpu().numpy(), y)).to(images.device)

    return _quiet(run)


def art_pairs(model: nn.Module, x: torch.Tensor, gpu: bool) -> list[Pair]:
    classifier = art_classifier(model, x, 10)
    if isinstance(classifier, str):
        return [Pair("ART", classifier, "")]
    from art.attacks import evasion

    from ..compat import art as compat

    batch, eps = x.shape[0], 8 / 255
    slow = 32 if gpu else None  # on a CPU the peers attack every image of the batch (8)
    cw = {"binary_search_steps": 3, "max_iter": 100} if gpu else {"binary_search_steps": 2, "max_iter": 25}
    cw |= {"initial_const": 1.0, "learning_rate": 0.01}
    settings = {
        "FastGradientMethod": ({"eps": eps}, None, {}),
        "ProjectedGradientDescent": (
            {"eps": eps, "eps_step": 2 / 255, "max_iter": 10, "num_random_init": 1, "verbose": False},
            None,
            {},
        ),
        "BasicIterativeMethod": ({"eps": eps, "eps_step": 2 / 255, "max_iter": 10, "verbose": False}, None, {}),
        # ART's DeepFool took 14 ms an image on an H200 (2026-12-04): there it attacks the whole batch, as users do.
        "DeepFool": ({"max_iter": 50, "epsilon": 0.02, "nb_grads": 10, "verbose": False}, None, {}),
        "SaliencyMapMethod": ({"theta": 1.0, "gamma": 0.1, "verbose": False}, 8 if gpu else None, {}),
        "CarliniL2Method": ({**cw, "verbose": False}, slow, {"algorithm": "paper", "abort_early": False}),
    }
    pairs = []
    for name, (kwargs, limit, extra) in settings.items():
        peer = partial(getattr(evasion, name), classifier, **kwargs, batch_size=limit or batch)
        ours = partial(getattr(compat, name), classifier, **kwargs, **extra, batch_size=batch)
        label = f"ART {name}" + (" (ours: algorithm='paper', equal iterations)" if extra else "")
        targets = name == "SaliencyMapMethod"
        rounds = _slow_rounds(gpu) if name in ("DeepFool", "SaliencyMapMethod", "CarliniL2Method") else None
        run_peer, run_ours = partial(_art_attack, peer, targets), partial(_art_attack, ours, targets)
        pairs.append(Pair(label, run_peer, run_ours, limit, not extra, rounds))
    return pairs


def _seeded(fn: Attack, images: torch.Tensor, labels: torch.Tensor, out: list) -> Callable[[], None]:
    """A call of `fn` from torch's and numpy's seed 0 (the same random draws for both sides), its result kept."""

    def call() -> None:
        torch.manual_seed(0)
        np.random.seed(0)
        out.append(fn(images, labels))

    return call


def measure_pair(report: Report, pair: Pair, x: torch.Tensor, y: torch.Tensor, model: nn.Module | None = None) -> None:
    """Rows for the peer and the drop-in of `pair`: time per image, speed-up, difference of results, and with the
    `model` both attack, each side's image rows per call (`image_rows`; the drop-in's on the peer's images:
    `same_images_image_rows`). Fast cases are timed in turns (median of several rounds, after a warm-up round);
    slow ones in `pair.rounds` turns, after one warm-up call of each side on one image. A side that raises (when
    built, warmed up or timed) gets a row with no time and the note "failed: <Type>: <message>"."""
    if isinstance(pair.peer, str) or isinstance(pair.ours, str):
        report.add(Row(pair.name, "peer", None, note=pair.peer if isinstance(pair.peer, str) else pair.ours))
        return
    count = min(pair.peer_images or len(x), len(x))
    # Each side: (its attack's builder, its images); "same": the drop-in on the peer's images, where those are fewer.
    sides = {"peer": (pair.peer, count), "ours": (pair.ours, len(x))}
    if count < len(x):
        sides["same"] = (pair.ours, count)
    notes: dict[str, str] = {}  # why a side has no time
    attacks = {side: attempt(side, make, notes) for side, (make, _) in sides.items()}
    if pair.rounds is not None:
        for side, attack in attacks.items():
            if side not in notes:  # warm-up, the same for both sides: lazy imports, kernels
                attempt(side, partial(attack, x[:1], y[:1]), notes)
    outputs: dict[str, list] = {side: [] for side in sides}
    calls = {
        side: _seeded(attacks[side], x[:images], y[:images], outputs[side])
        for side, (_, images) in sides.items()
        if side not in notes
    }
    if pair.rounds is None:
        turns: dict[str, Any] = {"warmup": 1, "min_reps": 5, "min_seconds": 1.0}
    else:
        turns = {"warmup": 0, "min_reps": pair.rounds, "max_reps": pair.rounds, "min_seconds": 0.0}
    rows = ImageRows(model) if model is not None else None
    try:
        if rows is not None:
            calls = {side: rows.counting(side, call) for side, call in calls.items()}
        ms = time_interleaved(calls, report.device, **turns, failures=notes)
    finally:
        if rows is not None:
            rows.close()
    peer_row, ours_row = (
        _side_row(pair.name, side, ms, notes, images) for side, images in (("peer", count), ("ours", len(x)))
    )
    if rows is not None:
        for row, side in ((peer_row, "peer"), (ours_row, "ours")):
            if side in ms:
                row.extra["image_rows"] = rows.per_call(side)
        if "same" in ms:
            ours_row.extra["same_images_image_rows"] = rows.per_call("same")
    if "same" in ms:
        record_same_images(ours_row, count, ms["same"])
    elif "same" in notes and ours_row.ms is not None:
        ours_row.note = f"on the peer's {count} images: {notes['same']}"
    if peer_row.ms is not None and ours_row.ms is not None:
        ours_row.speedup = same_images_speedup(peer_row, ours_row)
    mine = "same" if count < len(x) else "ours"  # the drop-in on the peer's images
    if pair.compare and mine in ms and "peer" in ms:  # both timed: their last results, from the same seed
        difference = outputs[mine][-1].float() - outputs["peer"][-1].float()
        ours_row.extra["max_diff"] = difference.abs().max().item()
    report.add(peer_row)
    report.add(ours_row)


def _side_row(case: str, side: str, ms: dict[str, float], notes: dict[str, str], images: int) -> Row:
    """The row of one side of a pair ("peer" or "ours") on its `images` images: its time from `ms`, or, where it
    has none, why (`notes`)."""
    provider = "peer" if side == "peer" else "nemesis_fast.compat"
    if side not in ms:
        return Row(case, provider, None, note=notes.get(side, ""), item_name="image", baseline="peer")
    row = Row(case, provider, ms[side], items_per_s=images / (ms[side] * 1e-3), item_name="image", baseline="peer")
    row.extra = {"images": images, "ms_per_image": ms[side] / images}
    return row


def gaussian_case(report: Report, images: int) -> None:
    """ART's GaussianAugmentation (numpy) against the drop-in, ART's defaults (sigma 1, ratio 1, no clip)."""
    try:
        from art.defences.preprocessor import GaussianAugmentation as Peer

        from ..compat.art import GaussianAugmentation as Ours
    except ImportError:
        report.add(Row("ART GaussianAugmentation", "peer", None, note="ART not installed"))
        return
    device = report.device
    x = torch.rand(images, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x_np, y_np = x.numpy(), np.arange(images)
    x_dev, y_dev = x.to(device), torch.arange(images, device=device)
    peer, ours = Peer(), Ours()
    case = Case(
        f"ART GaussianAugmentation, {images} CIFAR images (sigma 1, ratio 1)",
        {
            "peer": lambda: peer(x_np, y_np),
            "nemesis_fast.compat (numpy in/out)": lambda: ours(x_np, y_np),
            "nemesis_fast.compat (PyTorch preprocessor path)": lambda: ours.forward(x_dev, y_dev),
        },
        baseline="peer",
        items=images,
        item_name="image",
    )
    report.run(case)


def smoothing_case(report: Report, model: nn.Module, x: torch.Tensor, n: int) -> None:
    """ART's PyTorchRandomizedSmoothing.certify against the drop-in's, both through ART's API on the same images
    (sample_size 100, scale 0.25, alpha 0.001, forward batches of 1,000 noisy copies on both sides)."""
    case = f"ART PyTorchRandomizedSmoothing.certify, {len(x)} CIFAR images (n0 100, n {n}, scale 0.25)"
    try:
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing as Peer

        from ..compat.art import PyTorchRandomizedSmoothing as Ours
    except ImportError:
        report.add(Row(case, "peer", None, note="ART not installed"))
        return
    from .certify import SUBSTITUTED_BOUND, with_statsmodels_or_scipy_bound

    device_type = "gpu" if report.device.type == "cuda" else "cpu"
    settings = {"device_type": device_type, "sample_size": 100, "scale": 0.25, "alpha": 0.001}
    peer, ours = (cls(model, nn.CrossEntropyLoss(), tuple(x.shape[1:]), 10, **settings) for cls in (Peer, Ours))
    peer = with_statsmodels_or_scipy_bound(peer)
    images = x.cpu().numpy()
    providers = {
        "peer": lambda: peer.certify(images, n, 1000),
        "nemesis_fast.compat": lambda: ours.certify(images, n, 1000),
    }
    rows = report.run(Case(case, providers, baseline="peer", items=len(x), item_name="image", min_seconds=0.0))
    if getattr(peer, "substituted_bound", False):
        rows[0].note = SUBSTITUTED_BOUND


def torchattacks_jsma_peak_bytes(n: int) -> int:
    """Peak bytes torchattacks' JSMA allocates in one saliency-map step at n features: torch's allocations (from
    the profiler) plus numpy's (tracemalloc), measured on random gradients."""
    import torchattacks

    attack = torchattacks.JSMA(nn.Linear(1, 1))
    jacobian = torch.randn(10, n, generator=torch.Generator().manual_seed(n))
    domain = torch.ones(n)
    numpy_peak: list[int] = []

    def step() -> None:
        tracemalloc.start()
        attack.saliency_map(jacobian, torch.tensor([3]), True, domain, n)
        numpy_peak.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()

    torch_mb = peak_extra_mb(step, torch.device("cpu")) or 0.0
    return int(torch_mb * 2**20) + numpy_peak[-1]


def imagenet_jsma_rows(report: Report, steps: int = 3) -> None:
    """torchattacks' JSMA on one 3 x 224 x 224 image: its peak by formula, the drop-in's measured."""
    case = "torchattacks JSMA, one 3x224x224 image (n=150528), ResNet-18 random weights"
    try:
        import torchattacks  # noqa: F401

        from ..compat import torchattacks as compat
    except ImportError:
        report.add(Row(case, "peer", None, note="torchattacks not installed"))
        return
    sizes = (512, 1024, 2048)
    per_pair = [torchattacks_jsma_peak_bytes(n) / n**2 for n in sizes]
    peer_row = Row(case, "peer (by formula)", None, note="needs bytes_per_pair * n^2 per step: cannot run here")
    peer_row.extra = {
        "bytes_per_pair": per_pair[-1],
        "measured_at_n": list(sizes),
        "peak_GiB": per_pair[-1] * IMAGENET_FEATURES**2 / 2**30,
    }
    report.add(peer_row)
    try:
        from torchvision.models import resnet18
    except ImportError:
        report.add(Row(case, "nemesis_fast.compat", None, note="torchvision not installed (ResNet-18)"))
        return
    device = report.device
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = resnet18().to(device).eval()
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    gamma = 2 * steps / IMAGENET_FEATURES * 0.999  # ceil(n * gamma / 2) = steps
    attack = _quiet(compat.JSMA(model, theta=1.0, gamma=gamma))
    synchronize(device)
    failures: dict[str, str] = {}
    once = {"warmup": 0, "min_reps": 1, "min_seconds": 0.0, "max_reps": 1}
    ms = attempt("ours", partial(time_ms, lambda: attack(x, y), device, **once), failures)
    if ms is None:
        report.add(Row(case, "nemesis_fast.compat", None, note=failures["ours"]))
        return
    row = Row(case, "nemesis_fast.compat", ms)
    row.extra = {
        "steps": steps,
        "ms_per_step": ms / steps,
        "peak_extra_GiB": (peak_extra_mb(lambda: attack(x, y), device) or 0) / 1024,
    }
    report.add(row)


def run(device: torch.device | str, *, numel: int | None = None) -> Report:
    """Every case on `numel` CIFAR-shaped images (default 256 on a GPU, 8 on a CPU; some peers on fewer)."""
    device = torch.device(device)
    gpu = device.type == "cuda"
    batch = problem_size(numel, 256 if gpu else 8)
    report = Report("compat", device, settings={"batch": batch})
    model = timing_model(device)
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    for pair in [*torchattacks_pairs(model, gpu), *art_pairs(model, x, gpu)]:
        measure_pair(report, pair, x, y, model)
    gaussian_case(report, 128 if not gpu else 1024)
    # (ART draws each image's noise in host numpy, float64: 49 MB per CIFAR image at n 2,000)
    smoothing_case(report, model, x[: 16 if gpu else 2], 2000 if gpu else 1000)
    imagenet_jsma_rows(report)
    return report
