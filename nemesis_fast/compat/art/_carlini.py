"""ART's CarliniL2Method: ART's own line-search algorithm by default, or, with ``algorithm="paper"``, nemesis_fast's
batched Carlini-Wagner L2 (the paper's Adam optimisation and per-image binary search over c) through ART's API."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from art.attacks import evasion

from ...attacks import CarliniWagnerL2
from ._classifier import AlgorithmParameter, TorchClassifier, batches, fall_back, option_unserved, unserved


class CarliniL2Method(AlgorithmParameter, evasion.CarliniL2Method):
    """art.attacks.evasion.CarliniL2Method(classifier, confidence=0.0, targeted=False, learning_rate=0.01,
    binary_search_steps=10, max_iter=10, initial_const=0.01, max_halving=5, max_doubling=5, batch_size=1,
    verbose=True), with ``algorithm=`` and ``abort_early=`` added.

    ART's C&W differs from the paper's: it minimises the objective by line search (max_halving and max_doubling
    trial steps per iteration) where Carlini and Wagner use Adam. So:

    algorithm="art" (default): ART's own implementation runs, after a PeerFallbackWarning saying so: ART's result
    at ART's speed.

    algorithm="paper": :class:`nemesis_fast.attacks.CarliniWagnerL2`, batched on the classifier's device: per
    image, binary_search_steps runs of max_iter Adam steps at learning_rate from c = initial_const, with the loss
    max(margin + confidence, 0) on the classifier's outputs, inside clip_values (without them, inside [min(x),
    max(x)], as ART does), the distance taken in units of that range (so initial_const weighs it as on [0, 1]
    images; ART's own takes pixel units); with abort_early (the paper's default, True) a run stops once its loss
    stalls.
    max_halving and max_doubling do not apply. Other images than ART's. ART's defaults (max_iter=10,
    learning_rate=0.01) are budgets for its line search: ten Adam steps leave most images unattacked, so give the
    paper's kind of budget (hundreds to thousands of iterations; Zantedeschi et al.'s scripts: 1,000 at 5e-3, 5 search
    steps). Its settings are checked at construction and in set_params, each named.
    """

    attack_params = evasion.CarliniL2Method.attack_params + ["algorithm", "abort_early"]

    def __init__(
        self,
        classifier: Any,
        confidence: float = 0.0,
        targeted: bool = False,
        learning_rate: float = 0.01,
        binary_search_steps: int = 10,
        max_iter: int = 10,
        initial_const: float = 0.01,
        max_halving: int = 5,
        max_doubling: int = 5,
        batch_size: int = 1,
        verbose: bool = True,
        *,
        algorithm: str = "art",
        abort_early: bool = True,
    ) -> None:
        super().__init__(
            classifier,
            confidence,
            targeted,
            learning_rate,
            binary_search_steps,
            max_iter,
            initial_const,
            max_halving,
            max_doubling,
            batch_size,
            verbose,
        )
        self.algorithm, self.abort_early = algorithm, abort_early
        self._check_params()

    def _check_params(self) -> None:
        super()._check_params()
        if getattr(self, "algorithm", None) == "paper" and self.binary_search_steps > 0:
            self._paper_attack(lambda x: x, (0.0, 1.0))  # its checks, at construction and in set_params

    def _paper_attack(self, logits: Any, clip: tuple[float, float]) -> CarliniWagnerL2:
        """The paper's attack with this object's settings (its constructor checks them, naming each)."""
        settings = (self.confidence, self.initial_const, self.binary_search_steps, self.max_iter, self.learning_rate)
        return CarliniWagnerL2(logits, *settings, self.abort_early, clip=clip)

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """Adversarial examples of `x` (numpy, float32 out) with labels or targets `y` (indices or one-hot)."""
        if self.algorithm == "art":
            reason = "ART's C&W (line search) is not the paper's; pass algorithm='paper' for nemesis_fast's batched one"
            return fall_back(self, reason, lambda: super(CarliniL2Method, self).generate(x, y, **kwargs))
        reason = unserved(self.estimator) or option_unserved(x, kwargs)
        if reason is not None:
            raise ValueError(f"algorithm='paper' cannot run here: {reason}")
        view = TorchClassifier(self.estimator)
        with view.session():
            x_t = view.images(x)
            labels = view.one_hot_labels(x_t, y, self.batch_size, self.targeted).argmax(1)  # checked, as ART does
            if self.binary_search_steps == 0 or len(x_t) == 0:
                return np.asarray(x, dtype=np.float32).copy()  # no search step: ART returns x; no images: none
            attack = self._paper_attack(view.logits, view.clip or (float(x_t.min()), float(x_t.max())))
            adv = torch.empty_like(x_t)
            for chunk in batches(len(x_t), self.batch_size):
                if self.targeted:
                    # A targeted run reads only the targets; the true labels only have to differ from them.
                    dummy = (labels[chunk] + 1) % view.nb_classes
                    adv[chunk] = attack(x_t[chunk], dummy, labels[chunk])
                else:
                    adv[chunk] = attack(x_t[chunk], labels[chunk])
            return view.numpy(adv)
