"""nemesis_fast.compat.art against ART itself, on the CNN trained on real MNIST (64 test images) behind ART's
PyTorchClassifier, with and without mean/std preprocessing: the same images as ART for every same-algorithm class
(untargeted and targeted, y as indices, one-hot or None), algorithm="paper" equal to nemesis_fast's attacks, the
fallback to ART's own implementation (warned, ART's result), argument checks, GaussianAugmentation as a PyTorch
preprocessor, and the ImportError without ART. The peer's results are cached across sessions (see _peers.py)."""

from __future__ import annotations

import copy
import importlib
import itertools
import sys

import numpy as np
import pytest
import torch
from _peers import (
    MEAN,
    STD,
    art_classifier,
    clamped_linear_model,
    fingerprint,
    no_fallback,
    peer_result,
    version_warnings,
)
from torch import nn

art = pytest.importorskip("art")
from art.attacks import evasion  # noqa: E402
from art.defences.postprocessor import HighConfidence  # noqa: E402
from art.defences.preprocessor import FeatureSqueezing, SpatialSmoothing  # noqa: E402
from art.defences.preprocessor import GaussianAugmentation as ArtGaussianAugmentation  # noqa: E402
from art.estimators.classification import PyTorchClassifier  # noqa: E402

from nemesis_fast.attacks import JSMA, CarliniWagnerL2  # noqa: E402
from nemesis_fast.attacks import DeepFool as PaperDeepFool  # noqa: E402

nfa = importlib.import_module("nemesis_fast.compat.art")

BATCH = 64
QUIET = {"verbose": False}
# (class, settings, targeted): small budgets, two chunks of 32 images each.
CASES = {
    "FGM-inf": ("FastGradientMethod", {"eps": 0.2, "batch_size": 32}),
    "FGM-inf-random-init": ("FastGradientMethod", {"eps": 0.2, "num_random_init": 1, "batch_size": 32}),
    "FGM-2": ("FastGradientMethod", {"norm": 2, "eps": 2.0, "batch_size": 32}),
    "FGM-1": ("FastGradientMethod", {"norm": 1, "eps": 5.0, "batch_size": 32}),
    "PGD-inf": (
        "ProjectedGradientDescent",
        {"eps": 0.3, "eps_step": 0.05, "max_iter": 5, "num_random_init": 1, "batch_size": 32, **QUIET},
    ),
    "PGD-2-restarts": (
        "ProjectedGradientDescent",
        {"norm": 2, "eps": 2.0, "eps_step": 0.5, "max_iter": 4, "num_random_init": 2, "batch_size": 32, **QUIET},
    ),
    "PGD-momentum": (
        "ProjectedGradientDescent",
        {"eps": 0.3, "eps_step": 0.05, "max_iter": 4, "decay": 0.9, "batch_size": 32, **QUIET},
    ),
    "BIM": ("BasicIterativeMethod", {"eps": 0.3, "eps_step": 0.05, "max_iter": 5, "batch_size": 32, **QUIET}),
    "DeepFool-subset": ("DeepFool", {"max_iter": 3, "nb_grads": 4, "batch_size": 32, **QUIET}),
    "DeepFool-all": ("DeepFool", {"max_iter": 3, "epsilon": 0.02, "batch_size": 32, **QUIET}),
    "JSMA": ("SaliencyMapMethod", {"theta": 0.2, "gamma": 0.03, "batch_size": 32, **QUIET}),
}
TOLERANCE = {"DeepFool": 1e-5}  # ART sums norms and class gradients in another order; the rest is exact


def equality_cases() -> list:
    cases = []
    for case, (name, _) in CASES.items():
        if name == "DeepFool":
            modes = ["untargeted"]  # ART's DeepFool ignores y
        elif name == "SaliencyMapMethod":
            modes = ["targeted", "random-targets"]  # always targeted; y=None draws random targets
        else:
            modes = ["untargeted", "targeted"]
        if case == "FGM-inf":
            modes += ["one-hot", "predictions"]
        for mode in modes:
            for normalised in (False, True):
                cases.append(
                    pytest.param(case, mode, normalised, id=f"{case}-{mode}-{'norm' if normalised else 'raw'}")
                )
    return cases


@pytest.fixture(scope="module")
def model(mnist_model):
    return copy.deepcopy(mnist_model).eval()


@pytest.fixture(scope="module")
def batch(mnist_test_data):
    x, y = mnist_test_data
    return x[:BATCH].numpy().copy(), y[:BATCH].numpy().copy()


def classifier(model: nn.Module, *, normalised: bool = False, **options) -> PyTorchClassifier:
    options = {"clip_values": (0.0, 1.0), "device_type": "cpu", "loss": nn.CrossEntropyLoss(), **options}
    if normalised:
        options["preprocessing"] = (MEAN, STD)
    loss = options.pop("loss")
    return PyTorchClassifier(model, loss, (1, 28, 28), 10, **options)


def labels_for(mode: str, y: np.ndarray) -> np.ndarray | None:
    targets = (y + 3) % 10
    return {
        "untargeted": y,
        "one-hot": np.eye(10, dtype=np.float32)[y],
        "predictions": None,
        "targeted": targets,
        "random-targets": None,
    }[mode]


def seeded(attack, x: np.ndarray, y: np.ndarray | None, seed: int = 0, **kwargs) -> np.ndarray:
    np.random.seed(seed)
    torch.manual_seed(seed)
    return attack.generate(x, y, **kwargs)


def art_result(key_parts: tuple, attack, x, y, model: nn.Module, **kwargs) -> np.ndarray:
    key = fingerprint("art", art.__version__, *key_parts, model.state_dict(), x, y if y is not None else "none")
    return peer_result(key, lambda: seeded(attack, x, y, **kwargs))


