"""nemesis_fast.compat.art's CarliniL2Method and DeepFool beyond tests/test_compat_art.py, on tiny models (each test
runs in about a second): algorithm="paper" C&W against nemesis_fast's CarliniWagnerL2 for each setting the adapter
forwards (targeted, confidence, abort_early, chunks, the range searched without clip_values), its refusals and its
binary_search_steps=0 shortcut; ART's DeepFool at its edges (a single candidate class, postprocessing defences, a
class whose gradient equals the prediction's) against ART itself; and both classes' constructors against ART's."""

from __future__ import annotations

import importlib
import inspect

import numpy as np
import pytest
import torch
from _peers import art_classifier
from torch import nn

pytest.importorskip("art")
from art.attacks import evasion  # noqa: E402
from art.defences.postprocessor import HighConfidence  # noqa: E402
from art.defences.preprocessor import FeatureSqueezing  # noqa: E402
from art.estimators.classification import PyTorchClassifier  # noqa: E402

from nemesis_fast.attacks import CarliniWagnerL2  # noqa: E402
from nemesis_fast.attacks import DeepFool as PaperDeepFool  # noqa: E402

nfa = importlib.import_module("nemesis_fast.compat.art")

QUIET = {"verbose": False}
CLASSES = 4


def tiny_model(seed: int = 0) -> nn.Module:
    """A 16-12-4 tanh network with N(0, 1) weights: logits of a few units, which C&W moves in a few steps."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, CLASSES))
    with torch.no_grad():
        for layer in (model[1], model[3]):
            layer.weight.normal_(0.0, 1.0)
            layer.bias.zero_()
    return model.eval()


def tiny_classifier(model: nn.Module, **options) -> PyTorchClassifier:
    return art_classifier(model, (1, 4, 4), CLASSES, device_type="cpu", **options)


def images(n: int = 6, seed: int = 1, low: float = 0.1, high: float = 0.9) -> np.ndarray:
    """`n` images (n, 1, 4, 4) in [low, high] (away from the clip values unless asked)."""
    rng = np.random.default_rng(seed)
    return (low + (high - low) * rng.random((n, 1, 4, 4))).astype(np.float32)


def predictions(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.from_numpy(x)).argmax(1)


# CarliniL2Method(algorithm="paper")

CW = {"learning_rate": 0.05, "binary_search_steps": 3, "max_iter": 30, "initial_const": 0.5}


@pytest.mark.parametrize(
    "targeted, confidence, abort_early, batch_size",
    [(False, 0.0, True, 6), (False, 0.4, False, 4), (True, 0.0, False, 6), (True, 0.4, True, 4)],
)
def test_carlini_paper_is_carliniwagnerl2_with_every_setting(targeted, confidence, abort_early, batch_size):
    """Each of ART's settings reaches nemesis_fast's attack: confidence, abort_early, targeted (y the targets), and
    images that do not span the clip values (searched inside the clip values, not their own range)."""
    model = tiny_model()
    x = images()
    labels = predictions(model, x)
    targets = (labels + 1) % CLASSES
    settings = {**CW, "confidence": confidence, "targeted": targeted, "batch_size": batch_size}
    attack = nfa.CarliniL2Method(
        tiny_classifier(model), **settings, algorithm="paper", abort_early=abort_early, **QUIET
    )
    got = attack.generate(x, (targets if targeted else labels).numpy())
    paper = CarliniWagnerL2(
        model, confidence, CW["initial_const"], 3, 30, CW["learning_rate"], abort_early, targeted=targeted
    )
    x_t, chunks = torch.from_numpy(x), range(0, len(x), batch_size)
    expected = torch.cat(
        [
            paper(
                x_t[i : i + batch_size], labels[i : i + batch_size], targets[i : i + batch_size] if targeted else None
            )
            for i in chunks
        ]
    )
    assert got.dtype == np.float32 and (got != x).any()
    np.testing.assert_array_equal(got, expected.numpy())


def test_carlini_paper_without_clip_values_searches_the_images_range():
    """As ART (clip_min, clip_max = min(x), max(x)): the tanh box is the range of the whole batch."""
    model = tiny_model()
    x = images(low=0.2, high=0.7)
    labels = predictions(model, x)
    clf = tiny_classifier(model, clip_values=None)
    attack = nfa.CarliniL2Method(clf, **CW, batch_size=len(x), algorithm="paper", **QUIET)
    got = attack.generate(x, labels.numpy())
    clip = (float(x.min()), float(x.max()))
    expected = CarliniWagnerL2(model, 0.0, 0.5, 3, 30, 0.05, True, clip=clip)(torch.from_numpy(x), labels)
    assert (got != x).any() and got.min() >= clip[0] and got.max() <= clip[1]
    np.testing.assert_array_equal(got, expected.numpy())


def test_carlini_paper_refuses_what_it_cannot_serve():
    model = tiny_model()
    x = images(2)
    squeezed = tiny_classifier(model, preprocessing_defences=FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=4))
    calls = [
        (squeezed, x, {}, "not a PyTorch preprocessor"),
        (tiny_classifier(model), x, {"mask": np.ones((1, 4, 4), np.float32)}, "a mask was given"),
        (tiny_classifier(model), x.tolist(), {}, "x is not a numeric numpy array"),
    ]
    for clf, images_, kwargs, reason in calls:
        with pytest.raises(ValueError, match=f"algorithm='paper' cannot run here: .*{reason}"):
            nfa.CarliniL2Method(clf, algorithm="paper", **QUIET).generate(images_, None, **kwargs)
    with pytest.raises(ValueError, match="Target labels `y` need to be provided"):
        nfa.CarliniL2Method(tiny_classifier(model), targeted=True, algorithm="paper", **QUIET).generate(x)


def test_carlini_paper_without_a_search_step_returns_a_float32_copy_as_art():
    """binary_search_steps=0: ART returns x as float32, a copy (nemesis_fast's attack takes at least one step)."""
    model = tiny_model()
    clf = tiny_classifier(model)
    x = images(3)
    y = predictions(model, x).numpy()
    got = nfa.CarliniL2Method(clf, binary_search_steps=0, algorithm="paper", **QUIET).generate(x, y)
    expected = evasion.CarliniL2Method(clf, binary_search_steps=0, **QUIET).generate(x, y)
    assert got.dtype == expected.dtype == np.float32 and not np.shares_memory(got, x)
    np.testing.assert_array_equal(got, expected)
    # (ART's own fails on float64 images here: its success count predicts them in float64)
    wide = nfa.CarliniL2Method(clf, binary_search_steps=0, algorithm="paper", **QUIET).generate(x.astype(np.float64), y)
    assert wide.dtype == np.float32
    np.testing.assert_array_equal(wide, x)


# DeepFool


@pytest.mark.parametrize("nb_grads", [1, 2])
def test_deepfool_paper_takes_at_least_two_candidates(nb_grads):
    """The paper's DeepFool needs the prediction and one other class: nb_grads=1 (which ART accepts) runs it with
    2 candidates."""
    model = tiny_model()
    x = images()
    clf = tiny_classifier(model)
    got = nfa.DeepFool(clf, max_iter=10, epsilon=0.02, nb_grads=nb_grads, batch_size=6, algorithm="paper").generate(x)
    expected = PaperDeepFool(model, 10, 0.02, 2)(torch.from_numpy(x), predictions(model, x))
    assert (got != x).any()
    np.testing.assert_array_equal(got, expected.numpy())


def test_deepfool_with_one_candidate_class_gives_arts_images():
    """nb_grads=1: the candidates are the images' predictions; where the chunk's images all predict one class there
    is no other class to step towards, and ART returns them unchanged."""
    model = tiny_model(seed=3)
    x = images(12, seed=4)
    clf = tiny_classifier(model)
    labels = predictions(model, x)
    assert len(labels.unique()) > 1
    same = x[(labels == labels[0]).numpy()]
    for batch in (same, x):
        expected = evasion.DeepFool(clf, nb_grads=1, batch_size=len(batch), **QUIET).generate(batch)
        got = nfa.DeepFool(clf, nb_grads=1, batch_size=len(batch), **QUIET).generate(batch)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert (got != x).any()


def test_deepfool_falls_back_where_postprocessing_changes_the_outputs():
    """ART's DeepFool reads f_k from predict(), which HighConfidence (outputs under 0.25 set to 0) changes."""
    model = tiny_model()
    clf = tiny_classifier(model, postprocessing_defences=[HighConfidence()])
    x = images()
    expected = evasion.DeepFool(clf, max_iter=5, batch_size=6, **QUIET).generate(x)
    with pytest.warns(nfa.PeerFallbackWarning, match="postprocessing defences"):
        got = nfa.DeepFool(clf, max_iter=5, batch_size=6, **QUIET).generate(x)
    np.testing.assert_array_equal(got, expected)
    with pytest.raises(ValueError, match="algorithm='paper' cannot run here: .*postprocessing"):
        nfa.DeepFool(clf, algorithm="paper", **QUIET).generate(x)
    with pytest.warns(nfa.PeerFallbackWarning, match="a mask was given"):
        nfa.DeepFool(tiny_classifier(model), max_iter=2, **QUIET).generate(x, mask=np.ones((1, 4, 4), np.float32))


def test_deepfool_class_with_the_predictions_gradient_stops_the_image_as_art():
    """Class 1 has class 0's weights (its bias 1e-3 lower): ||w_1|| = 0, so ART's tolerance gives it the ratio
    |f_1| / 1e-7 = 1e4, below class 2's |f_2| / ||w_2|| = 3e4, and its step r = |f_1| / 1e-7 * w_1 = 0: every
    image stays where it is. Another tolerance, or none, picks class 2 (or a NaN step)."""
    w = torch.linspace(-1.0, 1.0, 4)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].weight.copy_(torch.stack([w, w, w + 5e-5]))
        model[1].bias.copy_(torch.tensor([5.0, 5.0 - 1e-3, 2.0]))
    clf = art_classifier(model, (1, 2, 2), 3, device_type="cpu")
    x = np.random.default_rng(0).uniform(0.2, 0.8, (4, 1, 2, 2)).astype(np.float32)
    expected = evasion.DeepFool(clf, max_iter=5, epsilon=0.02, batch_size=4, **QUIET).generate(x)
    got = nfa.DeepFool(clf, max_iter=5, epsilon=0.02, batch_size=4, **QUIET).generate(x)
    np.testing.assert_array_equal(expected, x)
    np.testing.assert_array_equal(got, expected)


