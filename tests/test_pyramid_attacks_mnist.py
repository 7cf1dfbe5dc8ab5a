"""Success on the CNN trained on real MNIST (the session fixture of conftest.py) of the attack variants that
test_attacks_mnist.py leaves out: FGSM and PGD in the L2 norm, and DeepFool in the Linf norm, on the first 200 test
images (100 for DeepFool), each within its budget."""

from __future__ import annotations

import torch

from nemesis_fast.attacks import FGSM, PGD, DeepFool

IMAGES = 200


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().mean().item()


def first_images(mnist_test_data):
    x, y = mnist_test_data
    return x[:IMAGES], y[:IMAGES]


def test_l2_fgsm_and_pgd_fool_the_mnist_model(mnist_model, mnist_test_data):
    x, y = first_images(mnist_test_data)
    clean = accuracy(mnist_model, x, y)
    fgsm = FGSM(mnist_model, 3.0, norm="2").run(x, y)
    pgd = PGD(mnist_model, 3.0, 0.5, 20, norm="2", seed=0).run(x, y)
    print(f"clean {clean:.3f}, L2 FGSM {accuracy(mnist_model, fgsm.x_adv, y):.3f}, L2 PGD {1 - pgd.success_rate:.3f}")
    for result in (fgsm, pgd):
        assert (result.l2 <= 3.0 * (1 + 1e-5)).all()
        assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert accuracy(mnist_model, fgsm.x_adv, y) < 0.5 < clean
    assert pgd.success_rate >= 0.9
    assert accuracy(mnist_model, pgd.x_adv, y) <= accuracy(mnist_model, fgsm.x_adv, y)


def test_linf_deepfool_fools_the_mnist_model_with_small_steps(mnist_model, mnist_test_data):
    """Linf DeepFool moves along the sign of the linearised boundary's normal: it fools the model with a median
    Linf norm about a third of L2 DeepFool's (0.10 against 0.29 on these images)."""
    x, y = first_images(mnist_test_data)
    x, y = x[: IMAGES // 2], y[: IMAGES // 2]
    result = DeepFool(mnist_model, norm="inf").run(x, y)
    print(f"Linf DeepFool: success {result.success_rate:.3f}, median Linf {result.linf.median():.3f}")
    assert result.success_rate >= 0.99
    assert (result.iterations <= 50).all()
    assert result.linf.median() < 0.18
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
