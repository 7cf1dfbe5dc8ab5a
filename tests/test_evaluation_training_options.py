"""The authors' training options in the evaluation (Keras' last-rows validation, the source's own epochs and first
images, FGSM examples of a CNN trained on the first images): each reaches the keys and the training of the models it
concerns, and only those."""

from __future__ import annotations

import pytest
import torch
from _evaluation_cases import AUTHORS_TINY, Interrupted, cell_values, write_config

from nemesis_fast.evaluation import evaluate, load_config
from nemesis_fast.evaluation.config import ConfigError
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.evaluation.train import SOURCE
from nemesis_fast.parallel import Workers


def test_the_authors_training_options_reach_the_models_keys(tmp_path):

    config = load_config(write_config(tmp_path, AUTHORS_TINY, out_dir=str(tmp_path / "o")))
    config.defense.vat_mode = "offline"
    models = Evaluation(config, Workers(), log=lambda m: None, progress=False).models
    assert models.key("vat")["recipe_settings"]["mode"] == "offline" and "source_model" in models.key("vat")
    gda = models.key("gda_brelu")["recipe_settings"]
    assert gda["fixed_set"] is True and gda["clip"] is None
    squeezed = models.key("feature_squeezing")  # trained on squeezed images: a model of its own
    assert squeezed["model"] == "feature_squeezing" and squeezed["squeeze_bits_in_training"] == 1
    assert models.architecture(SOURCE) == ("small_resnet", {"in_channels": 1, "input_size": 28})
    assert models.needed() == ["standard", "feature_squeezing", "gda_brelu", SOURCE]
    config.defense.squeeze_training = False  # at prediction only: the standard model behind the squeezer
    assert models.key("feature_squeezing") == models.key("standard")


def test_validation_on_last_rows_reaches_the_models_trained_on_an_enlarged_set_only(tmp_path):
    config = load_config(write_config(tmp_path, AUTHORS_TINY, out_dir=str(tmp_path / "o")))
    config.defenses = ["standard", "feature_squeezing", "vat", "gda_brelu"]
    config.defense.vat_mode = "offline"
    models = Evaluation(config, Workers(), log=lambda m: None, progress=False).models
    names = models.needed()
    before = {name: models.key(name) for name in names}
    assert all("augmented_validation" not in key["training"] for key in before.values())  # keys written before
    assert {models.budget(name)["val_rows"] for name in names} == {"images"}
    config.training.augmented_validation = "last_rows"
    enlarged = {"vat", "gda_brelu"}  # offline examples, GDA's fixed copies
    for name in names:
        key, val_rows = models.key(name), models.budget(name)["val_rows"]
        if name in enlarged:
            assert key["training"]["augmented_validation"] == "last_rows" and val_rows == "last", name
        else:
            assert key == before[name] and val_rows == "images", name
    config.defense.vat_mode = "online"  # trained on the images alone
    assert models.budget("vat")["val_rows"] == "images"


def test_the_sources_own_epochs_reach_its_key_and_its_training_only(tmp_path, monkeypatch):
    from nemesis_fast.evaluation import train as train_phase

    config = load_config(write_config(tmp_path, AUTHORS_TINY, out_dir=str(tmp_path / "o")))
    models = Evaluation(config, Workers(), log=lambda m: None, progress=False).models
    names = models.needed()
    before = {name: models.key(name) for name in names}
    assert all("source_epochs" not in key["training"] for key in before.values())  # keys written before it exist
    config.training.source_epochs = config.training.epochs  # the same budget: the same models
    assert {name: models.key(name) for name in names} == before
    config.training.source_epochs = config.training.epochs + 2
    after = {name: models.key(name) for name in names}
    assert after[train_phase.SOURCE]["training"]["epochs"] == config.training.epochs + 2
    assert all(after[name] == before[name] for name in names if name != train_phase.SOURCE)

    budgets = {}

    def record(model, data, recipe, **budget):
        budgets[len(budgets)] = budget["epochs"]
        raise Interrupted

    monkeypatch.setattr(train_phase, "train", record)
    for name, epochs in ((train_phase.SOURCE, config.training.epochs + 2), ("standard", config.training.epochs)):
        with pytest.raises(Interrupted):
            models._train(name, {})
        assert budgets.popitem()[1] == epochs, name


