"""`nemesis-fast certify` on several processes (torchrun; here two gloo processes on the CPU): the images shared out,
one CSV with the certificates one process gives, and an interrupted run resumed on any number of processes; and the
spellings of every command's options that torchrun passes on to the command."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from _processes import run_processes
from test_cli_certify import _checkpoint as gda_checkpoint
from test_cli_certify import records_written

from nemesis_fast.cli import build_parser, command_parsers, main

pytestmark = pytest.mark.slow


class Interrupted(Exception):
    pass


def _checkpoint(tmp_path: Path) -> str:
    return gda_checkpoint(tmp_path, "gda", sigma=0.4, clip=None)


def _argv(checkpoint: str, images: int) -> list[str]:
    return ["certify", "--checkpoint", checkpoint, "--images", str(images), "--N0", "4", "--N", "40", "--first", "3"]


def _process(argv: list[str], folder: str, stop_after_chunks: int | None) -> None:
    """main(argv) in this process, its output in folder/rank<r>.out; with `stop_after_chunks`, chunks of one image and
    an interruption in the chunk after that many."""
    import os

    from nemesis_fast import _cli_certify
    from nemesis_fast.certify import Smooth

    rank = os.environ["RANK"]
    if stop_after_chunks is not None:
        _cli_certify.FIRST_CHUNK_DRAWS, _cli_certify.CHUNK_SECONDS = 1, 0.0
        real, calls = Smooth.certify, []

        def dying(self, x, *rest, **kwargs):
            calls.append(len(x))
            if len(calls) > stop_after_chunks:
                raise Interrupted
            return real(self, x, *rest, **kwargs)

        Smooth.certify = dying
    with open(Path(folder) / f"rank{rank}.out", "w") as out, contextlib.redirect_stdout(out):
        try:
            main(argv)
        except Interrupted:
            print("interrupted")


def test_two_processes_share_the_images_and_write_the_csv_one_process_writes(tmp_path):
    checkpoint = _checkpoint(tmp_path)
    one, two = tmp_path / "one.csv", tmp_path / "two.csv"
    assert main([*_argv(checkpoint, 5), "--out", str(one), "--no-progress"]) == 0
    argv = [*_argv(checkpoint, 5), "--out", str(two), "--json", str(tmp_path / "two.json"), "--no-progress"]
    run_processes(_process, 2, argv, str(tmp_path), None)
    assert two.read_text() == one.read_text()
    summary = json.loads((tmp_path / "two.json").read_text())
    assert summary["processes"] == 2 and summary["images_this_run"] == 5
    printed = [(tmp_path / f"rank{r}.out").read_text() for r in range(2)]
    assert "on cpu (2 processes x " in printed[0] and printed[1] == ""  # process 0 reports, the other is silent
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []


def test_an_interrupted_run_resumes_on_another_number_of_processes(tmp_path, capsys):
    checkpoint = _checkpoint(tmp_path)
    whole, out = tmp_path / "whole.csv", tmp_path / "c.csv"
    assert main([*_argv(checkpoint, 10), "--out", str(whole), "--no-progress"]) == 0
    argv = [*_argv(checkpoint, 10), "--out", str(out), "--no-progress"]
    # two processes (shares 0..4 and 5..9) stop after one image each: 0 and 5 kept
    run_processes(_process, 2, argv, str(tmp_path), 1)
    records = sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name)
    assert records == ["c.csv.partial.0-of-2.json", "c.csv.partial.1-of-2.json"] and not out.exists()
    assert [json.loads((tmp_path / r).read_text())["first"] for r in records] == [0, 5]
    # three processes (0..2, 3..5, 6..9) go on from there and stop after one image more each: 1, 3 and 6 kept
    run_processes(_process, 3, argv, str(tmp_path), 1)
    assert len([p for p in tmp_path.iterdir() if "partial" in p.name]) == 5 and not out.exists()
    printed = [(tmp_path / f"rank{r}.out").read_text() for r in range(3)]
    assert all("interrupted" in p for p in printed)
    assert "resuming: 2 of 10 images" in printed[0] and not any("resuming" in p for p in printed[1:])  # process 0's
    # one process finishes: the certificates the others kept, and the images none of them certified (2, 4, 7..9)
    from nemesis_fast import _cli_certify
    from nemesis_fast.certify import Smooth

    real, calls = Smooth.certify, []

    def counted(self, x, *rest, **kwargs):
        calls.append((kwargs["offset"], len(x)))
        return real(self, x, *rest, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Smooth, "certify", counted)
        patch.setattr(_cli_certify, "FIRST_CHUNK_DRAWS", 1)  # a first chunk of one image, then larger ones
        assert main(argv) == 0
    assert "resuming: 5 of 10 images already certified (5 files" in capsys.readouterr().out
    assert calls == [(3 + 2, 1), (3 + 4, 1), (3 + 7, 3)] and out.read_text() == whole.read_text()
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def _process_with_own_seed(argv: list[str], folder: str) -> None:
    """main(argv) with --seed RANK: SystemExit's message in folder/rank<r>.out."""
    import os

    rank = os.environ["RANK"]
    try:
        main([*argv, "--seed", rank])
    except SystemExit as error:
        (Path(folder) / f"rank{rank}.out").write_text(str(error))


