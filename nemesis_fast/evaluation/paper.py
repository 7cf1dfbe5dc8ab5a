"""The seed paper's MNIST black-box table (Zantedeschi, Nicolae, Rawat 2017, Table 1: accuracy in percent of each
model on adversarial examples crafted on the authors' small ResNet), and how a run compares with it."""

from __future__ import annotations

from typing import Any

PAPER_MNIST_BLACKBOX: dict[str, dict[str, float]] = {
    "standard": {"fgsm": 94.46, "rfgsm": 40.70, "deepfool": 92.95, "jsma": 97.95, "cw": 93.10},
    "feature_squeezing": {"fgsm": 96.31, "rfgsm": 91.09, "deepfool": 96.68, "jsma": 97.48, "cw": 96.75},
    "label_smoothing": {"fgsm": 86.79, "rfgsm": 20.28, "deepfool": 84.58, "jsma": 95.86, "cw": 84.81},
    "fgsm_adversarial": {"fgsm": 91.86, "rfgsm": 49.77, "deepfool": 85.91, "jsma": 98.62, "cw": 97.71},
    "vat": {"fgsm": 97.53, "rfgsm": 74.35, "deepfool": 96.03, "jsma": 98.26, "cw": 96.11},
    "gda": {"fgsm": 98.47, "rfgsm": 80.25, "deepfool": 97.84, "jsma": 98.96, "cw": 97.87},
    "gda_brelu": {"fgsm": 98.08, "rfgsm": 75.50, "deepfool": 98.00, "jsma": 98.88, "cw": 98.03},
}
TOLERANCE = 5.0  # percentage points: a cell within this of the paper's reproduces it


def paper_value(dataset: str, defense: str, attack: str) -> float | None:
    """The paper's black-box accuracy of `defense` under `attack`, where the paper gives one (MNIST only)."""
    if dataset != "mnist":
        return None
    return PAPER_MNIST_BLACKBOX.get(defense, {}).get(attack)


def eps_meeting_paper(points: list[tuple[float, float]], target: float) -> float | None:
    """The eps at which accuracy (points of (eps, accuracy), any order) first falls to `target` or below,
    interpolated linearly between the two sweep points around it; None when it never does."""
    points = sorted(points)
    for (e0, a0), (e1, a1) in zip(points, points[1:]):
        if a0 >= target >= a1:
            return e0 if a0 == a1 else e0 + (e1 - e0) * (a0 - target) / (a0 - a1)
    if points and points[0][1] <= target:
        return points[0][0]
    return None


def comparison(dataset: str, defense: str, attack: str, accuracy: float) -> dict[str, Any] | None:
    """{"paper", "difference", "within"} of one black-box cell against the paper's, or None without one."""
    paper = paper_value(dataset, defense, attack)
    if paper is None:
        return None
    difference = accuracy - paper
    return {"paper": paper, "difference": difference, "within": abs(difference) <= TOLERANCE}
