"""nemesis_fast.compat.torchattacks against torchattacks itself, on the CNN trained on real MNIST (64 test
images): the same adversarial images for every class, untargeted and targeted, with and without normalisation;
torchattacks' API around them (mode setters, training mode, MultiAttack, isinstance); JSMA's no-valid-pair rule;
the ImportError without torchattacks. The peer's results are cached across sessions (see _peers.py)."""

from __future__ import annotations

import copy
import importlib
import sys

import pytest
import torch
from _peers import (
    MEAN,
    STD,
    Standardised,
    clamped_linear_model,
    fingerprint,
    no_fallback,
    peer_result,
    version_warnings,
)
from torch import nn

torchattacks = pytest.importorskip("torchattacks")
nft = importlib.import_module("nemesis_fast.compat.torchattacks")

BATCH = 64
# Small budgets: the code paths of the defaults at the cost of a CPU test (torchattacks' JSMA and DeepFool take
# one image at a time).
SETTINGS = {
    "FGSM": {"eps": 0.2},
    "PGD": {"eps": 0.3, "alpha": 0.02, "steps": 10},
    "RFGSM": {"eps": 0.3, "alpha": 0.05, "steps": 5},
    "CW": {"c": 1.0, "kappa": 0.0, "steps": 20, "lr": 0.05},
    "DeepFool": {"steps": 3, "overshoot": 0.02},
    "JSMA": {"theta": 1.0, "gamma": 0.03},
}
# DeepFool's norms and gradients are summed in another order (batched); the others reproduce torchattacks'
# arithmetic operation for operation.
TOLERANCE = {"DeepFool": 1e-5}
# The fraction of images each attack changes at these budgets, at least. torchattacks' CW moves few MNIST images:
# its pixels at exactly 0 or 1 (most of an MNIST image) map to w = +-inf and never move, and the whole batch stops
# as soon as the summed loss rises between two checks.
ACTS = {"CW": 0.01}
CASES = [
    pytest.param(
        name,
        targeted,
        normalised,
        id=f"{name}-{'targeted' if targeted else 'untargeted'}-{'norm' if normalised else 'raw'}",
    )
    for name in SETTINGS
    for targeted in (False, True)
    for normalised in (False, True)
    if not (name == "DeepFool" and targeted)  # torchattacks' DeepFool has no targeted mode
]


@pytest.fixture(scope="module")
def model(mnist_model):
    return copy.deepcopy(mnist_model).eval()


@pytest.fixture(scope="module")
def batch(mnist_test_data):
    x, y = mnist_test_data
    return x[:BATCH].clone(), y[:BATCH].clone()


def attack_with(library, name: str, model: nn.Module, *, targeted: bool, normalised: bool, **settings):
    attack = getattr(library, name)(model, **(settings or SETTINGS[name]))
    if normalised:
        attack.set_normalization_used(mean=[MEAN], std=[STD])
    if targeted:
        attack.set_mode_targeted_by_function(lambda images, labels: (labels + 3) % 10, quiet=True)
    return attack


def seeded(attack, x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    return attack(x, y)


def peer(key_parts: tuple, attack, x: torch.Tensor, y: torch.Tensor, model: nn.Module) -> torch.Tensor:
    key = fingerprint("torchattacks", torchattacks.__version__, *key_parts, model.state_dict(), x, y)
    return peer_result(key, lambda: seeded(attack, x, y))


@pytest.mark.slow
@pytest.mark.parametrize("name, targeted, normalised", CASES)
def test_same_images_as_torchattacks(name, targeted, normalised, model, batch):
    x, y = batch
    net = Standardised(model) if normalised else model
    inputs = (x - MEAN) / STD if normalised else x
    options = {"targeted": targeted, "normalised": normalised}
    theirs = attack_with(torchattacks, name, net, **options)
    expected = peer((name, SETTINGS[name], options), theirs, inputs, y, model)
    ours = attack_with(nft, name, net, **options)
    result = seeded(ours, inputs, y)
    assert isinstance(ours, type(theirs)) and result.shape == inputs.shape and result.dtype == inputs.dtype
    torch.testing.assert_close(result, expected, rtol=0, atol=TOLERANCE.get(name, 1e-6))
    assert (result != inputs).flatten(1).any(1).float().mean() >= ACTS.get(name, 0.5)  # the attack did act


@pytest.mark.parametrize("mode", ["default", "by_function", "random", "least_likely", "by_label"])
def test_mode_setters_draw_and_aim_as_torchattacks(mode, model, batch):
    """Targets drawn from torch's generator before PGD's random start, in the same order as torchattacks."""
    x, y = batch[0][:16], batch[1][:16]
    results = []
    for library in (torchattacks, nft):
        attack = library.PGD(model, eps=0.3, alpha=0.05, steps=2)
        labels = y
        if mode == "default":
            attack.set_mode_default()
        elif mode == "by_function":
            attack.set_mode_targeted_by_function(lambda images, labels: (labels + 1) % 10, quiet=True)
        elif mode == "random":
            attack.set_mode_targeted_random(quiet=True)
        elif mode == "least_likely":
            attack.set_mode_targeted_least_likely(kth_min=2, quiet=True)
        else:
            attack.set_mode_targeted_by_label(quiet=True)
            labels = (y + 5) % 10
        results.append(seeded(attack, x, labels, seed=3))
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=1e-6)


