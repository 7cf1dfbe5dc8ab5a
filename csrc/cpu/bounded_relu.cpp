// CPU kernels of bounded_relu. Dense tensors (contiguous or any other gap-free layout, which the output shares)
// run as flat loops that the compiler vectorises, cloned for AVX-512 and AVX2 and chosen at load time; other
// layouts go through a strided TensorIterator loop. Both are multi-threaded (at::parallel_for).
//
// float16 and bfloat16 are clamped on their bit patterns, with no conversion to float: both formats are
// sign-magnitude, so among non-negative values the unsigned order of the bits is the order of the values.
//
// The masked pair (bounded_relu_masked) works on dense memory and splits it on mask bytes. Its float32 and float64
// forward has explicit AVX2 loops, which turn two vector comparisons into mask bits directly (movemask) beside the
// clamp, in one pass; elsewhere (the 16-bit formats, other CPUs, the last elements) it works in tiles: a 0/1 byte
// per element beside the output, in a loop that vectorises like the plain one, then one multiplication packs each 8
// of them into a mask byte. The backward looks up the 8 lane masks of each mask byte in a 256-entry table and ANDs
// them into the bits of the gradient, so that no element is converted or compared.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/native/cpu/Loops.h>
#include <c10/util/bit_cast.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "bounded_relu.h"
#include "cpu/simd.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the mask packing below reads 8 bytes as a little-endian word"
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

// ---- The masked pair ----

constexpr int64_t kTile = 1024;  // elements per tile of the masked forward, a multiple of 8

// Whether the gradient flows through x, as 0 or 1, without a branch: NaN fails both comparisons.
template <typename T>
inline uint8_t passes_flag(T x, T top) {
  return static_cast<uint8_t>((x > T(0)) & (x < top));
}
inline uint8_t passes_flag(uint16_t bits, uint16_t top) {
  return static_cast<uint8_t>(passes_element(bits, top));  // the test holds for x's bits as for out's
}

// The low bits of the 8 bytes (each 0 or 1) of a little-endian word, byte j into bit j. The product puts byte j's
// bit on bit 8j + 56 - 7j = 56 + j; all 64 partial products land on distinct bits, so nothing carries.
inline uint8_t pack_flags(uint64_t flags) {
  return static_cast<uint8_t>((flags * 0x0102040810204080ULL) >> 56);
}

// Inlined into each function below, so that it is compiled for that function's instruction set.
template <typename T>
C10_ALWAYS_INLINE void forward_masked_span(const T* __restrict x, T* __restrict out, uint8_t* __restrict mask,
                                           int64_t n, T top, T inf) {
  alignas(64) uint8_t flags[kTile];
  for (int64_t begin = 0; begin < n; begin += kTile) {
    const int64_t len = std::min(kTile, n - begin);
    const T* xs = x + begin;
    T* os = out + begin;
    for (int64_t i = 0; i < len; ++i) {
      const T v = xs[i];
      os[i] = forward_element(v, top, inf);
      flags[i] = passes_flag(v, top);
    }
    const int64_t bytes = (len + 7) / 8;
    for (int64_t i = len; i < 8 * bytes; ++i) flags[i] = 0;  // the bits past the last element are 0
    uint8_t* m = mask + begin / 8;
    for (int64_t k = 0; k < bytes; ++k) {
      uint64_t word;
      std::memcpy(&word, flags + 8 * k, sizeof(word));
      m[k] = pack_flags(word);
    }
  }
}

NEMESIS_FAST_CPU_CLONES void forward_masked_flat(const float* x, float* out, uint8_t* mask, int64_t n, float top,
                                                 float inf) {
  forward_masked_span(x, out, mask, n, top, inf);
}
NEMESIS_FAST_CPU_CLONES void forward_masked_flat(const double* x, double* out, uint8_t* mask, int64_t n, double top,
                                                 double inf) {
  forward_masked_span(x, out, mask, n, top, inf);
}
NEMESIS_FAST_CPU_CLONES void forward_masked_flat(const uint16_t* x, uint16_t* out, uint8_t* mask, int64_t n,
                                                 uint16_t top, uint16_t inf) {
  forward_masked_span(x, out, mask, n, top, inf);
}

