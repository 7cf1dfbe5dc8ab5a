"""The paper's defenses on their own and as training recipes: feature squeezing, label smoothing, FGSM
adversarial training, VAT, GDA; each recipe trains a few steps and changes what it should."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nemesis_fast as nf
from nemesis_fast.attacks import FGSM
from nemesis_fast.data import DeviceLoader
from nemesis_fast.defenses import (
    PAPER_BIT_DEPTH,
    RECIPES,
    FeatureSqueezing,
    FixedNoisyCopies,
    GaussianAugmentation,
    fgsm_adversarial_loss,
    label_smoothing_loss,
    make_recipe,
    median_smooth,
    offline_examples,
    paper_settings,
    reduce_bit_depth,
    smooth_labels,
    vat_loss,
    vat_perturbation,
)
from nemesis_fast.models import mnist_cnn


def tiny_net(seed: int = 0, channels: int = 1, size: int = 8) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(channels, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * (size - 2) ** 2, 10))


def tiny_batch(n: int = 6, seed: int = 0, size: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, size, size, generator=g), torch.randint(0, 10, (n,), generator=g)


def quick_train(model: nn.Module, data, recipe="standard", **kwargs):
    """nf.train on the CPU for one epoch of batches of 8, without validation or log lines."""
    options = {"epochs": 1, "batch_size": 8, "val_fraction": 0, "device": "cpu", "log": False, **kwargs}
    return nf.train(model, data, recipe, **options)


def tiny_uint8(n: int = 40, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8), torch.arange(n) % 10


# ---------------------------------------------------------------- feature squeezing


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_bit_depth_levels(bits):
    x = torch.rand(4, 3, 9, 9)
    out = reduce_bit_depth(x, bits)
    levels = 2**bits - 1
    assert torch.equal(out * levels, torch.round(out * levels)), "every value lies on the grid k / (2^b - 1)"
    assert out.unique().numel() <= 2**bits and (out - x).abs().max() <= 0.5 / levels + 1e-6
    assert torch.equal(reduce_bit_depth(out, bits), out)
    grid = torch.arange(levels + 1) / levels
    assert torch.equal(reduce_bit_depth(grid, bits), grid)


def test_one_bit_is_a_threshold_at_one_half():
    x = torch.tensor([0.0, 0.2, 0.49, 0.51, 0.9, 1.0])
    assert reduce_bit_depth(x, 1).tolist() == [0, 0, 0, 1, 1, 1]
    assert PAPER_BIT_DEPTH == {"mnist": 1, "cifar10": 3}


def test_bit_depth_reduction_of_16_bit_images_is_the_float32_grid_rounded():
    x = torch.rand(1000, generator=torch.Generator().manual_seed(0))
    x[:2] = torch.tensor([0.0, 1.0])
    for dtype in (torch.float16, torch.bfloat16):
        for bits in (1, 8, 11, 16):  # 1.0 * 65535 overflows float16
            expected = reduce_bit_depth(x.to(dtype).float(), bits).to(dtype)
            assert torch.equal(reduce_bit_depth(x.to(dtype), bits), expected), (dtype, bits)


@pytest.mark.parametrize("size", [2, 3, 5, 8])
def test_median_smoothing_matches_scipy(size):
    """scipy's default border mode, "reflect" (the edge pixel repeated), as Xu et al.'s code and ART use."""
    ndimage = pytest.importorskip("scipy.ndimage")
    x = torch.rand(2, 3, 9, 7, dtype=torch.float64)
    expected = ndimage.median_filter(x.numpy(), size=(1, 1, size, size))
    np.testing.assert_array_equal(median_smooth(x, size).numpy(), expected)
    assert torch.equal(median_smooth(x, 1), x)


def test_feature_squeezing_wrapper_forward_and_gradients():
    model = tiny_net()
    x, _ = tiny_batch()
    squeezed = reduce_bit_depth(x, 1)
    for median in (None, 2):
        fs = FeatureSqueezing(model, 1, median_size=median)
        target = median_smooth(squeezed, 2) if median else squeezed
        torch.testing.assert_close(fs(x), model(target))
    # BPDA (default): the gradient of the model at the squeezed point, passed straight through
    fs = FeatureSqueezing(model, 1)
    leaf = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(fs(leaf)[:, 3].sum(), leaf)
    at_squeezed = squeezed.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(model(at_squeezed)[:, 3].sum(), at_squeezed)
    torch.testing.assert_close(grad, expected)
    assert grad.abs().sum() > 0
    # the true gradient through the rounding is zero: gradient masking
    masked = FeatureSqueezing(model, 1, bpda=False)
    (zero,) = torch.autograd.grad(masked(leaf)[:, 3].sum(), leaf)
    assert torch.equal(zero, torch.zeros_like(zero))
    assert list(fs.state_dict()) == [f"model.{k}" for k in model.state_dict()]
    assert "bpda=True" in repr(fs)


def test_feature_squeezings_bpda_passes_forward_mode_tangents_too():
    """Forward-mode AD (torch.func.jvp, forward_ad's dual tensors) sees the same identity rule as backward: the
    tangent used to be dropped (0), or refused."""
    from torch.autograd import forward_ad

    model, (x, _) = tiny_net(), tiny_batch(2)
    fs, v = FeatureSqueezing(model, 1), torch.randn_like(x)
    expected = torch.func.jvp(model, (reduce_bit_depth(x, 1),), (v,))[1]
    torch.testing.assert_close(torch.func.jvp(fs, (x,), (v,))[1], expected)
    with forward_ad.dual_level():
        torch.testing.assert_close(forward_ad.unpack_dual(fs(forward_ad.make_dual(x, v))).tangent, expected)


def test_feature_squeezing_bad_arguments():
    with pytest.raises(ValueError, match="bit_depth must be >= 1"):
        FeatureSqueezing(tiny_net(), 0)
    with pytest.raises(ValueError, match="cannot both be None"):
        FeatureSqueezing(tiny_net(), None)
    with pytest.raises(TypeError, match="bpda must be a bool"):
        FeatureSqueezing(tiny_net(), 1, bpda="yes")
    with pytest.raises(TypeError, match="model must be callable"):
        FeatureSqueezing(3, 1)
    with pytest.raises(ValueError, match="too large"):
        median_smooth(torch.rand(1, 1, 4, 4), 9)
    with pytest.raises(TypeError, match="x must have dtype"):
        reduce_bit_depth(torch.zeros(3, dtype=torch.uint8), 1)


# ---------------------------------------------------------------- label smoothing


def test_smoothed_targets():
    targets = smooth_labels(torch.tensor([0, 3, 9]), 10, 0.9)
    assert targets.shape == (3, 10)
    torch.testing.assert_close(targets.sum(1), torch.ones(3))
    assert targets[1, 3] == pytest.approx(0.9) and targets[1, 0] == pytest.approx(0.1 / 9)
    assert torch.equal(smooth_labels(torch.tensor([2]), 4, 1.0), F.one_hot(torch.tensor([2]), 4).float())
    with pytest.raises(ValueError, match="confidence must be >= 0.1"):
        smooth_labels(torch.tensor([0]), 10, 0.05)
    for bad in ([0, 10], [-1, 3]):
        with pytest.raises(ValueError, match=r"y must hold classes in \[0, 10\)"):
            smooth_labels(torch.tensor(bad), 10)
    for dtype in (torch.int64, torch.bool):  # targets of 0.9 and 0.011 would be all 0, or all True
        with pytest.raises(TypeError, match=f"dtype must be a float dtype .*, got {dtype}"):
            smooth_labels(torch.tensor([0, 3]), 10, dtype=dtype)


def test_a_confidence_below_one_over_the_classes_is_refused_before_training():
    """The settings took it, and training failed only inside its first loss."""
    steps = []
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 10))
    model.register_forward_hook(lambda *_: steps.append(1))
    data = (torch.zeros(8, 1, 2, 2, dtype=torch.uint8), torch.arange(8))
    with pytest.raises(ValueError, match=r"settings: label_smoothing's confidence must be >= 1/10 .* got 0.05"):
        nf.train(model, data, "label_smoothing", settings={"confidence": 0.05}, device="cpu", log=False)
    assert len(steps) == 1  # the one forward pass that learns the number of classes


def test_a_confidence_of_exactly_one_over_the_classes_is_taken():
    """confidence = 1/K (the uniform targets) is the lower end of [1/K, 1], allowed."""
    make_recipe("label_smoothing", {"confidence": 0.25}).check_classes(4)
    torch.testing.assert_close(smooth_labels(torch.tensor([1]), 4, 0.25), torch.full((1, 4), 0.25))


def test_label_smoothing_loss_and_recipe():
    logits, y = torch.randn(5, 10), torch.tensor([1, 2, 3, 4, 5])
    # 0.9 on the true class and 0.1/9 elsewhere is torch's label_smoothing = 0.1 * 10 / 9
    expected = F.cross_entropy(logits, y, label_smoothing=0.1 * 10 / 9)
    torch.testing.assert_close(label_smoothing_loss(logits, y, 0.9), expected)
    model = tiny_net()
    x, y = tiny_batch()
    recipe = make_recipe("label_smoothing")
    soft = -(smooth_labels(y, 10, 0.9) * F.log_softmax(model(x), 1)).sum(1).mean()
    torch.testing.assert_close(recipe.loss(model, x, y), soft)
    assert not torch.allclose(recipe.loss(model, x, y), make_recipe("standard").loss(model, x, y))


# ---------------------------------------------------------------- GDA


def test_gda_recipe_multiplies_the_batch_on_the_fly():
    images, labels = tiny_uint8()
    recipe = make_recipe("gda", seed=3)
    loader = DeviceLoader(images, labels, 8, seed=0, device="cpu", augment=recipe.augment(torch.device("cpu")))
    batches = list(loader)
    x, y = batches[0]
    assert x.shape == (8 * 11, 1, 8, 8) and y.shape == (88,)
    originals, noisy = x[:8], x[8:].view(10, 8, 1, 8, 8)
    assert torch.equal(y.view(11, 8), y[:8].expand(11, 8))
    assert x.min() >= 0 and x.max() <= 1
    interior = (originals > 0.2) & (originals < 0.8)  # away from the clip, the noise is N(0, 0.3^2)
    noise = (noisy - originals)[:, interior]
    assert 0.25 < noise.std().item() < 0.35 and abs(noise.mean().item()) < 0.05
    assert not torch.equal(batches[1][0][8:16] - batches[1][0][:8], noisy[0]), "fresh noise for every batch"
    result = quick_train(tiny_net(), (images, labels), "gda")
    assert result.history[0]["images"] == 40 * 11
    changed = quick_train(tiny_net(), (images, labels), "gda", settings={"copies": 2})
    assert changed.history[0]["images"] == 40 * 3 and changed.settings["copies"] == 2


# ---------------------------------------------------------------- FGSM adversarial training


def test_online_fgsm_loss_mixes_clean_and_adversarial():
    model = tiny_net()
    x, y = tiny_batch()
    x_adv = FGSM(model, 0.3)(x, y)
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6 and not torch.equal(x_adv, x)
    expected = 0.5 * F.cross_entropy(model(x), y) + 0.5 * F.cross_entropy(model(x_adv), y)
    torch.testing.assert_close(fgsm_adversarial_loss(model, x, y, 0.3), expected)
    recipe = make_recipe("fgsm_adversarial", {"mode": "online"})
    assert not recipe.needs_source
    torch.testing.assert_close(recipe.loss(model, x, y), expected)
    assert recipe.loss(model, x, y) > make_recipe("standard").loss(model, x, y)
    model.train()
    recipe.loss(model, x, y).backward()
    assert model.training and all(p.grad is not None for p in model.parameters())


def test_offline_fgsm_adds_the_source_models_examples():
    images, labels = tiny_uint8()
    source = tiny_net(seed=1)
    recipe = make_recipe("fgsm_adversarial")
    assert recipe.settings.mode == "offline" and recipe.needs_source
    extra = offline_examples(lambda x, y: recipe.offline_examples(source, x, y), images, labels, batch_size=16)
    expected = FGSM(source, 0.3)(images.float() / 255, labels)
    torch.testing.assert_close(extra, expected)
    result = quick_train(tiny_net(), (images, labels), recipe, source_model=source)
    assert result.history[0]["images"] == 80, "the training set holds the images and their FGSM examples"


def test_offline_examples_perturb_every_batch_with_its_own_labels_the_last_single_image_included():
    images, labels = tiny_uint8(5)
    seen = []

    def perturb(x, y):
        seen.append(y.tolist())
        return x + y.view(-1, 1, 1, 1)

    extra = offline_examples(perturb, images, labels, batch_size=2)
    assert seen == [[0, 1], [2, 3], [4]]
    torch.testing.assert_close(extra, images.float() / 255 + labels.view(-1, 1, 1, 1))


def test_offline_examples_give_perturb_int64_labels_and_refuse_labels_of_another_length():
    """Labels of another integer dtype (int32 from numpy, uint8) reach perturb as int64, as train reads them."""
    images, labels = tiny_uint8(5)
    seen = []

    def perturb(x, y):
        seen.append(y.dtype)
        return x

    for dtype in (torch.int32, torch.uint8):
        offline_examples(perturb, images, labels.to(dtype), batch_size=4)
    assert seen == [torch.int64] * 4
    with pytest.raises(ValueError, match="images and labels must have the same length, got 5 and 4"):
        offline_examples(perturb, images, labels[:4])


def test_offline_recipe_trains_its_own_source_when_none_is_given():
    images, labels = tiny_uint8()
    lines: list[str] = []
    quick_train(tiny_net(), (images, labels), "fgsm_adversarial", val_fraction=0.1, log=lines.append)
    assert any("training a standard source model first" in line for line in lines)
    assert any(line.startswith("standard epoch 1/1") for line in lines)


# ---------------------------------------------------------------- VAT


class Linear(nn.Module):
    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.weight.T


def test_vat_perturbation_finds_the_dominant_direction():
    """For logits W x, KL(p(x) || p(x + r)) ~ r^T H r / 2 with H = W^T (diag p - p p^T) W: power iterations
    converge to H's top eigenvector."""
    torch.manual_seed(0)
    model = Linear(torch.randn(10, 12))
    x = torch.rand(3, 12)
    r = vat_perturbation(model, x, eps=2.1, xi=1e-3, power_iterations=20, generator=torch.Generator().manual_seed(0))
    assert r.dtype == torch.float32 and r.shape == x.shape
    torch.testing.assert_close(r.norm(dim=1), torch.full((3,), 2.1))
    w = model.weight.detach().double()
    for i in range(3):
        p = torch.softmax(w @ x[i].double(), 0)
        hessian = w.T @ (torch.diag(p) - torch.outer(p, p)) @ w
        top = torch.linalg.eigh(hessian).eigenvectors[:, -1]
        assert abs(F.cosine_similarity(r[i].double(), top, dim=0)) > 0.999


def test_vat_normalises_tiny_gradients_without_underflow():
    """VAT's per-sample normalisation (vat._unit) scales by the largest entry first: entries of 1e-30, whose squares
    underflow float32, still give unit rows; an all-zero row stays zero."""
    from nemesis_fast.defenses.vat import _unit

    v = torch.tensor([[3e-30, 4e-30], [0.0, 0.0], [-3.0, 4.0]])
    torch.testing.assert_close(_unit(v), torch.tensor([[0.6, 0.8], [0.0, 0.0], [-0.6, 0.8]]))


def test_vat_keeps_the_random_direction_of_a_sample_whose_gradient_is_zero():
    """Sample 0 lies where the ReLU is off (no gradient): its r_adv is eps times its normalised random start, not
    zero; sample 1's follows its gradient. Every sample's r_adv has norm eps."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.ReLU(), nn.Linear(12, 10))
    x = torch.stack([-torch.ones(12), torch.linspace(0.1, 1.0, 12)])
    r = vat_perturbation(model, x, eps=2.1, generator=torch.Generator().manual_seed(0))
    start = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r.norm(dim=1), torch.full((2,), 2.1))
    torch.testing.assert_close(r[0], 2.1 * start[0] / start[0].norm())
    assert F.cosine_similarity(r[1], start[1], dim=0) < 0.99


def test_vat_perturbation_with_the_papers_xi_beats_random_directions():
    model = tiny_net()
    x, _ = tiny_batch(16)
    g = torch.Generator().manual_seed(0)
    r = vat_perturbation(model, x, eps=2.1, generator=g)  # xi = 1e-6, one power iteration
    torch.testing.assert_close(r.flatten(1).norm(dim=1), torch.full((16,), 2.1))
    random = torch.randn(x.shape, generator=g)
    random = 2.1 * random / random.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    log_p = F.log_softmax(model(x), 1)

    def kl(delta):
        return F.kl_div(F.log_softmax(model(x + delta), 1), log_p, log_target=True, reduction="none").sum(1)

    assert (kl(r) > kl(random)).float().mean() >= 0.75
    assert kl(r).mean() > 2 * kl(random).mean()


def test_vat_runs_inside_no_grad_and_inference_mode():
    """The direction needs a gradient: inside a caller's torch.no_grad() or torch.inference_mode() (a validation
    loop), and on images made there, vat_perturbation and vat_loss give what they give outside (inference mode
    failed with torch's "element 0 of tensors does not require grad")."""
    model = tiny_net()
    x, y = tiny_batch(8)
    logits = model(x).detach()

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        seeded = {"generator": torch.Generator().manual_seed(0)}
        r = vat_perturbation(model, x, eps=2.1, logits=logits, **seeded)
        return r, vat_loss(model, x, y, generator=torch.Generator().manual_seed(0)).detach()

    expected = both()
    for mode in (torch.no_grad, torch.inference_mode):
        with mode():
            got = both()
        for value, reference in zip(got, expected):
            torch.testing.assert_close(value, reference, rtol=0, atol=0)
    with torch.inference_mode():
        x_inference, logits = x.clone(), logits.clone()  # inference tensors, which autograd cannot save
        r = vat_perturbation(model, x_inference, eps=2.1, logits=logits, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(r, expected[0], rtol=0, atol=0)
    assert all(p.requires_grad for p in model.parameters())
    with torch.inference_mode():
        made_there = tiny_net()
    with pytest.raises(ValueError, match="model has parameters or buffers made inside torch.inference_mode()"):
        vat_perturbation(made_there, x, eps=2.1)
    assert all(p.requires_grad for p in made_there.parameters())  # its guard changed nothing before refusing


def test_vat_loss_is_cross_entropy_plus_alpha_lds():
    model = tiny_net()
    x, y = tiny_batch()

    def loss(alpha):
        return vat_loss(model, x, y, alpha=alpha, generator=torch.Generator().manual_seed(5))

    ce = F.cross_entropy(model(x), y)
    torch.testing.assert_close(loss(0.0), ce)
    r = vat_perturbation(model, x, generator=torch.Generator().manual_seed(5))
    kl = F.kl_div(F.log_softmax(model(x + r), 1), F.log_softmax(model(x), 1), log_target=True, reduction="batchmean")
    torch.testing.assert_close(loss(1.0), ce + kl)
    torch.testing.assert_close(loss(2.0), ce + 2 * kl)
    assert kl > 0
    # p(x) is detached: the LDS term's gradient flows only through p(x + r_adv)
    params = list(model.parameters())
    lds_grad = torch.autograd.grad(loss(1.0) - F.cross_entropy(model(x), y), params)
    logits_adv = model(x + r)
    clean = F.log_softmax(model(x).detach(), 1)
    manual = F.kl_div(F.log_softmax(logits_adv, 1), clean, log_target=True, reduction="batchmean")
    for a, b in zip(lds_grad, torch.autograd.grad(manual, params)):
        torch.testing.assert_close(a, b)


def test_vat_recipe_online_and_offline():
    model = tiny_net()
    x, y = tiny_batch()
    online = make_recipe("vat", seed=5)
    assert online.settings == paper_settings("vat") and not online.needs_source
    assert online.loss(model, x, y) > make_recipe("standard").loss(model, x, y)
    offline = make_recipe("vat", {"mode": "offline"})
    assert offline.needs_source
    x_adv = offline.offline_examples(model, x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert ((x_adv - x).flatten(1).norm(dim=1) <= 2.1 + 1e-4).all() and not torch.equal(x_adv, x)


def test_reseed_starts_the_recipes_random_streams_afresh():
    """train() reseeds a Recipe object with its seed: a reused VAT recipe went on from its last generator state."""
    model, (x, y) = tiny_net(), tiny_batch()
    used = make_recipe("vat", seed=1)
    used.loss(model, x, y)
    used.reseed(3)
    assert used.seed == 3 and torch.equal(used.loss(model, x, y), make_recipe("vat", seed=3).loss(model, x, y))
    gda, cpu = make_recipe("gda", seed=1), torch.device("cpu")
    gda.reseed(3)
    assert gda.augment(cpu).seed == make_recipe("gda", seed=3).augment(cpu).seed
    with pytest.raises(ValueError, match="seed must be >= 0"):
        used.reseed(-1)


def test_vat_perturbation_under_autocast_stays_float32():
    model = tiny_net()
    x, _ = tiny_batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        r = vat_perturbation(model, x, generator=torch.Generator().manual_seed(0))
    assert r.dtype == torch.float32 and torch.isfinite(r).all() and r.abs().sum() > 0


def test_vat_runs_in_a_float64_models_precision_and_refuses_half_precision():
    model, (x, y) = tiny_net().double(), tiny_batch()
    x = x.double()
    r = vat_perturbation(model, x, generator=torch.Generator().manual_seed(0))
    assert r.dtype == torch.float64 and torch.allclose(r.flatten(1).norm(dim=1), torch.full((6,), 2.1, dtype=r.dtype))
    assert (
        torch.isfinite(vat_loss(model, x, y))
        and make_recipe("vat", {"mode": "offline"}).offline_examples(model, x, y).dtype == torch.float64
    )
    for dtype in (torch.float16, torch.bfloat16):
        with pytest.raises(ValueError, match=f"model: its parameters are {dtype}; VAT's power iteration"):
            vat_perturbation(tiny_net().to(dtype), x.to(dtype))
        # a model without parameters has none to blame: half precision images run in float32
        assert vat_perturbation(nn.Flatten(), x.to(dtype)).dtype == torch.float32


def test_online_losses_keep_the_perturbed_half_out_of_batch_norm():
    """A model whose batch norms train: the clean half is normalised by clean statistics only, and the perturbed
    images never reach the running averages (as in Miyato et al.'s VAT code)."""

    def bn_net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 10))

    x, y = tiny_batch()
    reference = bn_net().train()
    clean = F.cross_entropy(reference(x), y)
    for loss in (
        lambda m: fgsm_adversarial_loss(m, x, y, 0.3, weight=1.0),
        lambda m: vat_loss(m, x, y, alpha=0.0, generator=torch.Generator().manual_seed(0)),
    ):
        model = bn_net().train()
        torch.testing.assert_close(loss(model), clean)
        assert torch.equal(model[1].running_mean, reference[1].running_mean)
        assert model[1].track_running_stats and int(model[1].num_batches_tracked) == 1


def test_the_recipes_pass_all_their_settings_and_their_seed_on():
    """Each recipe's loss, offline examples and augmentation are its function's under the recipe's settings (none
    left at the function's default, which equals the paper's), with VAT's and GDA's noise from the recipe's seed."""
    model, source, cpu = tiny_net(), tiny_net(seed=1), torch.device("cpu")
    x, y = tiny_batch()
    smoothing = make_recipe("label_smoothing", {"confidence": 0.6})
    torch.testing.assert_close(smoothing.loss(model, x, y), label_smoothing_loss(model(x), y, 0.6))
    online = make_recipe("fgsm_adversarial", {"mode": "online", "eps": 0.1, "weight": 0.2})
    torch.testing.assert_close(online.loss(model, x, y), fgsm_adversarial_loss(model, x, y, 0.1, weight=0.2))
    offline = make_recipe("fgsm_adversarial", {"eps": 0.1})
    torch.testing.assert_close(offline.offline_examples(source, x, y), FGSM(source, 0.1)(x, y))
    vat = {"eps": 0.5, "xi": 1e-3, "power_iterations": 2}
    for seed in (4, 7):
        expected = vat_loss(model, x, y, **vat, alpha=0.3, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(make_recipe("vat", {**vat, "alpha": 0.3}, seed=seed).loss(model, x, y), expected)
        r = vat_perturbation(source, x, **vat, generator=torch.Generator().manual_seed(seed))
        made = make_recipe("vat", {**vat, "mode": "offline"}, seed=seed).offline_examples(source, x, y)
        torch.testing.assert_close(made, (x + r).clamp(0.0, 1.0))
        gda = {"sigma": 0.2, "copies": 3, "clip": (0.1, 0.9)}
        augmented = make_recipe("gda", {**gda, "include_original": False}, seed=seed).augment(cpu)(x, y)[0]
        assert torch.equal(augmented, GaussianAugmentation(**gda, include_original=False, seed=seed)(x, y)[0])
        fixed = make_recipe("gda", {**gda, "fixed_set": True}, seed=seed).expansion()
        rows, copy, sample = x.repeat(4, 1, 1, 1), torch.arange(4).repeat_interleave(6), torch.arange(6).repeat(4)
        assert torch.equal(
            fixed(rows, copy, sample), FixedNoisyCopies(0.2, 3, (0.1, 0.9), seed=seed)(rows, copy, sample)
        )


# ---------------------------------------------------------------- the registry


def test_recipe_registry_and_paper_defaults():
    assert set(RECIPES) == {"standard", "gda", "label_smoothing", "fgsm_adversarial", "vat"}
    gda = paper_settings("gda")
    assert (gda.sigma, gda.copies, gda.include_original, gda.clip) == (0.3, 10, True, (0.0, 1.0))
    assert paper_settings("label_smoothing").confidence == 0.9
    fgsm = paper_settings("fgsm_adversarial")
    assert (fgsm.eps, fgsm.mode) == (0.3, "offline")
    assert paper_settings("fgsm_adversarial", "cifar10").eps == pytest.approx(8 / 255)
    assert paper_settings("fgsm_adversarial", "cifar10", eps=0.1).eps == 0.1  # overrides the data set's
    vat = paper_settings("vat")
    assert (vat.eps, vat.xi, vat.power_iterations, vat.mode) == (2.1, 1e-6, 1, "online")
    assert paper_settings("vat", "mnist", eps=1.0).eps == 1.0
    assert dataclasses.asdict(paper_settings("standard")) == {}
    custom = make_recipe("gda", paper_settings("gda", sigma=0.5))
    assert custom.settings.sigma == 0.5 and custom.settings_dict()["sigma"] == 0.5


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_augments_batches_says_whether_the_recipe_has_a_per_batch_transform(name):
    cpu = torch.device("cpu")
    variants = [{}, {"fixed_set": True}] if name == "gda" else [{}]
    for settings in variants:
        recipe = make_recipe(name, settings)
        assert recipe.augments_batches == (recipe.augment(cpu) is not None)
        assert not (recipe.augments_batches and recipe.expansion() is not None), "a fixed set or fresh rows"
    assert make_recipe(name).augments_batches == (name == "gda")


def test_recipe_bad_arguments():
    with pytest.raises(ValueError, match="recipe must be one of"):
        make_recipe("mixup")
    with pytest.raises(ValueError, match="recipe 'vat' has no setting sigma; its settings: alpha, eps"):
        make_recipe("vat", {"sigma": 0.3})
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        make_recipe("gda", {"sigma": -1.0})
    with pytest.raises(ValueError, match="copies must be <= 1000"):
        make_recipe("gda", {"copies": 10**9})
    with pytest.raises(TypeError, match="include_original must be a bool"):
        make_recipe("gda", {"include_original": "no"})
    with pytest.raises(ValueError, match="mode must be one of 'offline', 'online'"):
        make_recipe("fgsm_adversarial", {"mode": "both"})
    with pytest.raises(TypeError, match="must be VATSettings, got GDASettings"):
        RECIPES["vat"](paper_settings("gda"))
    with pytest.raises(ValueError, match="dataset must be one of"):
        paper_settings("gda", "imagenet")


def test_every_recipe_trains_the_papers_mnist_network_a_few_steps():
    images, labels = tiny_uint8(24)
    images = torch.nn.functional.interpolate(images.float(), size=28).to(torch.uint8)
    source = mnist_cnn()
    for name in RECIPES:
        model = mnist_cnn()
        before = [p.detach().clone() for p in model.parameters()]
        result = quick_train(model, (images, labels), name, max_steps=2, source_model=source)
        assert result.steps == 2 and np.isfinite(result.history[0]["loss"])
        assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters())), name


@pytest.mark.cuda
@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_on_the_gpu(name):
    images, labels = tiny_uint8(64)
    images = torch.nn.functional.interpolate(images.float(), size=28).to(torch.uint8)
    source = mnist_cnn().cuda()
    settings = {"mode": "offline"} if name == "vat" else None
    result = quick_train(mnist_cnn(), (images, labels), name, settings=settings, device="cuda", source_model=source)
    doubled = make_recipe(name, settings).needs_source  # offline: the images plus the source's examples
    assert result.steps == (16 if doubled else 8) and np.isfinite(result.history[0]["loss"])
