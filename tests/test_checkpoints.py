"""Checkpoints: the round trip, what they record, and the files they refuse (damaged, foreign, of another model)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _support import damage_tensor_bytes
from _training_cases import trained
from torch import nn

import nemesis_fast as nf
from nemesis_fast.checkpoints import load_checkpoint, save_checkpoint
from nemesis_fast.defenses import make_recipe
from nemesis_fast.models import mnist_cnn, resnet
from nemesis_fast.nn import replace_relu
from nemesis_fast.resume import FileCheckpoint


def test_checkpoint_round_trip(mnist_sample, tmp_path):
    model = trained(mnist_sample, activation="brelu")
    recipe = make_recipe("gda")
    settings, metrics = recipe.settings_dict(), {"test_accuracy": 0.5}
    path = save_checkpoint(tmp_path / "m.pt", model, recipe="gda", settings=settings, metrics=metrics)
    loaded, info = load_checkpoint(path, model_name="mnist_cnn", recipe="gda", settings={"sigma": 0.3})
    assert info["recipe"] == "gda" and info["settings"]["copies"] == 10 and info["metrics"]["test_accuracy"] == 0.5
    assert info["architecture"] == {"name": "mnist_cnn", "kwargs": model.architecture["kwargs"]}
    assert info["nemesis_fast_version"] == nf.__version__
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x))
    into = mnist_cnn(activation="brelu")
    same, _ = load_checkpoint(path, model=into)
    assert same is into
    torch.testing.assert_close(into(x), model(x))
    assert not list(tmp_path.glob("*.tmp"))


def test_checkpoint_refusals(mnist_sample, tmp_path):
    path = save_checkpoint(
        tmp_path / "m.pt", trained(mnist_sample), recipe="vat", settings={"eps": 2.1, "mode": "online"}
    )
    with pytest.raises(ValueError, match="trained with recipe 'vat', not the 'gda' asked for"):
        load_checkpoint(path, recipe="gda")
    with pytest.raises(ValueError, match=r"settings differ .*mode='online' \(asked 'offline'\)"):
        load_checkpoint(path, settings={"mode": "offline"})
    with pytest.raises(ValueError, match="holds a 'mnist_cnn' model, not the 'resnet' asked for"):
        load_checkpoint(path, model_name="resnet")
    with pytest.raises(ValueError, match=r"architecture differs .*activation='relu' \(asked 'brelu'\)"):
        load_checkpoint(path, architecture_kwargs={"activation": "brelu"})
    with pytest.raises(ValueError, match=r"differs from the model given: activation='relu' \(asked 'brelu'\)"):
        load_checkpoint(path, model=mnist_cnn(activation="brelu"))
    with pytest.raises(ValueError, match="holds a 'mnist_cnn' model, but the model given is 'resnet'"):
        load_checkpoint(path, model=resnet(8))
    with pytest.raises(ValueError, match="the weights do not fit the model"):
        load_checkpoint(path, model=nn.Linear(3, 3))


def test_checkpoint_of_an_unrecorded_model_and_foreign_files(tmp_path):
    plain = nn.Linear(4, 2)
    path = save_checkpoint(tmp_path / "plain.pt", plain, recipe="standard")
    with pytest.raises(ValueError, match="records no architecture; pass the model"):
        load_checkpoint(path)
    loaded, info = load_checkpoint(path, model=nn.Linear(4, 2))
    assert info["architecture"] is None and torch.equal(loaded.weight, plain.weight)
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(ValueError, match="text.pt: not a loadable checkpoint"):
        load_checkpoint(tmp_path / "text.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a nemesis_fast checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")
    good = save_checkpoint(tmp_path / "good.pt", mnist_cnn(), recipe="standard")
    payload = torch.load(good, weights_only=True)
    tampered = [
        ({"architecture": "mnist_cnn"}, "its entries have the wrong types"),
        ({"architecture": {"name": "mnist_cnn"}}, "its entries have the wrong types"),
        ({"settings": None}, "its entries have the wrong types"),
        ({"state_dict": [1, 2]}, "its entries have the wrong types"),
        ({"architecture": {"name": "mnist_cnn", "kwargs": {"width": 3}}}, "recorded architecture cannot be built"),
    ]
    for change, match in tampered:
        torch.save({**payload, **change}, tmp_path / "tampered.pt")
        with pytest.raises(ValueError, match=match):
            load_checkpoint(tmp_path / "tampered.pt")


def test_a_checkpoint_damaged_inside_its_weights_is_refused(tmp_path):
    """Bytes changed inside a tensor leave a readable archive; the CRC-32 torch.save stored refuses it."""
    model = mnist_cnn()
    path = save_checkpoint(tmp_path / "m.pt", model, recipe="standard")
    damage_tensor_bytes(path, model[0].weight)
    assert not torch.equal(torch.load(path, weights_only=True)["state_dict"]["0.weight"], model[0].weight)
    with pytest.raises(
        ValueError, match=r"m.pt' is damaged: its record 'archive/data/\d+' fails its CRC-32: not loaded"
    ):
        load_checkpoint(path)


def test_a_training_state_damaged_inside_a_tensor_is_refused(tmp_path):
    state = {"epoch": 1, "weights": torch.arange(64.0)}
    checkpoint = FileCheckpoint(tmp_path / "state.pt", "--resume")
    checkpoint.save(state)
    damage_tensor_bytes(checkpoint.path, state["weights"])
    with pytest.raises(ValueError, match=r"--resume: '.*state.pt' is damaged: .*; pass another path"):
        checkpoint.load()


def test_a_checkpoints_recorded_sizes_allocate_nothing_its_weights_do_not_fill(tmp_path):
    """The recorded architecture comes from the file: built without memory first, and refused (naming the file) when
    its parameters are not the stored weights, before any allocation of the sizes it claims."""
    payload = torch.load(save_checkpoint(tmp_path / "good.pt", mnist_cnn(), recipe="standard"), weights_only=True)
    for kwargs in ({"num_classes": 10**10}, {"num_classes": 11}):
        torch.save({**payload, "architecture": {"name": "mnist_cnn", "kwargs": kwargs}}, tmp_path / "claims.pt")
        with pytest.raises(ValueError, match="claims.pt: the weights do not fit its recorded architecture 'mnist_cnn'"):
            load_checkpoint(tmp_path / "claims.pt")
    loaded, _ = load_checkpoint(tmp_path / "good.pt")  # and a true record is built on the device asked, filled
    assert all(p.device.type == "cpu" for p in loaded.parameters())
    torch.testing.assert_close(loaded.state_dict(), payload["state_dict"])


def test_numpy_integers_are_recorded_as_python_ints(tmp_path):
    """Checkpoints load only plain types: a numpy size recorded as it was given made the next load fail."""
    model = mnist_cnn(input_size=np.int64(28), num_classes=np.int32(10))
    assert all(type(v) in (int, float, str) for v in model.architecture["kwargs"].values())
    settings = make_recipe("gda", {"copies": np.int64(3)}).settings_dict()
    assert type(settings["copies"]) is int
    path = save_checkpoint(tmp_path / "m.pt", model, recipe="gda", settings=settings)
    assert load_checkpoint(path)[1]["settings"]["copies"] == 3
    payload = torch.load(path, weights_only=True)
    payload["architecture"]["kwargs"]["width"] = 16  # a kwarg the model given lacks: only it is named
    torch.save(payload, tmp_path / "extra.pt")
    with pytest.raises(ValueError, match=r"differs from the model given: width=16 \(the model given: <absent>\)$"):
        load_checkpoint(tmp_path / "extra.pt", model=mnist_cnn())


def test_a_relu_models_threshold_is_no_part_of_its_architecture(tmp_path):
    """ReLU layers have no threshold: a ReLU model built with another t loads into one built with the default."""
    model = mnist_cnn(activation="relu", t=0.5)
    path = save_checkpoint(tmp_path / "relu.pt", model, recipe="standard")
    x = torch.rand(2, 1, 28, 28)
    for into in (mnist_cnn(), None):
        loaded, _ = load_checkpoint(path, model=into, architecture_kwargs={"activation": "relu", "t": 1.0})
        torch.testing.assert_close(loaded(x), model(x))
    brelu = save_checkpoint(tmp_path / "brelu.pt", mnist_cnn(activation="brelu", t=0.5), recipe="standard")
    with pytest.raises(ValueError, match=r"differs from the model given: t=0.5 \(asked 1.0\)"):
        load_checkpoint(brelu, model=mnist_cnn(activation="brelu"))


def test_checkpoint_entries_are_checked_before_the_file_is_written(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", mnist_cnn(), recipe="standard", metrics={"accuracy": 0.9})
    kept = path.read_bytes()
    for bad, error, match in [
        ({"metrics": {"accuracy": object()}}, TypeError, r"metrics\['accuracy'\] must hold numbers"),
        ({"metrics": {1: 0.9}}, TypeError, "metrics must hold numbers"),
        ({"settings": [("sigma", 0.3)]}, TypeError, "settings must be a dict or None, got list"),
    ]:
        with pytest.raises(error, match=match):
            save_checkpoint(path, mnist_cnn(), recipe="standard", **bad)
        assert path.read_bytes() == kept
    with pytest.raises(TypeError, match="model must be an nn.Module, got NoneType"):
        save_checkpoint(path, None, recipe="standard")
    with pytest.raises(TypeError, match="model must be an nn.Module or None, got int"):
        load_checkpoint(path, model=3)
    with pytest.raises(TypeError, match="settings must be a dict or None, got list"):
        load_checkpoint(path, settings=["sigma"])
    metrics = {"accuracy": np.mean(np.array([1, 0, 1]) == 1), "counts": np.arange(3), "pair": (np.int64(2), 0.5)}
    save_checkpoint(path, mnist_cnn(), recipe="standard", metrics=metrics)  # numpy values read back as Python's
    assert load_checkpoint(path)[1]["metrics"] == {"accuracy": 2 / 3, "counts": [0, 1, 2], "pair": (2, 0.5)}


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_checkpoint_loading_runs_no_code(tmp_path, capsys):
    """weights_only=True: a pickle that would call a function is refused, and nothing runs."""
    path = tmp_path / "evil.pt"
    entries = {"state_dict": {}, "recipe": "standard", "settings": {}, "architecture": None}
    torch.save({**entries, "nemesis_fast_version": "0", "metrics": _Payload()}, path)
    with pytest.raises(ValueError, match="not a loadable checkpoint"):
        load_checkpoint(path, model=nn.Linear(1, 1))
    assert "must never run" not in capsys.readouterr().out


def test_a_model_made_brelu_after_it_was_built_is_saved_as_one(tmp_path):
    """save_checkpoint recorded the builder's ReLU architecture of a model replace_relu had changed: it reloaded
    as a ReLU model (other logits), and the BReLU model it was refused."""
    torch.manual_seed(0)
    model = replace_relu(mnist_cnn(), t=0.05)
    path = save_checkpoint(tmp_path / "m.pt", model, recipe="gda")
    loaded, info = load_checkpoint(path)
    assert info["architecture"]["kwargs"]["activation"] == "brelu" and info["architecture"]["kwargs"]["t"] == 0.05
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    load_checkpoint(path, model=mnist_cnn(activation="brelu", t=0.05))
    load_checkpoint(path, model=replace_relu(mnist_cnn(), t=0.05))
    for other, differs in (
        (mnist_cnn(), r"activation='brelu' \(asked 'relu'\)"),
        (replace_relu(mnist_cnn()), "t=0.05"),
    ):
        with pytest.raises(ValueError, match=f"architecture differs from the model given: .*{differs}"):
            load_checkpoint(path, model=other)
    kept = path.read_bytes()
    mixed = mnist_cnn(activation="brelu")
    mixed[1].t = 0.5
    with pytest.raises(ValueError, match="model: its activations are of mixed kinds or thresholds"):
        save_checkpoint(path, mixed, recipe="gda")
    claimed = {"name": "mnist_cnn", "kwargs": {"activation": "brelu", "t": 1.0}}
    with pytest.raises(ValueError, match=r"architecture differs from the model's .*activation='brelu' \(the model"):
        save_checkpoint(path, mnist_cnn(), recipe="gda", architecture=claimed)
    assert path.read_bytes() == kept


def test_a_hardtanh_copy_is_saved_as_the_brelu_model_it_computes(tmp_path):
    """to_hardtanh's copy (Hardtanh(0, t) layers) was recorded with the builder's ReLU architecture and reloaded as
    a ReLU network, silently (other logits); a Hardtanh of other bounds, which no builder makes, is refused."""
    from nemesis_fast.nn import to_hardtanh

    torch.manual_seed(0)
    model = to_hardtanh(replace_relu(mnist_cnn(), t=0.5))
    path = save_checkpoint(tmp_path / "m.pt", model, recipe="gda")
    loaded, info = load_checkpoint(path)
    assert info["architecture"]["kwargs"]["activation"] == "brelu" and info["architecture"]["kwargs"]["t"] == 0.5
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    other = to_hardtanh(replace_relu(mnist_cnn(), t=0.5))
    other[1] = nn.Hardtanh(-1.0, 1.0)
    with pytest.raises(ValueError, match=r"mixed kinds or thresholds .*Hardtanh\(-1.0, 1.0\)"):
        save_checkpoint(tmp_path / "other.pt", other, recipe="gda")
