"""bounded_relu's mask form (save="mask"): its (out, mask) ops against the reference bit for bit, the mask's bit
layout, the gradient in any layout, one saved bit per element, the plain op where no gradient is needed, and the
native kernel's SIMD widths and threads."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
from _bounded_relu_cases import CASES, assert_same, assert_same_bits, layouts, masked_pair, special_values
from _support import require_backend
from torch.utils._python_dispatch import TorchDispatchMode

import nemesis_fast as nf
from nemesis_fast import reference
from nemesis_fast._backends.bounded_relu import MASKED_BACKENDS
from nemesis_fast._checks import FLOAT_DTYPES
from nemesis_fast.bench.harness import saved_tensor_bytes
from nemesis_fast.reference.bounded_relu import mask_bytes


@pytest.mark.parametrize("backend,device", CASES)
def test_masked_ops_match_the_reference(backend, device):
    """The (out, mask) pair and the backward from the mask, element for element and bit for bit."""
    require_backend(MASKED_BACKENDS, backend, device)
    forward, backward = masked_pair(backend)
    for dtype in FLOAT_DTYPES:
        for name, x in [*layouts(device).items(), ("special", special_values(device))]:
            for t in (1.0, 0.3):
                x = x.to(dtype)
                out, mask = forward(x, t)
                expected_out, expected_mask = reference.bounded_relu_masked(x, t)
                assert_same(out, expected_out)
                assert out.stride() == expected_out.stride(), name
                assert mask.dtype == torch.uint8 and mask.shape == (mask_bytes(x.numel()),)
                assert torch.equal(mask, expected_mask), (name, dtype, t)
                grad = torch.randn_like(out)
                if grad.numel():
                    grad[(0,) * grad.dim()] = float("nan")  # where the mask blocks it, NaN becomes 0 as well
                grad_in = backward(grad, mask)
                assert grad_in.stride() == grad.stride()
                assert_same_bits(grad_in, reference.bounded_relu_masked_backward(grad, expected_mask))


@pytest.mark.parametrize("backend,device", CASES)
def test_masked_ops_at_span_and_byte_boundaries(backend, device):
    """Sizes on either side of a mask byte (8 elements) and of the CUDA kernels' spans (256 elements), from a start
    16-byte aligned and from one element into the storage (a dense view there: the kernels' unvectorised path), in
    every dtype; on a GPU also more spans than the CUDA grid's warps (its grid-stride loop)."""
    require_backend(MASKED_BACKENDS, backend, device)
    forward, backward = masked_pair(backend)
    generator = torch.Generator().manual_seed(0)
    sizes = [1, 7, 8, 9, 255, 256, 257, 263, 512, 1033]
    values, grads = (torch.randn(2, 1 + max(sizes), generator=generator) * 2).to(device)
    cases = [(dtype, n, start) for dtype in FLOAT_DTYPES for n in sizes for start in (0, 1)]
    if device == "cuda":  # 132 SMs x 32 blocks x 8 warps take 8.65 million elements a sweep on an H100 or H200
        values, grads = (torch.randn(2, 1 + 9_000_003, generator=generator) * 2).to(device)
        cases.append((torch.float32, 9_000_003, 1))
    for dtype, n, start in cases:
        x, grad = values.to(dtype)[start : start + n], grads.to(dtype)[start : start + n]
        out, mask = forward(x, 0.7)
        expected_out, expected_mask = reference.bounded_relu_masked(x, 0.7)
        assert_same(out, expected_out)
        assert torch.equal(mask, expected_mask), (dtype, n, start)
        assert_same_bits(backward(grad, mask), reference.bounded_relu_masked_backward(grad, expected_mask))


def hand_packed(values: list[float], t: float) -> list[int]:
    """The mask of `values` (in memory order) packed by hand: bit j of byte k for element 8k + j."""
    return [
        sum(1 << j for j, v in enumerate(values[8 * k : 8 * k + 8]) if 0 < v < t) for k in range((len(values) + 7) // 8)
    ]


@pytest.mark.parametrize("backend,device", CASES)
def test_mask_bit_layout(backend, device):
    """Bit j of byte k is element 8k + j in memory order; the bits past the last element are 0."""
    require_backend(MASKED_BACKENDS, backend, device)
    forward, _ = masked_pair(backend)
    values = [0.5, -1.0, 0.5, 0.5, 2.0, 0.0, 0.5, float("nan"), 0.5, 1.0, 0.25]
    assert hand_packed(values, 1.0) == [0b01001101, 0b00000101]
    _, mask = forward(torch.tensor(values, device=device), 1.0)
    assert mask.tolist() == [0b01001101, 0b00000101]
    # A transposed and a channels_last tensor: memory order is the order of the underlying storage.
    storage = torch.randn(4, 5, device=device)
    _, mask = forward(storage.t(), 0.7)
    assert mask.tolist() == hand_packed(storage.flatten().tolist(), 0.7)
    x = torch.randn(2, 3, 5, 7, device=device).to(memory_format=torch.channels_last)
    _, mask = forward(x, 0.7)
    assert mask.tolist() == hand_packed(x.permute(0, 2, 3, 1).flatten().tolist(), 0.7)
    # A non-dense view is read in its logical order (it is made contiguous).
    view = storage[:, ::2]
    _, mask = forward(view, 0.7)
    assert mask.tolist() == hand_packed(view.flatten().tolist(), 0.7)


@pytest.mark.parametrize("backend,device", CASES)
def test_masked_backward_takes_the_gradient_in_any_layout(backend, device):
    """Autograd brings the incoming gradient to the output's strides, which the mask follows."""
    require_backend(MASKED_BACKENDS, backend, device)
    x = torch.randn(2, 3, 5, 7, device=device).to(memory_format=torch.channels_last).requires_grad_(True)
    out = nf.bounded_relu(x, 0.7, save="mask", backend=backend)
    expected = reference.bounded_relu(x, 0.7)
    for grad_out in (torch.randn(out.shape, device=device), torch.ones(1, device=device).expand(out.shape)):
        (grad,) = torch.autograd.grad(out, x, grad_out, retain_graph=True)
        (expected_grad,) = torch.autograd.grad(expected, x, grad_out, retain_graph=True)
        assert_same(grad, expected_grad)
    (grad,) = torch.autograd.grad(out.sum(), x)  # an expanded gradient, stride 0
    assert_same(grad, ((x > 0) & (x < 0.7)).to(x.dtype))


@pytest.mark.triton
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_triton_kernels_write_nothing_past_the_end(device):
    """The four Triton kernels, given buffers longer than their n elements: each writes the n elements (and the
    ceil(n / 8) mask bytes) and nothing after them. A bound off by one at the last block's tail (offsets <= n, or a
    mask byte stored for element n when n is a multiple of 8) writes past the ops' own allocations, where no result
    of the ops shows it."""
    require_backend(MASKED_BACKENDS, "triton", device)
    from nemesis_fast.triton import bounded_relu as kernels

    spare, sentinel = 16, 99
    top = kernels.threshold_bits(1.0, torch.float32)
    # The last mask byte whole, and partial; then whole blocks (the kernels' unmasked path) alone and with a partial
    # block after them (4096: BLOCK elements, 8 * BYTES for the masked pair).
    assert kernels.BLOCK == 8 * kernels.BYTES == 4096
    for n in (40, 37, 4096, 4096 + 37):
        generator = torch.Generator().manual_seed(n)
        x, grad = (torch.randn(2, n + spare, generator=generator) * 2).to(device)
        expected_out, expected_mask = reference.bounded_relu_masked(x[:n].cpu(), 1.0)
        expected_grad = reference.bounded_relu_masked_backward(grad[:n].cpu(), expected_mask)

        def buffer(size: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
            return torch.full((size + spare,), sentinel, dtype=dtype, device=device)

        grid, masked_grid = (-(-n // kernels.BLOCK),), (-(-n // (8 * kernels.BYTES)),)
        out, grad_in, masked_out, masked_grad_in = buffer(n), buffer(n), buffer(n), buffer(n)
        mask = buffer(mask_bytes(n), torch.uint8)
        kernels._forward_kernel[grid](x, out, top, n, BLOCK=kernels.BLOCK)
        kernels._backward_kernel[grid](grad, out, grad_in, top, n, BLOCK=kernels.BLOCK)
        kernels._masked_forward_kernel[masked_grid](x, masked_out, mask, top, n, BYTES=kernels.BYTES)
        kernels._masked_backward_kernel[masked_grid](grad, mask, masked_grad_in, n, BYTES=kernels.BYTES)
        results = {
            "forward": (out, expected_out),
            "backward": (grad_in, expected_grad),
            "masked forward": (masked_out, expected_out),
            "mask": (mask, expected_mask),
            "masked backward": (masked_grad_in, expected_grad),
        }
        for name, (result, wanted) in results.items():
            result = result.cpu()
            assert torch.equal(result[: len(wanted)], wanted), (name, n)
            assert (result[len(wanted) :] == sentinel).all(), (name, n, result[len(wanted) :].tolist())


def saved_tensors(fn) -> list[torch.Tensor]:
    """The tensors autograd saves for backward while `fn` runs."""
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        fn()
    return saved


@pytest.mark.parametrize("backend,device", CASES)
def test_mask_saves_one_bit_per_element(backend, device):
    require_backend(MASKED_BACKENDS, backend, device)
    x = torch.randn(3, 5, 7, device=device, requires_grad=True)  # 105 elements: 14 bytes, the last one partial
    outputs = []
    (mask,) = saved_tensors(lambda: outputs.append(nf.bounded_relu(x, 0.7, save="mask", backend=backend)))
    assert mask.dtype == torch.uint8 and mask.shape == (14,) and mask.untyped_storage().nbytes() == 14
    for tensor in (x, outputs[0]):
        assert mask.untyped_storage().data_ptr() != tensor.untyped_storage().data_ptr()
    assert saved_tensor_bytes(lambda: nf.bounded_relu(x, 0.7, save="mask", backend=backend)) == math.ceil(105 / 8)
    if backend != "torch":  # the reference keeps what torch.where and clamp keep
        assert saved_tensor_bytes(lambda: nf.bounded_relu(x, 0.7, backend=backend)) == 105 * 4
    # Without a gradient to compute, no mask is made.
    with torch.no_grad():
        assert saved_tensors(lambda: nf.bounded_relu(x, 0.7, save="mask", backend=backend)) == []


class OpCounter(TorchDispatchMode):
    """The nemesis_fast ops called under it."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.namespace == "nemesis_fast":
            self.ops.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_save_mask_without_a_gradient_runs_the_plain_op():
    require_backend(MASKED_BACKENDS, "native", "cpu")
    x = torch.randn(3, 9)
    for context, requires_grad, expected in (
        (torch.no_grad, True, "bounded_relu.default"),
        (torch.enable_grad, False, "bounded_relu.default"),
        (torch.enable_grad, True, "bounded_relu_masked.default"),
    ):
        with context(), OpCounter() as counter:
            nf.bounded_relu(x.clone().requires_grad_(requires_grad), save="mask", backend="native")
        assert counter.ops == [expected]


MASKED_CHECKSUM = (
    "import hashlib\n"
    "from nemesis_fast.bench.bits import SAME_WIDTH_INTEGER\n"
    "x = torch.linspace(-2, 3, 1001)\n"
    "x = torch.cat([x, torch.tensor([0.0, -0.0, 1.0, float('nan'), -float('nan'), float('inf'), -float('inf')])])\n"
    "parts = []\n"
    "for dtype in (torch.float32, torch.float64, torch.float16):\n"
    "    for n in (1008, 1000, 17, 15, 7):\n"
    "        out, mask = torch.ops.nemesis_fast.bounded_relu_masked(x[-n:].to(dtype), 1.0)\n"
    "        parts.append((out.view(SAME_WIDTH_INTEGER[dtype]).tolist(), mask.tolist()))\n"
    "checksum = hashlib.sha256(repr(parts).encode()).hexdigest()\n"
)


def test_native_masked_simd_widths_agree():
    """The AVX2 and the portable masked forward loops give the same bits (NEMESIS_FAST_CPU_SIMD=scalar selects the
    portable one), over sizes that leave each loop a remainder."""
    require_backend(MASKED_BACKENDS, "native", "cpu")
    namespace = {"torch": torch, "nf": nf}
    exec(MASKED_CHECKSUM, namespace)
    script = "import torch, nemesis_fast as nf\n" + MASKED_CHECKSUM + "print(checksum)\n"
    env = {**os.environ, "NEMESIS_FAST_CPU_SIMD": "scalar"}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == namespace["checksum"]


def test_native_masked_tiles_clear_the_bits_past_the_last_element():
    """The portable masked forward (the 16-bit formats) packs flags in tiles of 1024 elements: in a last, partial
    tile the flags past the last element are cleared, not left over from the full tile before it."""
    require_backend(MASKED_BACKENDS, "native", "cpu")
    for dtype in (torch.float16, torch.bfloat16):
        for extra in range(1, 8):
            x = torch.full((1024 + extra,), 0.5, dtype=dtype)
            _, mask = torch.ops.nemesis_fast.bounded_relu_masked(x, 1.0)
            assert mask.tolist() == [255] * 128 + [(1 << extra) - 1], (dtype, extra)


def test_native_masked_result_does_not_depend_on_threads():
    """Several threads, each writing whole mask bytes, give what one thread gives (odd size, many tiles)."""
    require_backend(MASKED_BACKENDS, "native", "cpu")
    x = torch.randn(2 * 65536 + 13)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.ops.nemesis_fast.bounded_relu_masked(x, 0.5)
        torch.set_num_threads(max(2, threads))
        many = torch.ops.nemesis_fast.bounded_relu_masked(x, 0.5)
    finally:
        torch.set_num_threads(threads)
    expected = reference.bounded_relu_masked(x, 0.5)
    for a, b, c in zip(one, many, expected):
        assert torch.equal(a, c) and torch.equal(b, c)
    grad = torch.randn_like(x)
    assert torch.equal(
        torch.ops.nemesis_fast.bounded_relu_masked_backward(grad, one[1]),
        reference.bounded_relu_masked_backward(grad, expected[1]),
    )
