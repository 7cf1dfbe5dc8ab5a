"""train(): early stopping on a plateau (no better accuracy is no improvement), the offline training set (the
images, then the source's examples), the seed governs dropout whatever torch's generator held, and a label equal
to the number of logits is refused by name."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import nemesis_fast.training as training
from nemesis_fast.data import to_float
from nemesis_fast.defenses.adversarial_training import fgsm_examples
from nemesis_fast.defenses.recipes import StandardRecipe
from nemesis_fast.training import train


def _set(n=40):
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 1, 6, 6), dtype=torch.uint8, generator=g), torch.randint(0, 10, (n,), generator=g)


def _model():
    torch.manual_seed(2)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, 10))


QUIET = {"device": "cpu", "log": False}


class _Frozen(StandardRecipe):
    """A loss with zero gradient: the weights, and so the validation accuracy, never change."""

    def __init__(self):
        super().__init__(self.Settings())

    def loss(self, model, x, y):
        return (model(x) * 0).sum()


def test_a_plateau_is_no_improvement():
    result = train(_model(), _set(), _Frozen(), epochs=6, batch_size=8, val_fraction=0.25, patience=2, **QUIET)
    accuracies = [h["val_accuracy"] for h in result.history]
    assert len(set(accuracies)) == 1
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def test_offline_training_set_is_the_images_then_the_examples(monkeypatch):
    images, labels = _set()
    torch.manual_seed(3)
    source = nn.Sequential(nn.Flatten(), nn.Linear(36, 10)).eval()
    seen = []
    real = training.DeviceLoader

    def recording(images, labels, *args, **kwargs):
        seen.append((images, labels))
        return real(images, labels, *args, **kwargs)

    monkeypatch.setattr(training, "DeviceLoader", recording)
    settings = {"mode": "offline", "eps": 0.3}
    train(
        _model(),
        (images, labels),
        "fgsm_adversarial",
        settings=settings,
        source_model=source,
        epochs=1,
        batch_size=16,
        val_fraction=0,
        patience=None,
        **QUIET,
    )
    ((x, y),) = seen
    assert x.shape[0] == 80 and torch.equal(y, torch.cat([labels, labels]))
    assert torch.equal(x[:40], to_float(images))
    assert torch.equal(x[40:], fgsm_examples(source, to_float(images), labels, 0.3))


def test_the_seed_governs_dropout_whatever_torchs_generator_held():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(36, 10))
    weights = []
    for before in (0, 99):
        trained = copy.deepcopy(model)
        torch.manual_seed(before)
        train(trained, _set(), epochs=1, batch_size=8, val_fraction=0, patience=None, seed=3, **QUIET)
        weights.append(torch.cat([p.detach().flatten() for p in trained.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_a_label_equal_to_the_number_of_logits_is_refused_by_name():
    images, labels = _set()
    labels = labels.index_fill(0, torch.tensor([5]), 10)
    with pytest.raises(ValueError, match="model's 10 logits, got label 10"):
        train(_model(), (images, labels), **QUIET)
