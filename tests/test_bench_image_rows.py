"""bench.compat's image rows: the images each side ran through the model per call, counted at its first layer,
whether the model is called whole or layer by layer (as ART's classifier calls it)."""

import torch
from torch import nn

from nemesis_fast.bench import compat
from nemesis_fast.bench.harness import Report
from nemesis_fast.bench.image_rows import ImageRows


def _model() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 3))


def _one_at_a_time(model: nn.Module, steps: int):
    """An attack that runs each image through the model `steps` times, one image a call."""

    def make():
        def attack(images, labels):
            for _ in range(steps):
                for image in images:
                    model(image[None])
            return images.clone()

        return attack

    return make


def _layer_by_layer(model: nn.Module, steps: int):
    """An attack that runs the whole batch `steps` times through the model's layers one by one, as ART does."""

    def make():
        def attack(images, labels):
            for _ in range(steps):
                out = images
                for layer in model:
                    out = layer(out)
            return images.clone()

        return attack

    return make


def test_rows_per_call_count_each_sides_images_at_the_first_layer():
    model = _model()
    rows = ImageRows(model)
    whole = rows.counting("whole", lambda: model(torch.zeros(5, 1, 2, 2)))
    two = rows.counting("two", lambda: [model(torch.zeros(2, 1, 2, 2)) for _ in range(3)])
    for _ in range(2):
        whole()
    two()
    model(torch.zeros(7, 1, 2, 2))  # outside a counted call: no side's
    assert (rows.per_call("whole"), rows.per_call("two"), rows.per_call("never")) == (5, 6, None)
    rows.close()
    whole()
    assert rows.rows["whole"] == 10  # the hook is gone


def test_measure_pair_reports_each_sides_image_rows():
    model = _model()
    x, y = torch.rand(4, 1, 2, 2, generator=torch.Generator().manual_seed(0)), torch.zeros(4, dtype=torch.long)
    report = Report("compat", "cpu")
    # the peer: 3 steps of each image alone; the drop-in: 2 steps of the batch, through the layers one by one
    pair = compat.Pair("case", _one_at_a_time(model, 3), _layer_by_layer(model, 2), rounds=2)
    compat.measure_pair(report, pair, x, y, model)
    peer, ours = report.rows
    assert (peer.extra["image_rows"], ours.extra["image_rows"]) == (12, 8)
    assert "same_images_image_rows" not in ours.extra
    # where the peer attacks fewer images, the drop-in's rows on those images too
    pair = compat.Pair("fewer", _one_at_a_time(model, 1), _layer_by_layer(model, 1), peer_images=2, rounds=1)
    compat.measure_pair(report, pair, x, y, model)
    peer, ours = report.rows[2:]
    assert (peer.extra["image_rows"], ours.extra["image_rows"], ours.extra["same_images_image_rows"]) == (2, 4, 2)
    assert not model[0]._forward_hooks  # no hook left on the model
    # without the model, no counts
    compat.measure_pair(report, compat.Pair("uncounted", _one_at_a_time(model, 1), _layer_by_layer(model, 1)), x, y)
    assert "image_rows" not in report.rows[-1].extra and "image_rows" not in report.rows[-2].extra
