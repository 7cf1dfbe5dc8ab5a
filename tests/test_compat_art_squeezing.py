"""nemesis_fast.compat.art.FeatureSqueezing against ART's: ART's values (its arithmetic as numpy 1 ran it, bit for bit,
and its own call's float64 values to 2 ulp), a PyTorchClassifier that runs with it where ART's own fails under numpy 2,
the identity gradient (BPDA) on both of ART's gradient paths, the drop-in attacks served through it, ART's checks."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from _peers import art_classifier, no_fallback

pytest.importorskip("art")

from art.attacks.evasion import FastGradientMethod as ArtFGM  # noqa: E402
from art.defences.preprocessor import FeatureSqueezing as ArtFeatureSqueezing  # noqa: E402

from nemesis_fast.compat.art import FastGradientMethod, FeatureSqueezing  # noqa: E402

CLIPS = [(0.0, 1.0), (-0.5, 0.5), (0.1, 0.9), (0.0, 255.0)]
NUMPY_2 = int(np.__version__.split(".")[0]) >= 2  # whose promotion makes ART's own call give float64 images


def arts_arithmetic(x: np.ndarray, clip_values: tuple[float, float], bit_depth: int) -> np.ndarray:
    """ART's FeatureSqueezing.__call__ line by line, its 2^bit_depth - 1 a Python float (a float32 computation, as
    under numpy 1's casting; numpy 2 makes ART's numpy float64 scalar turn the images into float64)."""
    x_normalized = x - clip_values[0]
    x_normalized = x_normalized / (clip_values[1] - clip_values[0])
    max_value = float(np.rint(2**bit_depth - 1))
    res = np.rint(x_normalized * max_value) / max_value
    res = res * (clip_values[1] - clip_values[0])
    return res + clip_values[0]


@pytest.mark.parametrize("clip_values", CLIPS)
def test_the_values_are_arts(clip_values):
    low, high = clip_values
    rng = np.random.default_rng(0)
    x = (rng.random((64, 3, 8, 8)) * (high - low) * 1.2 + low - 0.1 * (high - low)).astype(np.float32)  # some outside
    for bit_depth in (1, 2, 4, 5, 8, 16, 23, 64):
        ours = FeatureSqueezing(clip_values=clip_values, bit_depth=bit_depth)
        squeezed, y = ours(x, np.arange(64))
        expected = arts_arithmetic(x, clip_values, bit_depth)
        assert squeezed.dtype == expected.dtype == np.float32 and (y == np.arange(64)).all()
        np.testing.assert_array_equal(squeezed, expected)
        arts = ArtFeatureSqueezing(clip_values=clip_values, bit_depth=bit_depth)(x)[0]
        assert arts.dtype == (np.float64 if NUMPY_2 else np.float32)  # numpy 2 turns them into float64
        if bit_depth <= 12:  # within 2 ulp (float32's rounding of each step); at 16 bits and more, float32's
            # x * (2^bits - 1) can round across a half and change a level, as numpy 1 ART's did too
            ulp = np.spacing(np.float32(max(abs(low), abs(high)) * 1.2))
            assert np.abs(squeezed - arts).max() <= 2 * ulp
        forward, _ = ours.forward(torch.from_numpy(x))
        np.testing.assert_array_equal(forward.numpy(), expected)
    x64 = x.astype(np.float64)
    np.testing.assert_array_equal(
        FeatureSqueezing(clip_values, bit_depth=3)(x64)[0], ArtFeatureSqueezing(clip_values, 3)(x64)[0]
    )
    uint8 = (rng.random((4, 3, 8, 8)) * 255).astype(np.uint8)
    assert FeatureSqueezing((0, 255), bit_depth=3)(uint8)[0].dtype == np.float32


def test_bounds_per_feature_or_as_numpy_scalars_give_arts_values_in_the_images_dtype():
    """clip_values as arrays broadcast against x (ART takes them): ART's arithmetic with the bounds in x's dtype,
    float32 (numpy would make float64 bounds turn the images into float64); numpy scalars and 0-d arrays as the
    Python floats they hold."""
    rng = np.random.default_rng(2)
    low = rng.random((3, 1, 1)) * 0.3  # per channel, float64
    high = low + 0.5 + rng.random((3, 1, 1)) * 0.5
    x = (rng.random((8, 3, 4, 4)) * 1.2 - 0.1).astype(np.float32)
    for bit_depth in (1, 3, 8):
        ours = FeatureSqueezing(clip_values=(low, high), bit_depth=bit_depth)
        expected = arts_arithmetic(x, (low.astype(np.float32), high.astype(np.float32)), bit_depth)
        squeezed = ours(x)[0]
        assert squeezed.dtype == expected.dtype == np.float32
        np.testing.assert_array_equal(squeezed, expected)
        np.testing.assert_array_equal(ours.forward(torch.from_numpy(x))[0].numpy(), expected)
    for low, high in ((np.float32(0.1), np.float32(0.9)), (np.array(0.1), np.array(0.9))):  # numpy scalars, 0-d arrays
        squeezed = FeatureSqueezing(clip_values=(low, high), bit_depth=3)(x)[0]
        assert squeezed.dtype == np.float32
        np.testing.assert_array_equal(squeezed, FeatureSqueezing((float(low), float(high)), bit_depth=3)(x)[0])


def test_a_read_only_array_is_taken_without_a_warning():
    """A memmap opened for reading or a frozen array: torch warns on tensors over read-only memory, ART on nothing."""
    x = np.random.default_rng(3).random((2, 1, 4, 4)).astype(np.float32)
    x.setflags(write=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        squeezed, _ = FeatureSqueezing((0.0, 1.0), bit_depth=2)(x)
    np.testing.assert_array_equal(squeezed, arts_arithmetic(x, (0.0, 1.0), 2))


@pytest.mark.cuda
def test_the_values_on_a_gpu_are_arts():
    """On CUDA too: its division by a scalar is a product with the reciprocal, which rounds otherwise."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    x = np.random.default_rng(1).random((64, 3, 32, 32), dtype=np.float32) * 1.2 - 0.1
    for clip_values in CLIPS:
        for bit_depth in (1, 3, 8, 12):
            expected = arts_arithmetic(x * (clip_values[1] - clip_values[0]) + clip_values[0], clip_values, bit_depth)
            images = torch.from_numpy(x * (clip_values[1] - clip_values[0]) + clip_values[0]).cuda()
            squeezed, _ = FeatureSqueezing(clip_values, bit_depth).forward(images)
            assert squeezed.device.type == "cuda"
            np.testing.assert_array_equal(squeezed.cpu().numpy(), expected)