def test_training_mode_setting_and_model_state(model, batch):
    """set_model_training_mode: dropout in training mode draws the same masks; the model comes back in the modes it
    was given (torchattacks leaves a model given in eval mode in train mode), and its parameters' requires_grad
    flags come back."""
    net = nn.Sequential(model, nn.Dropout(0.5))
    x, y = batch[0][:16], batch[1][:16]
    results, modes = [], []
    for library in (torchattacks, nft):
        net.eval()
        attack = library.FGSM(net, eps=0.1)
        attack.set_model_training_mode(model_training=True, dropout_training=True)
        results.append(seeded(attack, x, y, seed=5))
        modes.append([m.training for m in net.modules()])
        assert all(p.requires_grad for p in net.parameters())
    net.eval()
    assert all(modes[0]) and not any(modes[1])
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)


class _FailingOnce(nn.Module):
    """`model` with a dropout layer in eval mode inside a model in train mode; its first forward pass raises."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.dropout, self.failed = model, nn.Dropout(0.5).eval(), False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            self.failed = True
            raise KeyboardInterrupt
        return self.dropout(self.model(x))


def test_a_call_that_raises_gives_back_the_modes_and_the_normalisation(model, batch):
    """torchattacks' call restores nothing when the attack raises: the model stayed in eval mode, and after a call
    with set_normalization_used every later call took normalised images for raw ones."""
    x, y = batch[0][:8], batch[1][:8]
    net = _FailingOnce(copy.deepcopy(model)).train()
    net.dropout.eval()
    modes = [m.training for m in net.modules()]
    attack = nft.FGSM(net, eps=0.1)
    attack.set_normalization_used(mean=[MEAN], std=[STD])
    normalised = (x - MEAN) / STD
    with pytest.raises(KeyboardInterrupt):
        attack(normalised, y)
    assert [m.training for m in net.modules()] == modes
    fresh = nft.FGSM(net, eps=0.1)
    fresh.set_normalization_used(mean=[MEAN], std=[STD])
    net.failed = True
    torch.testing.assert_close(attack(normalised, y), fresh(normalised, y), rtol=0, atol=0)
    assert [m.training for m in net.modules()] == modes, "on success too, each submodule's own mode"


def test_multiattack_and_isinstance(model, batch):
    x, y = batch[0][:32], batch[1][:32]
    results = []
    for library in (torchattacks, nft):
        attacks = [library.FGSM(model, eps=0.1), library.PGD(model, eps=0.2, alpha=0.05, steps=3)]
        results.append(seeded(library.MultiAttack(attacks), x, y, seed=7))
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=1e-6)
    for name in ("FGSM", "PGD", "RFGSM", "CW", "DeepFool", "JSMA"):
        attack = getattr(nft, name)(model)
        assert isinstance(attack, getattr(torchattacks, name)) and isinstance(attack, torchattacks.attack.Attack)
    assert nft.BIM is torchattacks.BIM  # the other names are torchattacks' own


def test_labels_held_as_whole_floats_are_class_indices(model, batch):
    x, y = batch[0][:4], batch[1][:4]
    for name in ("FGSM", "DeepFool", "JSMA"):
        attack = getattr(nft, name)(model)
        torch.testing.assert_close(attack(x, y.float()), attack(x, y), rtol=0, atol=0)
        with pytest.raises(TypeError, match="labels must hold class indices"):
            attack(x, y.float() + 0.5)


def test_integer_labels_of_any_dtype_are_class_indices(model, batch):
    x, y = batch[0][:4], batch[1][:4]
    for name in ("FGSM", "CW", "DeepFool", "JSMA"):
        attack = getattr(nft, name)(model)
        torch.testing.assert_close(attack(x, y.int()), attack(x, y), rtol=0, atol=0)
    _, targets = nft.DeepFool(model).forward_return_target_labels(x, y.int())
    assert targets.dtype == torch.int32  # torchattacks returns a copy of the labels, changed in place


def test_batchnorm_in_training_mode_hands_deepfool_and_jsma_to_torchattacks():
    """With batchnorm_training=True each image's result depends on the batch it is in, and torchattacks attacks
    one image at a time: the drop-ins run torchattacks' own loop, after a PeerFallbackWarning."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10))
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = net.eval()(x).argmax(1)
    for name in ("DeepFool", "JSMA"):
        results = []
        for library in (torchattacks, nft):
            attack = getattr(library, name)(net)
            attack.set_model_training_mode(model_training=True, batchnorm_training=True)
            if library is nft:
                with pytest.warns(nft.PeerFallbackWarning, match=f"torchattacks' {name} attacks one image at a time"):
                    results.append(attack(x, y))
            else:
                results.append(attack(x, y))
        torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)


