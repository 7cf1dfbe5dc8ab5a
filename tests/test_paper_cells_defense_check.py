"""check_paper_cells.py's ``defense`` check end to end on a tiny evaluation: it retrains the defense with the
change asked for, judges the run's model and the variant on the run's own black-box adversarials, gives the
paper's value only at the table's eps, and writes what it printed."""

from __future__ import annotations

import json

import pytest
import torch
from _evaluation_cases import AUTHORS_TINY, write_config
from _support import load_script, mnist_root

from nemesis_fast.evaluation import load_config
from nemesis_fast.evaluation.paper import paper_value
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.parallel import Workers

check = load_script("check_paper_cells")


def _evaluation(tmp_path) -> Evaluation:
    path = write_config(tmp_path, AUTHORS_TINY, data_dir=str(mnist_root()), out_dir=str(tmp_path / "run"))
    return Evaluation(load_config(path), Workers(), log=lambda m: None, progress=False)


def _args(*argv: str):
    return check.command_line().parse_args(["--data-dir", "unused", "defense", *argv])


def test_defense_check_judges_the_run_and_the_variant_on_the_runs_adversarials(tmp_path):
    evaluation = _evaluation(tmp_path)
    folder = tmp_path / "run" / "checks"
    args = _args("gda_brelu", "--set", "sigma=0.6", "--columns", "fgsm", "--eps", "0.1,0.25", "--images", "12")
    report = check.check_defense(evaluation, args, folder)

    assert report["check"] == "gda_brelu-sigma0.6-images12"
    written = json.loads((folder / "gda_brelu-sigma0.6-images12.json").read_text())
    assert written == json.loads(json.dumps(report))
    run_model = evaluation.models.get("gda_brelu")
    variant = evaluation.models.build("gda_brelu")
    variant.load_state_dict(torch.load(folder / "gda_brelu-sigma0.6.pt", weights_only=True))
    variant.eval()
    assert json.loads((folder / "gda_brelu-sigma0.6.settings.json").read_text())["changes"]["settings"] == {
        "sigma": 0.6
    }
    assert any(not torch.equal(a, b) for a, b in zip(run_model.state_dict().values(), variant.state_dict().values()))

    attacks = evaluation.attacks
    x_test, y_test = attacks.test_chunk((0, len(evaluation.data.test_labels)))
    for name, model in (("run", run_model), ("variant", variant)):
        clean = 100 * (attacks.predict(model, x_test) == y_test).float().mean().item()
        assert report["models"][name]["clean_accuracy"] == pytest.approx(clean)
        assert 0 <= report["models"][name]["train_accuracy"] <= 100

    assert list(report["cells"]) == ["fgsm 0.1", "fgsm 0.25"]
    assert report["cells"]["fgsm 0.1"]["paper"] == paper_value("mnist", "gda_brelu", "fgsm") is not None
    assert report["cells"]["fgsm 0.25"]["paper"] is None  # the paper's cell is at the table's eps only
    for key, eps in (("fgsm 0.1", 0.1), ("fgsm 0.25", 0.25)):
        cell = report["cells"][key]
        assert cell["images"] == 12
        correct = {"run": [], "variant": []}
        for chunk in check.first_chunks(evaluation, "fgsm", 12):
            stop = check.chunk_stop(chunk, 12)
            x_adv = attacks.adversarial("fgsm", eps, chunk)["x_adv"][: stop - chunk[0]]
            _, y = attacks.test_chunk(chunk)
            for name, model in (("run", run_model), ("variant", variant)):
                correct[name].append(attacks.predict(model, x_adv) == y[: stop - chunk[0]])
        for name in ("run", "variant"):
            assert cell[name] == pytest.approx(100 * torch.cat(correct[name]).float().mean().item())

    # Judged again: the variant is loaded, not trained again, and gives the same cells.
    assert check.check_defense(evaluation, args, folder)["cells"] == report["cells"]


def test_defense_check_refuses_what_the_run_did_not_train(tmp_path):
    evaluation = _evaluation(tmp_path)
    for name in ("feature_squeezing", "vat"):
        with pytest.raises(SystemExit, match=f"one of the run's trained defenses, got '{name}'"):
            check.check_defense(evaluation, _args(name), tmp_path / "checks")
    assert not (tmp_path / "checks").exists()
