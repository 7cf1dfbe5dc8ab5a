"""Benchmark of bounded_relu: native and Triton kernels, saving the output (save="output") or a bit-packed mask
(save="mask") for backward, against eager and compiled F.hardtanh(x, 0, t).

Cases: forward, backward alone, forward+backward (torch.autograd.grad, no accumulation into .grad), forward on
one element fewer (a count that is not a multiple of 16: the Triton kernels' masked last block), and the memory a
CNN with the activation after every conv needs to train (peak on a GPU, saved bytes anywhere). Each save="mask" row
also gives its speed relative to the same backend's save="output", and every row the bytes per element its design
moves (float32: 20 for save="output" and eager hardtanh, 16.25 for save="mask", 18 for
torch.compile, which saves a 1-byte mask, forward+backward).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .._backends.bounded_relu import BACKENDS, MASKED_BACKENDS
from ..nn import BoundedReLU
from .harness import Case, Report, Row, problem_size, saved_tensor_bytes

T = 1.0
MASK = " save=mask"
PROVIDERS = ("native", "native" + MASK, "triton", "triton" + MASK, "torch eager", "torch.compile")
CASES = ("forward", "backward", "forward+backward")
ODD_SIZE_CASE = "forward, numel - 1"
ODD_SIZE_SKIPPED = {"torch.compile": "timed at numel only (a new size compiles again)"}  # not timed at numel - 1


def _split(provider: str) -> tuple[str, str]:
    """(backend or provider, save) of a provider name."""
    return (provider[: -len(MASK)], "mask") if provider.endswith(MASK) else (provider, "output")


def _unavailable(backend: str, save: str, device: torch.device) -> str | None:
    if backend == "triton" and device.type == "cpu":
        return "Triton kernels are timed on GPUs only (the CPU interpreter is a test tool)"
    table = MASKED_BACKENDS if save == "mask" else BACKENDS
    return table.unavailable_reason(backend, device.type)


def _masked_ops(backend: str):
    """The masked (forward, backward) ops of a backend: (x, t) -> (out, mask) and (grad, mask) -> grad_in."""
    suffix = "_triton" if backend == "triton" else ""
    ops_ = torch.ops.nemesis_fast
    return getattr(ops_, f"bounded_relu_masked{suffix}"), getattr(ops_, f"bounded_relu_masked_backward{suffix}")


def _activation(provider: str, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor] | str:
    """The forward function of `provider` (what autograd runs in training), or why it cannot run on `device`."""
    backend, save = _split(provider)
    if backend in ("native", "triton"):
        reason = _unavailable(backend, save, device)
        return reason or (lambda x: ops.bounded_relu(x, T, save=save, backend=backend))
    if provider == "torch eager":
        return lambda x: F.hardtanh(x, 0.0, T)
    return torch.compile(lambda x: F.hardtanh(x, 0.0, T), dynamic=False)


def _forward_only(provider: str, device: torch.device) -> Callable[[torch.Tensor], object] | str:
    """x -> output for `provider`; the masked providers also write the mask, as they do in training."""
    backend, save = _split(provider)
    if save == "mask":
        reason = _unavailable(backend, save, device)
        return reason or (lambda x: _masked_ops(backend)[0](x, T))
    return _activation(provider, device)


def _backward_only(
    provider: str, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | str:
    """(grad, x, saved) -> grad_in for `provider`, where saved is what its forward saved; or why it has no
    separate backward."""
    backend, save = _split(provider)
    if backend in ("native", "triton"):
        reason = _unavailable(backend, save, device)
        if reason:
            return reason
        if save == "mask":
            backward = _masked_ops(backend)[1]
            return lambda g, x, mask: backward(g, mask)
        ops_ = torch.ops.nemesis_fast
        op = ops_.bounded_relu_backward if backend == "native" else ops_.bounded_relu_backward_triton
        return lambda g, x, out: op(g, out, T)
    if provider == "torch eager":
        return lambda g, x, out: torch.ops.aten.hardtanh_backward(g, x, 0.0, T)
    return "torch.compile fuses backward into the compiled graph; see forward+backward"


def make_case(name: str, provider: str, x: torch.Tensor) -> Callable[[], object] | str:
    """A zero-argument callable doing case `name` with `provider` on input `x`, or why it cannot."""
    device = x.device
    grad = torch.randn_like(x)
    if name == "backward":
        fn = _backward_only(provider, device)
        if isinstance(fn, str):
            return fn
        backend, save = _split(provider)
        saved = _masked_ops(backend)[0](x, T)[1] if save == "mask" else F.hardtanh(x, 0.0, T)
        return lambda: fn(grad, x, saved)
    if name == "forward":
        forward = _forward_only(provider, device)
        return forward if isinstance(forward, str) else (lambda: forward(x))
    activation = _activation(provider, device)
    if isinstance(activation, str):
        return activation
    leaf = x.detach().requires_grad_(True)
    return lambda: torch.autograd.grad(activation(leaf), leaf, grad)


def bytes_per_element(name: str, provider: str, element_size: int) -> float:
    """Bytes per element that the design of `provider` must move in case `name`.

    Forward reads x and writes out; save="mask" also writes 1/8 byte, and torch.compile (when training) a 1-byte
    bool mask. Backward reads grad and what forward saved (out or x: one element; the mask: 1/8 byte; torch.compile:
    1 byte) and writes grad_in.
    """
    size = element_size
    _, save = _split(provider)
    if save == "mask":
        forward, backward = 2 * size + 0.125, 2 * size + 0.125
    elif provider == "torch.compile":
        forward, backward = 2 * size + (0 if name == "forward" else 1), 2 * size + 1
    else:
        forward, backward = 2 * size, 3 * size
    return {"forward": forward, "backward": backward, "forward+backward": forward + backward}[name]


def bytes_moved(name: str, x: torch.Tensor) -> dict[str, int]:
    """Bytes one call of each provider must move in case `name`."""
    return {p: round(bytes_per_element(name, p, x.element_size()) * x.numel()) for p in PROVIDERS}


def _compare_saves(rows: list[Row], name: str, element_size: int) -> None:
    """Notes each row's bytes per element, and each save="mask" row's speed relative to its save="output" row."""
    ms = {row.provider: row.ms for row in rows}
    for row in rows:
        if row.ms is None:
            continue
        row.extra["B/elem"] = bytes_per_element(name, row.provider, element_size)
        backend, save = _split(row.provider)
        if save == "mask" and ms.get(backend):
            row.note = f"{ms[backend] / row.ms:.2f}x the speed of {backend} save=output"


def _cnn(activation: Callable[[], nn.Module], channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    cin = 3
    for _ in range(4):
        layers += [nn.Conv2d(cin, channels, 3, padding=1), activation()]
        cin = channels
    return nn.Sequential(*layers, nn.Flatten(), nn.LazyLinear(10))


def memory_rows(device: torch.device, batch: int, channels: int = 64, size: int = 32) -> list[Row]:
    """Training memory of a CNN with each activation after every conv: saved bytes, and peak on a GPU."""
    rows = []
    activations = {
        "nn.ReLU": nn.ReLU,
        "BoundedReLU": lambda: BoundedReLU(T),
        "BoundedReLU save=mask": lambda: BoundedReLU(T, save="mask"),
        "nn.Hardtanh": lambda: nn.Hardtanh(0.0, T),
    }
    x = torch.rand(batch, 3, size, size, device=device)
    for name, make in activations.items():
        torch.manual_seed(0)
        model = _cnn(make, channels).to(device)
        model(x)  # materialise the lazy layer

        def train_step(model=model):
            model.zero_grad(set_to_none=True)
            model(x).logsumexp(1).sum().backward()

        extra = {"saved_MB": saved_tensor_bytes(lambda model=model: model(x).sum()) / 2**20}
        if device.type == "cuda":
            train_step()
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            train_step()
            torch.cuda.synchronize(device)
            extra["peak_MB"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        rows.append(Row(f"CNN train step, batch {batch}", name, None, extra=extra))
    base = rows[0].extra
    for row in rows:
        key = "peak_MB" if "peak_MB" in base else "saved_MB"
        row.note = f"{key} {row.extra[key] / base[key]:.3f}x of nn.ReLU"
    return rows


def run(device: torch.device | str, *, numel: int | None = None, dtype: torch.dtype = torch.float32) -> Report:
    device = torch.device(device)
    numel = problem_size(numel, 1 << 28 if device.type == "cuda" else 1 << 24)
    report = Report("bounded_relu", device, settings={"numel": numel, "dtype": str(dtype), "t": T})
    x = torch.randn(numel, device=device, dtype=dtype)
    # A CPU call takes tens of milliseconds: time more rounds there, so that the ratios of nearby providers (save=
    # "output" against save="mask") are not decided by a few noisy ones.
    min_seconds = 3.0 if device.type == "cpu" else 0.5
    for name in CASES:
        providers = {p: make_case(name, p, x) for p in PROVIDERS}
        case = Case(name, providers, baseline="torch eager", bytes_moved=bytes_moved(name, x), min_seconds=min_seconds)
        rows = report.run(case)
        _compare_saves(rows, name, x.element_size())
    # One element fewer: a count that is not a multiple of 16, where only whole blocks can move 16 bytes at a time.
    odd = x[:-1]
    providers = {p: ODD_SIZE_SKIPPED.get(p) or make_case("forward", p, odd) for p in PROVIDERS}
    bytes_odd = bytes_moved("forward", odd)
    case = Case(ODD_SIZE_CASE, providers, baseline="torch eager", bytes_moved=bytes_odd, min_seconds=min_seconds)
    _compare_saves(report.run(case), "forward", x.element_size())
    for row in memory_rows(device, batch=256 if device.type == "cuda" else 16):
        report.add(row)
    return report
