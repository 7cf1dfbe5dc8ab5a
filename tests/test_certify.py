"""Randomized smoothing (nemesis_fast.certify): the statistics against scipy, the guarantee on a linear classifier
where the smoothed classifier is known in closed form, abstention, the noise, reproducibility, bad input."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from nemesis_fast import gaussian_augment
from nemesis_fast.certify import (
    Smooth,
    binomial_p_value,
    certified_accuracy,
    certified_radius,
    clopper_pearson_lower,
    largest_certifiable_radius,
    phase_key,
)
from nemesis_fast.certify.statistics import certificate_bounds

FLOAT_TYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
COUNTS = [(0, 10), (1, 10), (5, 10), (9, 10), (10, 10), (500, 1000), (990, 1000), (99_990, 100_000), (100, 100)]


@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.5])
def test_clopper_pearson_bound_is_the_beta_quantile_and_the_binomial_tail(alpha):
    k = [c for c, _ in COUNTS]
    n = [t for _, t in COUNTS]
    bound = clopper_pearson_lower(k, n, alpha)
    for (successes, trials), p in zip(COUNTS, bound):
        if successes == 0:
            assert p == 0.0
            continue
        assert p == pytest.approx(stats.beta.ppf(alpha, successes, trials - successes + 1), rel=1e-12)
        # P(Binomial(n, p) >= k) = alpha: the largest p the k successes rule out at level alpha.
        assert stats.binom.sf(successes - 1, trials, p) == pytest.approx(alpha, rel=1e-6)
        if successes == trials:
            assert p == pytest.approx(alpha ** (1 / trials), rel=1e-12)
    assert clopper_pearson_lower(990, 1000, alpha) == pytest.approx(bound[6])


def test_binomial_p_value_is_scipys_two_sided_test():
    for top, runner_up in [(0, 0), (1, 0), (5, 5), (6, 4), (60, 40), (30, 70), (1000, 0), (512, 488), (9000, 8800)]:
        expected = 1.0 if top + runner_up == 0 else stats.binomtest(top, top + runner_up, 0.5).pvalue
        assert binomial_p_value(top, runner_up) == pytest.approx(expected, rel=1e-9, abs=1e-300)


def test_binomial_p_value_of_small_integer_dtypes_does_not_wrap():
    """(200 + 100) in uint8 wrapped to 44, and p came out 0: a false 'significant' answer."""
    assert binomial_p_value(np.uint8(200), np.uint8(100)) == pytest.approx(stats.binomtest(200, 300).pvalue)
    top, runner_up = np.int32(2**30 + 9), np.int32(2**30 - 1)  # (a sum past int32's range: it gave NaN)
    assert binomial_p_value(top, runner_up) == binomial_p_value(2**30 + 9, 2**30 - 1) == pytest.approx(0.99984504)


def test_the_radius_stays_finite_where_pa_rounds_to_one_and_is_never_negative():
    """1 - pA from Beta's upper tail: pA itself rounds to 1 in float64 for alpha near 1, which gave inf."""
    exact = 0.25 * stats.norm.isf(stats.beta.isf(1 - 1e-16, 1, 100))
    assert certificate_bounds(np.int64(100), 100, 1 - 1e-16, 0.25)[1] == pytest.approx(exact) and math.isfinite(exact)
    assert certificate_bounds([990, 500], 1000, 0.001, 0.5)[1].tolist() == pytest.approx(
        [0.5 * stats.norm.ppf(clopper_pearson_lower(990, 1000, 0.001)), 0.0]
    )
    assert largest_certifiable_radius(100_000, 0.001, 1.0) == pytest.approx(stats.norm.ppf(0.001**1e-5))
    assert largest_certifiable_radius(5, 0.001, 0.3) == 0.0  # too few draws to certify anything: not -0.17


