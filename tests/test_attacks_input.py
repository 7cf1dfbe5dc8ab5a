"""Attacks reject bad settings, images, labels and models with an error that names the argument."""

from __future__ import annotations

import math

import pytest
import torch
from _attack_cases import CLASSES, NAMES, attacks, data, small_model
from torch import nn

from nemesis_fast.attacks import FGSM, JSMA, PGD, Attack, CarliniWagnerL2, DeepFool, RandFGSM, perturbation_norms


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda m: FGSM(m, -0.1), ValueError, "eps must be >= 0"),
        (lambda m: FGSM(m, math.nan), ValueError, "eps must be finite"),
        (lambda m: FGSM(m, math.inf), ValueError, "eps must be finite"),
        (lambda m: FGSM(m, -math.inf), ValueError, "eps must be finite"),
        (lambda m: FGSM(m, "0.1"), TypeError, "eps must be a real number"),
        (lambda m: FGSM(m, 0.1, norm="1"), ValueError, "norm must be one of"),
        (lambda m: FGSM(m, 0.1, clip=(1.0, 0.0)), ValueError, "clip must have low <= high"),
        (lambda m: FGSM(m, 0.1, clip=(0.5, 0.5)), ValueError, "clip must have low < high"),
        (lambda m: FGSM(m, 0.1, clip=(0.0, math.nan)), ValueError, r"clip\[1\] must be finite"),
        (lambda m: FGSM(m, 0.1, targeted=1), TypeError, "targeted must be a bool"),
        (lambda m: FGSM("model", 0.1), TypeError, "model must be a callable"),
        (lambda m: RandFGSM(m, 0.1, 0.2), ValueError, "alpha must be <= 0.1"),
        (lambda m: RandFGSM(m, 0.1, -0.01), ValueError, "alpha must be >= 0"),
        (lambda m: RandFGSM(m, 0.1, 0.05, seed=-1), ValueError, "seed must be >= 0"),
        (lambda m: RandFGSM(m, 0.1, 0.05, seed=1.5), TypeError, "seed must be an int"),
        (lambda m: PGD(m, 0.1, math.nan, 3), ValueError, "alpha must be finite"),
        (lambda m: PGD(m, 0.1, 0.01, -1), ValueError, "steps must be >= 0"),
        (lambda m: PGD(m, 0.1, 0.01, 2.5), TypeError, "steps must be an int"),
        (lambda m: PGD(m, 0.1, 0.01, 3, random_start=None), TypeError, "random_start must be a bool"),
        (lambda m: DeepFool(m, max_iter=-1), ValueError, "max_iter must be >= 0"),
        (lambda m: DeepFool(m, overshoot=-0.1), ValueError, "overshoot must be >= 0"),
        (lambda m: DeepFool(m, candidates=1), ValueError, "candidates must be >= 2"),
        (lambda m: DeepFool(m, norm="1"), ValueError, "norm must be one of"),
        (lambda m: CarliniWagnerL2(m, confidence=-1.0), ValueError, "confidence must be >= 0"),
        (lambda m: CarliniWagnerL2(m, initial_const=0.0), ValueError, "initial_const must be > 0"),
        (lambda m: CarliniWagnerL2(m, initial_const=1e308), ValueError, "initial_const must be < 1e"),
        (lambda m: CarliniWagnerL2(m, binary_search_steps=0), ValueError, "binary_search_steps must be >= 1"),
        (lambda m: CarliniWagnerL2(m, learning_rate=math.inf), ValueError, "learning_rate must be finite"),
        (lambda m: CarliniWagnerL2(m, abort_early="yes"), TypeError, "abort_early must be a bool"),
    ],
)
def test_bad_arguments(make, error, match):
    with pytest.raises(error, match=match):
        make(small_model())


