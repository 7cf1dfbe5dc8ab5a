"""ART's PyTorchRandomizedSmoothing with its certify and predict on :class:`nemesis_fast.certify.Smooth`: the noise
drawn on the classifier's device by the fused op, images and draws batched together, where ART draws every noisy
copy of an image in host numpy (float64) and predicts them through its DataLoader."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
from art.estimators.certification.randomized_smoothing import pytorch as art_smoothing

from ..._checks import check_int, check_number
from ..._progress import progress_bar
from ...certify import Smooth, clopper_pearson_lower
from ._classifier import TorchClassifier, fall_back, option_unserved, unserved


class PyTorchRandomizedSmoothing(art_smoothing.PyTorchRandomizedSmoothing):
    """art.estimators.certification.randomized_smoothing.PyTorchRandomizedSmoothing(model, loss, input_shape,
    nb_classes, optimizer=None, channels_first=True, clip_values=None, preprocessing_defences=None,
    postprocessing_defences=None, preprocessing=(0.0, 1.0), device_type="gpu", sample_size=32, scale=0.1,
    alpha=0.001), with ART's constructor, parameters and methods; ``certify`` and ``predict`` run on the device.

    Same algorithm as ART's (Cohen et al.'s): ``certify(x, n, batch_size)`` takes for each image the class with
    most votes among ``sample_size`` noisy copies (the first of tied classes), ART's lower confidence bound pA on
    its probability from ``n`` fresh copies (Clopper-Pearson at ``alpha``, here from scipy, so without ART's
    statsmodels) and ART's radius ``scale * Phi^-1(pA)``, or -1 and radius 0 where pA < 1/2; ``predict`` is ART's
    PREDICT (``sample_size`` copies, the two-sided binomial test of the top count against the runner-up's at
    ``alpha``; zeros where it abstains, unless ``is_abstain=False``). The noise is N(0, scale^2) on the raw inputs,
    before the classifier's preprocessing, as ART adds it, and unclipped, as ART's certify leaves it. It comes from
    torch's generator (a seed drawn from it per call) rather than numpy's: the same distribution, other draws, so
    other votes, and certificates that agree with ART's within their sampling error. ``fit``, the gradients and
    everything else are ART's (ART's ``fit`` already draws its noise on the device).

    Settings for which the result would be NaN are refused (``n`` or ``batch_size`` below 1, ``scale`` or ``alpha``
    NaN or infinite or out of range, ``sample_size`` below 1, on which ART's own fails); ``scale`` or ``alpha`` of 0, a
    classifier the adapters cannot run in torch (see :mod:`nemesis_fast.compat.art`; postprocessing defences
    included) and x other than a numeric numpy array run ART's own methods after a warning (with the scipy bound:
    no statsmodels needed there either). The drop-in attacks of :mod:`nemesis_fast.compat.art` given this estimator
    run ART's own attacks, which see its smoothed predictions.
    """

    def certify(self, x: np.ndarray, n: int, batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
        """(prediction, radius) for each input of `x` (N, *input_shape): int64 classes (-1: abstain) and float64 L2
        radii in the units of x, from ``sample_size`` selection and `n` estimation draws per input, `batch_size`
        noisy copies per forward pass."""
        n = check_int(n, "n", low=1)
        batch_size = check_int(batch_size, "batch_size", low=1)
        reason = self._unserved(x)
        if reason is not None:
            return fall_back(self, reason, lambda: super(PyTorchRandomizedSmoothing, self).certify(x, n, batch_size))
        from scipy.stats import norm

        with self._smooth() as (smooth, classifier):
            result = smooth.certify(classifier.tensor(x), self.sample_size, n, self.alpha, batch_size)
        p_lower = result.p_lower.numpy()
        certified = p_lower >= 0.5  # (ART certifies at pA = 1/2 exactly, with radius 0)
        prediction = np.where(certified, result.selection_counts.argmax(1).numpy(), -1)
        radius = np.where(certified, self.scale * norm.ppf(p_lower), 0.0)
        return prediction.astype(np.int64), radius.astype(np.float64)

    def predict(self, x: np.ndarray, batch_size: int = 128, verbose: bool = False, **kwargs: Any) -> np.ndarray:
        """float64 (N, nb_classes): one-hot the smoothed class of each input of `x` from ``sample_size`` draws, or
        zeros where the binomial test does not separate the top two classes at ``alpha`` (``is_abstain=True``, the
        default; False: always the top class)."""
        is_abstain = kwargs.get("is_abstain")
        if is_abstain is not None and not isinstance(is_abstain, bool):
            raise ValueError("The argument is_abstain needs to be of type bool.")  # ART's message
        batch_size = check_int(batch_size, "batch_size", low=1)
        reason = self._unserved(x)
        if reason is not None:
            return fall_back(
                self, reason, lambda: super(PyTorchRandomizedSmoothing, self).predict(x, batch_size, verbose, **kwargs)
            )
        bar = progress_bar(bool(verbose), total=len(x) * self.sample_size, desc="Randomized smoothing", unit="copies")
        try:
            with self._smooth() as (smooth, classifier):
                result = smooth.predict(
                    classifier.tensor(x), self.sample_size, self.alpha, batch_size, progress=bar and bar.update
                )
        finally:
            if bar is not None:
                bar.close()
        separated = np.ones(len(x), dtype=bool) if is_abstain is False else ~result.abstained.numpy()
        out = np.zeros((len(x), self.nb_classes))
        out[np.flatnonzero(separated), result.counts.argmax(1).numpy()[separated]] = 1
        return out

    def _unserved(self, x: Any) -> str | None:
        """Why certify or predict runs ART's own method (None: it runs here); ValueError for settings that would
        give NaN results."""
        check_int(self.sample_size, "sample_size", low=1)  # (ART's own fails on 0, in numpy)
        check_number(self.scale, "scale", low=0.0)
        check_number(self.alpha, "alpha", low=0.0, high=1.0, high_inclusive=False)
        for name in ("scale", "alpha"):
            if getattr(self, name) == 0:
                return f"{name} is 0, which nemesis_fast.certify.Smooth does not take"
        return unserved(self, postprocessing=True, own_methods=True) or option_unserved(x, {})

    def _lower_confidence_bound(self, n_class_samples: int, n_total_samples: int) -> float:
        """ART's Clopper-Pearson bound (statsmodels' proportion_confint), from scipy: ART's own certify, which the
        calls it cannot serve run, needs no statsmodels either."""
        if self.alpha == 0:  # (confidence 1: statsmodels' bound is 0)
            return 0.0
        return float(clopper_pearson_lower(int(n_class_samples), int(n_total_samples), float(self.alpha)))

    @contextlib.contextmanager
    def _smooth(self) -> Iterator[tuple[Smooth, TorchClassifier]]:
        """A Smooth of the classifier's logits (its PyTorch preprocessing, then its model) at the estimator's scale,
        with the model in eval mode and its parameters frozen for the call (see TorchClassifier.session)."""
        classifier = TorchClassifier(self)
        smooth = Smooth(classifier.logits, float(self.scale), classifier.nb_classes, device=classifier.device)
        with classifier.session():
            yield smooth, classifier