#ifdef NEMESIS_FAST_X86_SIMD
// One pass of clamp and mask, 8 elements and a mask byte (movemask) at a time. max(0, v) returns v when v is NaN or
// -0, and min(top, r) returns r when r is NaN or equal to top (both return their second operand then), as forward()
// does. The last elements, fewer than 8, go through the tiles. AVX2 only: the loop is bound by memory, and on the
// AVX-512 CPU it was measured on (an AMD EPYC) 512-bit vectors with mask registers were slower than this.
__attribute__((target("avx2"))) void forward_masked_avx2(const float* x, float* out, uint8_t* mask, int64_t n,
                                                         float top, float inf) {
  const __m256 zero = _mm256_setzero_ps(), t = _mm256_set1_ps(top);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    _mm256_storeu_ps(out + i, _mm256_min_ps(t, _mm256_max_ps(zero, v)));
    const __m256 passes = _mm256_and_ps(_mm256_cmp_ps(v, zero, _CMP_GT_OQ), _mm256_cmp_ps(v, t, _CMP_LT_OQ));
    mask[i / 8] = static_cast<uint8_t>(_mm256_movemask_ps(passes));
  }
  forward_masked_span(x + i, out + i, mask + i / 8, n - i, top, inf);
}
__attribute__((target("avx2"))) void forward_masked_avx2(const double* x, double* out, uint8_t* mask, int64_t n,
                                                         double top, double inf) {
  const __m256d zero = _mm256_setzero_pd(), t = _mm256_set1_pd(top);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    int bits = 0;
    for (int half = 0; half < 2; ++half) {
      const __m256d v = _mm256_loadu_pd(x + i + 4 * half);
      _mm256_storeu_pd(out + i + 4 * half, _mm256_min_pd(t, _mm256_max_pd(zero, v)));
      const __m256d passes = _mm256_and_pd(_mm256_cmp_pd(v, zero, _CMP_GT_OQ), _mm256_cmp_pd(v, t, _CMP_LT_OQ));
      bits |= _mm256_movemask_pd(passes) << (4 * half);
    }
    mask[i / 8] = static_cast<uint8_t>(bits);
  }
  forward_masked_span(x + i, out + i, mask + i / 8, n - i, top, inf);
}
#endif

// Whether this CPU runs the explicit AVX2 loops (an AVX-512 one was slower on the machines measured).
bool use_avx2() { return cpu::widest_simd() != cpu::Simd::kScalar; }

template <typename R>
using ForwardMaskedFn = void (*)(const R*, R*, uint8_t*, int64_t, R, R);

// The masked forward for elements represented as R: the explicit SIMD loop when there is one, else the tiles.
template <typename R>
ForwardMaskedFn<R> pick_forward_masked() {
#ifdef NEMESIS_FAST_X86_SIMD
  if constexpr (std::is_same_v<R, float> || std::is_same_v<R, double>) {
    if (use_avx2()) return forward_masked_avx2;
  }
#endif
  return forward_masked_flat;
}

// For each mask byte, the 8 lane masks it stands for: all ones where its bit is set, zero elsewhere.
template <typename U>
struct LaneMasks {
  U lanes[256][8];
};
template <typename U>
constexpr LaneMasks<U> make_lane_masks() {
  LaneMasks<U> table{};
  for (int byte = 0; byte < 256; ++byte) {
    for (int j = 0; j < 8; ++j) table.lanes[byte][j] = ((byte >> j) & 1) ? static_cast<U>(~U(0)) : U(0);
  }
  return table;
}
template <typename U>
alignas(64) constexpr LaneMasks<U> kLaneMasks = make_lane_masks<U>();

// grad_in = grad where the mask's bit is set, else +0, on the elements' bits (U is an unsigned type of their width).
template <typename U>
C10_ALWAYS_INLINE void backward_masked_span(const U* __restrict grad, const uint8_t* __restrict mask,
                                            U* __restrict grad_in, int64_t n) {
  const int64_t full = n / 8;
  for (int64_t k = 0; k < full; ++k) {
    const U* lanes = kLaneMasks<U>.lanes[mask[k]];
    for (int j = 0; j < 8; ++j) grad_in[8 * k + j] = grad[8 * k + j] & lanes[j];
  }
  for (int64_t i = 8 * full; i < n; ++i) grad_in[i] = grad[i] & kLaneMasks<U>.lanes[mask[full]][i - 8 * full];
}

