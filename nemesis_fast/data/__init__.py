"""Data sets as uint8 image tensors (N, C, H, W) and int64 labels."""

from ._format import DataFormatError
from .cifar10 import load_cifar10
from .files import data_files
from .loader import DeviceLoader, split_validation, to_float
from .mnist import load_mnist

__all__ = [
    "DataFormatError",
    "DeviceLoader",
    "data_files",
    "load_cifar10",
    "load_mnist",
    "split_validation",
    "to_float",
]