@pytest.mark.slow
@pytest.mark.parametrize("case, mode, normalised", equality_cases())
def test_same_images_as_art(case, mode, normalised, model, batch):
    name, settings = CASES[case]
    x, y = batch
    clf = classifier(model, normalised=normalised)
    targeted = mode == "targeted" and name != "SaliencyMapMethod"
    options = {**settings, **({"targeted": True} if targeted else {})}
    labels = labels_for(mode, y)
    expected = art_result((case, mode, normalised, options), getattr(evasion, name)(clf, **options), x, labels, model)
    ours = getattr(nfa, name)(clf, **options)
    with no_fallback():  # served, not fallen back
        result = seeded(ours, x, labels)
    assert isinstance(ours, getattr(evasion, name))
    assert result.dtype == np.float32 and result.shape == x.shape
    np.testing.assert_allclose(result, expected, rtol=0, atol=TOLERANCE.get(name, 1e-6))
    assert (result != x).reshape(len(x), -1).any(1).mean() > 0.5  # the attack did act


def test_algorithm_paper_is_nemesis_fasts_attack(model, batch):
    x, y = batch[0][:16], batch[1][:16]
    clf = classifier(model)
    x_t = torch.from_numpy(x)
    predictions = model(x_t).argmax(1)
    ours = nfa.DeepFool(clf, max_iter=20, epsilon=0.02, nb_grads=5, batch_size=16, algorithm="paper").generate(x)
    expected = PaperDeepFool(model, 20, 0.02, 5)(x_t, predictions)
    np.testing.assert_array_equal(ours, expected.numpy())
    targets = (y + 3) % 10
    ours = nfa.SaliencyMapMethod(clf, theta=1.0, gamma=0.05, batch_size=16, algorithm="paper").generate(x, targets)
    todo = torch.from_numpy(targets) != predictions
    expected = x_t.clone()
    expected[todo] = JSMA(model, 1.0, 0.05)(x_t[todo], predictions[todo], torch.from_numpy(targets)[todo])
    np.testing.assert_array_equal(ours, expected.numpy())
    settings = {"confidence": 0.0, "learning_rate": 0.1, "binary_search_steps": 2, "max_iter": 20, "initial_const": 1.0}
    cw = nfa.CarliniL2Method(clf, **settings, batch_size=16, algorithm="paper", abort_early=False)
    paper = CarliniWagnerL2(model, 0.0, 1.0, 2, 20, 0.1, False)
    np.testing.assert_array_equal(cw.generate(x, y), paper(x_t, torch.from_numpy(y)).numpy())


def test_carlini_default_runs_arts_line_search_with_a_warning(model, batch):
    x, y = batch[0][:16], batch[1][:16]
    clf = classifier(model)
    settings = {"max_iter": 2, "binary_search_steps": 2, "batch_size": 16, **QUIET}
    expected = art_result(("CarliniL2Method", settings), evasion.CarliniL2Method(clf, **settings), x, y, model)
    with pytest.warns(nfa.PeerFallbackWarning, match="algorithm='paper'"):
        result = seeded(nfa.CarliniL2Method(clf, **settings), x, y)
    np.testing.assert_array_equal(result, expected)


def fallback_cases() -> list:
    """(attack, its settings, classifier options, generate() keywords, the reason the warning gives)."""
    pixels = (np.zeros((1, 28, 28), np.float32), np.ones((1, 28, 28), np.float32))
    fgm = ("FastGradientMethod", {"eps": 0.2, "batch_size": 16})
    smoothing = {"preprocessing_defences": SpatialSmoothing(window_size=3, clip_values=(0.0, 1.0))}
    pgd = {"eps": 0.3, "eps_step": 0.1, "max_iter": 2, "random_eps": True, **QUIET}
    # Per-feature eps (ART takes an array eps only with an array eps_step): the left half of each image moves less.
    eps = np.full((1, 28, 28), 0.3, np.float32)
    eps[..., :14] = 0.1
    array_eps = {"eps": eps, "eps_step": eps.copy(), "batch_size": 16}
    pgd_array_eps = {"eps": eps, "eps_step": eps / 3, "max_iter": 2, "batch_size": 16, **QUIET}
    return [
        pytest.param(*fgm, {"loss": nn.MultiMarginLoss()}, {}, "not CrossEntropyLoss", id="loss"),
        pytest.param(*fgm, {"clip_values": pixels}, {}, "per-feature clip_values", id="per-feature-clip"),
        pytest.param(*fgm, {}, {"mask": np.ones((1, 28, 28), np.float32)}, "mask", id="mask"),
        pytest.param("FastGradientMethod", {"eps": 0.2, "minimal": True}, {}, {}, "minimal", id="minimal"),
        pytest.param(
            "DeepFool",
            {"max_iter": 2, "batch_size": 16, **QUIET},
            smoothing,
            {},
            "not a PyTorch",
            id="numpy-preprocessing",
        ),
        pytest.param("ProjectedGradientDescent", pgd, {}, {}, "random_eps", id="random-eps"),
        pytest.param("FastGradientMethod", array_eps, {}, {}, "an array eps", id="fgm-array-eps"),
        pytest.param("ProjectedGradientDescent", pgd_array_eps, {}, {}, "an array eps", id="pgd-array-eps"),
        pytest.param(
            "BasicIterativeMethod",
            {"eps": 0.1, "eps_step": 0.05, "max_iter": 2, **QUIET},
            {"loss": nn.MultiMarginLoss()},
            {},
            "not CrossEntropyLoss",
            id="bim-loss",
        ),
    ]


