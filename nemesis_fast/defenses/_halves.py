"""The clean and perturbed forwards of the online defenses' losses (VAT, FGSM adversarial training)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


@contextlib.contextmanager
def _running_statistics_kept(norms: list[nn.modules.batchnorm._BatchNorm]) -> Iterator[None]:
    """Batch norms that normalise by the batch's own statistics, as in training, without updating their running
    ones."""
    tracked = [norm.track_running_stats for norm in norms]
    try:
        for norm in norms:
            norm.track_running_stats = False
        yield
    finally:
        for norm, kept in zip(norms, tracked):
            norm.track_running_stats = kept


def clean_and_perturbed_logits(
    model: nn.Module, x: torch.Tensor, x_perturbed: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(model(x), model(x_perturbed)), each (B, K). One forward over both where no batch norm trains; else two, the
    perturbed one without updating the running statistics (as Miyato et al.'s VAT code does), so that the clean
    half is normalised by clean statistics only and the perturbed images never reach the running averages."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not norms:
        return model(torch.cat([x, x_perturbed])).chunk(2)
    clean = model(x)
    with _running_statistics_kept(norms):
        return clean, model(x_perturbed)
