"""_io's checks where the tests run as root (who may write anywhere): a folder the process may not write is refused
(os.access answering as for another user), and a digest that does not depend on the order of the settings."""

from __future__ import annotations

import os

import pytest

from nemesis_fast import _io
from nemesis_fast._io import check_output_file, check_output_folder, settings_digest


def test_a_folder_this_process_may_not_write_is_refused(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    monkeypatch.setattr(_io.os, "access", lambda path, mode: os.fspath(path) != os.fspath(locked))
    with pytest.raises(ValueError, match=r"out: the folder .*locked' is not writable"):
        check_output_folder(locked, "out")
    with pytest.raises(ValueError, match=r"out: the folder .*new' cannot be made: the folder .*locked' is not"):
        check_output_folder(locked / "new", "out")
    with pytest.raises(ValueError, match="is not writable"):
        check_output_file(locked / "file.pt", "out")
    assert check_output_folder(tmp_path / "free", "out") == tmp_path / "free"


def test_the_settings_digest_does_not_depend_on_key_order():
    assert settings_digest({"a": 1, "b": {"x": 2, "y": 3}}) == settings_digest({"b": {"y": 3, "x": 2}, "a": 1})
    assert settings_digest({"a": 1, "b": 2}) != settings_digest({"a": 2, "b": 1})
