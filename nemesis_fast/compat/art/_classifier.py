"""The bridge from an ART ``PyTorchClassifier`` to torch: which calls the adapters can serve (and, for the others,
why not), the classifier as a logits function on its device, labels read as ART reads them, and the fallback to
ART's own implementation."""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from art.config import ART_NUMPY_DTYPE
from art.defences.preprocessor.preprocessor import PreprocessorPyTorch
from art.estimators.classification import PyTorchClassifier
from art.utils import check_and_transform_label_format

from ..._checks import check_bool, check_choice, check_finite_values
from ...attacks.base import model_guard
from .._peer import PeerFallbackWarning

ALGORITHMS = ("art", "paper")


def check_algorithm(algorithm: Any) -> str:
    """ "art" (ART's own algorithm, the default) or "paper" (the paper's, as nemesis_fast computes it)."""
    return check_choice(algorithm, "algorithm", ALGORITHMS)


# The real-valued parameters of the adapted attacks, which ART's checks let through as NaN or infinite.
_REAL_PARAMETERS = ("eps", "eps_step", "theta", "gamma", "epsilon", "learning_rate", "initial_const", "confidence")
# Those of them that ART runs with when infinite (FGM and PGD: no projection, or a step to the clip values).
_MAY_BE_INFINITE = ("eps", "eps_step")


class CheckedParameters:
    """Mixin for the adapted ART attacks: ART's own checks (at construction and in ``set_params``), then every
    real-valued parameter not NaN, finite but for eps and eps_step (which ART runs with when infinite), and theta
    non-zero, where ART lets NaN run into NaN images and theta = 0 (its JSMA) into a loop that never ends."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._check_real_parameters()  # (some of ART's constructors call their own class's check, not this one)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A subclass keeping ART's constructor shows ART's signature (inspect.signature, IDEs), not (*args,
        **kwargs)."""
        super().__init_subclass__(**kwargs)
        peer = next((base for base in cls.__mro__ if base.__module__.startswith("art.")), None)
        ours = cls.__mro__[: cls.__mro__.index(peer)] if peer is not None else ()
        keeps = peer is not None and not any("__init__" in k.__dict__ for k in ours if k is not CheckedParameters)
        cls.__signature__ = inspect.signature(peer) if keeps else None  # (None: a subclass's own __init__ shows)

    def _check_params(self) -> None:
        super()._check_params()
        self._check_real_parameters()

    def _check_real_parameters(self) -> None:
        for name in _REAL_PARAMETERS:
            value = getattr(self, name, None)
            if value is None or isinstance(value, (bool, str)):
                continue
            values = np.asarray(value, dtype=np.float64)
            if name in _MAY_BE_INFINITE and np.isnan(values).any():
                raise ValueError(f"{name} must not be NaN, got {value!r}")
            if name not in _MAY_BE_INFINITE and not np.isfinite(values).all():
                raise ValueError(f"{name} must be finite, got {value!r}")
        if getattr(self, "theta", None) == 0:
            raise ValueError("theta must be non-zero (the change of each chosen feature), got 0")


class AlgorithmParameter(CheckedParameters):
    """Mixin for the ART classes that add ``algorithm=`` (and more keywords): ``set_params`` accepts them (the
    class lists them in ``attack_params``) and checks them, with ART's own checks."""

    def _check_params(self) -> None:
        super()._check_params()
        if hasattr(self, "algorithm"):  # ART checks once before the subclass has set it
            self.algorithm = check_algorithm(self.algorithm)
        if hasattr(self, "abort_early"):
            check_bool(self.abort_early, "abort_early")


# The classifier methods ART's attacks call: a subclass of PyTorchClassifier that defines its own (ART's randomized
# smoothing estimators: smoothed predictions, sampled gradients) is another classifier than its model's logits.
_ATTACKED_METHODS = ("predict", "loss_gradient", "class_gradient", "compute_loss")


