"""`nemesis-fast certify`: the noise of an image depends on its index (so --start N certifies image N as a run from 0
does), a resume file of another --seed is refused, the data set follows the checkpoint's architecture, and the
summary's abstained is a fraction."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from nemesis_fast.checkpoints import save_checkpoint
from nemesis_fast.cli import main
from nemesis_fast.models import cifar_cnn, mnist_cnn


def _checkpoint(tmp_path, model=None) -> str:
    torch.manual_seed(0)
    path = tmp_path / "gda.pt"
    save_checkpoint(
        path, model if model is not None else mnist_cnn(), recipe="gda", settings={"sigma": 0.5, "clip": None}
    )
    return str(path)


def _rows(path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_start_certifies_an_image_with_the_noise_of_its_index(tmp_path):
    checkpoint = _checkpoint(tmp_path)
    base = ["certify", "--checkpoint", checkpoint, "--n0", "8", "--n", "200", "--alpha", "0.4", "--no-progress"]
    whole, one = tmp_path / "whole.csv", tmp_path / "one.csv"
    assert main([*base, "--images", "4", "--out", str(whole)]) == 0
    for start in (1, 2, 3):
        assert main([*base, "--start", str(start), "--images", "1", "--out", str(one), "--overwrite"]) == 0
        assert _rows(one) == _rows(whole)[start : start + 1]


class Interrupted(Exception):
    pass


def test_a_resume_file_of_another_seed_is_refused(tmp_path, monkeypatch):
    from nemesis_fast import _cli_certify
    from nemesis_fast.certify import Smooth

    checkpoint = _checkpoint(tmp_path)
    base = ["certify", "--checkpoint", checkpoint, "--images", "3", "--n0", "4", "--n", "20", "--no-progress"]
    out = tmp_path / "c.csv"
    monkeypatch.setattr(_cli_certify, "FIRST_CHUNK_DRAWS", 24)  # chunks of one image
    monkeypatch.setattr(_cli_certify, "CHUNK_SECONDS", 0.0)
    real, calls = Smooth.certify, []

    def dying(self, x, *rest, **kwargs):
        calls.append(len(x))
        if len(calls) == 2:
            raise Interrupted
        return real(self, x, *rest, **kwargs)

    monkeypatch.setattr(Smooth, "certify", dying)
    with pytest.raises(Interrupted):
        main([*base, "--seed", "0", "--out", str(out)])
    monkeypatch.setattr(Smooth, "certify", real)
    with pytest.raises(SystemExit, match=r"holds an interrupted run with other settings \(seed\)"):
        main([*base, "--seed", "1", "--out", str(out)])


def test_a_cifar_checkpoint_is_certified_on_cifar10(tmp_path):
    checkpoint = _checkpoint(tmp_path, cifar_cnn())
    with pytest.raises(SystemExit, match="nemesis-fast certify: --data-dir is required for cifar10"):
        main(["certify", "--checkpoint", checkpoint, "--images", "1", "--n", "5", "--out", str(tmp_path / "c.csv")])


def test_abstained_is_the_fraction_of_abstentions(tmp_path):
    # n = 10 at alpha 0.001: even 10 votes of 10 bound pA by 0.001 ** (1 / 10) = 0.5, so every image abstains.
    summary = tmp_path / "c.json"
    argv = ["certify", "--checkpoint", _checkpoint(tmp_path), "--images", "3", "--n0", "4", "--n", "10"]
    assert main([*argv, "--out", str(tmp_path / "c.csv"), "--json", str(summary), "--no-progress"]) == 0
    assert [r["prediction"] for r in _rows(tmp_path / "c.csv")] == ["-1"] * 3
    assert json.loads(summary.read_text())["abstained"] == 1.0
