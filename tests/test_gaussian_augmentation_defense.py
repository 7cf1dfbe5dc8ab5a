"""The GDA defense: GaussianAugmentation (with ART's parameter names) and augment_batches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import nemesis_fast as nf
from nemesis_fast.data import DeviceLoader
from nemesis_fast.defenses import GaussianAugmentation, augment_batches


def labelled_batch(batch: int = 6, features: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose every pixel holds (label + 1) / 16, so that each output image says which label it carries."""
    y = torch.arange(batch) % 5
    x = ((y + 1).float() / 16).view(-1, 1).expand(batch, features).contiguous()
    return x, y


def labels_of(x: torch.Tensor) -> torch.Tensor:
    """The label each image encodes (the noise is small next to the 1/16 spacing: its mean over pixels)."""
    return (x.flatten(1).mean(1) * 16).round().long() - 1


def test_call_returns_originals_then_copies_with_labels_to_match():
    x, y = labelled_batch()
    gda = GaussianAugmentation(sigma=0.01, copies=3, seed=0)
    x_aug, y_aug = gda(x, y)
    assert x_aug.shape == (24, 20) and y_aug.tolist() == y.tolist() * 4
    assert torch.equal(x_aug[:6], x)
    assert torch.equal(labels_of(x_aug), y_aug)
    assert 0.005 < (x_aug[6:] - x.repeat(3, 1)).std() < 0.02
    no_labels, none = GaussianAugmentation(copies=1, seed=0)(x)
    assert no_labels.shape == (12, 20) and none is None


def test_seeded_calls_continue_the_stream_and_reset_rewinds():
    x, y = torch.rand(10, 3, 4), torch.arange(10)
    whole = GaussianAugmentation(copies=2, seed=42)(x, y)[0].view(3, 10, 3, 4)
    gda = GaussianAugmentation(copies=2, seed=42)
    first = gda(x[:4], y[:4])[0].view(3, 4, 3, 4)
    second = gda(x[4:], y[4:])[0].view(3, 6, 3, 4)
    assert torch.equal(torch.cat([first, second], dim=1), whole)
    next_epoch = gda(x, y)[0]
    assert not torch.equal(next_epoch.view(3, 10, 3, 4), whole)  # fresh noise after the first pass
    gda.reset()
    assert torch.equal(gda(x, y)[0].view(3, 10, 3, 4), whole)


def test_unseeded_noise_follows_torch_manual_seed():
    x = torch.rand(4, 8)
    gda = GaussianAugmentation(copies=2)
    torch.manual_seed(3)
    a = gda(x)[0]
    b = gda(x)[0]
    torch.manual_seed(3)
    assert torch.equal(gda(x)[0], a) and not torch.equal(a, b)


def test_paper_defaults():
    gda = GaussianAugmentation()
    assert (gda.sigma, gda.copies, gda.clip, gda.include_original) == (0.3, 10, (0.0, 1.0), True)
    x_aug, _ = gda(torch.rand(2, 3, 8, 8))
    assert x_aug.shape == (22, 3, 8, 8) and x_aug.min() >= 0 and x_aug.max() <= 1


def test_uint8_images_become_float_in_the_unit_interval():
    x = torch.randint(0, 256, (3, 1, 4, 4), dtype=torch.uint8)
    x_aug, _ = GaussianAugmentation(copies=1, seed=1)(x)
    assert x_aug.dtype == torch.float32 and torch.equal(x_aug[:3], x.float() / 255)
    assert GaussianAugmentation(copies=1, seed=1, out_dtype=torch.bfloat16)(x)[0].dtype == torch.bfloat16


