"""bench.compat's image rows: the images each side ran through the model per call, counted at its first layer,
whether the model is called whole or layer by layer (as ART's classifier calls it)."""

import pytest
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


def test_rows_are_counted_at_the_first_layer_in_registration_order():
    model = _model()
    rows = ImageRows(model)
    rows.counting("first only", lambda: model[0](torch.zeros(5, 1, 2, 2)))()
    assert rows.per_call("first only") == 5
    rows.close()


def test_a_scalar_through_the_first_layer_counts_no_rows():
    class Scaled(nn.Module):  # its first layer, registered first, sees a 0-dim tensor
        def __init__(self):
            super().__init__()
            self.scale, self.linear = nn.Identity(), nn.Linear(4, 3)

        def forward(self, x):
            return self.linear(x.flatten(1)) * self.scale(torch.tensor(2.0))

    model = Scaled()
    rows = ImageRows(model)
    rows.counting("scaled", lambda: model(torch.zeros(5, 1, 2, 2)))()
    assert rows.per_call("scaled") == 0
    rows.close()


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


def test_rows_per_call_are_the_mean_over_the_calls_and_zero_for_calls_without_a_forward_pass():
    model = _model()
    rows = ImageRows(model)
    sizes = iter([3, 4])
    varying = rows.counting("varying", lambda: model(torch.zeros(next(sizes), 1, 2, 2)))
    varying()
    varying()
    rows.counting("idle", lambda: None)()
    assert (rows.per_call("varying"), rows.per_call("idle")) == (3.5, 0)
    model(torch.zeros(7, 1, 2, 2))  # outside a counted call: counted nowhere
    assert set(rows.rows) == {"varying"}
    rows.close()


def test_a_call_that_raises_leaves_no_side_counting():
    model = _model()
    rows = ImageRows(model)

    def failing():
        model(torch.zeros(2, 1, 2, 2))
        raise RuntimeError("attack failed")

    with pytest.raises(RuntimeError, match="attack failed"):
        rows.counting("failing", failing)()
    model(torch.zeros(5, 1, 2, 2))
    assert rows.per_call("failing") == 2
    rows.close()


def test_run_counts_the_image_rows_of_each_case_on_its_model(monkeypatch):
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    monkeypatch.setattr(compat, "timing_model", lambda device: model)
    monkeypatch.setattr(
        compat,
        "torchattacks_pairs",
        lambda *args: [compat.Pair("case", _one_at_a_time(model, 2), _layer_by_layer(model, 1), rounds=1)],
    )
    monkeypatch.setattr(compat, "art_pairs", lambda *args: [])
    for stage in ("gaussian_case", "smoothing_case", "imagenet_jsma_rows"):
        monkeypatch.setattr(compat, stage, lambda *args, **kwargs: None)
    peer, ours = compat.run("cpu", numel=3).rows
    assert (peer.extra["image_rows"], ours.extra["image_rows"]) == (6, 3)