@pytest.mark.parametrize("name, settings, options, kwargs, reason", fallback_cases())
def test_unserved_calls_warn_and_return_arts_own_result(name, settings, options, kwargs, reason, model, batch):
    x, y = batch[0][:16], batch[1][:16]
    clf = classifier(model, **options)
    expected = seeded(getattr(evasion, name)(clf, **settings), x, y, **kwargs)
    with pytest.warns(nfa.PeerFallbackWarning, match=reason):
        result = seeded(getattr(nfa, name)(clf, **settings), x, y, **kwargs)
    np.testing.assert_array_equal(result, expected)


def test_a_classifier_subclass_with_its_own_method_that_attacks_call_is_handed_to_arts_attack(model, batch):
    """A PyTorchClassifier subclass with its own predict, loss_gradient, class_gradient or compute_loss (any one of
    them) is another classifier than its model's logits: the drop-in attacks run ART's own code on it."""
    x, y = batch[0][:4], batch[1][:4]
    for method in ("predict", "loss_gradient", "class_gradient", "compute_loss"):
        arts = getattr(PyTorchClassifier, method)  # (its own, which calls ART's)
        cls = type("Own", (PyTorchClassifier,), {method: lambda self, *a, _arts=arts, **kw: _arts(self, *a, **kw)})
        clf = cls(model, nn.CrossEntropyLoss(), (1, 28, 28), 10, clip_values=(0.0, 1.0), device_type="cpu")
        with pytest.warns(nfa.PeerFallbackWarning, match=f"the estimator is a Own, with its own {method}; running"):
            result = seeded(nfa.FastGradientMethod(clf, eps=0.1), x, y)
        np.testing.assert_array_equal(result, seeded(evasion.FastGradientMethod(clf, eps=0.1), x, y))


def test_algorithm_paper_refuses_what_it_cannot_serve_and_runs_unbounded_without_clip_values(model, batch):
    squeezed = classifier(model, preprocessing_defences=FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=4))
    with pytest.raises(ValueError, match="algorithm='paper' cannot run here"):
        nfa.DeepFool(squeezed, algorithm="paper").generate(batch[0][:2])
    unbounded = classifier(model, clip_values=None)  # refused until the attacks took clip=None
    x, targets = batch[0][:4], (np.asarray(batch[1][:4]) + 1) % 10
    images = torch.from_numpy(x)
    with torch.no_grad():
        predictions = model(images).argmax(1)
    got = nfa.SaliencyMapMethod(unbounded, theta=1.0, gamma=0.1, algorithm="paper").generate(x, targets)
    expected = JSMA(model, 1.0, 0.1, clip=None)(images, predictions, torch.from_numpy(targets).long())
    np.testing.assert_array_equal(got, expected.numpy())
    assert got.max() > 1.0  # not clipped: theta moves features past 1
    deepfool = nfa.DeepFool(unbounded, algorithm="paper").generate(x)
    expected = PaperDeepFool(model, 100, 1e-6, 10, clip=None)(images, predictions)  # ART's defaults
    np.testing.assert_allclose(deepfool, expected.numpy(), rtol=0, atol=1e-6)


def test_deepfool_with_a_candidate_subset_gives_arts_images():
    """With nb_grads below the number of classes ART 1.20 reads output_p at p's position among the candidates; the
    adapter does the same (here the images predict 5 and 7, which sit at positions 2 and 3 of {0, 4, 5, 7})."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        model[3].bias.copy_(torch.tensor([0.0, 0, 0, 0, 0, 0.3, 0, 0.25, 0, 0]))
    clf = art_classifier(model, (1, 4, 4), 10)
    x = np.random.default_rng(0).random((3, 1, 4, 4)).astype(np.float32)
    for nb_grads in (2, 3):
        ours = nfa.DeepFool(clf, nb_grads=nb_grads, verbose=False, batch_size=16).generate(x)
        theirs = evasion.DeepFool(clf, nb_grads=nb_grads, verbose=False, batch_size=16).generate(x)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("seed, shape, theta", [(5, (1, 2, 2), 0.3), (76, (1, 2, 3), -0.3)])
def test_saliency_map_with_under_two_searchable_features_gives_arts_images(seed, shape, theta):
    """Once fewer than 2 features of an image can still move, ART's np.argpartition takes one of the features
    out of the search space as the second; which one depends on numpy's selection, and counts in the gamma budget."""
    rng = np.random.RandomState(seed)
    x = rng.rand(4, *shape).astype(np.float32)
    x[rng.rand(*x.shape) < 0.3] = 1.0
    x[rng.rand(*x.shape) < 0.3] = 0.0
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), 3))
    clf = art_classifier(model, shape, 3)
    y = (clf.predict(x).argmax(1) + 1) % 3
    for batch_size in (1, 4):
        settings = {"theta": theta, "gamma": 0.6 if seed == 76 else 0.5, "batch_size": batch_size, **QUIET}
        theirs = evasion.SaliencyMapMethod(clf, **settings).generate(x, y)
        np.testing.assert_array_equal(nfa.SaliencyMapMethod(clf, **settings).generate(x, y), theirs)


