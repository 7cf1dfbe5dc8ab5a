// Argument checks, output allocation and per-element math of gaussian_augment, shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <type_traits>
#include <vector>

#include "checks.h"
#include "philox.h"

namespace nemesis_fast::gaussian_augment {

// What a kernel needs to know, after the checks.
struct Plan {
  int64_t batch = 0;
  int64_t features = 0;  // elements per sample
  int64_t groups = 0;    // ceil(features / 4): one Philox call each
  int64_t copies = 0;
  bool include_original = false;
  int64_t rows = 0;  // samples of output per input sample: copies + include_original
  double sigma = 0;
  double clip_min = -std::numeric_limits<double>::infinity();  // -inf / +inf when unbounded
  double clip_max = std::numeric_limits<double>::infinity();
  uint32_t key_lo = 0, key_hi = 0;
  uint64_t offset = 0;
  at::ScalarType out_dtype = at::kFloat;
};

inline bool is_supported_input(at::ScalarType type) {
  return is_supported_float(type) || type == at::kByte;
}

inline double largest_finite(at::ScalarType type) {
  switch (type) {
    case at::kHalf:
      return 65504.0;
    case at::kBFloat16:
      return 3.3895313892515355e38;
    case at::kFloat:
      return std::numeric_limits<float>::max();
    default:
      return std::numeric_limits<double>::max();
  }
}

inline Plan make_plan(const at::Tensor& x, int64_t copies, double sigma, std::optional<double> clip_min,
                      std::optional<double> clip_max, bool include_original, int64_t seed, int64_t offset,
                      std::optional<at::ScalarType> out_dtype) {
  TORCH_CHECK_TYPE(is_supported_input(x.scalar_type()), "nemesis_fast: x must be a float16, bfloat16, float32, ",
                   "float64 or uint8 tensor, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() >= 1, "nemesis_fast: x must have at least 1 dimension (the batch)");
  TORCH_CHECK_VALUE(copies >= 0 && copies <= std::numeric_limits<int32_t>::max(),
                    "nemesis_fast: copies must be in [0, 2^31 - 1], got ", copies);
  constexpr double kFloatOverflow = 3.4028235677973366e38;  // 2^128 - 2^103 rounds to infinity in float32
  TORCH_CHECK_VALUE(std::isfinite(sigma) && sigma >= 0 && sigma < kFloatOverflow,
                    "nemesis_fast: sigma must be a finite number >= 0, got ", sigma);
  Plan plan;
  if (clip_min.has_value()) {
    TORCH_CHECK_VALUE(std::isfinite(*clip_min), "nemesis_fast: clip_min must be finite, got ", *clip_min);
    plan.clip_min = *clip_min;
  }
  if (clip_max.has_value()) {
    TORCH_CHECK_VALUE(std::isfinite(*clip_max), "nemesis_fast: clip_max must be finite, got ", *clip_max);
    plan.clip_max = *clip_max;
  }
  TORCH_CHECK_VALUE(plan.clip_min <= plan.clip_max, "nemesis_fast: clip_min must be <= clip_max, got ",
                    plan.clip_min, " > ", plan.clip_max);
  plan.batch = x.size(0);
  TORCH_CHECK_VALUE(offset >= 0 && offset <= std::numeric_limits<int64_t>::max() - plan.batch,
                    "nemesis_fast: offset must be >= 0 and offset + batch must fit in int64, got ", offset);
  plan.out_dtype = out_dtype.value_or(x.scalar_type() == at::kByte ? at::kFloat : x.scalar_type());
  TORCH_CHECK_TYPE(is_supported_float(plan.out_dtype), "nemesis_fast: out_dtype=", plan.out_dtype,
                   " cannot hold noisy values; use float16, bfloat16, float32 or float64");
  const double biggest = largest_finite(plan.out_dtype);
  TORCH_CHECK_VALUE(!clip_min.has_value() || std::abs(*clip_min) <= biggest, "nemesis_fast: out_dtype=",
                    plan.out_dtype, " cannot hold clip_min=", *clip_min);
  TORCH_CHECK_VALUE(!clip_max.has_value() || std::abs(*clip_max) <= biggest, "nemesis_fast: out_dtype=",
                    plan.out_dtype, " cannot hold clip_max=", *clip_max);
  plan.features = c10::multiply_integers(x.sizes().slice(1));
  plan.groups = (plan.features + 3) / 4;
  TORCH_CHECK_VALUE(plan.groups <= std::numeric_limits<uint32_t>::max(),
                    "nemesis_fast: x has too many elements per sample (", plan.features, "); the limit is 2^34");
  plan.copies = copies;
  plan.include_original = include_original;
  plan.rows = copies + (include_original ? 1 : 0);
  TORCH_CHECK_VALUE(plan.batch == 0 || plan.rows <= std::numeric_limits<int64_t>::max() / plan.batch,
                    "nemesis_fast: the output's (copies + include_original) * B = ", plan.rows, " * ", plan.batch,
                    " rows do not fit in int64");
  plan.sigma = sigma;
  const uint64_t key = static_cast<uint64_t>(seed);
  plan.key_lo = static_cast<uint32_t>(key);
  plan.key_hi = static_cast<uint32_t>(key >> 32);
  plan.offset = static_cast<uint64_t>(offset);
  return plan;
}

// The output: ((copies + include_original) * B, *x.shape[1:]), contiguous, on x's device.
inline at::Tensor make_output(const at::Tensor& x, const Plan& plan) {
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes[0] = plan.rows * plan.batch;
  return at::empty(sizes, x.options().dtype(plan.out_dtype).memory_format(at::MemoryFormat::Contiguous));
}

// The op around a device's kernel: checks, output, and Launcher::launch<in_t, out_t>(x, out, plan) for the
// input and output element types, under a Launcher::Guard of x's device.
template <typename Launcher>
at::Tensor gaussian_augment_op(const at::Tensor& x_in, int64_t copies, double sigma, std::optional<double> clip_min,
                               std::optional<double> clip_max, bool include_original, int64_t seed, int64_t offset,
                               std::optional<at::ScalarType> out_dtype) {
  const typename Launcher::Guard guard(x_in.device());
  const Plan plan = make_plan(x_in, copies, sigma, clip_min, clip_max, include_original, seed, offset, out_dtype);
  at::Tensor out = make_output(x_in, plan);
  if (out.numel() == 0) return out;
  const at::Tensor x = x_in.contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND3(at::kHalf, at::kBFloat16, at::kByte, x.scalar_type(), "gaussian_augment", [&] {
    using in_t = scalar_t;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, plan.out_dtype, "gaussian_augment_out",
                                    [&] { Launcher::template launch<in_t, scalar_t>(x, out, plan); });
  });
  return out;
}

// The type values are computed in: float64 for float64 input, float32 otherwise.
template <typename in_t>
using math_type = std::conditional_t<std::is_same_v<in_t, double>, double, float>;

// An input element in the math type; uint8 is scaled to [0, 1].
template <typename math_t, typename in_t>
C10_HOST_DEVICE inline math_t load_value(in_t v) {
  if constexpr (std::is_same_v<in_t, uint8_t>) {
    return philox::rn::div(static_cast<math_t>(v), math_t(255));
  } else {
    return static_cast<math_t>(v);
  }
}

// v + sigma z, rounded after the product and after the sum, as the reference does.
template <typename math_t>
C10_HOST_DEVICE inline math_t add_noise(math_t v, math_t sigma, float z) {
  return philox::rn::add(v, philox::rn::mul(sigma, static_cast<math_t>(z)));
}

// clip(v) with NaN passing through (it fails both comparisons).
template <typename math_t>
C10_HOST_DEVICE inline math_t clip(math_t v, math_t low, math_t high) {
  const math_t r = v < low ? low : v;
  return r > high ? high : r;
}

}  // namespace nemesis_fast::gaussian_augment
