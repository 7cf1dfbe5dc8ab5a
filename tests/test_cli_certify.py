"""`nemesis-fast certify` and the training noise's sigma that checkpoints remember for it."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from nemesis_fast.checkpoints import checkpoint_noise_sigma, load_checkpoint, save_checkpoint
from nemesis_fast.cli import main
from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR
from nemesis_fast.defenses import FeatureSqueezing
from nemesis_fast.models import mnist_cnn


def _checkpoint(tmp_path, recipe: str = "gda", **settings) -> str:
    torch.manual_seed(0)
    path = tmp_path / f"{recipe}.pt"
    save_checkpoint(path, mnist_cnn(), recipe=recipe, settings=settings)
    return str(path)


def records_written(argv: list[str]) -> list[dict]:
    """main(argv), which must succeed, and what it wrote to its resume records (and --json), in order: the records a
    run removes at its end."""
    from nemesis_fast import _cli_certify

    kept = []
    real = _cli_certify.write_json_atomic
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_cli_certify, "write_json_atomic", lambda path, data: (kept.append(data), real(path, data)))
        assert main(argv) == 0
    return kept


def test_checkpoints_remember_the_training_noise_sigma(tmp_path):
    _, gda = load_checkpoint(_checkpoint(tmp_path, "gda", sigma=0.5, clip=None))
    _, standard = load_checkpoint(_checkpoint(tmp_path, "standard"))
    assert gda["noise_sigma"] == 0.5 and standard["noise_sigma"] is None
    assert checkpoint_noise_sigma(gda) == 0.5 and checkpoint_noise_sigma(standard) is None
    older = {k: v for k, v in gda.items() if k != "noise_sigma"}  # written before the entry existed
    assert checkpoint_noise_sigma(older) == 0.5


def test_a_model_behind_feature_squeezing_is_certified_behind_it(tmp_path, capsys):
    """The evaluation's feature_squeezing.pt loaded as its bare network: certify certified the network alone."""
    torch.manual_seed(0)
    squeezed = FeatureSqueezing(mnist_cnn(), 1)
    path = save_checkpoint(tmp_path / "fs.pt", squeezed, recipe="standard")
    model, meta = load_checkpoint(path)
    assert isinstance(model, FeatureSqueezing) and (model.bit_depth, model.median_size) == (1, None)
    assert meta["squeezer"] == {"bit_depth": 1, "median_size": None, "bpda": True}
    x = torch.rand(4, 1, 28, 28)
    assert torch.equal(model(x), squeezed(x)) and not torch.equal(model(x), squeezed.model(x))
    payload = torch.load(path, weights_only=True)  # as the evaluation wrote it before: bits among the metrics
    payload["squeezer"], payload["metrics"] = None, {"squeeze_bits": 1}
    torch.save(payload, tmp_path / "older.pt")
    assert load_checkpoint(tmp_path / "older.pt")[0].bit_depth == 1
    with pytest.raises(ValueError, match=r"its squeezer \{'bit_depth': 1, 'median_size': None, 'bpda': True\} differs"):
        load_checkpoint(path, model=FeatureSqueezing(mnist_cnn(), 3))
    assert isinstance(load_checkpoint(path, model=mnist_cnn())[0], FeatureSqueezing)
    masked = save_checkpoint(tmp_path / "masked.pt", FeatureSqueezing(mnist_cnn(), 1, bpda=False), recipe="standard")
    assert load_checkpoint(masked)[0].bpda is False  # the true gradient, as saved, not BPDA's
    given = FeatureSqueezing(mnist_cnn(), 1, bpda=False)
    assert load_checkpoint(masked, model=given)[0] is given
    whole = {k: v for k, v in torch.load(path, weights_only=True).items() if k != "squeezer"}
    whole["state_dict"] = {f"model.{k}": v for k, v in whole["state_dict"].items()}
    whole["architecture"] = None  # as save_checkpoint wrote a FeatureSqueezing before squeezers were recorded
    torch.save(whole, tmp_path / "whole.pt")
    given = FeatureSqueezing(mnist_cnn(), 1)
    assert load_checkpoint(tmp_path / "whole.pt", model=given)[0] is given and torch.equal(given(x), squeezed(x))
    out, summary = tmp_path / "c.csv", tmp_path / "c.json"
    args = ["certify", "--checkpoint", str(path), "--sigma", "0.3", "--images", "2", "--n", "20", "--n0", "4"]
    assert main([*args, "--out", str(out), "--json", str(summary), "--no-progress"]) == 0
    assert "(recipe standard, behind feature squeezing: 1 bit) at sigma 0.3" in capsys.readouterr().out
    assert json.loads(summary.read_text())["squeezer"] == {"bit_depth": 1, "median_size": None}


