// CUDA kernels of bounded_relu: ATen's gpu_kernel over a TensorIterator (vectorised loads for contiguous
// data, any strides otherwise, 64-bit indexing by splitting), launched on the current stream.
//
// The masked pair has its own kernels over dense memory. A warp takes spans of 256 elements (32 mask bytes) in a
// grid-stride loop with 64-bit indices, and reads each span as rows of 16-byte vectors, one a lane, lane after lane
// (2 rows of float32, 1 of 16-bit types, 4 of float64): every load and store of a warp is one contiguous 512
// bytes, as ATen's vectorised kernels do it. (When each thread owned one mask byte and its 8 elements, the two
// 16-byte accesses of a float32 thread lay 32 bytes apart across the warp, each instruction touching half of
// twice as many sectors.) The lanes whose vectors make up one mask byte (2 for float32, 1 for 16-bit types, 4
// for float64) join their bits by shuffles, and the first of them writes the byte.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <ATen/native/cuda/Loops.cuh>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "bounded_relu.h"

namespace nemesis_fast::bounded_relu {
namespace {

constexpr int kThreads = 256;

// A span of kSpan elements, read as kRows rows of one kVec-element (16-byte) vector per lane.
constexpr int kSpan = 256;

template <typename scalar_t>
struct Span {
  static constexpr int kVec = 16 / sizeof(scalar_t);
  static constexpr int kRows = kSpan / (32 * kVec);
  static constexpr int kLanesPerByte = 8 / kVec;  // the lanes whose vectors make up one mask byte
};

template <typename scalar_t>
struct alignas(16) Vec16 {
  scalar_t v[Span<scalar_t>::kVec];
};

// The `count` (<= kVec) elements from src, one 16-byte load when all kVec are there and the data is aligned; the
// others are 0.
template <typename scalar_t, bool kVectorized>
__device__ __forceinline__ Vec16<scalar_t> load_vec(const scalar_t* __restrict__ src, int64_t count) {
  constexpr int kVec = Span<scalar_t>::kVec;
  if (kVectorized && count == kVec) return *reinterpret_cast<const Vec16<scalar_t>*>(src);
  Vec16<scalar_t> out;
#pragma unroll
  for (int j = 0; j < kVec; ++j) out.v[j] = j < count ? src[j] : scalar_t(0);
  return out;
}

template <typename scalar_t, bool kVectorized>
__device__ __forceinline__ void store_vec(scalar_t* __restrict__ dst, int64_t count, const Vec16<scalar_t>& src) {
  constexpr int kVec = Span<scalar_t>::kVec;
  if (kVectorized && count == kVec) {
    *reinterpret_cast<Vec16<scalar_t>*>(dst) = src;
    return;
  }
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    if (j < count) dst[j] = src.v[j];
  }
}

// The warp's first span and the warps of the grid (blocks of kThreads threads), for the grid-stride loop.
__device__ __forceinline__ int64_t first_span() {
  return (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) / 32;
}
__device__ __forceinline__ int64_t warps_in_grid() { return static_cast<int64_t>(gridDim.x) * blockDim.x / 32; }

// Byte k of the mask covers elements 8k..8k+7; the last byte may cover fewer (its other bits are 0).
template <typename scalar_t, bool kVectorized>
__global__ void __launch_bounds__(kThreads)
    forward_masked_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, uint8_t* __restrict__ mask,
                          int64_t n, at::opmath_type<scalar_t> top) {
  using opmath_t = at::opmath_type<scalar_t>;
  using S = Span<scalar_t>;
  const int lane = threadIdx.x % 32;
  const int64_t spans = (n + kSpan - 1) / kSpan;
  for (int64_t span = first_span(); span < spans; span += warps_in_grid()) {  // uniform across the warp
#pragma unroll
    for (int row = 0; row < S::kRows; ++row) {
      const int64_t first = span * kSpan + (row * 32 + lane) * S::kVec;  // the lane's first element
      const int64_t count = first < n ? (n - first < S::kVec ? n - first : S::kVec) : 0;
      const Vec16<scalar_t> v = load_vec<scalar_t, kVectorized>(x + first, count);  // past the end: 0, no bit
      Vec16<scalar_t> y;
      uint32_t bits = 0;
#pragma unroll
      for (int j = 0; j < S::kVec; ++j) {
        const opmath_t value = static_cast<opmath_t>(v.v[j]);
        y.v[j] = static_cast<scalar_t>(forward(value, top));
        bits |= static_cast<uint32_t>(passes_gradient(value, top)) << j;
      }
      store_vec<scalar_t, kVectorized>(out + first, count, y);
      bits <<= first % 8;  // the lane's place in its byte
#pragma unroll
      for (int offset = 1; offset < S::kLanesPerByte; offset *= 2) bits |= __shfl_xor_sync(0xffffffffu, bits, offset);
      if (first % 8 == 0 && first < n) mask[first / 8] = static_cast<uint8_t>(bits);
    }
  }
}

