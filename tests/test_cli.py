"""`nemesis-fast bench`: the benchmark suite from the command line (train and evaluate have their own files); the
bad arguments of every command, refused before any work: numbers out of range, outputs that would overwrite an input
or another output, data a model does not take."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch
from _evaluation_cases import write_config

from nemesis_fast.checkpoints import load_checkpoint, save_checkpoint
from nemesis_fast.cli import main
from nemesis_fast.models import cifar_cnn

TRAIN = ["train", "--limit", "64", "--epochs", "1", "--device", "cpu", "--no-progress"]


def test_bench_prints_a_table_and_writes_json(tmp_path, capsys):
    report = tmp_path / "bench.json"
    assert main(["bench", "bounded_relu", "--device", "cpu", "--size", "4096", "--json", str(report)]) == 0
    assert "forward" in capsys.readouterr().out
    written = json.loads(report.read_text())
    assert written["complete"] is True
    (only,) = written["reports"]
    assert only["device"] and only["rows"]


def test_bench_json_keeps_the_rows_of_a_suite_stopped_part_way(tmp_path, monkeypatch, capsys):
    # On a lent GPU each suite runs under a time limit: the rows measured before the stop must stay in the file.
    from nemesis_fast import bench
    from nemesis_fast.bench.harness import Case, Report

    def stopped_suite(device, **kwargs):
        report = Report("stopped", device)
        report.run(Case("first", {"noop": lambda: None}, baseline="noop", min_seconds=0.0))
        raise KeyboardInterrupt  # stands for the time limit's kill, after the first row was measured

    monkeypatch.setattr(bench, "suite", lambda name: stopped_suite)
    report = tmp_path / "bench.json"
    assert main(["bench", "bounded_relu", "--device", "cpu", "--json", str(report)]) == 130  # Ctrl-C: no traceback
    assert capsys.readouterr().err == f"nemesis-fast bench: interrupted; the rows measured are in {report}\n"
    written = json.loads(report.read_text())
    assert written["complete"] is False
    (only,) = written["reports"]
    assert only["title"] == "stopped" and [row["case"] for row in only["rows"]] == ["first"]
    with pytest.raises(SystemExit, match=f"nemesis-fast bench: --json: '{report}' exists; pass --overwrite"):
        main(["bench", "bounded_relu", "--device", "cpu", "--json", str(report)])
    assert main(["bench", "bounded_relu", "--device", "cpu", "--json", str(report), "--overwrite"]) == 130


def test_bench_bad_arguments_end_in_one_line():
    with pytest.raises(SystemExit, match="unknown benchmark nope; choose from bounded_relu"):
        main(["bench", "nope", "--device", "cpu"])
    with pytest.raises(SystemExit, match="--device must name a device such as 'cpu' or 'cuda:0', got 'gpu'"):
        main(["bench", "bounded_relu", "--device", "gpu"])
    with pytest.raises(SystemExit, match="--device is 'cuda:99', but"):
        main(["bench", "bounded_relu", "--device", "cuda:99"])


def _refused(argv: list[str], capsys) -> str:
    """argparse's message for `argv`, which it refuses."""
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("size", ["-1", "0", "1000000000000", "1e3"])
def test_bench_sizes_below_one_or_beyond_memory_are_refused(size, capsys, monkeypatch):
    monkeypatch.setattr("nemesis_fast.bench.suite", lambda name: pytest.fail("benchmarked"))
    err = _refused(["bench", "bounded_relu", "--device", "cpu", "--size", size], capsys)
    assert f"argument --size: must be an integer in 1..2147483648, got {size}" in err.replace("'", "")


@pytest.mark.parametrize(
    "option,value,bound",
    [
        ("--limit", "-5", ">= 1"),
        ("--limit", "0", ">= 1"),
        ("--epochs", "0", ">= 1"),
        ("--batch-size", "-3", ">= 1"),
        ("--patience", "-1", ">= 0"),
        ("--seed", "-1", ">= 0"),
        ("--threads", "-2", "in 0..1024"),
    ],
)
def test_train_counts_out_of_range_are_refused_naming_the_option(option, value, bound, capsys, monkeypatch):
    monkeypatch.setattr("nemesis_fast.training.train", lambda *a, **k: pytest.fail("trained"))
    err = _refused([*TRAIN, option, value], capsys)
    assert f"argument {option}: must be an integer {bound}, got {value}" in err


