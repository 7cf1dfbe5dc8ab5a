// CUDA kernels of bounded_relu: ATen's gpu_kernel over a TensorIterator (vectorised loads for contiguous
// data, any strides otherwise, 64-bit indexing by splitting), launched on the current stream.
//
// The masked pair has its own kernels over dense memory: each thread owns whole mask bytes, one at a time in a
// grid-stride loop with 64-bit indices, and the 8 elements of each (16 to 64 bytes, loaded and stored as 16-byte
// vectors when the pointers allow), so that a warp reads and writes one contiguous span and 32 contiguous mask bytes.
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

// 8 elements, one mask byte's worth, as 16-byte vectors: 1 (16-bit types), 2 (float) or 4 (double) of them.
template <typename scalar_t>
struct alignas(16) Vec16 {
  static constexpr int kElements = 16 / sizeof(scalar_t);
  scalar_t v[kElements];
};

template <typename scalar_t, bool kVectorized>
__device__ inline void load8(const scalar_t* __restrict__ src, int64_t count, scalar_t (&dst)[8]) {
  if (kVectorized && count == 8) {
    constexpr int kPer = Vec16<scalar_t>::kElements;
#pragma unroll
    for (int part = 0; part < 8 / kPer; ++part) {
      const Vec16<scalar_t> chunk = reinterpret_cast<const Vec16<scalar_t>*>(src)[part];
#pragma unroll
      for (int j = 0; j < kPer; ++j) dst[part * kPer + j] = chunk.v[j];
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) dst[j] = j < count ? src[j] : scalar_t(0);
}

template <typename scalar_t, bool kVectorized>
__device__ inline void store8(scalar_t* __restrict__ dst, int64_t count, const scalar_t (&src)[8]) {
  if (kVectorized && count == 8) {
    constexpr int kPer = Vec16<scalar_t>::kElements;
#pragma unroll
    for (int part = 0; part < 8 / kPer; ++part) {
      Vec16<scalar_t> chunk;
#pragma unroll
      for (int j = 0; j < kPer; ++j) chunk.v[j] = src[part * kPer + j];
      reinterpret_cast<Vec16<scalar_t>*>(dst)[part] = chunk;
    }
    return;
  }
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    if (j < count) dst[j] = src[j];
  }
}

// Byte k of the mask covers elements 8k..8k+7; the last byte may cover fewer (its other bits are 0).
template <typename scalar_t, bool kVectorized>
__global__ void forward_masked_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out,
                                      uint8_t* __restrict__ mask, int64_t n, at::opmath_type<scalar_t> top) {
  using opmath_t = at::opmath_type<scalar_t>;
  const int64_t bytes = n / 8 + (n % 8 != 0);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < bytes; k += stride) {
    const int64_t first = 8 * k;
    const int64_t count = n - first < 8 ? n - first : 8;
    scalar_t v[8];
    load8<scalar_t, kVectorized>(x + first, count, v);  // past the end: 0, which fails the test
    scalar_t y[8];
    uint32_t bits = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const opmath_t value = static_cast<opmath_t>(v[j]);
      y[j] = static_cast<scalar_t>(forward(value, top));
      bits |= static_cast<uint32_t>(passes_gradient(value, top)) << j;
    }
    store8<scalar_t, kVectorized>(out + first, count, y);
    mask[k] = static_cast<uint8_t>(bits);
  }
}

template <typename scalar_t, bool kVectorized>
__global__ void backward_masked_kernel(const scalar_t* __restrict__ grad, const uint8_t* __restrict__ mask,
                                       scalar_t* __restrict__ grad_in, int64_t n) {
  const int64_t bytes = n / 8 + (n % 8 != 0);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t k = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; k < bytes; k += stride) {
    const int64_t first = 8 * k;
    const int64_t count = n - first < 8 ? n - first : 8;
    const uint32_t bits = mask[k];
    scalar_t g[8];
    load8<scalar_t, kVectorized>(grad + first, count, g);
    scalar_t y[8];
#pragma unroll
    for (int j = 0; j < 8; ++j) y[j] = ((bits >> j) & 1u) ? g[j] : scalar_t(0);
    store8<scalar_t, kVectorized>(grad_in + first, count, y);
  }
}

bool aligned16(const void* a, const void* b) {
  return reinterpret_cast<uintptr_t>(a) % 16 == 0 && reinterpret_cast<uintptr_t>(b) % 16 == 0;
}

// Enough blocks to fill the GPU a few times over; the grid-stride loops cover the rest.
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
