// Argument checks shared by every kernel. They raise ValueError / TypeError in Python, naming the argument,
// so that calling torch.ops.nemesis_fast.* directly is as safe as calling the public API.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <cmath>

namespace nemesis_fast {

inline bool is_supported_float(at::ScalarType type) {
  return type == at::kFloat || type == at::kDouble || type == at::kHalf || type == at::kBFloat16;
}

inline void check_float_tensor(const at::Tensor& x, const char* name) {
  TORCH_CHECK_TYPE(is_supported_float(x.scalar_type()), "nemesis_fast: ", name,
                   " must be a float16, bfloat16, float32 or float64 tensor, got ", x.scalar_type());
}

inline void check_positive_finite(double value, const char* name) {
  TORCH_CHECK_VALUE(std::isfinite(value) && value > 0, "nemesis_fast: ", name,
                    " must be a finite number > 0, got ", value);
}

inline void check_same_shape(const at::Tensor& a, const char* a_name, const at::Tensor& b, const char* b_name) {
  TORCH_CHECK_VALUE(a.sizes() == b.sizes(), "nemesis_fast: ", a_name, " and ", b_name,
                    " must have the same shape, got ", a.sizes(), " and ", b.sizes());
}

inline void check_same_dtype_device(const at::Tensor& a, const char* a_name, const at::Tensor& b,
                                    const char* b_name) {
  TORCH_CHECK_TYPE(a.scalar_type() == b.scalar_type(), "nemesis_fast: ", a_name, " and ", b_name,
                   " must have the same dtype, got ", a.scalar_type(), " and ", b.scalar_type());
  TORCH_CHECK_VALUE(a.device() == b.device(), "nemesis_fast: ", a_name, " and ", b_name,
                    " must be on the same device, got ", a.device(), " and ", b.device());
}

}  // namespace nemesis_fast
