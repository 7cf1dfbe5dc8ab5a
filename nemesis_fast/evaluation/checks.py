"""Gradient-masking checks (Athalye, Carlini, Wagner, "Obfuscated Gradients Give a False Sense of Security",
ICML 2018, section 3.1), run on an evaluation's cells for every defense:

* iterative >= single-step: white-box PGD leaves no more accuracy than white-box FGSM at any eps;
* white-box >= black-box: the strongest white-box attack at an eps (FGSM, R+FGSM or PGD, whichever leaves the
  least accuracy) leaves no more accuracy than black-box FGSM at that eps. (Single-step FGSM alone is no
  yardstick at eps near 1, where it sets every pixel to 0 or 1 by its gradient's sign, and the accuracy on
  such patterns rises and falls with eps on any model.)
* to chance: the strongest white-box attack at the largest eps (at least 0.5, half the pixel range, where any
  MNIST or CIFAR image can be turned into another class's) leaves no more than chance accuracy.
* own gradient (defenses attacked through BPDA too: feature squeezing, BReLU models): no white-box attack
  through the defense's own gradient alone leaves more accuracy than the defense's row (BPDA or its own
  gradient, whichever fools an image) at the same eps. A defense that fails it hides its gradient: robustness
  measured through that gradient is not robustness.
* JSMA's softmax gradient (where JSMA follows the softmax's Jacobian, the paper's F): the share of (test image,
  other class) pairs whose float32 softmax probability is exactly 0 is at most 1%. For such a pair the gradient of
  the target's probability is exactly 0 too, and JSMA aimed at that target cannot take a step: it fails because
  the target's logit lies more than about 103 below the top one (float32 holds nothing positive below e^-103.3),
  not because the model is robust.
* FGSM's zero gradient (where white-box FGSM runs): the share of test images whose FGSM loss gradient, through the
  gradient the defense's row takes, is exactly 0 in float32 is at most 1%. FGSM leaves such an image where it is
  at every eps: where a model's softmax is exactly one-hot, the cross-entropy's gradient is 0, and FGSM's
  accuracy stops falling there however large eps grows, while attacks that start elsewhere (PGD's random
  starts) fool those images.

Each comparison allows for sampling error: two binomial standard errors of the two accuracies, plus 0.5 points.
A check without the cells it needs is "not run", not passed. A defense that fails any check is flagged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..attacks import FGSM
from ..attacks.base import model_guard
from ..data.loader import DeviceLoader
from .config import MASKED
from .report import Cell, Results

LARGE_EPS = 0.5
UNDERFLOW_LIMIT = 1.0  # percent of (image, other class) pairs
ZERO_GRADIENT_LIMIT = 1.0  # percent of test images


@dataclass
class CheckResult:
    defense: str
    iterative: str  # "pass", "FAIL (...)" or "not run"
    whitebox: str
    chance: str
    own_gradient: str = "n/a"  # "n/a": no rows through the defense's own gradient (no BPDA variant)
    softmax: str = "n/a"  # "n/a": JSMA does not follow the softmax's gradient in this run
    zero_gradient: str = "n/a"  # "n/a": no white-box FGSM in this run

    @property
    def flagged(self) -> bool:
        verdicts = (self.iterative, self.whitebox, self.chance, self.own_gradient, self.softmax, self.zero_gradient)
        return any(v.startswith("FAIL") for v in verdicts)


def _slack(a: Cell, b: Cell | None = None) -> float:
    """Two standard errors of the difference of two accuracies (percent), plus 0.5 points."""
    variance = sum(c.accuracy * (100 - c.accuracy) / max(c.samples, 1) for c in (a, b) if c is not None)
    return 2 * math.sqrt(variance) + 0.5


def _at_most(stronger: list[Cell], weaker: dict[float, Cell], what: str) -> str:
    """ "pass" when every cell of `stronger` leaves no more accuracy than the `weaker` cell at its eps."""
    pairs = [(c, weaker[c.eps]) for c in stronger if c.eps in weaker and c.eps > 0]
    if not pairs:
        return "not run"
    worst = [(s, w) for s, w in pairs if s.accuracy > w.accuracy + _slack(s, w)]
    if worst:
        s, w = max(worst, key=lambda p: p[0].accuracy - p[1].accuracy)
        return f"FAIL ({what} {s.accuracy:.1f}% > {w.accuracy:.1f}% at eps {s.eps:g})"
    return "pass"


def gradient_masking_checks(results: Results, num_classes: int = 10) -> list[CheckResult]:
    """One CheckResult per defense of `results`."""
    out = []
    for defense in results.config["defenses"]:
        fgsm = [c for c in results.whitebox("fgsm") if c.defense == defense]
        pgd = [c for c in results.whitebox("pgd") if c.defense == defense]
        blackbox_fgsm = {c.eps: c for c in results.blackbox_sweep("fgsm") if c.defense == defense}
        iterative = _at_most(pgd, {c.eps: c for c in fgsm}, "PGD") if pgd else "not run"
        whitebox = _at_most(_strongest(results, defense), blackbox_fgsm, "white-box") if fgsm or pgd else "not run"
        strongest = pgd or fgsm
        chance = "not run"
        if strongest:
            top = max(strongest, key=lambda c: c.eps)
            if top.eps >= LARGE_EPS:
                level = 100 / num_classes
                ok = top.accuracy <= level + _slack(top)
                chance = "pass" if ok else f"FAIL ({top.accuracy:.1f}% at eps {top.eps:g}, chance {level:.0f}%)"
            else:  # (CIFAR-10's default sweep ends at 16/255: add 0.5 to whitebox_eps to run it)
                chance = f"not run (whitebox_eps has no eps >= {LARGE_EPS:g})"
        own = _own_gradient(results, defense)
        out.append(
            CheckResult(
                defense, iterative, whitebox, chance, own, _softmax(results, defense), _zero_gradient(results, defense)
            )
        )
    return out


def _share_verdict(share: float | None, limit: float, failure: str) -> str:
    """ "n/a" for a share not measured, "pass" at most `limit` (percent), else "FAIL (<share>% of <failure>)"."""
    if share is None:
        return "n/a"
    return f"FAIL ({share:.1f}% of {failure})" if share > limit else "pass"


def _zero_gradient(results: Results, defense: str) -> str:
    share = results.fgsm_zero_gradient.get(defense)
    return _share_verdict(share, ZERO_GRADIENT_LIMIT, "test images: gradient 0, so FGSM leaves them unchanged")


def fgsm_zero_gradient(
    attack: FGSM, images: torch.Tensor, labels: torch.Tensor, device: torch.device, batch_size: int = 1000
) -> float:
    """Percent of `images` (uint8 or float, (N, C, H, W)) with labels `labels` whose loss gradient under the FGSM
    `attack` (its model, loss and labels) is exactly 0 in float32: the images it leaves unchanged at any eps.
    nan for no images."""
    if len(labels) == 0:
        return math.nan
    zero = torch.zeros((), dtype=torch.int64, device=device)
    for x, y in DeviceLoader(images, labels, batch_size, shuffle=False, device=device):
        zero += zero_gradient_images(attack, x, y).sum()
    return 100 * zero.item() / len(labels)


def zero_gradient_images(attack: FGSM, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) bool: the images of `x` ((B, C, H, W) float in [0, 1]; labels `y`) whose loss gradient under the FGSM
    `attack` is exactly 0 everywhere."""
    grad, _ = attack.loss_gradient(x, y if attack.labels == "true" else None)
    return grad.flatten(1).abs().amax(1) == 0


