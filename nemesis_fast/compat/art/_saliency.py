"""ART's SaliencyMapMethod, batched in torch: the target-class gradient of every running image of a chunk from one
forward and one backward pass per step, and the two features picked on the device."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from art.attacks import evasion
from art.utils import random_targets

from ...attacks import JSMA as PaperJSMA
from ...attacks.base import select_rows
from .._peer import GradientEngine
from ._classifier import (
    AlgorithmParameter,
    TorchClassifier,
    batches,
    check_algorithm,
    fall_back,
    option_unserved,
    unserved,
)


class SaliencyMapMethod(AlgorithmParameter, evasion.SaliencyMapMethod):
    """art.attacks.evasion.SaliencyMapMethod(classifier, theta=0.1, gamma=1.0, batch_size=1, verbose=True), with
    ``algorithm=`` added.

    algorithm="art" (default): ART's variant, computed in torch. The targets are y (indices or one-hot) or, without
    y, ART's random targets (``art.utils.random_targets`` on the first predictions, numpy's generator). Each step
    adds theta to the two features of the search space with the largest gradient of the target output (smallest
    for theta < 0), no pair search, clipped to clip_values; with clip_values the search space is the features not
    at the bound theta moves towards, and a feature leaves it when it reaches that bound (a feature can be picked
    again until then); an image stops when the model predicts its target, when more than a fraction gamma of its
    features has changed, or when its search space is empty.

    algorithm="paper": :class:`nemesis_fast.attacks.JSMA` (the paper's pair-wise saliency map on the logits,
    each feature changed once, budget floor(gamma * n / 2) steps) with theta and gamma, towards the same targets;
    other images than ART's. Without clip_values, unbounded (clip=None), as ART's own.

    Calls that cannot be served (see :mod:`nemesis_fast.compat.art`) run ART's own implementation after a warning.
    """

    attack_params = evasion.SaliencyMapMethod.attack_params + ["algorithm"]

    def __init__(
        self,
        classifier: Any,
        theta: float = 0.1,
        gamma: float = 1.0,
        batch_size: int = 1,
        verbose: bool = True,
        *,
        algorithm: str = "art",
    ) -> None:
        super().__init__(classifier, theta, gamma, batch_size, verbose)
        self.algorithm = check_algorithm(algorithm)

    def generate(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs: Any) -> np.ndarray:
        """Adversarial examples of `x` (numpy, float32 out) towards the targets `y` (indices or one-hot)."""
        reason = unserved(self.estimator, postprocessing=True) or option_unserved(x, kwargs)
        if reason is not None:
            if self.algorithm == "paper":
                raise ValueError(f"algorithm='paper' cannot run here: {reason}")
            return fall_back(self, reason, lambda: super(SaliencyMapMethod, self).generate(x, y, **kwargs))
        view = TorchClassifier(self.estimator)
        with view.session():
            x_t = view.images(x)
            predictions = view.predict(x_t, self.batch_size).argmax(1)
            targets = self._targets(view, predictions, y)
            if self.algorithm == "paper":
                return view.numpy(self._paper(view, x_t, predictions, targets))
            flat = x_t.flatten(1).clone()
            engine = GradientEngine(view.logits)
            for chunk in batches(len(flat), self.batch_size):
                flat[chunk] = self._chunk(view, engine, flat[chunk], x_t.shape[1:], predictions[chunk], targets[chunk])
            return view.numpy(flat.view_as(x_t))

    def _targets(self, view: TorchClassifier, predictions: torch.Tensor, y: np.ndarray | None) -> torch.Tensor:
        if y is None:
            one_hot = random_targets(predictions.cpu().numpy(), view.nb_classes)
        else:
            one_hot = view.one_hot(y, len(predictions))
        return torch.from_numpy(np.argmax(one_hot, axis=1)).to(view.device)

    def _paper(
        self, view: TorchClassifier, x: torch.Tensor, predictions: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        attack = PaperJSMA(view.logits, self.theta, self.gamma, clip=view.clip)
        adv = x.clone()
        for chunk in batches(len(x), self.batch_size):
            todo = (predictions[chunk] != targets[chunk]).nonzero().squeeze(1) + chunk.start
            if todo.numel():
                adv[todo] = attack(x[todo], predictions[todo], targets[todo])
        return adv

    def _chunk(
        self,
        view: TorchClassifier,
        engine: GradientEngine,
        batch: torch.Tensor,
        shape: torch.Size,
        predictions: torch.Tensor,
        targets: torch.Tensor,
    ) -> torch.Tensor:
        """ART's loop over one chunk of flattened images."""
        n = batch.shape[1]
        increase = self.theta > 0
        if view.clip is None:
            space = torch.ones_like(batch, dtype=torch.bool)
        else:
            bound = view.clip[1] if increase else view.clip[0]
            space = batch < bound if increase else batch > bound
        changed = torch.zeros_like(batch)
        index = (predictions != targets).nonzero().squeeze(1)
        rows = torch.arange(len(batch), device=batch.device)
        # A step takes at most 2 features out of an image's search space: until the fewest an image starts with
        # could have fallen under 2, no image can run short of searchable features.
        fewest = int(space.sum(1).min()) if len(batch) else 0
        first, step = True, 0
        while index.numel():
            logits, grads = self._target_gradient(
                engine, batch[index].view(-1, *shape), targets[index], view.nb_classes
            )
            if not first:  # ART's stopping rule after each step, read from the next gradient pass's outputs
                budget = changed[index].sum(1) / n <= self.gamma
                keep = (logits.argmax(1) != targets[index]) & budget & space[index].any(1)
                index, grads = select_rows(keep, index, grads)
                if index.numel() == 0:
                    break
                if view.clip is None and step == n:
                    _warn_unbounded_loop(len(index), n)
                    break
            first = False
            grads = torch.where(space[index], grads, -torch.inf if increase else torch.inf)
            features = _art_top2(grads, space[index], increase, may_run_short=fewest - 2 * step < 2)  # (a, 2)
            step += 1
            picked = rows[: len(index), None].expand(-1, 2)
            changed[index[:, None], features] = 1
            values = batch[index]
            moved = values[picked, features] + self.theta
            if view.clip is not None:
                moved = moved.clamp(max=bound) if increase else moved.clamp(min=bound)
                values[picked, features] = moved
                batch[index] = values
                space &= batch != bound
            else:
                values[picked, features] = moved
                batch[index] = values
        return batch

    @staticmethod
    def _target_gradient(
        engine: GradientEngine, x: torch.Tensor, targets: torch.Tensor, classes: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(outputs, gradient of each image's target output, flattened, float32), from one forward and one
        backward pass."""
        one_hot = F.one_hot(targets, classes)

        def target_output(leaf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = engine.logits(leaf)
            return (logits * one_hot.to(logits.dtype)).sum(1), logits

        grad, (_, logits) = engine.input_gradient(x, target_output)
        return logits, grad.flatten(1).float()


def _warn_unbounded_loop(images: int, steps: int) -> None:
    """The warning of a chunk stopped after `steps` (the number of features) steps without clip_values: ART's search
    space then never shrinks, and an image whose steps keep picking features already changed, short of its target,
    runs ART's loop without end."""
    warnings.warn(
        f"SaliencyMapMethod without clip_values: {images} image(s) still short of their target after {steps} steps "
        "(one per feature), with no more than a fraction gamma of their features changed; ART's loop would go on, "
        "possibly without end (without clip values its search space never shrinks). Stopped there",
        UserWarning,
        stacklevel=4,  # this function, _chunk, generate: the user's call
    )


def _art_top2(grads: torch.Tensor, searchable: torch.Tensor, increase: bool, may_run_short: bool) -> torch.Tensor:
    """ART's two features (a, 2) for gradients `grads` (a, n), set to -inf (increase) or +inf outside the search
    space `searchable` (a, n) bool: the two largest (smallest when not `increase`). Where the two are not unique (the
    second value ties with the third: a flat gradient, or a row with fewer than 2 searchable features, looked for
    when `may_run_short`), which of the tied entries ART takes depends on np.argpartition's selection, so those rows
    are partitioned on the host as ART partitions them (one host synchronisation)."""
    top = grads.topk(min(3, grads.shape[1]), dim=1, largest=increase)
    features = top.indices[:, :2]
    on_host = (
        top.values[:, 1] == top.values[:, 2]
        if grads.shape[1] > 2
        else torch.zeros_like(features[:, 0], dtype=torch.bool)
    )
    if may_run_short:
        on_host |= searchable.sum(1) < 2
    rows = on_host.nonzero().squeeze(1)
    if rows.numel():
        values = grads[rows].cpu().numpy()
        picked = np.argpartition(values if increase else -values, -2, axis=1)[:, -2:]
        features[rows] = torch.from_numpy(picked).to(features)
    return features
