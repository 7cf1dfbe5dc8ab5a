"""nemesis_fast.compat.art's SaliencyMapMethod and GaussianAugmentation, where tests/test_compat_art.py leaves them
open: JSMA with one-hot targets, without clip_values, behind postprocessing defences, in chunks of batch_size and on
images beyond the bound theta moves towards, against ART's own images; GaussianAugmentation's sample count, its
draw of the samples to copy (uniform, with replacement) and their labels, the labels with augmentation=False, the
noise of a sigma per feature, clipping with float64 images or a sigma per feature, integer images and the identity
gradient of the original rows. Small models and batches, seeded: each test runs in about a second on a CPU."""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import pytest
import torch
from _peers import art_classifier, no_fallback
from torch import nn

pytest.importorskip("art")
from art.attacks import evasion  # noqa: E402
from art.defences.postprocessor import HighConfidence  # noqa: E402
from art.defences.preprocessor import GaussianAugmentation as ArtGaussianAugmentation  # noqa: E402
from art.estimators.classification import PyTorchClassifier  # noqa: E402

from nemesis_fast.attacks import JSMA  # noqa: E402

nfa = importlib.import_module("nemesis_fast.compat.art")

QUIET = {"verbose": False}


def small_classifier(shape=(1, 4, 4), classes=4, seed=0, **options) -> PyTorchClassifier:
    """A seeded linear model on `shape` images behind ART's PyTorchClassifier (clip_values (0, 1) unless given)."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), classes))
    return art_classifier(model, shape, classes, **options)


def images(n=6, shape=(1, 4, 4), seed=0, scale=1.0) -> np.ndarray:
    return (np.random.RandomState(seed).rand(n, *shape) * scale).astype(np.float32)


def served(attack, x, y):
    """attack.generate(x, y), failing on a fallback to ART's own implementation."""
    with no_fallback():
        return attack.generate(x, y)


# SaliencyMapMethod


def test_saliency_map_method_takes_one_hot_targets_as_art():
    clf = small_classifier()
    x = images()
    targets = (clf.predict(x).argmax(1) + np.array([1, 2, 3, 1, 2, 0])) % 4  # the last one already predicted
    settings = {"theta": 0.2, "gamma": 0.5, "batch_size": 4, **QUIET}
    expected = evasion.SaliencyMapMethod(clf, **settings).generate(x, targets)
    one_hot = np.eye(4, dtype=np.float32)[targets]
    for y in (one_hot, targets):
        ours = served(nfa.SaliencyMapMethod(clf, **settings), x, y)
        np.testing.assert_array_equal(ours, expected)
    assert (expected != x).reshape(len(x), -1).any(1)[:5].all() and (expected[5] == x[5]).all()


@pytest.mark.parametrize("theta", [0.3, -0.3])
def test_saliency_map_method_without_clip_values_gives_arts_images(theta):
    """Without clip_values every feature stays searchable and moves by theta each time it is picked, unbounded.
    (There the loop ends only at the target, as ART's: class k's output rises with features 2k and 2k + 1 and
    falls with features 2k + 8 and 2k + 9, where the other classes barely depend on them, so each target is
    reached.)"""
    clf = small_classifier(clip_values=None)
    with torch.no_grad():
        weight = clf.model[1].weight
        weight.mul_(0.05)
        for k in range(4):
            weight[k, 2 * k : 2 * k + 2] = 1.0
            weight[k, 2 * k + 8 : 2 * k + 10] = -1.0
    x = images()
    targets = (clf.predict(x).argmax(1) + 1) % 4
    settings = {"theta": theta, "gamma": 0.4, "batch_size": 3, **QUIET}
    expected = evasion.SaliencyMapMethod(clf, **settings).generate(x, targets)
    ours = served(nfa.SaliencyMapMethod(clf, **settings), x, targets)
    np.testing.assert_array_equal(ours, expected)
    assert (ours > 1.0).any() if theta > 0 else (ours < 0.0).any()  # past where (0, 1) would have clipped