@pytest.mark.parametrize("ratio,copies,extra", [(1.0, 1, 0), (2.0, 2, 0), (0.5, 0, 4), (2.25, 2, 2), (1.125, 1, 1)])
def test_art_ratio(ratio, copies, extra):
    x, y = torch.rand(8, 50, generator=torch.Generator().manual_seed(0)), torch.arange(8)
    gda = GaussianAugmentation(sigma=0.01, ratio=ratio, clip=None, seed=5)
    assert gda.copies == copies
    x_aug, y_aug = gda(x, y)
    assert x_aug.shape[0] == 8 + int(8 * ratio) == 8 * (copies + 1) + extra
    assert torch.equal(y_aug[: 8 * (copies + 1)], y.repeat(copies + 1))
    nearest = torch.cdist(x_aug, x).argmin(1)
    assert torch.equal(nearest, y_aug)  # every image, the random subset included, keeps its label
    subset = y_aug[8 * (copies + 1) :]
    assert len(subset.unique()) == extra  # drawn without replacement


def test_art_ratio_gives_arts_number_of_noisy_samples_for_every_batch_size():
    """int(B * ratio) noisy samples, as ART adds: the extra subset was round(frac * B), one more for B = 1, 0.7."""
    for ratio in (0.3, 0.5, 0.7, 1.5, 3.3):
        gda = GaussianAugmentation(sigma=0.01, ratio=ratio, clip=None, seed=5)
        for batch in range(1, 13):
            assert gda(torch.rand(batch, 3))[0].shape[0] == batch + int(batch * ratio), (ratio, batch)


def test_art_ratio_draws_another_subset_every_call():
    """A seeded augmentation drew the same subset positions at every call, every epoch."""
    x, y = torch.rand(16, 5, generator=torch.Generator().manual_seed(0)), torch.arange(16)
    gda = GaussianAugmentation(sigma=0.01, ratio=1.25, clip=None, seed=5)
    subsets = [gda(x, y)[1][32:].tolist() for _ in range(4)]
    assert len({tuple(s) for s in subsets}) == 4, subsets
    gda.reset()
    assert gda(x, y)[1][32:].tolist() == subsets[0]  # reproducible


def test_art_ratios_extra_subset_draws_noise_of_its_own():
    """The extra subset's copies share no noise with copy 0 of the batch (under the main seed, its row j would
    get the noise of copy 0 of sample j again)."""
    x = torch.zeros(8, 50)  # unclipped: every noisy row is its noise
    x_aug, _ = GaussianAugmentation(sigma=1.0, ratio=1.5, clip=None, seed=5)(x)
    copy0, extra = x_aug[8:16], x_aug[16:]
    assert extra.shape == (4, 50) and torch.cdist(extra, copy0).min() > 1.0


def test_art_augmentation_false_keeps_only_noisy_versions():
    x, y = labelled_batch()
    gda = GaussianAugmentation(sigma=0.01, augmentation=False, ratio=3.0, seed=1)
    x_aug, y_aug = gda(x, y)
    assert x_aug.shape == x.shape and torch.equal(y_aug, y) and not torch.equal(x_aug, x)
    assert torch.equal(labels_of(x_aug), y)


def test_art_clip_values_and_numpy_arrays():
    x = np.random.default_rng(0).random((5, 4, 4, 3), dtype=np.float32)  # ART's NHWC float32
    y = np.arange(5)
    gda = GaussianAugmentation(sigma=1.0, ratio=1.0, clip_values=(0.25, 0.75), seed=2)
    x_aug, y_aug = gda(x, y)
    assert isinstance(x_aug, np.ndarray) and isinstance(y_aug, np.ndarray)
    assert x_aug.shape == (10, 4, 4, 3) and x_aug.dtype == np.float32
    assert x_aug.min() == 0.25 and x_aug.max() == 0.75
    assert y_aug.tolist() == [0, 1, 2, 3, 4] * 2