def test_radius_is_sigma_times_the_normal_quantile_and_zero_without_a_certificate():
    p = [0.3, 0.5, stats.norm.cdf(0.5), stats.norm.cdf(1.0), stats.norm.cdf(3.0)]
    assert certified_radius(p, 0.5).tolist() == pytest.approx([0.0, 0.0, 0.25, 0.5, 1.5])
    labels, prediction = torch.tensor([1, 2, 3, 4]), torch.tensor([1, 2, -1, 0])
    radius = torch.tensor([0.3, 0.8, 0.0, 0.9], dtype=torch.float64)
    assert certified_accuracy(prediction, radius, labels, [0.0, 0.5, 1.0]) == [0.5, 0.25, 0.0]


class Halfspace(nn.Module):
    """f(z) = 1 if w.z + b > 0 else 0; smoothing it gives g(x) = f(x) and P(f(x + d) = g(x)) =
    Phi(|w.x + b| / (sigma |w|)): the certified radius may never exceed the distance |w.x + b| / |w|."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        margin = z.flatten(1).double() @ self.w.double() + self.b
        return torch.stack([torch.zeros_like(margin), margin], 1)


def halfspace_images(count: int, sigma: float, seed: int = 0) -> tuple[Halfspace, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(16, generator=generator, dtype=torch.float64)
    model = Halfspace(w, 0.3)
    unit = w / w.norm()
    signed = sigma * torch.linspace(-3.0, 3.0, count, dtype=torch.float64)  # P(top class) from 0.5 to 0.9987
    x = torch.randn(count, 16, generator=generator, dtype=torch.float64)
    margin = (x @ w + 0.3) / w.norm()
    x = (x + (signed - margin)[:, None] * unit).float()  # at signed distance ~`signed` from the boundary
    signed = (x.double() @ w + 0.3) / w.norm()  # exactly, for the float32 images
    return model, x.view(count, 1, 4, 4), signed


def test_certified_radius_of_a_linear_classifier_is_wrong_no_more_often_than_alpha():
    sigma, alpha, trials = 0.5, 0.05, 16
    model, x, signed = halfspace_images(60, sigma)
    distance = signed.abs()
    truth = (signed > 0).long()
    smooth = Smooth(model, sigma, 2)
    wrong = certificates = 0
    ratios = []
    for seed in range(trials):
        result = smooth.certify(x, 50, 1000, alpha, 20_000, seed=seed)
        answered = ~result.abstained
        # Float32 noise moves the boundary by ~1e-7: only a radius beyond that slack is wrong.
        wrong += int((answered & ((result.prediction != truth) | (result.radius > distance + 1e-5))).sum())
        certificates += len(x)
        useful = (distance > 0.25 * sigma) & (distance < 2 * sigma)
        ratios.append((result.radius[useful] / distance[useful]).mean().item())
    allowed = stats.binom.ppf(1 - 1e-6, certificates, alpha)  # the rate alpha, with a margin for chance
    assert wrong <= allowed, f"{wrong} wrong certificates of {certificates} (alpha {alpha})"
    assert sum(ratios) / len(ratios) > 0.8  # and the certificates are not vacuous


def test_votes_of_a_linear_classifier_follow_the_binomial_law_of_gaussian_noise():
    sigma, n = 0.5, 2000
    model, x, signed = halfspace_images(60, sigma, seed=1)
    p = torch.from_numpy(stats.norm.cdf(signed.numpy() / sigma))  # P(class 1) under N(0, sigma^2 I)
    keep = (p > 0.05) & (p < 0.95)
    smooth = Smooth(model, sigma, 2)
    z = torch.cat(
        [
            ((votes - n * p) / torch.sqrt(n * p * (1 - p)))[keep]
            for votes in (smooth.predict(x, n, 0.5, 100_000, seed=seed).counts[:, 1].double() for seed in range(10))
        ]
    )
    assert abs(z.mean().item()) < 4 / math.sqrt(len(z))  # no bias in P(class 1) ...
    assert 0.8 < z.var().item() < 1.25  # ... nor in its spread: independent draws


class Quadrants(nn.Module):
    """Class 0 where feature 0 > t0, else class 1 where feature 1 > 0, else class 2."""

    def __init__(self, t0: float = 0.0) -> None:
        super().__init__()
        self.t0 = t0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z.flatten(1)
        first = z[:, 0] > self.t0
        second = ~first & (z[:, 1] > 0)
        cls = torch.where(first, 0, torch.where(second, 1, 2))
        return nn.functional.one_hot(cls, 3).float()


@pytest.mark.parametrize("top_probability", [0.5, 0.4])
def test_certify_abstains_when_the_top_class_has_probability_at_most_one_half(top_probability):
    sigma = 0.3
    x = torch.zeros(40, 1, 2, 2)
    threshold = -sigma * stats.norm.ppf(top_probability)  # P(sigma z > threshold) = top_probability
    result = Smooth(Quadrants(threshold), sigma, 3).certify(x, 30, 2000, 0.001, 4000, seed=1)
    assert result.abstained.all() and (result.radius == 0).all() and (result.p_lower <= 0.5).all()
    clear = Smooth(Quadrants(-sigma * stats.norm.ppf(0.62)), sigma, 3).certify(x, 30, 2000, 0.001, 4000, seed=1)
    assert (clear.prediction == 0).all() and (clear.radius > 0).all()  # the same test passes a clear winner


def test_predict_abstains_between_two_equally_likely_classes_and_answers_a_clear_winner():
    x = torch.zeros(200, 1, 2, 2)
    tie = Smooth(Quadrants(0.0), 1.0, 3)
    x_tie = x.clone()
    x_tie[:, 0, 0, 1] = 100.0  # feature 1 always > 0: classes 0 and 1, each with probability 1/2
    result = tie.predict(x_tie, 400, 0.01, 10_000, seed=2)
    answered = int((~result.abstained).sum())
    assert answered <= stats.binom.ppf(1 - 1e-6, 200, 0.01)
    assert (result.counts[:, 2] == 0).all() and (result.counts.sum(1) == 400).all()
    x_clear = x_tie.clone()
    x_clear[:, 0, 0, 0] = 0.5  # P(class 0) = Phi(0.5) = 0.69
    clear = tie.predict(x_clear, 400, 0.01, 10_000, seed=2)
    assert (clear.prediction == 0).all()


class Recorder(nn.Module):
    """Keeps every batch it is shown; predicts class 0."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[torch.Tensor] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.batches.append(z.clone())
        return torch.zeros(len(z), 2).index_fill_(1, torch.tensor([0]), 1.0)


