"""Triton kernel of gaussian_augment, as the op nemesis_fast::gaussian_augment_triton.

The same noise as the C++ and CUDA kernels (Philox4x32-10 and the polynomial Box-Muller of csrc/philox.h; the
reference module is the specification). Each program owns BLOCK groups of four consecutive features of the batch:
it loads them once and writes them to every output row it is given, drawing four normals per Philox call.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch.library import triton_op

from ..reference.gaussian_augment import empty_output, seed_key
from . import INTERPRET
from ._common import launch

BLOCK = 256  # feature groups (of 4) per program
NUM_WARPS = 4
TARGET_PROGRAMS = 4096  # rows are split over a second grid axis until there are about this many programs
# No FP fusion: each + and * is rounded on its own, as in the reference, so the noise is exact (no FMA contraction).
LAUNCH_OPTIONS = {"num_warps": NUM_WARPS, "enable_fp_fusion": False}
# The launch option alone is not enough: torch.compile (inductor, torch 2.11) launches the kernel with Triton's
# default options, FP fusion on. So on a GPU every float +, - and * of the noise is one explicitly rounded PTX
# instruction (add.rn, sub.rn, mul.rn; not libdevice's, which Triton makes flush denormals to zero), which neither
# LLVM nor ptxas fuses into an FMA, whatever the options. The CPU interpreter runs no PTX and never fuses: there
# they are the plain operators. Operands: float32 or float64 tensors of one dtype, or a float32 tensor and a number.
ROUND_EACH_OPERATION: tl.constexpr = tl.constexpr(not INTERPRET)
# The interpreter's float32 -> bfloat16 cast truncates; the GPU's, torch's and the C++ kernels' round to nearest even.
BFLOAT16_BY_BITS: tl.constexpr = tl.constexpr(INTERPRET)


@triton.jit
def _to_bfloat16(y):
    """float32 y rounded to the nearest bfloat16, ties to even, through its bits (NaN stays NaN)."""
    bits = y.to(tl.uint32, bitcast=True)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    upper = tl.where(y != y, bits | 0x400000, rounded) >> 16
    return upper.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _ptx(a, b, F32: tl.constexpr, F64: tl.constexpr):
    if a.dtype == tl.float64:
        result = tl.inline_asm_elementwise(F64, "=d,d,d", [a, b], dtype=tl.float64, is_pure=True, pack=1)
    else:
        result = tl.inline_asm_elementwise(F32, "=f,f,f", [a, b], dtype=tl.float32, is_pure=True, pack=1)
    return result


@triton.jit
def _mul(a, b):
    return _ptx(a, b, "mul.rn.f32 $0, $1, $2;", "mul.rn.f64 $0, $1, $2;") if ROUND_EACH_OPERATION else a * b


@triton.jit
def _add(a, b):
    return _ptx(a, b, "add.rn.f32 $0, $1, $2;", "add.rn.f64 $0, $1, $2;") if ROUND_EACH_OPERATION else a + b


@triton.jit
def _sub(a, b):
    return _ptx(a, b, "sub.rn.f32 $0, $1, $2;", "sub.rn.f64 $0, $1, $2;") if ROUND_EACH_OPERATION else a - b


@triton.jit
def _philox(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of uint32 counter words under the uint32 key (k0, k1)."""
    for round in tl.static_range(10):
        if round > 0:
            k0 = k0 + 0x9E3779B9
            k1 = k1 + 0xBB67AE85
        m0 = tl.full(c0.shape, 0xD2511F53, tl.uint32)
        m1 = tl.full(c2.shape, 0xCD9E8D57, tl.uint32)
        hi0 = tl.umulhi(m0, c0)
        lo0 = m0 * c0
        hi1 = tl.umulhi(m1, c2)
        lo1 = m1 * c2
        c0 = hi1 ^ c1 ^ k0
        c1 = lo1
        c2 = hi0 ^ c3 ^ k1
        c3 = lo0
    return c0, c1, c2, c3


