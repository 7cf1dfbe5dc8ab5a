"""Benchmark of JSMA: the fused saliency-map pair search, and the JSMA attack against torchattacks and ART.

Pair search: the native and Triton kernels against the materialised eager search (the reference in one block:
the (B, n, n) pair sums, masks and scores, then one argmax), at n = 784 (MNIST) and n = 3072 (CIFAR), on
N(0, 1) gradients with a full domain, and on gradients that give every pair the same score (the CPU kernel's
worst case: its row bounds never skip a row). A row gives the time, pairs per second (B * n * (n - 1) / 2 per
call) and the peak extra memory of one call (CUDA's allocator on a GPU; on a CPU the allocations that the
profiler records).

Attack: nemesis_fast's JSMA (batched) against torchattacks' JSMA (one image at a time, n x n pair matrices)
and ART's SaliencyMapMethod (no pair search: one feature per step), all with theta = 1, gamma = 0.1, logit
gradients and the same targets ((label + 1) % 10), on the paper's CIFAR-10 CNN with random weights (images
labelled with its own predictions), and with `mnist_root` on the paper's MNIST CNN trained for one epoch. A
row gives the time per image (one timed call, after one warm-up call of every provider on the first image), the
targeted success rate and the mean L0 of the successful images; speedups are per image against torchattacks, on
the images torchattacks attacked (the others are timed on those too). On a GPU, JSMA also runs on a batch of
3 x 224 x 224 images (n = 150,528) with a ResNet-8 (gamma = 0.01); its peak_total_MB is the device's whole peak.
A provider that raises gets a row with no time and the note "failed: <Type>: <message>"; an MNIST folder that
cannot be read, a note row.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from functools import partial

import torch
from torch import nn

from .._backends.jsma_saliency_search import BACKENDS
from ..attacks import JSMA
from ..reference.jsma_saliency_search import jsma_saliency_search as reference_search
from .attack_providers import art_classifier
from .attacks import mnist_model_and_data, mnist_sets, timing_model
from .harness import (
    Case,
    Report,
    Row,
    attempt,
    problem_size,
    record_same_images,
    same_images_speedup,
    synchronize,
    time_ms,
)

SEARCH_PROVIDERS = ("native", "triton", "torch materialised")
ATTACK_PROVIDERS = ("nemesis_fast", "torchattacks", "ART")
THETA, GAMMA = 1.0, 0.1
GRADIENTS = ("N(0, 1)", "equal scores")


def materialised_search(
    target_grad: torch.Tensor, other_grad: torch.Tensor, search_domain: torch.Tensor, increase: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The eager search that holds every pair score at once: the reference as a single block."""
    return reference_search(target_grad, other_grad, search_domain, increase, block_elements=target_grad.numel() ** 2)


def search_inputs(batch: int, n: int, gradients: str, device: torch.device) -> tuple[torch.Tensor, ...]:
    """(target_grad, other_grad, search_domain) of the benchmark: seeded N(0, 1), or constants (every pair
    valid with the same score)."""
    if gradients == "equal scores":
        t = torch.ones(batch, n, device=device)
        return t, -t, torch.ones(batch, n, dtype=torch.bool, device=device)
    g = torch.Generator().manual_seed(n)
    t, o = torch.randn(2, batch, n, generator=g).to(device)
    return t, o, torch.ones(batch, n, dtype=torch.bool, device=device)


def search_provider(provider: str, device: torch.device) -> Callable[..., object] | str:
    """The pair search of `provider` as a function of (t, o, d), or why it cannot run on `device`."""
    if provider == "torch materialised":
        return materialised_search
    reason = BACKENDS.unavailable_reason(provider, device.type)
    if provider == "triton" and device.type == "cpu":
        reason = "Triton kernels are timed on GPUs only (the CPU interpreter is a test tool)"
    return reason or getattr(BACKENDS, provider)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Discards what C++ code writes to file descriptor 2 (the profiler logs every start and stop there)."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_peak_bytes(fn: Callable[[], object]) -> int | None:
    """The peak of the bytes allocated and not yet freed while `fn` runs, from the profiler's allocation
    records (CPU tensors, including those a C++ kernel allocates); None where the profiler cannot tell."""
    try:
        from torch._C._profiler import _EventType
        from torch.profiler import ProfilerActivity, profile

        with _stderr_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        events, allocations = list(prof.profiler.kineto_results.experimental_event_tree()), []
        while events:
            event = events.pop()
            events.extend(event.children)
            if event.tag == _EventType.Allocation:
                allocations.append((event.start_time_ns, event.extra_fields.alloc_size))
    except Exception:  # a private profiler API: report nothing rather than fail the benchmark
        return None
    live = peak = 0
    for _, size in sorted(allocations):
        live += size
        peak = max(peak, live)
    return peak


def peak_extra_mb(fn: Callable[[], object], device: torch.device) -> float | None:
    """Peak memory one call of `fn` allocates beyond what was allocated before it, in MiB."""
    if device.type != "cuda":
        peak = _cpu_peak_bytes(fn)
        return None if peak is None else peak / 2**20
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - before) / 2**20


