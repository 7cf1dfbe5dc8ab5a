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
# The test sets the paper's numbers apply to, by `dataset.content_digest` of their first 16 images and labels: MNIST's
# t10k files, and the sample shipped with the package (2,000 of them). Other images in MNIST's format (Fashion-MNIST,
# say) or synthetic data get no paper values beside their cells.
MNIST_TEST_HEADS = frozenset({"sha256:930c957af458e562e65c112f8fb7d9b6", "sha256:2e7e39d930f8b3b5219c67692c96e587"})
PAPER_HEAD_IMAGES = 16

# The authors' own curves on MNIST, accuracy (%) at eps 0.1, 0.2, ..., 1.0 (None: hidden in their plot by another
# line or the legend): the plots of their notebook of 17 July 2017 (notebooks/experiment2.ipynb at c7a44acc8 in
# the history of the Adversarial Robustness Toolbox), read off with scripts/read_plot_curves.py (within about 1
# point). Black-box: crafted on their small ResNet (resnet/relu); white-box: each model through its own gradient
# (BReLU's included; feature squeezing applied outside the network). The paper's FGSM and R+FGSM columns are
# the black-box curves at eps 0.1 and 0.3. Their FGSM adversarially trained model is cnn/relu/adv-trained/ (28
# June 2017) in the FGSM plots and cnn/relu/adv-trained/fgsm/eps0.30_train.npy (July) in the R+FGSM plots.
AUTHORS_EPS = tuple(round(0.1 * i, 1) for i in range(1, 11))
AUTHORS_MNIST_CURVES: dict[tuple[str, str], dict[str, tuple[float | None, ...]]] = {
    ("blackbox", "fgsm"): {
        "standard": (94.0, 68.3, 31.0, 11.9, None, None, None, None, None, None),
        "feature_squeezing": (95.4, 95.0, 87.6, 76.1, None, 1.6, 1.4, 1.4, 1.6, 1.8),
        "label_smoothing": (86.2, 39.9, 14.7, 5.5, 3.2, None, None, None, None, None),
        "fgsm_adversarial": (92.0, 72.9, 39.4, 16.5, 8.0, 5.3, 4.1, 4.1, 4.1, 4.4),
        "vat": (97.2, 90.4, 62.1, 27.5, 12.4, 7.8, 6.4, 6.4, 6.4, 6.9),
        "gda": (99.3, 93.6, 67.9, 25.0, 8.9, 4.6, 5.0, 5.0, 5.0, 5.5),
        "gda_brelu": (98.2, None, 63.3, 20.6, 6.4, 3.7, 3.4, 3.2, 3.0, 3.7),
    },
    ("blackbox", "rfgsm"): {
        "standard": (None, 80.3, 40.8, 16.1, 6.4, None, None, None, None, None),
        "feature_squeezing": (95.9, None, 90.8, 82.1, 31.8, 1.8, 1.4, 1.4, 1.6, 1.6),
        "label_smoothing": (93.1, 54.6, 19.7, 6.9, 3.2, None, 0.9, 0.9, None, None),
        "fgsm_adversarial": (99.5, 96.6, 87.6, 61.9, 33.0, 16.5, 9.6, 7.1, 5.0, 5.5),
        "vat": (98.2, 94.0, 74.3, 37.2, 15.1, 8.7, 6.4, 6.0, 6.4, 6.9),
        "gda": (99.5, 96.3, 80.3, 35.6, 11.2, 5.7, 4.6, 4.4, 4.8, 4.8),
        "gda_brelu": (None, 95.4, 75.7, 31.2, 8.7, 4.1, 3.2, 2.8, 3.2, 3.7),
    },
    ("whitebox", "fgsm"): {
        "standard": (73.9, 45.6, 27.5, 19.3, 15.6, 13.8, 13.8, 13.8, 13.8, 13.8),
        "feature_squeezing": (93.8, None, 78.0, 60.6, 2.2, 1.1, 1.1, 1.1, 0.9, 0.9),
        "label_smoothing": (63.8, 10.6, 1.4, 0.7, 0.5, None, None, None, 3.2, 3.2),
        "fgsm_adversarial": (30.3, 3.7, 2.5, 2.5, 2.3, 2.3, 2.3, 2.3, 2.1, 2.1),
        "vat": (85.8, 76.6, 74.3, 73.4, 72.9, 72.9, None, None, None, 73.4),
        "gda": (95.4, 85.3, 61.9, 42.7, 29.4, 22.2, 22.0, 20.4, 19.5, 18.8),
        "gda_brelu": (97.2, 89.9, None, 54.4, 34.4, 23.9, 19.7, 17.4, 16.5, 16.5),
    },
    ("whitebox", "rfgsm"): {
        "standard": (86.0, 52.8, 31.2, 21.1, 16.5, 14.2, 13.8, 13.3, 13.8, 13.8),
        "feature_squeezing": (None, None, 86.2, None, 12.8, 1.1, 1.4, 0.9, 1.4, 1.4),
        "label_smoothing": (83.5, 18.8, 2.3, 1.1, 1.1, None, None, None, 3.2, 3.2),
        "fgsm_adversarial": (93.3, 41.7, 5.0, 2.5, 2.3, 2.3, 2.1, 2.1, 2.1, 1.8),
        "vat": (91.3, 76.1, 71.6, 70.2, 69.7, 69.3, None, None, None, 69.3),
        "gda": (96.1, 92.2, 83.9, 73.2, 63.8, 57.3, None, 47.7, 45.9, 42.7),
        "gda_brelu": (98.2, 95.0, 88.5, 76.1, 58.3, 43.6, 35.3, 31.2, 30.3, 28.9),
    },
}


def paper_value(dataset: str, defense: str, attack: str) -> float | None:
    """The paper's black-box accuracy of `defense` under `attack`, where the paper gives one (MNIST only)."""
    if dataset != "mnist":
        return None
    return PAPER_MNIST_BLACKBOX.get(defense, {}).get(attack)


def authors_curve(dataset: str, setting: str, attack: str, defense: str) -> dict[float, float]:
    """The authors' own accuracy (%) of `defense` under `attack` ("blackbox" or "whitebox" `setting`) at each eps
    their plot shows it (MNIST, FGSM and R+FGSM only; empty otherwise)."""
    if dataset != "mnist":
        return {}
    values = AUTHORS_MNIST_CURVES.get((setting, attack), {}).get(defense, ())
    return {eps: v for eps, v in zip(AUTHORS_EPS, values) if v is not None}


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