@triton.jit
def _log_unit(u):
    """ln u for float32 u in (0, 1]; the polynomial of reference.gaussian_augment._log_unit."""
    bits = u.to(tl.int32, bitcast=True)
    e = (bits >> 23) - 127
    f = ((bits & 0x7FFFFF) | 0x3F800000).to(tl.float32, bitcast=True)
    big = f > 1.4142135381698608
    f = tl.where(big, _mul(f, 0.5), f)
    e = tl.where(big, e + 1, e)
    t = _sub(f, 1.0)
    p = _add(_mul(t, -0.07634492963552475), 0.12761574983596802)
    p = _add(_mul(p, t), -0.13160182535648346)
    p = _add(_mul(p, t), 0.14201758801937103)
    p = _add(_mul(p, t), -0.16623356938362122)
    p = _add(_mul(p, t), 0.20001226663589478)
    p = _add(_mul(p, t), -0.2500081956386566)
    p = _add(_mul(p, t), 0.3333333134651184)
    # t + t * t * (t * p - 0.5) + e * ln 2, left to right
    tail = _mul(_mul(t, t), _sub(_mul(t, p), 0.5))
    return _add(_add(t, tail), _mul(e.to(tl.float32), 0.6931471824645996))


@triton.jit
def _box_muller(radius_word, angle_word):
    """(r cos theta, r sin theta) from two uint32 words, as reference.gaussian_augment.box_muller."""
    u = _mul(((radius_word >> 8).to(tl.int32) + 1).to(tl.float32), 5.9604644775390625e-08)
    radius = tl.sqrt_rn(_mul(_log_unit(u), -2.0))
    k = (angle_word >> 8).to(tl.int32)
    quadrant = (k + (1 << 21)) >> 22
    x = _mul((k - (quadrant << 22)).to(tl.float32), 3.7450702927776729e-07)
    x2 = _mul(x, x)
    # sin x = x + x * x2 * S(x2), cos x = 1 + x2 * (x2 * C(x2) - 0.5), S and C in Horner order
    s = _add(_mul(_add(_mul(x2, -0.0001951528392964974), 0.00833216030150652), x2), -0.16666655242443085)
    sin_x = _add(x, _mul(_mul(x, x2), s))
    c = _add(_mul(_add(_mul(x2, 2.44331567955669e-05), -0.0013887316454201937), x2), 0.04166664555668831)
    cos_x = _add(_mul(x2, _sub(_mul(x2, c), 0.5)), 1.0)
    odd = (quadrant & 1) != 0
    cos_base = tl.where(odd, sin_x, cos_x)
    sin_base = tl.where(odd, cos_x, sin_x)
    # Negated as x * -1, which is -x for zeros too: Triton 3.6 compiles -x to 0 - x, +0 where -x is -0.
    cos_t = tl.where(((quadrant + 1) & 2) != 0, _mul(cos_base, -1.0), cos_base)
    sin_t = tl.where((quadrant & 2) != 0, _mul(sin_base, -1.0), sin_base)
    return _mul(radius, cos_t), _mul(radius, sin_t)


# Integer arguments are not specialised (on divisibility by 16, or on being 1): one compiled kernel per dtype pair.
@triton.jit
def _row_count(copies, include_original):
    """Output rows per input sample, in 64 bits: copies (up to 2**31 - 1, passed as int32) + include_original."""
    return copies.to(tl.int64) + include_original