def test_infinite_eps_gives_arts_images():
    """ART takes eps = inf (no projection) and eps_step = inf (a step to the clip values, or to infinity without
    them); where the gradient is 0 its step is 0 * inf = NaN, which it sets to 0. The first 16 pixels do not
    reach the model."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        model[1].weight[:, :16] = 0
    x = np.random.RandomState(0).rand(4, 1, 8, 8).astype(np.float32)
    y = np.array([1, 2, 3, 4])
    inf = np.inf
    cases = [
        ("FastGradientMethod", {"eps": inf}),
        ("ProjectedGradientDescent", {"eps": inf, "eps_step": 0.1, "max_iter": 3, **QUIET}),
        ("ProjectedGradientDescent", {"eps": 0.1, "eps_step": inf, "max_iter": 3, "decay": 0.5, **QUIET}),
    ]
    for clip_values in ((0.0, 1.0), None):
        clf = PyTorchClassifier(model, nn.CrossEntropyLoss(), (1, 8, 8), 10, clip_values=clip_values)
        for (name, settings), norm in itertools.product(cases, (inf, 1, 2)):
            theirs = seeded(getattr(evasion, name)(clf, norm=norm, **settings), x, y)
            with no_fallback():
                ours = seeded(getattr(nfa, name)(clf, norm=norm, **settings), x, y)
            np.testing.assert_array_equal(ours, theirs)


def test_fgm_without_labels_takes_every_tied_class_as_art():
    """Without y ART marks every class at the largest output (several where outputs tie) and FGM divides by their
    number; classes 0 and 1 of this model always tie."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    with torch.no_grad():
        model[1].weight[1] = model[1].weight[0]
        model[1].bias[:2] = model[1].bias[0] + 5.0
    clf = art_classifier(model, (1, 4, 4), 3)
    x = np.random.RandomState(0).rand(4, 1, 4, 4).astype(np.float32)
    for norm in (np.inf, 2):
        theirs = evasion.FastGradientMethod(clf, norm=norm, eps=0.1).generate(x)
        with no_fallback():
            ours = nfa.FastGradientMethod(clf, norm=norm, eps=0.1).generate(x)
        np.testing.assert_array_equal(ours, theirs)
        assert (ours != x).any()


def test_fit_only_preprocessing_and_float64_images_are_handled_as_art():
    """A preprocessor with apply_predict=False (GaussianAugmentation's default) stays out of the gradients, as in
    ART; float64 images are attacked in float32, ART's dtype, and come back float32."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    augmentation = nfa.GaussianAugmentation(sigma=0.5)
    assert augmentation.apply_fit and not augmentation.apply_predict
    options = {"clip_values": (0.0, 1.0), "preprocessing_defences": augmentation}
    clf = PyTorchClassifier(model, nn.CrossEntropyLoss(), (1, 4, 4), 3, **options)
    x, y = np.random.RandomState(0).rand(4, 1, 4, 4), np.array([0, 1, 2, 0])
    for images in (x.astype(np.float32), x):
        theirs = evasion.FastGradientMethod(clf, eps=0.1).generate(images, y)
        ours = nfa.FastGradientMethod(clf, eps=0.1).generate(images, y)
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)  # (float64: ART rounds its sums otherwise)


@pytest.mark.parametrize(
    "name, settings, with_labels",
    [
        ("FastGradientMethod", {"eps": 0.1}, False),
        ("ProjectedGradientDescent", {"eps": 0.1, "eps_step": 0.05, "max_iter": 3, **QUIET}, False),
        (
            "ProjectedGradientDescent",
            {"eps": 0.1, "eps_step": 0.05, "max_iter": 2, "num_random_init": 2, **QUIET},
            True,
        ),
    ],
)
def test_postprocessing_defences_fall_back_where_art_reads_predictions(name, settings, with_labels):
    """ART takes its labels from predict() when y is None, and judges PGD's restarts by it: with HighConfidence
    (outputs under 0.25 set to 0) the post-processed predictions are not the model's."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10), nn.Softmax(dim=1))
    post = {"postprocessing_defences": [HighConfidence()]}
    clf = art_classifier(model, (1, 8, 8), 10, **post)
    x = np.random.RandomState(0).rand(4, 1, 8, 8).astype(np.float32)
    y = np.array([1, 2, 3, 4]) if with_labels else None
    expected = seeded(getattr(evasion, name)(clf, **settings), x, y)
    with pytest.warns(nfa.PeerFallbackWarning, match="postprocessing defences"):
        result = seeded(getattr(nfa, name)(clf, **settings), x, y)
    np.testing.assert_array_equal(result, expected)


def test_pgd_restarts_on_a_chunk_of_one_image_give_arts_images():
    """ART judges the restarts of a one-image chunk by a one-element torch bool, which numpy takes for an index: a
    failed restart replaces the kept image. The drop-in kept it, and so differed from ART's images."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 4))
    clf = art_classifier(model, (1, 5, 5), 4)
    x = np.random.RandomState(0).rand(3, 1, 5, 5).astype(np.float32)
    targets = (clf.predict(x).argmax(1) + 1) % 4
    settings = {"eps": 0.01, "eps_step": 0.0025, "max_iter": 3, "targeted": True, "num_random_init": 2, **QUIET}
    for batch_size in (1, 2):  # chunks of 1 image each, and a last chunk of one
        expected = seeded(evasion.ProjectedGradientDescent(clf, batch_size=batch_size, **settings), x, targets)
        with pytest.warns(nfa.PeerFallbackWarning, match="a chunk of one image"):
            ours = seeded(nfa.ProjectedGradientDescent(clf, batch_size=batch_size, **settings), x, targets)
        np.testing.assert_array_equal(ours, expected)


def test_pgd_restarts_are_judged_by_the_clean_prediction_not_by_the_given_labels():
    """ART's PGD keeps an untargeted restart's image where its prediction differs from the model's prediction on
    the clean image, also where y is given: labels other than the predictions give ART's images only so."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(25, 4))
    clf = art_classifier(model, (1, 5, 5), 4)
    x = np.random.RandomState(0).rand(6, 1, 5, 5).astype(np.float32)
    labels = (clf.predict(x).argmax(1) + 1) % 4  # none is the model's prediction
    settings = {"eps": 0.05, "eps_step": 0.02, "max_iter": 2, "num_random_init": 3, "batch_size": 3, **QUIET}
    expected = seeded(evasion.ProjectedGradientDescent(clf, **settings), x, labels)
    with no_fallback():
        ours = seeded(nfa.ProjectedGradientDescent(clf, **settings), x, labels)
    np.testing.assert_array_equal(ours, expected)


