"""Reference Gaussian data augmentation: the specification of the noise that every backend reproduces.

The noise is a pure function of (seed, copy, global sample index, feature index), drawn with a counter-based
generator, so it does not depend on the backend, the launch configuration, the number of threads, or how a data
set is split into batches:

* Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011) with
  key = (seed low 32 bits, seed high 32 bits) and counter = (f // 4, c, s low 32 bits, s high 32 bits), where f
  is the feature index (row-major within one sample), c the 0-based index of the noisy copy and s = offset + b
  the global index of sample b. One call yields four 32-bit words w0..w3.
* Box-Muller turns (w0, w1) into two normals and (w2, w3) into two more; feature f takes normal f % 4, so every
  word is used. With k = w >> 8 (24 bits): the radius is sqrt(-2 ln u) with u = (k0 + 1) * 2**-24 in (0, 1]
  (never 0), and the angle is 2 pi k1 / 2**24. |noise| <= sqrt(48 ln 2) ~ 5.77.
* ln, sin and cos are fixed float32 polynomials (below) evaluated in float32 in the same order on every backend:
  no library call whose accuracy varies between platforms. The angle is reduced to [-pi/4, pi/4) exactly, on
  the integer k1. The normals agree with float64 Box-Muller to about 1e-6.
* Every +, -, *, / and square root is one correctly rounded IEEE operation, in the order written here, never a
  fused multiply-add: so every backend gives these values bit for bit (the C++ code is compiled without FP
  contraction, the CUDA code uses the __f*_rn intrinsics, the Triton kernel uses explicitly rounded PTX instructions).

This module computes the noise with int64 tensors holding uint32 values and float32 tensors: it is slow and
meant for small inputs (tests) and as the fallback of last resort.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .._checks import check_int, check_number, dtype_name
from ..data.loader import to_float

# Philox4x32 round multipliers and Weyl key increments.
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10
MASK32 = 0xFFFFFFFF

# float32 polynomial coefficients, fitted for this package (near-minimax relative error):
# sin x ~ x + x^3 S(x^2) and cos x ~ 1 + x^2 (-1/2 + x^2 C(x^2)) on [-pi/4, pi/4];
# ln(1 + t) ~ t + t^2 (-1/2 + t L(t)) on [sqrt(1/2) - 1, sqrt(2) - 1]. Highest degree first (Horner order).
SIN_COEFFS = (-0.0001951528392964974, 0.00833216030150652, -0.16666655242443085)
COS_COEFFS = (2.44331567955669e-05, -0.0013887316454201937, 0.04166664555668831)
LOG_COEFFS = (
    -0.07634492963552475,
    0.12761574983596802,
    -0.13160182535648346,
    0.14201758801937103,
    -0.16623356938362122,
    0.20001226663589478,
    -0.2500081956386566,
    0.3333333134651184,
)
LN2 = 0.6931471824645996  # float32(ln 2)
SQRT2 = 1.4142135381698608  # float32(sqrt 2)
ANGLE_STEP = 3.7450702927776729e-07  # float32(2 pi / 2**24)
INV_2_24 = 2.0**-24

SUPPORTED_INPUT_DTYPES: tuple[torch.dtype, ...] = (
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.uint8,
)
OUTPUT_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
MAX_COPIES = 2**31 - 1
FLOAT32_OVERFLOW = 2.0**128 - 2.0**103  # the smallest number that rounds to infinity in float32
INT64_MAX = 2**63 - 1


def check_arguments(
    x: Any,
    copies: Any,
    sigma: Any,
    clip_min: float | None,
    clip_max: float | None,
    offset: Any,
    out_dtype: torch.dtype | None,
) -> torch.dtype:
    """Checks the op's arguments (ValueError / TypeError naming the argument); returns the output dtype.

    The output dtype defaults to x's dtype, and to float32 for uint8 input. It must be a floating dtype that holds
    the clip bounds as finite numbers.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in SUPPORTED_INPUT_DTYPES:
        names = ", ".join(dtype_name(d) for d in SUPPORTED_INPUT_DTYPES)
        raise TypeError(f"x must have dtype {names}; got {dtype_name(x.dtype)}")
    if x.dim() < 1:
        raise ValueError("x must have at least 1 dimension (the batch), got a 0-dimensional tensor")
    copies = check_int(copies, "copies", low=0, high=MAX_COPIES)
    sigma = check_number(sigma, "sigma", low=0.0)
    if sigma >= FLOAT32_OVERFLOW:
        raise ValueError(f"sigma must be finite in float32, got {sigma}")
    for value, name in ((clip_min, "clip_min"), (clip_max, "clip_max")):
        if value is not None:
            check_number(value, name)
    if clip_min is not None and clip_max is not None and clip_min > clip_max:
        raise ValueError(f"clip_min must be <= clip_max, got clip_min={clip_min} > clip_max={clip_max}")
    offset = check_int(offset, "offset", low=0, high=INT64_MAX - x.shape[0])
    if out_dtype is None:
        out_dtype = torch.float32 if x.dtype == torch.uint8 else x.dtype
        described = f"the output dtype {dtype_name(out_dtype)} (out_dtype=None: x's)"
    else:
        if not isinstance(out_dtype, torch.dtype):
            raise TypeError(f"out_dtype must be a torch.dtype or None, got {type(out_dtype).__name__}")
        if out_dtype not in OUTPUT_DTYPES:
            choices = ", ".join(map(dtype_name, OUTPUT_DTYPES))
            raise TypeError(f"out_dtype={dtype_name(out_dtype)} cannot hold noisy values; use one of {choices}")
        described = f"out_dtype={dtype_name(out_dtype)}"
    biggest = torch.finfo(out_dtype).max
    for value, name in ((clip_min, "clip_min"), (clip_max, "clip_max")):
        if value is not None and abs(value) > biggest:
            raise ValueError(f"{described} cannot hold {name}={value}")
    return out_dtype


