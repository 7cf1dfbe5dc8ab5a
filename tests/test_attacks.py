"""Attack properties on small synthetic models: norm and clip bounds, eps = 0, batch = per sample, inputs and
model state untouched, targeted modes, seeds (exactness where the answer is known: test_attacks_exact.py; bad
input: test_attacks_input.py; the batched Jacobian products: test_jacobian.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from _attack_cases import (
    BOUNDS,
    CLASSES,
    NAMES,
    SHAPE,
    TOL,
    Linear,
    attacks,
    data,
    small_model,
)
from torch import nn

from nemesis_fast.attacks import (
    FGSM,
    JSMA,
    PGD,
    Attack,
    CarliniWagnerL2,
    DeepFool,
    RandFGSM,
    perturbation_norms,
)
from nemesis_fast.attacks.base import select_rows


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_give_finite_images_of_their_dtype(name, dtype):
    """C&W optimises in float32 (in float16 its tanh variable is infinite on the clip bounds); the model still
    sees images of its dtype, and every attack returns them."""
    model = small_model(dtype)
    x, y = data(dtype=dtype)
    x[:, 0, 0, 0] = 0.0  # pixels on the clip bounds
    x[:, 0, 0, 1] = 1.0
    y = model(x).argmax(1)  # every image classified as its label: each one is attacked (misclassified ones are not)
    result = attacks(model)[name].run(x, y)
    assert (result.iterations > 0).all()
    assert result.x_adv.dtype == dtype and torch.isfinite(result.x_adv).all()
    assert result.x_adv.min() >= 0 and result.x_adv.max() <= 1
    assert result.success.any()


@pytest.mark.parametrize("name", NAMES)
def test_the_model_sees_only_images_inside_clip(name):
    """Every image an attack evaluates the model on lies inside clip, random starts included (a gradient taken
    outside it is one of images the attack may not return)."""
    model = small_model()
    x, _ = data(16)
    x[:, 0, 0] = 0.0  # pixels on the clip bounds, where a random start or a step would leave the box
    x[:, 1, 0] = 1.0
    y = model(x).argmax(1)
    seen = []

    def recording(images: torch.Tensor) -> torch.Tensor:
        seen.append((images.min().item(), images.max().item()))
        return model(images)

    attacks(recording)[name].run(x, y)
    assert min(low for low, _ in seen) >= 0.0 and max(high for _, high in seen) <= 1.0


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("clip", [(0.0, 1.0), (-1.0, 2.0), None])
def test_norm_and_clip_bounds_and_result_fields(name, clip):
    """clip=None (tabular or standardised data) was refused, and a wide clip, its only stand-in, grew DeepFool's
    margin with the range."""
    model = small_model()
    x, y = data(low=-4.0, high=4.0) if clip is None else data(low=clip[0], high=clip[1])
    eps = 0.1
    result = attacks(model, clip=clip, eps=eps)[name].run(x, y)
    x_adv = result.x_adv
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and not x_adv.requires_grad
    if clip is not None:
        assert x_adv.min() >= clip[0] and x_adv.max() <= clip[1]
    assert torch.isfinite(x_adv).all()
    l0, l2, linf = perturbation_norms(x_adv, x)
    delta = (x_adv - x).flatten(1)
    torch.testing.assert_close(result.l2, delta.norm(dim=1))
    torch.testing.assert_close(result.linf, delta.abs().amax(1))
    assert torch.equal(result.l0, (delta != 0).sum(1)) and torch.equal(result.l0, l0)
    with torch.no_grad():
        predictions = model(x_adv).argmax(1)
    assert torch.equal(result.predictions, predictions)
    assert torch.equal(result.success, predictions != y)
    assert result.iterations.dtype == torch.int64 and result.iterations.shape == (len(x),)
    assert result.target is None
    if name in BOUNDS:
        which, scale = BOUNDS[name]
        assert (getattr(result, which) <= scale * eps + TOL).all(), getattr(result, which).max()
    assert result.success_rate > 0.5, name  # every attack fools this untrained model on most images


def test_iterations_reported():
    model = small_model()
    x, y = data()
    assert FGSM(model, 0.1).run(x, y).iterations.tolist() == [1] * len(x)
    assert PGD(model, 0.1, 0.02, 7).run(x, y).iterations.tolist() == [7] * len(x)
    deepfool = DeepFool(model, max_iter=20).run(x, y)
    assert ((deepfool.iterations >= 0) & (deepfool.iterations <= 20)).all()
    assert (deepfool.iterations[deepfool.success] >= 1).any()


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_eps_zero_is_the_identity(norm):
    model = small_model()
    x, y = data()
    for attack in (
        FGSM(model, 0.0, norm=norm),
        PGD(model, 0.0, 0.05, 3, norm=norm, seed=0),
        RandFGSM(model, 0.0, 0.0, seed=0),
    ):
        result = attack.run(x, y)
        assert torch.equal(result.x_adv, x), type(attack).__name__
        assert result.l0.sum() == 0 and result.l2.sum() == 0


DETERMINISTIC = ["fgsm", "fgsm-l2", "pgd-no-start", "deepfool", "deepfool-linf", "cw"]


def test_only_the_attacks_that_draw_random_numbers_say_they_are_not_deterministic():
    """R+FGSM's noise and PGD's random start; PGD without one is deterministic."""
    for name, attack in attacks(nn.Identity()).items():
        assert attack.deterministic == (name in DETERMINISTIC), name


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_batch_result_equals_per_sample_result(name):
    model = small_model(torch.float64)
    x, y = data(8, torch.float64)
    attack = attacks(model)[name]
    assert attack.deterministic
    batch = attack.run(x, y)
    for i in range(len(x)):
        single = attack.run(x[i : i + 1], y[i : i + 1])
        torch.testing.assert_close(single.x_adv[0], batch.x_adv[i], rtol=0, atol=1e-9)
        assert single.iterations.item() == batch.iterations[i].item()
        assert single.success.item() == batch.success[i].item()


@pytest.mark.parametrize("name", NAMES)
def test_inputs_model_mode_and_parameters_untouched(name):
    model = small_model()
    model.train()
    model[1].eval()  # a mixed state must come back as it was
    model[0].weight.requires_grad_(False)
    modes = [m.training for m in model.modules()]
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data()
    x_before, y_before = x.clone(), y.clone()
    attacks(model)[name].run(x, y)
    assert torch.equal(x, x_before) and torch.equal(y, y_before)
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # batch norm statistics untouched too


def test_model_state_is_restored_after_an_error():
    class FailsOnSecondCall(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = small_model()
            self.calls = 0

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("boom")
            return self.inner(images)

    model = FailsOnSecondCall().train()
    x, y = data()
    with pytest.raises(RuntimeError, match="boom"):
        FGSM(model, 0.1)(x, y)
    assert all(m.training for m in model.modules()) and all(p.requires_grad for p in model.parameters())


def test_an_existing_parameter_gradient_is_left_alone():
    model = small_model()
    x, y = data()
    F.cross_entropy(model(x), y).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    PGD(model, 0.1, 0.02, 3).run(x, y)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def test_a_plain_function_model_and_an_empty_batch():
    model = small_model()
    x, y = data()
    expected = FGSM(model, 0.1)(x, y)
    torch.testing.assert_close(FGSM(lambda images: model(images), 0.1)(x, y), expected, rtol=0, atol=0)
    for name, attack in attacks(model).items():
        result = attack.run(x[:0], y[:0])
        assert result.x_adv.shape == (0, *SHAPE) and result.success.shape == (0,), name
        assert math.isnan(result.success_rate)


def test_an_empty_targeted_run_has_an_empty_target_tensor():
    model = small_model()
    x, y = data()
    for attack in (JSMA(model, seed=0), FGSM(model, 0.1, targeted=True, seed=0), PGD(model, 0.1, 0.02, 2, seed=0)):
        result = attack.run(x[:0], y[:0])
        if attack.targeted:
            assert isinstance(result.target, torch.Tensor), type(attack).__name__
            assert result.target.shape == (0,) and result.target.dtype == torch.int64
            assert result.target.device == x.device and result.success.shape == (0,)
        else:
            assert result.target is None
    given = FGSM(model, 0.1).run(x[:0], y[:0], target=y[:0].int())  # a call's own (empty) targets
    assert given.target.shape == (0,) and given.target.dtype == torch.int64


def test_a_results_target_is_not_the_callers_tensor():
    """An int64 target on the model's device came back as the caller's own tensor: writing to it wrote to theirs."""
    model = small_model()
    x, y = data()
    target = (y + 1) % 5
    result = FGSM(model, 0.1).run(x, y, target=target)
    assert torch.equal(result.target, target) and result.target.data_ptr() != target.data_ptr()


def test_inference_mode_input():
    model = small_model()
    x, y = data()
    expected = FGSM(model, 0.1)(x, y)
    with torch.inference_mode():
        x_inf, y_inf = x.clone(), y.clone()
        torch.testing.assert_close(FGSM(model, 0.1)(x_inf, y_inf), expected, rtol=0, atol=0)


def test_a_model_made_in_inference_mode_is_refused_and_left_as_it_was():
    """Its parameters are inference tensors, which autograd cannot differentiate through: the attack failed inside
    the model guard, whose restoring of requires_grad failed too, leaving the model's parameters frozen."""
    with torch.inference_mode():
        model = small_model()
    x, y = data()
    with pytest.raises(ValueError, match="model has parameters or buffers made inside torch.inference_mode()"):
        FGSM(model, 0.1)(x, y)
    assert all(p.requires_grad for p in model.parameters())


