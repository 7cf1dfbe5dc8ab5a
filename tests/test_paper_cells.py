"""scripts/paper_cells.py and check_paper_cells.py's command line: the cells a check judges, the names of its
variants, and the rule that a check never overwrites the results of another."""

import argparse
import json

import pytest
from _support import load_script

cells = load_script("paper_cells")
check = load_script("check_paper_cells")


def test_check_columns_sweep_fgsm_and_rfgsm_only():
    assert cells.table_columns("fgsm,rfgsm", None) == [("fgsm", 0.1), ("rfgsm", 0.3)]
    assert cells.table_columns("fgsm,deepfool", "0.1,0.2") == [("fgsm", 0.1), ("fgsm", 0.2), ("deepfool", None)]
    assert [c for c, _ in cells.table_columns(None, None)] == ["fgsm", "rfgsm", "deepfool", "jsma", "cw"]


def _args(*argv: str) -> argparse.Namespace:
    return check.command_line().parse_args(["--data-dir", "unused", *argv])


def test_a_check_never_overwrites_the_results_of_another(tmp_path):
    args = _args("source", "seed:1", "--images", "100", "--columns", "fgsm")
    path = cells.results_file(tmp_path / "checks", "source-seed1", args)
    assert path == tmp_path / "checks" / "source-seed1.json" and path.parent.is_dir()
    path.write_text(json.dumps({"arguments": cells.check_arguments(args), "cells": {"fgsm 0.1": {}}}))
    # The same check again (a rerun, or another --threads or --data-dir) may write it again.
    rerun = _args("--threads", "2", "source", "seed:1", "--images", "100", "--columns", "fgsm")
    assert cells.results_file(tmp_path / "checks", "source-seed1", rerun) == path
    for other in (
        _args("source", "seed:1", "--images", "200", "--columns", "fgsm"),
        _args("source", "seed:1", "--images", "100", "--columns", "rfgsm"),
        _args("--preset", "paper_table", "source", "seed:1", "--images", "100", "--columns", "fgsm"),
    ):
        with pytest.raises(SystemExit, match="holds the results of another check .* move it away"):
            cells.results_file(tmp_path / "checks", "source-seed1", other)
    # A file written before the checks recorded their arguments is never overwritten either.
    path.write_text(json.dumps({"cells": {}}))
    with pytest.raises(SystemExit, match="arguments not recorded"):
        cells.results_file(tmp_path / "checks", "source-seed1", args)
    assert json.loads(path.read_text()) == {"cells": {}}


def test_source_variants_are_named_before_any_training():
    assert check.source_tag(_args("source", "seed:3", "--epochs", "1")) == "source-seed3-epochs1"
    assert check.source_tag(_args("source", "keras", "--train-images", "1000")) == "source-keras-first1000"
    assert check.source_tag(_args("source", "check:standard-first1000")) == "source-checkstandard-first1000"
    with pytest.raises(SystemExit, match="model: and check: name a trained one"):
        check.source_tag(_args("source", "model:standard", "--epochs", "1"))
    for bad in ("seed:x", "resnet", "seed:"):
        with pytest.raises(SystemExit, match="must be keras, seed:N, model:NAME or check:TAG"):
            check.source_tag(_args("source", bad))


def test_results_names_carry_the_preset_and_the_label():
    assert cells.results_name("source-seed1", _args("source", "seed:1")) == "source-seed1"
    table = _args("--preset", "paper_table", "--label", "judges", "source", "seed:1")
    assert cells.results_name("source-seed1", table) == "source-seed1-paper_table-judges"
    assert cells.results_name("gda-epochs1", _args("--label", "x", "defense", "gda")) == "gda-epochs1-x"


def test_an_unfinished_check_is_judged_with_its_best_weights_so_far(tmp_path):
    from types import SimpleNamespace

    import torch
    from torch import nn

    from nemesis_fast.resume import FileCheckpoint

    evaluation = SimpleNamespace(models=SimpleNamespace(build=lambda name: nn.Linear(2, 2)))
    with pytest.raises(SystemExit, match="no epoch checkpoint .*gda-x.ckpt"):
        cells.unfinished_variant(evaluation, "gda", "gda-x", tmp_path)
    best, latest = nn.Linear(2, 2).state_dict(), nn.Linear(2, 2).state_dict()
    state = {"epoch": 9, "best_epoch": 7, "best_state": best, "model": latest}
    FileCheckpoint(tmp_path / "gda-x.ckpt").save(state)
    model, part = cells.unfinished_variant(evaluation, "gda", "gda-x", tmp_path)
    assert part == "unfinished-epoch7of9" and not model.training
    torch.testing.assert_close(model.weight, best["weight"])
    FileCheckpoint(tmp_path / "gda-x.ckpt").save({**state, "best_state": None, "best_epoch": None})
    model, part = cells.unfinished_variant(evaluation, "gda", "gda-x", tmp_path)  # no validation: the latest
    assert part == "unfinished-epoch9of9"
    torch.testing.assert_close(model.weight, latest["weight"])