NEMESIS_FAST_CPU_CLONES void backward_masked_flat(const uint16_t* g, const uint8_t* m, uint16_t* gi, int64_t n) {
  backward_masked_span(g, m, gi, n);
}
NEMESIS_FAST_CPU_CLONES void backward_masked_flat(const uint32_t* g, const uint8_t* m, uint32_t* gi, int64_t n) {
  backward_masked_span(g, m, gi, n);
}
NEMESIS_FAST_CPU_CLONES void backward_masked_flat(const uint64_t* g, const uint8_t* m, uint64_t* gi, int64_t n) {
  backward_masked_span(g, m, gi, n);
}

// The unsigned integer type of each element type's width.
template <size_t Bytes>
struct UnsignedOfWidth;
template <>
struct UnsignedOfWidth<2> {
  using type = uint16_t;
};
template <>
struct UnsignedOfWidth<4> {
  using type = uint32_t;
};
template <>
struct UnsignedOfWidth<8> {
  using type = uint64_t;
};

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

// Both kernels split the work on mask bytes, so that every thread writes whole bytes of the mask.
template <typename scalar_t>
void forward_masked_loop(const at::Tensor& x, at::Tensor& out, at::Tensor& mask, double t) {
  using R = typename Repr<scalar_t>::type;
  const R top = threshold_repr<scalar_t>(t);
  const R inf = Repr<scalar_t>::kInf;
  const R* src = reinterpret_cast<const R*>(x.const_data_ptr<scalar_t>());
  R* dst = reinterpret_cast<R*>(out.mutable_data_ptr<scalar_t>());
  uint8_t* bits = mask.mutable_data_ptr<uint8_t>();
  const int64_t n = x.numel();
  static const ForwardMaskedFn<R> forward_masked = pick_forward_masked<R>();
  at::parallel_for(0, mask.numel(), kGrain / 8, [=](int64_t begin, int64_t end) {
    const int64_t first = 8 * begin;
    forward_masked(src + first, dst + first, bits + begin, std::min(8 * end, n) - first, top, inf);
  });
}

template <typename scalar_t>
void backward_masked_loop(const at::Tensor& grad, const at::Tensor& mask, at::Tensor& grad_in) {
  using U = typename UnsignedOfWidth<sizeof(scalar_t)>::type;
  const U* g = reinterpret_cast<const U*>(grad.const_data_ptr<scalar_t>());
  U* gi = reinterpret_cast<U*>(grad_in.mutable_data_ptr<scalar_t>());
  const uint8_t* bits = mask.const_data_ptr<uint8_t>();
  const int64_t n = grad.numel();
  at::parallel_for(0, mask.numel(), kGrain / 8, [=](int64_t begin, int64_t end) {
    const int64_t first = 8 * begin;
    backward_masked_flat(g + first, bits + begin, gi + first, std::min(8 * end, n) - first);
  });
}

std::tuple<at::Tensor, at::Tensor> forward_masked_cpu(const at::Tensor& x_in, double t) {
  const at::Tensor x = masked_forward_input(x_in, t);
  at::Tensor out = at::empty_like(x);  // x is dense: out gets its strides, so both share one memory order
  at::Tensor mask = at::empty({mask_bytes(x.numel())}, x.options().dtype(at::kByte));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bounded_relu_masked_cpu",
                                  [&] { forward_masked_loop<scalar_t>(x, out, mask, t); });
  return {out, mask};
}

at::Tensor backward_masked_cpu(const at::Tensor& grad, const at::Tensor& mask_in) {
  const at::Tensor mask = masked_backward_mask(grad, mask_in);
  at::Tensor grad_in = at::empty_like(grad);  // grad is dense: grad_in gets its strides
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, grad.scalar_type(), "bounded_relu_masked_backward_cpu",
                                  [&] { backward_masked_loop<scalar_t>(grad, mask, grad_in); });
  return grad_in;
}

}  // namespace

TORCH_LIBRARY_IMPL(nemesis_fast, CPU, m) {
  m.impl("bounded_relu", &forward_cpu);
  m.impl("bounded_relu_backward", &backward_cpu);
  m.impl("bounded_relu_masked", &forward_masked_cpu);
  m.impl("bounded_relu_masked_backward", &backward_masked_cpu);
}

}  // namespace nemesis_fast::bounded_relu
