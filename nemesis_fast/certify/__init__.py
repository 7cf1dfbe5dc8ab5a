"""Certified L2 robustness by randomized smoothing (Cohen, Rosenfeld, Kolter, ICML 2019), with the noise drawn by
the fused :func:`nemesis_fast.gaussian_augment` op on the model's device.

The smoothed classifier g(x) = argmax_c P(f(x + d) = c), d ~ N(0, sigma^2 I), keeps its answer within the L2 radius
sigma * Phi^-1(pA) of x, where pA is a lower confidence bound on the probability of its top class. :class:`Smooth`
estimates g from integer counts of the base model's predictions on noisy copies:

* ``certify`` (Cohen et al.'s CERTIFY): the class with most votes among n0 draws, then a one-sided (1 - alpha)
  Clopper-Pearson lower bound pA on its probability from n fresh draws; the radius sigma * Phi^-1(pA), or an
  abstention (-1) where pA <= 1/2. With probability >= 1 - alpha over the draws, a class it returns is g(x) and
  g is constant within the radius.
* ``predict`` (PREDICT): the top class of n draws, unless a two-sided binomial test (p = 1/2) of its count against
  the runner-up's gives a p-value above alpha (then -1); it returns a class other than g(x) with probability at
  most alpha.

Noise. Draw j of image i in phase p is x_i + sigma * z with z = gaussian_augment's noise under the key of
(seed, p) at sample index (offset + i) * 2**32 + j: a pure function of the seed, the image's global index and the
draw's index, so results do not depend on batch_size, on the device, or on how a data set is split into calls
(pass each call the global index of its first image as `offset`), and the selection, estimation and prediction
draws are independent. The noisy copies are never clipped and never all held at once: each forward pass takes
`batch_size` of them, images and draws batched together. The noise is Philox4x32-10 with Box-Muller on 24-bit
words (see :mod:`nemesis_fast.reference.gaussian_augment`): a discretised normal whose pairs of coordinates are cut
at radius 5.77, as torch.randn's on the CPU are (its Box-Muller takes 24-bit uniforms too: of 2**26 of its pairs,
the farthest lay at 5.76811 and none of the 8 that exact normals would put beyond 5.77 did); the guarantee is Cohen
et al.'s for this noise as for any pseudo-random one. The cut drops a mass of at most D/2 * 2**-24 per noisy copy of
a D-value image (2.3e-5 for MNIST, 9.2e-5 for CIFAR-10): where pA is near 1, the radius of exactly Gaussian noise
could be that much lower in pA (at n = 100,000 and alpha = 0.001, the largest radius 3.81 sigma against 3.74 sigma
with the mass taken off pA; at pA = 0.99, 0.001 sigma).
"""

from .smooth import Certificate, Prediction, Smooth, phase_key
from .statistics import (
    binomial_p_value,
    certified_accuracy,
    certified_radius,
    clopper_pearson_lower,
    largest_certifiable_radius,
)

__all__ = [
    "Certificate",
    "Prediction",
    "Smooth",
    "binomial_p_value",
    "certified_accuracy",
    "certified_radius",
    "clopper_pearson_lower",
    "largest_certifiable_radius",
    "phase_key",
]