def test_the_noise_is_unclipped_gaussian_keyed_by_seed_image_and_draw():
    sigma, n0, n = 0.8, 7, 900
    x = torch.rand(3, 1, 6, 6)
    recorder = Recorder()
    Smooth(recorder, sigma, 2).certify(x, n0, n, 0.001, 256, seed=11, offset=40)
    rows = torch.cat(recorder.batches).view(3, n0 + n, 1, 6, 6)  # image-major: selection draws, then estimation
    z = (rows - x[:, None]) / sigma
    assert rows.min() < -1 and rows.max() > 2  # never clipped to [0, 1]
    assert abs(z.mean().item()) < 5 / math.sqrt(z.numel()) and z.std().item() == pytest.approx(1.0, abs=0.02)
    for i in range(3):  # draw j of image i: the op's noise at sample (offset + i) * 2**32 + j, copy 0
        expected = gaussian_augment(
            x[i : i + 1].expand(n, 1, 6, 6), 1, sigma, None, include_original=False,
            seed=phase_key(11, "estimate"), offset=((40 + i) << 32),
        )  # fmt: skip
        torch.testing.assert_close(rows[i, n0:], expected, rtol=0, atol=0)
    selection, estimation = z[:, :n0].flatten(), z[:, n0 : 2 * n0].flatten()
    assert abs(torch.corrcoef(torch.stack([selection, estimation]))[0, 1].item()) < 0.15  # independent phases


