"""The package's CUDA kernels (csrc/cuda/*.cu) run on the CPU by the emulator of tests/cuda_emulator, against the
reference: on machines without a GPU these are the only runs of that code. Each case runs under three schedules:
blocks and threads in order, reversed on one SM with three blocks interleaved, and shuffled on 132 SMs (an
H200's grid); each fills unwritten memory with another byte pattern (see emu.h). What the emulator does not
cover: timing, the memory model between barriers, the GPU's own arithmetic units."""

from __future__ import annotations

import _cuda_emulator as emulator
import pytest
import torch
from _bounded_relu_cases import assert_same_bits, layouts, special_values
from _gaussian_augment_cases import assert_matches, expected, op_arguments
from test_jsma_saliency_search import (
    GRADIENT_KINDS,
    assert_same,
    beyond_the_seeds_case,
    gradient_like_case,
    no_valid_seed_pair_case,
    planted_across_tiles,
    random_case,
    tying_the_seeds_case,
)

from nemesis_fast import reference
from nemesis_fast._checks import FLOAT_DTYPES

SCHEDULES = {
    "in order": {"order": "forward", "fill": 0x3C},
    "reversed, one SM, three blocks at once": {
        "order": "reverse",
        "multiprocessors": 1,
        "concurrent_blocks": 3,
        "fill": 0x7F,
    },
    "shuffled, 132 SMs": {"order": "shuffled", "seed": 1, "multiprocessors": 132, "concurrent_blocks": 4, "fill": 0xFF},
}
CUDA_TILE = 256  # kTile of csrc/cuda/jsma_saliency_search.cu


@pytest.fixture(params=list(SCHEDULES))
def cuda(request):
    """torch.ops.nemesis_fast_emu under one of the schedules."""
    ops = emulator.load()
    emulator.configure(**SCHEDULES[request.param])
    return ops


def jsma_matches_reference(cuda, t, o, d, increase, context=""):
    assert_same(
        cuda.jsma_saliency_search(t, o, d, increase), reference.jsma_saliency_search(t, o, d, increase), context
    )


def test_jsma_random_inputs(cuda):
    shapes = [(3, 37), (2, 130), (2, 600), (1, 513), (4, 1), (2, 0), (0, 5), (1, 2)]
    for k, (batch, n) in enumerate(shapes):
        for ties in (False, True):
            for nans in (False, True):
                t, o, d = random_case(batch, n, seed=k, ties=ties, nans=nans)
                for increase in (True, False):
                    jsma_matches_reference(cuda, t, o, d, increase, (batch, n, ties, nans, increase))


def test_jsma_pairs_that_decide_far_apart(cuda):
    """Ties between column tiles, pairs scoring 0 only, an invalid pair with the highest product, no valid pair,
    a NaN column before the best q: planted across the CUDA kernel's tiles of 256."""
    t, o, answers = planted_across_tiles(CUDA_TILE)
    d = torch.ones_like(t, dtype=torch.bool)
    p, q, found = cuda.jsma_saliency_search(t, o, d, True)
    assert list(zip(p.tolist(), q.tolist(), found.tolist())) == answers
    jsma_matches_reference(cuda, -t, -o, d, False)


@pytest.mark.parametrize("kind", GRADIENT_KINDS)
def test_jsma_gradient_like_inputs(cuda, kind):
    """Heavy tails, ties, (anti)correlated, sparse, tiny (scores below the fill pattern's 0.0115, so a threshold
    left unset would prune them), huge and overflowing gradients, over several tiles and chunks."""
    for k, (batch, n) in enumerate(((5, 64), (3, 1000), (1, 3072))):
        t, o = gradient_like_case(kind, batch, n, seed=k)
        for keep in (1.0, 0.7):
            d = torch.rand(batch, n, generator=torch.Generator().manual_seed(k)) < keep
            jsma_matches_reference(cuda, t, o, d, keep == 1.0, (n, keep))


def test_jsma_planted_and_tied_pairs(cuda):
    for t, o, d in (beyond_the_seeds_case(), tying_the_seeds_case(), no_valid_seed_pair_case()):
        for increase in (True, False):
            jsma_matches_reference(cuda, t if increase else -t, o if increase else -o, d, increase)


def test_jsma_every_dtype_and_layout(cuda):
    """16-bit and float64 gradients (searched in float32) and strided ones (the kernels index by strides)."""
    t, o, d = random_case(3, 700, seed=4, ties=True)
    for dtype in FLOAT_DTYPES:
        jsma_matches_reference(cuda, t.to(dtype), o.to(dtype), d, True, dtype)
    wide_t, wide_o, wide_d = random_case(700, 6, seed=5)
    jsma_matches_reference(cuda, wide_t.t(), wide_o.t(), wide_d.t(), False, "transposed")
    jsma_matches_reference(cuda, t[:, ::2], o[:, ::2], d[:, ::2], True, "every other feature")


