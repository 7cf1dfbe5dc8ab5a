"""The smoothed classifier: :class:`Smooth` counts the base model's votes on noisy copies drawn on its device, and
turns them into certificates and predictions (the noise's definition: :mod:`nemesis_fast.certify`)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .._amp import amp_name, autocast
from .._backends.gaussian_augment import resolve_seed
from .._checks import (
    FLOAT_DTYPES,
    INTEGER_DTYPES,
    check_choice,
    check_device,
    check_finite_values,
    check_int,
    check_number,
    check_positive,
    check_tensor,
    dtype_name,
    named_images,
    parameter_dtype,
    raise_model_input_error,
)
from .._dispatch import BACKENDS
from .._modes import eval_mode
from ..ops import gaussian_augment
from .statistics import binomial_p_value, certificate_bounds, certified_accuracy

MAX_IMAGE_INDEX = 2**31 - 1  # the image index fills the high 32 bits of the noise's 64-bit sample index ...
MAX_DRAWS = 2**32  # ... and the draw index the low 32 bits
MAX_CLASSES = 2**20  # the vote counts take 8 bytes per class, image and phase on the device: 8 MiB per image and phase
Progress = Callable[[int], object]


@dataclass
class Certificate:
    """What :meth:`Smooth.certify` returns, per image (tensors on the CPU)."""

    prediction: torch.Tensor  # int64 (B,): the certified class, -1 where it abstains
    p_lower: torch.Tensor  # float64 (B,): the lower confidence bound pA on the selected class's probability
    # float64 (B,): certified L2 radius sigma * Phi^-1(pA), in sigma's units (x's; x / 255 for uint8 x); 0 when
    # abstaining
    radius: torch.Tensor
    counts: torch.Tensor  # int64 (B, K): votes of the n estimation draws
    selection_counts: torch.Tensor  # int64 (B, K): votes of the n0 selection draws
    sigma: float
    n0: int
    n: int
    alpha: float

    @property
    def abstained(self) -> torch.Tensor:
        """bool (B,): where CERTIFY abstained (prediction -1)."""
        return self.prediction < 0

    def certified_accuracy(
        self, labels: torch.Tensor, radii: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0)
    ) -> list[float]:
        """Fraction of the images certified correct at each radius (see :func:`certified_accuracy`); ValueError
        for labels that are not classes of the counts."""
        check_tensor(labels, "labels", dtypes=INTEGER_DTYPES, ndim=1)
        if len(labels) and int(labels.max()) >= self.counts.shape[1]:
            raise ValueError(f"labels must be classes below {self.counts.shape[1]}, got {int(labels.max())}")
        return certified_accuracy(self.prediction, self.radius, labels, radii)


@dataclass
class Prediction:
    """What :meth:`Smooth.predict` returns, per image (tensors on the CPU)."""

    prediction: torch.Tensor  # int64 (B,): the smoothed classifier's class, -1 where it abstains
    p_value: torch.Tensor  # float64 (B,): two-sided binomial test of the top count against the runner-up's
    counts: torch.Tensor  # int64 (B, K): votes of the n draws
    n: int
    alpha: float

    @property
    def abstained(self) -> torch.Tensor:
        """bool (B,): where PREDICT abstained (prediction -1)."""
        return self.prediction < 0


# ------------------------------------------------------------------------------------------------ the sampler


def phase_key(seed: int, phase: str) -> int:
    """The noise key (a signed 64-bit int) of one phase ("select", "estimate", "predict") of a run under `seed`:
    a hash, so that the phases' draws are independent."""
    digest = hashlib.sha256(f"nemesis_fast.certify:{seed}:{phase}".encode()).digest()
    return int.from_bytes(digest[:8], "little", signed=True)