def test_saliency_map_method_with_postprocessing_defences_falls_back_to_art():
    """ART reads the post-processed predictions (here HighConfidence zeroes the softmax outputs under 0.25, so
    that every image predicts class 0): the drop-in warns and gives ART's result."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 10), nn.Softmax(dim=1))
    post = {"postprocessing_defences": [HighConfidence()]}
    clf = art_classifier(model, (1, 4, 4), 10, **post)
    x = images(4)
    targets = np.array([1, 2, 3, 4])
    settings = {"theta": 0.5, "gamma": 0.5, **QUIET}
    expected = evasion.SaliencyMapMethod(clf, **settings).generate(x, targets)
    with pytest.warns(nfa.PeerFallbackWarning, match="postprocessing defences"):
        ours = nfa.SaliencyMapMethod(clf, **settings).generate(x, targets)
    np.testing.assert_array_equal(ours, expected)


def test_saliency_map_method_runs_the_model_on_chunks_of_batch_size():
    """As ART: the first predictions and every step see at most batch_size images (the memory the caller asked for),
    and the first predictions run full chunks."""
    clf = small_classifier()
    seen: list[int] = []
    clf.model[1].register_forward_hook(lambda _module, inputs, _out: seen.append(len(inputs[0])))
    x = images(7)
    targets = (clf.predict(x).argmax(1) + 1) % 4
    settings = {"theta": 0.2, "gamma": 0.5, "batch_size": 3, **QUIET}
    expected = evasion.SaliencyMapMethod(clf, **settings).generate(x, targets)
    seen.clear()
    ours = served(nfa.SaliencyMapMethod(clf, **settings), x, targets)
    np.testing.assert_array_equal(ours, expected)
    assert seen[:3] == [3, 3, 1]  # the first predictions, in ART's chunks
    assert max(seen) == 3 and len(seen) > 3


@pytest.mark.parametrize("theta", [0.3, -0.3])
def test_saliency_map_method_steps_once_on_images_with_nothing_to_search(theta):
    """An image beyond the bound theta moves towards starts with an empty search space; ART still takes one step
    (two features picked among the ties, clipped back to the bound) before its stopping rule ends it."""
    clf = small_classifier()
    x = images(4)
    x[:2] = 1.5 if theta > 0 else -0.5  # every feature past clip_values
    targets = (clf.predict(x).argmax(1) + 1) % 4
    settings = {"theta": theta, "gamma": 0.5, "batch_size": 4, **QUIET}
    expected = evasion.SaliencyMapMethod(clf, **settings).generate(x, targets)
    ours = served(nfa.SaliencyMapMethod(clf, **settings), x, targets)
    np.testing.assert_array_equal(ours, expected)
    assert ((ours[:2] != x[:2]).reshape(2, -1).sum(1) == 2).all()  # two features each, to the bound


# GaussianAugmentation


def test_gaussian_augmentation_adds_int_of_ratio_times_n_samples_as_art():
    for n, ratio in ((5, 0.3), (5, 0.5), (7, 1.5), (3, 2.7), (4, 0.2)):
        x = np.zeros((n, 2), np.float32)
        ours, _ = nfa.GaussianAugmentation(sigma=0.1, ratio=ratio)(x)
        theirs, _ = ArtGaussianAugmentation(sigma=0.1, ratio=ratio)(x)
        assert ours.shape == theirs.shape == (n + int(n * ratio), 2), (n, ratio)


def copied_rows(x: np.ndarray, x_aug: np.ndarray) -> np.ndarray:
    """For sigma = 0: the index in `x` (rows of distinct values) of each added row of `x_aug`."""
    return np.array([int(np.flatnonzero((x == row).all(1))[0]) for row in x_aug[len(x) :]])


def test_gaussian_augmentation_draws_samples_uniformly_with_replacement_and_keeps_their_labels():
    torch.manual_seed(0)
    x = np.arange(16, dtype=np.float32).reshape(8, 2)
    y = np.arange(8) * 10
    x_aug, y_aug = nfa.GaussianAugmentation(sigma=0.0, ratio=50.0)(x, y)  # 400 draws among 8 samples
    rows = copied_rows(x, x_aug)
    counts = np.bincount(rows, minlength=8)
    assert len(rows) == 400 and counts.min() >= 25 and counts.max() <= 75, counts  # 50 each expected, sd 6.6
    np.testing.assert_array_equal(y_aug, np.concatenate([y, y[rows]]))
    # Half as many draws as samples: with replacement (repeats) and from all of them (not the first half).
    x = np.arange(400, dtype=np.float32).reshape(200, 2)
    x_aug, _ = nfa.GaussianAugmentation(sigma=0.0, ratio=0.5)(x)
    rows = copied_rows(x, x_aug)
    assert len(rows) == 100 and len(set(rows.tolist())) < 100 and rows.max() >= 100
    # forward(): torch labels, of the drawn samples too.
    x_t, y_t = torch.from_numpy(x[:10]), torch.arange(10) + 100
    out, labels = nfa.GaussianAugmentation(sigma=0.0, ratio=3.0).forward(x_t, y_t)
    rows = copied_rows(x[:10], out.numpy())
    assert out.shape == (40, 2) and labels.shape == (40,)
    torch.testing.assert_close(labels, torch.cat([y_t, y_t[torch.from_numpy(rows)]]))


def test_gaussian_augmentation_without_augmentation_returns_the_labels_as_given():
    x, y = np.full((6, 3), 0.5, np.float32), np.arange(6)
    for library in (ArtGaussianAugmentation, nfa.GaussianAugmentation):
        noisy, labels = library(sigma=0.1, augmentation=False)(x, y)
        assert noisy.shape == x.shape and labels is y
    defence = nfa.GaussianAugmentation(sigma=0.1, augmentation=False)
    noisy, labels = defence.forward(torch.from_numpy(x), torch.arange(6))
    assert noisy.shape == (6, 3)
    torch.testing.assert_close(labels, torch.arange(6))


def test_gaussian_augmentation_scales_the_noise_per_feature():
    """sigma per feature is the noise's standard deviation (numpy's scale), column by column; 20,000 rows estimate
    it within 1%, the tolerance is 4%."""
    torch.manual_seed(0)
    sigma = np.array([0.5, 2.0, 0.0], dtype=np.float32)
    x = np.tile(np.array([0.25, -1.0, 3.0], np.float32), (20000, 1))
    noisy, _ = nfa.GaussianAugmentation(sigma=sigma, augmentation=False)(x)
    noise = noisy - x
    np.testing.assert_allclose(noise.std(0)[:2], sigma[:2], rtol=0.04)
    np.testing.assert_allclose(noise.mean(0)[:2], 0.0, atol=0.05)
    assert (noise[:, 2] == 0).all()


def test_gaussian_augmentation_clips_with_a_sigma_per_feature_and_with_float64_images_as_art():
    """Every value, originals and noisy rows, lands in clip_values, the bounds themselves in the images' dtype (ART's
    np.clip on float64 gives 0.2 exactly, not float32's 0.2)."""
    x = np.random.RandomState(0).rand(500, 4).astype(np.float32)
    sigma = np.array([0.0, 1.0, 2.0, 1.0], dtype=np.float32)
    for settings, data in (
        ({"sigma": sigma}, x),
        ({"sigma": sigma, "augmentation": False}, x),
        ({"sigma": 1.0}, x.astype(np.float64)),
        ({"sigma": 1.0, "augmentation": False}, x.astype(np.float64)),
    ):
        torch.manual_seed(0)
        ours, _ = nfa.GaussianAugmentation(clip_values=(0.2, 0.8), **settings)(data)
        theirs, _ = ArtGaussianAugmentation(clip_values=(0.2, 0.8), **settings)(data)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        noisy = ours[len(data) :] if len(ours) > len(data) else ours
        assert noisy.min() == theirs.min() == ours.dtype.type(0.2), settings
        assert noisy.max() == theirs.max() == ours.dtype.type(0.8), settings
        if len(ours) > len(data):
            np.testing.assert_array_equal(ours[: len(data)], np.clip(data, 0.2, 0.8).astype(ours.dtype))


