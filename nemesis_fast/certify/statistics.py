"""The statistics of randomized smoothing: Clopper-Pearson lower bounds, the binomial test, the certified radius and
certified accuracy (numpy and scipy, on the host)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch
from numpy.typing import ArrayLike

from .._checks import INTEGER_DTYPES, check_number, check_positive, check_tensor


def clopper_pearson_lower(successes: ArrayLike, trials: ArrayLike, alpha: float) -> np.ndarray:
    """The one-sided (1 - alpha) Clopper-Pearson lower confidence bound on a binomial proportion.

    Args:
        successes: counts k (an int or an integer array), 0 <= k <= trials.
        trials: the number of trials n >= 1 (an int or an integer array broadcasting with `successes`).
        alpha: the bound's failure probability, in (0, 1).

    Returns:
        float64 array: the p with P(Binomial(n, p) >= k) = alpha, i.e. the alpha quantile of Beta(k, n - k + 1);
        0 where k = 0. (The lower end of statsmodels' proportion_confint(k, n, 2 * alpha, method="beta").)
    """
    from scipy.stats import beta

    alpha = check_number(alpha, "alpha", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
    k, n = np.broadcast_arrays(np.asarray(successes), np.asarray(trials))
    if not (np.issubdtype(k.dtype, np.integer) and np.issubdtype(n.dtype, np.integer)):
        raise TypeError("successes and trials must be integer counts")
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("counts must satisfy 0 <= successes <= trials and trials >= 1")
    k, n = k.astype(np.float64), n.astype(np.float64)
    bound = beta.ppf(alpha, np.maximum(k, 1.0), n - k + 1.0)
    return np.where(k == 0, 0.0, bound)


def binomial_p_value(top: ArrayLike, runner_up: ArrayLike) -> np.ndarray:
    """The two-sided binomial test's p-value of `top` successes in `top + runner_up` trials against p = 1/2 (as
    scipy.stats.binomtest(top, top + runner_up, 0.5).pvalue), vectorised; 1 where there are no trials."""
    from scipy.stats import binom

    a, b = np.broadcast_arrays(np.asarray(top), np.asarray(runner_up))
    if not (np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer)):
        raise TypeError("top and runner_up must be integer counts")
    if np.any(a < 0) or np.any(b < 0):
        raise ValueError("counts must be >= 0")
    a, b = a.astype(np.float64), b.astype(np.float64)  # (before adding: small integer dtypes would wrap)
    high, total = np.maximum(a, b), a + b
    # The null is symmetric: outcomes as unlikely as `high` are >= high and <= total - high.
    return np.minimum(1.0, 2.0 * binom.sf(high - 1.0, total, 0.5))


def certificate_bounds(successes: ArrayLike, trials: int, alpha: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(pA, radius) of `successes` votes (an integer array) of the selected class in `trials` draws: their
    :func:`clopper_pearson_lower` bound, and :func:`certified_radius` of it computed from 1 - pA (Beta's upper
    tail), which float64 keeps where pA itself rounds to 1, so that the radius stays finite (elsewhere the two
    agree to about 1e-12 relative, not bit for bit)."""
    from scipy.stats import beta, norm

    k = np.asarray(successes).astype(np.float64)
    p_lower = clopper_pearson_lower(successes, trials, alpha)
    complement = beta.isf(alpha, trials - k + 1.0, np.maximum(k, 1.0))  # 1 - pA
    return p_lower, np.where(p_lower > 0.5, check_positive(sigma, "sigma") * norm.isf(complement), 0.0)


def largest_certifiable_radius(trials: int, alpha: float, sigma: float) -> float:
    """The largest radius `trials` draws can certify at `alpha` (every draw a vote for the class):
    sigma * Phi^-1(alpha ** (1 / trials)), and 0 where that is below 1/2 (too few draws to certify anything)."""
    return float(certificate_bounds(np.int64(trials), trials, alpha, sigma)[1])