def test_same_sizes_and_noise_level_as_art():
    art = pytest.importorskip("art.defences.preprocessor")
    x = np.random.default_rng(1).random((40, 3, 8, 8), dtype=np.float32) * 0.5 + 0.25
    y = np.arange(40)
    for kwargs in ({"ratio": 1.0}, {"ratio": 2.5}, {"ratio": 0.3}, {"augmentation": False}):
        ours = GaussianAugmentation(sigma=0.05, clip_values=(0.0, 1.0), seed=0, **kwargs)(x, y)
        theirs = art.GaussianAugmentation(sigma=0.05, clip_values=(0.0, 1.0), **kwargs)(x, y)
        assert ours[0].shape == theirs[0].shape and ours[1].shape == theirs[1].shape, kwargs
        if kwargs.get("augmentation", True):
            assert np.array_equal(ours[0][:40], theirs[0][:40])  # originals first in both
        noise = ours[0][40:] - x[ours[1][40:]] if kwargs.get("augmentation", True) else ours[0] - x
        assert abs(noise.std() - 0.05) < 0.005, kwargs  # y = arange: each label is its image's index


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"sigma": -1.0}, ValueError, "sigma must be >= 0"),
        ({"sigma": float("nan")}, ValueError, "sigma must be finite"),
        ({"copies": -2}, ValueError, "copies must be >= 0"),
        ({"ratio": 0.0}, ValueError, "ratio must be > 0"),
        ({"ratio": 2.0, "copies": 3}, ValueError, "either copies or ratio"),
        ({"ratio": 2.0, "copies": 10}, ValueError, "either copies or ratio"),  # 10, the default, too
        ({"clip": (1.0, 0.0)}, ValueError, "clip must have low <= high"),
        ({"clip_values": (1.0, 0.0)}, ValueError, "clip_values must have low <= high"),
        ({"clip_values": (0.0, 2.0), "clip": (0.0, 3.0)}, ValueError, "either clip or clip_values"),
        ({"augmentation": "yes"}, TypeError, "augmentation must be a bool"),
        ({"include_original": 1}, TypeError, "include_original must be a bool, got int"),
        ({"seed": 0.5}, TypeError, "seed must be an int"),
    ],
)
def test_bad_settings(kwargs, error, match):
    with pytest.raises(error, match=match):
        GaussianAugmentation(**kwargs)


def test_bad_calls():
    gda = GaussianAugmentation(copies=1, seed=0)
    with pytest.raises(ValueError, match="x and y must have the same length"):
        gda(torch.rand(4, 3), torch.arange(5))
    with pytest.raises(TypeError, match="x must be a torch.Tensor or a numpy array"):
        gda([[0.5]])
    with pytest.raises(TypeError, match="y must be"):
        gda(torch.rand(2, 3), [0, 1])
    with pytest.raises(TypeError, match="x must have dtype"):
        gda(torch.ones(2, 3, dtype=torch.int64))
    with pytest.raises(TypeError, match="out_dtype=uint8 cannot hold"):
        GaussianAugmentation(out_dtype=torch.uint8)(torch.rand(2, 3))


def test_augment_batches_wraps_any_loader():
    batches = [labelled_batch(4), labelled_batch(3)]
    gda = GaussianAugmentation(sigma=0.01, copies=2, seed=9)
    out = list(augment_batches(batches, gda, device="cpu"))
    assert [x.shape[0] for x, _ in out] == [12, 9]
    for x_aug, y_aug in out:
        assert torch.equal(labels_of(x_aug), y_aug)
    shuffled = list(augment_batches(batches, GaussianAugmentation(sigma=0.01, copies=2, seed=9), shuffle=True))
    for (x_aug, y_aug), (x_plain, _) in zip(shuffled, out):
        assert torch.equal(labels_of(x_aug), y_aug)  # images and labels permuted together
        assert torch.equal(x_aug.sort(0).values, x_plain.sort(0).values)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*labelled_batch(10)), batch_size=4)
    sizes = [x.shape[0] for x, _ in augment_batches(loader, GaussianAugmentation(copies=1, seed=0))]
    assert sizes == [8, 8, 4]
    with pytest.raises(TypeError, match="gda must be a GaussianAugmentation"):
        next(augment_batches(batches, lambda x, y: (x, y)))
    with pytest.raises(TypeError, match="loader must yield"):
        next(augment_batches([torch.rand(2, 3)], gda))