def test_results_do_not_depend_on_batch_size_or_on_splitting_the_images():
    model, x, _ = halfspace_images(9, 0.5, seed=3)
    smooth = Smooth(model, 0.5, 2)
    results = [smooth.certify(x, 20, 300, 0.01, size, seed=5) for size in (1, 13, 320, 100_000)]
    for other in results[1:]:
        for field in ("prediction", "p_lower", "radius", "counts", "selection_counts"):
            assert torch.equal(getattr(other, field), getattr(results[0], field)), field
    head = smooth.certify(x[:4], 20, 300, 0.01, 64, seed=5)
    tail = smooth.certify(x[4:], 20, 300, 0.01, 64, seed=5, offset=4)
    assert torch.equal(torch.cat([head.counts, tail.counts]), results[0].counts)
    predictions = [smooth.predict(x, 300, 0.01, size, seed=5).counts for size in (7, 5000)]
    assert torch.equal(*predictions)
    assert not torch.equal(smooth.certify(x, 20, 300, 0.01, 64, seed=6).counts, results[0].counts)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_uint8_images_reach_the_model_in_its_own_dtype(dtype):
    """uint8 images are read as x / 255 in the dtype of the model's parameters: a float64 model votes on them as on
    the same images given in float64."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).to(dtype)
    x = torch.randint(0, 256, (4, 1, 6, 6), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    smooth = Smooth(model, 0.25, 3)
    counts = smooth.sample_counts(x, [(1, 300)], 64)
    assert counts.sum().item() == 4 * 300
    if dtype == torch.float64:
        assert torch.equal(counts, smooth.sample_counts(x.double() / 255, [(1, 300)], 64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_amp_with_a_model_not_in_float32_is_refused_naming_amp(dtype):
    """autocast lowers float32 inputs and leaves float64 (or float16) parameters: the model failed on the mix."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).to(dtype)
    x = torch.rand(2, 1, 6, 6)
    with pytest.raises(
        ValueError,
        match=f"amp='bf16' runs the model under torch.autocast, which takes float32 models;.*{str(dtype)[6:]}",
    ):
        Smooth(model, 0.25, 3, amp=True).certify(x, 4, 20, 0.01, 16)


def test_float_images_of_another_dtype_than_the_models_are_made_its_dtype():
    """float64 images (from numpy, say) and a float32 model, or the reverse, ended in a dtype error in the model."""
    x = torch.rand(3, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    for dtype in (torch.float32, torch.float64):
        model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).to(dtype)
        counts = [Smooth(model, 0.25, 3).certify(x.to(d), 5, 50, 0.01, seed=1).counts for d in FLOAT_TYPES]
        assert all(c.sum().item() == 3 * 50 for c in counts)


def test_numpy_integers_are_counts_and_seeds():
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    x = torch.rand(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    smooth = Smooth(model, 0.25, np.int64(3))
    given = smooth.certify(x, np.int64(5), np.int32(50), 0.01, np.int64(16), seed=np.int64(1))
    assert torch.equal(given.counts, smooth.certify(x, 5, 50, 0.01, 16, seed=1).counts) and given.n == 50


@pytest.mark.filterwarnings("ignore:amp='bf16' on this CPU:RuntimeWarning")  # CPUs without native bf16: emulated
def test_the_smoothed_mnist_cnn_is_certified_the_same_for_any_batch_size(mnist_model, mnist_test_data):
    images, labels = mnist_test_data
    x, y = images[:6], labels[:6]
    smooth = Smooth(mnist_model, 0.25, 10)
    small = smooth.certify(x, 16, 200, 0.001, 96, seed=0)
    large = smooth.certify(x, 16, 200, 0.001, 5000, seed=0)
    assert torch.equal(small.counts, large.counts) and torch.equal(small.radius, large.radius)
    assert small.certified_accuracy(y, [0.0])[0] >= 4 / 6  # the plain CNN keeps most digits under this noise
    assert mnist_model.training is False
    low = Smooth(mnist_model, 0.25, 10, amp="bf16").certify(x, 16, 200, 0.001, 5000, seed=0)
    assert (low.counts.sum(1) == 200).all() and (low.prediction == small.prediction).float().mean() >= 0.5


def test_model_modes_are_restored():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.Dropout(0.5))
    model.train()
    Smooth(model, 0.1, 3).predict(torch.rand(2, 1, 2, 2), 10, 0.1, seed=0)
    assert all(m.training for m in model.modules())


def _linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


X = torch.rand(2, 1, 2, 2)