@pytest.mark.parametrize(
    "batch,n,multiprocessors,chunks",
    [(1, 3072, 132, 78), (128, 3072, 132, 8), (2, 600, 1, 4), (1, 2, 1, 1)],
)
def test_jsma_grid(batch, n, multiprocessors, chunks):
    """The launches the host code makes: tile maxima (a block per sample and tile), the search (a block per
    sample and chunk, the chunks from the occupancy API's 8 blocks per SM) and the finish (128 samples a block);
    the first two are examples of chunks_per_sample's comment. An empty domain keeps the blocks short."""
    cuda = emulator.load()
    emulator.configure(multiprocessors=multiprocessors, blocks_per_sm=8)
    t, o, d = random_case(batch, n, seed=batch, keep=0.0)
    p, q, found = cuda.jsma_saliency_search(t, o, d, True)
    assert p.tolist() == q.tolist() == [-1] * batch and found.tolist() == [False] * batch
    tiles = (n + CUDA_TILE - 1) // CUDA_TILE
    counted = emulator.counters()
    assert counted["launches"] == 3
    assert counted["blocks"] == batch * tiles + batch * chunks + (batch + 127) // 128


def test_bounded_relu_pair(cuda):
    """The output form: ATen's loop (here its CPU loop) around the kernels' lambdas, every dtype and layout."""
    for dtype in FLOAT_DTYPES:
        for x in (*layouts("cpu").values(), special_values("cpu"), torch.tensor([-0.0, 0.0, -0.0, 0.5])):
            x = x.to(dtype)
            for t in (0.7, 1.0):
                out = cuda.bounded_relu(x, t)
                assert_matches(out, reference.bounded_relu(x, t))  # a NaN for NaN (its bits may differ), -0 for -0
                grad = torch.randn_like(x)
                wanted = torch.ops.nemesis_fast.bounded_relu_backward(grad, out, t)
                assert_same_bits(cuda.bounded_relu_backward(grad, out, t), wanted)


def test_bounded_relu_masked_pair(cuda):
    """Sizes around a mask byte and a span of 256, a size of several grid sweeps (one SM: 32 blocks of 8 warps,
    65,536 elements a sweep), from an aligned start and one element in (the unvectorised path), every dtype;
    special values; transposed and channels_last inputs (memory order)."""
    generator = torch.Generator().manual_seed(0)
    sizes = [1, 7, 8, 9, 255, 256, 257, 263, 512, 1033, 200_003]
    values = torch.randn(1 + max(sizes), generator=generator) * 2
    cases = [((dtype, n, s), values.to(dtype)[s : s + n]) for dtype in FLOAT_DTYPES for n in sizes for s in (0, 1)]
    cases += list({**layouts("cpu"), "special": special_values("cpu"), "zeros": torch.tensor([-0.0, 0.0])}.items())
    for context, x in cases:
        out, mask = cuda.bounded_relu_masked(x, 0.7)
        expected_out, expected_mask = reference.bounded_relu_masked(x, 0.7)
        assert_matches(out, expected_out)
        assert torch.equal(mask, expected_mask), context
        grad = torch.randn(out.shape, generator=generator, dtype=out.dtype).as_strided(out.shape, out.stride())
        assert_same_bits(
            cuda.bounded_relu_masked_backward(grad, mask), reference.bounded_relu_masked_backward(grad, expected_mask)
        )


def test_gaussian_augment(cuda):
    """Every input and output dtype, whole and partial Philox groups (features % 4), aligned and unaligned inputs
    (the vector and scalar paths), with and without the original, clipping, noise and an offset; few samples, so
    that the rows are split over gridDim.y."""
    flat = torch.rand(5 * 85 + 1, generator=torch.Generator().manual_seed(3))
    settings = [
        {},
        {"copies": 0},
        {"include_original": False, "copies": 4},
        {"sigma": 0.0},
        {"clip_min": None, "clip_max": None, "sigma": 2.0},
        {"offset": 2**40 + 3, "seed": -5},
        {"out_dtype": torch.float16},
        {"out_dtype": torch.float64},
    ]
    for dtype in (*FLOAT_DTYPES, torch.uint8):
        values = (flat * 255).round().to(torch.uint8) if dtype == torch.uint8 else flat.to(dtype)
        inputs = {
            "aligned, features % 4 == 0": values[: 5 * 84].view(5, 3, 7, 4),
            "one element into the storage": values[1 : 5 * 84 + 1].view(5, 84),
            "features % 4 == 1": values[: 5 * 85].view(5, 85),
            "one sample": values[:6].view(1, 6),
        }
        for x in inputs.values():
            for kwargs in settings:
                assert_matches(cuda.gaussian_augment(x, *op_arguments(**kwargs)), expected(x, **kwargs))
    emulator.configure(multiprocessors=132)  # 4 x 132 x 2048 threads wanted: one block per row
    cuda.gaussian_augment(flat[:6].view(1, 6), *op_arguments())
    assert emulator.counters()["blocks"] == 1 + 3


def test_gaussian_augment_rows_over_a_short_grid_y():
    """CIFAR-shaped images on one SM (8,192 threads wanted): 4 x 768 groups make 12 blocks of 256 threads in x and
    ceil(8192 / 3072) = 3 in y, so each y-block takes every third of the 11 rows (the kernel's row loop)."""
    cuda = emulator.load()
    emulator.configure(multiprocessors=1, order="shuffled", concurrent_blocks=3)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    settings = {"copies": 10, "sigma": 0.3, "clip_min": None, "clip_max": None, "seed": 1}
    assert_matches(cuda.gaussian_augment(x, *op_arguments(**settings)), expected(x, **settings))
    assert emulator.counters()["blocks"] == 12 * 3