def test_argument_checks(model, batch):
    clf = classifier(model)
    for make in (nfa.DeepFool, nfa.SaliencyMapMethod, nfa.CarliniL2Method):
        with pytest.raises(ValueError, match="algorithm must be one of 'art', 'paper'"):
            make(clf, algorithm="fast")
    with pytest.raises(TypeError, match="abort_early must be a bool"):
        nfa.CarliniL2Method(clf, abort_early="yes")
    # set_params takes the added keywords, with the same checks.
    cw = nfa.CarliniL2Method(clf)
    cw.set_params(algorithm="paper", abort_early=False, max_iter=3)
    assert (cw.algorithm, cw.abort_early, cw.max_iter) == ("paper", False, 3)
    with pytest.raises(ValueError, match="algorithm must be one of"):
        nfa.DeepFool(clf).set_params(algorithm="fast")
    with pytest.raises(TypeError, match="abort_early must be a bool"):
        cw.set_params(abort_early=1)
    # ART's own checks are kept, in the constructor and in set_params.
    with pytest.raises(ValueError, match="nonnegative"):
        nfa.FastGradientMethod(clf, eps=-1.0)
    with pytest.raises(ValueError, match="max_iter"):
        nfa.ProjectedGradientDescent(clf).set_params(max_iter=-1)
    with pytest.raises(ValueError, match="iterations must be a positive integer"):
        nfa.DeepFool(clf, max_iter=0)
    with pytest.raises(ValueError, match="between 0 and 1"):
        nfa.SaliencyMapMethod(clf, gamma=2.0)
    with pytest.raises(ValueError, match="Target labels `y` need to be provided"):
        nfa.FastGradientMethod(clf, targeted=True).generate(batch[0][:2])
    # Where ART's checks let NaN through (NaN images), infinity (but for eps and eps_step, which ART runs with) or
    # theta = 0 (its JSMA then never ends): refused.
    nan, inf = float("nan"), float("inf")
    refused = [
        (lambda: nfa.FastGradientMethod(clf, eps=nan), "eps must not be NaN"),
        (lambda: nfa.FastGradientMethod(clf).set_params(eps=nan), "eps must not be NaN"),
        (lambda: nfa.ProjectedGradientDescent(clf, eps=nan), "eps must not be NaN"),
        (lambda: nfa.ProjectedGradientDescent(clf).set_params(eps_step=nan), "eps_step must not be NaN"),
        (lambda: nfa.SaliencyMapMethod(clf, theta=0.0), "theta must be non-zero"),
        (lambda: nfa.SaliencyMapMethod(clf, theta=nan), "theta must be finite"),
        (lambda: nfa.DeepFool(clf, epsilon=nan), "epsilon must be finite"),
        (lambda: nfa.CarliniL2Method(clf, learning_rate=inf), "learning_rate must be finite"),
    ]
    for make, match in refused:
        with pytest.raises(ValueError, match=match):
            make()
    narrow = PyTorchClassifier(nn.Sequential(model, nn.Linear(10, 5)), nn.CrossEntropyLoss(), (1, 28, 28), 10)
    with pytest.raises(ValueError, match=r"outputs of shape \(\d+, 5\); its nb_classes is 10"):
        nfa.SaliencyMapMethod(narrow, verbose=False).generate(batch[0][:2], np.array([1, 2]))
    # set_params reaches the fast path.
    x, y = batch[0][:8], batch[1][:8]
    attack = nfa.FastGradientMethod(clf, eps=0.3)
    attack.set_params(eps=0.1)
    np.testing.assert_array_equal(attack.generate(x, y), evasion.FastGradientMethod(clf, eps=0.1).generate(x, y))


ATTACKS_OF_IMAGES = {
    "FastGradientMethod": {"eps": 0.1},
    "ProjectedGradientDescent": {"eps": 0.1, "eps_step": 0.05, "max_iter": 2, "verbose": False},
    "DeepFool": {"max_iter": 2, "verbose": False},
    "SaliencyMapMethod": {"gamma": 0.02, "verbose": False},
    "CarliniL2Method": {"algorithm": "paper", "max_iter": 2, "binary_search_steps": 1, "verbose": False},
}


@pytest.mark.parametrize("name", list(ATTACKS_OF_IMAGES))
def test_images_with_nan_or_inf_are_refused_naming_them(name, model, batch):
    """ART runs NaN pixels into NaN adversarial images (its FGM sets the NaN steps to 0, leaving x's NaN); the
    drop-ins refuse them, naming the images at fault."""
    x = batch[0][:4].copy()
    x[0, 0, 5, 5], x[2, 0, 1, 1] = np.nan, -np.inf
    attack = getattr(nfa, name)(classifier(model), **ATTACKS_OF_IMAGES[name])
    with pytest.raises(ValueError, match=r"^x must be finite; NaN or inf in image\(s\) x\[0\], x\[2\]$"):
        attack.generate(x, batch[1][:4])
    assert np.isfinite(attack.generate(batch[0][:4], batch[1][:4])).all()