def test_train_for_smoothing_unclipped_noise_at_any_sigma(tmp_path, capsys):
    out = tmp_path / "smooth.pt"
    args = ["train", "--recipe", "gda", "--set", "sigma=0.45", "--set", "clip=None", "--set", "copies=1"]
    args += ["--epochs", "1", "--limit", "64", "--val-fraction", "0", "--no-progress", "--out", str(out)]
    assert main(args) == 0
    _, meta = load_checkpoint(out)
    assert meta["noise_sigma"] == 0.45 and meta["settings"]["clip"] is None


def test_certify_writes_the_csv_and_summary_at_the_checkpoints_sigma(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path, "gda", sigma=0.4, clip=None)
    out, summary = tmp_path / "c.csv", tmp_path / "c.json"
    args = ["certify", "--checkpoint", checkpoint, "--images", "3", "--start", "5", "--n", "40", "--n0", "4"]
    assert main([*args, "--out", str(out), "--json", str(summary), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "at sigma 0.4 (the checkpoint's training sigma)" in printed and "certified accuracy: r=0 " in printed
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["index"] for r in rows] == ["5", "6", "7"]
    assert list(rows[0]) == ["index", "label", "prediction", "radius", "correct"]
    for r in rows:
        assert r["correct"] == str(int(r["prediction"] == r["label"]))
        assert (float(r["radius"]) == 0) == (r["prediction"] == "-1")
    data = json.loads(summary.read_text())
    assert (
        data["sigma"] == 0.4
        and data["n"] == 40
        and set(data["certified_accuracy"]) == {"0", "0.25", "0.5", "0.75", "1"}
    )
    with pytest.raises(SystemExit, match=f"nemesis-fast certify: --out: '{out}' exists; pass --overwrite"):
        main([*args, "--sigma", "0.25", "--out", str(out), "--no-progress"])
    assert main([*args, "--sigma", "0.25", "--out", str(out), "--no-progress", "--overwrite"]) == 0
    assert "at sigma 0.25 (given; the checkpoint was trained at sigma 0.4)" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--sigma", "0"], "--sigma must be > 0"),
        (["--sigma", "-0.5"], "--sigma must be > 0"),
        (["--n", "0"], "--n must be >= 1"),
        (["--n0", "0"], "--n0 must be >= 1"),
        (["--alpha", "1"], "--alpha must be < 1"),
        (["--alpha", "0"], "--alpha must be > 0"),
        (["--batch-size", "0"], "--batch-size must be >= 1"),
        (["--seed", str(2**64)], "--seed must be <= 18446744073709551615"),
        (["--images", "-2"], "--images must be >= 0"),
        (["--start", "99999"], "--start \\(--first\\) must be < 2000"),
        (["--device", "gpu"], "--device must name a device"),
        (["--data-dir", "/no/such/folder"], "--data-dir '/no/such/folder' is not a folder"),
    ],
)
def test_bad_arguments_end_in_one_line_naming_the_argument(tmp_path, extra, message):
    checkpoint = _checkpoint(tmp_path, "gda", sigma=0.3)
    with pytest.raises(SystemExit, match=f"nemesis-fast certify: {message}"):
        main(["certify", "--checkpoint", checkpoint, "--out", str(tmp_path / "c.csv"), *extra])


def test_the_spellings_torchrun_passes_on_set_the_same_options():
    """--N, --N0 and --first (torchrun takes --n and --start for abbreviations of its own) set --n, --n0 and --start;
    without --N argparse would read it as an abbreviation of --N0, and certify with the default n."""
    from nemesis_fast.cli import build_parser

    args = build_parser().parse_args(["certify", "--checkpoint", "m.pt", "--N0", "3", "--N", "7", "--first", "2"])
    assert (args.n0, args.n, args.start) == (3, 7, 2)


