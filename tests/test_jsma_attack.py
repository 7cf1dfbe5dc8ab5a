"""The JSMA attack: the same pair sequence as a plain-torch per-sample JSMA, batch = per sample, the stopping
rules, targeted success on the MNIST model of the session, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from nemesis_fast.attacks import JSMA
from nemesis_fast.reference import jsma_saliency_search as reference_search

CLASSES = 4
SHAPE = (1, 6, 6)  # 36 features


def tiny_model(dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 36, 12), nn.Tanh(), nn.Linear(12, 4)
        )
    return model.to(dtype).eval()


def images(count: int, dtype: torch.dtype = torch.float64, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(count, *SHAPE, generator=g).to(dtype)
    x[:, :, :2] = 0.0  # some features at the lower bound,
    x[:, :, -1] = 1.0  # some at the upper bound
    return x, torch.randint(0, CLASSES, (count,), generator=g)


def other_targets(model: nn.Module, x: torch.Tensor, shift: int = 1) -> torch.Tensor:
    """Targets different from the model's prediction."""
    with torch.no_grad():
        return (model(x).argmax(1) + shift) % CLASSES


def plain_jsma(model, x, target, theta, gamma, clip, use_logits):
    """JSMA one image at a time with plain autograd: per step the gradient of the target output and of the sum of
    the other outputs, and the materialised reference pair search. Returns (x_adv, pairs per image)."""
    out, all_pairs = [], []
    for i in range(len(x)):
        xi = x[i : i + 1].flatten(1).clone()
        domain = xi < clip[1] if theta > 0 else xi > clip[0]
        others = torch.arange(CLASSES) != target[i]
        pairs = []
        for _ in range(math.floor(gamma * xi.shape[1] / 2)):
            leaf = xi.clone().requires_grad_(True)
            logits = model(leaf.view(1, *x.shape[1:]))
            if logits.argmax(1).item() == target[i].item():
                break
            if use_logits:
                (t_grad,) = torch.autograd.grad(logits[0, target[i]], leaf, retain_graph=True)
                (o_grad,) = torch.autograd.grad(logits[0, others].sum(), leaf)
            else:  # the probabilities sum to 1 (see test_probability_gradients_of_the_others)
                (t_grad,) = torch.autograd.grad(logits.softmax(1)[0, target[i]], leaf)
                o_grad = -t_grad
            p, q, found = reference_search(t_grad, o_grad, domain, theta > 0)
            if not found.item():
                break
            for f in (p.item(), q.item()):
                xi[0, f] = (xi[0, f] + theta).clamp(*clip)
                domain[0, f] = False
            pairs.append((p.item(), q.item()))
        out.append(xi.view(x.shape[1:]))
        all_pairs.append(pairs)
    return torch.stack(out), all_pairs


def pairs_of(attack: JSMA) -> list[list[tuple[int, int]]]:
    return [[tuple(pair) for pair in rows if pair[0] >= 0] for rows in attack.last_pairs.tolist()]


@pytest.mark.parametrize("backend", ["native", "torch"])
@pytest.mark.parametrize(
    "theta,gamma,use_logits,clip",
    [
        (1.0, 0.5, True, (0.0, 1.0)),
        (0.4, 0.5, False, (0.0, 1.0)),
        (-1.0, 0.5, True, (0.0, 1.0)),
        (0.7, 1.0, True, (-0.5, 1.5)),
    ],
)
def test_same_pair_sequence_as_a_plain_torch_jsma(backend, theta, gamma, use_logits, clip):
    model = tiny_model()
    x, _ = images(5)
    x = x.clamp(*clip)
    target = other_targets(model, x)
    attack = JSMA(model, theta, gamma, clip=clip, use_logits=use_logits, backend=backend)
    result = attack.run(x, target=target, y=(target + 1) % CLASSES)
    expected_x, expected_pairs = plain_jsma(model, x, target, theta, gamma, clip, use_logits)
    assert pairs_of(attack) == expected_pairs
    assert any(len(p) > 1 for p in expected_pairs)
    torch.testing.assert_close(result.x_adv, expected_x, rtol=0, atol=0)
    assert result.iterations.tolist() == [len(p) for p in expected_pairs]


