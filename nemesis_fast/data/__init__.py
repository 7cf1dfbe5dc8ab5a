"""Data sets as uint8 image tensors (N, C, H, W) and int64 labels."""

from .mnist import DataFormatError, load_mnist

__all__ = ["DataFormatError", "load_mnist"]