def _segments(begin: int, end: int, draws: list[int]) -> list[tuple[int, int, int, int]]:
    """The rows [begin, end) of the image-major stream of draws (image, then phase, then draw) as segments
    (image, phase, first draw, last draw + 1)."""
    per_image = sum(draws)
    out = []
    row = begin
    while row < end:
        image, within = divmod(row, per_image)
        phase = 0
        while within >= draws[phase]:
            within -= draws[phase]
            phase += 1
        take = min(draws[phase] - within, end - row)
        out.append((image, phase, within, within + take))
        row += take
    return out


class Smooth:
    """The Gaussian smoothing of a classifier: certificates and abstaining predictions from noise votes.

    Args:
        model: maps a batch (R, *x.shape[1:]) to logits (R, num_classes); an nn.Module is put in eval mode for the
            call (its modes are restored afterwards). Its device is where the noise is drawn and counted.
        sigma: standard deviation of the noise, > 0, in the units of x (of x / 255 for uint8 images).
        num_classes: the number of classes K, 2 <= K <= MAX_CLASSES = 2**20 (checked against the model's output).
        amp: False, True ("bf16") or "fp16": run the model under torch.autocast (a float32 model: ValueError
            otherwise). The noisy copies are then float32.
        device: where to run when the model has no parameters (default: x's device); one this machine has.
        backend: the gaussian_augment backend, "native", "triton" or "torch" (None: automatic).

    A model that gives a NaN or infinite logit for a noisy copy casts no vote for it, and the call raises a
    ValueError at its end naming the images concerned.
    """

    def __init__(
        self,
        model: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        sigma: float,
        num_classes: int,
        *,
        amp: bool | str = False,
        device: torch.device | str | None = None,
        backend: str | None = None,
    ) -> None:
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a callable, got {type(model).__name__}")
        self.model = model
        self.sigma = check_positive(sigma, "sigma")
        self.num_classes = check_int(num_classes, "num_classes", low=2, high=MAX_CLASSES)
        self.amp = amp_name(amp) or False
        self.device = None if device is None else check_device(device)
        self.backend = None if backend is None else check_choice(backend, "backend", BACKENDS)

    def _device(self, x: torch.Tensor) -> torch.device:
        if isinstance(self.model, nn.Module):
            for tensor in self.model.parameters():
                return tensor.device
        return self.device or x.device

    def _noise_dtype(self, x: torch.Tensor) -> torch.dtype | None:
        """The dtype of the noisy copies: float32 under autocast (which needs a float32 model: ValueError naming
        amp otherwise), else the model's (its first floating parameter's); None (x's own, float32 for uint8
        images) for a model without one."""
        model_dtype = parameter_dtype(self.model)
        if not self.amp:
            return model_dtype
        if model_dtype not in (None, torch.float32):
            raise ValueError(
                f"amp={self.amp!r} runs the model under torch.autocast, which takes float32 models; this one's "
                f"parameters are {dtype_name(model_dtype)}: pass amp=False, or the model in float32"
            )
        return torch.float32

    def _check_x(self, x: torch.Tensor, offset: int) -> int:
        """`offset`, checked with x (returned as a Python int)."""
        check_tensor(x, "x", dtypes=(*FLOAT_DTYPES, torch.uint8), min_ndim=2)
        offset = check_int(offset, "offset", low=0, high=MAX_IMAGE_INDEX)
        if offset + x.shape[0] - 1 > MAX_IMAGE_INDEX:
            raise ValueError(f"offset + len(x) must be <= {MAX_IMAGE_INDEX + 1}, got {offset + x.shape[0]}")
        check_finite_values(x, "x")
        return offset

    def _raise_on_non_finite(self, rejected: torch.Tensor) -> None:
        """Raises if any count of `rejected` (B, P) int64, the noisy copies of each image and phase with a NaN or
        infinite logit, is not 0."""
        per_image = rejected.sum(1)
        if per_image.any():
            bad = per_image.nonzero()[:, 0].tolist()
            raise ValueError(
                f"the model gave non-finite logits (NaN or inf) for {int(per_image.sum())} noisy copies of "
                f"{named_images(bad)}; they were not counted as votes"
            )

    def sample_counts(
        self,
        x: torch.Tensor,
        phases: list[tuple[int, int]],
        batch_size: int,
        *,
        offset: int = 0,
        progress: Progress | None = None,
    ) -> torch.Tensor:
        """Votes of the model on noisy copies of every image: (B, P, K) int64 on the CPU, one row of K class
        counts per image and phase, for phases given as (noise key, number of draws). `progress(rows)` is called
        after every forward pass with the number of noisy copies it classified. Noisy copies with a NaN or
        infinite logit are counted apart, on the device, and raise a ValueError once all are classified."""
        offset = self._check_x(x, offset)
        batch_size = check_int(batch_size, "batch_size", low=1)
        if progress is not None and not callable(progress):
            raise TypeError(
                f"progress must be a callable taking a number of noisy copies, or None, got {type(progress).__name__}"
            )
        phases = [
            (
                check_int(key, "a phase's noise key", low=-(2**63), high=2**63 - 1),
                check_int(count, "a phase's draws", low=1, high=MAX_DRAWS),
            )
            for key, count in phases or [(0, 0)]  # none: "a phase's draws must be >= 1"
        ]
        device = self._device(x)
        out_dtype = self._noise_dtype(x)
        x = x.detach().to(device)
        draws = [count for _, count in phases]
        total = x.shape[0] * sum(draws)
        slots = self.num_classes + 1  # the last: copies with non-finite logits
        counts = torch.zeros(x.shape[0] * len(phases) * slots, dtype=torch.int64, device=device)
        with eval_mode(self.model), torch.inference_mode(), autocast(device.type, self.amp or None):
            for begin in range(0, total, batch_size):
                end = min(begin + batch_size, total)
                segments = _segments(begin, end, draws)
                noisy = [
                    gaussian_augment(
                        x[i : i + 1].expand(stop - start, *x.shape[1:]),
                        1,
                        self.sigma,
                        None,
                        include_original=False,
                        seed=phases[p][0],
                        offset=((offset + i) << 32) + start,
                        out_dtype=out_dtype,
                        backend=self.backend,
                    )
                    for i, p, start, stop in segments
                ]
                batch = noisy[0] if len(noisy) == 1 else torch.cat(noisy)
                predicted = self._classify(batch, device)
                # Each row's slot (image, phase) in `counts`, made on the device: no copy from the host, no sync.
                base = [
                    torch.full((stop - start,), (i * len(phases) + p) * slots, device=device)
                    for i, p, start, stop in segments
                ]
                rows = base[0] if len(base) == 1 else torch.cat(base)
                counts.scatter_add_(0, rows + predicted, torch.ones_like(predicted))
                if progress is not None:
                    progress(end - begin)
        counts = counts.view(x.shape[0], len(phases), slots).cpu()
        self._raise_on_non_finite(counts[:, :, -1])
        return counts[:, :, :-1].contiguous()

    def _classify(self, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
        """The model's class for every row of the batch, int64 on the device; num_classes where a logit is NaN or
        infinite."""
        if device.type == "cpu" and batch.dim() == 4 and batch.shape[1] == 1:
            # One channel: the same memory read as channels-last, which the CPU convolutions run faster.
            batch = batch.as_strided(batch.shape, (batch.stride(0), 1, batch.stride(2), batch.stride(3)))
        try:
            logits = self.model(batch)
        except RuntimeError as error:
            failed_on = f"the model failed on noisy images of shape {tuple(batch.shape[1:])}, x's images"
            raise_model_input_error(error, failed_on)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape != (len(batch), self.num_classes):
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(
                f"the model must return logits of shape ({len(batch)}, num_classes={self.num_classes}), got {shape}"
            )
        if logits.dtype == torch.bool or logits.is_complex():
            raise ValueError(f"the model must return real-valued logits, got {dtype_name(logits.dtype)} ones")
        return torch.where(logits.isfinite().all(1), logits.argmax(1), self.num_classes)

    def certify(
        self,
        x: torch.Tensor,
        n0: int,
        n: int,
        alpha: float,
        batch_size: int = 1000,
        *,
        seed: int | None = None,
        offset: int = 0,
        progress: Progress | None = None,
    ) -> Certificate:
        """Cohen et al.'s CERTIFY for every image of x.

        Args:
            x: images (B, ...) of float values on sigma's scale (the model's inputs: pixels in [0, 1] for the
                paper's models), or uint8 read as x / 255; the noisy copies are made in the dtype of the model's
                parameters, on its device.
            n0: selection draws per image, >= 1 (Cohen et al.: 100).
            n: estimation draws per image, >= 1 (Cohen et al.: 100,000). The largest radius it can certify is
                sigma * Phi^-1(alpha ** (1 / n)) (:func:`largest_certifiable_radius`; none where that is < 0).
            alpha: failure probability of each certificate, in (0, 1) (Cohen et al.: 0.001).
            batch_size: noisy copies per forward pass (memory: batch_size inputs and activations); it does not
                change the result.
            seed: the noise's seed (an int; None: drawn from torch's default generator).
            offset: the global index of x's first image (see the module's docstring).
            progress: None, or a callable called with the number of noisy copies classified after every forward
                pass.

        Returns:
            A :class:`Certificate`: per image the class (-1: abstain), pA and the radius.

        Raises:
            ValueError: for NaN or inf in x, and (after all draws) for a model that gives non-finite logits.
        """
        n0 = check_int(n0, "n0", low=1, high=MAX_DRAWS)
        n = check_int(n, "n", low=1, high=MAX_DRAWS)
        alpha = check_number(alpha, "alpha", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
        seed = resolve_seed(seed)
        phases = [(phase_key(seed, "select"), n0), (phase_key(seed, "estimate"), n)]
        counts = self.sample_counts(x, phases, batch_size, offset=offset, progress=progress)
        selection, estimation = counts[:, 0], counts[:, 1]
        chosen = selection.argmax(1)  # the first of tied classes
        top = estimation.gather(1, chosen[:, None])[:, 0]
        p_lower, radius = certificate_bounds(top.numpy(), n, alpha, self.sigma)
        certified = torch.from_numpy(p_lower > 0.5)
        return Certificate(
            prediction=torch.where(certified, chosen, torch.full_like(chosen, -1)),
            p_lower=torch.from_numpy(p_lower),
            radius=torch.from_numpy(radius),
            counts=estimation.clone(),
            selection_counts=selection.clone(),
            sigma=self.sigma,
            n0=n0,
            n=n,
            alpha=alpha,
        )

    def predict(
        self,
        x: torch.Tensor,
        n: int,
        alpha: float,
        batch_size: int = 1000,
        *,
        seed: int | None = None,
        offset: int = 0,
        progress: Progress | None = None,
    ) -> Prediction:
        """Cohen et al.'s PREDICT for every image of x: the top class of n draws, or -1 (abstain) unless the
        two-sided binomial test of its count against the runner-up's rejects p = 1/2 at level alpha. Arguments
        as :meth:`certify`'s."""
        n = check_int(n, "n", low=1, high=MAX_DRAWS)
        alpha = check_number(alpha, "alpha", low=0.0, high=1.0, low_inclusive=False, high_inclusive=False)
        seed = resolve_seed(seed)
        counts = self.sample_counts(x, [(phase_key(seed, "predict"), n)], batch_size, offset=offset, progress=progress)
        counts = counts[:, 0]
        ordered = counts.sort(dim=1, descending=True, stable=True)
        top, runner_up = ordered.values[:, 0], ordered.values[:, 1]
        p_value = torch.from_numpy(binomial_p_value(top.numpy(), runner_up.numpy()))
        chosen = counts.argmax(1)
        return Prediction(
            prediction=torch.where(p_value <= alpha, chosen, torch.full_like(chosen, -1)),
            p_value=p_value,
            counts=counts.clone(),
            n=n,
            alpha=alpha,
        )

    def __repr__(self) -> str:
        return f"Smooth(sigma={self.sigma}, num_classes={self.num_classes}, amp={self.amp!r})"
