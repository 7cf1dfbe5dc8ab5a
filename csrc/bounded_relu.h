// Scalar math and argument checks of bounded_relu, shared by the CPU and CUDA kernels.
#pragma once

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
  check_positive_finite(t, "t");
  out = at::empty_like(x);
  return at::TensorIteratorConfig().add_output(out).add_const_input(x).build();
}

inline at::TensorIterator backward_iterator(const at::Tensor& grad, const at::Tensor& out, double t,
                                            at::Tensor& grad_in) {
  check_float_tensor(out, "out");
  check_same_dtype_device(grad, "grad", out, "out");
  check_same_shape(grad, "grad", out, "out");
  check_positive_finite(t, "t");
  grad_in = at::empty_like(out);
  return at::TensorIteratorConfig().add_output(grad_in).add_const_input(grad).add_const_input(out).build();
}

}  // namespace nemesis_fast::bounded_relu