def test_gaussian_augmentation_of_integer_images_adds_real_valued_noise():
    """ART draws numpy's float noise around the integer values (no rounding): the output is real-valued."""
    torch.manual_seed(0)
    x = np.random.RandomState(0).randint(0, 10, (4000, 5)).astype(np.int64)
    for augmentation in (False, True):
        ours, _ = nfa.GaussianAugmentation(sigma=0.3, augmentation=augmentation)(x)
        theirs, _ = ArtGaussianAugmentation(sigma=0.3, augmentation=augmentation)(x)
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        noisy = ours[len(x) :] if augmentation else ours
        assert (noisy != np.round(noisy)).mean() > 0.99
        if not augmentation:
            assert abs(float((noisy - x).std()) - 0.3) < 0.01 and abs(float((noisy - x).mean())) < 0.01


def test_gaussian_augmentation_passes_the_identity_gradient_to_the_original_rows():
    x = torch.rand(3, 5, requires_grad=True)
    out, _ = nfa.GaussianAugmentation(sigma=0.1, ratio=2.0).forward(x)
    assert out.shape == (9, 5)
    (grad,) = torch.autograd.grad(out[:3].sum(), x)
    torch.testing.assert_close(grad, torch.ones_like(x))
    (noise_grad,) = torch.autograd.grad(out[3:].sum(), x, allow_unused=True)
    assert noise_grad is None or not noise_grad.any()


@pytest.mark.parametrize(
    "sigma, message",
    [
        (-1.0, "sigma must be >= 0.0, got -1.0"),
        (np.array([0.1, -1.0, 0.1]), "scale < 0"),
        (np.ones((1, 1, 3)), "broad"),
    ],
)
def test_gaussian_augmentation_checks_sigma_on_an_empty_batch_as_art(sigma, message):
    """ART's numpy draw checks its scale whatever the batch; the drop-in returned an empty batch unchecked."""
    empty = np.zeros((0, 3), np.float32)
    with pytest.raises(ValueError):
        ArtGaussianAugmentation(sigma=sigma)(empty)
    with pytest.raises(ValueError, match=message):
        nfa.GaussianAugmentation(sigma=sigma)(empty)
    assert nfa.GaussianAugmentation(sigma=0.1)(empty)[0].shape == (0, 3)


