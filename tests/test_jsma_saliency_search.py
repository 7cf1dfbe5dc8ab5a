"""jsma_saliency_search on every backend against the reference (the materialised pair search), edge cases,
64-bit indexing, opcheck, torch.compile and bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _compiled import innermost_loops, nvcc_compile, nvidia_tool, opcodes, resource_usage
from _support import (
    assert_graphs_call,
    backend_device_cases,
    compile_recording_graphs,
    fast_backend_cases,
    record_calls,
    reference_comparison_cases,
    require_backend,
)

import nemesis_fast as nf
from nemesis_fast import triton as nf_triton
from nemesis_fast._backends import jsma_saliency_search as jsma_backends
from nemesis_fast._backends.jsma_saliency_search import BACKENDS, bounded
from nemesis_fast._checks import FLOAT_DTYPES
from nemesis_fast.reference import jsma_saliency_search as reference

if nf_triton.AVAILABLE:
    import triton
    import triton.language as tl

    from nemesis_fast.triton import jsma_saliency_search as jsma_triton

    @triton.jit
    def _index_probe(
        out_ptr, pid, batch, n, stride0, ROWS: tl.constexpr, COLS: tl.constexpr, DIAGONAL_COLS: tl.constexpr,
        WIDE: tl.constexpr,
    ):  # fmt: skip
        """The Triton kernel's index helpers on program `pid`, their results stored as int64."""
        b, row_base = jsma_triton._row_block(pid, batch, ROWS)
        first, last = jsma_triton._column_tiles(row_base, n, DIAGONAL_COLS, COLS)
        tail = jsma_triton._tile(last, n, tl.arange(0, COLS), COLS)
        wide = jsma_triton._tile(row_base + 8, n, tl.arange(0, WIDE), WIDE)
        tl.store(out_ptr + 0, b)
        tl.store(out_ptr + 1, row_base)
        tl.store(out_ptr + 2, first)
        tl.store(out_ptr + 3, last)
        tl.store(out_ptr + 4, tl.sum(tail.to(tl.int32)))
        tl.store(out_ptr + 5, tl.sum(wide.to(tl.int32)))
        tl.store(out_ptr + 6, jsma_triton._sample_offset(b, row_base, stride0, 1))
        tl.store(out_ptr + 7, jsma_triton._pair_key(row_base, ROWS - 1, (last - row_base).to(tl.int32) + COLS - 1, n))


CASES = backend_device_cases()
VERSUS_REFERENCE = reference_comparison_cases()  # (torch on the CPU would compare the reference with itself)
NAN = float("nan")
INF = float("inf")


