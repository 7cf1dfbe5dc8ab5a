"""A file that is not a checkpoint is refused with its reason, not with torch's advice to load it with
weights_only=False (which runs the file's code); a bare state_dict is named as such, with the way to save one."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from nemesis_fast._io import check_checkpoint_path
from nemesis_fast.checkpoints import load_checkpoint, save_checkpoint
from nemesis_fast.models import mnist_cnn


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


@pytest.mark.parametrize("payload", [{}, {"weight": torch.zeros(2), "epoch": 3}], ids=["empty", "other-entries"])
def test_a_dict_not_all_tensors_gets_no_bare_state_dict_hint(tmp_path, payload):
    """The bare state_dict hint is for a dict of tensors only: not for an empty dict, nor one with other entries."""
    path = tmp_path / "d.pt"
    torch.save(payload, path)
    with pytest.raises(ValueError, match=r"not a nemesis_fast checkpoint \(needs the entries [a-z_, ]*\)$"):
        load_checkpoint(path)


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (OSError("cannot read\n  the second line"), r"\(OSError: cannot read the second line\); a checkpoint is"),
        (
            RuntimeError(
                "Weights only load failed.\n WeightsUnpickler error: \n\nCheck the documentation of torch.load"
            ),
            r"\(torch.load\(weights_only=True\) cannot read it: RuntimeError\); a checkpoint is",
        ),
    ],
    ids=["several-lines", "no-reason"],
)
def test_torch_loads_error_is_given_in_one_line(tmp_path, monkeypatch, error, reason):
    """torch.load's error of several lines is quoted on one; weights_only's refusal that gives no reason (nothing
    between "WeightsUnpickler error:" and torch's advice) names the error's type."""

    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr("nemesis_fast.checkpoints.torch_load_checked", fail)
    path = tmp_path / "m.pt"
    path.write_bytes(b"unread")
    with pytest.raises(ValueError, match=reason) as info:
        load_checkpoint(path)
    assert "\n" not in str(info.value) and "Check the documentation" not in str(info.value)


def test_a_checkpoint_in_the_home_folder_is_read_as_it_was_written(tmp_path, monkeypatch):
    """ "~/m.pt" is the home folder's file for save_checkpoint, for the command line's check of --checkpoint and
    --source, and for load_checkpoint (which looked for a file named "~/m.pt" once the check had passed)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    save_checkpoint("~/m.pt", mnist_cnn(), recipe="standard")
    check_checkpoint_path("~/m.pt", "--checkpoint")
    model, meta = load_checkpoint("~/m.pt")
    assert meta["recipe"] == "standard" and sum(p.numel() for p in model.parameters()) > 0
    with pytest.raises(ValueError, match="^--source: No such file: '~/missing.pt'$"):
        check_checkpoint_path("~/missing.pt", "--source")
