"""temp_cached: a value computed once, even when several processes ask for it at the same moment; atomic writes' file
permissions; the checks of output paths."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest
import torch
from _support import damage_tensor_bytes

from nemesis_fast._io import (
    DamagedFileError,
    check_archive,
    check_distinct_files,
    check_output_file,
    check_output_folder,
    refuse_existing,
    same_command_again,
    temp_cached,
    torch_load_checked,
    torch_save_atomic,
    write_atomic,
)

ASK = """
import sys, time
import torch
from nemesis_fast._io import temp_cached

def compute():
    with open(sys.argv[1], "a") as log:
        log.write("computed\\n")
    time.sleep(1.0)  # long enough for the other processes to arrive while it computes
    return torch.arange(5)

print(temp_cached("nemesis_fast_io_test/value.pt", compute).tolist())
"""


def test_processes_that_ask_at_once_compute_the_value_once(tmp_path):
    log = tmp_path / "computed.log"
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    askers = [
        subprocess.Popen([sys.executable, "-c", ASK, str(log)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    outputs = [asker.communicate(timeout=120)[0] for asker in askers]
    assert all(asker.returncode == 0 for asker in askers)
    assert outputs == ["[0, 1, 2, 3, 4]\n"] * 3
    assert log.read_text() == "computed\n"


def test_refresh_computes_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr("tempfile.tempdir", None)  # tempfile reads TMPDIR again
    calls = []

    def compute():
        calls.append(1)
        return torch.tensor([len(calls)])

    assert temp_cached("value.pt", compute).item() == 1
    assert temp_cached("value.pt", compute).item() == 1
    assert temp_cached("value.pt", compute, refresh=True).item() == 2
    assert temp_cached("value.pt", compute).item() == 2
    assert len(calls) == 2


def test_atomic_writes_take_a_leading_tilde_as_the_home_folder(tmp_path, monkeypatch):
    """As the checks of output paths (check_output_file) take it: before, "~/r.json" passed the check and was
    written under a folder named "~" in the working folder."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert check_output_file("~/out/r.json", "--json") == tmp_path / "home" / "out" / "r.json"
    write_atomic("~/out/r.json", b"{}")
    torch_save_atomic("~/out/t.pt", torch.ones(2))
    assert (tmp_path / "home" / "out" / "r.json").read_bytes() == b"{}"
    assert torch.equal(torch.load(tmp_path / "home" / "out" / "t.pt"), torch.ones(2))
    assert not (tmp_path / "~").exists()


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="POSIX file permissions")
def test_atomic_writes_get_the_permissions_a_plain_open_gives(tmp_path, monkeypatch):
    (tmp_path / "plain").write_bytes(b"")
    write_atomic(tmp_path / "new", b"data")
    assert (tmp_path / "new").stat().st_mode == (tmp_path / "plain").stat().st_mode  # not mkstemp's 0o600
    monkeypatch.setattr("nemesis_fast._io._UMASK", 0o027)
    write_atomic(tmp_path / "grouped", b"data")
    assert stat.S_IMODE((tmp_path / "grouped").stat().st_mode) == 0o640
    os.chmod(tmp_path / "new", 0o604)  # a file replaced keeps its permissions
    write_atomic(tmp_path / "new", b"other")
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o604 and (tmp_path / "new").read_bytes() == b"other"