def test_a_model_whose_batch_norm_statistics_were_set_in_inference_mode_is_refused():
    """One buffer made inside torch.inference_mode() (statistics recalibrated there), the parameters made outside
    it: refused as a model made there is, and left as it was."""
    model = small_model()
    with torch.inference_mode():
        model[1].running_mean = torch.zeros(6)
    x, y = data()
    with pytest.raises(ValueError, match="model has parameters or buffers made inside torch.inference_mode()"):
        FGSM(model, 0.1)(x, y)
    assert all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("attack_name", ["fgsm", "pgd", "pgd-l2", "cw", "randfgsm"])
def test_targeted_mode(attack_name):
    model = Linear(dtype=torch.float32)
    x, y = data(32, low=0.3, high=0.7)
    target = (y + 1 + torch.arange(32) % (CLASSES - 1)) % CLASSES
    clip = (-3.0, 4.0)
    attack = {
        "fgsm": FGSM(model, 3.0, clip=clip),
        "randfgsm": RandFGSM(model, 3.0, 0.5, clip=clip, seed=0),
        "pgd": PGD(model, 3.0, 0.3, 20, clip=clip, seed=0),
        "pgd-l2": PGD(model, 20.0, 2.0, 20, norm="2", clip=clip, seed=0),
        "cw": CarliniWagnerL2(model, initial_const=1.0, binary_search_steps=3, max_iter=50, clip=clip),
    }[attack_name]
    result = attack.run(x, y, target=target)
    assert torch.equal(result.success, result.predictions == target)
    assert result.success.float().mean() >= 0.9
    untargeted = type(attack)(model, **_same_settings(attack)).run(x, y)
    assert not torch.equal(untargeted.x_adv, result.x_adv)