def test_probability_gradients_of_the_others():
    """With use_logits=False, beta is -alpha: the sum of the other classes' probability gradients, one backward
    pass per class (the plain softmax Jacobian), agrees with it."""
    model = tiny_model()
    x, _ = images(3, seed=8)
    target = other_targets(model, x)
    attack = JSMA(model, use_logits=False)
    attack.num_classes = CLASSES
    _, alpha, beta = attack._gradients(x, torch.nn.functional.one_hot(target, CLASSES).double())
    leaf = x.clone().requires_grad_(True)
    probs = model(leaf).softmax(1)
    per_class = [torch.autograd.grad(probs[:, k].sum(), leaf, retain_graph=True)[0].flatten(1) for k in range(CLASSES)]
    jacobian = torch.stack(per_class, 1)  # (B, C, n)
    expected_alpha = jacobian[torch.arange(3), target]
    expected_beta = jacobian.sum(1) - expected_alpha
    torch.testing.assert_close(alpha, expected_alpha)
    torch.testing.assert_close(beta, expected_beta, rtol=1e-6, atol=1e-12)
    assert torch.equal(beta, -alpha)


@pytest.mark.parametrize("use_logits", [True, False])
def test_under_autocast_either_gradient_runs(use_logits):
    """Under torch.autocast the softmax is float32 and the logits bfloat16: use_logits=False ended in "expected
    scalar type Float but found BFloat16". Both modes now run, and reach their targets as in float32 mostly."""
    model = tiny_model(torch.float32)
    x, _ = images(6, torch.float32, seed=4)
    target = other_targets(model, x)
    y = (target - 1) % CLASSES  # the predictions
    plain = JSMA(model, use_logits=use_logits).run(x, y, target)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = JSMA(model, use_logits=use_logits).run(x, y, target)
    assert mixed.x_adv.dtype == torch.float32 and not torch.isnan(mixed.x_adv).any()
    assert abs(mixed.success_rate - plain.success_rate) <= 2 / 6


def test_batch_result_equals_per_sample_result():
    model = tiny_model()
    x, _ = images(8, seed=4)
    target = other_targets(model, x, shift=2)
    y = (target + 1) % CLASSES
    attack = JSMA(model, 1.0, 0.6)
    batch = attack.run(x, y, target)
    batch_pairs = pairs_of(attack)
    for i in range(len(x)):
        single = attack.run(x[i : i + 1], y[i : i + 1], target[i : i + 1])
        assert torch.equal(single.x_adv[0], batch.x_adv[i])
        assert pairs_of(attack)[0] == batch_pairs[i]
        assert single.iterations.item() == batch.iterations[i].item()
        assert single.success.item() == batch.success[i].item()


def test_last_pairs_belong_to_the_last_call():
    """An empty batch leaves (0, steps, 2) pairs, a call that raises none: never the pairs of an earlier call."""
    model = tiny_model(torch.float32)
    x, _ = images(3, torch.float32, seed=2)
    target = other_targets(model, x)
    attack = JSMA(model, 1.0, 0.25)
    attack.run(x, (target + 1) % CLASSES, target)
    assert attack.last_pairs.shape == (3, attack.max_steps(36), 2)
    attack.run(x[:0], target[:0], target[:0])
    assert attack.last_pairs.shape == (0, attack.max_steps(36), 2)
    attack.run(x, (target + 1) % CLASSES, target)
    with pytest.raises(ValueError, match="target"):
        attack.run(x, target, torch.full_like(target, CLASSES))
    assert attack.last_pairs is None


