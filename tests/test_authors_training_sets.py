"""scripts/authors_training_sets.py: the authors' 2017 VAT examples (cleverhans' vatm given softmax outputs for
logits, its 2017 normalisation) against hand computations on a tiny model."""

import pytest
import torch
from _support import load_script
from torch import nn

authors = load_script("authors_training_sets")


def test_the_2017_normalisation_is_a_unit_vector_except_on_vanishing_gradients():
    v = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for scale in (1.0, 1e-6, 1e-12):
        norms = authors._cleverhans_2017_normalize(v * scale).flatten(1).norm(dim=1)
        torch.testing.assert_close(norms, torch.ones(3), rtol=1e-4, atol=0)
    # sqrt(1e-12) under the root: v / max|v| ~ 1e-6 per feature, 784 of them, is a vector of length ~0.03
    tiny = authors._cleverhans_2017_normalize(v * 1e-18).flatten(1).norm(dim=1)
    assert (tiny < 0.1).all()
    assert authors._cleverhans_2017_normalize(torch.zeros(2, 5)).eq(0).all()


def _linear(weight: torch.Tensor) -> nn.Module:
    model = nn.Sequential(nn.Flatten(), nn.Linear(weight.shape[1], weight.shape[0], bias=False))
    model[1].weight.data.copy_(weight)
    return model


def test_vat_examples_take_the_power_iteration_direction_at_the_given_size():
    # A linear model f(x) = W x: the KL's Hessian at d = 0 is W^T (diag(q) - q q^T) W with q the softmax of what
    # vatm was given (the probabilities p = softmax(W x)); its top eigenvector is the direction the power
    # iterations find from a random start, here within 1e-3 after 5 of them.
    weight = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 0.2, 0.0, 0.0], [0.0, 0.0, 0.1, 0.0]])
    model = _linear(weight)
    x = torch.full((1, 1, 1, 4), 0.5)
    adversarial = authors.cleverhans_2017_vat(
        model, x, eps=0.2, xi=1e-3, iterations=5, mean_over=1, generator=torch.Generator().manual_seed(1)
    )
    step = (adversarial - x).flatten()
    with torch.no_grad():
        q = torch.softmax(torch.softmax(model(x), dim=1), dim=1).flatten()
    hessian = weight.T @ (torch.diag(q) - torch.outer(q, q)) @ weight
    top = torch.linalg.eigh(hessian).eigenvectors[:, -1]
    assert abs(step.norm().item() - 0.2) < 1e-4
    assert abs(torch.dot(step / step.norm(), top).abs().item() - 1.0) < 1e-3


def _vat_step_sizes(weight_of_class_0: float, mean_over: int) -> torch.Tensor:
    weight = torch.zeros(10, 784)
    weight[0] = weight_of_class_0
    x = torch.full((4, 1, 28, 28), 0.5)
    generator = torch.Generator().manual_seed(0)
    examples = authors.cleverhans_2017_vat(
        _linear(weight), x, eps=2.1, xi=1e-6, iterations=5, mean_over=mean_over, generator=generator
    )
    return (examples - x).flatten(1).norm(dim=1)


def test_vat_examples_shrink_with_the_mean_over_sixty_thousand_images_and_vanish_on_confident_images():
    # The authors' one vatm call on all 60,000 training images made every gradient 60,000 times smaller: on an
    # image the model gives 99.6% the 2017 normalisation then makes less than a unit vector.
    torch.testing.assert_close(_vat_step_sizes(0.02, mean_over=1), torch.full((4,), 2.1))
    assert (_vat_step_sizes(0.02, mean_over=60_000) < 1.0).all()
    # At 1 - 3e-9 the softmax of the probabilities no longer changes in float32 under a step of xi = 1e-6: no
    # gradient, no move, whatever the mean.
    assert _vat_step_sizes(0.05, mean_over=1).eq(0).all()


def test_first_training_images_hold_out_the_last_tenth_unshuffled():
    from types import SimpleNamespace

    images = torch.arange(50, dtype=torch.uint8).view(50, 1, 1, 1)
    labels = torch.arange(50) % 10
    evaluation = SimpleNamespace(
        data=SimpleNamespace(train_images=images, train_labels=labels),
        config=SimpleNamespace(training=SimpleNamespace(validation_fraction=0.1)),
    )
    (x, y), (val_x, val_y) = authors.first_training_images(evaluation, 30)
    assert x.flatten().tolist() == list(range(27)) and y.tolist() == (labels[:27]).tolist()
    assert val_x.flatten().tolist() == [27, 28, 29] and val_y.tolist() == [7, 8, 9]
    for bad in (5, 51):
        with pytest.raises(SystemExit, match="--train-images must be in"):
            authors.first_training_images(evaluation, bad)