@pytest.mark.parametrize("name", [n for n in ATTACKS_OF_IMAGES if n != "DeepFool"])  # (ART's DeepFool ignores y)
def test_labels_of_another_length_than_the_images_are_refused_naming_y(name, model, batch):
    """ART's JSMA gives the images beyond the labels no target (they came back unattacked), its PGD fails on an
    assertion, its FGM in the loss; the drop-ins name y. Indices and one-hot alike."""
    x, y = batch[0][:5], batch[1][:3]
    attack = getattr(nfa, name)(classifier(model), **ATTACKS_OF_IMAGES[name])
    for labels in (y, np.eye(10)[y]):
        with pytest.raises(ValueError, match="^y must hold one label per image of x: 5 images, got 3 labels$"):
            attack.generate(x, labels)


@pytest.mark.parametrize("name", [n for n in ATTACKS_OF_IMAGES if n != "DeepFool"])
@pytest.mark.parametrize("bad", [-1, 10, 1.5, np.nan])
def test_class_indices_that_are_no_class_are_refused_naming_y(name, bad, model, batch):
    """ART reads a label of -1 as the last class and 1.5 as class 1 (10 fails in its one-hot encoding); the
    drop-ins name y for each, and take whole floats and (N, 1) labels as ART does."""
    x, y = batch[0][:3], batch[1][:3].astype(np.float64)
    attack = getattr(nfa, name)(classifier(model), **ATTACKS_OF_IMAGES[name])
    for labels in (np.array([y[0], y[1], bad]), np.array([y[0], y[1], bad])[:, None]):
        with pytest.raises(ValueError, match=r"^y must hold class indices in \[0, 10\) or one-hot rows; got values in"):
            attack.generate(x, labels)
    assert attack.generate(x, y[:, None]).shape == x.shape


@pytest.mark.parametrize("name", [n for n in ATTACKS_OF_IMAGES if n != "DeepFool"])
def test_more_labels_than_images_are_refused_naming_y(name, model, batch):
    x, y = batch[0][:3], batch[1][:5]
    attack = getattr(nfa, name)(classifier(model), **ATTACKS_OF_IMAGES[name])
    with pytest.raises(ValueError, match="^y must hold one label per image of x: 3 images, got 5 labels$"):
        attack.generate(x, y)


def test_class_indices_beyond_the_classes_are_refused_with_their_lowest_and_highest_values(model, batch):
    """Unsigned labels too (ART fails on an index of 10 with an IndexError of its one-hot encoding)."""
    attack = nfa.FastGradientMethod(classifier(model), eps=0.1)
    kinds = r"^y must hold class indices in \[0, 10\) or one-hot rows; got values in"
    with pytest.raises(ValueError, match=rf"{kinds} \[-2, 12\]$"):
        attack.generate(batch[0][:3], np.array([3, -2, 12]))
    with pytest.raises(ValueError, match=rf"{kinds} \[1, 10\]$"):
        attack.generate(batch[0][:3], np.array([1, 10, 2], dtype=np.uint8))


def test_fgm_on_an_empty_batch_with_empty_labels_gives_an_empty_batch_as_art(model, batch):
    x, y = batch[0][:0], batch[1][:0]
    expected = evasion.FastGradientMethod(classifier(model), eps=0.1).generate(x, y)
    np.testing.assert_array_equal(nfa.FastGradientMethod(classifier(model), eps=0.1).generate(x, y), expected)


@pytest.mark.parametrize("clip_values", [(0.0, 1.0), None])
@pytest.mark.parametrize("name", list(ATTACKS_OF_IMAGES))
def test_an_empty_batch_gives_an_empty_batch(name, clip_values, model, batch):
    """ART's PGD, DeepFool, SaliencyMapMethod and C&W, and its FGM without y, fail on no images (numpy cannot
    concatenate no chunks)."""
    x, y = batch[0][:0], batch[1][:0]
    attack = getattr(nfa, name)(classifier(model, clip_values=clip_values), **ATTACKS_OF_IMAGES[name])
    for labels in (None, y):
        adv = attack.generate(x, labels)
        assert adv.shape == x.shape and adv.dtype == np.float32


# GaussianAugmentation


def test_gaussian_augmentation_keeps_arts_signature_and_the_all_pytorch_path(model):
    ours, theirs = nfa.GaussianAugmentation(), ArtGaussianAugmentation()
    for name in ("sigma", "augmentation", "ratio", "clip_values", "apply_fit", "apply_predict"):
        assert getattr(ours, name) == getattr(theirs, name)
    assert isinstance(ours, ArtGaussianAugmentation)
    assert classifier(model, preprocessing_defences=ours).all_framework_preprocessing
    assert not classifier(model, preprocessing_defences=theirs).all_framework_preprocessing
    with pytest.raises(ValueError, match="ratio must be positive"):
        nfa.GaussianAugmentation(ratio=0.0)
    ours.set_params(sigma=0.5)
    assert ours.sigma == 0.5


def test_gaussian_augmentation_sizes_labels_and_clipping():
    x = torch.arange(40, dtype=torch.float32).view(20, 2) / 40
    y = torch.arange(20)
    torch.manual_seed(0)
    x_aug, y_aug = nfa.GaussianAugmentation(sigma=0.0, ratio=0.5)(x.numpy(), y.numpy())
    assert isinstance(x_aug, np.ndarray) and x_aug.dtype == np.float32 and x_aug.shape == (30, 2)
    np.testing.assert_array_equal(x_aug[:20], x.numpy())
    rows = [int(np.flatnonzero((x.numpy() == row).all(1))[0]) for row in x_aug[20:]]  # sigma 0: exact copies
    np.testing.assert_array_equal(y_aug[20:], np.array(rows))
    x_big = torch.full((4000, 50), 0.5)
    noisy, same = nfa.GaussianAugmentation(sigma=0.2, augmentation=False).forward(x_big, y=None)
    assert noisy.shape == x_big.shape and same is None
    assert abs(float((noisy - 0.5).std()) - 0.2) < 0.005 and abs(float((noisy - 0.5).mean())) < 0.005
    clipped, _ = nfa.GaussianAugmentation(sigma=1.0, clip_values=(0.2, 0.8)).forward(x_big - 0.4)
    assert clipped.shape == (8000, 50) and clipped.min() >= 0.2 and clipped.max() <= 0.8
    assert (clipped[:4000] == 0.2).all()  # originals clipped too, as in ART
    empty, no_labels = nfa.GaussianAugmentation(sigma=0.1)(x.numpy()[:0], y.numpy()[:0])  # as ART: empty arrays
    assert empty.shape == (0, 2) and empty.dtype == np.float32 and no_labels.shape == (0,)