def test_the_sources_first_images_reach_its_key_and_its_training_only(tmp_path, monkeypatch):
    from nemesis_fast.evaluation import train as train_phase

    config = load_config(write_config(tmp_path, AUTHORS_TINY, out_dir=str(tmp_path / "o")))
    evaluation = Evaluation(config, Workers(), log=lambda m: None, progress=False)
    models, data = evaluation.models, evaluation.data
    names = models.needed()
    before = {name: models.key(name) for name in names}
    assert all("first_images" not in key["training"] for key in before.values())  # keys written before it exist
    config.training.source_train_images = 200
    after = {name: models.key(name) for name in names}
    assert after[train_phase.SOURCE]["training"]["first_images"] == 200
    assert all(after[name] == before[name] for name in names if name != train_phase.SOURCE)

    calls = []

    def record(model, rows, recipe, **budget):
        calls.append((rows, budget))
        raise Interrupted

    monkeypatch.setattr(train_phase, "train", record)
    for name in (train_phase.SOURCE, "standard"):
        with pytest.raises(Interrupted):
            models._train(name, {})
    (source_rows, source_budget), (rows, budget) = calls
    # The first 200 images: the first 180 train, the last 20 validate (as Keras' validation_split held them out).
    assert torch.equal(source_rows[0], data.train_images[:180]) and torch.equal(source_rows[1], data.train_labels[:180])
    val_x, val_y = source_budget["val_data"]
    assert torch.equal(val_x, data.train_images[180:200]) and torch.equal(val_y, data.train_labels[180:200])
    assert source_budget["val_fraction"] == 0.0 and source_budget["val_rows"] == "images"
    assert rows[0] is data.train_images and "val_data" not in budget and budget["val_fraction"] == 0.1
    first_cost = models.cost(train_phase.SOURCE)
    config.training.source_train_images = 0
    assert first_cost == pytest.approx(models.cost(train_phase.SOURCE) * 180 / 540)  # 600 images less 10%: 540
    config.training.source_train_images = 200

    config.training.validation_fraction = 0.0  # nothing held out: all 200 train, nothing validates
    with pytest.raises(Interrupted):
        models._train(train_phase.SOURCE, {})
    (rows, budget) = calls[-1]
    assert len(rows[1]) == 200 and budget["val_data"] is None and budget["val_fraction"] == 0.0


@pytest.mark.parametrize("images,validation", [(10_001, 0.1), (1, 0.9)])
@pytest.mark.parametrize(
    "section,key", [("training", "source_train_images"), ("defense", "fgsm_adversarial_source_images")]
)
def test_a_model_asked_for_more_first_images_than_there_are_fails_before_any_work(
    tmp_path, images, validation, section, key
):
    # The MNIST sample's 10,000 training images (train_samples unset); 1 image less 90%: none left to train on.
    text = AUTHORS_TINY.replace("train_samples = 600", f"validation_fraction = {validation}")
    text = text.replace(f"[{section}]", f"[{section}]\n{key} = {images}")
    with pytest.raises(ConfigError, match=f"{section}.{key} must be <= the"):
        evaluate(write_config(tmp_path, text), out_dir=str(tmp_path / "o"), log=False)
    assert not (tmp_path / "o").exists()


