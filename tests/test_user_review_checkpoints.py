"""A file that is not a checkpoint is refused with its reason, not with torch's advice to load it with
weights_only=False (which runs the file's code); a bare state_dict is named as such, with the way to save one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nemesis_fast.checkpoints import load_checkpoint


def test_a_text_file_is_refused_without_the_weights_only_advice(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match="notes.pt: not a loadable checkpoint") as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "weights_only=True) cannot read it" in message and "save_checkpoint" in message
    assert "False" not in message and "\n" not in message


def test_a_pickled_module_is_refused_naming_its_class(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(nn.Linear(2, 2), path)
    with pytest.raises(ValueError, match="cannot read it: Unsupported global: .*Linear") as info:
        load_checkpoint(path)
    assert "False" not in str(info.value) and "add_safe_globals" not in str(info.value)


def test_an_empty_file_says_so(tmp_path):
    path = tmp_path / "empty.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"EOFError: the file is empty or cut short\)"):
        load_checkpoint(path)


def test_a_bare_state_dict_points_to_save_checkpoint(tmp_path):
    path = tmp_path / "sd.pt"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(ValueError, match="not a nemesis_fast checkpoint .*a bare state_dict: .*save_checkpoint"):
        load_checkpoint(path)