def test_sigma_is_required_where_the_checkpoint_records_none(tmp_path):
    checkpoint = _checkpoint(tmp_path, "standard")
    with pytest.raises(SystemExit, match="--sigma is required: the checkpoint .recipe 'standard'. records no"):
        main(["certify", "--checkpoint", checkpoint, "--images", "1", "--n", "5"])
    with pytest.raises(SystemExit, match="not-there.pt"):
        main(["certify", "--checkpoint", str(tmp_path / "not-there.pt"), "--sigma", "0.3"])
    with pytest.raises(SystemExit):  # argparse: "argument --n: invalid int value: '1e4'"
        main(["certify", "--checkpoint", checkpoint, "--n", "1e4"])


class Interrupted(Exception):
    pass


def test_an_interrupted_certify_resumes_where_it_stopped_with_the_same_certificates(tmp_path, capsys, monkeypatch):
    from nemesis_fast import _cli_certify
    from nemesis_fast.certify import Smooth

    checkpoint = _checkpoint(tmp_path, "gda", sigma=0.4, clip=None)
    base = ["certify", "--checkpoint", checkpoint, "--images", "5", "--n0", "4", "--no-progress"]
    args = [*base, "--n", "40"]
    whole, part = tmp_path / "whole.csv", tmp_path / "part.csv"
    assert main([*args, "--out", str(whole)]) == 0
    monkeypatch.setattr(_cli_certify, "FIRST_CHUNK_DRAWS", 2 * 44)  # a first chunk of 2 images,
    monkeypatch.setattr(_cli_certify, "CHUNK_SECONDS", 0.0)  # then of one image
    real, calls = Smooth.certify, []

    def dying(self, x, *rest, **kwargs):
        calls.append(len(x))
        if len(calls) == 3:
            raise Interrupted  # after two chunks (3 images) were kept
        return real(self, x, *rest, **kwargs)

    monkeypatch.setattr(Smooth, "certify", dying)
    with pytest.raises(Interrupted):
        main([*args, "--data-dir", str(MNIST_SAMPLE_DIR), "--out", str(part)])
    partial = tmp_path / "part.csv.partial.json"
    assert calls == [2, 1, 1] and len(json.loads(partial.read_text())["prediction"]) == 3 and not part.exists()
    with pytest.raises(SystemExit, match="holds an interrupted run with other settings \\(n\\)"):
        main([*base, "--n", "41", "--out", str(part)])
    calls.clear()
    monkeypatch.chdir(MNIST_SAMPLE_DIR.parent)  # the same folder spelt another way
    assert main([*args, "--data-dir", MNIST_SAMPLE_DIR.name, "--out", str(part)]) == 0
    assert calls == [2] and "resuming: 3 of 5 images already certified" in capsys.readouterr().out
    assert part.read_text() == whole.read_text() and not partial.exists()


def test_a_resume_file_of_the_right_settings_but_not_this_runs_certificates_is_refused_up_front(tmp_path):
    """A resume file edited (or written by another tool) with certificates that do not fit the run crashed after
    writing a CSV of the wrong rows; it is refused before any work, naming it."""
    out = tmp_path / "c.csv"
    argv = ["certify", "--checkpoint", _checkpoint(tmp_path, "gda", sigma=0.4, clip=None), "--images", "3"]
    argv += ["--n0", "4", "--n", "20", "--no-progress", "--out", str(out)]
    settings = records_written(argv)[-1]["settings"]  # the resume file of a finished run
    partial = tmp_path / "c.csv.partial.json"
    wrong = [([0, 1], [0.1]), ([0, 1, 2, 3], [0.1] * 4), ([0, 10], [0.1, 0.2]), ([0], [-1.0]), ([0.5], [0.1])]
    wrong += [([True], [0.1]), ([0], ["0.1"]), ([0], [None]), (1, [0.1]), ([0], 0.1)]  # (types JSON can hold)
    for prediction, radius in wrong:
        out.unlink(missing_ok=True)
        partial.write_text(json.dumps({"settings": settings, "prediction": prediction, "radius": radius}))
        with pytest.raises(SystemExit, match="c.csv.partial.json does not hold the certificates of at most 3 images"):
            main(argv)
        assert not out.exists()
    for text in ("not json", "[0, 1]", json.dumps({"settings": settings, "prediction": [0]})):  # not a record
        partial.write_text(text)
        with pytest.raises(SystemExit, match="c.csv.partial.json is not the record of an interrupted certify; move"):
            main(argv)
        assert not out.exists()


