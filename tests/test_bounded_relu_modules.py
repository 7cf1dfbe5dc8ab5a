"""bounded_relu's nn modules: BoundedReLU in both forms, replace_relu against a Hardtanh model, the copy with
ReLU's gradient (BPDA), and the memory a model saves for backward."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from nemesis_fast.bench.harness import saved_tensor_bytes
from nemesis_fast.nn import BoundedReLU, replace_relu, to_hardtanh, with_relu_gradient


def small_cnn() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.Sequential(nn.ReLU(), nn.Flatten()),
        nn.Linear(8 * 8 * 8, 10),
    )


def swap_relu_for_module(model: nn.Module, make: Callable[[], nn.Module]) -> nn.Module:
    """`model` with each nn.ReLU replaced by `make()`, in place."""
    for name, child in model.named_children():
        if isinstance(child, nn.ReLU):
            setattr(model, name, make())
        else:
            swap_relu_for_module(child, make)
    return model


def test_replace_relu_matches_a_hardtanh_model():
    torch.manual_seed(0)
    model = small_cnn()
    twin = swap_relu_for_module(small_cnn(), lambda: nn.Hardtanh(0.0, 0.5))
    twin.load_state_dict(model.state_dict())
    assert replace_relu(model, 0.5) is model
    assert sum(isinstance(m, BoundedReLU) for m in model.modules()) == 2
    assert not any(isinstance(m, nn.ReLU) for m in model.modules())
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(model(x), twin(x))
    model(x).square().sum().backward()
    twin(x).square().sum().backward()
    for p, q in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(p.grad, q.grad)
    assert isinstance(replace_relu(nn.ReLU(), 2.0), BoundedReLU)
    with pytest.warns(UserWarning, match="no nn.ReLU submodule, so nothing was replaced .*keep t = 0.5"):
        assert replace_relu(model, 0.25) is model  # already bounded: said, not silently kept at 0.5
    assert {m.t for m in model.modules() if isinstance(m, BoundedReLU)} == {0.5}
    with pytest.warns(UserWarning, match=r"nothing was replaced \(F.relu calls inside forward are not modules\)$"):
        replace_relu(nn.Sequential(nn.Linear(2, 2), nn.ReLU6()))
    with pytest.raises(ValueError, match="t must be > 0"):
        replace_relu(small_cnn(), 0.0)
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        replace_relu("model")
    with pytest.raises(ValueError, match="backend must be one of"):
        replace_relu(small_cnn(), backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        BoundedReLU(backend="gpu")


class StraightThroughBound(nn.Module):
    """min(relu(x), t) with ReLU's gradient, written with detach: the reference for BPDA through BReLU."""

    def __init__(self, t: float) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        relu = torch.relu(x)
        return relu - (relu - relu.clamp_max(self.t)).detach()


def test_relu_gradient_copy_keeps_the_outputs_and_passes_relus_gradient():
    torch.manual_seed(0)
    model = replace_relu(small_cnn(), 0.5)
    bpda = with_relu_gradient(model)
    assert bpda is not model and all(m.gradient == "exact" for m in model.modules() if isinstance(m, BoundedReLU))
    assert "gradient='relu'" in repr(bpda)
    reference = swap_relu_for_module(small_cnn(), lambda: StraightThroughBound(0.5))
    reference.load_state_dict(model.state_dict())
    x = (3 * torch.randn(4, 1, 8, 8)).requires_grad_(True)  # large enough for many units to saturate
    assert torch.equal(bpda(x), model(x))
    probe = torch.randn(4, 10)
    (got,) = torch.autograd.grad((bpda(x) * probe).sum(), x)
    (expected,) = torch.autograd.grad((reference(x) * probe).sum(), x)
    (own,) = torch.autograd.grad((model(x) * probe).sum(), x)
    torch.testing.assert_close(got, expected)
    assert (got - own).abs().max() > 1e-3  # the saturated units pass gradient only through BPDA
    with pytest.raises(ValueError, match="no BoundedReLU"):
        with_relu_gradient(small_cnn())
    with pytest.raises(ValueError, match="gradient must be one of"):
        BoundedReLU(1.0, gradient="straight")


def test_the_relu_gradient_is_zero_where_relus_is_whatever_the_incoming_gradient():
    bpda = with_relu_gradient(nn.Sequential(BoundedReLU(1.0)))
    x = torch.tensor([-1.0, 0.0, float("nan"), 0.5, 2.0], requires_grad=True)
    (got,) = torch.autograd.grad(bpda(x), x, torch.full((5,), float("nan")))
    (relus,) = torch.autograd.grad(torch.relu(x), x, torch.full((5,), float("nan")))
    assert torch.equal(got.isnan(), relus.isnan()) and (got[:2] == 0).all()


