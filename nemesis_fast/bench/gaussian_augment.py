"""Benchmark of gaussian_augment: the fused native and Triton kernels against the eager PyTorch expression
(repeat, randn, add, clamp, cat), torch.compile of it, and ART's GaussianAugmentation on the host (numpy).

Cases, on CIFAR-shaped images (3, 32, 32) in [0, 1], 10 noisy copies plus the originals, sigma 0.3, clipped to
[0, 1]:
- float32 -> float32 (the paper's setting); bandwidth counts x read once and the output written once;
- uint8 -> bfloat16 (images as stored, half the bytes written);
- sigma = 0: the kernels skip the noise, so this is their time to move the bytes; the gap to the float32 case is
  the cost of drawing the noise (reported in a "time split" row). "x.repeat" writes the same bytes with torch.
- ART: host numpy, timed on a smaller batch (it is ~1000x slower); compare its images/s.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import ops
from .._backends.gaussian_augment import BACKENDS
from .harness import Case, Report, Row, problem_size

COPIES = 10
SIGMA = 0.3
CLIP = (0.0, 1.0)
IMAGE_SHAPE = (3, 32, 32)
PROVIDERS = ("native", "triton", "torch eager", "torch.compile", "ART (host numpy)")
ART_IMAGES = 200


def eager_expression(x: torch.Tensor, copies: int, sigma: float, out_dtype: torch.dtype) -> torch.Tensor:
    """The obvious PyTorch expression: repeat, randn, add, clamp, cat (and the uint8 scaling and output cast)."""
    xf = x.float().div_(255.0) if x.dtype == torch.uint8 else x
    noisy = xf.repeat(copies, *([1] * (x.dim() - 1)))
    noisy = torch.add(noisy, torch.randn_like(noisy), alpha=sigma).clamp_(*CLIP)
    return torch.cat([xf.clamp(*CLIP), noisy]).to(out_dtype)


def _art_provider(x: torch.Tensor, copies: int, sigma: float) -> Callable[[], object] | str:
    try:
        from art.defences.preprocessor import GaussianAugmentation
    except ImportError:
        return "ART is not installed (pip install adversarial-robustness-toolbox)"
    if x.dtype != torch.float32:
        return "ART works on float32 numpy arrays"
    host = x.cpu().numpy()
    art = GaussianAugmentation(sigma=sigma, augmentation=True, ratio=float(copies), clip_values=CLIP)
    return lambda: art(host)


def make_provider(
    provider: str, x: torch.Tensor, copies: int, sigma: float, out_dtype: torch.dtype
) -> Callable[[], object] | str:
    """A zero-argument callable augmenting x with `provider`, or why it cannot run here."""
    if provider in ("native", "triton"):
        reason = BACKENDS.unavailable_reason(provider, x.device.type)
        if provider == "triton" and x.device.type == "cpu":
            reason = "Triton kernels are timed on GPUs only (the CPU interpreter is a test tool)"
        if reason:
            return reason
        return lambda: ops.gaussian_augment(x, copies, sigma, CLIP, seed=1, out_dtype=out_dtype, backend=provider)
    if provider == "torch eager":
        return lambda: eager_expression(x, copies, sigma, out_dtype)
    if provider == "torch.compile":
        compiled = torch.compile(eager_expression, dynamic=False)
        return lambda: compiled(x, copies, sigma, out_dtype)
    return _art_provider(x, copies, sigma)


def _case(name: str, x: torch.Tensor, out_dtype: torch.dtype, providers, sigma: float = SIGMA) -> Case:
    rows = COPIES + 1
    written = rows * x.numel() * torch.empty((), dtype=out_dtype).element_size()
    return Case(
        name,
        {p: make_provider(p, x, COPIES, sigma, out_dtype) for p in providers},
        baseline="torch eager",
        bytes_moved=x.numel() * x.element_size() + written,
        items=x.shape[0],
        item_name="image",
    )


def _split_rows(full: list[Row], bytes_only: list[Row]) -> list[Row]:
    """How each kernel's time divides between moving the bytes (sigma = 0) and drawing the noise."""
    rows = []
    zero = {r.provider: r.ms for r in bytes_only if r.ms}
    for row in full:
        if row.provider in ("native", "triton") and row.ms and row.provider in zero:
            noise_ms = max(row.ms - zero[row.provider], 0.0)
            extra = {"bytes_ms": zero[row.provider], "noise_ms": noise_ms, "noise_share": noise_ms / row.ms}
            rows.append(Row("time split (float32)", row.provider, row.ms, extra=extra))
    return rows


def run(device: torch.device | str, *, numel: int | None = None) -> Report:
    """Runs the cases; `numel` is the number of input images (default 10,000 on a GPU, 128 on a CPU)."""
    device = torch.device(device)
    images = problem_size(numel, 10_000 if device.type == "cuda" else 128)
    settings = {"images": images, "image_shape": IMAGE_SHAPE, "copies": COPIES, "sigma": SIGMA, "clip": CLIP}
    report = Report("gaussian_augment", device, settings=settings)
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(images, *IMAGE_SHAPE, generator=generator).to(device)
    x_u8 = (x * 255).round().to(torch.uint8)
    kernels = ("native", "triton", "torch eager", "torch.compile")
    on_host = device.type == "cpu" and images <= 1000
    full = report.run(_case(f"float32->float32, {images} images", x, torch.float32, PROVIDERS if on_host else kernels))
    bytes_only = report.run(
        Case(
            "sigma=0 (bytes only)",
            {
                "native": make_provider("native", x, COPIES, 0.0, torch.float32),
                "triton": make_provider("triton", x, COPIES, 0.0, torch.float32),
                "x.repeat": lambda: x.repeat(COPIES + 1, 1, 1, 1),
            },
            baseline="x.repeat",
            bytes_moved=x.numel() * 4 * (COPIES + 2),
            items=images,
            item_name="image",
        )
    )
    for row in _split_rows(full, bytes_only):
        report.add(row)
    report.run(_case(f"uint8->bfloat16, {images} images", x_u8, torch.bfloat16, kernels))
    if not on_host:
        small = x[:ART_IMAGES]
        art_sized = ("native", "triton", "torch eager", "ART (host numpy)")
        report.run(_case(f"float32->float32, {len(small)} images (ART-sized)", small, torch.float32, art_sized))
    return report
