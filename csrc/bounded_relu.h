// Scalar math and argument checks of bounded_relu, shared by the CPU and CUDA kernels.
#pragma once

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/TensorIterator.h>
#include <c10/macros/Macros.h>

#include "checks.h"

namespace nemesis_fast::bounded_relu {

// The threshold as the kernels use it: t rounded to the element type, widened to the math type.
template <typename scalar_t>
inline at::opmath_type<scalar_t> rounded_threshold(double t) {
  return static_cast<at::opmath_type<scalar_t>>(static_cast<scalar_t>(t));
}

// t a finite number > 0 that stays > 0 once rounded to `type` (1e-30 is 0 in float16): with a threshold of 0 the
// 16-bit gradient tests would wrap around and pass every nonzero element.
inline void check_threshold(double t, at::ScalarType type) {
  check_positive_finite(t, "t");
  bool positive = true;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, type, "bounded_relu_check_threshold",
                                  [&] { positive = rounded_threshold<scalar_t>(t) > 0; });
  TORCH_CHECK_VALUE(positive, "nemesis_fast: t=", t, " rounds to 0 in ", type, "; use a larger t");
}

// NaN fails both comparisons and propagates.
template <typename T>
C10_HOST_DEVICE inline T forward(T x, T t) {
  const T r = x < T(0) ? T(0) : x;
  return r > t ? t : r;
}

// Where the gradient flows: 0 < out < t, the same set as 0 < x < t.
template <typename T>
C10_HOST_DEVICE inline bool passes_gradient(T out, T t) {
  return out > T(0) && out < t;
}

inline at::TensorIterator forward_iterator(const at::Tensor& x, double t, at::Tensor& out) {
  check_float_tensor(x, "x");
  check_threshold(t, x.scalar_type());
  out = at::empty_like(x);
  return at::TensorIteratorConfig().add_output(out).add_const_input(x).build();
}

inline at::TensorIterator backward_iterator(const at::Tensor& grad, const at::Tensor& out, double t,
                                            at::Tensor& grad_in) {
  check_float_tensor(out, "out");
  check_same_dtype_device(grad, "grad", out, "out");
  check_same_shape(grad, "grad", out, "out");
  check_threshold(t, out.scalar_type());
  grad_in = at::empty_like(out);
  return at::TensorIteratorConfig().add_output(grad_in).add_const_input(grad).add_const_input(out).build();
}

// The masked pair saves a bit-packed mask instead of the output: bit j of byte k is 1 where element 8k + j of the
// output, in memory order, passes the gradient (0 < x < t); the bits past the last element are 0.
inline int64_t mask_bytes(int64_t n) {
  return n / 8 + (n % 8 != 0);
}

// x itself when it is gap-free in some dimension order (the output then shares its layout and memory order),
// else a contiguous copy of it.
inline at::Tensor masked_forward_input(const at::Tensor& x, double t) {
  check_float_tensor(x, "x");
  check_threshold(t, x.scalar_type());
  return x.is_non_overlapping_and_dense() ? x : x.contiguous();
}

// The backward reads grad in memory order, so grad must be gap-free: the mask's bits follow that order, which is
// the output's when grad has the output's strides.
inline at::Tensor masked_backward_mask(const at::Tensor& grad, const at::Tensor& mask) {
  check_float_tensor(grad, "grad");
  TORCH_CHECK_VALUE(grad.is_non_overlapping_and_dense(), "nemesis_fast: grad must be dense (gap-free and "
                    "non-overlapping, with the strides of the forward's output, whose memory order the mask "
                    "follows); got shape ", grad.sizes(), " and strides ", grad.strides());
  TORCH_CHECK_TYPE(mask.scalar_type() == at::kByte, "nemesis_fast: mask must be a uint8 tensor, got ",
                   mask.scalar_type());
  TORCH_CHECK_VALUE(mask.device() == grad.device(), "nemesis_fast: mask and grad must be on the same device, got ",
                    mask.device(), " and ", grad.device());
  const int64_t expected = mask_bytes(grad.numel());
  TORCH_CHECK_VALUE(mask.dim() == 1 && mask.numel() == expected, "nemesis_fast: mask must be 1-D with ceil(",
                    grad.numel(), " / 8) = ", expected, " bytes (one bit per element of grad), got shape ",
                    mask.sizes());
  return mask.contiguous();
}

}  // namespace nemesis_fast::bounded_relu