def test_augment_batches_shuffles_reproducibly():
    """The permutations took torch's global generator whatever the seeds: two passes with one seed differed."""
    batches = [labelled_batch(4), labelled_batch(3)]

    def labels_of_a_pass(**kwargs) -> list[list[int]]:
        gda = GaussianAugmentation(sigma=0.01, copies=2, seed=9)
        return [y.tolist() for _, y in augment_batches(batches, gda, shuffle=True, **kwargs)]

    assert labels_of_a_pass(seed=4) == labels_of_a_pass(seed=4) != labels_of_a_pass(seed=5)
    state = torch.get_rng_state()
    labels_of_a_pass(seed=4)
    assert torch.equal(torch.get_rng_state(), state), "a seeded pass leaves torch's generator alone"
    torch.manual_seed(3)
    first = labels_of_a_pass()
    torch.manual_seed(3)
    assert labels_of_a_pass() == first, "seed=None follows torch.manual_seed"
    with pytest.raises(ValueError, match="seed"):
        labels_of_a_pass(seed=-1)
    with pytest.raises(TypeError, match="shuffle"):
        next(augment_batches(batches, GaussianAugmentation(seed=0), shuffle="yes"))


@pytest.mark.cuda
def test_augment_batches_moves_host_batches_to_the_gpu():
    batches = [labelled_batch(4)]
    x_aug, y_aug = next(augment_batches(batches, GaussianAugmentation(copies=2, seed=1), device="cuda"))
    assert x_aug.is_cuda and y_aug.is_cuda and x_aug.shape[0] == 12
    cpu = GaussianAugmentation(copies=2, seed=1)(*batches[0])[0]
    torch.testing.assert_close(x_aug.cpu(), cpu, rtol=0, atol=1e-5)


def test_device_loader_uses_it_as_augment():
    images = torch.randint(0, 256, (10, 1, 4, 4), dtype=torch.uint8)
    labels = torch.arange(10)
    loader = DeviceLoader(images, labels, 5, device="cpu", augment=GaussianAugmentation(copies=1, seed=0))
    x, y = next(iter(loader))
    assert x.shape == (10, 1, 4, 4) and y.shape == (10,) and torch.equal(y[:5], y[5:])


def test_noise_level_is_sigma_before_clipping():
    x = torch.full((64, 256), 0.5)
    x_aug, _ = GaussianAugmentation(sigma=0.1, copies=4, clip=None, seed=4)(x)
    noise = x_aug[64:] - 0.5
    assert abs(noise.std().item() - 0.1) < 4 * 0.1 / math.sqrt(2 * noise.numel())
    assert abs(noise.mean().item()) < 4 * 0.1 / math.sqrt(noise.numel())
    assert nf.gaussian_augment is not None


def test_fixed_noisy_copies_are_the_reference_noise_the_same_every_epoch():
    from nemesis_fast.defenses import FixedNoisyCopies
    from nemesis_fast.reference.gaussian_augment import gaussian_augment as reference

    x = torch.randint(0, 256, (13, 1, 5, 3), dtype=torch.uint8)
    y = torch.arange(13)
    copies = FixedNoisyCopies(sigma=0.5, copies=3, clip=None, seed=11)
    loader = DeviceLoader(x, y, 6, seed=2, expand=copies, device="cpu")
    assert (len(loader), loader.num_samples) == (9, 13 * 4)
    epochs = [[(b[0].clone(), b[1].clone()) for b in loader] for _ in range(2)]
    sets = []
    for epoch in epochs:
        images, labels = torch.cat([b[0] for b in epoch]), torch.cat([b[1] for b in epoch])
        order = torch.argsort(images.flatten(1).sum(1) * 1000 + labels)
        sets.append((images[order], labels[order]))
    assert not torch.equal(torch.cat([b[1] for b in epochs[0]]), torch.cat([b[1] for b in epochs[1]]))  # shuffled
    assert torch.equal(sets[0][0], sets[1][0])  # ... but the same rows every epoch
    # Row c of sample b is the reference's copy c - 1 of sample b (its global index), unclipped.
    expected = reference(x, 3, 0.5, None, None, True, 11, 0, None)
    order = torch.argsort(expected.flatten(1).sum(1) * 1000 + y.repeat(4))
    assert torch.equal(sets[0][0], expected[order])
    assert sets[0][0].min() < 0 or sets[0][0].max() > 1  # not clipped