# Constructors


@pytest.mark.parametrize(
    "name, added", [("CarliniL2Method", {"algorithm": "art", "abort_early": True}), ("DeepFool", {"algorithm": "art"})]
)
def test_constructors_take_arts_parameters_and_defaults(name, added):
    ours = inspect.signature(getattr(nfa, name)).parameters
    theirs = inspect.signature(getattr(evasion, name)).parameters
    assert list(ours)[: len(theirs)] == list(theirs)
    assert {k: p.default for k, p in ours.items() if k in theirs} == {k: p.default for k, p in theirs.items()}
    assert {k: ours[k].default for k in ours if k not in theirs} == added


@pytest.mark.parametrize(
    "name, settings",
    [
        (
            "CarliniL2Method",
            {
                "confidence": 0.5,
                "targeted": True,
                "learning_rate": 0.2,
                "binary_search_steps": 3,
                "max_iter": 7,
                "initial_const": 0.3,
                "max_halving": 2,
                "max_doubling": 4,
                "batch_size": 5,
                "verbose": False,
            },
        ),
        ("DeepFool", {"max_iter": 7, "epsilon": 0.3, "nb_grads": 3, "batch_size": 5, "verbose": False}),
    ],
)
def test_constructors_hand_each_setting_to_art(name, settings):
    """Positional, as ART's signature orders them, and by keyword: every setting lands in ART's attribute."""
    clf = tiny_classifier(tiny_model())
    theirs = getattr(evasion, name)(clf, **settings)
    for ours in (getattr(nfa, name)(clf, **settings), getattr(nfa, name)(clf, *settings.values())):
        assert {k: getattr(ours, k) for k in theirs.attack_params} == {
            k: getattr(theirs, k) for k in theirs.attack_params
        }