def _softmax(results: Results, defense: str) -> str:
    share = results.softmax_underflow.get(defense)
    return _share_verdict(share, UNDERFLOW_LIMIT, "(image, target) pairs: probability 0, so gradient 0")


def softmax_underflow(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device, batch_size: int = 1000
) -> float:
    """Percent of the (image, class other than its label) pairs of `images` (uint8 or float, (N, C, H, W)) whose
    softmax probability under `model` is exactly 0 in float32: the targets JSMA on the softmax cannot move
    towards. nan for no images."""
    if len(labels) == 0:
        return math.nan
    zero = torch.zeros((), dtype=torch.int64, device=device)
    with model_guard(model), torch.no_grad():
        for x, y in DeviceLoader(images, labels, batch_size, shuffle=False, device=device):
            p = model(x).float().softmax(1)
            zero += (p == 0).sum() - (p.gather(1, y[:, None]) == 0).sum()
    return 100 * zero.item() / (len(labels) * (p.shape[1] - 1))


def _strongest(results: Results, defense: str) -> list[Cell]:
    """Per eps, the white-box cell of `defense` that leaves the least accuracy."""
    best: dict[float, Cell] = {}
    for attack in ("fgsm", "rfgsm", "pgd"):
        for c in results.whitebox(attack):
            if c.defense == defense and (c.eps not in best or c.accuracy < best[c.eps].accuracy):
                best[c.eps] = c
    return list(best.values())


def _own_gradient(results: Results, defense: str) -> str:
    """ "pass" when no attack through `defense`'s own gradient leaves more accuracy than its row."""
    verdicts = []
    for attack in ("fgsm", "rfgsm", "pgd"):
        own = [c for c in results.whitebox(attack, MASKED) if c.defense == defense]
        bpda = {c.eps: c for c in results.whitebox(attack, "whitebox") if c.defense == defense}
        if own:
            verdicts.append(_at_most(own, bpda, f"{attack.upper()} through its own gradient"))
    if not verdicts:
        return "n/a"  # no rows through the defense's own gradient: no BPDA variant, or none computed
    failed = [v for v in verdicts if v.startswith("FAIL")]
    return failed[0] if failed else ("pass" if "pass" in verdicts else "not run")
