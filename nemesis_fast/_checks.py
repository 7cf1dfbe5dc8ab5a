"""Argument checks shared by every public function: each raises ValueError or TypeError naming the argument."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Real
from typing import Any, NoReturn

import numpy as np
import torch

FLOAT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INTEGER_DTYPES: tuple[torch.dtype, ...] = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


MAX_THREADS = 1024  # CPU threads per process: more only exhausts memory (OpenMP allocates per thread)


def dtype_name(dtype: torch.dtype) -> str:
    """ "float32" for torch.float32: a dtype as messages name it."""
    return str(dtype).replace("torch.", "")


def _dtype_names(dtypes: Iterable[torch.dtype]) -> str:
    return ", ".join(dtype_name(d) for d in dtypes)


def check_float_dtype(dtype: Any, name: str = "dtype") -> torch.dtype:
    """One of FLOAT_DTYPES (TypeError naming `name` otherwise)."""
    if dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float dtype ({_dtype_names(FLOAT_DTYPES)}), got {dtype!r}")
    return dtype


def parameter_dtype(model: object) -> torch.dtype | None:
    """The dtype of `model`'s first floating parameter (an nn.Module's), or None where it has none."""
    parameters = model.parameters() if isinstance(model, torch.nn.Module) else ()
    return next((p.dtype for p in parameters if p.is_floating_point()), None)


def check_no_inference_tensors(model: object, name: str) -> None:
    """ValueError naming `name` where an nn.Module's parameters or buffers were made inside torch.inference_mode():
    autograd can neither differentiate through them nor train them (nor set their requires_grad back)."""
    if not isinstance(model, torch.nn.Module):
        return
    if any(t.is_inference() for t in (*model.parameters(), *model.buffers())):
        raise ValueError(
            f"{name} has parameters or buffers made inside torch.inference_mode(), which autograd cannot "
            "differentiate through or train: build or load the model outside inference mode (torch.no_grad() is fine)"
        )


def check_float_logits(logits: torch.Tensor) -> None:
    """ValueError naming the model where its logits are not floating point (torch's errors would come from inside
    a loss or a gradient)."""
    if not logits.is_floating_point():
        raise ValueError(f"model must give floating-point logits, got {dtype_name(logits.dtype)} ones")


def check_class_logits(logits: torch.Tensor) -> None:
    """:func:`check_float_logits`, and ValueError naming the model where its (B, classes) logits hold fewer than 2
    classes (no attack has a wrong class to aim at, and training would learn nothing)."""
    check_float_logits(logits)
    if logits.shape[1] < 2:
        raise ValueError(f"model must output logits for at least 2 classes, got {logits.shape[1]}")


def check_tensor(
    x: Any,
    name: str,
    *,
    dtypes: Sequence[torch.dtype] = FLOAT_DTYPES,
    ndim: int | None = None,
    min_ndim: int | None = None,
) -> torch.Tensor:
    """Checks that `x` is a tensor of one of `dtypes` with the given number of dimensions."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in dtypes:
        raise TypeError(f"{name} must have dtype {_dtype_names(dtypes)}; got {dtype_name(x.dtype)}")
    if ndim is not None and x.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.dim() < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    return x


SHOWN_IMAGES = 10  # images an error message names, the first of those at fault


def named_images(indices: Sequence[int], name: str = "x") -> str:
    """Names the images name[i] of `indices`, the first SHOWN_IMAGES of them ("image(s) x[0], x[3] and 2 more")."""
    shown = ", ".join(f"{name}[{i}]" for i in indices[:SHOWN_IMAGES])
    more = len(indices) - SHOWN_IMAGES
    return f"image(s) {shown}" + (f" and {more} more" if more > 0 else "")


