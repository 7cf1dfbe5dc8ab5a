"""The progress bars of training, the evaluation and certification."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(enabled: bool | None, **options: Any) -> Any | None:
    """A tqdm bar on stderr (`options` go to tqdm: iterable, total, desc, unit, leave), or None when `enabled`
    is False (None: when stderr is a terminal) or tqdm is not installed."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(**{"file": sys.stderr, "leave": False, "dynamic_ncols": True, **options})