def test_deepfool_has_no_targeted_mode():
    class Untargeted(Attack):
        supports_targeted = False

    model = small_model()
    x, y = data()
    with pytest.raises(ValueError, match="targeted=True: Untargeted has no targeted mode"):
        Untargeted(model, targeted=True)
    with pytest.raises(ValueError, match="target: DeepFool has no targeted mode"):
        DeepFool(model)(x, y, target=(y + 1) % CLASSES)


@pytest.mark.parametrize("name", NAMES)
def test_bad_images_and_labels(name):
    model = small_model()
    attack = attacks(model)[name]
    x, y = data()
    nan = x.clone()
    nan[3, 0, 1, 1] = math.nan
    inf = x.clone()
    inf[0, 1, 0, 0] = math.inf
    cases = [
        ((nan, y), ValueError, "x must be finite"),
        ((inf, y), ValueError, "x must be finite"),
        ((x + 0.5, y), ValueError, "x must lie inside clip"),
        ((x - 0.5, y), ValueError, "x must lie inside clip"),
        ((x.long(), y), TypeError, "x must have dtype"),
        ((x[0, 0, 0], y), ValueError, "x must have at least 2 dimensions"),
        ((x.numpy(), y), TypeError, "x must be a torch.Tensor"),
        ((x, y[:-1]), ValueError, "y must hold one label per image"),
        ((x, y[:, None]), ValueError, "y must have 1 dimensions"),
        ((x, y.float()), TypeError, "y must have dtype"),
        ((x, y + CLASSES), ValueError, r"y must hold labels in \[0, 5\)"),
        ((x, y - CLASSES), ValueError, r"y must hold labels in \[0, 5\)"),
    ]
    if attack.supports_targeted:
        cases += [
            ((x, y, y), ValueError, "target must differ from y"),
            ((x, y, (y + 1) % CLASSES + CLASSES), ValueError, r"target must hold classes in \[0, 5\)"),
            ((x, y, y[:-1]), ValueError, "target must hold one label per image"),
        ]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            attack.run(*args)
    assert model.training is False and all(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize(
    "output,match",
    [
        (lambda out: out[:, 0], r"model must map \(B, \.\.\.\) images to \(B, classes\) logits"),
        (lambda out: out[:, :, None], "model must map"),
        (lambda out: out[:1], "model must map"),
        (lambda out: (out,), "model must map"),
        (lambda out: out[:, :1], "at least 2 classes"),
    ],
)
def test_model_with_a_wrong_output_shape(output, match):
    model = small_model()
    x, y = data()
    with pytest.raises(ValueError, match=match):
        PGD(lambda images: output(model(images)), 0.1, 0.01, 2)(x, y.clamp(max=0))


def test_model_with_non_finite_logits_is_refused():
    model = small_model()
    x, y = data()
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="model must give finite logits"):
            DeepFool(lambda images, bad=bad: model(images) * bad, 5)(x, y)
    x[0, 0, 0, 0] = float("nan")  # NaN in the first image, on a first call: x is to blame, not the model
    with pytest.raises(ValueError, match="x must be finite"):
        DeepFool(model, 5)(x, y)


def test_a_nan_prediction_on_an_adversarial_image_is_refused_not_counted_as_a_success():
    model = small_model()
    x, y = data()

    def nan_for_image_3(images):
        logits = model(images)
        return torch.where(images.flatten(1)[:, :1] == x[3].flatten()[0], math.nan, logits)

    x_adv = FGSM(nan_for_image_3, 0.0)(x, y)  # calling returns the images
    assert torch.equal(x_adv, x)
    with pytest.raises(ValueError, match=r"NaN logits for 1 of the 12 adversarial images \(indices \[3\]\)"):
        FGSM(nan_for_image_3, 0.0).run(x, y)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_clip_beyond_the_range_of_the_images_dtype_is_named(dtype):
    model = small_model(dtype)
    x, y = data(dtype=dtype)
    with pytest.raises(ValueError, match=r"clip=\(0.0, 1e\+300\) holds a bound beyond the range"):
        PGD(model, 0.1, 0.01, 2, clip=(0.0, 1e300))(x, y)