template <typename scalar_t, bool kVectorized>
__global__ void __launch_bounds__(kThreads)
    backward_masked_kernel(const scalar_t* __restrict__ grad, const uint8_t* __restrict__ mask,
                           scalar_t* __restrict__ grad_in, int64_t n) {
  using S = Span<scalar_t>;
  const int lane = threadIdx.x % 32;
  const int64_t spans = (n + kSpan - 1) / kSpan;
  for (int64_t span = first_span(); span < spans; span += warps_in_grid()) {
#pragma unroll
    for (int row = 0; row < S::kRows; ++row) {
      const int64_t first = span * kSpan + (row * 32 + lane) * S::kVec;
      if (first >= n) continue;
      const int64_t count = n - first < S::kVec ? n - first : S::kVec;
      const uint32_t bits = static_cast<uint32_t>(mask[first / 8]) >> (first % 8);
      const Vec16<scalar_t> g = load_vec<scalar_t, kVectorized>(grad + first, count);
      Vec16<scalar_t> y;
#pragma unroll
      for (int j = 0; j < S::kVec; ++j) y.v[j] = ((bits >> j) & 1u) ? g.v[j] : scalar_t(0);
      store_vec<scalar_t, kVectorized>(grad_in + first, count, y);
    }
  }
}

bool aligned16(const void* a, const void* b) {
  return reinterpret_cast<uintptr_t>(a) % 16 == 0 && reinterpret_cast<uintptr_t>(b) % 16 == 0;
}

// Enough blocks to fill the GPU a few times over; the grid-stride loops cover the rest. A block's warps take
// kThreads / 32 spans of 32 mask bytes at a time: kThreads bytes.
unsigned int masked_blocks(int64_t bytes) {
  const int64_t wanted = (bytes + kThreads - 1) / kThreads;
  const int64_t most = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return static_cast<unsigned int>(std::max<int64_t>(1, std::min(wanted, most)));
}

at::Tensor forward_cuda(const at::Tensor& x, double t) {
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out;
  auto iter = forward_iterator(x, t, out);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bounded_relu_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const opmath_t top = rounded_threshold<scalar_t>(t);
    at::native::gpu_kernel(iter, [top] GPU_LAMBDA(scalar_t v) -> scalar_t {
      return static_cast<scalar_t>(forward(static_cast<opmath_t>(v), top));
    });
  });
  return out;
}

at::Tensor backward_cuda(const at::Tensor& grad, const at::Tensor& out, double t) {
  const c10::cuda::CUDAGuard guard(out.device());
  at::Tensor grad_in;
  auto iter = backward_iterator(grad, out, t, grad_in);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "bounded_relu_backward_cuda", [&] {
    using opmath_t = at::opmath_type<scalar_t>;
    const opmath_t top = rounded_threshold<scalar_t>(t);
    at::native::gpu_kernel(iter, [top] GPU_LAMBDA(scalar_t g, scalar_t o) -> scalar_t {
      return passes_gradient(static_cast<opmath_t>(o), top) ? g : scalar_t(0);
    });
  });
  return grad_in;
}

std::tuple<at::Tensor, at::Tensor> forward_masked_cuda(const at::Tensor& x_in, double t) {
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = masked_forward_input(x_in, t);
  at::Tensor out = at::empty_like(x);  // x is dense: out gets its strides, so both share one memory order
  const int64_t n = x.numel();
  at::Tensor mask = at::empty({mask_bytes(n)}, x.options().dtype(at::kByte));
  if (n == 0) return {out, mask};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const unsigned int blocks = masked_blocks(mask_bytes(n));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "bounded_relu_masked_cuda", [&] {
    const auto top = rounded_threshold<scalar_t>(t);
    const scalar_t* src = x.const_data_ptr<scalar_t>();
    scalar_t* dst = out.mutable_data_ptr<scalar_t>();
    uint8_t* bits = mask.mutable_data_ptr<uint8_t>();
    if (aligned16(src, dst)) {
      forward_masked_kernel<scalar_t, true><<<blocks, kThreads, 0, stream>>>(src, dst, bits, n, top);
    } else {
      forward_masked_kernel<scalar_t, false><<<blocks, kThreads, 0, stream>>>(src, dst, bits, n, top);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {out, mask};
}

at::Tensor backward_masked_cuda(const at::Tensor& grad, const at::Tensor& mask_in) {
  const c10::cuda::CUDAGuard guard(grad.device());
  const at::Tensor mask = masked_backward_mask(grad, mask_in);
  at::Tensor grad_in = at::empty_like(grad);  // grad is dense: grad_in gets its strides
  const int64_t n = grad.numel();
  if (n == 0) return grad_in;
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  const unsigned int blocks = masked_blocks(mask_bytes(n));
  const at::ScalarType dtype = grad.scalar_type();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "bounded_relu_masked_backward_cuda", [&] {
    const scalar_t* g = grad.const_data_ptr<scalar_t>();
    scalar_t* gi = grad_in.mutable_data_ptr<scalar_t>();
    const uint8_t* bits = mask.const_data_ptr<uint8_t>();
    if (aligned16(g, gi)) {
      backward_masked_kernel<scalar_t, true><<<blocks, kThreads, 0, stream>>>(g, bits, gi, n);
    } else {
      backward_masked_kernel<scalar_t, false><<<blocks, kThreads, 0, stream>>>(g, bits, gi, n);
    }
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return grad_in;
}

}  // namespace

TORCH_LIBRARY_IMPL(nemesis_fast, CUDA, m) {
  m.impl("bounded_relu", &forward_cuda);
  m.impl("bounded_relu_backward", &backward_cuda);
  m.impl("bounded_relu_masked", &forward_masked_cuda);
  m.impl("bounded_relu_masked_backward", &backward_masked_cuda);
}

}  // namespace nemesis_fast::bounded_relu
