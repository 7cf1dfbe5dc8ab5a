"""The CUDA emulator of tests/cuda_emulator, on its own kernels: each built-in against what CUDA defines, a race
that only a barrier prevents, and each misuse it must refuse (see test_cuda_emulated.py for the package's
kernels on it)."""

from __future__ import annotations

import _cuda_emulator as emulator
import pytest


@pytest.fixture(scope="module")
def ops():
    return emulator.load()


def test_coordinates_of_every_thread(ops):
    """A grid of 3 x 2 blocks of 4 x 8 threads: each thread's blockIdx, threadIdx, blockDim and gridDim."""
    emulator.configure(order="shuffled", seed=5)
    rows = ops.selftest("coordinates").tolist()
    expected = [[bx, by, tx, ty, 32, 3, 2] for by in range(2) for bx in range(3) for ty in range(8) for tx in range(4)]
    assert rows == expected


def test_shuffles_read_the_lanes_cuda_names(ops):
    """__shfl_xor_sync(v, 5) reads lane ^ 5; __shfl_down_sync(v, 3) reads lane + 3, or the lane's own value where
    that is past the warp; two warps of 32 exchange separately."""
    emulator.configure(order="reverse")
    out = ops.selftest("shuffle").tolist()
    for thread, (xor, down) in enumerate(out):
        warp, lane = divmod(thread, 32)
        assert xor == 100 + 32 * warp + (lane ^ 5)
        assert down == 100 + 32 * warp + (lane + 3 if lane + 3 < 32 else lane)


@pytest.mark.parametrize("order", list(emulator.ORDERS))
def test_a_barrier_orders_shared_memory(ops, order):
    """Each thread writes its slot of a __shared__ array and reads its neighbour's: right in every order with
    __syncthreads between, wrong without it (a thread runs until it waits, so it reads the fill pattern or the
    slot's old value)."""
    emulator.configure(order=order, seed=2)
    assert ops.selftest("neighbour").tolist() == [(k + 1) % 128 for k in range(128)]
    assert ops.selftest("neighbour_without_barrier").tolist() != [(k + 1) % 128 for k in range(128)]


def test_atomic_max_across_blocks(ops):
    """Four blocks of 64 take atomicMax on one word: it ends at the largest value, and each thread saw the maximum
    of the values before it in the emulated order (here block and thread order reversed)."""
    emulator.configure(order="reverse", concurrent_blocks=1)
    out = ops.selftest("atomic").tolist()
    assert out[-1] == 255
    assert out[:-1] == [255] * 255 + [-1]


@pytest.mark.parametrize(
    "name,message",
    [
        ("divergent_barrier", "divergent __syncthreads"),
        ("exited_lane", "a lane returned while"),
        ("deadlock", "deadlock"),
        ("partial_warp_shuffle", "full-mask shuffle in a warp of 16 threads"),
        ("misaligned", "a misaligned pointer to .*float4.*alignment 16"),
        ("out_of_bounds", "index 8 out of bounds of .*int \\[8\\]"),
    ],
)
def test_refuses_what_cuda_leaves_undefined(ops, name, message):
    emulator.configure()
    with pytest.raises(RuntimeError, match=message):
        ops.selftest(name)
    assert ops.selftest("neighbour").tolist() == [(k + 1) % 128 for k in range(128)]  # and runs on afterwards


def test_counts_what_it_ran(ops):
    emulator.configure()
    ops.selftest("coordinates")
    assert emulator.counters() | {"switches": 0} == {"launches": 1, "blocks": 6, "threads": 192, "switches": 0}
    assert emulator.counters()["switches"] == 192  # each thread runs once, to its return


def test_rewriting_checks_its_rules():
    """A rule that does not apply as often as the sources need fails the build, naming the file and rule."""
    source = "k<<<1, 2, 0, s>>>(a);\nTORCH_LIBRARY_IMPL(nemesis_fast, CUDA, m) {}\n"
    rewritten = emulator.rewrite(source, [(emulator.LAUNCH, 1), (emulator.REGISTRATION, 1)], "x.cu")
    assert rewritten.startswith("::emu::Launch(1, 2, 0, s)(k, a);")
    assert "TORCH_LIBRARY_IMPL(nemesis_fast_emu, CPU, m)" in rewritten
    with pytest.raises(AssertionError, match="x.cu.*applied 1 times, expected 2"):
        emulator.rewrite(source, [(emulator.LAUNCH, 2)], "x.cu")