def test_carlini_paper_checks_the_labels_before_its_no_search_shortcut():
    """binary_search_steps=0 returns x, but, as ART, only after checking the labels: a targeted call without y, or
    a label beyond the classes, was answered with x where ART raises (an IndexError; the drop-in's ValueError names
    y)."""
    clf = tiny_classifier(tiny_model())
    x = images(2)
    paper = {"binary_search_steps": 0, "algorithm": "paper"}
    with pytest.raises(ValueError, match="Target labels `y` need to be provided"):
        nfa.CarliniL2Method(clf, targeted=True, **paper).generate(x)
    with pytest.raises(IndexError):
        evasion.CarliniL2Method(clf, binary_search_steps=0).generate(x, np.array([1, CLASSES]))
    with pytest.raises(ValueError, match=rf"y must hold class indices in \[0, {CLASSES}\)"):
        nfa.CarliniL2Method(clf, **paper).generate(x, np.array([1, CLASSES]))


@pytest.mark.parametrize(
    "setting, value, message",
    [
        ("learning_rate", 0.0, "learning_rate must be > 0.0, got 0.0"),
        ("confidence", -1.0, "confidence must be >= 0.0, got -1.0"),
        ("initial_const", 0.0, "initial_const must be > 0.0, got 0.0"),
    ],
)
def test_carlini_paper_refuses_its_bad_settings_when_they_are_set(setting, value, message):
    """algorithm="paper" checks the paper attack's settings at construction and in set_params (they were refused
    only at generate); ART's own C&W (algorithm="art") keeps ART's checks."""
    clf = tiny_classifier(tiny_model())
    with pytest.raises(ValueError, match=message):
        nfa.CarliniL2Method(clf, algorithm="paper", **{setting: value})
    with pytest.raises(ValueError, match=message):
        nfa.CarliniL2Method(clf, algorithm="paper").set_params(**{setting: value})
    art_default = nfa.CarliniL2Method(clf, **{setting: value})  # ART's own accepts it
    with pytest.raises(ValueError, match=message):
        art_default.set_params(algorithm="paper")
    nfa.CarliniL2Method(clf, algorithm="paper", binary_search_steps=0, **{setting: value})  # no search: unused


def test_carlini_default_hands_the_labels_to_arts_own():
    """ART's own C&W (algorithm="art") gets the labels given: an untargeted run moves each image away from y, here
    never the model's prediction, which y=None would take."""
    model = tiny_model()
    clf = tiny_classifier(model)
    x = images(4)
    y = (predictions(model, x).numpy() + 1) % CLASSES
    settings = {"max_iter": 10, "binary_search_steps": 3, "initial_const": 1.0, **QUIET}
    expected = evasion.CarliniL2Method(clf, **settings).generate(x, y)  # x itself: already away from y
    with pytest.warns(nfa.PeerFallbackWarning, match="algorithm='paper'"):
        result = nfa.CarliniL2Method(clf, **settings).generate(x, y)
    np.testing.assert_array_equal(result, expected)
    assert not np.array_equal(evasion.CarliniL2Method(clf, **settings).generate(x), expected)