def test_model_on_another_device_is_named():
    model = small_model().to("meta")
    x, y = data()
    with pytest.raises(ValueError, match="x is on cpu but the model's parameters are on meta"):
        FGSM(model, 0.1)(x, y)


def test_model_of_another_dtype_than_x_is_named():
    """torch's error named a layer's input and bias; the attacks name x and both dtypes."""
    x, y = data()
    for name in NAMES:
        with pytest.raises(ValueError, match="x is float32 and the model's parameters are float64.*pass x in float64"):
            attacks(small_model(torch.float64))[name](x, y)


@pytest.mark.parametrize(
    "make", [lambda m: FGSM(m, 1.0, norm="2"), lambda m: PGD(m, 1.0, 0.2, 3, norm="2", random_start=False)]
)
def test_an_l2_step_on_a_non_finite_gradient_is_no_step(make):
    """A model NaN on one image (not the first) gave that image as NaN pixels under norm "2"; under "inf" sign(NaN)
    is 0. Both now leave it where it was, inside clip; the others are attacked as before."""
    model = small_model()
    x, y = data()
    x[3] = 0  # a black image, where the model below divides 0 by 0

    def nan_on_black_images(images):
        scale = images.flatten(1).amax(1, keepdim=True)
        return model(images) * scale / scale

    out = make(nan_on_black_images)(x, y)
    assert torch.equal(out[3], x[3]) and not torch.isnan(out).any()
    alone = make(model)(x, y)
    torch.testing.assert_close(out[[0, 1, 2, 4]], alone[[0, 1, 2, 4]])  # x * s / s: a rounding off


@pytest.mark.parametrize("name", NAMES)
def test_a_model_that_changes_its_input_in_place_is_refused_and_x_left_alone(name):
    """A model normalising in place (images.sub_(0.5)) rewrote the caller's x, which the attack then blamed."""
    model = small_model()
    x, y = data()
    given = x.clone()

    def normalises_in_place(images):
        return model(images.sub_(0.5).div_(0.5))

    with pytest.raises(ValueError, match="model changed its input in place"):
        attacks(normalises_in_place)[name](x, y)
    assert torch.equal(x, given)


@pytest.mark.parametrize("name", NAMES)
def test_a_model_with_integer_logits_is_named(name):
    """torch's errors from inside the attacks ("log_softmax_lastdim_kernel_impl" not implemented for 'Long')."""
    model = small_model()
    x, y = data()
    with pytest.raises(ValueError, match="model must give floating-point logits, got int64 ones"):
        attacks(lambda images: (model(images) * 100).long())[name](x, y)


@pytest.mark.parametrize("scale", [1e-36, 1e24])
def test_l2_attacks_step_where_the_gradients_squares_under_or_overflow(scale):
    """A gradient of entries below about 1e-19 (a saturated softmax) has a float32 L2 norm of 0 (its squares
    underflow), one above 1e19 of inf: FGSM and PGD with norm "2" took no step and DeepFool with norm "2" none
    either, reporting such images robust."""
    from nemesis_fast.attacks.norms import flat_l2_norm, l2_norm

    model = small_model()
    x, _ = data()
    y = model(x).argmax(1)  # every image classified as its label: each one is attacked
    tiny = torch.full((2, 64), scale)
    assert torch.allclose(flat_l2_norm(tiny).flatten(), torch.full((2,), 8 * scale), rtol=1e-6)
    plain = torch.randn(3, 5, 7)
    assert torch.equal(l2_norm(plain, 1), plain.flatten(1).norm(dim=1)), "the plain norm, bit for bit, elsewhere"

    def scaled(images: torch.Tensor) -> torch.Tensor:  # the same decision boundaries
        return model(images) * scale

    makes = [lambda m: DeepFool(m, max_iter=20)]
    if scale < 1:  # at 1e24 the softmax saturates: the cross-entropy's gradient is exactly 0
        makes += [lambda m: FGSM(m, 1.0, norm="2"), lambda m: PGD(m, 1.0, 0.25, 8, norm="2", random_start=False)]
    for make in makes:
        ours, reference = make(scaled).run(x, y), make(model).run(x, y)
        assert ours.success.sum() >= reference.success.sum() > 0
        assert (ours.l2 > 0).all()