def random_case(
    batch: int, n: int, *, seed: int, ties: bool = False, nans: bool = False, keep: float = 0.8, device: str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(target_grad, other_grad, search_domain). With `ties`, the gradients are small integers, so many pairs
    share the best score; with `nans`, a few entries of both gradients are NaN."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(batch, n, generator=g)
    o = torch.randn(batch, n, generator=g)
    if ties:
        t, o = t.mul(1.5).round(), o.mul(1.5).round()
    if nans and batch * n:
        for grad in (t, o):
            grad.view(-1)[torch.randint(0, batch * n, (max(1, batch * n // 20),), generator=g)] = NAN
    domain = torch.rand(batch, n, generator=g) < keep
    return t.to(device), o.to(device), domain.to(device)


def assert_same(actual, expected, context=""):
    names = ("p", "q", "found")
    for name, a, e in zip(names, actual, expected):
        assert a.dtype == e.dtype and a.shape == e.shape, (name, a.dtype, a.shape, e.dtype, e.shape, context)
        assert torch.equal(a.cpu(), e.cpu()), (name, a.tolist(), e.tolist(), context)


def run(backend, t, o, d, increase):
    return nf.jsma_saliency_search(t, o, d, increase, backend=backend)


@pytest.mark.parametrize("backend,device", VERSUS_REFERENCE)
@pytest.mark.parametrize("increase", [True, False])
def test_random_inputs_match_reference(backend, device, increase):
    require_backend(BACKENDS, backend, device)
    shapes = [(3, 37), (2, 130), (2, 96), (1, 2), (4, 1), (2, 0), (0, 5)]
    for k, (batch, n) in enumerate(shapes):
        for ties in (False, True):
            for nans in (False, True):
                t, o, d = random_case(batch, n, seed=k, ties=ties, nans=nans, device=device)
                expected = reference(t.cpu(), o.cpu(), d.cpu(), increase)
                assert_same(run(backend, t, o, d, increase), expected, (batch, n, ties, nans))


def test_the_torch_backend_runs_the_reference(monkeypatch):
    """What the comparisons with the reference leave out for backend "torch" on the CPU: that it is the reference.
    The public op computes the reference's pair scores for it, and not for the native kernel."""
    require_backend(BACKENDS, "native", "cpu")
    scored = record_calls(monkeypatch, "nemesis_fast.reference.jsma_saliency_search", "saliency_scores")
    t, o, d = random_case(3, 37, seed=0)
    run("native", t, o, d, True)
    assert not scored
    run("torch", t, o, d, True)
    assert scored and scored[0][0].shape == (3, 37)


@pytest.mark.parametrize("backend,device", VERSUS_REFERENCE)
def test_every_dtype_is_searched_in_float32(backend, device):
    require_backend(BACKENDS, backend, device)
    t, o, d = random_case(3, 45, seed=7, ties=True, device=device)
    t = t + torch.rand_like(t) * 0.01  # values that float16 and bfloat16 round differently
    for dtype in FLOAT_DTYPES:
        tc, oc = t.to(dtype), o.to(dtype)
        for increase in (True, False):
            expected = reference(tc.cpu(), oc.cpu(), d.cpu(), increase)
            assert_same(run(backend, tc, oc, d, increase), expected, dtype)


@pytest.mark.parametrize("backend,device", VERSUS_REFERENCE)
def test_non_contiguous_inputs(backend, device):
    require_backend(BACKENDS, backend, device)
    t, o, d = random_case(6, 50, seed=3, ties=True, device=device)
    views = (t.t().contiguous().t(), o[:, :], d.t().contiguous().t())
    strided = (t[::2, ::2], o[1::2, ::2], d[::2, 1::2])
    for args in (views, strided):
        expected = reference(*(a.cpu() for a in args), True)
        assert_same(run(backend, *args, True), expected)


@pytest.mark.parametrize("backend,device", CASES)
def test_ties_go_to_the_smallest_p_then_the_smallest_q(backend, device):
    require_backend(BACKENDS, backend, device)
    n = 40
    t = torch.ones(2, n, device=device)
    o = -torch.ones(2, n, device=device)
    d = torch.ones(2, n, dtype=torch.bool, device=device)
    d[1, :5] = False
    d[1, 7] = False
    p, q, found = run(backend, t, o, d, True)
    assert p.tolist() == [0, 5] and q.tolist() == [1, 6] and found.tolist() == [True, True]
    # Same best score on two pairs sharing p: the smaller q wins; on pairs (3, 30) and (4, 5): p = 3 wins.
    t = torch.zeros(1, n, device=device)
    o = torch.zeros(1, n, device=device)
    t[0, [3, 30, 31, 4, 5]] = 1.0
    o[0, [3, 30, 31, 4, 5]] = -1.0
    p, q, found = run(backend, t, o, torch.ones_like(t, dtype=torch.bool), True)
    assert (p.item(), q.item(), found.item()) == (3, 4, True)
    # The best score on (0, 10) and (2, 3) only: p = 0 wins, with its own q (not the smallest q of any best pair).
    t = torch.zeros(1, n, device=device)
    o = torch.zeros(1, n, device=device)
    t[0, [0, 10, 2, 3]] = torch.tensor([5.0, -1.0, 2.0, 2.0], device=device)
    o[0, [0, 10, 2, 3]] = torch.tensor([1.0, -3.0, -1.0, -1.0], device=device)  # u = -o: a = 4, u = 2 on both
    d = torch.ones_like(t, dtype=torch.bool)
    assert [x.item() for x in reference(t.cpu(), o.cpu(), d.cpu(), True)] == [0, 10, True]
    p, q, found = run(backend, t, o, d, True)
    assert (p.item(), q.item(), found.item()) == (0, 10, True)


@pytest.mark.parametrize("backend,device", VERSUS_REFERENCE)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf in the interpreter
def test_edge_values(backend, device):
    """NaN, infinities (inf - inf is NaN: invalid) and underflow (a valid pair can score 0)."""
    require_backend(BACKENDS, backend, device)
    rows = [
        # a NaN in either gradient invalidates every pair of that feature
        ([NAN, 1.0, 0.5, 2.0], [-1.0, NAN, -1.0, -1.0], True),
        # +inf target: score inf; two inf pairs tie and the smallest wins; inf + -inf is NaN, invalid
        ([INF, INF, -INF, 1.0], [-1.0, -1.0, -1.0, -1.0], True),
        # underflow: 1e-30 * 1e-30 = 0 in float32, still valid
        ([1e-30, 1e-30, -5.0, -5.0], [-1e-30, -1e-30, 5.0, 5.0], True),
        ([1e-30, 1e-30, -5.0, -5.0], [-1e-30, -1e-30, 5.0, 5.0], False),
        # a = 0 or b = 0 exactly is not valid
        ([1.0, -1.0, 0.5, -0.5], [-1.0, 1.0, 0.0, 0.0], True),
        # ... also where that pair would be the only one
        ([1.0, -1.0], [-1.0, -1.0], True),
        ([1.0, 2.0], [-1.0, 1.0], True),
        ([1.0, -1.0], [1.0, 1.0], False),
        # ... also where it is the only candidate: (0, 1) has a = 0 (b = 0 in the second row), the invalid (0, 2) keeps
        # row 0's bound positive (so the row is scanned), (1, 2) is invalid too: no pair is valid
        ([1.0, -1.0, 0.5], [-1.0, -1.0, 5.0], True),
        ([1.0, 1.0, -5.0], [1.0, -1.0, -3.0], True),
        ([-1.0, 1.0, -0.5], [1.0, 1.0, -5.0], False),
        # -inf target in decrease mode: a = -inf < 0, score inf
        ([-INF, 0.0, 0.5, 3.0], [1.0, 1.0, 1.0, -3.0], False),
    ]
    for t, o, increase in rows:
        tt = torch.tensor([t], device=device)
        oo = torch.tensor([o], device=device)
        d = torch.ones_like(tt, dtype=torch.bool)
        expected = reference(tt.cpu(), oo.cpu(), d.cpu(), increase)
        assert_same(run(backend, tt, oo, d, increase), expected, (t, o, increase))
    p, q, found = reference(
        torch.tensor([[1e-30, 1e-30]]), torch.tensor([[-1e-30, -1e-30]]), torch.ones(1, 2) > 0, True
    )
    assert found.item() and (p.item(), q.item()) == (0, 1)


def planted_across_tiles(tile: int) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int, bool]]]:
    """(target_grad, other_grad) of 2 * tile + 88 features for increase=True and each sample's (p, q, found),
    planted so that the pairs that decide lie in different row and column tiles of a kernel whose tiles hold
    `tile` features. The other features make every pair they touch invalid (t = -1, u = -o = 1: a = -2 at most)."""
    n = 2 * tile + 88
    t = torch.full((7, n), -1.0)
    o = torch.full((7, n), -1.0)

    def plant(sample, feature, t_value, u_value):
        t[sample, feature], o[sample, feature] = t_value, -u_value

    # 0: only pairs scoring 0 (their products, about 1e-60, underflow), the smaller p wins: (5, 2T + 68) over
    # (T + 44, 2T + 78); the four other pairs of these features have a = 0 or u < 0.
    zero_pairs = ((5, 1, -1), (2 * tile + 68, 1, 3), (tile + 44, -1, 5), (2 * tile + 78, 2, -4))
    for feature, t_value, u_value in zero_pairs:
        plant(0, feature, t_value * 1e-30, u_value * 1e-30)
    # 1: equal scores (4) in one row tile, the later column tile holding the smaller p: (3, 2T + 38) over
    # (T / 2, T + 44); the four other pairs of these features have a = 0 or u <= 0.
    for feature, t_value, u_value in ((3, 1, -1), (2 * tile + 38, 1, 3), (tile // 2, -1, 5), (tile + 44, 3, -3)):
        plant(1, feature, t_value, u_value)
    # 2: two features with a = -10, u = -10 (product 100, invalid) beside a valid pair scoring 1.
    plant(2, 10, -5.0, -5.0)
    plant(2, 2 * tile + 78, -5.0, -5.0)
    plant(2, tile + 16, 0.5, 0.5)
    plant(2, tile + 17, 0.5, 0.5)
    # 3: every feature usable, no pair valid (t all negative).
    o[3] = -torch.linspace(1.0, 2.0, n)
    # 4: a pair scoring above 0 after pairs scoring 0 at smaller p, (1, 2): the positive one wins.
    plant(4, 1, 1e-30, 1e-30)
    plant(4, 2, 1e-30, 1e-30)
    plant(4, 2 * tile - 12, 1e-3, 1e-3)
    plant(4, 2 * tile + 8, 1e-3, 1e-3)
    # 5: the best pair ties with every pair (equal gradients everywhere): (0, 1).
    t[5], o[5] = 0.25, -0.25
    # 6: between the best pair's p and q, a feature whose every clamped score is NaN (a < 0 with every other
    # feature, u = +inf: 0 * inf), which the search for the best pair's q must pass over.
    plant(6, tile + 16, 0.5, 0.5)
    plant(6, tile + 20, -100.0, float("inf"))
    plant(6, 2 * tile + 40, 0.5, 0.5)
    expected = [
        (5, 2 * tile + 68, True),
        (3, 2 * tile + 38, True),
        (tile + 16, tile + 17, True),
        (-1, -1, False),
        (2 * tile - 12, 2 * tile + 8, True),
        (0, 1, True),
        (tile + 16, 2 * tile + 40, True),
    ]
    return t, o, expected


@pytest.mark.parametrize("backend,device", VERSUS_REFERENCE)
def test_pairs_that_decide_far_apart(backend, device, monkeypatch):
    """The kernels' shortcuts (the maximum of clamped scores, the sample's best so far, the rescan for a pair
    scoring 0) across tiles and blocks: ties between column tiles, a valid pair scoring 0, an invalid pair with the
    highest product, no valid pair among many. The Triton kernel searches the best pair's column 32 columns at a
    time here, so that the search takes several steps."""
    require_backend(BACKENDS, backend, device)
    if backend == "triton":
        monkeypatch.setattr(jsma_triton, "ROW_SEARCH", 32)
    t, o, expected = planted_across_tiles(jsma_triton.COLS if backend == "triton" else 256)  # CUDA's kTile: 256
    d = torch.ones_like(t, dtype=torch.bool)
    p, q, found = reference(t, o, d, True)
    assert list(zip(p.tolist(), q.tolist(), found.tolist())) == expected
    assert_same(run(backend, t.to(device), o.to(device), d.to(device), True), (p, q, found))
    # The same samples with their roles reversed (increase=False: t = -target, u = other).
    assert_same(run(backend, -t.to(device), -o.to(device), d.to(device), False), (p, q, found))


@pytest.mark.parametrize("backend,device", CASES)
def test_small_domains(backend, device):
    require_backend(BACKENDS, backend, device)
    t, o, _ = random_case(4, 25, seed=11, device=device)
    t[:, 2], t[:, 9], o[:, 2], o[:, 9] = 1.0, 2.0, -1.0, -2.0
    d = torch.zeros(4, 25, dtype=torch.bool, device=device)
    d[1, 9] = True  # one feature: no pair
    d[2, [2, 9]] = True  # exactly one pair
    d[3, [2, 9]] = True
    o[3, 9] = 5.0  # ... that is not valid
    p, q, found = run(backend, t, o, d, True)
    assert found.tolist() == [False, False, True, False]
    assert p.tolist() == [-1, -1, 2, -1] and q.tolist() == [-1, -1, 9, -1]


def planted_case(n: int, p: int, q: int, increase: bool, device: str):
    """n features of small random gradients where many pairs are valid but only (p, q) has a large score."""
    g = torch.Generator().manual_seed(n)
    t = torch.rand(1, n, generator=g) * 1.2 - 1.0  # in [-1, 0.2]
    o = torch.rand(1, n, generator=g) * 1.5 - 1.0  # in [-1, 0.5]
    t[0, [p, q]] = 10.0
    o[0, [p, q]] = -10.0
    if not increase:
        t, o = -t, -o
    return t.to(device), o.to(device), torch.ones(1, n, dtype=torch.bool, device=device)


@pytest.mark.parametrize("backend,device", CASES)
def test_the_last_column_alone_in_its_tile(backend, device):
    """n = 33 and 65: the last column tile of a row block holds one column, n - 1, and the best pair ends on it (p at
    the start of the first row block, and at the end of the row block before the last)."""
    require_backend(BACKENDS, backend, device)
    for n in (33, 65):
        for p in (3, n - 2):
            for increase in (True, False):
                t, o, d = planted_case(n, p, n - 1, increase, device)
                assert [x.item() for x in run(backend, t, o, d, increase)] == [p, n - 1, True], (n, p, increase)


@pytest.mark.parametrize("backend,device", fast_backend_cases(reference=False))
def test_more_than_2_31_pairs(backend, device):
    """n = 70,000: n * n = 4.9e9 ordered pairs, and p * n + q of the answer exceeds 2**31."""
    require_backend(BACKENDS, backend, device)
    n = 70_000
    for increase, (p, q) in ((True, (40_000, 69_999)), (False, (31_000, 31_001))):
        t, o, d = planted_case(n, p, q, increase, device)
        out = run(backend, t, o, d, increase)
        assert [x.item() for x in out] == [p, q, True]
        # Take the planted pair out: the best is then a pair with one planted feature and a random one, which a
        # reference scan of the two planted rows and columns finds.
        d[0, q] = False
        bp, bq, found = run(backend, t, o, d, increase)
        t1, o1 = t.cpu(), o.cpu()
        sign = 1.0 if increase else -1.0
        a = sign * (t1[0, p] + t1[0])
        b = sign * (o1[0, p] + o1[0])
        score = torch.where((a > 0) & (b < 0) & d.cpu()[0], a * -b, torch.tensor(-1.0))
        score[p] = -1.0
        other = int(score.argmax())
        assert found.item() and (bp.item(), bq.item()) == (min(p, other), max(p, other))


def gradient_like_case(kind: str, batch: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(target_grad, other_grad) of one of the distributions that the CPU kernel's bounded search meets: heavy or
    light tails, rounded values (many tied scores), correlated or anticorrelated gradients (weak bounds),
    sparse ones, and magnitudes at and beyond the bounded search's range (tiny, huge, overflowing scores)."""
    g = torch.Generator().manual_seed(seed)
    t, o = torch.randn(2, batch, n, generator=g)
    common = torch.randn(batch, n, generator=g)
    heavy = torch.randn(2, batch, n, generator=g) / torch.rand(2, batch, n, generator=g).clamp_min(1e-3)
    cases = {
        "normal": (t, o),
        "heavy tails": (heavy[0], heavy[1]),
        "rounded": (t.mul(1.5).round(), o.mul(1.5).round()),
        "coarse": (t.mul(0.7).round(), o.mul(0.7).round()),
        "correlated": (common + 0.1 * t, common + 0.1 * o),
        "anticorrelated": (common + 0.1 * t, 0.1 * o - common),
        "sparse": (t * (torch.rand(batch, n, generator=g) < 0.05), o * (torch.rand(batch, n, generator=g) < 0.05)),
        "tiny": (t * 1e-12, o * 1e-12),
        "huge": (t * 1e14, o * 1e14),
        "overflowing": (t * 1e20, o * 1e20),
    }
    return cases[kind]


GRADIENT_KINDS = (
    "normal", "heavy tails", "rounded", "coarse", "correlated", "anticorrelated", "sparse", "tiny", "huge",
    "overflowing",
)  # fmt: skip


@pytest.mark.parametrize("backend,device", fast_backend_cases(reference=False))
@pytest.mark.parametrize("kind", GRADIENT_KINDS)
def test_gradient_like_inputs_match_reference(backend, device, kind):
    """Sizes where the CPU kernel searches by bounding (from 64 usable features), on every kind of gradient."""
    require_backend(BACKENDS, backend, device)
    for k, (batch, n) in enumerate(((5, 64), (4, 300), (3, 1000), (2, 3072))):
        t, o = gradient_like_case(kind, batch, n, seed=k)
        for keep in (1.0, 0.7):
            d = torch.rand(batch, n, generator=torch.Generator().manual_seed(k)) < keep
            for increase in (True, False):
                expected = reference(t, o, d, increase)
                assert_same(run(backend, t.to(device), o.to(device), d.to(device), increase), expected, (n, keep))


def beyond_the_seeds_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t, o, domain), n = 400, theta > 0: the best pair joins a feature that no single ranking puts on top with one
    of 16 tied partners; the strongest features by target gradient, by other gradient and by their sum pair up
    into invalid or weak pairs only. The reference's answer: (200, 300)."""
    n = 400
    g = torch.Generator().manual_seed(0)
    t = torch.rand(1, n, generator=g) * 0.2 - 0.1
    o = torch.rand(1, n, generator=g) * 0.2 - 0.1
    top_target, top_other, top_sum = range(10, 26), range(100, 116), range(200, 216)
    t[0, top_target], o[0, top_target] = 6.0, 50.0  # the top t (theta > 0: t, u = -o): pairs have u < 0
    t[0, top_other], o[0, top_other] = -50.0, -6.0  # the top u: pairs have a < 0
    t[0, top_sum], o[0, top_sum] = 4.4, -0.1  # the top t + u: with each other a = 8.8, u = 0.2
    t[0, 300], o[0, 300] = -1.0, -5.0  # with a top_sum feature: a = 3.4, u = 5.1, the best score
    return t, o, torch.ones(1, n, dtype=torch.bool)


def tying_the_seeds_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t, o, domain), n = 200, theta > 0: pairs (3, 4) and (50, 60) share the best score exactly, and only (50, 60)
    is made of features that rank on top (by target gradient, by other gradient or by their sum). The reference's
    answer: (3, 4)."""
    n = 200
    t, o = torch.zeros(1, n), torch.zeros(1, n)
    t[0, [3, 4]], o[0, [3, 4]] = 2.0, -2.0  # a = 4, u = 4 (theta > 0: u = -o)
    t[0, 50], o[0, 50] = 10.0, 6.0  # with 60: a = 4, u = 4
    t[0, 60], o[0, 60] = -6.0, -10.0
    t[0, 100:116], o[0, 100:116] = 4.5, 0.4  # above (3, 4) by t and by t + u; their pairs are invalid or weak
    t[0, 120:136], o[0, 120:136] = -3.0, -2.5  # above (3, 4) by u
    return t, o, torch.ones(1, n, dtype=torch.bool)


@pytest.mark.parametrize("backend,device", fast_backend_cases(reference=False))
def test_planted_pairs_beyond_or_tying_the_seeds(backend, device):
    """The bounded search must find the best pair beyond its seeds and take the smallest of the tied pairs
    (beyond_the_seeds_case, also with the smallest partners out of the domain), and let a smaller pair win the
    tie with the seeds' best (tying_the_seeds_case)."""
    require_backend(BACKENDS, backend, device)
    beyond, tying = beyond_the_seeds_case(), tying_the_seeds_case()
    narrowed = beyond[2].clone()
    narrowed[0, 200:205] = False
    cases = ((beyond, [200, 300]), ((*beyond[:2], narrowed), [205, 300]), (tying, [3, 4]))
    for (t, o, d), answer in cases:
        expected = reference(t, o, d, True)
        assert [x.item() for x in expected] == [*answer, True]
        assert_same(run(backend, t.to(device), o.to(device), d.to(device), True), expected, answer)


@pytest.mark.parametrize("kind", GRADIENT_KINDS)
def test_the_bound_in_front_of_the_gpu_kernels_keeps_the_answer(kind):
    """On CUDA, from BOUNDED_MIN_FEATURES features, the op first keeps the features that can form the best pair
    (`bounded`, plain torch) and searches those only. The same code here on the CPU, around the native kernel and
    the reference: the answer is the reference's on all features, and on N(0, 1) gradients far fewer features
    reach the search."""
    seen = []

    def searched(search):
        def run_search(t, o, d, increase):
            seen.append(t.shape[1])
            return search(t, o, d, increase)

        return run_search

    for k, (batch, n) in enumerate(((3, 1000), (2, 3072))):
        t, o = gradient_like_case(kind, batch, n, seed=k)
        for keep in (1.0, 0.7):
            d = torch.rand(batch, n, generator=torch.Generator().manual_seed(k)) < keep
            for increase in (True, False):
                expected = reference(t, o, d, increase)
                for search in (BACKENDS.native, reference):
                    assert_same(bounded(searched(search), t, o, d, increase), expected, (n, keep, increase))
    if kind == "normal":
        assert max(seen) < 100, seen
    assert jsma_backends.BOUNDED_MIN_FEATURES > 3072  # CIFAR-sized searches go straight to the kernels


def no_valid_seed_pair_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(t, o, domain), n = 64, theta > 0: the 16 features of largest target gradient (also the largest t + u) and the
    16 of largest u = -o form invalid pairs only, with each other and with the rest; the valid pairs are those of
    features 0..31 (t = u = 0.25, score 0.25 each). The reference's answer: (0, 1)."""
    t, o = torch.full((1, 64), 0.25), torch.full((1, 64), -0.25)
    t[0, 32:48], o[0, 32:48] = 10.0, 9.0  # top by t and by t + u: a = 20, u = -18 with each other
    t[0, 48:64], o[0, 48:64] = -11.0, -10.0  # top by u: a = -22 with each other, -1 with the group above
    return t, o, torch.ones(1, 64, dtype=torch.bool)


@pytest.mark.parametrize("backend,device", fast_backend_cases(reference=False))
def test_no_valid_pair_among_the_seeds(backend, device):
    """The bounded search starts from the best pair of its seed features; where no seed pair is valid it must leave
    the sample to the full scan, not report that no pair is valid."""
    require_backend(BACKENDS, backend, device)
    t, o, d = no_valid_seed_pair_case()
    expected = reference(t, o, d, True)
    assert [x.item() for x in expected] == [0, 1, True]
    assert_same(run(backend, t.to(device), o.to(device), d.to(device), True), expected)


def test_native_cpu_full_scan_in_several_row_ranges():
    """A sample the bounded search leaves to the full scan (flat gradients: every pair within a hair of the best)
    with more than 2**24 pairs is scanned in row ranges of about 2**24 pairs (kMinPairsPerTask), in parallel. The
    ranges must cover every row, and a later range must win only with a higher score: n = 6000, all pairs tie in the
    first sample (answer (0, 1)); in the second, the unique best pair is the first row of the second range."""
    require_backend(BACKENDS, "native", "cpu")
    n, pairs, second = 6000, 0, 0
    for row in range(n - 1):  # the first range ends after the row where its pair count reaches 2**24
        pairs += n - 1 - row
        if pairs >= 2**24:
            second = row + 1
            break
    t, o = torch.ones(2, n), -torch.ones(2, n)
    t[1, [second, second + 1]] = 1 + 2**-21  # a = 2 + 2**-20 for that pair, 2 + 2**-21 with one of them, else 2
    d = torch.ones(2, n, dtype=torch.bool)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(max(2, threads))
        p, q, found = run("native", t, o, d, True)
    finally:
        torch.set_num_threads(threads)
    assert (p.tolist(), q.tolist(), found.tolist()) == ([0, second], [1, second + 1], [True, True]), second


def test_the_bound_in_front_of_the_gpu_kernels_on_planted_pairs():
    """The two planted cases through `bounded` around the reference. In the first the bound keeps every feature
    (the strongest features by one gradient stretch it), so the search runs on all 400; in the second it keeps 20
    of the 200."""
    seen = []

    def search(t, o, d, increase):
        seen.append(t.shape[1])
        return reference(t, o, d, increase)

    assert [x.item() for x in bounded(search, *beyond_the_seeds_case(), True)] == [200, 300, True]
    assert [x.item() for x in bounded(search, *tying_the_seeds_case(), True)] == [3, 4, True]
    assert seen == [400, 20]


@pytest.mark.triton
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_triton_index_arithmetic_near_2_31(device):
    """The Triton kernel's index helpers at n = 2**31 - 1 without a 4 GiB tensor: the column tiles past the last
    row blocks start at or beyond 2**31, a tile straddling 2**31 is masked at n, and b * stride and p * n + q
    exceed 2**31, all of which wrap if done in int32 (Triton's type for an integer argument below 2**31)."""
    require_backend(BACKENDS, "triton", device)
    rows, cols, batch, n, wide = jsma_triton.ROWS, jsma_triton.COLS, 3, 2**31 - 1, 64
    diagonal_cols = -(-rows // cols) * cols
    row_blocks = -(-n // rows)
    for row_block in (row_blocks - 1, row_blocks - 1 - 128 // rows, row_blocks - 1 - 5 * 128 // rows):
        b = batch - 1
        out = torch.full((8,), -7, dtype=torch.int64, device=device)
        _index_probe[(1,)](out, row_block * batch + b, batch, n, n, rows, cols, diagonal_cols, wide)
        row_base = row_block * rows
        first = row_base + diagonal_cols
        last = first + max(n - first, 0) // cols * cols
        expected = [
            b,
            row_base,
            first,
            last,
            max(0, min(n - last, cols)),
            min(n - (row_base + 8), wide),
            b * n + row_base,
            (row_base + rows - 1) * n + last + cols - 1,
        ]
        assert out.tolist() == expected, (row_block, out.tolist(), expected)


@pytest.mark.triton
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)])
def test_triton_finish_kernel(device):
    """The Triton finishing kernel on made-up partials (row block, sample): more row blocks than it reads at a
    time, tied scores (the smallest key wins), keys past 2**31, and samples with no valid pair; followed in memory by
    a row of better partials that it must not read."""
    require_backend(BACKENDS, "triton", device)
    g = torch.Generator().manual_seed(0)
    batch, n = 5, 2**31 - 1
    row_blocks = 2 * jsma_triton.FINISH_BLOCK + 17
    score = torch.randint(-1, 4, (row_blocks, batch), generator=g).float()
    score[:, 3] = -1.0  # no valid pair
    key = torch.randint(0, 2**62, (row_blocks, batch), generator=g)
    top = score.amax(0)
    best_key = torch.where(score == top, key, torch.iinfo(torch.int64).max).amin(0)
    found = top >= 0
    p = torch.full((batch,), 7, dtype=torch.int64, device=device)
    q = p.clone()
    out_found = torch.ones(batch, dtype=torch.bool, device=device)  # the kernel writes every output
    past = (torch.cat([score, torch.full((1, batch), 9.0)]), torch.cat([key, torch.zeros(1, batch, dtype=key.dtype)]))
    jsma_triton._finish_kernel[(batch,)](
        past[0].to(device), past[1].to(device), p, q, out_found, batch, n, row_blocks,
        BLOCK=jsma_triton.FINISH_BLOCK,
    )  # fmt: skip
    assert out_found.cpu().tolist() == found.tolist() == [True, True, True, False, True]
    assert p.cpu().tolist() == torch.where(found, best_key // n, -1).tolist()
    assert q.cpu().tolist() == torch.where(found, best_key % n, -1).tolist()


@pytest.mark.cuda
def test_cuda_kernels_on_many_tiles_and_chunks():
    """Shapes that cover several tiles per sample, partial tiles, one and many samples, and (B = 128, n = 1300:
    more tile pairs than blocks the GPU holds at once) CUDA blocks that scan several tile pairs across row tiles."""
    for backend in ("native", "triton"):
        require_backend(BACKENDS, backend, "cuda")
    for batch, n, seed in ((1, 3001, 0), (5, 700, 1), (300, 65, 2), (2, 257, 3), (128, 1300, 4)):
        for ties in (False, True):
            t, o, d = random_case(batch, n, seed=seed, ties=ties, nans=True, device="cuda")
            for increase in (True, False):
                expected = reference(t.cpu(), o.cpu(), d.cpu(), increase)
                for backend in ("native", "triton"):
                    assert_same(run(backend, t, o, d, increase), expected, (backend, batch, n, ties, increase))


@pytest.mark.triton
def test_triton_search_where_the_interpreter_maximum_returns_nan(monkeypatch):
    """Triton 3.6's interpreter takes tl.maximum(NaN, 0) as NaN where the compiled code (and 3.8's interpreter)
    gives 0; the kernel then takes its maxima by comparisons. That variant against the reference on the cases
    where NaN arises (inf - inf, 0 * inf, features past the end: -inf)."""
    require_backend(BACKENDS, "triton", "cpu")
    monkeypatch.setattr(jsma_triton, "interpreter_maximum_ignores_nan", lambda: False)
    monkeypatch.setattr(jsma_triton, "ROW_SEARCH", 32)
    t, o, expected = planted_across_tiles(jsma_triton.COLS)
    cases = [(t, o, torch.ones_like(t, dtype=torch.bool))]
    cases += [random_case(3, 70, seed=seed, ties=seed == 1, nans=True) for seed in range(3)]
    inf = torch.tensor([[INF, INF, -INF, 1.0, 2.0], [-INF, 0.0, 0.5, 3.0, INF]])
    cases.append((inf, -inf.flip(1), torch.ones_like(inf, dtype=torch.bool)))
    for t, o, d in cases:
        for increase in (True, False):
            assert_same(run("triton", t, o, d, increase), reference(t, o, d, increase), (t.shape, increase))


@pytest.mark.triton
def test_the_interpreter_probe_runs_under_fake_tensors():
    """The probe of the interpreter's maximum may first be asked while the op's shapes are traced with fake
    tensors (opcheck, torch.compile's fake pass): it runs its kernel on a real tensor even then, and answers as it
    does outside."""
    require_backend(BACKENDS, "triton", "cpu")
    from torch._subclasses.fake_tensor import FakeTensorMode

    from nemesis_fast.triton import _common

    probe = _common.interpreter_maximum_ignores_nan
    probe.cache_clear()
    t, o, d = random_case(2, 40, seed=0)
    with FakeTensorMode() as mode:
        p, _, _ = torch.ops.nemesis_fast.jsma_saliency_search_triton(*map(mode.from_tensor, (t, o, d)), True)
        assert p.shape == (2,)
    answer = probe()
    assert probe.cache_info().hits == 1
    probe.cache_clear()
    assert probe() == answer


@pytest.mark.slow
def test_cuda_search_scans_a_pair_in_six_instructions(tmp_path):
    """ptxas's sm_90 code of the CUDA search kernel, compiled without a GPU, in every dtype: the loops of step 1
    (the file comment) take no comparison, and the hot one, the off-diagonal tile, at most 6 instructions a pair
    (8.9 when every pair was compared with the running best and its row kept): per pair two FADD, one FMUL and
    two FMNMX (the clamp and the running maximum), a 128-bit shared-memory load per four pairs. No kernel spills."""
    cubin = tmp_path / "jsma_saliency_search.cubin"
    nvcc_compile(
        Path(__file__).resolve().parents[1] / "csrc/cuda/jsma_saliency_search.cu", cubin, "-cubin", "-arch=sm_90"
    )
    if nvidia_tool("cuobjdump") is None:
        pytest.skip("no cuobjdump (Triton bundles one; so does a CUDA toolkit)")
    searches = {name: bodies for name, bodies in innermost_loops(cubin).items() if "search_kernel" in name}
    assert len(searches) == 4, sorted(searches)  # float, double, half, bfloat16
    for name, bodies in searches.items():
        # the scans: innermost loops reading float4s of the row tile; step 1's compare nothing (the reference's
        # scan, step 2's rescan for a pair scoring 0, compares every pair)
        scans = [opcodes(body) for body in bodies if any(op.startswith("LDS.128") for op in body)]
        step_one = [c for c in scans if c["FMUL"] and not (c["FSETP"] or c["FSEL"] or c["FFMA"])]
        assert step_one, (name, scans)
        hot = max(step_one, key=lambda c: c["FMUL"])
        pairs = hot["FMUL"]
        assert pairs >= 16 and hot["FADD"] == hot["FMNMX"] == 2 * pairs, (name, hot)
        assert hot["LDS"] * 2 == pairs, (name, hot)  # a float4 of t and one of u per four pairs
        assert hot.total() <= 6 * pairs, (name, hot.total(), pairs)
    for name, usage in resource_usage(cubin).items():
        assert usage["LOCAL"] == 0 and usage["STACK"] == 0, (name, usage)


@pytest.mark.parametrize("backend,device", [c for c in CASES if c.values[0] != "torch"])
def test_opcheck(backend, device):
    require_backend(BACKENDS, backend, device)
    op = torch.ops.nemesis_fast.jsma_saliency_search_triton if backend == "triton" else BACKENDS.native
    checks = ("test_schema", "test_autograd_registration", "test_faketensor")
    if (backend, device) != ("triton", "cpu"):  # the interpreter runs kernels as Python, which AOT cannot trace
        checks += ("test_aot_dispatch_dynamic",)
    for requires_grad in (False, True):
        t, o, d = random_case(3, 20, seed=5, ties=True, device=device)
        t.requires_grad_(requires_grad)
        for increase in (True, False):
            torch.library.opcheck(op, (t, o, d, increase), test_utils=checks)
            torch.library.opcheck(op, (t[:, ::2], o[:, ::2], d[:, ::2], increase), test_utils=checks)


def test_fake_kernel_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        t = torch.empty(7, 30)
        p, q, found = BACKENDS.native(t, t, torch.empty(7, 30, dtype=torch.bool), True)
    assert p.shape == q.shape == found.shape == (7,)
    assert p.dtype == q.dtype == torch.int64 and found.dtype == torch.bool


@pytest.mark.parametrize("backend,device", fast_backend_cases())
def test_torch_compile_fullgraph(backend, device, monkeypatch):
    require_backend(BACKENDS, backend, device)
    torch._dynamo.reset()
    monkeypatch.setenv("NEMESIS_FAST_BACKEND", backend)

    def step(t, o, d):
        p, q, found = nf.jsma_saliency_search(t * 2.0, o, d, True)
        return torch.where(found, p + q, -1)

    t, o, d = random_case(4, 33, seed=9, ties=True, device=device)
    compiled, graphs = compile_recording_graphs(step)
    p, q, found = reference(t * 2.0, o, d, True)
    torch.testing.assert_close(compiled(t, o, d), torch.where(found, p + q, -1))
    assert_graphs_call(graphs, backend, "jsma_saliency_search")


def test_no_gradient_flows():
    t, o, d = random_case(2, 10, seed=1)
    t.requires_grad_(True)
    for backend in ("native", "torch"):
        out = nf.jsma_saliency_search(t, o, d, backend=backend)
        assert not any(x.requires_grad for x in out)


@pytest.mark.parametrize(
    "args,error,match",
    [
        ((torch.ones(2, 3), torch.ones(2, 4), torch.ones(2, 3, dtype=torch.bool)), ValueError, "other_grad"),
        ((torch.ones(2, 3), torch.ones(2, 3), torch.ones(3, 3, dtype=torch.bool)), ValueError, "search_domain"),
        ((torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3)), ValueError, "search_domain must be a bool"),
        ((torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3, dtype=torch.uint8)), ValueError, "search_domain"),
        ((torch.ones(6), torch.ones(6), torch.ones(6, dtype=torch.bool)), ValueError, "target_grad must have 2"),
        ((torch.ones(2, 3, dtype=torch.int32), torch.ones(2, 3), torch.ones(2, 3) > 0), TypeError, "target_grad"),
        ((torch.ones(2, 3), torch.ones(2, 3).double(), torch.ones(2, 3) > 0), TypeError, "other_grad"),
    ],
)
def test_bad_arguments(args, error, match):
    for backend in ("native", "torch"):
        with pytest.raises(error, match=match):
            nf.jsma_saliency_search(*args, backend=backend)


def test_bad_increase_and_backend():
    t, o, d = random_case(1, 4, seed=0)
    with pytest.raises(TypeError, match="increase must be a bool"):
        nf.jsma_saliency_search(t, o, d, 1)
    with pytest.raises(ValueError, match="backend must be one of"):
        nf.jsma_saliency_search(t, o, d, backend="gpu")


@pytest.mark.cuda
def test_the_cuda_kernel_refuses_a_search_domain_on_another_device():
    """CUDA gradients with a CPU search domain dispatch to the CUDA kernel (the dispatcher goes by the gradients'
    device): its own check must refuse the host pointer before any launch reads it."""
    require_backend(BACKENDS, "native", "cuda")
    grads = torch.ones(2, 3, device="cuda")
    with pytest.raises(ValueError, match="search_domain must be on cuda:0, got cpu"):
        torch.ops.nemesis_fast.jsma_saliency_search(grads, -grads, torch.ones(2, 3, dtype=torch.bool), True)


def test_direct_op_calls_check_their_arguments():
    op = torch.ops.nemesis_fast.jsma_saliency_search
    ones = torch.ones(2, 3)
    with pytest.raises(ValueError, match="search_domain must be a bool"):
        op(ones, ones, ones, True)
    with pytest.raises(ValueError, match="same shape"):
        op(ones, torch.ones(2, 4), ones > 0, True)
    # Shapes of as many elements: the shapes must agree, not only the sizes.
    with pytest.raises(ValueError, match="target_grad and other_grad must have the same shape"):
        op(ones, torch.ones(3, 2), ones > 0, True)
    with pytest.raises(ValueError, match="target_grad and search_domain must have the same shape"):
        op(ones, ones, torch.ones(3, 2) > 0, True)
    with pytest.raises(ValueError, match=r"shape \(B, n\)"):
        op(torch.ones(6), torch.ones(6), torch.ones(6) > 0, True)
    with pytest.raises(TypeError, match="target_grad must be a float16"):
        op(ones.int(), ones.int(), ones > 0, True)
    with pytest.raises(TypeError, match="same dtype"):
        op(ones, ones.double(), ones > 0, True)
    meta = torch.ones(2, 3, device="meta")
    with pytest.raises(ValueError, match="search_domain must be on cpu, got meta"):  # the fake kernel runs: it checks
        op(ones, -ones, meta > 0, True)
    with pytest.raises(ValueError, match="other_grad must be on cpu, got meta"):
        op(ones, -meta, ones > 0, True)
    with pytest.raises(ValueError, match="same shape"):
        op(meta, torch.ones(7, 5, device="meta"), meta > 0, True)
