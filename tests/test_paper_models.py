"""The paper's seven models (`train_paper_models`) and `nemesis-fast train`."""

from __future__ import annotations

import json

import pytest
import torch
from _training_cases import CrashingCheckpoint, quiet, small

from nemesis_fast.checkpoints import load_checkpoint
from nemesis_fast.cli import main
from nemesis_fast.defenses import FeatureSqueezing, reduce_bit_depth
from nemesis_fast.paper_models import PAPER_MODELS, train_paper_models


def test_paper_models_tiny(mnist_sample, tmp_path):
    data = small(mnist_sample, 48)
    test = (mnist_sample[1][0][:100], mnist_sample[1][1][:100])
    rows = train_paper_models(data, test, out_dir=tmp_path, epochs=1, batch_size=16, max_steps=2, **quiet())
    assert [r["name"] for r in rows] == [m.name for m in PAPER_MODELS]
    assert len(rows) == 7 and all(0 <= r["test_accuracy"] <= 1 for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["feature_squeezing"]["recipe"] == "standard + feature squeezing (1 bit)"
    assert by_name["gda_brelu"]["activation"] == "brelu"
    for name in ("standard", "gda", "gda_brelu", "vat", "fgsm_adversarial", "label_smoothing"):
        model, info = load_checkpoint(by_name[name]["checkpoint"], recipe=by_name[name]["recipe"])
        assert info["architecture"]["kwargs"]["activation"] == by_name[name]["activation"]
    squeezing, info = load_checkpoint(by_name["feature_squeezing"]["checkpoint"], recipe="standard")
    assert isinstance(squeezing, FeatureSqueezing) and squeezing.settings()["bit_depth"] == 1  # behind its squeezer
    standard, _ = load_checkpoint(by_name["standard"]["checkpoint"])
    x = test[0][:8].float() / 255
    torch.testing.assert_close(squeezing(x), standard(reduce_bit_depth(x, 1)))
    only = train_paper_models(data, test, models=["gda_brelu"], epochs=1, batch_size=16, max_steps=1, **quiet())
    assert [r["name"] for r in only] == ["gda_brelu"]
    with pytest.raises(ValueError, match="models must be one of"):
        train_paper_models(data, test, models=["dropout"])
    with pytest.raises(TypeError, match="models must be a list of model names, got the string 'standard'"):
        train_paper_models(data, test, models="standard")
    with pytest.raises(ValueError, match=r"recipe_settings' keys \(recipe names\) must be one of .*got 'gda_brelu'"):
        train_paper_models(data, test, recipe_settings={"gda_brelu": {"sigma": 0.5}})


def test_paper_models_refuse_test_data_that_does_not_fit_before_training(mnist_sample, monkeypatch):
    """The test images' shape and labels were checked only after all seven models had trained."""
    monkeypatch.setattr("nemesis_fast.paper_models.train_models", lambda *a, **k: pytest.fail("trained"))
    data = small(mnist_sample, 48)
    images, labels = mnist_sample[1][0][:20], mnist_sample[1][1][:20]
    with pytest.raises(ValueError, match=r"test_data's images are \(1, 27, 28\), train_data's \(1, 28, 28\)"):
        train_paper_models(data, (images[:, :, 1:], labels), **quiet())
    with pytest.raises(ValueError, match="test_data: the labels must be classes of the model.s 10 logits, got label"):
        train_paper_models(data, (images, labels.clone().fill_(10)), **quiet())


def test_cli_train_and_checkpoint(tmp_path, capsys):
    out, report = tmp_path / "m.pt", tmp_path / "m.json"
    args = ["train", "--limit", "64", "--epochs", "1", "--batch-size", "32", "--device", "cpu", "--no-progress"]
    recipe = ["--recipe", "fgsm_adversarial", "--set", "mode=online", "--set", "eps=0.2", "--activation", "brelu"]
    assert main([*args, *recipe, "--out", str(out), "--json", str(report)]) == 0
    printed = capsys.readouterr().out
    assert "fgsm_adversarial mnist_cnn (brelu): test accuracy" in printed and f"saved {out}" in printed
    model, info = load_checkpoint(out, recipe="fgsm_adversarial", settings={"mode": "online", "eps": 0.2})
    assert info["architecture"]["kwargs"]["activation"] == "brelu" and 0 <= info["metrics"]["test_accuracy"] <= 1
    assert json.loads(report.read_text())["settings"] == {"eps": 0.2, "mode": "online", "weight": 0.5}
    gda = ["--recipe", "gda", "--set", "copies=2", "--val-rows", "last"]
    fixed = [*args, *gda, "--set", "fixed_set=true", "--set", "clip=none", "--out", str(out)]
    with pytest.raises(SystemExit, match=f"nemesis-fast train: --out: '{out}' exists; pass --overwrite to replace"):
        main(fixed)  # before any training
    assert main([*fixed, "--overwrite"]) == 0
    assert load_checkpoint(out, recipe="gda")[1]["settings"]["fixed_set"] is True
    with pytest.raises(SystemExit, match="nemesis-fast train: val_rows='last' needs a fixed training set"):
        main([*args, *gda])
    with pytest.raises(SystemExit):
        main([*args, "--recipe", "vat", "--set", "noequals"])
    with pytest.raises(SystemExit, match="nemesis-fast train: fixed_set must be a bool, got str"):
        main([*args, *gda, "--set", "fixed_set=yes"])
    with pytest.raises(SystemExit, match="nemesis-fast train: recipe 'vat' has no setting sigma"):
        main([*args, "--recipe", "vat", "--set", "sigma=0.3"])
    with pytest.raises(SystemExit, match=f"nemesis-fast train: no MNIST train images file found; .* in {tmp_path}"):
        main([*args, "--root", str(tmp_path)])
    with pytest.raises(SystemExit, match="nemesis-fast train: .*No such file"):
        main([*args, "--recipe", "fgsm_adversarial", "--source", str(tmp_path / "missing.pt")])


def test_cli_outputs_that_cannot_be_written_fail_before_the_training(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("nemesis_fast.training.train", lambda *a, **k: pytest.fail("trained before checking"))
    a_file = tmp_path / "a_file"
    a_file.write_text("user data")
    args = ["train", "--limit", "64", "--epochs", "1", "--device", "cpu", "--no-progress"]
    for extra, message in (
        (["--out", str(tmp_path)], "--out: .* is a folder; give the name of a file"),
        (["--out", str(a_file / "m.pt")], "--out: .*a_file' is a file, not a folder"),
        (["--json", str(tmp_path)], "--json: .* is a folder"),
        (["--paper", "--out-dir", str(a_file)], "--out-dir: .*a_file' is a file, not a folder"),
    ):
        with pytest.raises(SystemExit, match=f"nemesis-fast train: {message}"):
            main([*args, *extra])
    with pytest.raises(SystemExit, match="nemesis-fast bench: --json: .* is a folder"):
        main(["bench", "bounded_relu", "--json", str(tmp_path)])
    assert a_file.read_text() == "user data"


def test_cli_paper_table(tmp_path, capsys):
    args = ["train", "--paper", "--limit", "32", "--epochs", "1", "--batch-size", "16", "--device", "cpu"]
    assert main([*args, "--json", str(tmp_path / "paper.json"), "--out-dir", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "gda_brelu" in printed and "total training time" in printed
    rows = json.loads((tmp_path / "paper.json").read_text())["models"]
    assert len(rows) == 7 and (tmp_path / "vat.pt").exists()


def test_paper_models_keep_one_training_state_per_model_in_the_checkpoint_folder(mnist_sample, tmp_path):
    """One checkpoint path given to the seven trainings: the second refused the first's state, losing the work."""
    data, test = small(mnist_sample, 32), (mnist_sample[1][0][:20], mnist_sample[1][1][:20])
    options = quiet(models=["standard", "label_smoothing"], epochs=1, batch_size=16)
    folder = tmp_path / "states"
    first = train_paper_models(data, test, checkpoint=folder, **options)
    assert sorted(p.name for p in folder.iterdir()) == ["label_smoothing.state.pt", "standard.state.pt"]
    lines: list[str] = []
    again = train_paper_models(data, test, checkpoint=folder, **{**options, "log": lines.append})
    assert sum("resuming after epoch 1" in line for line in lines) == 2
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in first]
    with pytest.raises(TypeError, match="checkpoint must be a folder path"):
        train_paper_models(data, test, checkpoint=CrashingCheckpoint(None), **options)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="checkpoint: .* is a file, not a folder"):
        train_paper_models(data, test, checkpoint=tmp_path / "file", **options)