@pytest.mark.parametrize("sigma", [0.0, 0.3])
def test_fixed_noisy_copies_of_float_images_are_the_ops_copies_bit_for_bit(sigma):
    """x + sigma * noise rounded twice, as the op computes it (a fused multiply-add would round once), and clipped,
    for any sigma: at sigma = 0 the copies are the clipped originals, never x itself."""
    from nemesis_fast.defenses import FixedNoisyCopies

    x = torch.rand(6, 1, 4, 5, generator=torch.Generator().manual_seed(3)) * 1.4 - 0.2
    copy = torch.tensor([0, 1, 2, 1, 2, 0])
    sample = torch.tensor([0, 1, 2, 3, 4, 5]) + 100
    rows = FixedNoisyCopies(sigma=sigma, copies=2, clip=(0.0, 1.0), seed=9)(x, copy, sample)
    ops = nf.gaussian_augment(x, 2, sigma, (0.0, 1.0), include_original=False, seed=9, offset=100).view(2, 6, 1, 4, 5)
    for i in range(6):
        wanted = x[i] if copy[i] == 0 else ops[copy[i] - 1, i]
        assert torch.equal(rows[i], wanted), i
    assert rows.data_ptr() != x.data_ptr()
    with pytest.raises(
        TypeError, match=r"x \(float images: uint8 pixels divided by 255 first\) must have dtype .*; got uint8"
    ):
        FixedNoisyCopies(sigma=sigma, copies=2)((x * 255).to(torch.uint8), copy, sample)  # noise in units of 1/255 else


def test_gda_fixed_set_trains_on_every_row_once_per_epoch():
    from nemesis_fast.training import train

    torch.manual_seed(0)
    images = torch.randint(0, 256, (40, 1, 8, 8), dtype=torch.uint8)
    labels = torch.arange(40) % 10
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    settings = {"copies": 3, "clip": None, "fixed_set": True}
    result = train(
        model, (images, labels), "gda", settings=settings, epochs=1, batch_size=16, val_fraction=0.0, log=False
    )
    assert result.history[0]["images"] == 40 * 4 and result.steps == 10  # 160 rows, batches of 16
    with pytest.raises(ValueError, match="fixed_set=True always includes the originals"):
        train(model, (images, labels), "gda", settings={**settings, "include_original": False}, log=False)


def test_training_the_feature_squeezing_wrapper_trains_on_squeezed_images():
    from nemesis_fast.defenses import FeatureSqueezing, reduce_bit_depth
    from nemesis_fast.training import train

    images = torch.randint(0, 256, (48, 1, 6, 6), dtype=torch.uint8)
    labels = torch.arange(48) % 10
    squeezed = reduce_bit_depth(images.float() / 255, 1)

    def fresh() -> torch.nn.Module:
        torch.manual_seed(3)
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 10))

    wrapped = FeatureSqueezing(fresh(), 1)  # the authors' feature squeezing: in fit() as in predict()
    plain = fresh()
    kwargs = dict(epochs=2, batch_size=16, val_fraction=0.0, seed=1, log=False)
    train(wrapped, (images, labels), "standard", **kwargs)
    train(plain, (squeezed, labels), "standard", **kwargs)
    for a, b in zip(wrapped.model.parameters(), plain.parameters()):
        assert torch.equal(a, b)