def test_train_outputs_that_would_overwrite_an_input_or_each_other_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr("nemesis_fast.training.train", lambda *a, **k: pytest.fail("trained before checking"))
    monkeypatch.setattr("nemesis_fast.paper_models.train_paper_models", lambda *a, **k: pytest.fail("trained"))
    source = tmp_path / "source.pt"
    source.write_bytes(b"a source checkpoint")
    model, out_dir = str(tmp_path / "m.pt"), tmp_path / "models"
    for extra, message in (
        (["--out", model, "--json", model], "--out and --json name the same file"),
        (["--recipe", "fgsm_adversarial", "--source", str(source), "--out", str(source)], "--source and --out name"),
        (["--recipe", "fgsm_adversarial", "--source", str(source), "--json", str(source)], "--source and --json"),
        (["--paper", "--out-dir", str(out_dir), "--json", str(out_dir / "vat.pt")], "--json and --out-dir's vat.pt"),
        (["--paper", "--out", model], "--out saves one model; with --paper give --out-dir"),
        (["--out-dir", str(out_dir)], "--out-dir applies with --paper only"),
    ):
        with pytest.raises(SystemExit, match=f"nemesis-fast train: {message}"):
            main([*TRAIN, *extra])
    assert source.read_bytes() == b"a source checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.pt"]


def test_train_outputs_that_would_overwrite_its_data_files_are_refused(tmp_path, monkeypatch):
    import shutil

    from _support import write_cifar

    from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR

    monkeypatch.setattr("nemesis_fast.training.train", lambda *a, **k: pytest.fail("trained before checking"))
    mnist = tmp_path / "mnist"
    shutil.copytree(MNIST_SAMPLE_DIR, mnist / "MNIST" / "raw")  # torchvision's layout
    raw, cifar = mnist / "MNIST" / "raw", write_cifar(tmp_path / "cifar" / "cifar-10-batches-py")
    kept = {path: path.read_bytes() for path in [*raw.iterdir(), *cifar.iterdir()]}
    for extra, message in (
        (["--root", str(mnist), "--out", str(raw / "t10k-images-idx3-ubyte.gz")], "--root's MNIST/raw/t10k-images"),
        (["--root", str(mnist), "--json", str(raw / "train-labels-idx1-ubyte.gz")], "--root's MNIST/raw/train-lab"),
        (["--out", str(MNIST_SAMPLE_DIR / "train-images-idx3-ubyte.gz")], "the MNIST sample's train-images"),
        (["--data", "cifar10", "--root", str(cifar.parent), "--out", str(cifar / "test_batch")], "--root's cifar-10"),
        (["--data", "cifar10", "--root", str(cifar), "--json", str(cifar / "batches.meta")], "--root's batches.meta"),
    ):
        with pytest.raises(SystemExit, match=f"nemesis-fast train: {message}.* and --(out|json) name the same file"):
            main([*TRAIN, *extra])
    assert all(path.read_bytes() == data for path, data in kept.items())