def test_processes_of_other_settings_are_refused_on_every_process(tmp_path):
    out = tmp_path / "c.csv"
    argv = [*_argv(_checkpoint(tmp_path), 4), "--out", str(out), "--no-progress"]
    run_processes(_process_with_own_seed, 2, argv, str(tmp_path))
    message = "nemesis-fast certify: the processes do not certify the same run: seed of process(es) 1 differ"
    assert all((tmp_path / f"rank{r}.out").read_text().startswith(message) for r in range(2))
    assert not out.exists() and not [p for p in tmp_path.iterdir() if "partial" in p.name]


def _process_with_own_data(argv: list[str], folder: str) -> None:
    """main(argv) with --data-dir folder/data<RANK>: "done", or SystemExit's message, in folder/rank<r>.out."""
    import os

    rank = os.environ["RANK"]
    try:
        main([*argv, "--data-dir", str(Path(folder) / f"data{rank}")])
        said = "done"
    except SystemExit as error:
        said = str(error)
    (Path(folder) / f"rank{rank}.out").write_text(said)


def test_processes_may_read_the_test_files_from_other_folders_but_not_other_test_images(tmp_path):
    """Each machine reads its own copy of the test files: the folders may differ, the images and labels may not."""
    import gzip
    import shutil

    from nemesis_fast.data.mnist import MNIST_SAMPLE_DIR

    for rank in range(2):
        shutil.copytree(MNIST_SAMPLE_DIR, tmp_path / f"data{rank}")
    out = tmp_path / "c.csv"
    argv = [*_argv(_checkpoint(tmp_path), 2), "--out", str(out), "--no-progress", "--overwrite"]
    run_processes(_process_with_own_data, 2, argv, str(tmp_path))
    assert [(tmp_path / f"rank{r}.out").read_text() for r in range(2)] == ["done", "done"] and out.is_file()
    labels = tmp_path / "data1" / "t10k-labels-idx1-ubyte.gz"  # process 1's label of image 3 (--first 3) another
    data = bytearray(gzip.decompress(labels.read_bytes()))
    data[8 + 3] = (data[8 + 3] + 1) % 10
    labels.write_bytes(gzip.compress(bytes(data)))
    run_processes(_process_with_own_data, 2, argv, str(tmp_path))
    message = "nemesis-fast certify: the processes do not certify the same run: test_images_sha256 of process(es) 1"
    assert all((tmp_path / f"rank{r}.out").read_text().startswith(message) for r in range(2))


def test_records_beside_out_are_refused_where_their_certificates_lie_beyond_the_run(tmp_path):
    checkpoint = _checkpoint(tmp_path)
    out = tmp_path / "c.csv"
    argv = [*_argv(checkpoint, 3), "--out", str(out), "--no-progress"]
    assert main([*argv, "--json", str(tmp_path / "c.json")]) == 0
    kept = records_written([*argv, "--overwrite"])  # the settings of this run, as a record holds them
    record = {**kept[0], "first": 2, "prediction": [0, 1], "radius": [0.1, 0.2]}  # images 2 and 3 of 3
    (tmp_path / "c.csv.partial.1-of-2.json").write_text(json.dumps(record))
    out.unlink()
    with pytest.raises(SystemExit, match="c.csv.partial.1-of-2.json does not hold the certificates of at most 3"):
        main(argv)
    for first in (-1, "0", None, True, 1.0):  # (one certificate each, which fits the run from a first of 0 to 2)
        one = {**record, "first": first, "prediction": [0], "radius": [0.1]}
        (tmp_path / "c.csv.partial.1-of-2.json").write_text(json.dumps(one))
        with pytest.raises(SystemExit, match="does not hold the certificates"):
            main(argv)
    assert not out.exists()
    # other names (the dots of --out's name are dots), and a folder: not records of this run, neither read nor removed
    others = ["c.csv.partial.x-of-2.json", "c.csv.partial.json.bak", "cxcsv.partial.json", "c.csv.partial.3-of-4.json"]
    for name in others[:-1]:
        (tmp_path / name).write_text("not a record")
    (tmp_path / others[-1]).mkdir()
    (tmp_path / "c.csv.partial.1-of-2.json").unlink()
    assert main(argv) == 0 and all((tmp_path / name).exists() for name in others)