def _probabilities(p: object, name: str) -> np.ndarray:
    """`p` (a number, array or tensor of any shape) as a float64 array of probabilities in [0, 1]."""
    if isinstance(p, torch.Tensor):
        p = p.detach().cpu().numpy()
    array = np.asarray(p)
    if array.dtype == np.bool_ or not (
        np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)
    ):
        raise TypeError(f"{name} must be a probability or an array of them, got {type(p).__name__} of {array.dtype}")
    array = array.astype(np.float64)
    outside = ~((array >= 0.0) & (array <= 1.0))  # NaN included
    if outside.any():
        raise ValueError(f"{name} must be in [0, 1], got {array[outside].flat[0]}")
    return array


def certified_radius(p_lower: ArrayLike | torch.Tensor, sigma: float) -> np.ndarray:
    """sigma * Phi^-1(p_lower) where p_lower > 1/2, else 0 (no certificate): the L2 radius, in the units of the
    inputs, within which the smoothed classifier's answer is certified.

    Args:
        p_lower: lower confidence bounds pA in [0, 1] (a number or an array of any shape); pA = 1 (which no
            Clopper-Pearson bound from finitely many draws reaches) gives an infinite radius.
        sigma: the noise's standard deviation, > 0.

    Returns:
        float64 array of p_lower's shape: the radii, >= 0.
    """
    from scipy.stats import norm

    sigma = check_positive(sigma, "sigma")
    p = _probabilities(p_lower, "p_lower")
    return np.where(p > 0.5, sigma * norm.ppf(np.clip(p, 0.5, 1.0)), 0.0)


def _check_radii(radii: object) -> list[float]:
    """`radii` (a sequence, array or 1-D tensor of L2 radii >= 0) as a list of floats."""
    if isinstance(radii, (torch.Tensor, np.ndarray)):
        radii = radii.tolist()
    if isinstance(radii, (str, bytes)) or not isinstance(radii, Iterable):
        raise TypeError(f"radii must be a sequence of numbers, got {type(radii).__name__}")
    return [check_number(r, f"radii[{i}]", low=0.0) for i, r in enumerate(radii)]


def certified_accuracy(
    prediction: torch.Tensor,
    radius: torch.Tensor,
    labels: torch.Tensor,
    radii: Iterable[float] | np.ndarray | torch.Tensor,
) -> list[float]:
    """The fraction of images certified correct at each L2 radius r of `radii`: prediction == label (not an
    abstention) and radius >= r.

    Args:
        prediction: (N,) integer tensor of classes, -1 where abstaining.
        radius: (N,) floating tensor of certified L2 radii, in the units of the inputs.
        labels: (N,) integer tensor of the true classes (>= 0; ValueError otherwise).
        radii: the L2 radii >= 0 to report, in the same units.

    Returns:
        One fraction in [0, 1] per radius (nan for N = 0).
    """
    prediction = check_tensor(prediction, "prediction", dtypes=INTEGER_DTYPES, ndim=1)
    radius = check_tensor(radius, "radius", ndim=1)
    labels = check_tensor(labels, "labels", dtypes=INTEGER_DTYPES, ndim=1)
    for name, tensor in (("radius", radius), ("labels", labels)):
        if len(tensor) != len(prediction):
            raise ValueError(f"{name} must have the length of prediction ({len(prediction)}), got {len(tensor)}")
    radii = _check_radii(radii)
    labels = labels.cpu()
    if len(labels) and int(labels.min()) < 0:
        raise ValueError(f"labels must be classes (>= 0), got {int(labels.min())}: -1 is an abstention, not a label")
    correct = prediction.cpu() == labels  # an abstention, -1, is no label
    radius = radius.cpu().double()
    if len(correct) == 0:
        return [math.nan for _ in radii]
    return [(correct & (radius >= r)).double().mean().item() for r in radii]