def test_output_paths_are_checked_before_a_long_job(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("user data")
    assert check_output_file(tmp_path / "new" / "deeper" / "m.pt", "--out") == tmp_path / "new" / "deeper" / "m.pt"
    assert check_output_folder(tmp_path / "out", "out_dir") == tmp_path / "out"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]  # nothing made
    for check, path, message in (
        (check_output_file, tmp_path, "--x: .* is a folder; give the name of a file"),
        (check_output_file, a_file / "m.pt", "--x: .*a_file' is a file, not a folder"),
        (check_output_folder, a_file, "--x: .*a_file' is a file, not a folder"),
        (check_output_folder, a_file / "sub", "--x: .*a_file' is a file, not a folder"),
        (check_output_file, tmp_path / "dangling" / "m.pt", "--x: .*dangling' is a link to a path that does not"),
        (check_output_file, tmp_path / "missing" / ".." / "a_folder", "--x: .* goes up .* a folder that does not"),
        (check_output_folder, tmp_path / "gone" / ".." / "a_folder", "--x: .* goes up .* a folder that does not"),
    ):
        (tmp_path / "a_folder").mkdir(exist_ok=True)
        if not (tmp_path / "dangling").is_symlink():
            (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
        with pytest.raises(ValueError, match=message):
            check(path, "--x")
    assert a_file.read_text() == "user data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "a_folder", "dangling"]  # nothing made


def test_paths_that_name_one_file_are_refused_naming_both_options(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "model.pt").write_bytes(b"weights")
    (tmp_path / "link.pt").symlink_to(tmp_path / "model.pt")
    os.link(tmp_path / "model.pt", tmp_path / "hard.pt")
    check_distinct_files({"--in": "model.pt", "--out": "other.pt", "--json": None, "--csv": ""})
    for other in ("model.pt", str(tmp_path / "model.pt"), "sub/../model.pt", "link.pt", "hard.pt"):
        with pytest.raises(ValueError, match="--in and --out name the same file .*; give them different files"):
            check_distinct_files({"--in": "model.pt", "--json": None, "--out": other})
    with pytest.raises(ValueError, match="--out and --json name the same file 'new.csv'"):
        check_distinct_files({"--in": "model.pt", "--out": "new.csv", "--json": "./new.csv"})  # not there yet
    assert (tmp_path / "model.pt").read_bytes() == b"weights" and not (tmp_path / "new.csv").exists()


def test_empty_outputs_are_refused_and_existing_files_replaced_only_on_request(tmp_path):
    """--out "" (an unset shell variable) passed every check and failed at the end, or saved nothing silently."""
    for check in (check_output_file, check_output_folder):
        with pytest.raises(ValueError, match="--x is empty; give"):
            check("", "--x")
    kept = tmp_path / "kept.csv"
    kept.write_text("a user's results")
    refuse_existing({"--json": None, "--y": tmp_path / "new.csv"})
    with pytest.raises(ValueError, match=f"--x: '{kept}' exists; pass --overwrite to replace it, or give another"):
        refuse_existing({"--x": str(kept)})


def test_a_write_protected_output_is_refused(tmp_path):
    """The rename that replaces a file needs only the folder's permission: a chmod 444 file was replaced."""
    kept = tmp_path / "kept.csv"
    kept.write_text("a user's results")
    kept.chmod(0o444)
    if os.access(kept, os.W_OK):  # as root, who may write it anyway
        pytest.skip("this user may write a write-protected file")
    with pytest.raises(ValueError, match=f"--x: '{kept}' is write-protected"):
        check_output_file(kept, "--x")


def test_a_failed_write_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    """A full disk said only "[Errno 28] No space left on device"."""
    path = tmp_path / "results.json"
    path.write_bytes(b"old")

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=f"No space left on device \\(writing {path}\\)"):
        write_atomic(path, b"new")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_temporary_files_a_killed_writer_left_are_removed_by_the_next_write(tmp_path):
    """SIGKILL during a write left a hidden temporary file as large as the checkpoint, never removed."""
    path = tmp_path / "model.pt"
    names = (".model.pt.a1b2c3d4.tmp", ".model.pt.e5f6g7h8.tmp", ".other.pt.i9j0k1l2.tmp", ".notes.tmp", "keep.tmp")
    for name in names:
        (tmp_path / name).write_bytes(b"half a checkpoint")
        if name != ".model.pt.e5f6g7h8.tmp":  # a live writer's: changed a moment ago
            os.utime(tmp_path / name, (time.time() - 2 * 86_400,) * 2)
    write_atomic(path, b"whole")
    kept = [".model.pt.e5f6g7h8.tmp", ".notes.tmp", "keep.tmp", "model.pt"]  # and the others' files
    assert sorted(p.name for p in tmp_path.iterdir()) == kept


def test_the_rerun_of_an_interrupted_command_names_overwrite_where_it_wrote_outputs(tmp_path):
    files = {f"--{name}": tmp_path / name for name in ("a", "b", "c")}
    assert same_command_again(files, overwrite=False) == "the same command"
    files["--a"].write_text("1")
    assert same_command_again(files, overwrite=False) == "the same command with --overwrite (it had written --a)"
    assert same_command_again(files, overwrite=True) == "the same command"
    files["--b"].write_text("1")
    files["--c"].write_text("1")
    assert same_command_again(files, overwrite=False).endswith("(it had written 3 of its outputs)")


def test_a_torch_file_damaged_inside_a_tensor_is_refused_not_read(tmp_path):
    """torch.load checks no CRC: it reads changed bytes as other numbers. torch_load_checked refuses them."""
    weights = torch.arange(64.0)
    torch_save_atomic(tmp_path / "w.pt", {"weights": weights})
    assert torch.equal(torch_load_checked(tmp_path / "w.pt")["weights"], weights)
    damage_tensor_bytes(tmp_path / "w.pt", weights)
    assert not torch.equal(torch.load(tmp_path / "w.pt", weights_only=True)["weights"], weights)
    with pytest.raises(
        DamagedFileError, match=r"w.pt' is damaged: its record 'archive/data/0' fails its CRC-32"
    ) as error:
        torch_load_checked(tmp_path / "w.pt")
    assert isinstance(error.value, ValueError) and error.value.record == "archive/data/0"


def test_files_written_without_crcs_or_in_the_legacy_format_are_left_to_torch_load(tmp_path):
    weights = torch.arange(64.0)
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({"weights": weights}, tmp_path / "no_crc.pt")
    finally:
        torch.serialization.set_crc32_options(True)
    torch.save({"weights": weights}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("no_crc.pt", "legacy.pt"):
        check_archive(tmp_path / name)
        assert torch.equal(torch_load_checked(tmp_path / name)["weights"], weights)
