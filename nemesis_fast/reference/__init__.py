"""Plain-torch oracles: the meaning of every op. Tests compare each kernel with these; they are also the
"torch" backend, which runs wherever torch runs."""

from .bounded_relu import bounded_relu, bounded_relu_masked, bounded_relu_masked_backward, rounded_threshold
from .gaussian_augment import gaussian_augment
from .jsma_saliency_search import jsma_saliency_search

__all__ = [
    "bounded_relu",
    "bounded_relu_masked",
    "bounded_relu_masked_backward",
    "gaussian_augment",
    "jsma_saliency_search",
    "rounded_threshold",
]
