"""The training sets the seed's authors' Keras code trained and validated on, rebuilt from a `paper` run, for
`check_paper_cells.py defense` (its ``--noisy-validation``, ``--keras-validation --examples-of test``,
``--cleverhans-2017`` and ``--train-images``).

Each function takes the run's Evaluation and a defense's name and returns ((training rows, labels), (validation
rows, labels)).
"""

from __future__ import annotations

import torch
from torch import nn

from nemesis_fast.attacks import model_guard
from nemesis_fast.data.loader import split_validation, to_float
from nemesis_fast.defenses import offline_examples
from nemesis_fast.defenses.recipes import make_recipe
from nemesis_fast.evaluation.runner import Evaluation


def noisy_validation(evaluation: Evaluation, name: str, seed: int) -> tuple[tuple, tuple]:
    """The run's training split, and its validation images with GDA's unclipped noise added once (as the
    authors' Keras split validated GDA on noisy rows): ((train images, labels), (noisy val images, labels))."""
    sigma = evaluation.models.key(name)["recipe_settings"].get("sigma")
    if sigma is None:
        raise SystemExit(f"--noisy-validation needs a GDA defense, got {name!r}")
    data = evaluation.data
    fraction = evaluation.config.training.validation_fraction
    train_part, (x, y) = split_validation(data.train_images, data.train_labels, fraction, seed=seed)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    return train_part, (x.float().div(255) + sigma * noise, y)


def first_training_images(evaluation: Evaluation, count: int) -> tuple[tuple, tuple]:
    """The first `count` training images, split as Keras' `validation_split` splits them: the last 10% (the run's
    validation fraction; round(count * fraction) images, as the run's first-images models hold out, which is Keras'
    count - int(count * 0.9) for the counts used, 1,000, 3,000 and 20,000) held out, unshuffled. The authors'
    `train.py` of 27 June 2017 (6ce5edd24, and 76f39bd7a, which added label smoothing) had the debugging line
    `X_train, Y_train, ... = X_train[:1000], Y_train[:1000], ...` active; a406287ad commented it out again the next
    day."""
    data = evaluation.data
    if not 10 <= count <= len(data.train_labels):
        raise SystemExit(f"--train-images must be in [10, {len(data.train_labels)}], got {count}")
    held = round(count * evaluation.config.training.validation_fraction)
    x, y = data.train_images[:count], data.train_labels[:count]
    return (x[: count - held], y[: count - held]), (x[count - held :], y[count - held :])


def keras_validation_of_test_examples(evaluation: Evaluation, name: str, seed: int) -> tuple[tuple, tuple]:
    """The authors' rows of an offline recipe from 15 August 2017 (8c6162838): all training images, then the
    examples of the run's CNN (the run's source of offline examples) of the *test* images with the test labels (the
    script paired the examples with the test labels, so only the test set's examples fit), split as
    `validation_split` splits them (the last 10% held out, unshuffled): ((train rows, labels), (val rows, labels)),
    float32. (The rows of the scripts until 14 August, examples of the training images, and GDA's rows are
    :func:`nemesis_fast.train`'s ``val_rows="last"``.)"""
    key = evaluation.models.key(name)
    recipe = make_recipe(key["recipe"], key["recipe_settings"], dataset=evaluation.config.dataset, seed=seed)
    if not recipe.needs_source:
        raise SystemExit(f"--examples-of test needs an offline recipe (fgsm_adversarial, vat), got {name!r}")
    data = evaluation.data
    source = evaluation.models.get("standard")
    examples = offline_examples(lambda x, y: recipe.offline_examples(source, x, y), data.test_images, data.test_labels)
    rows = torch.cat([to_float(data.train_images), examples])
    labels = torch.cat([data.train_labels, data.test_labels])
    held = round(evaluation.config.training.validation_fraction * len(labels))
    return (rows[:-held], labels[:-held]), (rows[-held:], labels[-held:])


def _cleverhans_2017_normalize(v: torch.Tensor, epsilon: float = 1e-12) -> torch.Tensor:
    """cleverhans' l2_batch_normalize of mid-2017: v / (epsilon + max|v|), then times rsqrt(sqrt(epsilon) +
    sum of squares); not a unit vector where v is tiny (784 features: its max under ~1e-16), zero where v is zero."""
    flat = v.flatten(1)
    flat = flat / (epsilon + flat.abs().amax(1, keepdim=True))
    return (flat * torch.rsqrt(epsilon**0.5 + flat.square().sum(1, keepdim=True))).view_as(v)


def cleverhans_2017_vat(
    model: nn.Module,
    x: torch.Tensor,
    *,
    eps: float,
    xi: float,
    iterations: int,
    mean_over: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """The authors' VAT examples (src/attackers/virtual_adversarial.py, c7a44acc8 and ace25b4e6): cleverhans'
    vatm(model, x, model(x), eps, num_iterations=5, xi=1e-6) on their Keras model, whose output is the softmax:
    vatm takes it for logits, so the KL it differentiates is between softmax(probabilities); float32; clipped to
    [0, 1]. x: (B, ...) in [0, 1]; mean_over: the batch vatm's KL was averaged over (the authors ran it on all
    60,000 training images at once), which scales every gradient."""
    probabilities = lambda z: torch.softmax(model(z), dim=1)  # noqa: E731  (what vatm was given as "logits")
    with torch.no_grad():
        p_logits = probabilities(x)
        p, log_p = torch.softmax(p_logits, dim=1), torch.log_softmax(p_logits, dim=1)
    d = torch.randn(x.shape, generator=generator)
    for _ in range(iterations):
        d = (xi * _cleverhans_2017_normalize(d)).requires_grad_(True)
        kl = (p * (log_p - torch.log_softmax(probabilities(x + d), dim=1))).sum() / mean_over
        (d,) = torch.autograd.grad(kl, d)
    return (x + eps * _cleverhans_2017_normalize(d)).clamp(0.0, 1.0)


def authors_vat_data(evaluation: Evaluation, name: str, seed: int, mean_over: int) -> tuple[tuple, tuple]:
    """The run's training split, its originals followed by their VAT examples made as the authors' code made
    them (:func:`cleverhans_2017_vat`, on the run's CNN, the recipe's eps and xi, 5 power iterations), with the
    true labels; the clean held-out originals to validate on: ((rows, labels), (val images, labels))."""
    key = evaluation.models.key(name)
    if key["recipe"] != "vat":
        raise SystemExit(f"--cleverhans-2017 needs the vat defense, got {name!r}")
    settings = key["recipe_settings"]
    data = evaluation.data
    fraction = evaluation.config.training.validation_fraction
    (x, y), (x_val, y_val) = split_validation(data.train_images, data.train_labels, fraction, seed=seed)
    x = to_float(x)
    generator = torch.Generator().manual_seed(seed)
    with model_guard(evaluation.models.get("standard")) as source:
        examples = torch.cat(
            [
                cleverhans_2017_vat(
                    source,
                    batch,
                    eps=settings["eps"],
                    xi=settings["xi"],
                    iterations=5,
                    mean_over=mean_over or len(batch),
                    generator=generator,
                )
                for batch in x.split(1000)
            ]
        )
    norms = (examples - x).flatten(1).norm(dim=1)
    small = 100 * (norms < 0.1).float().mean()
    print(f"cleverhans-2017 VAT examples: L2 median {norms.median():.3g}, under 0.1 on {small:.1f}%", flush=True)
    return (torch.cat([x, examples]), torch.cat([y, y])), (to_float(x_val), y_val)