def test_changes_stay_within_the_budget_and_the_chosen_features():
    model = tiny_model(torch.float32)
    x, _ = images(10, torch.float32, seed=2)
    target = other_targets(model, x)
    for theta, gamma in ((1.0, 0.25), (-0.3, 0.5), (0.3, 0.05)):
        attack = JSMA(model, theta, gamma)
        result = attack.run(x, (target + 1) % CLASSES, target)
        steps = attack.max_steps(36)
        assert attack.last_pairs.shape == (10, steps, 2)
        assert (result.iterations <= steps).all() and (result.l0 <= 2 * result.iterations).all()
        changed = result.x_adv.flatten(1) != x.flatten(1)
        for i, pairs in enumerate(pairs_of(attack)):
            chosen = {f for pair in pairs for f in pair}
            assert set(changed[i].nonzero().flatten().tolist()) <= chosen
            assert len(chosen) == 2 * len(pairs)  # a chosen feature leaves the domain
            assert all(p < q for p, q in pairs)
        delta = (result.x_adv - x).flatten(1)
        assert ((delta >= 0) if theta > 0 else (delta <= 0)).all()
        assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
        assert (delta.abs() <= abs(theta) + 1e-6).all()
    # gamma * n < 2: no step at all
    attack = JSMA(model, 1.0, 0.05)
    assert attack.max_steps(36) == 0
    assert torch.equal(attack(x, (target + 1) % CLASSES, target), x)


def test_stopping_rules():
    model = tiny_model()
    x, _ = images(6, seed=3)
    prediction = other_targets(model, x, shift=0)
    attack = JSMA(model, 1.0, 1.0)
    # Images already classified as their target stop at once, unchanged.
    target = prediction.clone()
    target[3:] = (prediction[3:] + 1) % CLASSES
    result = attack.run(x, (target + 1) % CLASSES, target)
    assert result.iterations[:3].tolist() == [0, 0, 0] and torch.equal(result.x_adv[:3], x[:3])
    # Successful images stop on reaching the target: one step fewer would not have reached it.
    for i in range(3, 6):
        if result.success[i]:
            steps = result.iterations[i].item()
            assert steps > 0 and (attack.last_pairs[i, steps:] == -1).all()
    # Every feature at the bound it moves to: no valid pair, no step.
    ones = torch.ones_like(x)
    target = (other_targets(model, ones, shift=0) + 1) % CLASSES
    result = attack.run(ones, (target + 1) % CLASSES, target)
    assert result.iterations.tolist() == [0] * 6 and torch.equal(result.x_adv, ones)


def test_targets_are_drawn_with_the_seed():
    model = tiny_model()
    x, y = images(12, seed=5)
    first = JSMA(model, 1.0, 0.2, seed=3).run(x, y)
    second = JSMA(model, 1.0, 0.2, seed=3).run(x, y)
    assert torch.equal(first.target, second.target) and (first.target != y).all()
    assert torch.equal(first.x_adv, second.x_adv)


@pytest.mark.slow
def test_mnist_targeted_success_at_gamma_01(mnist_model, mnist_test_data):
    """The paper's setting (theta = +1, gamma = 0.1) on the 500 real MNIST test images, random wrong targets.

    On the paper's CNN, gradients of the softmax probabilities (Papernot et al.'s F) reach the issue's 90% of
    the targets; gradients of the logits (the default, as in torchattacks) fewer, as torchattacks' JSMA does on
    the same images: most misses are target 1, which an attack that only brightens pixels reaches last.
    """
    x, y = mnist_test_data
    for use_logits, least in ((False, 0.90), (True, 0.75)):
        attack = JSMA(mnist_model, 1.0, 0.1, use_logits=use_logits, seed=0)
        result = attack.run(x, y)
        mean_l0 = result.l0[result.success].float().mean().item()
        print(f"JSMA on MNIST, use_logits={use_logits}: targeted success {result.success_rate:.3f}, mean L0 of the")
        print(f"  successful images {mean_l0:.1f} of 784 features ({100 * mean_l0 / 784:.2f}%)")
        assert result.success_rate >= least
        assert (result.l0 <= 78).all() and (result.target != y).all()