@pytest.mark.parametrize(
    "call,error,match",
    [
        (lambda: Smooth(_linear(), 0.0, 3), ValueError, "sigma must be > 0"),
        (lambda: Smooth(_linear(), -1.0, 3), ValueError, "sigma must be > 0"),
        (lambda: Smooth(_linear(), float("nan"), 3), ValueError, "sigma must be finite"),
        (lambda: Smooth(_linear(), 0.5, 1), ValueError, "num_classes must be >= 2"),
        (lambda: Smooth(_linear(), 0.5, 3, amp="fp8"), ValueError, "amp must be one of"),
        (lambda: Smooth("model", 0.5, 3), TypeError, "model must be"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X, 0, 10, 0.1), ValueError, "n0 must be >= 1"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X, 10, 0, 0.1), ValueError, "n must be >= 1"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X, 10, 100.0, 0.1), TypeError, "n must be an int"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X, 10.5, 100, 0.1), TypeError, "n0 must be an int"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X, 10, 100, 0.0), ValueError, "alpha must be > 0"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X, 10, 100, 1.0), ValueError, "alpha must be < 1"),
        (lambda: Smooth(_linear(), 0.5, 3).predict(X, 10, 1.5), ValueError, "alpha must be < 1"),
        (lambda: Smooth(_linear(), 0.5, 3).predict(X, -3, 0.1), ValueError, "n must be >= 1"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X, 10, 100, 0.1, 0), ValueError, "batch_size must be >= 1"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X.long(), 10, 100, 0.1), TypeError, "x must have dtype"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X[0, 0, 0], 1, 10, 0.1), ValueError, "x must have at least 2"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X, 1, 10, 0.1, offset=-1), ValueError, "offset must be >= 0"),
        (lambda: Smooth(_linear(), 0.5, 4).certify(X, 1, 10, 0.1), ValueError, "num_classes=4"),
        (
            lambda: certified_accuracy(-torch.ones(2, dtype=int), torch.zeros(2), -torch.ones(2, dtype=int), [0.0]),
            ValueError,
            "labels must be classes",
        ),  # counted abstentions on label -1 as certified correct
        (
            lambda: Smooth(_linear(), 0.5, 3).certify(X, 1, 10, 0.1).certified_accuracy(torch.tensor([0, 7])),
            ValueError,
            "labels must be classes below 3, got 7",
        ),
        (lambda: Smooth(lambda x: _linear()(x) > 0, 0.5, 3).certify(X, 1, 10, 0.1), ValueError, "real-valued logits"),
        (lambda: clopper_pearson_lower(3, 2, 0.1), ValueError, "successes <= trials"),
        (lambda: clopper_pearson_lower(1.5, 2, 0.1), TypeError, "integer counts"),
        (lambda: certified_radius(0.9, 0), ValueError, "sigma must be > 0"),
        (lambda: certified_radius(1.5, 0.25), ValueError, "p_lower must be in"),
        (lambda: certified_radius([0.7, float("nan")], 0.25), ValueError, "p_lower must be in"),
        (lambda: certified_radius(-1.0, 0.25), ValueError, "p_lower must be in"),
        (lambda: certified_radius("a", 0.25), TypeError, "p_lower must be"),
        (lambda: Smooth(_linear(), 0.5, 3, device="gpu"), ValueError, "device must name a device"),
        (lambda: Smooth(_linear(), 0.5, 3, backend="cuda"), ValueError, "backend must be one of"),
        (lambda: Smooth(_linear(), 0.5, 10**12), ValueError, "num_classes must be <= 1048576"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X, 1, 10, 0.1, progress=3), TypeError, "progress must be"),
        (lambda: Smooth(_linear(), 0.5, 3).predict(X, 10, 0.1, progress=True), TypeError, "progress must be"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X, True, 10, 0.1), TypeError, "n0 must be an int"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X, 1, 10, 0.1, batch_size=True), TypeError, "batch_size must"),
        (lambda: Smooth(_linear(), 0.5, 3).certify(X, 1, 10, 0.1, seed=2**64), ValueError, "seed must be <="),
    ],
)
def test_bad_input_is_rejected_naming_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.cuda
@pytest.mark.parametrize("backend", [None, pytest.param("triton", marks=pytest.mark.triton)])
def test_on_a_gpu_the_votes_are_the_cpus(backend):
    model, x, _ = halfspace_images(12, 0.5, seed=4)
    on_cpu = Smooth(model, 0.5, 2).certify(x, 20, 2000, 0.01, 500, seed=9)
    gpu_model = Halfspace(model.w.cuda(), model.b)
    on_gpu = Smooth(gpu_model, 0.5, 2, device="cuda", backend=backend).certify(x.cuda(), 20, 2000, 0.01, 3000, seed=9)
    # The same noise to ~1e-6 on every backend: a vote may flip only for a draw within that of the boundary.
    assert (on_gpu.counts - on_cpu.counts).abs().sum() <= 2
    assert (on_gpu.prediction == on_cpu.prediction).all()