def unserved(
    estimator: Any, *, cross_entropy: bool = False, postprocessing: bool = False, own_methods: bool = False
) -> str | None:
    """Why the adapters cannot run `estimator` in torch, or None when they can.

    Args:
        cross_entropy: the attack takes the gradient of the classifier's loss, which must then be cross-entropy.
        postprocessing: the attack reads the classifier's predictions, which postprocessing defences would change.
        own_methods: the caller is the estimator itself (a drop-in estimator, whose own methods are known); else a
            subclass with its own predict or gradients (_ATTACKED_METHODS) is not served.
    """
    if not isinstance(estimator, PyTorchClassifier):
        return f"the estimator is a {type(estimator).__name__}, not a PyTorchClassifier"
    overridden = [m for m in _ATTACKED_METHODS if getattr(type(estimator), m) is not getattr(PyTorchClassifier, m)]
    if overridden and not own_methods:
        return f"the estimator is a {type(estimator).__name__}, with its own {', '.join(overridden)}"
    if not estimator.all_framework_preprocessing:
        names = [type(p).__name__ for p in estimator.preprocessing_operations if not isinstance(p, PreprocessorPyTorch)]
        return f"the classifier's preprocessing {', '.join(names)} is not a PyTorch preprocessor"
    if estimator.clip_values is not None and np.asarray(estimator.clip_values).ndim > 1:
        return "the classifier has per-feature clip_values"
    if estimator.is_rnn:
        return "the model is recurrent"
    if estimator.use_amp:
        return "the classifier uses apex AMP"
    if cross_entropy and not isinstance(estimator.loss, torch.nn.CrossEntropyLoss):
        return f"the classifier's loss is {type(estimator.loss).__name__}, not CrossEntropyLoss"
    if postprocessing and estimator.postprocessing_defences:
        return "the classifier has postprocessing defences"
    return None


def option_unserved(x: np.ndarray, kwargs: dict[str, Any], **options: bool) -> str | None:
    """Why a call with input `x`, generate() keywords `kwargs` and the named attack `options` (True where the
    adapter lacks that option) cannot be served, or None."""
    if not isinstance(x, np.ndarray) or x.dtype == object:
        return "x is not a numeric numpy array"
    if kwargs.get("mask") is not None:
        return "a mask was given"
    for name, present in options.items():
        if present:
            return f"{name} is not supported by the adapter"
    return None


def fall_back(attack: Any, reason: str, run: Callable[[], np.ndarray]) -> np.ndarray:
    """Warns with `reason`, then returns ART's own result, `run()`."""
    warnings.warn(
        f"{type(attack).__name__}: {reason}; running ART's own implementation instead (ART's result, at ART's speed)",
        PeerFallbackWarning,
        stacklevel=3,
    )
    return run()


def batches(count: int, batch_size: int) -> Iterator[slice]:
    """The chunks of `batch_size` images that ART's attacks work on, in order; one empty chunk for no images (an
    empty batch gives an empty batch, where ART's attacks fail to concatenate no chunks)."""
    if count == 0:
        yield slice(0, 0)
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def writable(array: Any) -> Any:
    """`array`, copied where it is a read-only numpy array (a memmap opened for reading, a frozen array): torch
    warns on tensors over read-only memory (ART copies the images, and warns about nothing)."""
    if isinstance(array, np.ndarray) and not array.flags.writeable:
        return array.copy()
    return array


