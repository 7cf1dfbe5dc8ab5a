"""The command line as a new user types it: train takes evaluate's and certify's names for the data options, and
a checkpoint path that does not exist is refused naming its option, before any data are read."""

from __future__ import annotations

import json
import shutil

import pytest

from nemesis_fast.checkpoints import save_checkpoint
from nemesis_fast.cli import build_parser, main
from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR
from nemesis_fast.models import mnist_cnn


def test_train_takes_data_dir_and_dataset_as_evaluate_and_certify_do():
    args = build_parser().parse_args(["train", "--data-dir", "somewhere", "--dataset", "cifar10"])
    assert (args.root, args.data) == ("somewhere", "cifar10")
    args = build_parser().parse_args(["train", "--root", "somewhere", "--data", "cifar10"])  # the names before
    assert (args.root, args.data) == ("somewhere", "cifar10")


def test_certify_names_a_missing_checkpoint(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(SystemExit, match=r"certify: --checkpoint: No such file: '.*missing\.pt'$"):
        main(["certify", "--checkpoint", str(missing), "--out", str(tmp_path / "c.csv")])
    with pytest.raises(SystemExit, match="--checkpoint: Is a folder, not a checkpoint file: "):
        main(["certify", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "c.csv")])


def test_train_names_a_missing_source(tmp_path):
    argv = ["train", "--recipe", "fgsm_adversarial", "--source", str(tmp_path / "missing.pt"), "--epochs", "1"]
    with pytest.raises(SystemExit, match=r"train: --source: No such file: '.*missing\.pt'$"):
        main([*argv, "--limit", "10", "--device", "cpu", "--no-progress"])


def test_train_without_out_says_the_model_will_not_be_saved(monkeypatch, capsys):
    monkeypatch.setattr("nemesis_fast.training.train", lambda *a, **k: pytest.fail("reached training"))
    monkeypatch.setattr("nemesis_fast._cli_train._load", lambda *a, **k: pytest.fail("reached the data"))
    with pytest.raises(pytest.fail.Exception):
        main(["train", "--epochs", "1", "--device", "cpu", "--no-progress"])
    assert "no --out: the trained model will not be saved" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--lr", "-1"], "nemesis-fast train: --lr must be > 0.0, got -1.0"),
        (["--val-fraction", "1.5"], "nemesis-fast train: --val-fraction must be < 1.0, got 1.5"),
        (
            ["--recipe", "gda", "--set", "sigma=abc"],
            r"nemesis-fast train: sigma must be a real .* \(from --set sigma=abc\)",
        ),
        (
            ["--recipe", "gda", "--set", "copies=0"],
            r"nemesis-fast train: copies must be >= 1, .* \(from --set copies=0\)",
        ),
        (
            ["--compile", "--batch-size", "128"],
            r"nemesis-fast train: --batch-size 128 is more than the \d+ training rows of an epoch: with --compile the "
            r"last, smaller batch is dropped, so no step would run; pass a --batch-size <= the rows or no --compile$",
        ),
    ],
)
def test_train_errors_name_the_option_typed(options, message):
    with pytest.raises(SystemExit, match=f"^{message}"):
        main(["train", *options, "--limit", "64", "--epochs", "1", "--device", "cpu", "--no-progress"])


@pytest.mark.parametrize(
    ("argv", "usage", "hint"),
    [
        (["train", "--data-dirr", "x"], "usage: nemesis-fast train", "did you mean --data-dir (for --data-dirr)?"),
        (["evaluate", "--root", "x"], "usage: nemesis-fast evaluate", "did you mean --data-dir (for --root)?"),
        (["certify", "--checkpoint", "m.pt", "--imgs", "5"], "usage: nemesis-fast certify", "--images (for --imgs)"),
        (["evaluate", "--root=x"], "usage: nemesis-fast evaluate", "did you mean --data-dir (for --root)?"),
        (["certify", "--checkpoint", "m.pt", "--imgs=5"], "usage: nemesis-fast certify", "--images (for --imgs)"),
        (["train", "--hx"], "usage: nemesis-fast train", "did you mean --help (for --hx)?"),  # not -h
    ],
)
def test_an_unknown_option_is_reported_by_its_command_with_the_closest_one(argv, usage, hint, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(usage) and "unrecognized arguments" in err and hint in err


@pytest.mark.parametrize(
    ("argv", "unknown", "absent"),
    [
        (["train", "--zzzzzz"], "--zzzzzz", "did you mean"),  # nothing close
        (["bench", "--root", "x"], "--root", "--data-dir"),  # bench has no data options to call --root otherwise
        (["evaluate", "--root", "data"], "--root data", "(for data)"),  # an option's value is no misspelt option
    ],
)
def test_an_unknown_option_gets_no_hint_that_does_not_fit(argv, unknown, absent, capsys):
    with pytest.raises(SystemExit):
        main(argv)
    err = capsys.readouterr().err
    assert f"unrecognized arguments: {unknown}" in err and absent not in err


def test_a_parser_used_again_reports_its_own_error_not_the_earlier_unknown_option(capsys):
    """The unknown options are those of the parse that failed on them: a later parse's other error is its own."""
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--data-dirr", "x"])
    capsys.readouterr()
    with pytest.raises(SystemExit):
        parser.parse_args(["no-such-command"])
    err = capsys.readouterr().err
    assert err.startswith("usage: nemesis-fast [-h]") and "invalid choice: 'no-such-command'" in err
    assert "unrecognized" not in err


def test_certify_takes_its_files_in_the_home_folder(tmp_path, monkeypatch):
    """--checkpoint=~/m.pt, --data-dir=~/..., --out=~/c.csv, --json=~/c.json (no shell expands a ~ after "="): the
    checks found the home folder's files, then the loading looked for a file named "~/m.pt" ("[Errno 2]"), the data
    folder was "not a folder", and the results went to a folder named "~" under the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    save_checkpoint(tmp_path / "m.pt", mnist_cnn(), recipe="standard")
    shutil.copytree(MNIST_SAMPLE_DIR, tmp_path / "mnist")
    args = ["certify", "--checkpoint=~/m.pt", "--data-dir=~/mnist", "--sigma", "0.3", "--images", "1", "--n", "8"]
    assert main([*args, "--n0", "4", "--out=~/c.csv", "--json=~/c.json", "--no-progress"]) == 0
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 2  # the header and the image's row
    assert json.loads((tmp_path / "c.json").read_text())["images"] == 1
    assert not (work / "~").exists()