def test_the_relu_gradient_holds_in_forward_mode_too():
    bpda = with_relu_gradient(nn.Sequential(BoundedReLU(1.0)))
    x, v = torch.tensor([-1.0, 0.0, 0.5, 2.0]), torch.tensor([3.0, 5.0, 7.0, 11.0])
    assert torch.equal(torch.func.jvp(bpda, (x,), (v,))[1], torch.tensor([0.0, 0.0, 7.0, 11.0]))


def test_a_module_held_under_two_names_is_replaced_under_both_and_stays_shared():
    relu, block = nn.ReLU(), nn.Sequential(nn.Linear(3, 3), nn.ReLU())
    model = nn.Sequential(nn.Linear(3, 3), relu, block, relu, block)
    replace_relu(model, 0.5)
    assert [type(m).__name__ for m in model] == ["Linear", "BoundedReLU", "Sequential", "BoundedReLU", "Sequential"]
    assert model[1] is model[3] and model[2] is model[4] and isinstance(block[1], BoundedReLU)
    assert (model(torch.full((1, 3), 10.0)) <= 0.5).all()
    plain = to_hardtanh(model)
    assert not any(isinstance(m, BoundedReLU) for m in plain.modules())
    assert plain[1] is plain[3] and plain[2] is plain[4]


def test_a_replacement_keeps_the_mode_and_the_hooks_of_the_module_it_replaces():
    """The new BoundedReLU (or Hardtanh) was in train mode inside an eval model, and hooks on the ReLU no longer
    fired."""
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2)).eval()
    calls: list[str] = []
    handle = model[1].register_forward_hook(lambda module, inputs, output: calls.append("forward"))
    model[1].register_full_backward_hook(lambda module, grad_in, grad_out: calls.append("backward"))
    replace_relu(model, 1.0)
    assert isinstance(model[1], BoundedReLU) and not any(m.training for m in model.modules())
    model(torch.randn(2, 3, requires_grad=True)).sum().backward()
    assert calls == ["forward", "backward"]
    handle.remove()
    model(torch.randn(2, 3))
    assert calls == ["forward", "backward"], "the hook's handle still removes it"
    copied = to_hardtanh(model)
    assert isinstance(copied[1], nn.Hardtanh) and not any(m.training for m in copied.modules())
    assert not replace_relu(nn.ReLU().eval()).training and not to_hardtanh(BoundedReLU().eval()).training
    root = BoundedReLU()
    root.register_forward_hook(lambda module, inputs, output: calls.append("root"))
    to_hardtanh(root)(torch.randn(3))
    assert calls[-1] == "root" and len(root._forward_hooks) == 1, "a copy of the root's hook, the root's own kept"


@pytest.mark.parametrize("wrap", ["brelu", "relu_gradient", "feature_squeezing", "feature_squeezing_masked"])
def test_torch_func_per_sample_gradients_equal_autograds(wrap):
    """Per-sample input gradients by torch.func (vmap over grad, and grad over vmap) through a BReLU model, its
    BPDA copy and feature squeezing: these raised torch's "setup_context" or "does not have vmap support" errors;
    grad over vmap through BPDA squeezing gave zeros."""
    from nemesis_fast.defenses import FeatureSqueezing

    torch.manual_seed(0)
    model = replace_relu(small_cnn(), 0.5).eval()
    model = {
        "brelu": model,
        "relu_gradient": with_relu_gradient(model),
        "feature_squeezing": FeatureSqueezing(model, 3),
        "feature_squeezing_masked": FeatureSqueezing(model, 3, bpda=False),
    }[wrap]
    x, probe = 3 * torch.rand(4, 1, 8, 8), torch.randn(4, 10)

    def loss(image: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return (model(image[None])[0] * weights).sum()

    tracked = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad((model(tracked) * probe).sum(), tracked)
    assert (expected.abs().sum() > 0) == (wrap != "feature_squeezing_masked")  # rounding's own gradient: 0
    torch.testing.assert_close(torch.func.vmap(torch.func.grad(loss))(x, probe), expected)
    over_batch = torch.func.grad(lambda images: torch.func.vmap(loss)(images, probe).sum())(x)
    torch.testing.assert_close(over_batch, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_hardtanh_copy_is_plain_torch_with_the_same_outputs_and_gradients(dtype):
    torch.manual_seed(0)
    model = replace_relu(small_cnn(), 0.5).to(dtype)
    plain = to_hardtanh(model)
    assert sum(isinstance(m, BoundedReLU) for m in model.modules()) == 2  # the model itself is unchanged
    assert not any(isinstance(m, BoundedReLU) for m in plain.modules())
    assert plain.state_dict().keys() == model.state_dict().keys()
    x = (3 * torch.randn(4, 1, 8, 8, dtype=dtype)).requires_grad_(True)  # many units saturate
    probe = torch.randn(4, 10, dtype=dtype)
    assert torch.equal(plain(x), model(x))
    (got,) = torch.autograd.grad((plain(x) * probe).sum(), x)
    (expected,) = torch.autograd.grad((model(x) * probe).sum(), x)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert torch.equal(torch.jit.script(plain)(x), model(x))
    exported = torch.export.export(plain, (x.detach(),))
    assert not any("nemesis_fast" in str(node.target) for node in exported.graph.nodes)
    assert isinstance(to_hardtanh(BoundedReLU(2.0)), nn.Hardtanh)
    with pytest.raises(ValueError, match="BPDA"):
        to_hardtanh(with_relu_gradient(model))
    with pytest.raises(TypeError, match="model must be an nn.Module, got str"):
        to_hardtanh("model")


def test_backward_saves_nothing_beyond_what_relu_saves():
    activation_cases = {
        "relu": nn.ReLU(),
        "bounded": BoundedReLU(1.0),
        "bounded mask": BoundedReLU(1.0, save="mask"),
        "hardtanh": nn.Hardtanh(0.0, 1.0),
    }
    x = torch.randn(2, 4, 16, 16, requires_grad=True)
    saved = {}
    for name, activation in activation_cases.items():
        model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), activation, nn.Conv2d(8, 8, 3, padding=1))
        saved[name] = saved_tensor_bytes(lambda model=model: model(x))
    assert saved["bounded"] == saved["relu"]
    assert saved["bounded mask"] == saved["relu"] + 2 * 8 * 16 * 16 // 8  # the next conv keeps the output anyway
    assert saved["hardtanh"] == saved["relu"] + 2 * 8 * 16 * 16 * 4  # hardtanh also keeps its whole input


