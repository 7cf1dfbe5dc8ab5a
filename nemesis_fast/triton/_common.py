"""Helpers shared by the Triton ops: memory layout, and the kernel launch."""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch._subclasses.fake_tensor import is_fake, unset_fake_temporarily
from torch.library import wrap_triton

from . import INTERPRET


def is_dense(x: torch.Tensor) -> bool:
    """Whether `x` fills a gap-free block of memory without overlap, in any dimension order.

    Such a tensor and `torch.empty_like` of it put element i at the same memory offset, so an elementwise
    kernel can treat both as flat arrays.
    """
    expected = 1
    for size, stride in sorted(((s, st) for s, st in zip(x.shape, x.stride()) if s != 1), key=lambda p: p[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def as_dense(x: torch.Tensor) -> torch.Tensor:
    """`x` itself when it is dense, else one contiguous copy of it."""
    return x if is_dense(x) else x.contiguous()


def launch(kernel, grid: tuple[int, ...], *args, **kwargs) -> None:
    """Launches a Triton kernel so that torch.compile can trace it (wrap_triton).

    Under TRITON_INTERPRET=1 the kernel is a plain Python function that would read the data of fake
    tensors, so it is not run while shapes are being traced (opcheck's fake-tensor checks). torch.compile cannot
    trace it there at all (its graph would hold no kernel, and its outputs uninitialised memory), so compiling
    raises.
    """
    tensors = [a for a in args if isinstance(a, torch.Tensor)]
    if INTERPRET and any(is_fake(a) for a in tensors):
        # torch before 2.14 runs dynamo's fake pass with is_compiling() False, but inside a TracingContext
        if torch.compiler.is_compiling() or torch._guards.TracingContext.try_get() is not None:
            raise RuntimeError(
                "nemesis_fast: torch.compile cannot trace the Triton backend under TRITON_INTERPRET=1 (the "
                "interpreter runs kernels on real data only); compile with backend='native' or 'torch', or on a GPU"
            )
        return
    if INTERPRET:  # the kernel is a plain Python function there (torch before 2.13's wrap_triton refuses it)
        kernel[grid](*args, **kwargs)
        return
    cuda = next((a.device for a in tensors if a.device.type == "cuda"), None)
    if cuda is None:
        wrap_triton(kernel)[grid](*args, **kwargs)
        return
    with torch.cuda.device(cuda):  # Triton launches on the current device and its current stream
        wrap_triton(kernel)[grid](*args, **kwargs)


@triton.jit
def _maximum_probe(x_ptr):
    tl.store(x_ptr, tl.maximum(tl.load(x_ptr), 0.0))


@functools.cache
def interpreter_maximum_ignores_nan() -> bool:
    """Whether Triton's interpreter takes tl.maximum(NaN, 0) as 0, as the compiled code does (IEEE maxNum): the
    interpreter of Triton 3.8 does, that of 3.6 returns NaN. Asked once, by running a one-element kernel on the CPU;
    True where kernels are compiled (no interpreter)."""
    if not INTERPRET:
        return True
    with unset_fake_temporarily():  # the first ask may come while an op's shapes are traced with fake tensors
        x = torch.tensor([float("nan")])
        _maximum_probe[(1,)](x)
        return x.item() == 0.0