def test_read_only_arrays_are_taken_without_a_warning():
    """A memmap opened for reading or a frozen array: torch warns on tensors over read-only memory, ART (which
    copies) on nothing; the drop-ins copy such arrays, and give the images of a writable one."""
    x = images(3)
    frozen = x.copy()
    frozen.setflags(write=False)
    clf = small_classifier()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adversarial = nfa.FastGradientMethod(clf, eps=0.1).generate(frozen)
        augmented, _ = nfa.GaussianAugmentation(sigma=0.1)(frozen)
    np.testing.assert_array_equal(adversarial, nfa.FastGradientMethod(clf, eps=0.1).generate(x))
    assert augmented.shape == (6, 1, 4, 4) and not frozen.flags.writeable


def test_saliency_map_method_without_clip_values_stops_a_loop_that_art_never_ends():
    """Without clip_values ART's search space never shrinks: an image whose top-2 target-gradient features keep
    raising other classes more than its target never reaches it, nor changes more features, and ART's loop runs
    forever. The drop-in stops a chunk's images after one step per feature, and says so."""
    clf = small_classifier(clip_values=None)
    x = images(6)
    targets = (clf.predict(x).argmax(1) + 1) % 4
    attack = nfa.SaliencyMapMethod(clf, theta=0.3, gamma=0.4, batch_size=3, **QUIET)
    with pytest.warns(UserWarning, match=r"short of their target after 16 steps .* Stopped there"):
        adversarial = attack.generate(x, targets)
    changed = (adversarial != x).reshape(6, -1).sum(1)
    assert (changed <= 0.4 * 16 + 2).all() and np.isfinite(adversarial).all()
    assert ((adversarial - x).max() > 16 * 0.3 / 2) and (clf.predict(adversarial).argmax(1) != targets).any()


def test_saliency_map_method_breaks_a_tie_for_the_second_feature_as_art():
    """A distinct largest target gradient and a six-way tie for the second: which tied feature ART takes is
    np.argpartition's choice, which torch's topk does not share for this pattern; the drop-in partitions such rows
    on the host as ART does."""
    weights = torch.tensor([1.0, 1.0, 0, 0, 0, 0, 0, 0, 2.0, 5.0, 2.0, 1.0, 1.0, 2.0, 2.0, 1.0, 1.0])
    clf = small_classifier(shape=(1, 1, 17), classes=3)
    with torch.no_grad():
        layer = clf.model[1]  # ART's classifier gives the model it wraps
        layer.weight.zero_()
        layer.bias.zero_()
        layer.weight[1] = weights
        layer.bias[0] = 50.0  # class 0 stays ahead: every image takes its whole budget
    x = np.full((2, 1, 1, 17), 0.2, np.float32)
    targets = np.ones(2, dtype=np.int64)
    expected = evasion.SaliencyMapMethod(clf, theta=0.1, gamma=0.1, **QUIET).generate(x, targets)
    ours = nfa.SaliencyMapMethod(clf, theta=0.1, gamma=0.1, **QUIET).generate(x, targets)
    np.testing.assert_array_equal(ours, expected)
    assert np.flatnonzero(ours[0] - x[0]).tolist() == [8, 9]


def test_saliency_map_method_paper_refuses_what_it_cannot_serve():
    """algorithm="paper" has no ART implementation to fall back on: postprocessing defences or a mask raise."""
    clf = small_classifier(postprocessing_defences=[HighConfidence()])
    attack = nfa.SaliencyMapMethod(clf, theta=0.1, gamma=0.1, algorithm="paper", **QUIET)
    with pytest.raises(ValueError, match="algorithm='paper' cannot run here: .*postprocessing"):
        attack.generate(images(2), np.array([1, 2]))


def test_saliency_map_method_paper_leaves_images_already_at_their_target():
    """ART returns an image whose prediction is its target as it is; the paper's JSMA refuses a target equal to the
    label, so algorithm="paper" attacks only the others (in chunks of batch_size)."""
    clf = small_classifier()
    x = images(5)
    predictions = clf.predict(x).argmax(1)
    targets = np.where(np.arange(5) % 2 == 0, predictions, (predictions + 1) % 4)
    attack = nfa.SaliencyMapMethod(clf, theta=0.3, gamma=0.5, batch_size=2, algorithm="paper", **QUIET)
    ours = attack.generate(x, targets)
    np.testing.assert_array_equal(ours[::2], x[::2])
    others = [torch.from_numpy(a[1::2]) for a in (x, predictions, targets)]
    np.testing.assert_array_equal(ours[1::2], JSMA(clf.model, 0.3, 0.5, clip=(0.0, 1.0))(*others).numpy())