def test_gaussian_augmentation_takes_labels_of_any_dtype_and_a_sigma_per_feature():
    """ART stacks the labels in numpy (strings too) and draws numpy's noise at any broadcastable scale."""
    x, y = np.full((10, 3), 0.5, dtype=np.float32), np.array(list("abcdefghij"))
    for library in (ArtGaussianAugmentation, nfa.GaussianAugmentation):
        x_aug, y_aug = library(sigma=0.1, ratio=0.5)(x, y)
        assert x_aug.shape == (15, 3) and y_aug.dtype == y.dtype and set(y_aug[10:]) <= set(y)
    sigma = np.array([0.0, 1.0, 0.0], dtype=np.float32)
    noisy, _ = nfa.GaussianAugmentation(sigma=sigma, augmentation=False)(np.zeros((2000, 3), np.float32))
    assert (noisy[:, [0, 2]] == 0).all() and abs(float(noisy[:, 1].std()) - 1.0) < 0.05
    for bad, match in ((np.array([0.1, -1.0, 0.1]), "scale < 0"), (np.ones((1, 1, 3)), "does not broadcast")):
        for library in (ArtGaussianAugmentation, nfa.GaussianAugmentation):  # refused by both, as numpy refuses
            with pytest.raises(ValueError, match="scale < 0|shape mismatch|broadcast"):
                library(sigma=bad, augmentation=False)(np.zeros((6, 3), np.float32))
        with pytest.raises(ValueError, match=match):
            nfa.GaussianAugmentation(sigma=bad, augmentation=False)(np.zeros((6, 3), np.float32))


def test_the_model_is_left_in_eval_mode_as_art_leaves_it(model, batch):
    """ART's classifier calls model.train(False) and never undoes it: code run after generate saw an eval-mode
    model, and a drop-in that restored train mode changed what it computes."""
    x, y = batch[0][:2], batch[1][:2]
    for library in (evasion, nfa):
        net = copy.deepcopy(model).train()
        library.FastGradientMethod(classifier(net), eps=0.1).generate(x, y)
        assert not any(m.training for m in net.modules())
        net.train()  # a call that fails before it runs leaves the model as it was, as ART's does
        with pytest.raises(ValueError):
            library.FastGradientMethod(classifier(net), eps=0.1, targeted=True).generate(x)
        assert all(m.training for m in net.modules())


def test_the_drop_ins_show_arts_signatures():
    import inspect

    for name in ("FastGradientMethod", "ProjectedGradientDescent", "BasicIterativeMethod"):
        assert inspect.signature(getattr(nfa, name)) == inspect.signature(getattr(evasion, name)), name

    class Mine(nfa.FastGradientMethod):  # a user's subclass with a constructor of its own shows its own
        def __init__(self, estimator, extra: int = 1) -> None:
            super().__init__(estimator)

    assert list(inspect.signature(Mine).parameters) == ["estimator", "extra"]


def test_gaussian_augmentation_in_a_classifier_fit(model, batch):
    x, y = batch[0][:32], batch[1][:32]
    clf = classifier(model, preprocessing_defences=nfa.GaussianAugmentation(sigma=0.1, ratio=1.0, clip_values=(0, 1)))
    x_aug, y_aug = clf._apply_preprocessing(x, np.eye(10, dtype=np.float32)[y], fit=True)
    assert x_aug.shape == (64, 1, 28, 28) and y_aug.shape == (64, 10)
    np.testing.assert_array_equal(x_aug[:32], x)
    predict_path, _ = clf._apply_preprocessing(x, None, fit=False)
    np.testing.assert_array_equal(predict_path, x)  # apply_predict=False: not applied at prediction time


def test_gaussian_augmentation_gradient_is_the_identity():
    x = torch.rand(3, 5, requires_grad=True)
    out = nfa.GaussianAugmentation(sigma=0.1, augmentation=False, apply_predict=True).estimate_forward(x)
    (grad,) = torch.autograd.grad(out.sum(), x)
    torch.testing.assert_close(grad, torch.ones_like(x))


