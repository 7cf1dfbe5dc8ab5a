"""The drop-ins beyond their default settings: torchattacks' CW with kappa > 0 (at kappa = 0, clamp(min=-kappa)
and clamp(min=kappa) agree), and ART's DeepFool on clip values other than [0, 1] (the step
is scaled by the clip range). Tiny models: the peers run in well under a second."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch
from torch import nn

torchattacks = pytest.importorskip("torchattacks")
pytest.importorskip("art")
from art.attacks import evasion  # noqa: E402
from art.estimators.classification import PyTorchClassifier  # noqa: E402

nft = importlib.import_module("nemesis_fast.compat.torchattacks")
nfa = importlib.import_module("nemesis_fast.compat.art")


def _model(seed: int = 0, features: int = 16, classes: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(features, 12), nn.Tanh(), nn.Linear(12, classes)).eval()


def test_torchattacks_cw_with_a_positive_kappa_gives_torchattacks_images():
    model = _model()
    g = torch.Generator().manual_seed(1)
    x = 0.2 + 0.6 * torch.rand(8, 1, 4, 4, generator=g)  # no pixel at 0 or 1: every pixel may move
    y = model(x).argmax(1).detach()
    settings = dict(c=20.0, kappa=0.5, steps=50, lr=0.1)
    expected = torchattacks.CW(model, **settings)(x, y)
    result = nft.CW(model, **settings)(x, y)
    assert (expected != x).any()
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-6)


def test_torchattacks_cw_with_a_kappa_that_keeps_pushing_gives_torchattacks_images():
    """Once fooled an image still pushes its margin down to -kappa: a loss clamped at 0 instead stops there (and
    gave other images at these settings)."""
    model = _model()
    x = 0.2 + 0.6 * torch.rand(8, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1).detach()
    settings = dict(c=50.0, kappa=2.0, steps=100, lr=0.05)
    expected = torchattacks.CW(model, **settings)(x, y)
    assert (expected != x).any()
    torch.testing.assert_close(nft.CW(model, **settings)(x, y), expected, rtol=0, atol=1e-6)


def test_art_deepfool_scales_its_step_by_the_clip_range():
    model = _model(seed=3)
    x = (np.random.default_rng(2).random((8, 1, 4, 4)) * 100 + 50).astype(np.float32)  # pixels in [0, 200]
    clf = PyTorchClassifier(model, nn.CrossEntropyLoss(), (1, 4, 4), 4, clip_values=(0.0, 200.0), device_type="cpu")

    settings = dict(max_iter=5, epsilon=0.02, batch_size=8, verbose=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = evasion.DeepFool(clf, **settings).generate(x)
        result = nfa.DeepFool(clf, **settings).generate(x)
    assert np.abs(expected - x).max() > 0
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-3)