def test_the_norms_of_perturbations_and_gradients():
    """The L2 norm is inf where an entry is (not the NaN of inf / inf that a rescaling by it gives), exact where
    the squares over- or underflow (powers of 2: every value is exact), per sample over all its dimensions; the
    numbers 2 and math.inf name the norms "2" and "inf"."""
    from nemesis_fast.attacks.norms import check_norm, flat_l2_norm, l2_norm

    big, small = 2.0**100, 2.0**-100
    v = torch.tensor([[math.inf, 1.0], [-math.inf, 0.0], [0.0, 0.0], [3 * big, 4 * big], [3 * small, 4 * small]])
    assert l2_norm(v, 1).tolist() == [math.inf, math.inf, 0.0, 5 * big, 5 * small]
    signed = torch.tensor([[-3.0, 4.0], [0.0, -5.0]]).view(2, 1, 2)
    assert flat_l2_norm(signed).flatten().tolist() == [5.0, 5.0] and flat_l2_norm(signed).shape == (2, 1, 1)
    assert check_norm(2) == "2" and check_norm(math.inf) == "inf" and check_norm(2.0) == "2"
    assert PGD(small_model(), 0.1, 0.01, 1, norm=math.inf).norm == "inf"


def test_perturbation_norms_refuse_pixels_against_images_and_other_shapes():
    """uint8 pixels (as load_mnist gives them) against [0, 1] adversarial images measured 253 for a 0.1 change;
    refused, naming the argument, as are two shapes; one value per sample (B,) and an empty batch are measured."""
    x = torch.rand(4, 1, 3, 3)
    with pytest.raises(TypeError, match="x must have dtype float16, bfloat16, float32, float64; got uint8"):
        perturbation_norms(x + 0.1, (x * 255).byte())
    with pytest.raises(TypeError, match="x_adv must be a torch.Tensor, got list"):
        perturbation_norms(x.tolist(), x)
    with pytest.raises(ValueError, match=r"x_adv and x must have one shape, got \(4, 1, 3, 3\) and \(3, 1, 3, 3\)"):
        perturbation_norms(x, x[:3])
    l0, l2, linf = perturbation_norms(x[:, 0, 0, 0] + 0.5, x[:, 0, 0, 0])
    assert l0.tolist() == [1] * 4 and torch.allclose(l2, torch.full((4,), 0.5)) and torch.allclose(linf, l2)
    assert [t.shape for t in perturbation_norms(x[:0], x[:0])] == [(0,)] * 3


def test_perturbation_norms_name_x_adv_without_a_batch_dimension():
    with pytest.raises(ValueError, match=r"^x_adv must have at least 1 dimensions, got shape \(\)$"):
        perturbation_norms(torch.tensor(0.5), torch.tensor(0.0))


def test_labels_of_every_integer_dtype_are_read_as_int64_and_others_refused_naming_y():
    model = small_model()
    x, y = data()
    expected = FGSM(model, 0.1)(x, y)
    for dtype in (torch.int8, torch.int16, torch.int32, torch.uint8):
        torch.testing.assert_close(FGSM(model, 0.1)(x, y.to(dtype)), expected, rtol=0, atol=0)
    for labels, got in ((y.bool(), "bool"), (y.float(), "float32")):
        with pytest.raises(TypeError, match=f"^y must have dtype int8, int16, int32, int64, uint8; got {got}$"):
            FGSM(model, 0.1)(x, labels)