def test_fgsm_examples_from_a_cnn_on_the_first_images_reach_fgsm_adversarial_training_only(tmp_path, monkeypatch):
    from nemesis_fast.evaluation import train as train_phase

    config = load_config(write_config(tmp_path, AUTHORS_TINY, out_dir=str(tmp_path / "o")))
    config.defenses = ["standard", "feature_squeezing", "fgsm_adversarial", "vat", "gda_brelu"]
    config.defense.vat_mode = "offline"
    evaluation = Evaluation(config, Workers(), log=lambda m: None, progress=False)
    models, data = evaluation.models, evaluation.data
    before = {name: models.key(name) for name in models.needed()}
    assert train_phase.EXAMPLES_CNN not in before  # unset: the standard CNN's examples, every key as before
    assert before["fgsm_adversarial"]["source_model"] == before["standard"]

    config.defense.fgsm_adversarial_source_images = 200
    names = models.needed()
    defenses = ["feature_squeezing", "fgsm_adversarial", "vat", "gda_brelu"]
    assert names == ["standard", train_phase.EXAMPLES_CNN, *defenses, train_phase.SOURCE]
    after = {name: models.key(name) for name in names}
    examples_cnn = after[train_phase.EXAMPLES_CNN]
    assert examples_cnn["training"]["first_images"] == 200 and "first_images" not in after["standard"]["training"]
    assert {k: v for k, v in examples_cnn.items() if k not in ("model", "training")} == {
        k: v for k, v in after["standard"].items() if k not in ("model", "training")
    }
    assert after["fgsm_adversarial"]["source_model"] == examples_cnn
    assert all(after[name] == before[name] for name in before if name != "fgsm_adversarial")  # VAT's included
    needs = {job.name: job.needs for job in models.jobs()}
    assert needs["fgsm_adversarial"] == (train_phase.EXAMPLES_CNN,) and needs["vat"] == ("standard",)
    assert needs[train_phase.EXAMPLES_CNN] == ()

    calls = []

    def record(model, rows, recipe, **budget):
        calls.append((rows, recipe, budget))
        raise Interrupted

    monkeypatch.setattr(train_phase, "train", record)
    with pytest.raises(Interrupted):
        models._train(train_phase.EXAMPLES_CNN, {})
    rows, recipe, budget = calls[-1]  # the first 180 images train, the last 20 of the 200 validate
    assert recipe == "standard" and torch.equal(rows[0], data.train_images[:180])
    assert torch.equal(budget["val_data"][1], data.train_labels[180:200]) and budget["source_model"] is None
    state = {k: torch.full_like(v, 0.5) for k, v in models.build(train_phase.EXAMPLES_CNN).state_dict().items()}
    with pytest.raises(Interrupted):
        models._train("fgsm_adversarial", {train_phase.EXAMPLES_CNN: state})
    rows, recipe, budget = calls[-1]  # every training image, its examples crafted by the CNN given
    assert recipe == "fgsm_adversarial" and rows[0] is data.train_images
    assert all(torch.equal(v, state[k]) for k, v in budget["source_model"].state_dict().items())


def test_an_evaluation_trains_the_cnn_of_the_fgsm_examples_once(tmp_path, capsys):
    text = AUTHORS_TINY.replace(
        'defenses = ["standard", "feature_squeezing", "gda_brelu"]', 'defenses = ["fgsm_adversarial"]'
    ).replace("[defense]", "[defense]\nfgsm_adversarial_source_images = 100")
    config = write_config(tmp_path, text.replace('whitebox_attacks = ["fgsm", "pgd"]', 'whitebox_attacks = ["fgsm"]'))
    first = evaluate(config, out_dir=str(tmp_path / "a"), cache_dir=str(tmp_path / "cache"))
    assert (
        "training CNN of the FGSM training examples (mnist_cnn, recipe standard) on 90 images"
        in capsys.readouterr().err
    )
    assert {c.defense for c in first.cells} == {"fgsm_adversarial"} and "train fgsm_examples_cnn" in first.seconds
    again = evaluate(config, out_dir=str(tmp_path / "b"), cache_dir=str(tmp_path / "cache"))
    assert "\ntraining " not in capsys.readouterr().err  # both models from the cache
    assert cell_values(tmp_path / "a" / "results.json") == cell_values(tmp_path / "b" / "results.json")
    assert again.clean_accuracy == first.clean_accuracy
