"""The attack API shared by every attack: construction, the model-state guard, the call (its checks in
:mod:`.inputs`) and results.

Using an attack::

    attack = PGD(model, eps=0.3, alpha=0.01, steps=40)  # model: (B, ...) images -> (B, classes) logits
    x_adv = attack(x, y)                                 # untargeted; x_adv stays inside `clip`
    x_adv = attack(x, y, target=t)                       # targeted: aims for class t[i] on image i
    result = attack.run(x, y)                            # AttackResult: images, success, norms, iterations

Writing an attack (this is all a subclass does; the base class does the rest)::

    class MyAttack(Attack):
        supports_targeted = True      # False: `target=` and `targeted=True` raise ValueError
        deterministic = True          # False when it draws random numbers (random starts, noise)
        step_sizes = {"eps": 1.0}     # checked at each call to be finite in x's dtype (no inf steps, no NaN)

        def __init__(self, model, eps, *, clip=(0.0, 1.0), targeted=False, seed=None):
            super().__init__(model, clip=clip, targeted=targeted, seed=seed)
            self.eps = check_nonnegative(eps, "eps")   # nemesis_fast._checks: ValueError naming the argument

        def _perturb(self, x, y, target):
            # x: (B, ...) detached, finite, inside self.clip, on the model's device; never modify it in place.
            # y: (B,) int64 true labels in [0, self.num_classes); target: (B,) int64 classes != y, or None for
            # an untargeted run. Runs with the model in eval mode, its parameters' requires_grad off, under
            # torch.no_grad(): the gradient helpers below turn gradients on for themselves.
            grad, logits = self.loss_gradient(x, y if target is None else target)
            step = self.eps * grad.sign()
            x_adv = x + step if target is None else x - step
            return x_adv, 1   # the images (the base class clips them), the iterations (an int or (B,) tensor)

The base class validates `x`, `y` and `target` (ValueError/TypeError naming the argument; x may lie outside
`clip` by a few roundings of its dtype, and `_perturb` then sees it clamped into `clip`) and the `step_sizes`
against x's dtype, draws targets among the wrong classes when `targeted=True` and none is given (with the attack's
seed or generator), runs `_perturb` inside :func:`model_guard`, clips the result into `clip`, and for
:meth:`Attack.run` computes the success mask and the per-sample L0, L2 and Linf norms of the perturbation.

Helpers for subclasses: :meth:`Attack.logits` (forward with the output shape checked),
:meth:`Attack.input_gradient` (gradient of any per-sample loss with respect to the input only),
:meth:`Attack.loss_gradient` (cross-entropy), :meth:`Attack.logit_gradients` (many vector-Jacobian products of
the logits from one forward pass, batched) and :meth:`Attack.logit_gradients_of_kept` (the same for the images an
iterative attack keeps running, decided on that forward pass), :meth:`Attack.project` (into `clip`),
:meth:`Attack.is_adversarial`, and the random draws :meth:`Attack.rand`, :meth:`Attack.randn` and
:meth:`Attack.randint` that honour `seed`.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import (
    check_bool,
    check_float_logits,
    check_no_inference_tensors,
    check_range,
    dtype_name,
    parameter_dtype,
)
from .._modes import eval_mode
from .inputs import check_call, check_seed, check_values
from .jacobian import LogitJacobian, Weights, input_grad
from .norms import perturbation_norms
from .result import AttackResult

Seed = int | torch.Generator | None


@contextlib.contextmanager
def model_guard(model: nn.Module) -> Iterator[nn.Module]:
    """Puts `model` in eval mode with every parameter's requires_grad off; restores both on exit.

    Each submodule's own training flag is restored (not just the root's), and so is every parameter's
    requires_grad flag; where guards overlap on one model (calls from several threads), when the last one ends
    (:func:`~nemesis_fast._modes.eval_mode`). With requires_grad off, gradients with respect to the input never
    reach the parameters' `.grad`. ValueError naming `model`, before anything is changed, where its parameters or
    buffers were made inside torch.inference_mode() (their requires_grad could not be set back).
    """
    check_no_inference_tensors(model, "model")
    with eval_mode(model, freeze=True):
        yield model


def select_rows(mask: torch.Tensor, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The rows of each of `tensors` where `mask` (N,) bool is True, in order, with one host synchronisation for
    all of them (indexing each one with the mask synchronises once per tensor on a GPU)."""
    rows = mask.nonzero().squeeze(1)
    return tuple(tensor[rows] for tensor in tensors)