def test_the_bar_of_a_resumed_run_counts_the_copies_already_certified_and_ends_at_its_total(tmp_path, monkeypatch):
    from nemesis_fast import _progress

    out = tmp_path / "c.csv"
    argv = ["certify", "--checkpoint", _checkpoint(tmp_path, "gda", sigma=0.4, clip=None), "--images", "3"]
    argv += ["--n0", "4", "--n", "20", "--out", str(out)]
    kept = records_written([*argv, "--no-progress"])[-1]  # the record of a finished run, cut to its first image
    (tmp_path / "c.csv.partial.json").write_text(json.dumps({**kept, "prediction": [0], "radius": [0.0]}))
    out.unlink()
    bars = []

    class Bar:  # (a tqdm's count)
        def __init__(self, enabled, total, **options):
            self.total, self.n = total, 0
            bars.append(self)

        def update(self, copies):
            self.n += copies

        def close(self):
            pass

    monkeypatch.setattr(_progress, "progress_bar", Bar)
    assert main([*argv, "--progress"]) == 0
    assert [(bar.total, bar.n) for bar in bars] == [(3 * 24, 3 * 24)]


def test_ctrl_c_after_out_is_written_says_the_rerun_needs_overwrite_and_that_rerun_finishes(
    tmp_path, capsys, monkeypatch
):
    """Between --out and --json the same command would be refused (--out exists): the line says --overwrite."""
    from nemesis_fast import _cli_certify

    out, summary = tmp_path / "c.csv", tmp_path / "c.json"
    argv = ["certify", "--checkpoint", _checkpoint(tmp_path, "gda", sigma=0.4, clip=None), "--images", "2"]
    argv += ["--n0", "4", "--n", "20", "--no-progress", "--out", str(out), "--json", str(summary)]
    real = _cli_certify.write_json_atomic

    def interrupted_at_the_summary(path, data):
        if path == summary:
            raise KeyboardInterrupt
        real(path, data)

    monkeypatch.setattr(_cli_certify, "write_json_atomic", interrupted_at_the_summary)
    assert main(argv) == 130
    line = f"the same command with --overwrite (it had written --out) resumes from {out}.partial.json\n"
    assert capsys.readouterr().err.endswith(line) and out.is_file() and not summary.exists()
    monkeypatch.setattr(_cli_certify, "write_json_atomic", real)
    with pytest.raises(SystemExit, match="--out: .* exists; pass --overwrite"):
        main(argv)
    csv = out.read_text()
    assert main([*argv, "--overwrite"]) == 0
    assert "resuming: 2 of 2 images" in capsys.readouterr().out and out.read_text() == csv and summary.is_file()


def test_certify_writes_out_into_a_folder_it_makes(tmp_path):
    """--out in a folder that does not exist yet (check_output_file lets it be made): no records to look for there."""
    out = tmp_path / "new" / "c.csv"
    argv = ["certify", "--checkpoint", _checkpoint(tmp_path, "gda", sigma=0.4, clip=None), "--images", "1"]
    assert main([*argv, "--n0", "4", "--n", "20", "--no-progress", "--out", str(out)]) == 0
    assert out.is_file() and [p.name for p in out.parent.iterdir()] == ["c.csv"]


def test_ctrl_c_names_what_the_rerun_resumes_from_or_that_no_chunk_was_finished(tmp_path, capsys, monkeypatch):
    import argparse

    from nemesis_fast._cli_certify import _interrupted
    from nemesis_fast.certify import Smooth

    out, summary = tmp_path / "c.csv", tmp_path / "c.json"
    argv = ["certify", "--checkpoint", _checkpoint(tmp_path, "gda", sigma=0.4, clip=None), "--images", "2"]
    argv += ["--n0", "4", "--n", "20", "--no-progress", "--out", str(out), "--json", str(summary)]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Smooth, "certify", interrupted)
    assert main(argv) == 130
    assert capsys.readouterr().err.endswith("nemesis-fast certify: interrupted; no chunk was finished\n")
    # the records of a run under torchrun, and both outputs written: their count, and --overwrite for both
    for name in ("c.csv.partial.0-of-2.json", "c.csv.partial.1-of-2.json", "c.csv", "c.json"):
        (tmp_path / name).write_text("")
    args = argparse.Namespace(out=str(out), json=str(summary), overwrite=False)
    again = "the same command with --overwrite (it had written --out and --json)"
    assert _interrupted(args) == f"{again} resumes from 2 files {out}.partial*.json"