@triton.jit(
    do_not_specialize=[
        "pairs",
        "features_q",
        "groups",
        "row_stride_q",
        "copies",
        "offset",
        "key_lo",
        "key_hi",
        "include_original",
        "noise",
    ]
)
def _augment_kernel(
    x_ptr,
    out_ptr,
    params_ptr,  # [sigma, clip_min, clip_max] in the math type
    pairs,  # batch * groups
    features_q,  # features // VEC
    groups,
    row_stride_q,  # batch * features // VEC
    copies,
    offset,
    key_lo,
    key_hi,
    include_original,  # 0 or 1
    noise,  # 0 when sigma = 0: no noise to draw
    UINT8: tl.constexpr,
    VEC: tl.constexpr,  # 4 when features % 4 == 0 (whole groups: vector loads and stores), else 1
    BLOCK: tl.constexpr,
):
    # In 64 bits (Triton passes ints below 2**31 as int32), written so that the compiler sees the divisibility.
    features = features_q.to(tl.int64) * VEC
    row_stride = row_stride_q.to(tl.int64) * VEC
    pair = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    b = pair // groups
    g = pair - b * groups
    f = 4 * g[:, None] + tl.arange(0, 4)[None, :]
    mask = (pair < pairs)[:, None] & (f < features)
    sigma = tl.load(params_ptr)
    low = tl.load(params_ptr + 1)
    high = tl.load(params_ptr + 2)
    x = tl.load(x_ptr + b[:, None] * features + f, mask=mask, other=0)
    v = tl.div_rn(x.to(tl.float32), 255.0) if UINT8 else x.to(sigma.dtype)
    sample = offset + b
    sample_lo = (sample & 0xFFFFFFFF).to(tl.uint32)
    sample_hi = (sample >> 32).to(tl.uint32)
    group = g.to(tl.uint32)
    k0 = key_lo.to(tl.uint32)
    k1 = key_hi.to(tl.uint32)
    lane = tl.arange(0, 4)[None, :]
    rows = _row_count(copies, include_original)
    base = b[:, None] * features + f
    r = tl.program_id(1).to(tl.int64)  # this program's rows: r, r + num_programs(1), ...
    for _ in range(tl.program_id(1), rows, tl.num_programs(1)):
        copy = r - include_original
        y = v
        if (copy >= 0) & (noise != 0):
            c1 = tl.zeros_like(group) + copy.to(tl.uint32)
            w0, w1, w2, w3 = _philox(group, c1, sample_lo, sample_hi, k0, k1)
            z0, z1 = _box_muller(w0, w1)
            z2, z3 = _box_muller(w2, w3)
            z = tl.where(
                lane == 0,
                z0[:, None],
                tl.where(lane == 1, z1[:, None], tl.where(lane == 2, z2[:, None], z3[:, None])),
            )
            y = _add(v, _mul(sigma, z.to(sigma.dtype)))
        y = tl.where(y < low, low, y)
        y = tl.where(y > high, high, y)
        if (sigma.dtype == tl.float64) & (out_ptr.dtype.element_ty != tl.float64):
            y = y.to(tl.float32)  # round through float32, as torch and the C++ kernels do
        if BFLOAT16_BY_BITS and (out_ptr.dtype.element_ty == tl.bfloat16):
            out = _to_bfloat16(y.to(tl.float32))
        else:
            out = y.to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + r * row_stride + base, out, mask=mask)
        r += tl.num_programs(1)


@triton_op("nemesis_fast::gaussian_augment_triton", mutates_args=())
def gaussian_augment_triton(
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
    out = empty_output(x, copies, sigma, clip_min, clip_max, include_original, offset, out_dtype)
    if out.numel() == 0:
        return out
    x = x.contiguous()
    batch = x.shape[0]
    features = math.prod(x.shape[1:])
    groups = (features + 3) // 4
    vec = 4 if features % 4 == 0 else 1
    math_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    low = -math.inf if clip_min is None else clip_min
    high = math.inf if clip_max is None else clip_max
    # Filled on the device: a host tensor copied over would synchronise every call (and break graph capture).
    params = torch.full((3,), sigma, dtype=math_dtype, device=x.device)
    params[1:2].fill_(low)
    params[2:3].fill_(high)
    key_lo, key_hi = seed_key(seed)
    programs = triton.cdiv(batch * groups, BLOCK)
    rows = copies + int(include_original)
    split = max(1, min(rows, 65535, triton.cdiv(TARGET_PROGRAMS, programs)))
    launch(
        _augment_kernel,
        (programs, split),
        x,
        out,
        params,
        batch * groups,
        features // vec,
        groups,
        batch * features // vec,
        copies,
        offset,
        key_lo,
        key_hi,
        int(include_original),
        int(sigma != 0),
        UINT8=x.dtype == torch.uint8,
        VEC=vec,
        BLOCK=BLOCK,
        **LAUNCH_OPTIONS,
    )
    return out