def output_shape(x: torch.Tensor, copies: int, include_original: bool) -> tuple[int, ...]:
    """((copies + include_original) * B, *x.shape[1:]); ValueError where that count of rows does not fit in int64
    (the kernels' index type)."""
    rows, batch = copies + int(include_original), x.shape[0]
    if isinstance(batch, int) and isinstance(rows, int) and rows * batch > 2**63 - 1:
        raise ValueError(
            f"nemesis_fast: the output's (copies + include_original) * B = {rows} * {batch} rows do not fit in int64"
        )
    return (rows * batch, *x.shape[1:])


def empty_output(
    x: torch.Tensor,
    copies: int,
    sigma: float,
    clip_min: float | None,
    clip_max: float | None,
    include_original: bool,
    offset: int,
    out_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Checks the arguments and returns the uninitialised, contiguous output on x's device."""
    dtype = check_arguments(x, copies, sigma, clip_min, clip_max, offset, out_dtype)
    return x.new_empty(output_shape(x, copies, include_original), dtype=dtype)


def seed_key(seed: int) -> tuple[int, int]:
    """The Philox key of an int64 seed: its two's-complement low and high 32-bit halves."""
    bits = seed & 0xFFFFFFFFFFFFFFFF
    return bits & MASK32, bits >> 32


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) 32-bit halves of the 64-bit product a * m (a: uint32 values in int64; m: a 32-bit constant),
    in pieces small enough for int64."""
    m_hi, m_lo = m >> 16, m & 0xFFFF
    p_hi, p_lo = a * m_hi, a * m_lo  # each < 2**48
    high = (p_hi + (p_lo >> 16)) >> 16
    low = (((p_hi & 0xFFFF) << 16) + p_lo) & MASK32
    return high, low


def philox4x32(
    counter: tuple[torch.Tensor | int, ...], key: tuple[int, int], rounds: int = PHILOX_ROUNDS
) -> tuple[torch.Tensor, ...]:
    """Philox4x32-`rounds` of four counter words (int64 tensors or ints holding uint32 values, broadcast
    together) under a two-word key; returns the four output words as int64 tensors holding uint32 values."""
    c = [torch.as_tensor(w, dtype=torch.int64) for w in counter]
    c = list(torch.broadcast_tensors(*c))
    k0, k1 = key
    for r in range(rounds):
        if r > 0:
            k0, k1 = (k0 + PHILOX_W0) & MASK32, (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(c[0], PHILOX_M0)
        hi1, lo1 = _mulhilo(c[2], PHILOX_M1)
        c = [hi1 ^ c[1] ^ k0, lo1, hi0 ^ c[3] ^ k1, lo0]
    return tuple(c)


def _horner(t: torch.Tensor, coeffs: tuple[float, ...]) -> torch.Tensor:
    acc = torch.full_like(t, coeffs[0])
    for coeff in coeffs[1:]:
        acc = acc * t + coeff
    return acc


def _log_unit(u: torch.Tensor) -> torch.Tensor:
    """ln u for float32 u in (0, 1]: u = 2**e * f with f in [sqrt(1/2), sqrt(2)), ln u = e ln 2 + ln f."""
    bits = u.view(torch.int32)
    e = (bits >> 23) - 127
    f = ((bits & 0x7FFFFF) | 0x3F800000).view(torch.float32)  # [1, 2)
    big = f > SQRT2
    f = torch.where(big, f * 0.5, f)
    e = torch.where(big, e + 1, e)
    t = f - 1.0
    return t + t * t * (t * _horner(t, LOG_COEFFS) - 0.5) + e.to(torch.float32) * LN2


def box_muller(radius_word: torch.Tensor, angle_word: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two independent standard normals (float32) from two uint32 words: (r cos theta, r sin theta)."""
    u = ((radius_word >> 8) + 1).to(torch.float32) * INV_2_24  # exact, in (0, 1]
    # sqrt in float64, rounded once to float32: correctly rounded, as the kernels' IEEE square roots are.
    # torch's float32 sqrt is not on every CPU (on AVX-512 it is a SLEEF routine, off by one ulp at times).
    radius = torch.sqrt(_log_unit(u).to(torch.float64) * -2.0).to(torch.float32)
    k = angle_word >> 8  # the angle is 2 pi k / 2**24
    quadrant = (k + (1 << 21)) >> 22  # nearest multiple of pi/2, 0..4
    x = (k - (quadrant << 22)).to(torch.float32) * ANGLE_STEP  # [-pi/4, pi/4)
    x2 = x * x
    sin_x = x + x * x2 * _horner(x2, SIN_COEFFS)
    cos_x = 1.0 + x2 * (x2 * _horner(x2, COS_COEFFS) - 0.5)
    quadrant = quadrant & 3
    cos_t = torch.where(
        quadrant == 0, cos_x, torch.where(quadrant == 1, -sin_x, torch.where(quadrant == 2, -cos_x, sin_x))
    )
    sin_t = torch.where(
        quadrant == 0, sin_x, torch.where(quadrant == 1, cos_x, torch.where(quadrant == 2, -sin_x, -cos_x))
    )
    return radius * cos_t, radius * sin_t


