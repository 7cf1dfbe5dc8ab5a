"""Plain-torch oracles: the meaning of every op. Tests compare each kernel with these; they are also the
"torch" backend, which runs wherever torch runs."""

from .bounded_relu import bounded_relu, rounded_threshold

__all__ = ["bounded_relu", "rounded_threshold"]