def test_model_whose_class_count_changes():
    model = small_model()
    x, y = data()
    attack = FGSM(model, 0.1)
    attack(x, y)
    attack.model = nn.Sequential(model, nn.Linear(CLASSES, CLASSES + 1))
    with pytest.raises(ValueError, match="model gave 6 logits per image, earlier 5"):
        attack(x, y)


# ------------------------------------------------------------------------------ numerics of the inputs and settings

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_images_a_rounding_outside_clip_are_accepted_and_run_clamped(dtype):
    """Normalised images (x - mean) / std in their dtype, against bounds computed the same way in Python floats, and
    x.clamp(*clip), whose bounds are rounded to x's dtype, lie a rounding outside clip: they are accepted, and the
    attack runs on them clamped into clip."""
    model = small_model(dtype)
    x, y = data(dtype=dtype)
    x[:, 0, 0, 0], x[:, 0, 0, 1] = 0.0, 1.0
    normalised = (x - MNIST_MEAN) / MNIST_STD
    clip = ((0 - MNIST_MEAN) / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD)
    if dtype == torch.float32:  # the case the tolerance is for: both bounds exceeded by a rounding
        assert normalised.min().item() < clip[0] and normalised.max().item() > clip[1]
    for name, attack in attacks(model, clip=clip, eps=0.1 / MNIST_STD).items():
        result = attack.run(normalised, y)
        assert result.x_adv.min() >= clip[0] - 1e-2 and result.x_adv.max() <= clip[1] + 1e-2, name
        assert torch.equal(result.x_adv, attack(normalised.clamp(*clip), y)), name  # run on x clamped into clip
        attack.run(result.x_adv, y)  # the attack's own output is accepted
    untouched = FGSM(model, 0.0, clip=clip).run(normalised, y)  # measured from the clamped images: no change
    assert (untouched.l0 == 0).all() and (untouched.linf == 0).all()
    assert torch.equal(untouched.x_adv, normalised.clamp(*clip))


