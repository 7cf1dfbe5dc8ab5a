"""paper_cells: the run's cached verdicts cut at the first `limit` images, the clean accuracy and logit margin, the
eps sweep of both FGSM columns, and the number of images a judge counts."""

from types import SimpleNamespace

import pytest
import torch
from _support import load_script
from torch import nn

cells = load_script("paper_cells")


def _evaluation(chunks, verdicts):
    """A stand-in run: the black-box chunks of every attack and the verdicts cached per chunk."""
    return SimpleNamespace(
        config=SimpleNamespace(defenses=["gda"]),
        blackbox_chunks=lambda attack: chunks,
        attacks=SimpleNamespace(verdict_key=lambda attack, eps, chunk: chunk),
        cache=SimpleNamespace(load=lambda kind, key: {"correct": {"gda": verdicts[key]}}),
    )


def test_cached_accuracy_keeps_the_first_limit_images_of_the_chunks():
    chunks = [(0, 4), (4, 8), (8, 12)]
    verdicts = {
        (0, 4): torch.tensor([1, 1, 1, 1], dtype=torch.bool),
        (4, 8): torch.tensor([0, 1, 0, 0], dtype=torch.bool),
        (8, 12): torch.tensor([0, 0, 0, 0], dtype=torch.bool),
    }
    evaluation = _evaluation(chunks, verdicts)
    assert cells.first_chunks(evaluation, "fgsm", 4) == [(0, 4)]  # image 4 is the 5th: not among the first 4
    assert cells.first_chunks(evaluation, "fgsm", 6) == [(0, 4), (4, 8)]
    assert cells.chunk_stop((4, 8), 6) == 6 and cells.chunk_stop((4, 8), 0) == 8
    # the first 6 images: 4 right, then 0 and 1 -> 5 of 6
    assert cells.cached_accuracy(evaluation, "fgsm", 0.1, 6)["gda"] == pytest.approx(100 * 5 / 6)
    assert cells.cached_accuracy(evaluation, "fgsm", 0.1, 4)["gda"] == pytest.approx(100.0)
    assert cells.cached_accuracy(evaluation, "fgsm", 0.1, 0)["gda"] == pytest.approx(100 * 5 / 12)


class _Fixed(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, x):
        return self.logits[x.flatten().long()]


def test_margins_are_the_clean_accuracy_and_the_median_top1_minus_top2_logit():
    logits = torch.tensor([[5.0, 1.0, 0.0], [0.0, 2.0, 1.5], [3.0, 0.0, 0.0], [0.0, 0.0, 9.0]])
    x, y = torch.arange(4.0).view(4, 1), torch.tensor([0, 1, 0, 1])
    out = cells.margins(_Fixed(logits), x, y)
    assert out["clean_accuracy"] == pytest.approx(75.0)  # argmax 0, 1, 0, 2
    # margins 4, 0.5, 3, 9: torch's median of an even count is the lower middle value, 3
    assert out["median_logit_margin"] == pytest.approx(3.0)


def test_an_eps_sweep_applies_to_rfgsm_as_to_fgsm():
    assert cells.table_columns("rfgsm,cw", "0.2,0.4") == [("rfgsm", 0.2), ("rfgsm", 0.4), ("cw", None)]


def test_judge_counts_the_images_of_every_chunk():
    evaluation = SimpleNamespace(
        attacks=SimpleNamespace(
            test_chunk=lambda chunk: (torch.zeros(chunk[1] - chunk[0], 1), torch.zeros(chunk[1] - chunk[0]).long()),
            predict=lambda model, x: torch.zeros(len(x)).long(),
        )
    )
    accuracy, images = cells.judge(evaluation, {"m": None}, [(0, 3), (3, 5)], lambda chunk, x, y: (x, y))
    assert images == 5 and accuracy == {"m": 100.0}