def test_train_builds_any_model_for_the_datas_images(tmp_path, monkeypatch):
    out = tmp_path / "cifar_cnn.pt"
    assert main([*TRAIN, "--model", "cifar_cnn", "--val-fraction", "0", "--out", str(out)]) == 0
    model, meta = load_checkpoint(out)
    assert meta["architecture"]["kwargs"] | {"in_channels": 1, "input_size": 28} == meta["architecture"]["kwargs"]
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    same = tmp_path / "cifar_cnn_same.pt"
    assert (
        main([*TRAIN, "--model", "cifar_cnn", "--conv2-padding", "same", "--val-fraction", "0", "--out", str(same)])
        == 0
    )
    model, meta = load_checkpoint(same)  # the authors' padding, kept in the checkpoint
    assert meta["architecture"]["kwargs"]["conv2_padding"] == "same" and model[4].padding == (1, 1)
    monkeypatch.setattr("nemesis_fast.paper_models.train_paper_models", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(
        SystemExit, match="--model cifar_cnn with --paper takes 3x32x32 images, but the data are 1x28x28"
    ):
        main([*TRAIN, "--paper", "--model", "cifar_cnn"])


def test_train_refuses_a_source_that_does_not_take_the_datas_images(tmp_path, monkeypatch):
    monkeypatch.setattr("nemesis_fast.training.train", lambda *a, **k: pytest.fail("trained before checking"))
    source = tmp_path / "cifar.pt"
    save_checkpoint(source, cifar_cnn(), recipe="standard")
    with pytest.raises(SystemExit, match="nemesis-fast train: --source: its model does not take the data's 1x28x28"):
        main([*TRAIN, "--recipe", "fgsm_adversarial", "--source", str(source)])


def test_evaluate_refuses_an_out_folder_holding_files_it_would_overwrite(tmp_path, monkeypatch):
    from nemesis_fast.evaluation import load_config
    from nemesis_fast.evaluation.folders import check_out_dir

    monkeypatch.setattr("nemesis_fast.evaluation.start", lambda *args: pytest.fail("work started"))
    config = str(write_config(tmp_path))
    for name in ("results.csv", "results.md", "whitebox.png", "models/standard.pt"):
        out = tmp_path / name.replace("/", "_")
        (out / name).parent.mkdir(parents=True)
        (out / name).write_text("user data")
        first = name.split("/")[0]
        with pytest.raises(SystemExit, match=f"out_dir: .* holds {first}, which the run would overwrite"):
            main(["evaluate", "--config", config, "--out", str(out), "--no-progress"])
        assert (out / name).read_text() == "user data"
    interrupted = tmp_path / "interrupted"  # the cache of a run stopped before its outputs, and a look at it
    (interrupted / "cache" / "model").mkdir(parents=True)
    (interrupted / "cache" / "model" / "0123.pt").write_bytes(b"")
    (interrupted / "partial").mkdir()
    (interrupted / "partial" / "results.json").write_text("{}")
    (interrupted / "models").mkdir()  # empty
    check_out_dir(load_config(config, {"out_dir": str(interrupted)}))
    check_out_dir(load_config(config, {"out_dir": str(tmp_path / "not-there")}))
    look = tmp_path / "look"  # a look at the cache writes under <out>/partial, guarded the same way
    (look / "partial").mkdir(parents=True)
    (look / "partial" / "results.md").write_text("user data")
    with pytest.raises(SystemExit, match=r"out_dir: .*partial holds results.md"):
        main(["evaluate", "--config", config, "--out", str(look), "--cached-only", "--no-progress"])
    assert (look / "partial" / "results.md").read_text() == "user data"


def test_a_bad_wait_under_torchrun_ends_in_one_line_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it: the process would join a group
    monkeypatch.setenv("NEMESIS_FAST_WAIT_HOURS", "abc")
    monkeypatch.setattr("torch.distributed.init_process_group", lambda *a, **k: pytest.fail("joined a group"))
    monkeypatch.setattr("nemesis_fast.training.train", lambda *a, **k: pytest.fail("trained"))
    config = str(write_config(tmp_path))
    message = "NEMESIS_FAST_WAIT_HOURS must be a number of hours > 0 and <= 1e\\+06, got 'abc'"
    with pytest.raises(SystemExit, match=f"nemesis-fast evaluate: {message}"):
        main(["evaluate", "--config", config, "--out", str(tmp_path / "out"), "--no-progress"])
    with pytest.raises(SystemExit, match=f"nemesis-fast train: {message}"):
        main([*TRAIN, "--paper", "--out-dir", str(tmp_path / "models")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_evaluate_out_of_gpu_memory_ends_in_one_line_naming_the_batch_sizes(tmp_path, monkeypatch):
    """A CUDA out-of-memory error ended evaluate in a traceback."""

    def out_of_memory(self, cached_only=False):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore of torch's advice")

    monkeypatch.setattr("nemesis_fast.evaluation.runner.Evaluation.run", out_of_memory)
    config = str(write_config(tmp_path))
    with pytest.raises(
        SystemExit,
        match=r"evaluate: out of GPU memory \(CUDA out of memory. Tried to allocate 2.00 "
        r"GiB\)\. A smaller batch_size in the config .*the command then continues",
    ):
        main(["evaluate", "--config", config, "--out", str(tmp_path / "out"), "--no-progress"])


class _Interrupted(Exception):
    pass


def test_train_resume_continues_an_interrupted_run_to_the_weights_of_an_uninterrupted_one(tmp_path, monkeypatch):
    from nemesis_fast.resume import FileCheckpoint

    argv = ["train", "--limit", "96", "--epochs", "3", "--batch-size", "32", "--patience", "0", "--device", "cpu"]
    argv += ["--no-progress"]
    assert main([*argv, "--out", str(tmp_path / "whole.pt")]) == 0
    state = tmp_path / "state.pt"
    real_save = FileCheckpoint.save

    def save_then_die(self, training_state):
        real_save(self, training_state)
        raise _Interrupted  # the process dies after its first epoch is written

    monkeypatch.setattr(FileCheckpoint, "save", save_then_die)
    with pytest.raises(_Interrupted):
        main([*argv, "--resume", str(state), "--out", str(tmp_path / "resumed.pt")])
    assert state.is_file() and not (tmp_path / "resumed.pt").exists()
    monkeypatch.setattr(FileCheckpoint, "save", real_save)
    assert main([*argv, "--resume", str(state), "--out", str(tmp_path / "resumed.pt")]) == 0
    whole, resumed = (load_checkpoint(tmp_path / f"{name}.pt")[0].state_dict() for name in ("whole", "resumed"))
    assert whole.keys() == resumed.keys() and all(torch.equal(whole[k], resumed[k]) for k in whole)
    with pytest.raises(SystemExit, match="--resume: .*state.pt' is a file, not a folder"):
        main([*argv, "--paper", "--resume", str(state)])  # with --paper, a folder of one state per model
    given = {}
    monkeypatch.setattr(
        "nemesis_fast.paper_models.train_paper_models", lambda *a, **k: given.update(k) or pytest.fail("stop")
    )
    with pytest.raises(pytest.fail.Exception, match="stop"):
        main([*argv, "--paper", "--resume", str(tmp_path / "states")])
    assert given["checkpoint"] == str(tmp_path / "states")
    with pytest.raises(SystemExit, match="--out and --resume name the same file"):
        main([*argv, "--resume", str(state), "--out", str(state)])
    with pytest.raises(SystemExit, match="nemesis-fast train: --resume: its state belongs to another training run"):
        main([*argv, "--lr", "0.01", "--resume", str(state)])
    (tmp_path / "notes.txt").write_text("a user's notes")
    with pytest.raises(SystemExit, match="nemesis-fast train: --resume: .*notes.txt' is not a training checkpoint"):
        main([*argv, "--resume", str(tmp_path / "notes.txt")])
    assert (tmp_path / "notes.txt").read_text() == "a user's notes"


def test_empty_outputs_are_refused_before_any_work(tmp_path, monkeypatch):
    """--out "$OUT" with OUT unset: certify failed after all its work, train saved nothing, evaluate wrote into ."""
    monkeypatch.setattr("nemesis_fast.training.train", lambda *a, **k: pytest.fail("trained before checking"))
    for argv, message in (
        ([*TRAIN, "--out", ""], "nemesis-fast train: --out is empty"),
        ([*TRAIN, "--resume", ""], "nemesis-fast train: --resume is empty"),
        ([*TRAIN, "--paper", "--out-dir", ""], "nemesis-fast train: --out-dir is empty"),
        (["certify", "--checkpoint", str(tmp_path / "m.pt"), "--out", ""], "nemesis-fast certify: --out is empty"),
        (["bench", "bounded_relu", "--json", ""], "nemesis-fast bench: --json is empty"),
        (["evaluate", "--out", ""], "nemesis-fast evaluate: out_dir is empty"),
    ):
        with pytest.raises(SystemExit, match=message):
            main(argv)


def _interrupted(*args, **kwargs):
    """Stands for Ctrl-C in whatever it replaces (a function, or a method: self is one of the args)."""
    raise KeyboardInterrupt


class _InterruptedImport:
    """A meta path finder on which importing nemesis_fast.cli meets Ctrl-C."""

    def find_spec(self, name, path=None, target=None):
        if name == "nemesis_fast.cli":
            raise KeyboardInterrupt


def _interrupt_importing_the_cli(monkeypatch) -> None:
    monkeypatch.delitem(sys.modules, "nemesis_fast.cli")
    monkeypatch.setattr(sys, "meta_path", [_InterruptedImport(), *sys.meta_path])


def test_ctrl_c_ends_in_one_line_saying_what_was_kept(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("nemesis_fast.training.train", _interrupted)
    assert main(TRAIN) == 130
    assert capsys.readouterr().err == (
        "nemesis-fast train: interrupted; nothing was kept (--resume FILE keeps the training state after every epoch)\n"
    )
    assert main([*TRAIN, "--resume", str(tmp_path / "s.pt")]) == 130
    assert f"no epoch had ended, so --resume {tmp_path / 's.pt'} holds nothing yet" in capsys.readouterr().err
    (tmp_path / "s.pt").write_bytes(b"a state")
    assert main([*TRAIN, "--resume", str(tmp_path / "s.pt")]) == 130
    assert f"resumes from --resume {tmp_path / 's.pt'}, after the last epoch" in capsys.readouterr().err

    def interrupted_after_out(*args, **kwargs):  # --out written, then Ctrl-C before --json
        (tmp_path / "m.pt").write_bytes(b"written by the run")
        raise KeyboardInterrupt

    monkeypatch.setattr("nemesis_fast.training.train", interrupted_after_out)
    assert main([*TRAIN, "--resume", str(tmp_path / "s.pt"), "--out", str(tmp_path / "m.pt")]) == 130
    assert "the same command with --overwrite (it had written --out) resumes from" in capsys.readouterr().err
    monkeypatch.setattr("nemesis_fast.evaluation.evaluate", _interrupted)
    assert main(["evaluate", "--out", str(tmp_path / "e")]) == 130
    assert (
        capsys.readouterr().err
        == "nemesis-fast evaluate: interrupted; the same command resumes from the units its cache holds\n"
    )


def test_ctrl_c_under_torchrun_prints_its_line_once_per_machine(monkeypatch, capsys):
    """torchrun passes Ctrl-C to every process of a machine: the first (LOCAL_RANK 0) says what was kept, the
    others end quietly with the same status."""
    import _nemesis_fast_command

    monkeypatch.setattr("nemesis_fast.evaluation.evaluate", _interrupted)
    line = "nemesis-fast evaluate: interrupted; the same command resumes from the units its cache holds\n"
    for local_rank, says in (("0", line), ("1", ""), ("7", "")):
        monkeypatch.setenv("LOCAL_RANK", local_rank)
        assert main(["evaluate"]) == 130
        assert capsys.readouterr().err == says
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", _interrupted)
    assert main(["bench", "--help"]) == 130
    assert capsys.readouterr().err == ""
    monkeypatch.undo()
    monkeypatch.setenv("LOCAL_RANK", "1")
    _interrupt_importing_the_cli(monkeypatch)
    assert _nemesis_fast_command.main() == 130
    assert capsys.readouterr().err == ""


def test_ctrl_c_while_the_command_imports_torch_ends_in_one_line(monkeypatch, capsys):
    """The command's entry point lies outside the package, so that Ctrl-C while the package (and torch) is imported
    ends in one line too; so does Ctrl-C while the arguments are parsed."""
    import _nemesis_fast_command

    project = (Path(__file__).parents[1] / "pyproject.toml").read_text()
    assert '\n[project.scripts]\nnemesis-fast = "_nemesis_fast_command:main"\n' in project

    _interrupt_importing_the_cli(monkeypatch)
    assert _nemesis_fast_command.main() == 130
    assert capsys.readouterr().err == "nemesis-fast: interrupted while starting; nothing was done\n"
    monkeypatch.undo()

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", _interrupted)
    assert main(["bench", "--help"]) == 130
    assert capsys.readouterr().err == "nemesis-fast: interrupted while starting; nothing was done\n"


def test_evaluate_refuses_an_out_folder_of_the_same_settings_on_other_data(tmp_path):
    """--data-dir is no setting: the same config on other data replaced the earlier run's results and models."""
    from nemesis_fast.evaluation import ConfigError, load_config
    from nemesis_fast.evaluation.folders import check_same_data

    config = load_config(write_config(tmp_path), {"out_dir": str(tmp_path / "out")})
    (tmp_path / "out").mkdir()
    results = tmp_path / "out" / "results.json"
    results.write_text(json.dumps({"config": config.to_dict(), "data": {"train": "a", "test": "b"}}))
    check_same_data(config, {"train": "a", "test": "b"})  # the same data: a repeated or resumed run
    with pytest.raises(ConfigError, match=r"out_dir: .*results.json holds the results of a run on other data \(its te"):
        check_same_data(config, {"train": "a", "test": "c"})
    results.write_text(json.dumps({"config": config.to_dict()}))  # written before the data were recorded
    check_same_data(config, {"train": "a", "test": "c"})


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--t", "0.5"], "--t is BReLU's threshold; it needs --activation brelu"),
        (["--depth", "32"], "--depth is the ResNet's; --model is mnist_cnn"),
        (["--paper", "--depth", "32"], "--paper: .*--depth and --conv2-padding do not apply"),
        (["--conv2-padding", "same"], "--conv2-padding is cifar_cnn's; --model is mnist_cnn"),
        (["--paper", "--conv2-padding", "same"], "--paper: .*do not apply .*--preset paper_cifar10"),
    ],
)
def test_train_options_that_would_change_nothing_are_refused(extra, message, monkeypatch):
    monkeypatch.setattr("nemesis_fast.training.train", lambda *a, **k: pytest.fail("trained"))
    monkeypatch.setattr("nemesis_fast.paper_models.train_paper_models", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(SystemExit, match=f"nemesis-fast train.*{message}"):
        main([*TRAIN, *extra])


def test_evaluate_refuses_a_preset_beside_a_config(tmp_path, monkeypatch):
    monkeypatch.setattr("nemesis_fast.evaluation.evaluate", lambda *a, **k: pytest.fail("evaluated"))
    for preset in ("quick", "no_such_preset"):
        with pytest.raises(SystemExit, match="give --config or --preset, not both"):
            config = str(write_config(tmp_path))
            main(["evaluate", "--config", config, "--preset", preset, "--out", str(tmp_path / "o")])