@pytest.mark.parametrize("clip", [(-1.0, 1.1), (0.0, 0.7), (0.1, 0.9), (-0.3, 255.0)])
def test_an_attacks_own_output_is_accepted_back(clip):
    """The output is clamped into clip in x's dtype, which rounds the bounds (1.1 up to 1.10000002 in float32)."""
    model = small_model()
    x, y = data(low=clip[0], high=clip[1])
    for attack in (FGSM(model, 0.2 * (clip[1] - clip[0]), clip=clip), DeepFool(model, 5, clip=clip)):
        x_adv = attack(x, y)
        assert torch.equal(x_adv, x_adv.clamp(*clip))
        attack(x_adv, y)
        attack(x.clamp(*clip), y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_images_beyond_a_few_roundings_of_clip_are_refused(dtype):
    model = small_model(dtype)
    x, y = data(dtype=dtype)
    above, below = x.clone(), x.clone()
    ulp = torch.finfo(dtype).eps  # the spacing of the dtype at the bound 1
    above[2, 0, 0, 0] = 1 + 8 * ulp
    below[2, 0, 0, 0] = -8 * ulp
    for bad in (above, below):
        with pytest.raises(ValueError, match=r"x must lie inside clip=\(0.0, 1.0\) \(up to"):
            FGSM(model, 0.1)(bad, y)


@pytest.mark.parametrize(
    "make,dtype,match",
    [
        (lambda m: FGSM(m, 1e39), torch.float32, r"eps=1e\+39 is beyond the range of float32"),
        (lambda m: FGSM(m, 1e39, norm="2"), torch.float32, r"eps=1e\+39 is beyond the range of float32"),
        (lambda m: FGSM(m, 1e5, clip=(0.0, 255.0)), torch.float16, r"eps=100000 is beyond the range of float16"),
        (lambda m: RandFGSM(m, 1e39, 0.05, seed=0), torch.float32, r"eps=1e\+39 is beyond the range of float32"),
        (lambda m: RandFGSM(m, 1e39, 1e39, seed=0), torch.bfloat16, r"eps=1e\+39 is beyond the range of bfloat16"),
        (lambda m: PGD(m, 0.3, 1e39, 2, seed=0), torch.float32, r"alpha=1e\+39 is beyond the range of float32"),
        (lambda m: PGD(m, 1.0, 1e39, 2, norm="2"), torch.float32, r"alpha=1e\+39 is beyond the range of float32"),
        (lambda m: PGD(m, 1e39, 0.1, 2, seed=0), torch.float32, r"eps=1e\+39 is beyond the range of float32"),
        (lambda m: PGD(m, 0.3, 7e4, 2, seed=0), torch.float16, r"alpha=70000 is beyond the range of float16"),
        (lambda m: DeepFool(m, 3, overshoot=1e39), torch.float32, r"overshoot=1e\+39 is beyond the range of float32"),
        (
            lambda m: CarliniWagnerL2(m, max_iter=2, learning_rate=1e38),
            torch.float16,
            r"learning_rate=1e\+38 is beyond the range of float32 .* \(10 times it\)",
        ),
    ],
)
def test_step_sizes_beyond_the_range_of_the_images_dtype_are_named(make, dtype, match):
    """A step size that overflows x's dtype (the dtype of the steps) would make the steps inf, and inf * 0 (a zero
    gradient) NaN pixels, or an error from torch that names no argument: each is refused with the argument's name."""
    torch.manual_seed(0)
    # stride 3 > kernel 2: the model ignores some pixels, whose gradient is exactly 0
    model = nn.Sequential(nn.Conv2d(2, 3, 2, stride=3), nn.ReLU(), nn.Flatten(), nn.Linear(3, CLASSES)).to(dtype)
    x, _ = data(dtype=dtype)
    with torch.no_grad():
        y = model(x).argmax(1)  # every image on its label: DeepFool steps
    with pytest.raises(ValueError, match=match):
        make(model)(x, y)


def test_the_largest_step_sizes_of_the_images_dtype_give_finite_images():
    model = small_model()
    x, y = data()
    largest = torch.finfo(torch.float32).max
    for attack in (FGSM(model, largest), FGSM(model, largest, norm="2"), PGD(model, largest, largest, 2, seed=0)):
        assert torch.isfinite(attack(x, y)).all()
    x16, y16 = data(dtype=torch.float16)
    assert torch.isfinite(FGSM(small_model(torch.float16), 65504.0)(x16, y16)).all()
    assert torch.isfinite(DeepFool(small_model(torch.float16), 3, overshoot=1e5)(x16, y16)).all()  # float32 steps


class _Detaching(nn.Module):
    """A model whose output has no autograd path to its input (a non-differentiable preprocessing step)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x.detach() * 255).round() / 255)


def _attack(name: str, model) -> Attack:
    return JSMA(model, gamma=0.2, seed=0) if name == "jsma" else attacks(model)[name]


@pytest.mark.parametrize("name", [*NAMES, "jsma"])
def test_a_model_without_a_gradient_path_to_x_is_named(name):
    """Where the attack takes its gradient with respect to x (torch's own error names no cause); C&W, whose loss
    has an L2 term of its own, refuses a model whose logits need no gradient at all."""
    model = small_model()
    detaching = _Detaching(model).eval()
    x, y = data()
    with pytest.raises(ValueError, match="model: its output does not depend on x through autograd"):
        _attack(name, detaching)(x, y)
    assert all(p.requires_grad for p in model.parameters())
    if name != "cw":
        # A plain function is run as it is: its logits need gradients (for the parameters), but none reaches x.
        with pytest.raises(ValueError, match="model: its output does not depend on x through autograd"):
            _attack(name, lambda images: detaching(images))(x, y)