def check_finite_values(x: torch.Tensor, name: str) -> torch.Tensor:
    """ValueError naming `name` and its first images at fault where the floating tensor `x` (N, ...) holds NaN or an
    infinity (one device synchronisation; other dtypes pass); returns `x`."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        where = ""
        if x.dim():
            bad = (~torch.isfinite(x)).reshape(len(x), -1).any(1).nonzero()[:, 0].tolist()
            where = f" in {named_images(bad, name)}"
        raise ValueError(f"{name} must be finite; NaN or inf{where}")
    return x


def check_number(
    value: Any,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Checks that `value` is a finite real number within the given bounds; returns it as a float."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    # Comparisons rather than math.isfinite (False for NaN and the infinities alike): torch.compile traces them on a
    # float it makes symbolic (an argument of the compiled function, or one that changed between calls), where
    # math.isfinite broke the graph ("torch.* op returned non-Tensor").
    if not -math.inf < value < math.inf:
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (value == low and not low_inclusive)):
        raise ValueError(f"{name} must be {'>=' if low_inclusive else '>'} {low}, got {value}")
    if high is not None and (value > high or (value == high and not high_inclusive)):
        raise ValueError(f"{name} must be {'<=' if high_inclusive else '<'} {high}, got {value}")
    return value


def check_positive(value: Any, name: str) -> float:
    """A finite number > 0."""
    return check_number(value, name, low=0.0, low_inclusive=False)


def check_nonnegative(value: Any, name: str) -> float:
    """A finite number >= 0."""
    return check_number(value, name, low=0.0)


def check_bool(value: Any, name: str) -> bool:
    """Checks that `value` is a bool (not a number or string that would read as one); returns it."""
    if not isinstance(value, bool):
        kind = type(value)
        named = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
        raise TypeError(f"{name} must be a bool, got {named}")
    return value


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """An integer (not a bool) within the given inclusive bounds, returned as a Python int where it is a numpy
    integer; a symbolic one (torch.SymInt, which torch.compile passes a custom op for an int that varies between
    calls) is checked as one."""
    if isinstance(value, np.integer):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, torch.SymInt)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if low is not None and value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high}, got {value}")
    return value


def check_choice(value: Any, name: str, choices: Iterable[Any]) -> Any:
    """One of `choices`."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_range(bounds: Any, name: str) -> tuple[float, float]:
    """A pair (low, high) of finite numbers with low <= high."""
    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise TypeError(f"{name} must be a pair (low, high), got {bounds!r}")
    low = check_number(bounds[0], f"{name}[0]")
    high = check_number(bounds[1], f"{name}[1]")
    if low > high:
        raise ValueError(f"{name} must have low <= high, got {bounds!r}")
    return low, high


def check_device(device: Any, name: str = "device") -> torch.device:
    """`device` as a torch.device that this machine has; None: the first GPU when one is visible, else the CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{name} must name a device such as 'cpu' or 'cuda:0', got {device!r}") from error
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{name} is {str(resolved)!r}, but no CUDA GPU is visible")
        if resolved.index is not None and resolved.index >= count:
            raise ValueError(f"{name} is {str(resolved)!r}, but only {count} CUDA GPU(s) are visible")
    return resolved


def shortened(value: Any, width: int) -> str:
    """repr(value) for an error message, cut to `width` characters."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def raise_model_input_error(error: RuntimeError, failed_on: str) -> NoReturn:
    """Raises, where a model failed on an input batch with `error`: a subclass of RuntimeError (out of memory and the
    like) as it is; torch's plain RuntimeError (a layer's shapes: images of another data set, or without their
    channel or batch dimension) as a RuntimeError from it that says `failed_on` (what the model was given, and its
    shape) beside the layer's complaint, and what x must be."""
    if type(error) is not RuntimeError:
        raise error
    raise RuntimeError(
        f"{failed_on}: {error}. x must be a batch (B, ...) of the inputs the model takes, e.g. (B, channels, height, "
        "width) images of the data set it was trained on"
    ) from error


def first_output(model: torch.nn.Module, images: torch.Tensor, option: str) -> torch.Tensor:
    """`model`'s output on the first of `images` (uint8), in eval mode (batch norm's statistics untouched); a
    ValueError naming `option` where the model does not take images of their shape."""
    device = next(model.parameters(), torch.empty(0)).device
    training = model.training
    try:
        with torch.no_grad():
            return model.eval()(images[:1].to(device).float().div(255))
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as error:
        shape = "x".join(str(n) for n in images.shape[1:])
        raise ValueError(f"{option}: its model does not take the data's {shape} images ({error})") from error
    finally:
        model.train(training)