def test_amp_on_a_cpu_without_native_arithmetic_warns_once(monkeypatch):
    from nemesis_fast import _amp

    x = torch.rand(2, 1, 2, 2)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    monkeypatch.setattr(_amp, "_warned", set())
    monkeypatch.setattr(_amp, "cpu_lacks_native", lambda name: False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Smooth(model, 0.1, 3, amp="bf16").predict(x, 10, 0.1, seed=0)
    monkeypatch.setattr(_amp, "cpu_lacks_native", lambda name: True)
    with pytest.warns(RuntimeWarning, match="no native bf16 arithmetic") as caught:
        Smooth(model, 0.1, 3, amp="bf16").predict(x, 10, 0.1, seed=0)
        Smooth(model, 0.1, 3, amp="bf16").predict(x, 10, 0.1, seed=0)
    assert len([w for w in caught if "native" in str(w.message)]) == 1
    assert isinstance(_amp.cpu_lacks_native("fp16"), bool)


@pytest.mark.parametrize(
    "machine,avx512_bf16,amx,onednn,lacks",
    [
        ("x86_64", False, False, True, True),  # AVX-512 without AVX512-BF16: oneDNN says "supported", and converts
        ("x86_64", True, False, True, False),
        ("AMD64", False, True, True, False),
        ("x86_64", False, False, False, True),  # AVX2 only
        ("aarch64", False, False, True, False),  # no x86 flags to read: oneDNN's report
        ("aarch64", False, False, False, True),
    ],
)
def test_native_bf16_on_x86_is_avx512_bf16_or_amx(monkeypatch, machine, avx512_bf16, amx, onednn, lacks):
    import platform

    from nemesis_fast import _amp

    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn)
    assert _amp.cpu_lacks_native("bf16") is lacks


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_cuda_device_without_a_gpu_is_rejected_at_construction():
    with pytest.raises(ValueError, match="device is 'cuda', but no CUDA GPU is visible"):
        Smooth(lambda z: z.flatten(1)[:, :3], 0.5, 3, device="cuda")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_images_are_rejected_not_certified(value):
    x = torch.rand(3, 1, 2, 2)
    x[1, 0, 1, 0] = value
    smooth = Smooth(_linear(), 0.25, 3)
    with pytest.raises(ValueError, match="x must be finite"):
        smooth.certify(x, 10, 100, 0.01, seed=0)
    with pytest.raises(ValueError, match="x must be finite"):
        smooth.predict(x, 100, 0.01, seed=0)


def test_non_finite_images_are_named_the_first_ten_then_counted():
    """The message names the first 10 images at fault and counts the others; exactly 10 are all named."""
    smooth = Smooth(_linear(), 0.25, 3)
    first_ten = ", ".join(f"x\\[{i}\\]" for i in range(10))
    for bad, more in ((12, " and 2 more"), (10, "")):
        x = torch.rand(14, 1, 2, 2)
        x[:bad, 0, 0, 1] = math.nan
        with pytest.raises(ValueError, match=rf"^x must be finite; NaN or inf in image\(s\) {first_ten}{more}$"):
            smooth.predict(x, 10, 0.01, seed=0)


