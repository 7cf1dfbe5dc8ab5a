"""CERTIFY's and PREDICT's decisions from given vote counts, against a hand computation with scipy (Cohen et al.,
"Certified adversarial robustness via randomized smoothing", 2019, Algorithms 1 and 2), and the limits of the
draw and image indices. The votes are fixed by overriding Smooth.sample_counts: no noise, no model."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from nemesis_fast.certify import Smooth
from nemesis_fast.certify.smooth import MAX_IMAGE_INDEX


class FixedVotes(Smooth):
    """A Smooth whose sample_counts returns the given (B, P, K) votes, whatever the noise."""

    def __init__(self, votes: list, sigma: float = 0.5) -> None:
        self.votes = torch.tensor(votes, dtype=torch.int64)
        super().__init__(lambda z: None, sigma, self.votes.shape[-1])

    def sample_counts(self, x, phases, batch_size, *, offset=0, progress=None):
        assert [count for _, count in phases] == [int(v) for v in self.votes[0].sum(1)]
        return self.votes.clone()


X2 = torch.zeros(2, 1, 2, 2)


def test_certify_takes_the_class_from_the_selection_votes_and_its_bound_from_the_estimation_votes():
    """Selection picks the class (argmax of the n0 votes, first of ties), estimation counts that class's votes
    in the n draws; a class that wins only the estimation draws is not certified (selection bias)."""
    n0, n, alpha, sigma = 10, 1000, 0.001, 0.5
    votes = [
        [[3, 7, 0], [990, 10, 0]],  # selection: class 1; estimation: class 0 dominates -> abstain
        [[0, 9, 1], [5, 990, 5]],  # selection: class 1, and it wins the estimation -> certified
    ]
    result = FixedVotes(votes, sigma).certify(X2, n0, n, alpha, seed=0)
    assert result.prediction.tolist() == [-1, 1]
    p_lower = [stats.beta.ppf(alpha, 10, n - 10 + 1), stats.beta.ppf(alpha, 990, n - 990 + 1)]
    assert result.p_lower.tolist() == pytest.approx(p_lower, rel=1e-12)
    assert result.radius.tolist() == pytest.approx([0.0, sigma * stats.norm.ppf(p_lower[1])], rel=1e-9)
    tied = FixedVotes([[[5, 5], [2, 998]]]).certify(X2[:1], n0, n, alpha, seed=0)
    assert tied.prediction.tolist() == [-1]  # the tie goes to class 0, which has 2 estimation votes


def test_predict_tests_the_top_count_against_the_runner_up_alone():
    """Cohen et al.'s PREDICT: binomial test of nA in nA + nB trials (nB the runner-up's count, not every other
    vote); p <= alpha answers, and p > alpha abstains."""
    counts = [[[60, 30, 10]], [[10, 25, 65]]]
    expected = [stats.binomtest(60, 90, 0.5).pvalue, stats.binomtest(65, 90, 0.5).pvalue]
    result = FixedVotes(counts).predict(X2, 100, 0.01, seed=0)
    assert result.p_value.tolist() == pytest.approx(expected, rel=1e-9)
    assert result.prediction.tolist() == [0, 2]
    p = expected[0]
    assert FixedVotes(counts[:1]).predict(X2[:1], 100, p, seed=0).prediction.tolist() == [0]  # p = alpha answers
    assert FixedVotes(counts[:1]).predict(X2[:1], 100, 0.75 * p, seed=0).prediction.tolist() == [-1]
    assert FixedVotes(counts[:1]).predict(X2[:1], 100, 0.99 * p, seed=0).prediction.tolist() == [-1]


class Refuses:
    """A model that must not be called (the arguments are to be refused before any draw)."""

    def __call__(self, z):
        raise AssertionError("the model was called: the arguments were not refused")


def test_the_draw_and_image_indices_stop_at_their_bit_fields():
    """The draw index fills the low 32 bits of the noise's sample index and the image index the high ones: n (or
    n0) above 2**32, or an image index above 2**31 - 1, would run into the next field."""
    smooth = Smooth(Refuses(), 0.5, 2)
    x = torch.zeros(2, 1, 1, 1)
    with pytest.raises(ValueError, match="n must be <= 4294967296"):
        smooth.certify(x, 1, 2**32 + 1, 0.1, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="n0 must be <= 4294967296"):
        smooth.certify(x, 2**32 + 1, 1, 0.1, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="n must be <= 4294967296"):
        smooth.predict(x, 2**32 + 1, 0.1, batch_size=1, seed=0)
    with pytest.raises(ValueError, match="offset \\+ len\\(x\\) must be <= 2147483648, got 2147483649"):
        smooth.predict(x, 10, 0.1, seed=0, offset=MAX_IMAGE_INDEX)
    # The last image index itself is allowed, and its noise is drawn.
    last = Smooth(lambda z: torch.stack([z.flatten(1)[:, 0], -z.flatten(1)[:, 0]], 1), 0.5, 2)
    counts = last.predict(x[:1], 50, 0.1, seed=0, offset=MAX_IMAGE_INDEX).counts
    assert counts.sum().item() == 50 and counts.min().item() > 0


def _sign_of_first_feature(z: torch.Tensor) -> torch.Tensor:
    first = z.flatten(1)[:, 0]
    return torch.stack([first, -first], 1)


@pytest.mark.parametrize("phase", ["certify", "predict"])
def test_unseeded_runs_draw_fresh_noise_that_torch_manual_seed_governs(phase):
    """seed=None draws the noise's key from torch's default generator, as the docstring says: two unseeded runs
    vote on different noise, and torch.manual_seed replays a run."""
    smooth = Smooth(_sign_of_first_feature, 1.0, 2)
    x = torch.zeros(4, 1, 2, 2)  # each class with probability 1/2: the votes follow the noise

    def run():
        if phase == "certify":
            result = smooth.certify(x, 20, 200, 0.1)
            return torch.cat([result.selection_counts, result.counts])
        return smooth.predict(x, 200, 0.1).counts

    torch.manual_seed(123)
    first, second = run(), run()
    torch.manual_seed(123)
    assert torch.equal(run(), first)
    assert not torch.equal(first, second)


def test_certified_accuracy_refuses_a_label_equal_to_the_number_of_classes():
    """Classes are 0 .. K - 1: label K (one past the last) is refused like any larger one."""
    result = FixedVotes([[[0, 9, 1], [5, 990, 5]]]).certify(X2[:1], 10, 1000, 0.001, seed=0)
    assert result.certified_accuracy(torch.tensor([1]), [0.0]) == [1.0]
    assert result.certified_accuracy(torch.tensor([2]), [0.0]) == [0.0]
    with pytest.raises(ValueError, match="labels must be classes below 3, got 3"):
        result.certified_accuracy(torch.tensor([3]), [0.0])


def test_phase_keys_are_pinned():
    """The phases' noise keys: the first 8 bytes of sha256("nemesis_fast.certify:{seed}:{phase}"), little-endian,
    signed. Pinned, so that a certificate run under a seed is reproducible across versions (every other test
    derives its keys through phase_key and would follow a change)."""
    from nemesis_fast.certify import phase_key

    assert [phase_key(0, p) for p in ("select", "estimate", "predict")] == [
        -2448256302224382528, 5403842653293275863, -1623213593467570506,
    ]  # fmt: skip
    assert phase_key(-1, "select") == 7578427717361096852 and phase_key(2**63 - 1, "predict") == -4588191246092339359


def test_certify_abstains_where_the_lower_bound_is_exactly_one_half():
    """Cohen et al. certify only where pA > 1/2. One vote in n = 1 draw bounds pA by Beta(1, 1)'s alpha quantile,
    alpha itself: 1/2 exactly for alpha = 1/2; two in two by sqrt(alpha): 1/2 for alpha = 1/4. Both abstain."""
    for n, alpha in ((1, 0.5), (2, 0.25)):
        result = FixedVotes([[[1, 0], [n, 0]]]).certify(X2[:1], 1, n, alpha, seed=0)
        assert result.p_lower.tolist() == [0.5]
        assert result.prediction.tolist() == [-1] and result.radius.tolist() == [0.0]
