"""The attacks on a CNN trained on real MNIST (the session fixture of conftest.py), on its first 500 test
images: effectiveness, DeepFool against Carlini-Wagner, and agreement with torchattacks where it implements
the same algorithm."""

from __future__ import annotations

import pytest
import torch

from nemesis_fast.attacks import FGSM, PGD, CarliniWagnerL2, DeepFool, RandFGSM

# The C&W budget of these CPU tests: c starts at 1 (not 1e-3, which spends three binary steps finding the
# scale of c on this model), 3 binary steps of at most 100 Adam steps at learning rate 0.1, instead of the
# paper's 9 x 1000 at 0.01; the GPU test below runs the defaults.
CW_CPU = dict(initial_const=1.0, binary_search_steps=3, max_iter=100, learning_rate=0.1)


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


@pytest.fixture(scope="module")
def deepfool_result(mnist_model, mnist_test_data):
    return DeepFool(mnist_model).run(*mnist_test_data)


@pytest.fixture(scope="module")
def fgsm_accuracy(mnist_model, mnist_test_data):
    x_adv = FGSM(mnist_model, 0.3)(*mnist_test_data)
    return accuracy(mnist_model, x_adv, mnist_test_data[1])


def test_fixture_model_is_accurate_on_the_500_images(mnist_model, mnist_test_data):
    x, y = mnist_test_data
    assert x.shape == (500, 1, 28, 28) and x.dtype == torch.float32 and x.min() >= 0 and x.max() <= 1
    assert accuracy(mnist_model, x, y) >= 0.95


def test_fgsm_eps_03_leaves_under_20_percent_accuracy(fgsm_accuracy):
    assert fgsm_accuracy < 0.20


def test_pgd_is_at_least_as_strong_as_fgsm(mnist_model, mnist_test_data, fgsm_accuracy):
    x, y = mnist_test_data
    result = PGD(mnist_model, 0.3, 0.01, 40, seed=0).run(x, y)
    assert (result.linf <= 0.3 + 1e-6).all()
    assert accuracy(mnist_model, result.x_adv, y) <= fgsm_accuracy


def test_randfgsm_is_bounded_and_effective(mnist_model, mnist_test_data):
    x, y = mnist_test_data
    result = RandFGSM(mnist_model, 0.3, 0.15, seed=0).run(x, y)
    assert (result.linf <= 0.3 + 1e-6).all()
    assert accuracy(mnist_model, result.x_adv, y) < 0.5


def test_targeted_pgd_reaches_its_targets(mnist_model, mnist_test_data):
    x, y = mnist_test_data
    result = PGD(mnist_model, 0.3, 0.02, 40, targeted=True, seed=0).run(x[:200], y[:200])
    assert (result.target != y[:200]).all()
    assert result.success_rate >= 0.9


def test_deepfool_succeeds_on_99_percent(deepfool_result):
    assert deepfool_result.success_rate >= 0.99
    assert (deepfool_result.iterations <= 50).all()


def test_deepfool_under_autocast_sizes_its_margin_for_what_the_model_sees(mnist_model, mnist_test_data):
    """Under torch.autocast the model sees float32 images in bfloat16: a margin sized for float32 was rounded away,
    and images crept towards the boundary for tens of iterations (half of them still on their label at 50)."""
    x, y = mnist_test_data[0][:32], mnist_test_data[1][:32]
    plain = DeepFool(mnist_model).run(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = DeepFool(mnist_model).run(x, y)
    assert mixed.success_rate >= plain.success_rate >= 0.95
    assert mixed.iterations.max() <= plain.iterations.max() + 2


def test_carlini_wagner_succeeds_on_99_percent_below_deepfools_median_l2(mnist_model, mnist_test_data, deepfool_result):
    result = CarliniWagnerL2(mnist_model, **CW_CPU).run(*mnist_test_data)
    assert result.success_rate >= 0.99
    assert result.l2.median() < deepfool_result.l2.median()
    assert (result.iterations <= CW_CPU["binary_search_steps"] * CW_CPU["max_iter"]).all()


@pytest.mark.cuda
def test_carlini_wagner_defaults_on_the_gpu(mnist_model, mnist_test_data, deepfool_result):
    import copy

    model = copy.deepcopy(mnist_model).cuda()
    x, y = (t.cuda() for t in mnist_test_data)
    result = CarliniWagnerL2(model).run(x, y)
    assert result.success_rate >= 0.99
    assert result.l2.median().cpu() < deepfool_result.l2.median()


@pytest.fixture(scope="module")
def peer_batch(mnist_test_set):
    """512 test images: torchattacks averages the loss over the batch where we sum it, and with a power-of-two
    batch its gradient is ours scaled exactly by 2**-9, so the signs agree bit for bit (with 500 images the
    rounding of the scaled backward pass can flip the sign of a near-zero component)."""
    images, labels = mnist_test_set
    return images[:512], labels[:512]


def test_fgsm_agrees_with_torchattacks(mnist_model, peer_batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = peer_batch
    theirs = torchattacks.FGSM(mnist_model, eps=0.3)(x, y)
    ours = FGSM(mnist_model, 0.3)(x, y)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


def test_pgd_without_random_start_agrees_with_torchattacks(mnist_model, peer_batch):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = peer_batch
    theirs = torchattacks.PGD(mnist_model, eps=0.3, alpha=0.02, steps=20, random_start=False)(x, y)
    ours = PGD(mnist_model, 0.3, 0.02, 20, random_start=False)(x, y)
    # Projections differ in rounding only (clamp(x_adv, x - eps, x + eps) vs x + clamp(x_adv - x, -eps, eps)).
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert mnist_model.training is False