def search_rows(report: Report, batch: int, n: int, gradients: str) -> None:
    device = report.device
    t, o, d = search_inputs(batch, n, gradients, device)
    providers: dict[str, Callable[[], object] | str] = {}
    for name in SEARCH_PROVIDERS:
        fn = search_provider(name, device)
        providers[name] = fn if isinstance(fn, str) else (lambda fn=fn: fn(t, o, d, True))
    case = Case(
        f"pair search n={n}, B={batch}, {gradients}",
        providers,
        baseline="torch materialised",
        items=batch * n * (n - 1) // 2,
        item_name="pair",
    )
    rows = report.run(case)
    expected = attempt("reference", partial(materialised_search, t, o, d), {})  # None where it failed (memory)
    for row in rows:
        fn = providers[row.provider]
        if isinstance(fn, str) or row.ms is None:  # unavailable, or failed (its row says why)
            continue
        row.extra["peak_MB"] = peak_extra_mb(fn, device)
        if row.provider != "torch materialised" and expected is not None:
            row.extra["same_as_reference"] = all(torch.equal(a, b) for a, b in zip(fn(), expected))


def attack_provider(provider: str, model: nn.Module, x: torch.Tensor, target: torch.Tensor, classes: int):
    """A function (images, labels, targets) -> adversarial images, or why `provider` cannot run."""
    if provider == "nemesis_fast":
        attack = JSMA(model, THETA, GAMMA)
        return lambda images, labels, targets: attack(images, labels, targets)
    if provider == "torchattacks":
        try:
            import torchattacks
        except ImportError:
            return "torchattacks not installed (pip install torchattacks)"
        attack = torchattacks.JSMA(model, theta=THETA, gamma=GAMMA)

        def run_torchattacks(images, labels, targets):
            attack.set_mode_targeted_by_function(lambda _images, _labels: targets, quiet=True)
            return attack(images, labels)

        return run_torchattacks
    classifier = art_classifier(model, x, classes)
    if isinstance(classifier, str):
        return classifier
    from art.attacks.evasion import SaliencyMapMethod

    attack = SaliencyMapMethod(classifier, theta=THETA, gamma=GAMMA, batch_size=x.shape[0], verbose=False)

    def run_art(images, labels, targets):
        one_hot = torch.nn.functional.one_hot(targets, classes).cpu().numpy()
        return torch.from_numpy(attack.generate(images.cpu().numpy(), one_hot)).to(images.device)

    return run_art


def timed_once(fn: Callable[[], object], device: torch.device) -> tuple[float, object]:
    """(milliseconds, result) of one call of `fn`: the attacks run long enough for one call to be timed."""
    out = []
    ms = time_ms(lambda: out.append(fn()), device, warmup=0, min_reps=1, min_seconds=0.0)
    return ms, out[-1]


def attack_rows(
    report: Report, case: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, limits: dict[str, int]
) -> None:
    """One row per provider: time per image, targeted success and mean L0 of the successful images; the rows of
    the peers, which run on the first few images only, also give nemesis_fast's figures on those images. Every
    provider makes one warm-up call on the first image before it is timed (kernels, lazy imports, cuDNN); one that
    raises gets a row with no time and the note "failed: <Type>: <message>"."""
    target = (y + 1) % 10
    rows = []
    outcomes = {}  # provider -> (success, L0) per image
    few = min(len(x), limits.get("torchattacks", len(x)))  # the baseline's images, for speed-ups on the same images
    for provider in ATTACK_PROVIDERS:
        fn = attack_provider(provider, model, x, target, 10)
        if isinstance(fn, str):
            rows.append(Row(case, provider, None, note=fn, item_name="image", baseline="torchattacks"))
            continue
        count = min(len(x), limits.get(provider, len(x)))
        row, outcome = _attack_row(case, provider, fn, model, (x, y, target), count, few, report.device)
        if outcome is not None:
            outcomes[provider] = outcome
        rows.append(row)
    base = next((r for r in rows if r.provider == "torchattacks" and r.ms), None)
    for row in rows:
        if base is not None and row.ms:
            row.speedup = same_images_speedup(base, row)
        if row.ms and row.provider != "nemesis_fast" and "nemesis_fast" in outcomes:
            success, l0 = (v[: row.extra["images"]] for v in outcomes["nemesis_fast"])
            row.extra |= {f"nemesis_fast_{k}": v for k, v in _success_and_l0(success, l0).items()}
        report.add(row)