def test_gaussian_augmentation_at_prediction_time_lets_gradient_attacks_run():
    """ART's loss and class gradients call forward() on images that require a gradient: the defence passes the
    identity's gradient back, as ART's own (sigma = 0 here, so the images must equal ART's without noise)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    x = np.random.RandomState(0).rand(4, 1, 8, 8).astype(np.float32)

    def with_defence(make):
        defence = make(sigma=0.0, augmentation=False, apply_fit=False, apply_predict=True)
        return PyTorchClassifier(
            model, nn.CrossEntropyLoss(), (1, 8, 8), 10, clip_values=(0, 1), preprocessing_defences=[defence]
        )

    expected = evasion.FastGradientMethod(with_defence(ArtGaussianAugmentation), eps=0.1).generate(x)
    ours = with_defence(nfa.GaussianAugmentation)
    np.testing.assert_array_equal(evasion.FastGradientMethod(ours, eps=0.1).generate(x), expected)
    np.testing.assert_array_equal(nfa.FastGradientMethod(ours, eps=0.1).generate(x), expected)
    deepfool = {"max_iter": 3, "batch_size": 4, **QUIET}
    np.testing.assert_allclose(
        nfa.DeepFool(ours, **deepfool).generate(x),
        evasion.DeepFool(with_defence(ArtGaussianAugmentation), **deepfool).generate(x),
        rtol=0,
        atol=1e-6,
    )


def test_gaussian_augmentation_takes_array_clip_values_and_gives_arts_dtype():
    x = np.random.RandomState(0).rand(200, 1, 2, 2).astype(np.float32)
    low, high = np.full((1, 2, 2), 0.3), np.full((1, 2, 2), 0.7)  # float64, as ART's np.clip then gives
    cases = [
        ({"clip_values": (low, high)}, x),
        ({"clip_values": (low.astype(np.float32), high.astype(np.float32))}, x),
        ({"clip_values": (low, high), "augmentation": False}, x),
        ({"augmentation": False}, x.astype(np.float64)),  # ART: float32 noise, unclipped
        ({}, x.astype(np.float64)),  # ART: float64 originals stacked with the float32 noise
        ({}, (x * 10).astype(np.int64)),
    ]
    for settings, images in cases:
        ours, _ = nfa.GaussianAugmentation(sigma=0.5, **settings)(images)
        theirs, _ = ArtGaussianAugmentation(sigma=0.5, **settings)(images)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape, settings
        if "clip_values" in settings:
            low_value, high_value = theirs.dtype.type(0.3), theirs.dtype.type(0.7)  # float32's 0.3 under numpy 1 too
            assert ours.min() == theirs.min() == low_value and ours.max() == theirs.max() == high_value


@pytest.mark.cuda
def test_gaussian_augmentation_draws_on_the_device():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    x = torch.rand(64, 3, 32, 32, device="cuda")
    x_aug, y_aug = nfa.GaussianAugmentation(sigma=0.3).forward(x, torch.arange(64, device="cuda"))
    assert x_aug.device.type == "cuda" and x_aug.shape == (128, 3, 32, 32) and y_aug.shape == (128,)


def test_import_error_names_the_missing_package(monkeypatch):
    for module in list(sys.modules):
        if module.split(".")[0] == "art" or module.startswith("nemesis_fast.compat.art"):
            monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "art", None)
    with pytest.raises(ImportError, match="needs the package 'adversarial-robustness-toolbox'"):
        importlib.import_module("nemesis_fast.compat.art")


@pytest.mark.parametrize(
    "version, warns", [("1.17.1", True), ("1.18.2", False), ("1.19.2", False), ("1.20.1", False), ("1.21.0", True)]
)
def test_the_art_series_reproduced_are_1_18_to_1_20(version, warns, monkeypatch):
    """The peers extra asks for ART >= 1.18, and the compat tests run against 1.18, 1.19 and 1.20: those import
    without a warning, other series with one naming the three."""
    expected = f"adversarial-robustness-toolbox 1.18, 1.19, 1.20; {version} is installed, whose results may differ"
    assert version_warnings(monkeypatch, "art", art, version) == (
        [f"nemesis_fast.compat.art reproduces the algorithms of {expected}"] if warns else []
    )


def test_deepfool_stops_an_image_its_step_leaves_unchanged():
    """ART repeats a step that the clip values clip back to the same image until max_iter; the drop-in stops the
    image there, with ART's result."""
    model, x, calls = clamped_linear_model()
    settings = {"max_iter": 50, "epsilon": 0.02, "batch_size": len(x), **QUIET}
    expected = evasion.DeepFool(classifier(model), **settings).generate(x.numpy())
    peer_calls, calls[0] = calls[0], 0
    got = nfa.DeepFool(classifier(model), **settings).generate(x.numpy())
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert peer_calls >= 50 and calls[0] <= 6


def test_saliency_map_method_takes_arts_features_where_the_gradient_ties():
    """A flat gradient (1-bit feature squeezing attacked through its own gradient) ties most features: topk took
    other tied features than ART's np.argpartition (the drop-in changed features 38-45 where ART changed 56-63)."""
    from nemesis_fast.defenses import FeatureSqueezing as Squeezing

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))
    squeezed = Squeezing(net, 1, bpda=False).eval()
    clf = PyTorchClassifier(squeezed, nn.CrossEntropyLoss(), (1, 8, 8), 10, clip_values=(0.0, 1.0))
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(1)).numpy()
    targets = np.array([1, 2, 3, 5])
    ours = nfa.SaliencyMapMethod(clf, theta=1.0, gamma=0.1, verbose=False).generate(x, targets)
    peers = evasion.SaliencyMapMethod(clf, theta=1.0, gamma=0.1, verbose=False).generate(x, targets)
    assert (ours != x).any() and np.array_equal(ours, peers)


def test_saliency_map_method_on_images_of_two_features():
    """The tie test (second value against third) has no third value there."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 3))
    clf = PyTorchClassifier(net, nn.CrossEntropyLoss(), (1, 1, 2), 3, clip_values=(0.0, 1.0))
    x = np.random.RandomState(0).rand(6, 1, 1, 2).astype(np.float32) * 0.5
    with torch.no_grad():
        targets = (net(torch.from_numpy(x)).argmax(1).numpy() + 1) % 3
    ours = nfa.SaliencyMapMethod(clf, theta=0.3, gamma=1.0, verbose=False).generate(x, targets)
    peers = evasion.SaliencyMapMethod(clf, theta=0.3, gamma=1.0, verbose=False).generate(x, targets)
    assert (ours != x).any() and np.array_equal(ours, peers)