def test_an_output_that_would_overwrite_an_input_or_another_output_is_refused_before_any_work(tmp_path, monkeypatch):
    from nemesis_fast.certify import Smooth

    monkeypatch.setattr(Smooth, "certify", lambda *args, **kwargs: pytest.fail("certified before checking"))
    checkpoint = _checkpoint(tmp_path, "gda", sigma=0.3)
    kept = (tmp_path / "gda.pt").read_bytes()
    (tmp_path / "link.pt").symlink_to(tmp_path / "gda.pt")
    out, csv_partial = str(tmp_path / "c.csv"), str(tmp_path / "c.csv.partial.json")
    for extra, message in (
        (["--out", checkpoint], "--checkpoint and --out"),
        (["--out", str(tmp_path / "link.pt")], "--checkpoint and --out"),
        (["--out", out, "--json", checkpoint], "--checkpoint and --json"),
        (["--out", out, "--json", out], "--out and --json"),
        (["--out", out, "--json", csv_partial], "--json and the resume file of --out"),
    ):
        with pytest.raises(SystemExit, match=f"nemesis-fast certify: {message} name the same file .*; give them"):
            main(["certify", "--checkpoint", checkpoint, "--images", "1", "--n", "5", *extra])
    assert (tmp_path / "gda.pt").read_bytes() == kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gda.pt", "link.pt"]


def test_an_output_that_would_overwrite_a_test_file_is_refused_before_any_work(tmp_path, monkeypatch):
    import shutil

    from _support import write_cifar

    from nemesis_fast.certify import Smooth
    from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR

    monkeypatch.setattr(Smooth, "certify", lambda *args, **kwargs: pytest.fail("certified before checking"))
    checkpoint, mnist = _checkpoint(tmp_path, "gda", sigma=0.3), tmp_path / "mnist"
    shutil.copytree(MNIST_SAMPLE_DIR, mnist)
    cifar = write_cifar(tmp_path / "cifar")
    kept = {path: path.read_bytes() for path in [*mnist.iterdir(), *cifar.iterdir()]}
    for extra, message in (
        (["--data-dir", str(mnist), "--out", str(mnist / "t10k-labels-idx1-ubyte.gz")], "--data-dir's t10k-labels"),
        (["--data-dir", str(mnist), "--json", str(mnist / "t10k-images-idx3-ubyte.gz")], "--data-dir's t10k-images"),
        (["--out", str(MNIST_SAMPLE_DIR / "t10k-images-idx3-ubyte.gz")], "the MNIST sample's t10k-images"),
        (["--data-dir", str(cifar), "--json", str(cifar / "test_batch")], "--data-dir's test_batch"),
    ):
        with pytest.raises(SystemExit, match=f"nemesis-fast certify: {message}.* and --(out|json) name the same"):
            main(["certify", "--checkpoint", checkpoint, "--images", "1", "--n", "5", *extra])
    assert all(path.read_bytes() == data for path, data in kept.items())


def test_a_checkpoint_that_does_not_take_the_data_sets_images_is_refused_in_one_line(tmp_path):
    from _support import write_cifar

    checkpoint = _checkpoint(tmp_path, "gda", sigma=0.3)  # an MNIST network: 1x28x28 images
    cifar = write_cifar(tmp_path / "cifar")
    args = ["certify", "--checkpoint", checkpoint, "--dataset", "cifar10", "--data-dir", str(cifar), "--n", "5"]
    with pytest.raises(SystemExit, match="nemesis-fast certify: --checkpoint: its model does not take the data's 3x32"):
        main([*args, "--out", str(tmp_path / "c.csv")])


def test_a_checkpoint_of_a_model_of_ones_own_is_refused_saying_what_certifies_it(tmp_path):
    from torch import nn

    path = tmp_path / "own.pt"
    save_checkpoint(path, nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), recipe="gda", settings={"sigma": 0.3})
    with pytest.raises(SystemExit, match="records no architecture .*nemesis_fast.certify.Smooth"):
        main(["certify", "--checkpoint", str(path), "--n", "5", "--out", str(tmp_path / "c.csv")])