def test_a_classifier_with_it_runs_where_arts_own_fails_and_the_gradient_is_the_identity(mnist_model, mnist_test_data):
    model = copy.deepcopy(mnist_model)  # ART's gradients leave .grad in the parameters
    x, y = (t[:16].numpy() for t in mnist_test_data)
    arts = art_classifier(model, (1, 28, 28), 10, preprocessing_defences=[ArtFeatureSqueezing((0.0, 1.0), 1)])
    squeezing = FeatureSqueezing((0.0, 1.0), bit_depth=1)
    classifier = art_classifier(model, (1, 28, 28), 10, preprocessing_defences=[squeezing])
    plain = art_classifier(model, (1, 28, 28), 10)
    squeezed = squeezing(x)[0]
    np.testing.assert_array_equal(classifier.predict(x), plain.predict(squeezed))
    if NUMPY_2:
        with pytest.raises(RuntimeError, match="Input type \\(double\\)"):
            arts.predict(x)
    else:  # numpy 1: ART's own runs, on the same squeezed images
        np.testing.assert_array_equal(arts.predict(x), classifier.predict(x))
    # BPDA: the gradient at x is the model's at the squeezed images, from numpy inputs and from tensors (both
    # through forward, the classifier's preprocessing being all PyTorch)
    one_hot = np.eye(10, dtype=np.float32)[y]  # (ART's loss_gradient takes one-hot labels)
    expected = plain.loss_gradient(squeezed, one_hot)
    assert np.abs(expected).sum() > 0
    np.testing.assert_array_equal(classifier.loss_gradient(x, one_hot), expected)
    x_t = torch.from_numpy(x).requires_grad_(True)
    through_tensors = classifier.loss_gradient(x_t, torch.from_numpy(one_hot))
    np.testing.assert_array_equal(through_tensors.detach().cpu().numpy(), expected)
    # ART's estimate_gradient (the path of a chain with numpy preprocessing) goes through estimate_forward
    np.testing.assert_array_equal(squeezing.estimate_gradient(x, expected), expected)
    # the drop-in attacks keep their torch path through it, and give ART's FGM's images on that classifier
    with no_fallback():
        ours = FastGradientMethod(classifier, eps=0.1).generate(x, y)
    np.testing.assert_array_equal(ours, ArtFGM(classifier, eps=0.1).generate(x, y))


def test_arts_checks_and_non_finite_bounds():
    for kwargs, message in (
        ({"bit_depth": 0}, "bit depth must be between 1 and 64"),
        ({"bit_depth": 65}, "bit depth must be between 1 and 64"),
        ({"bit_depth": 2.0}, "bit depth must be between 1 and 64"),
        ({"clip_values": (1.0, 0.0)}, "min >= max"),
        ({"clip_values": (0.0, 1.0, 2.0)}, "should be a tuple of 2 floats"),
        ({"clip_values": (float("nan"), 1.0)}, "clip_values\\[0\\] must be finite"),
        ({"clip_values": (0.0, float("inf"))}, "clip_values\\[1\\] must be finite"),
    ):
        with pytest.raises(ValueError, match=message):
            FeatureSqueezing(**{"clip_values": (0.0, 1.0), **kwargs})
    squeezing = FeatureSqueezing((0.0, 1.0))
    with pytest.raises(ValueError, match="bit depth"):
        squeezing.set_params(bit_depth=0)
    assert isinstance(squeezing, ArtFeatureSqueezing)