def test_bounded_relu_module():
    module = BoundedReLU(2.0)
    assert "t=2.0" in repr(module) and "save" not in repr(module)
    torch.testing.assert_close(module(torch.tensor([-1.0, 1.0, 3.0])), torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="t must be > 0"):
        BoundedReLU(-1.0)
    masked = BoundedReLU(2.0, save="mask")
    assert "save='mask'" in repr(masked)
    x = torch.tensor([-1.0, 1.0, 3.0], requires_grad=True)
    masked(x).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="save must be one of"):
        BoundedReLU(1.0, save="bits")
    model = replace_relu(small_cnn(), 0.5, save="mask")
    assert all(m.save == "mask" for m in model.modules() if isinstance(m, BoundedReLU))
    with pytest.raises(ValueError, match="save must be one of"):
        replace_relu(small_cnn(), 0.5, save="outputs")


@pytest.mark.parametrize("save", ["output", "mask"])
def test_jit_trace_of_a_brelu_model_checks_and_equals_eager(save):
    """torch.jit.trace's check (a second trace without grad) failed on save="mask" ("Graphs differed across
    invocations"): the masked op was picked by x.requires_grad and grad mode, which that second trace lacks."""
    torch.manual_seed(0)
    model = replace_relu(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)), save=save)
    x = torch.rand(4, 1, 4, 4, requires_grad=True)
    traced = torch.jit.trace(model, x)
    assert torch.equal(traced(x), model(x))
    (grad,) = torch.autograd.grad(traced(x).sum(), x)
    (expected,) = torch.autograd.grad(model(x).sum(), x)
    assert torch.equal(grad, expected)


def test_torch_export_of_a_relu_gradient_model_says_it_keeps_the_values_only():
    """The exported program kept BReLU's values and dropped the ReLU gradient of with_relu_gradient, silently: an
    attack through it was back to BReLU's masked gradient."""
    torch.manual_seed(0)
    model = with_relu_gradient(replace_relu(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))))
    x = torch.rand(4, 1, 4, 4)
    with pytest.warns(UserWarning, match="torch.export keeps BoundedReLU's values but not its gradient='relu'"):
        exported = torch.export.export(model, (x,))
    assert torch.equal(exported.module()(x), model(x))


def test_torch_jit_script_of_a_brelu_model_says_what_to_script():
    """torch.jit.script's own error named BoundedReLU's internals, not to_hardtanh."""
    torch.manual_seed(0)
    model = replace_relu(nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3)), t=0.5)
    with pytest.raises(TypeError, match=r"script nemesis_fast.nn.to_hardtanh\(model\)"):
        torch.jit.script(model)
    assert isinstance(model[2], BoundedReLU)
    x = torch.randn(4, 1, 4, 4)
    assert torch.equal(torch.jit.script(to_hardtanh(model))(x), model(x))
