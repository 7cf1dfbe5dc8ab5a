"""Benchmark of bounded_relu: native and Triton kernels against eager and compiled F.hardtanh(x, 0, t).

Cases: forward, backward alone, forward+backward (torch.autograd.grad, no accumulation into .grad), and the
memory a CNN with the activation after every conv needs to train (peak on a GPU, saved bytes anywhere).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from .._backends.bounded_relu import BACKENDS
from ..nn import BoundedReLU
from .harness import Case, Report, Row, saved_tensor_bytes

T = 1.0
PROVIDERS = ("native", "triton", "torch eager", "torch.compile")
CASES = ("forward", "backward", "forward+backward")


def _activation(provider: str, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor] | str:
    """The forward function of `provider`, or why it cannot run on `device`."""
    if provider in ("native", "triton"):
        reason = BACKENDS.unavailable_reason(provider, device.type)
        if provider == "triton" and device.type == "cpu":
            reason = "Triton kernels are timed on GPUs only (the CPU interpreter is a test tool)"
        return reason or (lambda x: ops.bounded_relu(x, T, backend=provider))
    if provider == "torch eager":
        return lambda x: F.hardtanh(x, 0.0, T)
    return torch.compile(lambda x: F.hardtanh(x, 0.0, T), dynamic=False)


def _backward_only(
    provider: str, device: torch.device
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | str:
    """(grad, x, out) -> grad_in for `provider`, or why it has no separate backward."""
    if provider == "native" or provider == "triton":
        reason = _activation(provider, device)
        if isinstance(reason, str):
            return reason
        ops_ = torch.ops.nemesis_fast
        op = ops_.bounded_relu_backward if provider == "native" else ops_.bounded_relu_backward_triton
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
        out = F.hardtanh(x, 0.0, T)
        return lambda: fn(grad, x, out)
    activation = _activation(provider, device)
    if isinstance(activation, str):
        return activation
    if name == "forward":
        return lambda: activation(x)
    leaf = x.detach().requires_grad_(True)
    return lambda: torch.autograd.grad(activation(leaf), leaf, grad)


def bytes_moved(name: str, x: torch.Tensor) -> int:
    """Bytes the design must move: forward reads x and writes out; backward reads grad and out, writes grad_in."""
    per_element = {"forward": 2, "backward": 3, "forward+backward": 5}[name]
    return per_element * x.numel() * x.element_size()


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
    numel = numel or (1 << 28 if device.type == "cuda" else 1 << 24)
    report = Report("bounded_relu", device, settings={"numel": numel, "dtype": str(dtype), "t": T})
    x = torch.randn(numel, device=device, dtype=dtype)
    for name in CASES:
        providers = {p: make_case(name, p, x) for p in PROVIDERS}
        report.run(Case(name, providers, baseline="torch eager", bytes_moved=bytes_moved(name, x)))
    for row in memory_rows(device, batch=256 if device.type == "cuda" else 16):
        report.add(row)
    return report
