"""bench.compat's max_diff: the largest absolute difference between the drop-in's and the peer's images, and none
for a pair of different algorithms."""

import torch

from nemesis_fast.bench import compat
from nemesis_fast.bench.harness import Report


def _shift(by):
    def make():
        return lambda images, labels: images + torch.tensor([0.0, by, -2 * by, 0.5 * by]).view(4, 1, 1, 1)

    return make


def test_max_diff_is_the_largest_absolute_difference():
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    report = Report("compat", "cpu")
    # ours - peer per image: 0, 0.1, -0.2, 0.05: the largest in size is 0.2 (negative)
    compat.measure_pair(report, compat.Pair("case", _shift(0.0), _shift(0.1), rounds=1), x, y)
    assert abs(report.rows[1].extra["max_diff"] - 0.2) < 1e-6


def test_no_max_diff_for_another_algorithm():
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long)
    report = Report("compat", "cpu")
    compat.measure_pair(report, compat.Pair("case", _shift(0.0), _shift(0.1), compare=False, rounds=1), x, y)
    assert report.rows[1].ms is not None and "max_diff" not in report.rows[1].extra