def test_a_batch_norm_that_drawing_targets_puts_back_in_training_hands_jsma_to_torchattacks():
    """set_model_training_mode(model_training=True) leaves batch norm in eval mode, but torchattacks' drawing of
    the targets ends in model.train(): its per-image loop then runs with batch norm training. The drop-in checked
    before drawing, and ran batched: other images, and no warning."""

    def run(library):
        torch.manual_seed(0)
        net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10)
        )
        x = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(1))
        y = net.eval()(x).argmax(1)
        attack = library.JSMA(net, theta=1.0, gamma=0.5)
        attack.set_model_training_mode(model_training=True)
        attack.set_mode_targeted_least_likely(quiet=True)
        return attack(x, y), net[1].running_mean.clone()

    (peer_images, peer_mean) = run(torchattacks)
    with pytest.warns(nft.PeerFallbackWarning, match="torchattacks' JSMA attacks one image at a time"):
        ours, mean = run(nft)
    assert torch.equal(ours, peer_images) and torch.equal(mean, peer_mean)


def test_batchnorm_in_eval_mode_keeps_deepfool_and_jsma_batched():
    """Batch norm in eval mode (torchattacks' default training-mode setting) makes each image's result independent
    of the batch: the drop-ins run batched, without a PeerFallbackWarning, and give torchattacks' images."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 10))
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = net.eval()(x).argmax(1)
    for name, settings in (("DeepFool", {"steps": 3}), ("JSMA", {"theta": 1.0, "gamma": 0.3})):
        expected = getattr(torchattacks, name)(net, **settings)(x, y)
        with no_fallback():
            result = getattr(nft, name)(net, **settings)(x, y)
        torch.testing.assert_close(result, expected, rtol=0, atol=1e-5)


def test_labels_of_shape_n_by_1_as_torchattacks_takes_them(model, batch):
    """Loaders such as MedMNIST's give (N, 1) labels: torchattacks' DeepFool and JSMA take them."""
    x, y = batch[0][:3], batch[1][:3]
    for name in ("DeepFool", "JSMA"):
        attack = getattr(nft, name)(model)
        torch.testing.assert_close(attack(x, y[:, None]), attack(x, y), rtol=0, atol=0)
    ours = nft.DeepFool(model, steps=3).forward_return_target_labels(x, y[:, None])
    theirs = torchattacks.DeepFool(model, steps=3).forward_return_target_labels(x, y[:, None])
    torch.testing.assert_close(ours[0], theirs[0], rtol=0, atol=1e-5)
    assert ours[1].shape == theirs[1].shape == (3, 1) and torch.equal(ours[1], theirs[1])


def test_jsma_with_a_negative_theta_moves_feature_0_only_as_torchattacks(model, batch):
    """torchattacks' saliency map for theta <= 0 scores every valid pair below the 0 of its masked pairs, so it
    always takes the pair (0, 0); the drop-in does the same, and warns."""
    x, y = batch[0][:3].clone(), batch[1][:3]
    x[:, 0, 0, 0] = 0.7  # MNIST's corner is 0, where the step would change nothing
    results = []
    for library in (torchattacks, nft):
        attack = library.JSMA(model, theta=-0.2, gamma=0.05)
        if library is nft:
            with pytest.warns(UserWarning, match="changes feature 0 only"):
                results.append(attack(x, y))
        else:
            results.append(attack(x, y))
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)
    changed = (results[1] != x).flatten(1)
    assert changed[:, 0].any() and not changed[:, 1:].any()


def test_jsma_refuses_a_target_the_model_lacks_as_torchattacks_fails():
    """The default target (label + 1) % 10 of a 4-class model: torchattacks raises an IndexError; with theta <= 0
    the drop-in returned an image moved towards class 4, which does not exist."""
    torch.manual_seed(0)
    four = nn.Sequential(nn.Flatten(), nn.Linear(8, 4))
    x, y = torch.rand(2, 1, 2, 4) * 0.5, torch.tensor([3, 1])
    with pytest.raises(IndexError):
        torchattacks.JSMA(four, theta=-0.5)(x, y)
    for theta in (-0.5, 1.0):
        with pytest.raises(ValueError, match=r"targets must be classes of the model's 4 logits, got 4 \(the default"):
            nft.JSMA(four, theta=theta)(x, y)
    assert nft.JSMA(four, theta=1.0, gamma=0.5)(x, torch.tensor([2, 1])).shape == x.shape


def test_deepfool_refuses_targeted_modes_as_torchattacks(model):
    with pytest.raises(ValueError, match="Targeted mode is not supported"):
        nft.DeepFool(model).set_mode_targeted_random(quiet=True)


def test_jsma_without_a_valid_pair_moves_feature_0_twice_as_torchattacks():
    """A linear model whose target logit falls along every feature: no pair can raise it, and torchattacks then
    adds theta twice to feature 0 (its argmax over an all-zero saliency map) at every step."""
    linear = nn.Sequential(nn.Flatten(), nn.Linear(8, 10))
    with torch.no_grad():
        linear[1].weight.copy_(torch.linspace(-1, 1, 80).view(10, 8))
        linear[1].weight[2] = -torch.rand(8, generator=torch.Generator().manual_seed(0)) - 0.1
        linear[1].bias.zero_()
    x = torch.rand(4, 1, 2, 4, generator=torch.Generator().manual_seed(1)) * 0.5
    y = torch.zeros(4, dtype=torch.int64)
    results = []
    for library in (torchattacks, nft):
        attack = library.JSMA(linear, theta=0.2, gamma=0.5)
        attack.set_mode_targeted_by_function(lambda images, labels: torch.full_like(labels, 2), quiet=True)
        results.append(attack(x, y))
    torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)
    assert (results[1].flatten(1)[:, 0] > x.flatten(1)[:, 0]).all()


def test_jsma_inside_inference_mode_says_that_autograd_is_off_there():
    """torchattacks' JSMA fails inside torch.no_grad() and torch.inference_mode() (torch's "element 0 of tensors
    does not require grad"); the drop-in runs inside no_grad, and inside inference mode said the model's output did
    not depend on x: it now says why there is no gradient."""
    linear = nn.Sequential(nn.Flatten(), nn.Linear(8, 10))
    x = torch.rand(4, 1, 2, 4, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(4, dtype=torch.int64)
    expected = nft.JSMA(linear, theta=0.2, gamma=0.5)(x, y)
    with torch.no_grad():
        torch.testing.assert_close(nft.JSMA(linear, theta=0.2, gamma=0.5)(x, y), expected, rtol=0, atol=0)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="not record inside torch.inference_mode()"):
        nft.JSMA(linear, theta=0.2, gamma=0.5)(x, y)
    with torch.inference_mode():
        made_there = nn.Sequential(nn.Flatten(), nn.Linear(8, 10))
    with pytest.raises(ValueError, match="model has parameters or buffers made inside torch.inference_mode()"):
        nft.JSMA(made_there, theta=0.2, gamma=0.5)(x, y)
    assert all(p.requires_grad for p in made_there.parameters())


def test_jsma_clamps_images_outside_0_1_as_torchattacks_even_where_it_takes_no_step():
    """torchattacks takes images outside [0, 1] (it checks no range) and clamps its result into [0, 1], also the
    images that take no step: those its model already gives the target, and all of them with gamma = 0."""
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(8, 10))
    x = torch.rand(4, 1, 2, 4, generator=torch.Generator().manual_seed(1)) * 1.6 - 0.3
    with torch.no_grad():
        predicted = linear(x).argmax(1)
    targets = torch.where(torch.arange(4) < 2, predicted, (predicted + 3) % 10)  # the first two already there
    for gamma in (0.0, 0.5):
        results = []
        for library in (torchattacks, nft):
            attack = library.JSMA(linear, theta=0.2, gamma=gamma)
            attack.set_mode_targeted_by_function(lambda images, labels: targets, quiet=True)
            results.append(attack(x, predicted))
        torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)
        assert results[1].min() == 0 and results[1].max() == 1 and (results[1][:2] == x[:2].clamp(0, 1)).all()


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["DeepFool", "JSMA", "PGD", "CW"])
def test_same_images_as_torchattacks_on_cuda(name, model, batch):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    net = copy.deepcopy(model).cuda()
    x, y = batch[0][:16].cuda(), batch[1][:16].cuda()
    # float32 convolutions, not torch's default TF32 (10-bit products), which rounds our batched passes and the
    # peer's per-image ones differently (the likely cause of DeepFool's 0.0096 difference in the H200 benchmark).
    with torch.backends.cudnn.flags(enabled=True, deterministic=True, allow_tf32=False):
        expected = seeded(attack_with(torchattacks, name, net, targeted=False, normalised=False), x, y)
        result = seeded(attack_with(nft, name, net, targeted=False, normalised=False), x, y)
    torch.testing.assert_close(result, expected, rtol=0, atol=1e-4)


def test_import_error_names_the_missing_package(monkeypatch):
    for module in list(sys.modules):
        if module.split(".")[0] == "torchattacks" or module.startswith("nemesis_fast.compat.torchattacks"):
            monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "torchattacks", None)
    with pytest.raises(ImportError, match="needs the package 'torchattacks'"):
        importlib.import_module("nemesis_fast.compat.torchattacks")


@pytest.mark.parametrize("version, warns", [("3.4.0", True), ("3.5.0", False), ("3.5.1", False), ("3.6.0", True)])
def test_the_torchattacks_series_reproduced_is_3_5(version, warns, monkeypatch):
    """The peers extra asks for torchattacks >= 3.5: 3.5.x imports without a warning, other series with one."""
    expected = f"the algorithms of torchattacks 3.5; {version} is installed, whose results may differ"
    assert version_warnings(monkeypatch, "torchattacks", torchattacks, version) == (
        [f"nemesis_fast.compat.torchattacks reproduces {expected}"] if warns else []
    )


@pytest.mark.parametrize("name", list(SETTINGS))
def test_a_model_made_in_inference_mode_is_refused_naming_model(name):
    with torch.inference_mode():
        made_there = nn.Sequential(nn.Flatten(), nn.Linear(8, 10))
    x = torch.rand(4, 1, 2, 4, generator=torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match=r"^model has parameters or buffers made inside torch\.inference_mode\(\)"):
        getattr(nft, name)(made_there, **SETTINGS[name])(x, torch.zeros(4, dtype=torch.int64))


def test_deepfool_stops_an_image_its_step_leaves_unchanged():
    """torchattacks repeats a step that [0, 1] clamps back to the same image until `steps`; the drop-in stops the
    image there: the same images and target labels, without the idle steps."""
    model, x, calls = clamped_linear_model()
    y = torch.zeros(len(x), dtype=torch.int64)
    peer = torchattacks.DeepFool(model, steps=50, overshoot=0.02)
    expected, expected_targets = peer.forward_return_target_labels(x, y)
    peer_calls, calls[0] = calls[0], 0
    got, targets = nft.DeepFool(model, steps=50, overshoot=0.02).forward_return_target_labels(x, y)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-7)
    assert torch.equal(targets, expected_targets)
    assert (got[:2] == 0).all() and peer_calls >= 50 * len(x) and calls[0] <= 6


def test_deepfool_leaves_an_image_whose_step_is_zero_over_zero():
    """Where the model's gradient is 0 (1-bit feature squeezing attacked through its own gradient), torchattacks'
    step is 0 / 0 and the drop-in returned NaN images, as torchattacks does; it now leaves them where they are."""
    from nemesis_fast.defenses import FeatureSqueezing

    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
    model = FeatureSqueezing(net, 1, bpda=False).eval()
    x = torch.rand(6, 1, 4, 4)
    y = model(x).argmax(1)
    assert torchattacks.DeepFool(model, steps=5)(x, y).isnan().all(), "torchattacks' own NaN images"
    got = nft.DeepFool(model, steps=5)(x, y)
    assert torch.equal(got, x)


def test_fgsm_pgd_and_rfgsm_take_class_probabilities_as_torchattacks(model, batch):
    """torchattacks' cross-entropy takes float (N, classes) labels as class probabilities: one-hot labels give the
    images of their indices, smoothed ones others; the drop-ins raised a dtype error on them."""
    x, y = batch[0][:8], batch[1][:8]
    one_hot = nn.functional.one_hot(y, 10).float()
    smoothed = 0.9 * one_hot + 0.01
    for name in ("FGSM", "PGD", "RFGSM"):
        for labels in (one_hot, smoothed):
            expected = seeded(getattr(torchattacks, name)(model, **SETTINGS[name]), x, labels)
            ours = seeded(getattr(nft, name)(model, **SETTINGS[name]), x, labels)
            torch.testing.assert_close(ours, expected, rtol=0, atol=0)
        by_index = seeded(getattr(nft, name)(model, **SETTINGS[name]), x, y)
        torch.testing.assert_close(seeded(getattr(nft, name)(model, **SETTINGS[name]), x, one_hot), by_index)
    smoothed_fgsm = nft.FGSM(model, eps=0.2)(x, torch.softmax(torch.randn(8, 10), 1))
    assert not torch.equal(smoothed_fgsm, nft.FGSM(model, eps=0.2)(x, y))  # probabilities, not their argmax


def test_labels_of_another_shape_or_type_are_refused_naming_them(model, batch):
    """One-hot labels where torchattacks takes class indices only (its DeepFool failed with an ambiguous-value
    error, and the drop-in read the flattened one-hot as N x classes indices); a label count unlike the images';
    no labels (torchattacks: an AttributeError on None)."""
    x, y = batch[0][:4], batch[1][:4]
    one_hot = nn.functional.one_hot(y, 10)
    for name in ("FGSM", "PGD", "RFGSM", "CW", "DeepFool", "JSMA"):
        attack = getattr(nft, name)(model)
        probabilities = name in ("FGSM", "PGD", "RFGSM")
        wanted = r"class indices \(N,\) or \(N, 1\)" + (", or float class probabilities" if probabilities else "")
        with pytest.raises(ValueError, match=rf"labels must be {wanted}.* N = 4 images, got shape \(4, 10\)"):
            attack(x, one_hot if probabilities else one_hot.float())
        with pytest.raises(ValueError, match=r"labels must be .* N = 4 images, got shape \(3,\)"):
            attack(x, y[:3])
        with pytest.raises(TypeError, match="labels must be a torch.Tensor of class indices"):
            attack(x, None)
    with pytest.raises(ValueError, match="labels must hold one row per image: 4 images, got 3 rows"):
        nft.FGSM(model)(x, one_hot[:3].float())


def test_dropout_in_training_mode_hands_deepfool_and_jsma_to_torchattacks():
    """set_model_training_mode(dropout_training=True): torchattacks draws each image's dropout masks in its own
    forward passes, one image at a time; the batched drop-ins drew others and gave other images, unwarned. They run
    torchattacks' own loop now, after a PeerFallbackWarning, and give its images from the same generator state."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 10))
    x = torch.rand(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = net.eval()(x).argmax(1)
    for name, settings in (("DeepFool", {"steps": 5}), ("JSMA", {"theta": 1.0, "gamma": 0.5})):
        results = []
        for library in (torchattacks, nft):
            attack = getattr(library, name)(net, **settings)
            attack.set_model_training_mode(model_training=True, dropout_training=True)
            if library is nft:
                with pytest.warns(nft.PeerFallbackWarning, match="a dropout layer of the model is in training mode"):
                    results.append(seeded(attack, x, y))
            else:
                results.append(seeded(attack, x, y))
        torch.testing.assert_close(results[1], results[0], rtol=0, atol=0)
        with no_fallback():  # dropout in eval mode (torchattacks' default): batched, unwarned
            getattr(nft, name)(net, **settings)(x, y)


@pytest.mark.parametrize(
    "name, setting",
    [("FGSM", "eps"), ("PGD", "alpha"), ("RFGSM", "eps"), ("CW", "lr"), ("DeepFool", "overshoot"), ("JSMA", "gamma")],
)
def test_a_nan_setting_is_refused_naming_it(name, setting, model, batch):
    """torchattacks checks no setting: a NaN one gave NaN images (or, in JSMA's gamma, a failed step count)."""
    attack = getattr(nft, name)(model, **{setting: float("nan")})
    with pytest.raises(ValueError, match=f"{setting} must be a number, got nan"):
        attack(batch[0][:2], batch[1][:2])
    setattr(attack, setting, SETTINGS[name].get(setting, 0.1))  # set afterwards, as torchattacks lets it be
    assert attack(batch[0][:2], batch[1][:2]).shape == (2, 1, 28, 28)


@pytest.mark.parametrize("name", ["FGSM", "PGD", "RFGSM", "CW", "DeepFool", "JSMA"])
def test_images_with_nan_or_inf_are_refused_naming_them(name, model, batch):
    """torchattacks' range check lets NaN through (its min and max compare False), and its attacks return NaN
    images for them; the drop-ins refuse them, naming the images at fault, and leave the attack usable."""
    x, y = batch[0][:4].clone(), batch[1][:4]
    x[1, 0, 3, 3], x[3, 0, 0, 0] = float("nan"), float("inf")
    attack = getattr(nft, name)(model, **SETTINGS[name])
    with pytest.raises(ValueError, match=r"inputs must be finite; NaN or inf in image\(s\) inputs\[1\], inputs\[3\]$"):
        attack(x, y)
    assert torch.isfinite(attack(batch[0][:4], y)).all()


def test_deepfool_refuses_a_label_beyond_the_classes_in_a_single_step(model, batch):
    """The labels are checked on the first step's logits: a call of one step checks them too."""
    x, y = batch[0][:3], batch[1][:3].clone()
    y[2] = 10
    with pytest.raises(ValueError, match=r"labels must be classes of the model's 10 logits; got values in \[\d, 10\]$"):
        nft.DeepFool(model, steps=1)(x, y)


@pytest.mark.parametrize("name", ["DeepFool", "JSMA"])
@pytest.mark.parametrize("bad", [10, -1])
def test_deepfool_and_jsma_refuse_labels_beyond_the_models_classes(name, bad, model, batch):
    """torchattacks' DeepFool takes an image whose label is no class of the model for one already fooled and returns
    it unchanged, and its JSMA aims at (label + 1) % 10 (a class again): the drop-ins refuse such labels."""
    x, y = batch[0][:3], batch[1][:3].clone()
    y[2] = bad
    peer_out = getattr(torchattacks, name)(model, **SETTINGS[name])(x, y)
    if name == "DeepFool":
        assert torch.equal(peer_out[2], x[2])  # the peer's silent answer: not attacked
    low, high = int(y.min()), int(y.max())
    with pytest.raises(
        ValueError, match=rf"labels must be classes of the model's 10 logits; got values in \[{low}, {high}\]$"
    ):
        getattr(nft, name)(model, **SETTINGS[name])(x, y)


def test_one_value_per_image_with_nan_is_refused_naming_the_image():
    """Inputs of one dimension (N,) (a model of one feature) are images too: the one holding NaN is named."""

    class OneFeature(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = nn.Linear(1, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.linear(x[:, None])

    x, y = torch.rand(4), torch.zeros(4, dtype=torch.int64)
    x[1] = float("nan")
    with pytest.raises(ValueError, match=r"^inputs must be finite; NaN or inf in image\(s\) inputs\[1\]$"):
        nft.FGSM(OneFeature(), eps=0.1)(x, y)