def test_where_two_records_hold_an_image_the_first_by_name_counts(tmp_path, capsys):
    """Records of the same settings hold the same certificate of an image; where two differ (an edited record), the
    first by name counts, and the images they hold are not certified again."""
    out = tmp_path / "c.csv"
    argv = [*_argv(_checkpoint(tmp_path), 2), "--out", str(out), "--no-progress"]
    settings = records_written(argv)[-1]["settings"]
    out.unlink()
    for name, prediction, radius in (("0-of-2", [7, 1], [0.5, 0.25]), ("1-of-2", [3], [0.125])):
        record = {"settings": settings, "first": 0, "prediction": prediction, "radius": radius}
        (tmp_path / f"c.csv.partial.{name}.json").write_text(json.dumps(record))
    assert main(argv) == 0 and "resuming: 2 of 2 images already certified (2 files" in capsys.readouterr().out
    rows = [line.split(",")[2:4] for line in out.read_text().splitlines()[1:]]
    assert rows == [["7", "0.500000"], ["1", "0.250000"]]


def test_the_share_of_each_process_covers_every_image_once():
    from nemesis_fast._cli_certify import _share
    from nemesis_fast.parallel import Workers

    for images in range(0, 12):
        for world_size in range(1, 6):
            shares = [_share(images, Workers(rank=r, world_size=world_size)) for r in range(world_size)]
            assert [i for share in shares for i in share] == list(range(images))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_every_option_has_a_spelling_that_torchrun_passes_on():
    """torchrun's parser takes an option after the module for an abbreviation of its own where it is the start of
    one of its options (--n of --nnodes and --nproc-per-node, --start of --start-method), and fails: each option of
    the commands that run under torchrun has a spelling it passes on unchanged."""
    from torch.distributed.run import get_args_parser

    torchrun = get_args_parser()
    for command, parser in command_parsers(build_parser()).items():
        for action in parser._actions:
            spellings = [o for o in action.option_strings if o.startswith("--") and o != "--help"]
            passed = []
            for option in spellings:
                argv = ["--standalone", "-m", "nemesis_fast.cli", command, option, "1"]
                try:
                    parsed = torchrun.parse_args(argv)
                except SystemExit:
                    continue
                passed += [option] if parsed.training_script_args == [command, option, "1"] else []
            assert passed or not spellings, f"{command} {spellings}: torchrun passes none of them on"


def test_a_record_written_before_there_were_several_processes_still_resumes(tmp_path, capsys):
    """Records without a first index (one process, before torchrun runs): the certificates of the first images."""
    checkpoint = _checkpoint(tmp_path)
    out = tmp_path / "c.csv"
    argv = [*_argv(checkpoint, 3), "--out", str(out), "--no-progress"]
    kept = records_written(argv)  # the record of a finished run, as it was kept
    whole = out.read_text()
    out.unlink()
    older = {k: v[:2] if k in ("prediction", "radius") else v for k, v in kept[-1].items() if k != "first"}
    (tmp_path / "c.csv.partial.json").write_text(json.dumps(older))
    assert main(argv) == 0
    assert "resuming: 2 of 3 images already certified" in capsys.readouterr().out and out.read_text() == whole


def test_a_json_named_as_a_record_of_out_is_refused_before_any_work(tmp_path, monkeypatch):
    """The run would read it as a record, and remove it at its end (a process's record under torchrun)."""
    checkpoint = _checkpoint(tmp_path)
    for name in ("c.csv.partial.0-of-2.json", "c.csv.partial.11-of-12.json"):  # (c.csv.partial.json: refused before)
        with pytest.raises(SystemExit, match=f"--json: '.*{name}' is the name of a resume record of --out"):
            main([*_argv(checkpoint, 2), "--out", str(tmp_path / "c.csv"), "--json", str(tmp_path / name)])
    monkeypatch.chdir(tmp_path)  # the same folder spelt another way
    with pytest.raises(SystemExit, match="is the name of a resume record"):
        main([*_argv(checkpoint, 2), "--out", "c.csv", "--json", str(tmp_path / "c.csv.partial.1-of-3.json")])
    assert main([*_argv(checkpoint, 1), "--out", "c.csv", "--json", "c.csv.partial.json.txt", "--no-progress"]) == 0
    elsewhere = tmp_path / "elsewhere" / "c.csv.partial.0-of-2.json"  # a record's name, in another folder: no record
    argv = [*_argv(checkpoint, 1), "--out", "c.csv", "--json", str(elsewhere), "--no-progress", "--overwrite"]
    assert main(argv) == 0 and elsewhere.is_file()
