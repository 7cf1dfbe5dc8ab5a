// CPU kernels of bounded_relu. Dense tensors (contiguous or any other gap-free layout, which the output shares)
// run as flat loops that the compiler vectorises, cloned for AVX-512 and AVX2 and chosen at load time; other
// layouts go through a strided TensorIterator loop. Both are multi-threaded (at::parallel_for).
//
// float16 and bfloat16 are clamped on their bit patterns, with no conversion to float: both formats are
// sign-magnitude, so among non-negative values the unsigned order of the bits is the order of the values.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/native/cpu/Loops.h>
#include <c10/util/bit_cast.h>
#include <torch/library.h>

#include <cstdint>

#include "bounded_relu.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NEMESIS_FAST_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NEMESIS_FAST_CPU_CLONES
#endif

namespace nemesis_fast::bounded_relu {
namespace {

constexpr int64_t kGrain = 1 << 15;

// The type each element is computed in, and (for the 16-bit formats) the bit pattern of +infinity.
template <typename scalar_t>
struct Repr {
  using type = scalar_t;
  static constexpr scalar_t kInf = scalar_t(0);  // unused for float and double
};
template <>
struct Repr<c10::Half> {
  using type = uint16_t;
  static constexpr uint16_t kInf = 0x7C00;
};
template <>
struct Repr<c10::BFloat16> {
  using type = uint16_t;
  static constexpr uint16_t kInf = 0x7F80;
};

template <typename T>
inline T forward_element(T x, T top, T /*inf*/) {
  return forward(x, top);
}
inline uint16_t forward_element(uint16_t bits, uint16_t top, uint16_t inf) {
  const uint16_t magnitude = bits & 0x7FFF;
  const uint16_t negative = magnitude ? uint16_t(0) : bits;  // below zero -> +0; -0 stays
  const uint16_t clamped = (bits & 0x8000) ? negative : (bits > top ? top : bits);
  return magnitude > inf ? bits : clamped;  // NaN passes through
}

template <typename T>
inline bool passes_element(T out, T top) {
  return passes_gradient(out, top);
}
inline bool passes_element(uint16_t out, uint16_t top) {
  // 0 < out < top in one unsigned comparison (0 wraps to 0xFFFF); negative values, -0 and NaN are >= top.
  return uint16_t(out - 1) < uint16_t(top - 1);
}

template <typename T>
inline void forward_span(const T* __restrict x, T* __restrict out, int64_t n, T top, T inf) {
  for (int64_t i = 0; i < n; ++i) out[i] = forward_element(x[i], top, inf);
}

template <typename T>
inline void backward_span(const T* __restrict grad, const T* __restrict out, T* __restrict grad_in, int64_t n,
                          T top) {
  for (int64_t i = 0; i < n; ++i) {
    const T g = grad[i];  // loaded unconditionally, so that the select vectorises
    grad_in[i] = passes_element(out[i], top) ? g : T(0);
  }
}

// Non-template entry points, so that the compiler can clone each for several instruction sets.
NEMESIS_FAST_CPU_CLONES void forward_flat(const float* x, float* out, int64_t n, float top, float inf) {
  forward_span(x, out, n, top, inf);
}
NEMESIS_FAST_CPU_CLONES void forward_flat(const double* x, double* out, int64_t n, double top, double inf) {
  forward_span(x, out, n, top, inf);
}
NEMESIS_FAST_CPU_CLONES void forward_flat(const uint16_t* x, uint16_t* out, int64_t n, uint16_t top, uint16_t inf) {
  forward_span(x, out, n, top, inf);
}
NEMESIS_FAST_CPU_CLONES void backward_flat(const float* g, const float* o, float* gi, int64_t n, float top) {
  backward_span(g, o, gi, n, top);
}
NEMESIS_FAST_CPU_CLONES void backward_flat(const double* g, const double* o, double* gi, int64_t n, double top) {
  backward_span(g, o, gi, n, top);
}
NEMESIS_FAST_CPU_CLONES void backward_flat(const uint16_t* g, const uint16_t* o, uint16_t* gi, int64_t n,
                                           uint16_t top) {
  backward_span(g, o, gi, n, top);
}

// Whether all tensors are gap-free and share one layout, so that element i sits at the same offset in each.
bool same_dense_layout(std::initializer_list<const at::Tensor*> tensors) {
  const at::Tensor& first = **tensors.begin();
  if (!first.is_non_overlapping_and_dense()) return false;
  for (const at::Tensor* t : tensors) {
    if (t->strides() != first.strides()) return false;
  }
  return true;
}

template <typename scalar_t>
typename Repr<scalar_t>::type threshold_repr(double t) {
  return c10::bit_cast<typename Repr<scalar_t>::type>(static_cast<scalar_t>(rounded_threshold<scalar_t>(t)));
}

template <typename scalar_t>
void forward_loop(const at::Tensor& x, at::Tensor& out, at::TensorIterator& iter, double t) {
  using R = typename Repr<scalar_t>::type;
  const R top = threshold_repr<scalar_t>(t);
  const R inf = Repr<scalar_t>::kInf;
  if (same_dense_layout({&x, &out})) {
    const R* src = reinterpret_cast<const R*>(x.const_data_ptr<scalar_t>());
    R* dst = reinterpret_cast<R*>(out.mutable_data_ptr<scalar_t>());
    at::parallel_for(0, x.numel(), kGrain, [=](int64_t begin, int64_t end) {
      forward_flat(src + begin, dst + begin, end - begin, top, inf);
    });
    return;
  }
  at::native::cpu_kernel(iter, [top, inf](scalar_t v) -> scalar_t {
    return c10::bit_cast<scalar_t>(forward_element(c10::bit_cast<R>(v), top, inf));
  });
}

template <typename scalar_t>
void backward_loop(const at::Tensor& grad, const at::Tensor& out, at::Tensor& grad_in, at::TensorIterator& iter,
                   double t) {
  using R = typename Repr<scalar_t>::type;
  const R top = threshold_repr<scalar_t>(t);
  if (same_dense_layout({&out, &grad, &grad_in})) {
    const R* g = reinterpret_cast<const R*>(grad.const_data_ptr<scalar_t>());
    const R* o = reinterpret_cast<const R*>(out.const_data_ptr<scalar_t>());
    R* gi = reinterpret_cast<R*>(grad_in.mutable_data_ptr<scalar_t>());
    at::parallel_for(0, out.numel(), kGrain, [=](int64_t begin, int64_t end) {
      backward_flat(g + begin, o + begin, gi + begin, end - begin, top);
    });
    return;
  }
  at::native::cpu_kernel(iter, [top](scalar_t g, scalar_t o) -> scalar_t {
    return passes_element(c10::bit_cast<R>(o), top) ? g : scalar_t(0);
  });
}

at::Tensor forward_cpu(const at::Tensor& x, double t) {
  at::Tensor out;
  auto iter = forward_iterator(x, t, out);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bounded_relu_cpu",
                                  [&] { forward_loop<scalar_t>(x, out, iter, t); });
  return out;
}

at::Tensor backward_cpu(const at::Tensor& grad, const at::Tensor& out, double t) {
  at::Tensor grad_in;
  auto iter = backward_iterator(grad, out, t, grad_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "bounded_relu_backward_cpu",
                                  [&] { backward_loop<scalar_t>(grad, out, grad_in, iter, t); });
  return grad_in;
}

}  // namespace

TORCH_LIBRARY_IMPL(nemesis_fast, CPU, m) {
  m.impl("bounded_relu", &forward_cpu);
  m.impl("bounded_relu_backward", &backward_cpu);
}

}  // namespace nemesis_fast::bounded_relu