class NanForLargeInputs(nn.Module):
    """A linear model whose logits are NaN (or +inf in one class) on the noisy copies of images far from 0."""

    def __init__(self, poison: float) -> None:
        super().__init__()
        self.linear, self.poison = _linear(), poison

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        logits = self.linear(z)
        far = z.flatten(1).mean(1) > 50
        return torch.where(far[:, None] & (torch.arange(3) == 0), self.poison, logits)


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_non_finite_logits_are_no_votes_and_raise_once_naming_the_images(poison):
    x = torch.rand(4, 1, 2, 2)
    x[1] += 100
    x[3] += 100
    smooth = Smooth(NanForLargeInputs(poison), 0.25, 3)
    with pytest.raises(ValueError, match=r"model gave non-finite logits.* x\[1\], x\[3\]"):
        smooth.certify(x, 10, 100, 0.01, 7, seed=0)
    with pytest.raises(ValueError, match=r"model gave non-finite logits.* x\[1\], x\[3\]"):
        smooth.predict(x, 100, 0.01, seed=0)
    clean = smooth.certify(x[[0, 2]], 10, 100, 0.01, seed=0)
    assert (clean.counts.sum(1) == 100).all()


def test_certified_radius_of_a_certain_class_is_infinite():
    assert certified_radius([1.0, 1], 0.25).tolist() == [math.inf, math.inf]
    assert certified_radius(torch.tensor([0.0, 0.5]), 0.25).tolist() == [0.0, 0.0]


P, R = torch.tensor([0, 1]), torch.tensor([1.0, 1.0], dtype=torch.float64)


@pytest.mark.parametrize(
    "args,error,match",
    [
        ((P, R, torch.tensor([[0], [1]]), [0.0]), ValueError, "labels must have 1 dimensions"),
        ((P, R, torch.tensor([0, 1, 2]), [0.0]), ValueError, "labels must have the length of prediction"),
        ((P, R[:1], torch.tensor([0, 1]), [0.0]), ValueError, "radius must have the length of prediction"),
        ((P.numpy(), R, P, [0.0]), TypeError, "prediction must be a torch.Tensor"),
        ((P, R, P.double(), [0.0]), TypeError, "labels must have dtype"),
        ((P, P, P, [0.0]), TypeError, "radius must have dtype"),
        ((P, R, P, 0.5), TypeError, "radii must be"),
        ((P, R, P, "0.5"), TypeError, "radii must be"),
        ((P, R, P, [0.0, math.nan]), ValueError, r"radii\[1\] must be finite"),
        ((P, R, P, [-0.5]), ValueError, r"radii\[0\] must be >= 0"),
    ],
)
def test_certified_accuracy_rejects_bad_input_naming_the_argument(args, error, match):
    with pytest.raises(error, match=match):
        certified_accuracy(*args)


def test_certified_accuracy_takes_any_integer_labels_and_a_radius_array():
    labels = torch.tensor([0, 1], dtype=torch.uint8)
    assert certified_accuracy(P, R.float(), labels, (0.0, 1.0, 1.5)) == [1.0, 1.0, 0.0]
    assert math.isnan(certified_accuracy(P[:0], R[:0], labels[:0], [0.0])[0])


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8])
def test_certified_accuracy_takes_predictions_and_labels_of_every_integer_dtype(dtype):
    prediction = torch.tensor([0, 1, 2, 1], dtype=dtype)
    labels = torch.tensor([0, 1, 1, 1], dtype=dtype)
    radius = torch.tensor([1.0, 0.5, 1.0, 2.0])
    assert certified_accuracy(prediction, radius, labels, (0.0, 1.0)) == [0.75, 0.5]


def test_progress_reports_every_noisy_copy_once_in_forward_passes_of_at_most_batch_size():
    """2 images x (7 + 30) draws in passes of 16: four full passes, then the remaining 10 (not 16)."""
    seen = []
    Smooth(_linear(), 0.25, 3).certify(X, 7, 30, 0.01, 16, seed=0, progress=seen.append)
    assert seen == [16, 16, 16, 16, 10]


def test_the_certificate_keeps_the_n0_selection_votes_apart_from_the_n_estimation_votes():
    result = Smooth(_linear(), 0.25, 3).certify(X, 7, 30, 0.01, 16, seed=0)
    assert result.selection_counts.sum(1).tolist() == [7, 7] and result.counts.sum(1).tolist() == [30, 30]