class Attack:
    """Base class of every attack. Subclasses implement :meth:`_perturb`; see the module docstring.

    Args:
        model: an `nn.Module` (or callable) mapping (B, ...) images to (B, classes) logits. An `nn.Module` is
            attacked in eval mode, and its train/eval mode and its parameters' requires_grad flags are restored
            after each call; its parameters never receive gradients. A plain callable is run as it is: put the
            modules it calls in eval mode first (else dropout stays on and batch norm updates its statistics).
        clip: (low, high), low < high: the range of valid pixel values; outputs lie in it, and so must inputs, up
            to a few units in the last place of their dtype at the bounds' magnitude (:func:`clip_tolerance`:
            the rounding of bounds computed in another precision, or of x.clamp(*clip) in x's dtype); such an input
            is clamped into clip first, and the result's norms are measured from the clamped images. None: no bounds
            (tabular or standardised data): inputs are not checked against any, and outputs are not clipped.
        targeted: when True and no `target` is given to a call, targets are drawn uniformly among the wrong
            classes (with `seed`). Passing `target=` to a call makes that call targeted either way.
        seed: an int (every call starts from the same random state: reproducible), a torch.Generator (its
            state advances from call to call), or None (torch's global generator). The draws (random starts,
            noise, targets) are made for the call's batch as a whole: an image's draws depend on the batch it is
            in (its size and the image's place), so an attack that draws gives an image other (equally likely)
            results in another batch; one that draws nothing gives each image its own result in any batch.
    """

    supports_targeted: bool = True
    deterministic: bool = True
    # The attributes holding step sizes (or factors on steps) that scale tensors of the dtype of :meth:`step_dtype`,
    # each with the largest factor the attack puts on it: each such product must be a finite number of that dtype,
    # else a step overflows to inf, and inf * 0 (where the gradient is 0) to NaN. Checked at each call.
    step_sizes: ClassVar[dict[str, float]] = {}

    def __init__(
        self,
        model: Callable[[torch.Tensor], torch.Tensor],
        *,
        clip: tuple[float, float] | None = (0.0, 1.0),
        targeted: bool = False,
        seed: Seed = None,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be a callable mapping images to logits, got {type(model).__name__}")
        self.model = model
        self.clip: tuple[float, float] | None = None
        if clip is not None:
            low, high = check_range(clip, "clip")
            if not low < high:
                raise ValueError(f"clip must have low < high, got {clip!r}")
            self.clip = (low, high)
        check_bool(targeted, "targeted")
        if targeted and not self.supports_targeted:
            raise ValueError(f"targeted=True: {type(self).__name__} has no targeted mode")
        self.targeted = targeted
        self.seed = check_seed(seed)
        self.num_classes: int | None = None  # learnt from the model's output on the first call
        self._generators: dict[int, torch.Generator | None] = {}  # the running calls' own, by thread
        self._jacobian = LogitJacobian()  # given self.logits per call: no reference cycle through the attack

    # ----------------------------------------------------------------------------------------------------
    # The public calls.

    def __call__(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
        """The adversarial images for images `x` (B, ...) with true labels `y` (B,), inside `clip`.

        With `target` (B,) int classes (each != y), or with `targeted=True`, the attack is targeted.
        """
        return self._execute(x, y, target)[0]

    def run(self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None = None) -> AttackResult:
        """Like calling the attack, but returns an :class:`AttackResult`: the images, the per-sample success
        mask and predictions, the L0, L2 and Linf norms of the perturbation and the iterations used. Raises
        ValueError where the model's logits for an adversarial image hold a NaN (no prediction)."""
        x_adv, iterations, x, y, target = self._execute(x, y, target)
        if x.shape[0]:
            with self._guard(), torch.no_grad():
                logits = self.logits(x_adv)
            predictions = logits.argmax(1)
            undefined = logits.isnan().any(1).nonzero().squeeze(1).tolist()
            if undefined:
                raise ValueError(
                    f"model gave NaN logits for {len(undefined)} of the {x.shape[0]} adversarial images "
                    f"(indices {undefined[:10]}{', ...' if len(undefined) > 10 else ''}): their predictions, and so "
                    "the attack's success, are undefined"
                )
        else:
            predictions = y.clone()
        success = predictions != y if target is None else predictions == target
        l0, l2, linf = perturbation_norms(x_adv, x)
        target = None if target is None else target.clone()  # the caller's own tensor where it was int64 already
        return AttackResult(x_adv, success, predictions, l0, l2, linf, iterations, target)

    # ----------------------------------------------------------------------------------------------------
    # The hook.

    def _perturb(
        self, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | int]:
        """Returns (x_adv, iterations): the attack itself. See the module docstring for the contract."""
        raise NotImplementedError

    # ----------------------------------------------------------------------------------------------------
    # Helpers for subclasses (call them from _perturb).

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's logits for `x`, checked to be (B, num_classes). Where the model fails on x of another dtype
        than its parameters', ValueError naming x (torch's error names a layer's input and bias); ValueError where
        the model changes its input in place (the attack's images would no longer be those it attacks)."""
        version = None if x.is_inference() else x._version  # inference tensors keep no version
        try:
            out = self.model(x)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as error:
            model_dtype = parameter_dtype(self.model)
            if model_dtype is None or model_dtype == x.dtype:
                raise
            raise ValueError(
                f"x is {dtype_name(x.dtype)} and the model's parameters are {dtype_name(model_dtype)}, and the model "
                f"failed on it ({error}); pass x in {dtype_name(model_dtype)}"
            ) from error
        if version is not None and x._version != version:
            raise ValueError(
                "model changed its input in place (an in-place op such as x.sub_() or clamp_() on the images it is "
                "given); an attack needs a model that leaves its input as it is: use the out-of-place op (x = x - m)"
            )
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"model must map (B, ...) images to (B, classes) logits; for B={x.shape[0]} got {shape}")
        check_float_logits(out)
        if self.num_classes is not None and out.shape[1] != self.num_classes:
            raise ValueError(f"model gave {out.shape[1]} logits per image, earlier {self.num_classes}")
        return out

    def input_gradient(self, x: torch.Tensor, loss_fn: Callable[[torch.Tensor], Any]) -> tuple[torch.Tensor, Any]:
        """(d sum(loss) / dx, value): the gradient with respect to `x` only, and loss_fn's return detached.

        `loss_fn(x)` returns per-sample losses (B,) (summed, so each sample's gradient is its own), or a tuple
        whose first element they are; the rest of the tuple (e.g. logits) is handed back detached.
        """
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            value = loss_fn(leaf)
            loss = value[0] if isinstance(value, tuple) else value
            grad = input_grad(loss.sum(), leaf)  # ValueError naming the model where the loss has no path to x
        if isinstance(value, tuple):
            return grad, tuple(v.detach() if isinstance(v, torch.Tensor) else v for v in value)
        return grad, value.detach()

    def loss_gradient(self, x: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(gradient of the summed cross-entropy of (model(x), labels) with respect to x, logits).

        labels=None takes the model's own prediction at x (its argmax), from the same forward pass.
        """

        def loss(leaf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            logits = self.logits(leaf)
            wanted = logits.detach().argmax(1) if labels is None else labels
            return F.cross_entropy(logits, wanted, reduction="none"), logits

        grad, (_, logits) = self.input_gradient(x, loss)
        return grad, logits

    def logit_gradients(self, x: torch.Tensor, weights: Weights) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (B, C), grads (K, B, ...)): grads[k, b] = d(sum_c weights[k, b, c] * logits[b, c]) / dx[b].

        `weights` is a (K, B, C) tensor, or a function of the (detached) logits returning one. One forward
        pass and one batched backward pass (:class:`~nemesis_fast.attacks.jacobian.LogitJacobian`).
        """
        return self._jacobian.products(x, weights, self.logits)

    def logit_gradients_of_kept(
        self, x: torch.Tensor, weights: Weights, keep: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(logits (B, C), mask (B,), rows (kept,), grads (K, kept, ...)): as :meth:`logit_gradients`, for the images
        whose logits `keep` keeps (a function of the detached logits returning a (B,) bool mask) only, with their
        row indices (int64; index with them: a mask index synchronises with the host on a GPU): the forward pass
        that decides which images an iterative attack stops also serves the others' gradients."""
        return self._jacobian.products_of_kept(x, weights, keep, self.logits)

    def step_dtype(self, dtype: torch.dtype) -> torch.dtype:
        """The dtype in which the attack scales its steps (see `step_sizes`) for images of `dtype`: theirs."""
        return dtype

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """`x` clamped into `clip` (x itself without one)."""
        return x if self.clip is None else x.clamp(*self.clip)

    def is_adversarial(
        self, logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, confidence: float = 0.0
    ) -> torch.Tensor:
        """(B,) bool: the logits are misclassified (target None) or classified as target, by a margin of more
        than `confidence` > 0 over every other class (the true class for untargeted attacks); with confidence 0, by
        the argmax."""
        if target is None:
            true = logits.gather(1, y[:, None]).squeeze(1)
            others = logits.scatter(1, y[:, None], -math.inf).amax(1)
            return others - true > confidence if confidence > 0 else logits.argmax(1) != y
        wanted = logits.gather(1, target[:, None]).squeeze(1)
        others = logits.scatter(1, target[:, None], -math.inf).amax(1)
        return wanted - others > confidence if confidence > 0 else logits.argmax(1) == target

    def rand(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Uniform [0, 1) numbers of `shape`, with `like`'s dtype and device, from the attack's generator."""
        return self._draw(torch.rand, shape, like)

    def randn(self, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """Standard normal numbers of `shape`, with `like`'s dtype and device, from the attack's generator."""
        return self._draw(torch.randn, shape, like)

    def randint(self, high: int, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
        """int64 numbers in [0, high) of `shape` on `device`, from the attack's generator."""
        gen = self._generator
        out = torch.randint(high, shape, generator=gen, device=gen.device if gen is not None else device)
        return out.to(device)

    # ----------------------------------------------------------------------------------------------------
    # Internals.

    @property
    def _generator(self) -> torch.Generator | None:
        """The generator of this thread's running call (None: torch's global one): calls of one attack from
        several threads each draw from their own."""
        return self._generators.get(threading.get_ident())

    def _draw(self, fn: Callable[..., torch.Tensor], shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        gen = self._generator
        device = gen.device if gen is not None else like.device
        return fn(shape, generator=gen, device=device, dtype=like.dtype).to(like.device)

    def _guard(self) -> contextlib.AbstractContextManager:
        if isinstance(self.model, nn.Module):
            return model_guard(self.model)
        return contextlib.nullcontext()

    def _start_generator(self, device: torch.device) -> None:
        seeded = isinstance(self.seed, int)
        generator = torch.Generator(device=device).manual_seed(self.seed) if seeded else self.seed
        self._generators[threading.get_ident()] = generator

    def _execute(
        self, x: Any, y: Any, target: Any
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Validates, runs _perturb in the guard, clips: (x_adv, iterations, x, y, target)."""
        with torch.inference_mode(False):
            x, y, target = check_call(self, x, y, target)
            self._start_generator(x.device)
            try:
                with self._guard(), torch.no_grad():
                    if x.shape[0]:
                        # x within clip's tolerance but outside clip is clamped into it first: the _perturb
                        # contract, and the original the norms and an untouched image are measured against
                        if check_values(self, x, y, target):
                            x = self.project(x)
                        if target is None and self.targeted:
                            target = (y + 1 + self.randint(self.num_classes - 1, y.shape, y.device)) % self.num_classes
                        x_adv, iterations = self._perturb(x, y, target)
                    else:
                        x_adv, iterations = x.clone(), 0
                        if target is None and self.targeted:
                            target = y.new_empty(0)  # a targeted run's targets: none for no images
            finally:
                self._generators.pop(threading.get_ident(), None)
            if not isinstance(x_adv, torch.Tensor) or x_adv.shape != x.shape:
                raise RuntimeError(f"{type(self).__name__}._perturb returned images of the wrong shape")
            x_adv = self.project(x_adv.detach().to(x.dtype))
            if isinstance(iterations, int):
                iterations = torch.full((x.shape[0],), iterations, dtype=torch.int64, device=x.device)
            return x_adv, iterations.to(torch.int64), x, y, target