def _same_settings(attack: Attack) -> dict:
    keys = {
        FGSM: ("eps", "norm"),
        RandFGSM: ("eps", "alpha", "seed"),
        PGD: ("eps", "alpha", "steps", "norm", "seed"),
        CarliniWagnerL2: ("initial_const", "binary_search_steps", "max_iter"),
    }[type(attack)]
    return {k: getattr(attack, k) for k in keys} | {"clip": attack.clip}


def test_random_targets_are_wrong_classes_and_reproducible():
    model = small_model()
    x, y = data(64)
    first = PGD(model, 0.2, 0.05, 3, targeted=True, seed=11).run(x, y)
    second = PGD(model, 0.2, 0.05, 3, targeted=True, seed=11).run(x, y)
    assert first.target is not None and (first.target != y).all()
    assert ((first.target >= 0) & (first.target < CLASSES)).all()
    assert len(first.target.unique()) > 1
    assert torch.equal(first.target, second.target) and torch.equal(first.x_adv, second.x_adv)
    seeded = (FGSM(model, 0.2, targeted=True, seed=11), CarliniWagnerL2(model, max_iter=2, targeted=True, seed=11))
    for attack in seeded:
        assert torch.equal(attack.run(x, y).target, first.target)  # the same seed draws the same targets


def test_seeds_and_generators_make_runs_reproducible():
    model = small_model()
    x, y = data()
    for make in (lambda s: RandFGSM(model, 0.2, 0.1, seed=s), lambda s: PGD(model, 0.2, 0.05, 2, seed=s)):
        assert torch.equal(make(3)(x, y), make(3)(x, y))
        assert not torch.equal(make(3)(x, y), make(4)(x, y))
        gen = torch.Generator().manual_seed(9)
        attack = make(gen)
        first, second = attack(x, y), attack(x, y)
        assert not torch.equal(first, second)  # the generator's state advanced
        gen.manual_seed(9)
        assert torch.equal(attack(x, y), first)
    torch.manual_seed(0)
    unseeded = RandFGSM(model, 0.2, 0.1)(x, y)
    torch.manual_seed(0)
    assert torch.equal(RandFGSM(model, 0.2, 0.1)(x, y), unseeded)  # None: torch's global generator


