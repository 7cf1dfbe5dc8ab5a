"""nemesis_fast.compat.art.PyTorchRandomizedSmoothing against ART's own: given the same noise, ART's certify and
predict give the drop-in's classes and radii exactly (on the trained MNIST CNN, with and without normalisation);
the drop-in's settings checks, its fallbacks to ART's own methods, and what it leaves to ART."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from _peers import MEAN, STD, Standardised, no_fallback
from torch import nn

pytest.importorskip("art")

from art.attacks.evasion import FastGradientMethod as ArtFGM  # noqa: E402
from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing as ArtSmoothing  # noqa: E402

from nemesis_fast import gaussian_augment  # noqa: E402
from nemesis_fast._backends.gaussian_augment import resolve_seed  # noqa: E402
from nemesis_fast.certify import clopper_pearson_lower  # noqa: E402
from nemesis_fast.certify.smooth import phase_key  # noqa: E402
from nemesis_fast.compat.art import (  # noqa: E402
    DeepFool,
    FastGradientMethod,
    PeerFallbackWarning,
    PyTorchRandomizedSmoothing,
)

SCALE, ALPHA = 0.4, 0.001


def _smoother(cls, model: nn.Module, normalised: bool = False, **options):
    preprocessing = (MEAN, STD) if normalised else (0.0, 1.0)
    settings = dict(sample_size=20, scale=SCALE, alpha=ALPHA, device_type="cpu", preprocessing=preprocessing)
    return cls(
        Standardised(model) if normalised else model, nn.CrossEntropyLoss(), (1, 28, 28), 10, **{**settings, **options}
    )


def _with_scipy_bound(art: ArtSmoothing) -> ArtSmoothing:
    """`art` bounding pA with scipy's Clopper-Pearson quantile (ART's own needs statsmodels)."""
    art._lower_confidence_bound = lambda k, n: float(clopper_pearson_lower(int(k), int(n), art.alpha))
    return art


def _with_our_noise(art: ArtSmoothing, seed: int, phases: tuple[str, ...]) -> ArtSmoothing:
    """`art` drawing, in place of numpy's draws, the noise nemesis_fast's Smooth draws for image i and phase p (ART
    calls _noisy_samples once per image and phase, in order), and bounding pA with the same scipy quantile (ART's
    own needs statsmodels)."""
    calls = [0]

    def noisy_samples(x_i: np.ndarray, n: int | None = None) -> np.ndarray:
        image, phase = divmod(calls[0], len(phases))
        calls[0] += 1
        rows = torch.from_numpy(x_i)[None].expand(n or art.sample_size, *x_i.shape)
        key = phase_key(seed, phases[phase])
        noisy = gaussian_augment(rows, 1, art.scale, None, include_original=False, seed=key, offset=image << 32)
        return noisy.numpy()

    art._noisy_samples = noisy_samples
    return _with_scipy_bound(art)


def _images(model: nn.Module, mnist_test_data) -> np.ndarray:
    """6 test images and 41 blends of a 7 and a 2 (weights in steps of 0.01 on each side of the one at which
    `model` turns from 7 to 2, which moves with the machine that trained it), about which the smoothed model is
    anything from sure to undecided: abstentions and radii from small to the largest that n can certify."""
    images = mnist_test_data[0]

    def blends(t: torch.Tensor) -> torch.Tensor:
        return (1 - t[:, None, None, None]) * images[0] + t[:, None, None, None] * images[1]

    with torch.no_grad():
        turns = model(blends(torch.linspace(0, 1, 101))).argmax(1).ne(7).float().argmax().item() / 100
    return torch.cat([images[:6], blends(turns + torch.linspace(-0.2, 0.2, 41))]).numpy()


@pytest.mark.parametrize("normalised", [False, True])
def test_certify_and_predict_are_arts_given_the_same_noise(mnist_model, mnist_test_data, normalised):
    x = _images(mnist_model, mnist_test_data)
    for sample_size, n, batch_size in ((20, 60, 32), (1, 200, 7)):
        ours = _smoother(PyTorchRandomizedSmoothing, mnist_model, normalised, sample_size=sample_size)
        torch.manual_seed(1)
        with no_fallback():
            prediction, radius = ours.certify(x, n, batch_size=batch_size)
        torch.manual_seed(1)
        seed = resolve_seed(None)
        art = _smoother(ArtSmoothing, mnist_model, normalised, sample_size=sample_size)
        art_prediction, art_radius = _with_our_noise(art, seed, ("select", "estimate")).certify(x, n, batch_size)
        assert prediction.dtype == np.int64 and radius.dtype == np.float64
        np.testing.assert_array_equal(prediction, art_prediction)
        np.testing.assert_array_equal(radius, art_radius)
        assert (prediction == -1).any() and ((radius > 0) & (radius < 0.1)).any() and (radius > 0.3).any()
    for is_abstain in (None, True, False):
        options = {} if is_abstain is None else {"is_abstain": is_abstain}
        torch.manual_seed(2)
        with no_fallback():
            smoothed = ours.predict(x, batch_size=16, **options)
        torch.manual_seed(2)
        art = _smoother(ArtSmoothing, mnist_model, normalised, sample_size=1)
        art = _with_our_noise(art, resolve_seed(None), ("predict",))
        expected = art.predict(x, batch_size=16, **options)
        assert smoothed.dtype == expected.dtype and smoothed.shape == (len(x), 10)
        np.testing.assert_array_equal(smoothed, expected)
        assert (smoothed.sum(1) == 0).any() == (is_abstain is not False)


def test_certify_takes_arts_class_and_radius_and_certifies_at_pa_one_half(mnist_model, monkeypatch):
    """ART's CERTIFY from the counts: the class with most selection votes (not the estimation's), certified where
    pA >= 1/2 (radius 0 at 1/2 exactly, where nemesis_fast's own Smooth abstains), radius scale * Phi^-1(pA)."""
    from scipy.stats import norm

    from nemesis_fast.certify import Smooth
    from nemesis_fast.certify.smooth import Certificate

    p_lower = torch.tensor([0.9, 0.5, 0.4999, 0.7], dtype=torch.float64)
    selection, estimation = torch.zeros(4, 10, dtype=torch.int64), torch.zeros(4, 10, dtype=torch.int64)
    selection[range(4), [3, 1, 2, 9]] = 15
    estimation[range(4), [4, 4, 4, 4]] = 60  # (the estimation's own top class: another)
    chosen = selection.argmax(1)

    def certified(self, x, n0, n, alpha, batch_size=1000, **kwargs):
        assert (len(x), n0, n, alpha) == (4, 20, 100, ALPHA)
        smooth = torch.where(p_lower > 0.5, chosen, -1)  # Smooth's own rule
        radius = torch.zeros(4, dtype=torch.float64)
        return Certificate(smooth, p_lower, radius, estimation, selection, SCALE, n0, n, alpha)

    monkeypatch.setattr(Smooth, "certify", certified)
    with no_fallback():
        prediction, radius = _smoother(PyTorchRandomizedSmoothing, mnist_model).certify(np.zeros((4, 1, 28, 28)), 100)
    assert prediction.dtype == np.int64 and radius.dtype == np.float64
    np.testing.assert_array_equal(prediction, [3, 1, -1, 9])
    np.testing.assert_array_equal(radius, [SCALE * norm.ppf(0.9), 0.0, 0.0, SCALE * norm.ppf(0.7)])


def test_predict_is_one_hot_at_the_top_count_where_the_test_at_alpha_separates_it(mnist_model, monkeypatch):
    """ART's PREDICT from the counts: one-hot at the top class of the sample_size draws where the binomial test at
    alpha separates it from the runner-up, zeros where not (is_abstain=False: the top class everywhere)."""
    from nemesis_fast.certify import Smooth
    from nemesis_fast.certify.smooth import Prediction

    counts = torch.zeros(3, 10, dtype=torch.int64)
    counts[range(3), [6, 2, 8]] = torch.tensor([20, 11, 15])
    abstained = torch.tensor([False, True, False])

    def predicted(self, x, n, alpha, batch_size=1000, **kwargs):
        assert (len(x), n, alpha, batch_size) == (3, 20, ALPHA, 16)
        prediction = torch.where(abstained, -1, torch.tensor([5, 5, 5]))  # (ART's class is the counts')
        return Prediction(prediction, torch.tensor([0.0, 0.5, 0.0], dtype=torch.float64), counts, n, alpha)

    monkeypatch.setattr(Smooth, "predict", predicted)
    smoother = _smoother(PyTorchRandomizedSmoothing, mnist_model)
    x = np.zeros((3, 1, 28, 28), np.float32)
    with no_fallback():
        abstaining, always = (smoother.predict(x, batch_size=16, **kw) for kw in ({}, {"is_abstain": False}))
    np.testing.assert_array_equal(abstaining, np.eye(10)[[6, 2, 8]] * [[1], [0], [1]])
    np.testing.assert_array_equal(always, np.eye(10)[[6, 2, 8]])


def test_certificates_agree_with_arts_own_noise_within_sampling_error(mnist_model, mnist_test_data):
    """ART's own draws (numpy's) against the drop-in's: the same law, so the same classes and radii up to the
    spread of n = 400 draws per image."""
    x = mnist_test_data[0][:20].numpy()
    art = _with_scipy_bound(_smoother(ArtSmoothing, mnist_model))
    np.random.seed(0)
    art_prediction, art_radius = art.certify(x, 400, batch_size=200)
    torch.manual_seed(0)
    prediction, radius = _smoother(PyTorchRandomizedSmoothing, mnist_model).certify(x, 400, batch_size=200)
    assert (prediction == art_prediction).mean() >= 0.9
    assert abs(radius.mean() - art_radius.mean()) < 0.1 and np.abs(radius - art_radius).max() < 0.5


def test_results_do_not_depend_on_batch_size_and_follow_torchs_seed(mnist_model, mnist_test_data):
    model = copy.deepcopy(mnist_model)  # ART's gradients leave .grad in a shared model's parameters
    x = mnist_test_data[0][:6].numpy()
    smoother = _smoother(PyTorchRandomizedSmoothing, model)
    results = []
    for seed, batch_size in ((0, 5), (0, 64), (1, 64)):
        torch.manual_seed(seed)
        results.append(smoother.certify(x, 50, batch_size=batch_size))
    np.testing.assert_array_equal(results[0][1], results[1][1])
    assert not np.array_equal(results[0][1], results[2][1])
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_the_model_runs_in_eval_mode_and_is_left_there_as_art_leaves_it(mnist_model):
    """ART's predictions call model.eval() (and never undo it): a model handed over in training mode (dropout, batch
    norm) votes in eval mode, and stays there; its parameters keep their requires_grad, without gradients."""
    model = copy.deepcopy(mnist_model)
    modes = []
    model.register_forward_hook(lambda module, inputs, output: modes.append(module.training))
    smoother = _smoother(PyTorchRandomizedSmoothing, model, sample_size=4)
    x = np.zeros((2, 1, 28, 28), np.float32)
    for call in (lambda: smoother.certify(x, 8), lambda: smoother.predict(x)):
        model.train()
        with no_fallback():
            call()
        assert modes and not any(modes) and not model.training
        assert all(p.requires_grad and p.grad is None for p in model.parameters())
        modes.clear()


def test_predict_shows_arts_bar_only_when_verbose(mnist_model, capsys):
    smoother = _smoother(PyTorchRandomizedSmoothing, mnist_model, sample_size=4)
    x = np.zeros((2, 1, 28, 28), np.float32)
    smoother.predict(x, verbose=False)
    assert capsys.readouterr().err == ""
    smoother.predict(x, verbose=True)
    assert "Randomized smoothing" in capsys.readouterr().err


def test_settings_that_would_give_nan_are_refused_naming_them(mnist_model):
    x = np.zeros((2, 1, 28, 28), np.float32)
    smoother = _smoother(PyTorchRandomizedSmoothing, mnist_model)
    for call, message in (
        (lambda: smoother.certify(x, 0), "n must be >= 1"),
        (lambda: smoother.certify(x, 10, batch_size=0), "batch_size must be >= 1"),
        (lambda: smoother.predict(x, batch_size=0), "batch_size must be >= 1"),
    ):
        with pytest.raises(ValueError, match=message):
            call()
    for name, value, message in (
        ("scale", -0.5, "scale must be >= 0"),
        ("scale", float("nan"), "scale must be"),
        ("alpha", 1.0, "alpha must be < 1"),
        ("alpha", float("nan"), "alpha must be"),
        ("sample_size", 0, "sample_size must be >= 1"),
        ("sample_size", 2.5, "sample_size must be an int"),
    ):
        smoother = _smoother(PyTorchRandomizedSmoothing, mnist_model)
        smoother.set_params(**{name: value})
        with pytest.raises((ValueError, TypeError), match=message):
            smoother.certify(x, 10)
        with pytest.raises((ValueError, TypeError), match=message):
            smoother.predict(x)
    with pytest.raises(ValueError, match="is_abstain needs to be of type bool"):
        _smoother(PyTorchRandomizedSmoothing, mnist_model).predict(x, is_abstain=1)


def test_settings_that_would_give_nan_are_refused_before_a_fallback_to_arts_own(mnist_model):
    """Where the call would run ART's own methods (here: postprocessing defences), its settings are still checked
    first: no warning, and no NaN from ART's code."""
    from art.defences.postprocessor import ClassLabels

    x = np.zeros((2, 1, 28, 28), np.float32)
    for settings, call, message in (
        ({}, lambda smoother: smoother.certify(x, 0), "n must be >= 1"),
        ({}, lambda smoother: smoother.certify(x, 10, batch_size=0), "batch_size must be >= 1"),
        ({}, lambda smoother: smoother.predict(x, batch_size=0), "batch_size must be >= 1"),
        ({"alpha": 1.0}, lambda smoother: smoother.certify(x, 10), "alpha must be < 1"),
        ({"alpha": 1.0}, lambda smoother: smoother.predict(x), "alpha must be < 1"),
    ):
        smoother = _smoother(PyTorchRandomizedSmoothing, mnist_model, postprocessing_defences=ClassLabels())
        smoother.set_params(**settings)
        with warnings.catch_warnings():
            warnings.simplefilter("error", PeerFallbackWarning)
            with pytest.raises(ValueError, match=message):
                call(smoother)


def test_what_it_cannot_serve_runs_arts_own_methods_after_a_warning(mnist_model, mnist_test_data):
    from art.defences.postprocessor import ClassLabels

    x = mnist_test_data[0][:3].numpy()
    cases = [
        ({"postprocessing_defences": ClassLabels()}, "postprocessing defences"),
        ({"scale": 0.0}, "scale is 0"),
        ({"alpha": 0.0}, "alpha is 0"),
    ]
    for options, reason in cases:
        ours, art = (_smoother(cls, mnist_model, **options) for cls in (PyTorchRandomizedSmoothing, ArtSmoothing))
        for smoother in (ours, art):
            smoother._lower_confidence_bound = lambda k, n: float(clopper_pearson_lower(int(k), max(int(n), 1), ALPHA))
        results = []
        for smoother in (ours, art):
            np.random.seed(0)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                results.append((smoother.certify(x, 30, batch_size=16), smoother.predict(x, batch_size=16)))
            fell_back = [w for w in caught if issubclass(w.category, PeerFallbackWarning)]
            assert len(fell_back) == (2 if smoother is ours else 0) and all(reason in str(w.message) for w in fell_back)
        (ours_certified, ours_predicted), (art_certified, art_predicted) = results
        for a, b in zip(ours_certified, art_certified):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(ours_predicted, art_predicted)
    ours = _smoother(PyTorchRandomizedSmoothing, mnist_model)
    ours._lower_confidence_bound = lambda k, n: float(clopper_pearson_lower(int(k), int(n), ALPHA))
    with pytest.warns(PeerFallbackWarning, match="x is not a numeric numpy array"):
        ours.certify(list(x), 30, batch_size=16)
    predicted = []
    for images in (list(x), x):  # (ART's InputFilter turns a list into an array before predict sees it)
        torch.manual_seed(0)
        with no_fallback():
            predicted.append(ours.predict(images, batch_size=16))
    np.testing.assert_array_equal(*predicted)


def test_fit_and_the_gradients_are_arts(mnist_model):
    """The drop-in replaces certify and predict only: training and gradients run ART's code."""
    for name in ("fit", "loss_gradient", "class_gradient", "_noisy_samples", "_fit_classifier"):
        assert getattr(PyTorchRandomizedSmoothing, name) is getattr(ArtSmoothing, name), name
    assert PyTorchRandomizedSmoothing.__mro__[1] is ArtSmoothing


def test_the_attack_drop_ins_hand_a_smoothing_estimator_to_arts_own_attacks(mnist_model, mnist_test_data):
    """A PyTorchClassifier subclass with its own predict and gradients is another classifier than its model's logits
    (FGM without y takes the smoothed prediction's labels): the drop-in attacks run ART's own code on it."""
    model = copy.deepcopy(mnist_model)  # ART's gradients leave .grad in a shared model's parameters
    x = mnist_test_data[0][:4].numpy()
    for cls in (ArtSmoothing, PyTorchRandomizedSmoothing):
        estimator = _smoother(cls, model, clip_values=(0.0, 1.0))
        results = []
        for attack in (ArtFGM, FastGradientMethod):
            torch.manual_seed(0)
            np.random.seed(0)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                results.append(attack(estimator, eps=0.1).generate(x))
            fell_back = [str(w.message) for w in caught if issubclass(w.category, PeerFallbackWarning)]
            assert len(fell_back) == (attack is FastGradientMethod)
            assert all("with its own predict, loss_gradient, class_gradient" in m for m in fell_back)
        np.testing.assert_array_equal(*results)
    with pytest.warns(PeerFallbackWarning), pytest.raises(NotImplementedError):  # ART's: no class gradient there
        DeepFool(estimator, verbose=False).generate(x)


def test_arts_own_certify_runs_without_statsmodels_where_the_drop_in_hands_it_over(mnist_model, mnist_test_data):
    """The calls handed to ART's certify (scale or alpha 0, postprocessing defences, x not an array) use the
    drop-in's scipy bound, statsmodels' values, where ART's own bound imports statsmodels."""
    from nemesis_fast.certify import clopper_pearson_lower as bound

    x = list(mnist_test_data[0][:2].numpy())
    smoother = _smoother(PyTorchRandomizedSmoothing, mnist_model)
    with pytest.warns(PeerFallbackWarning, match="x is not a numeric numpy array"):
        prediction, radius = smoother.certify(x, 30, batch_size=16)
    assert prediction.shape == radius.shape == (2,)
    assert smoother._lower_confidence_bound(27, 30) == float(bound(27, 30, ALPHA))
    smoother.set_params(alpha=0.0)
    assert smoother._lower_confidence_bound(30, 30) == 0.0
