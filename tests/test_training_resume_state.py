"""What a training state holds and puts back, unit by unit: every random stream and counter of the loader, torch's
generator, the bookkeeping; and the fingerprints that tell two runs' data or weights apart."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from nemesis_fast.resume import data_fingerprint, restore_state, training_state, weights_fingerprint

CPU = torch.device("cpu")


class Recipe:
    def __init__(self, state):
        self.state = state

    def rng_state(self):
        return dict(self.state)

    def set_rng_state(self, state):
        self.state = dict(state)


def parts(seed, offset, steps):
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    loader = SimpleNamespace(generator=torch.Generator().manual_seed(seed), augment=SimpleNamespace(offset=offset))
    result = SimpleNamespace(history=[{"epoch": e} for e in range(steps)], steps=steps, best_epoch=steps)
    return model, optimizer, loader, Recipe({"cpu": torch.tensor([seed])}), result


def test_a_state_puts_back_every_stream_and_counter():
    model, optimizer, loader, recipe, result = parts(seed=1, offset=37, steps=2)
    torch.randn(5)  # torch's stream moved on from its seed
    best = {k: v.clone() for k, v in model.state_dict().items()}
    state = training_state(2, model, optimizer, loader, recipe, result, 0.75, best, 1, CPU)
    expected_torch_draw = torch.randn(3)
    expected_loader_draw = torch.randint(0, 1000, (4,), generator=loader.generator)

    model2, optimizer2, loader2, recipe2, result2 = parts(seed=9, offset=0, steps=0)
    torch.manual_seed(123)
    accuracy, best_state, waited = restore_state(state, model2, optimizer2, loader2, recipe2, result2, CPU)
    assert loader2.augment.offset == 37  # GDA's noise goes on from where the run stopped, not from its start
    assert torch.equal(torch.randn(3), expected_torch_draw)
    assert torch.equal(torch.randint(0, 1000, (4,), generator=loader2.generator), expected_loader_draw)
    assert recipe2.state == {"cpu": torch.tensor([1])}
    assert (result2.history, result2.steps, result2.best_epoch) == ([{"epoch": 0}, {"epoch": 1}], 2, 2)
    assert (accuracy, waited) == (0.75, 1)
    for key, value in model.state_dict().items():
        assert torch.equal(model2.state_dict()[key], value) and torch.equal(best_state[key], value)
    assert state["epoch"] == 2


def test_a_loader_without_noise_offset_keeps_none():
    model, optimizer, loader, recipe, result = parts(seed=1, offset=0, steps=1)
    loader.augment = None
    state = training_state(1, model, optimizer, loader, recipe, result, 0.5, None, 0, CPU)
    assert state["augment_offset"] is None
    restore_state(state, *parts(seed=2, offset=0, steps=0)[:4], result, CPU)


def test_data_fingerprints_tell_apart_sets_that_differ_only_at_their_end():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (100, 1, 4, 4), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (100,), generator=g)
    other = images.clone()
    other[99] = 255 - other[99]  # the last image, one of the 16 spread evenly over the set
    assert data_fingerprint(images, labels) != data_fingerprint(other, labels)
    assert data_fingerprint(images, labels) == data_fingerprint(images.clone(), labels.clone())


def test_weights_fingerprints_tell_apart_the_same_bytes_under_other_names_or_shapes():
    a, b, c = nn.Module(), nn.Module(), nn.Module()
    a.register_buffer("w", torch.arange(6.0).reshape(2, 3))
    b.register_buffer("w", torch.arange(6.0).reshape(3, 2))
    c.register_buffer("v", torch.arange(6.0).reshape(2, 3))
    prints = {weights_fingerprint(m) for m in (a, b, c)}
    assert len(prints) == 3