@pytest.mark.cuda
@pytest.mark.parametrize("name", NAMES)
def test_attacks_on_cuda_match_cpu(name):
    model = small_model(torch.float64)
    x, y = data(16, torch.float64)
    cpu = attacks(model)[name].run(x, y)
    gpu = attacks(model.cuda())[name].run(x.cuda(), y.cuda())
    assert gpu.x_adv.device.type == "cuda" and gpu.success.device.type == "cuda"
    assert gpu.x_adv.min() >= 0 and gpu.x_adv.max() <= 1
    if attacks(model)[name].deterministic:
        torch.testing.assert_close(gpu.x_adv.cpu(), cpu.x_adv, rtol=0, atol=1e-6)
        assert torch.equal(gpu.iterations.cpu(), cpu.iterations)


def test_select_rows_keeps_the_masked_rows_of_every_tensor_in_order():
    mask = torch.tensor([True, False, True, True, False])
    index, images = torch.arange(5), torch.arange(10.0).view(5, 2)
    rows, picked = select_rows(mask, index, images)
    assert rows.tolist() == [0, 2, 3] and picked.tolist() == [[0.0, 1.0], [4.0, 5.0], [6.0, 7.0]]
    (none,) = select_rows(torch.zeros(5, dtype=torch.bool), images)
    assert none.shape == (0, 2)


def test_calls_from_threads_on_one_model_give_it_back_and_keep_their_seeds():
    """Overlapping calls on one model each restored the flags they found, which another call had changed: the model
    was left frozen and in eval mode; one seeded attack shared by threads drew from another call's generator, or
    from torch's global one once another call had ended."""
    from concurrent.futures import ThreadPoolExecutor

    model = small_model().train()
    x, y = data()
    expected = PGD(model, 0.1, 0.02, 10, seed=1)(x, y)
    shared = PGD(model, 0.1, 0.02, 10, seed=1)

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        return shared(x, y), PGD(model, 0.1, 0.02, 10, seed=1)(x, y)

    with ThreadPoolExecutor(4) as pool:
        for _ in range(5):
            for future in [pool.submit(both) for _ in range(4)]:
                assert all(torch.equal(out, expected) for out in future.result())
            assert model.training and all(p.requires_grad for p in model.parameters())


def test_the_guard_gives_the_model_back_after_an_interrupted_start_and_when_guards_overlap():
    """A Ctrl-C inside model.eval() left a counted guard open: the model stayed frozen and in eval mode for the rest
    of the process. Guards overlapping on a model and a wrapper of it (not one inside the other) each restored what
    they found, which the other had changed."""
    from nemesis_fast.attacks import model_guard

    class InterruptsOnce(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.armed = True

        def train(self, mode: bool = True) -> nn.Module:
            if self.armed and not mode:
                self.armed = False
                raise KeyboardInterrupt
            return super().train(mode)

        def forward(self, logits: torch.Tensor) -> torch.Tensor:
            return logits

    model = nn.Sequential(nn.Flatten(), nn.Linear(32, CLASSES), InterruptsOnce()).train()
    x, y = data()
    with pytest.raises(KeyboardInterrupt):
        FGSM(model, 0.1)(x, y)
    FGSM(model, 0.1)(x, y)
    assert model.training and all(p.requires_grad for p in model.parameters())

    def as_given() -> bool:
        return model.training and all(p.requires_grad for p in model.parameters())

    outer, inner = model_guard(nn.Sequential(nn.Identity(), model)), model_guard(model)
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)
    assert not model.training and not any(p.requires_grad for p in model.parameters()), "the inner guard holds it"
    inner.__exit__(None, None, None)
    assert as_given()


