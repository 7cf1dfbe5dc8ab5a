"""The batched vector-Jacobian products of the logits (nemesis_fast.attacks.jacobian) that DeepFool and JSMA
use: against per-class autograd, on every path (vmap, one backward pass per product on a CPU, stacked copies), for
the images an attack keeps."""

from __future__ import annotations

import pytest
import torch
from _attack_cases import CLASSES, SHAPE, data, small_model

from nemesis_fast.attacks import JSMA, DeepFool, model_guard
from nemesis_fast.attacks import jacobian as jacobian_module
from nemesis_fast.attacks.jacobian import LogitJacobian, difference_weights, predicts
from nemesis_fast.nn import BoundedReLU


def test_batched_gradients_fall_back_to_stacked_copies():
    model = small_model(activation=lambda: BoundedReLU(1.0))
    x, y = data()
    attack = DeepFool(model, max_iter=20)
    vmapped = attack.run(x, y)
    assert attack._jacobian.use_vmap
    stacked = DeepFool(model, max_iter=20)
    stacked._jacobian.use_vmap = False
    fallback = stacked.run(x, y)
    torch.testing.assert_close(fallback.x_adv, vmapped.x_adv, rtol=0, atol=1e-5)
    assert torch.equal(fallback.iterations, vmapped.iterations)
    weights = torch.randn(3, len(x), CLASSES)
    with model_guard(model), torch.no_grad():
        logits_a, grads_a = attack.logit_gradients(x, weights)
        logits_b, grads_b = stacked.logit_gradients(x, lambda logits: weights)
    torch.testing.assert_close(logits_a, logits_b)
    torch.testing.assert_close(grads_a, grads_b)
    assert grads_a.shape == (3, *x.shape)


@pytest.mark.parametrize("path", ["vmap", "stacked"])
@pytest.mark.parametrize("kept", [12, 11, 3, 0])  # all; one stopped (backward over all); most stopped; none kept
def test_logit_gradients_of_kept_equal_those_of_the_kept_images(path, kept):
    model = small_model()
    x, _ = data()
    mask = torch.zeros(len(x), dtype=torch.bool)
    mask[torch.randperm(len(x), generator=torch.Generator().manual_seed(2))[:kept]] = True
    weights = torch.randn(2, len(x), CLASSES, generator=torch.Generator().manual_seed(3))
    jacobian = LogitJacobian(model)
    jacobian.use_vmap = path == "vmap"
    with model_guard(model), torch.no_grad():
        all_logits, all_grads = LogitJacobian(model).products(x, weights)
        seen = []

        def keep(logits: torch.Tensor) -> torch.Tensor:
            seen.append(logits)
            return mask

        logits, got_mask, rows, grads = jacobian.products_of_kept(x, weights, keep)
    assert torch.equal(got_mask, mask) and len(seen) == 1 and not seen[0].requires_grad
    assert torch.equal(rows, mask.nonzero().squeeze(1))
    torch.testing.assert_close(logits, all_logits)
    assert grads.shape == (2, kept, *SHAPE)
    torch.testing.assert_close(grads, all_grads[:, mask])


def test_logit_gradients_of_kept_take_weight_functions_and_keep_predictions():
    model = small_model()
    x, _ = data()
    with model_guard(model), torch.no_grad():
        labels = model(x).argmax(1)
        labels[:4] = (labels[:4] + 1) % CLASSES  # these four are no longer predicted as their label
        identity = torch.eye(CLASSES)[:, None, :].expand(-1, len(x), -1)
        logits, mask, _, grads = LogitJacobian(model).products_of_kept(x, lambda out: identity, predicts(labels))
        _, expected = LogitJacobian(model).products(x[4:], identity[:, 4:])
    assert mask.tolist() == [False] * 4 + [True] * (len(x) - 4)
    torch.testing.assert_close(grads, expected)


def test_difference_weights_give_the_logit_differences():
    logits = torch.randn(5, CLASSES)
    first = torch.tensor([0, 3, 1, 2, 2])
    others = torch.tensor([[1, 2], [0, 1], [3, 0], [1, 0], [0, 1]])
    weights = difference_weights(first, others, CLASSES)
    assert weights.shape == (2, 5, CLASSES) and weights.dtype == torch.float32
    expected = (logits.gather(1, others) - logits.gather(1, first[:, None])).T
    torch.testing.assert_close((weights * logits).sum(2), expected)


def test_vmap_failure_switches_to_stacked_copies():
    class NoVmap(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad):
            grad.tolist()  # leaves the tensor world: vmap cannot batch this
            return grad * 2

    model = small_model()
    attack = DeepFool(lambda images: model(NoVmap.apply(images)), max_iter=5)
    x, y = data()
    result = attack.run(x, y)
    assert not attack._jacobian.use_vmap and result.success_rate > 0.5


@pytest.mark.parametrize("images", [8, 32])  # K * B = 40: one batched pass; 160: one backward pass per product
def test_the_cpu_paths_give_the_per_class_gradients(images):
    """Below PER_PRODUCT_BACKWARD_MIN products a CPU takes one batched backward pass, from it one pass per
    product; both give what autograd gives for each product on its own."""
    model = small_model()
    x, _ = data(images)
    weights = torch.randn(5, images, CLASSES, generator=torch.Generator().manual_seed(4))
    assert (5 * images >= jacobian_module.PER_PRODUCT_BACKWARD_MIN) == (images == 32)
    with model_guard(model), torch.no_grad():
        logits, grads = LogitJacobian(model).products(x, weights)
        with torch.enable_grad():
            leaf = x.clone().requires_grad_(True)
            out = model(leaf)
            expected = [torch.autograd.grad((out * w).sum(), leaf, retain_graph=True)[0] for w in weights]
    torch.testing.assert_close(logits, out.detach())
    torch.testing.assert_close(grads, torch.stack(expected), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("attack", ["deepfool", "jsma"])
def test_a_compiled_model_runs_past_the_per_product_path(attack):
    """A model under torch.compile has a backward that runs once per forward pass (AOTAutograd donates its
    buffers: retain_graph refused). With K * B >= PER_PRODUCT_BACKWARD_MIN on a CPU the attacks took K backward
    passes through one graph and failed; they now take one batched pass there, with the same images as eager."""
    model = small_model()
    x, _ = data(64)  # K * B >= 2 * 64 = PER_PRODUCT_BACKWARD_MIN: the per-product path
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # every image classified as labelled: all 64 attacked
    compiled = torch.compile(model, backend="aot_eager")
    make = {
        "deepfool": lambda m: DeepFool(m, max_iter=5),
        "jsma": lambda m: JSMA(m, theta=1.0, gamma=0.1, seed=0),
    }[attack]
    run = make(compiled)
    result = run.run(x, y)
    assert not run._jacobian.per_product and run._jacobian.use_vmap
    torch.testing.assert_close(result.x_adv, make(model).run(x, y).x_adv, rtol=0, atol=1e-5)