@pytest.mark.cuda
def test_cuda_matches_cpu():
    """float64 model: the GPU's gradients differ from the CPU's in the last bits only, which the float32 pair
    search almost never sees; every backend of the search must give the CPU's pairs."""
    model = tiny_model()
    x, _ = images(6, seed=6)
    target = other_targets(model, x)
    y = (target + 1) % CLASSES
    cpu = JSMA(model, 1.0, 0.5)
    expected = cpu.run(x, y, target)
    gpu_model = tiny_model().cuda()
    for backend in ("native", "triton", "torch"):
        gpu = JSMA(gpu_model, 1.0, 0.5, backend=backend)
        result = gpu.run(x.cuda(), y.cuda(), target.cuda())
        agree = sum(a == b for a, b in zip(pairs_of(gpu), pairs_of(cpu)))
        assert agree >= 5, (backend, pairs_of(gpu), pairs_of(cpu))
        assert result.success.sum().item() >= expected.success.sum().item() - 1


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"theta": 0.0}, ValueError, "theta must be nonzero"),
        ({"theta": float("nan")}, ValueError, "theta must be finite"),
        ({"gamma": 0.0}, ValueError, "gamma must be > 0"),
        ({"gamma": 1.5}, ValueError, "gamma must be <= 1"),
        ({"gamma": -0.1}, ValueError, "gamma must be > 0"),
        ({"use_logits": 1}, TypeError, "use_logits must be a bool"),
        ({"backend": "cuda"}, ValueError, "backend must be one of"),
        ({"clip": (1.0, 0.0)}, ValueError, "clip"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        JSMA(tiny_model(), **kwargs)


def test_bad_targets_and_images():
    model = tiny_model()
    x, y = images(3)
    attack = JSMA(model)
    with pytest.raises(ValueError, match="target must differ from y"):
        attack(x, y, y)
    with pytest.raises(ValueError, match="target must hold one label per image"):
        attack(x, y, y[:2])
    with pytest.raises(ValueError, match="x must lie inside clip"):
        attack(x + 2, y, (y + 1) % CLASSES)
    result = attack.run(x[:0], y[:0], y[:0])
    assert result.x_adv.shape == (0, *SHAPE)


def test_a_gamma_that_allows_no_step_is_told():
    """On 8 features gamma 0.1 gives a budget of floor(0.4) = 0 steps: every image came back unchanged, reported as
    a failure, without a word."""
    with torch.random.fork_rng(devices=[]):  # seeded: at about 1 in 20 seeds an image has no valid pair at once
        torch.manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(8, CLASSES)).double()
    x = torch.rand(3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = model(x).argmax(1)
    target = (y + 1) % CLASSES
    with pytest.warns(UserWarning, match=r"gamma=0.1 allows no step on images of 8 features .* >= 2 / n = 0.25"):
        assert torch.equal(JSMA(model)(x, y, target), x)
    assert JSMA(model, gamma=0.25).run(x, y, target).iterations.max() == 1


def test_without_a_clip_every_feature_may_move_and_nothing_is_clipped():
    """clip=None was refused; without bounds the domain is every feature and a step adds theta as it is."""
    model = tiny_model()
    x, _ = images(4)
    target = other_targets(model, x)
    y = model(x).argmax(1)
    result = JSMA(model, 0.7, 0.5, clip=None).run(x, y, target)
    delta = (result.x_adv - x).flatten(1)
    assert result.iterations.min() > 0 and result.x_adv.max() > 1.0  # features at 1 moved past it
    assert ((delta == 0) | (delta == 0.7) | ((delta - 0.7).abs() < 1e-12)).all()
    assert torch.equal(result.l0, 2 * result.iterations)  # each step changes two features, once each


@pytest.mark.parametrize("theta,value", [(0.5, 2.0), (-0.5, -1.0)])
def test_without_a_clip_features_beyond_0_and_1_are_in_the_domain(theta, value):
    """Without bounds no feature is at the bound it moves towards: images far outside [0, 1] (every feature near 2,
    or near -1 for theta < 0) take their steps as any others."""
    model = tiny_model()
    x = torch.full((4, *SHAPE), value, dtype=torch.float64)
    x += torch.rand(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype) / 100
    target = other_targets(model, x)
    result = JSMA(model, theta, 0.5, clip=None).run(x, (target + 1) % CLASSES, target)
    assert (result.iterations > 0).all()
    assert torch.equal(result.l0, 2 * result.iterations)  # each step changes two features, once each