def test_a_dropped_attack_and_model_are_freed_without_the_cyclic_collector():
    """No attack is a reference cycle (it used to be one through its Jacobian helper, which held its bound logits
    method): deleting an attack and its model frees the model at once, as deleting the model alone would."""
    import gc
    import weakref

    x, y = data(4)
    enabled = gc.isenabled()
    gc.collect()
    gc.disable()  # only reference counting frees anything below
    try:
        for name in NAMES:
            model = small_model()
            attack = attacks(model)[name]
            attack(x, y)
            alive = weakref.ref(model)
            del attack, model
            assert alive() is None, name
    finally:
        if enabled:
            gc.enable()


def _call_interrupted_at(call, code: set, skipped: set[int], line: int) -> tuple[int, list]:
    """Runs `call()` with a KeyboardInterrupt raised at the `line`-th line event of the functions of `code` (not
    counting lines of `skipped`): (the line events counted, [(code, line number)] where it was raised)."""
    import sys

    seen, landed = 0, []

    def tracer(frame, event, arg):
        nonlocal seen
        if event == "line" and frame.f_lineno not in skipped:
            seen += 1
            if seen == line:
                landed.append((frame.f_code, frame.f_lineno))
                raise KeyboardInterrupt
        return tracer

    sys.settrace(lambda frame, event, arg: tracer if frame.f_code in code else None)
    try:
        call()
    except KeyboardInterrupt:
        pass
    finally:
        sys.settrace(None)
    return seen, landed


def test_a_ctrl_c_at_any_line_of_the_guards_bookkeeping_leaves_nothing_held():
    """A KeyboardInterrupt landing between two statements of the holders' bookkeeping left entries counted for
    good: every later call then put the model back in eval mode and froze it again, even after the user had set it
    back by hand. Raised here at each line of it in turn (one per call), the call gives the model its flags back,
    except where the interrupt lands as the release begins (at its call, before its `try`), and there no later
    call holds the model any more: set back by hand, it stays so. (Not at a `with` or `for` line: a trace function
    can raise there after a block's last statement, before the lock's __exit__, where a real Ctrl-C, checked for
    at calls and backward jumps, does not land.)"""
    import inspect

    from nemesis_fast import _modes

    model = small_model().train()
    x, y = data(2)
    attack = FGSM(model, 0.1)
    code = {getattr(_modes, name).__code__ for name in ("_hold", "_release_once", "_release") if hasattr(_modes, name)}
    code |= {f.__wrapped__.__code__ for f in (_modes.eval_mode, _modes.frozen)}
    source = inspect.getsource(_modes).splitlines()  # line n is source[n - 1]
    headers = {n for n, text in enumerate(source, 1) if text.strip().startswith(("with ", "for "))}
    release, release_first = inspect.getsourcelines(_modes._release)
    before_try = {release_first + i for i, text in enumerate(release) if "try:" not in "".join(release[:i])}

    def given_back() -> bool:
        return all(m.training for m in model.modules()) and all(p.requires_grad for p in model.parameters())

    line = 0
    while True:
        seen, landed = _call_interrupted_at(lambda: attack(x, y), code, headers, line)
        at_release_start = bool(landed) and (
            (landed[0][0] is _modes._release.__code__ and landed[0][1] in before_try)
            or "_release(token, held)" in source[landed[0][1] - 1]  # the call of it, in a `finally`
        )
        assert given_back() or at_release_start, (line, landed)
        model.train().requires_grad_(True)  # set back by hand: the next call gives the model back so
        attack(x, y)
        assert given_back() and not any(entry[2] for entry in _modes._HELD.values()), (line, landed)
        if line > seen:  # every line of a whole call interrupted once
            break
        line += 1
    assert line > 20
