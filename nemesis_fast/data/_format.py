"""What every data-file reader shares: the error it raises and the checks on labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np


class DataFormatError(ValueError):
    """A data file whose header, size or content is not what its format promises."""


def check_labels(labels: np.ndarray, path: Path, num_classes: int) -> None:
    """Raises DataFormatError naming `path` when a label lies outside 0..num_classes-1."""
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        bad = int(labels.min()) if labels.min() < 0 else int(labels.max())
        raise DataFormatError(f"{path}: label {bad} is outside 0..{num_classes - 1}")
