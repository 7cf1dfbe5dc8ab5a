"""The authors' experiment on CIFAR-10 (the paper_cifar10 preset) and the one option it needs that `paper` does not
set: the CIFAR-10 CNN's second convolution padded "same", as in the authors' scripts. (Its run on CIFAR-10 files:
test_evaluation.py.)"""

from __future__ import annotations

import pytest
from _evaluation_cases import config_differences

from nemesis_fast.evaluation import ConfigError, load_config, preset_path
from nemesis_fast.evaluation.runner import Evaluation
from nemesis_fast.models import cifar_cnn
from nemesis_fast.parallel import Workers

SYNTHETIC = {"synthetic": True, "test_samples": 16}


def test_the_cifar10_preset_is_paper_with_the_authors_cifar10_settings():
    paper = load_config(preset_path("paper"))
    cifar = load_config(preset_path("paper_cifar10"), SYNTHETIC)
    assert config_differences(paper.to_dict(), cifar.to_dict()) == {
        "dataset": ("mnist", "cifar10"),
        "synthetic": (False, True),
        "test_samples": (0, 16),
        "defense.squeeze_bits": (1, 3),  # featsqueeze3
        "training.cifar_conv2_padding": ("valid", "same"),  # cifar10_layers from bbbc14615
    }
    # The scripts' budgets, the same on both data sets: none is CIFAR-10's customary 8/255.
    assert (cifar.attack.fgsm_eps, cifar.attack.rfgsm_eps, cifar.attack.rfgsm_alpha) == (0.1, 0.3, 0.05)
    assert (cifar.defense.fgsm_adversarial_eps, cifar.defense.vat_eps, cifar.defense.gda_sigma) == (0.3, 2.1, 0.3)
    assert cifar.training.source_architecture == "small_resnet"
    text = preset_path("paper_cifar10").read_text()
    assert all(source in text for source in ("c7a44acc8", "bbbc14615", "featsqueeze3", "experiment2-cifar.ipynb"))


def test_the_cifar10_preset_is_refused_on_mnist_and_named_where_paper_is_refused_on_cifar10():
    with pytest.raises(ConfigError, match=r"dataset: mnist, but paper_cifar10.toml sets budgets for cifar10") as on:
        load_config(preset_path("paper_cifar10"), {"dataset": "mnist"})
    assert str(on.value).endswith("(quick, paper_headline)")  # the CIFAR-10 preset is named on CIFAR-10 only
    with pytest.raises(ConfigError, match=r"paper.toml sets budgets for mnist .* on CIFAR-10 is paper_cifar10$"):
        load_config(preset_path("paper"), {"dataset": "cifar10"})


def test_the_padding_option_is_checked_and_belongs_to_cifar10():
    with pytest.raises(ConfigError, match=r"training.cifar_conv2_padding must be one of valid, same; got 'full'"):
        load_config(overrides={**SYNTHETIC, "dataset": "cifar10", "training": {"cifar_conv2_padding": "full"}})
    with pytest.raises(ConfigError, match=r"training.cifar_conv2_padding sets the CIFAR-10 CNN's padding, but the "):
        load_config(overrides={"training": {"cifar_conv2_padding": "same"}})  # MNIST


def _keys(tmp_path, padding: str) -> dict:
    config = load_config(
        overrides={
            **SYNTHETIC,
            "dataset": "cifar10",
            "defenses": ["standard", "gda_brelu"],
            "out_dir": str(tmp_path / padding),
            "training": {"cifar_conv2_padding": padding},
        }
    )
    models = Evaluation(config, Workers(), log=lambda m: None, progress=False).models
    return {name: models.key(name) for name in ("standard", "gda_brelu")}


def test_the_padding_is_in_the_models_keys_only_where_it_is_same(tmp_path):
    valid, same = _keys(tmp_path, "valid"), _keys(tmp_path, "same")
    for name in ("standard", "gda_brelu"):
        # "valid": the keys of the models trained before the option existed
        assert "conv2_padding" not in valid[name]["architecture_kwargs"], name
        assert "cifar_conv2_padding" not in valid[name]["training"], name
        assert same[name]["architecture_kwargs"]["conv2_padding"] == "same", name
        assert {k: v for k, v in same[name].items() if k != "architecture_kwargs"} == {
            k: v for k, v in valid[name].items() if k != "architecture_kwargs"
        }
    assert same["gda_brelu"]["architecture_kwargs"]["t"] == 1.0


@pytest.mark.parametrize(("padding", "features", "parameters"), [("valid", 7, 1_592_902), ("same", 8, 2_072_902)])
def test_the_cifar_cnns_second_convolution_padding(padding, features, parameters):
    model = cifar_cnn(conv2_padding=padding)
    assert model[4].padding == ((1, 1) if padding == "same" else (0, 0))
    assert model[9].in_features == 64 * features * features
    assert sum(p.numel() for p in model.parameters()) == parameters
    assert ("conv2_padding" in model.architecture["kwargs"]) == (padding == "same")  # default: the record as before


def test_the_cifar_cnns_padding_and_smallest_input_are_checked():
    with pytest.raises(ValueError, match=r"conv2_padding must be one of 'valid', 'same'; got 'full'"):
        cifar_cnn(conv2_padding="full")
    assert cifar_cnn(conv2_padding="same", input_size=4).architecture["kwargs"]["input_size"] == 4
    with pytest.raises(ValueError, match=r"input_size 3 is too small .* conv2_padding 'same' \(at least 4\)"):
        cifar_cnn(conv2_padding="same", input_size=3)
    with pytest.raises(ValueError, match=r"input_size 7 is too small .* conv2_padding 'valid' \(at least 8\)"):
        cifar_cnn(input_size=7)