def noise(
    seed: int,
    copies: int,
    samples: torch.Tensor | int,
    features: int,
    offset: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The standard normal noise (float32, shape (copies, B, features)) of copies 0..copies-1 of samples
    offset .. offset + B - 1 (B = `samples`), or of the global sample indices in the int64 tensor `samples`."""
    if isinstance(samples, int):
        s = torch.arange(samples, dtype=torch.int64, device=device) + offset
    else:
        s = samples.to(device=device, dtype=torch.int64) + offset
    c = torch.arange(copies, dtype=torch.int64, device=s.device).view(-1, 1, 1)
    return _normals(seed, c, s.view(1, -1, 1), features)


def pair_noise(seed: int, copy: torch.Tensor, sample: torch.Tensor, features: int) -> torch.Tensor:
    """The noise (float32, shape (P, features)) of P (copy, global sample) pairs: row i is noise(seed, copy[i],
    sample[i]), the values `noise` gives copy copy[i] of sample sample[i]. copy and sample: int64 (P,) tensors on
    one device."""
    return _normals(seed, copy.to(torch.int64).view(-1, 1), sample.to(torch.int64).view(-1, 1), features)


def _normals(seed: int, c: torch.Tensor, s: torch.Tensor, features: int) -> torch.Tensor:
    """Normals of copy indices `c` and sample indices `s` (int64, broadcast together, last dimension 1), with
    the features along a new last dimension."""
    g = torch.arange((features + 3) // 4, dtype=torch.int64, device=s.device)
    w = philox4x32((g, c, s & MASK32, s >> 32), seed_key(seed))
    n0, n1 = box_muller(w[0], w[1])
    n2, n3 = box_muller(w[2], w[3])
    return torch.stack((n0, n1, n2, n3), dim=-1).flatten(-2)[..., :features]


def _math_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _clip(v: torch.Tensor, clip_min: float | None, clip_max: float | None) -> torch.Tensor:
    """Clamps to the bounds rounded to v's dtype; NaN propagates."""
    if clip_min is not None:
        low = torch.tensor(clip_min, dtype=v.dtype, device=v.device)
        v = torch.where(v < low, low, v)
    if clip_max is not None:
        high = torch.tensor(clip_max, dtype=v.dtype, device=v.device)
        v = torch.where(v > high, high, v)
    return v


def gaussian_augment(
    x: torch.Tensor,
    copies: int,
    sigma: float,
    clip_min: float | None,
    clip_max: float | None,
    include_original: bool,
    seed: int,
    offset: int,
    out_dtype: torch.dtype | None,
) -> torch.Tensor:
    """Originals (if `include_original`) then `copies` noisy copies of the batch x (B, ...), clipped.

    Row c * B + b of the noisy part holds clip(x[b] + sigma * noise(seed, c, offset + b)); the originals are
    clip(x[b]); with sigma = 0 the copies are clip(x[b]) too, no noise drawn (so -0.0 stays -0.0, as the kernels
    keep it). Values are computed in float32 (float64 for float64 input; uint8 input is x / 255) and rounded to
    the output dtype (default: x's, float32 for uint8). Shape ((copies + include_original) * B, *x.shape[1:]).
    """
    out = empty_output(x, copies, sigma, clip_min, clip_max, include_original, offset, out_dtype)
    if out.numel() == 0:
        return out
    math_dtype = _math_dtype(x)
    batch = x.shape[0]
    features = math.prod(x.shape[1:])
    values = to_float(x.detach(), math_dtype).reshape(1, batch, features)
    parts = []
    if include_original:
        parts.append(_clip(values, clip_min, clip_max))
    if copies > 0 and sigma == 0:
        parts.append(_clip(values, clip_min, clip_max).expand(copies, -1, -1))
    elif copies > 0:
        z = noise(seed, copies, batch, features, offset, x.device).to(math_dtype)
        scale = torch.tensor(sigma, dtype=math_dtype, device=x.device)
        parts.append(_clip(values + scale * z, clip_min, clip_max))
    return torch.cat(parts).to(out.dtype).reshape(out.shape)