def _attack_row(
    case: str,
    provider: str,
    fn: Callable[..., torch.Tensor],
    model: nn.Module,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    count: int,
    few: int,
    device: torch.device,
) -> tuple[Row, tuple[torch.Tensor, torch.Tensor] | None]:
    """The row of `provider` (`fn`: images, labels, targets -> adversarial images) on the first `count` images of
    `data` (x, y, targets), after a warm-up call on the first image, and on the first `few` where `count` is more;
    with its success and L0 per image (None where it failed: then a row with no time, saying why)."""
    x, y, target = data
    images, targets = x[:count], target[:count]
    failures: dict[str, str] = {}

    def timed_on(n: int) -> Callable[[], tuple[float, object]]:
        return partial(timed_once, partial(fn, x[:n], y[:n], target[:n]), device)

    attempt(provider, partial(fn, x[:1], y[:1], target[:1]), failures)  # warm-up, for every provider alike
    timed = None if failures else attempt(provider, timed_on(count), failures)
    if timed is None:
        return Row(case, provider, None, note=failures[provider], item_name="image", baseline="torchattacks"), None
    ms, x_adv = timed
    x_adv = x_adv.to(images.dtype)
    with torch.no_grad():
        success = model(x_adv).argmax(1) == targets
    l0 = (x_adv != images).flatten(1).sum(1).float()
    row = Row(case, provider, ms, items_per_s=count / (ms * 1e-3), item_name="image", baseline="torchattacks")
    row.extra = {"images": count, "ms_per_image": ms / count, **_success_and_l0(success, l0)}
    if count > few:
        same = attempt(provider, timed_on(few), failures)
        if same is None:
            row.note = f"on the first {few} images: {failures[provider]}"
        else:
            record_same_images(row, few, same[0])
    return row, (success, l0)


def _success_and_l0(success: torch.Tensor, l0: torch.Tensor) -> dict[str, float | None]:
    return {
        "success": success.float().mean().item(),
        "mean_L0": l0[success].mean().item() if success.any() else None,
    }


def imagenet_row(report: Report, batch: int = 8, gamma: float = 0.01) -> None:
    """JSMA on a batch of 3 x 224 x 224 images with a ResNet-8 of random weights (GPU only)."""
    from ..models import resnet

    device = report.device
    case = f"JSMA 3x224x224 (n=150528), ResNet-8, batch {batch}, gamma {gamma}"
    if device.type != "cuda":
        report.add(Row(case, "nemesis_fast", None, note="GPU only: about 1e10 pairs per image per step"))
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = resnet(8).to(device).eval()
    x = torch.rand(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    attack = JSMA(model, THETA, gamma)
    torch.cuda.reset_peak_memory_stats(device)
    failures: dict[str, str] = {}
    timed = attempt("nemesis_fast", partial(timed_once, lambda: attack.run(x, y, (y + 1) % 10), device), failures)
    if timed is None:
        report.add(Row(case, "nemesis_fast", None, note=failures["nemesis_fast"], item_name="image"))
        return
    ms, result = timed
    row = Row(case, "nemesis_fast", ms, items_per_s=batch / (ms * 1e-3), item_name="image")
    row.extra = {
        "ms_per_image": ms / batch,
        "success": result.success_rate,
        "mean_L0": result.l0[result.success].float().mean().item() if result.success.any() else None,
        "steps": result.iterations.max().item(),
        # All the device's memory at the peak (the model and the images included), not the extra of one call as
        # the pair search's peak_MB.
        "peak_total_MB": torch.cuda.max_memory_allocated(device) / 2**20,
    }
    report.add(row)


def run(
    device: torch.device | str,
    *,
    numel: int | None = None,
    sizes: tuple[int, ...] = (784, 3072),
    attack_images: int | None = None,
    mnist_root: str | None = None,
) -> Report:
    """The pair search at each n of `sizes` (batch `numel`: default 128 on a GPU; on a CPU 16 at n = 784 and
    4 at n = 3072), then the attacks on `attack_images` CIFAR-shaped images (default 256 on a GPU, 8 on a CPU;
    torchattacks and ART on fewer), and on a GPU the 3 x 224 x 224 case."""
    device = torch.device(device)
    gpu = device.type == "cuda"
    report = Report("jsma", device, settings={"theta": THETA, "gamma": GAMMA, "sizes": list(sizes)})
    for n in sizes:
        batch = problem_size(numel, 128 if gpu else 16 if n <= 784 else 4)
        for gradients in GRADIENTS:
            search_rows(report, batch, n, gradients)
    model = timing_model(device)
    count = attack_images or (256 if gpu else 8)
    x = torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    with torch.no_grad():
        y = model(x).argmax(1)
    limits = {"torchattacks": 2 if gpu else 1, "ART": 8 if gpu else 2}
    attack_rows(report, f"JSMA CIFAR CNN (random weights), {count} images", model, x, y, limits)
    mnist_root = mnist_root or os.environ.get("NEMESIS_FAST_MNIST")
    sets = mnist_sets(mnist_root) if mnist_root else None
    if isinstance(sets, str):  # a folder that cannot be read: a note row, and the suite goes on
        report.add(Row("JSMA MNIST CNN (trained)", "every provider", None, note=sets))
    elif sets is not None:
        model, x, y = mnist_model_and_data(sets, device, images=200 if gpu else 50)
        attack_rows(report, f"JSMA MNIST CNN (trained), {len(x)} test images", model, x, y, limits)
    imagenet_row(report)
    return report