def with_identity_gradient(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`out` whose first len(x) rows get the gradient of the identity with respect to `x` when x requires one
    (adding x - x.detach(), which is 0, leaves the values as they are)."""
    if not (x.requires_grad and torch.is_grad_enabled()):
        return out
    zero = (x - x.detach()).to(out.dtype)
    return torch.cat([out[: len(x)] + zero, out[len(x) :]])


class TorchClassifier:
    """An ART PyTorchClassifier as torch functions on its device: its PyTorch preprocessing (the steps applied at
    prediction time, as its loss and class gradients apply them), then its model, in eval mode."""

    def __init__(self, estimator: PyTorchClassifier) -> None:
        self.estimator = estimator
        self.model = estimator.model
        self.device = estimator.device
        self.nb_classes = int(estimator.nb_classes)
        self.preprocessing = [p for p in estimator.preprocessing_operations if p.apply_predict]
        clip = estimator.clip_values
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The model's output for images `x` (before any preprocessing), as ART's class gradients see it."""
        for step in self.preprocessing:
            x, _ = step.forward(x, None)
        out = self.model(x)
        if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != self.nb_classes:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(
                f"the classifier's model gives outputs of shape {shape}; its nb_classes is {self.nb_classes}, so "
                f"(N, {self.nb_classes}) was expected"
            )
        return out

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """The model in eval mode with its parameters frozen (their requires_grad restored on exit), outside
        inference mode. The model is left in eval mode, as ART's PyTorchClassifier leaves it (its predict and
        gradients call model.train(False) and never undo it), so that code run after generate sees what it saw
        with ART; unlike ART, no gradient is left in the parameters' .grad."""
        with torch.inference_mode(False), model_guard(self.model):
            yield
        self.model.eval()  # (after a call that ran: one that raised leaves the model as it was)

    def tensor(self, array: np.ndarray) -> torch.Tensor:
        """`array` as float32 (ART's dtype) on the classifier's device."""
        return torch.from_numpy(writable(np.ascontiguousarray(array, dtype=ART_NUMPY_DTYPE))).to(self.device)

    def images(self, x: np.ndarray) -> torch.Tensor:
        """:meth:`tensor` of the images `x` given to generate, ValueError naming x where they hold NaN or inf
        (ART's attacks run them into NaN adversarial images)."""
        return check_finite_values(self.tensor(x), "x")

    def one_hot(self, y: Any, images: int) -> np.ndarray:
        """`y` (class indices or one-hot) as ART's one-hot labels: ValueError naming y unless it holds one label per
        image, and class indices among the model's classes (ART's attacks fail deep in their loops on labels of
        another length or, its JSMA, give the last images no target; ART reads an index of -1 as the last class)."""
        labels = np.asarray(y)
        if labels.dtype.kind in "iuf" and (labels.ndim == 1 or labels.shape[1:] == (1,)) and labels.size:
            # ART reads a label of -1 as the last class and 1.5 as class 1
            low, high = labels.min(), labels.max()
            whole = bool(np.isfinite(labels).all() and (labels == np.round(labels)).all())
            if not whole or low < 0 or high >= self.nb_classes:
                kinds = f"class indices in [0, {self.nb_classes}) or one-hot rows"
                raise ValueError(f"y must hold {kinds}; got values in [{low}, {high}]")
        one_hot = check_and_transform_label_format(labels, nb_classes=self.nb_classes)
        if len(one_hot) != images:
            raise ValueError(f"y must hold one label per image of x: {images} images, got {len(one_hot)} labels")
        return one_hot

    def predict(self, x: torch.Tensor, batch_size: int = 128) -> torch.Tensor:
        """The logits of `x`, computed `batch_size` images at a time."""
        with torch.no_grad():
            return torch.cat([self.logits(x[chunk]) for chunk in batches(len(x), batch_size)])

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """`x` clipped into the classifier's clip_values (unchanged without them)."""
        return x if self.clip is None else torch.clamp(x, *self.clip)

    def one_hot_labels(self, x: torch.Tensor, y: np.ndarray | None, batch_size: int, targeted: bool) -> torch.Tensor:
        """ART's labels for FGM, PGD and C&W, float32 (N, classes): `y` one-hot encoded, or without `y` (untargeted
        only) ones at the model's largest output (several where outputs tie, as ART marks them)."""
        if y is not None:
            return self.tensor(self.one_hot(y, len(x)))
        if targeted:
            raise ValueError("Target labels `y` need to be provided for a targeted attack.")
        predictions = self.predict(x, batch_size)
        return (predictions == predictions.amax(1, keepdim=True)).float()

    def loss_gradient(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The gradient with respect to `x` of the classifier's loss on `labels` (reduced as the classifier reduces
        them), with respect to the input only."""
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.estimator.loss(self.logits(leaf), labels), leaf)
        return grad

    def numpy(self, x: torch.Tensor) -> np.ndarray:
        """`x` as a float32 numpy array on the host."""
        return x.detach().to("cpu", torch.float32).numpy()
