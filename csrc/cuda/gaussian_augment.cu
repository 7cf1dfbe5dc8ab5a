// CUDA kernel of gaussian_augment. One thread owns four consecutive features (one Philox group) of one sample:
// it reads them once (one vector load when aligned), then writes them to every output row of that sample, drawing
// the four normals of each noisy copy from one Philox call in registers (one vector store per row when aligned).
// Rows are split over gridDim.y only when the batch is too small to fill the GPU. 64-bit indexing, current stream.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>

#include "gaussian_augment.h"

namespace nemesis_fast::gaussian_augment {
namespace {

constexpr int kThreads = 256;

template <typename T>
struct alignas(4 * sizeof(T)) Vec4 {
  T v[4];
};

// One aligned vector store of four outputs. A plain store of the Vec4 struct is split into scalar stores by
// nvcc; the __stwb intrinsics on the matching built-in vector types are not.
template <typename T>
__device__ __forceinline__ void store4(T* dst, const Vec4<T>& o) {
  if constexpr (sizeof(Vec4<T>) == 8) {
    uint2 bits;
    memcpy(&bits, &o, sizeof(bits));
    __stwb(reinterpret_cast<uint2*>(dst), bits);
  } else {
    static_assert(sizeof(Vec4<T>) % 16 == 0, "four outputs fill whole 16-byte words");
    for (int word = 0; word < static_cast<int>(sizeof(Vec4<T>) / 16); ++word) {
      uint4 bits;
      memcpy(&bits, reinterpret_cast<const char*>(&o) + 16 * word, sizeof(bits));
      __stwb(reinterpret_cast<uint4*>(dst) + word, bits);
    }
  }
}

struct Shape {
  int64_t batch;
  int64_t features;
  int64_t groups;
  int64_t pairs;  // batch * groups: one thread each
  int64_t copies;
  int32_t include_original;
  bool noise;      // sigma != 0
  bool vectorize;  // features % 4 == 0 and x aligned: whole groups, one load and one store per row
  uint32_t key_lo, key_hi;
  uint64_t offset;
};

template <typename in_t, typename out_t, typename math_t>
__global__ void __launch_bounds__(kThreads)
    augment_kernel(const in_t* __restrict__ x, out_t* __restrict__ out, Shape s, math_t sigma, math_t low,
                   math_t high) {
  const int64_t pair = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (pair >= s.pairs) return;
  const int64_t b = pair / s.groups;
  const int64_t g = pair - b * s.groups;
  const int64_t f0 = 4 * g;
  const int n = s.features - f0 < 4 ? static_cast<int>(s.features - f0) : 4;
  const in_t* src = x + b * s.features + f0;
  math_t v[4];
  if (s.vectorize) {
    const Vec4<in_t> in = *reinterpret_cast<const Vec4<in_t>*>(src);
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = load_value<math_t>(in.v[j]);
  } else {
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = j < n ? load_value<math_t>(src[j]) : math_t(0);
  }
  const uint64_t sample = s.offset + static_cast<uint64_t>(b);
  const int64_t rows = s.copies + s.include_original;
  const int64_t row_stride = s.batch * s.features;
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    const int64_t copy = r - s.include_original;
    math_t y[4];
    if (copy < 0 || !s.noise) {
#pragma unroll
      for (int j = 0; j < 4; ++j) y[j] = clip(v[j], low, high);
    } else {
      const philox::Normal4 z =
          philox::normal4(static_cast<uint32_t>(g), static_cast<uint32_t>(copy), static_cast<uint32_t>(sample),
                          static_cast<uint32_t>(sample >> 32), s.key_lo, s.key_hi);
      y[0] = clip(add_noise(v[0], sigma, z.z0), low, high);
      y[1] = clip(add_noise(v[1], sigma, z.z1), low, high);
      y[2] = clip(add_noise(v[2], sigma, z.z2), low, high);
      y[3] = clip(add_noise(v[3], sigma, z.z3), low, high);
    }
    out_t* dst = out + r * row_stride + b * s.features + f0;
    if (s.vectorize) {
      Vec4<out_t> o;
#pragma unroll
      for (int j = 0; j < 4; ++j) o.v[j] = static_cast<out_t>(y[j]);
      store4(dst, o);
    } else {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        if (j < n) dst[j] = static_cast<out_t>(y[j]);
      }
    }
  }
}

template <typename in_t, typename out_t>
void launch_kernel(const at::Tensor& x, at::Tensor& out, const Plan& p) {
  using math_t = math_type<in_t>;
  Shape s;
  s.batch = p.batch;
  s.features = p.features;
  s.groups = p.groups;
  s.pairs = p.batch * p.groups;
  s.copies = p.copies;
  s.include_original = p.include_original ? 1 : 0;
  s.noise = p.sigma != 0;
  const auto address = reinterpret_cast<uintptr_t>(x.const_data_ptr<in_t>());
  s.vectorize = p.features % 4 == 0 && address % sizeof(Vec4<in_t>) == 0;
  s.key_lo = p.key_lo;
  s.key_hi = p.key_hi;
  s.offset = p.offset;
  const int64_t blocks = (s.pairs + kThreads - 1) / kThreads;
  TORCH_CHECK(blocks <= std::numeric_limits<int32_t>::max(), "nemesis_fast: gaussian_augment input too large");
  // Split the rows over gridDim.y only as far as needed to give the GPU about 4 waves of threads.
  const int64_t wanted = 4LL * at::cuda::getCurrentDeviceProperties()->multiProcessorCount * 2048;
  const int64_t split = std::clamp<int64_t>((wanted + s.pairs - 1) / s.pairs, 1, std::min<int64_t>(p.rows, 65535));
  const dim3 grid(static_cast<unsigned>(blocks), static_cast<unsigned>(split));
  augment_kernel<in_t, out_t, math_t><<<grid, kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
      x.const_data_ptr<in_t>(), out.mutable_data_ptr<out_t>(), s, static_cast<math_t>(p.sigma),
      static_cast<math_t>(p.clip_min), static_cast<math_t>(p.clip_max));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

struct CudaLauncher {
  using Guard = c10::cuda::CUDAGuard;
  template <typename in_t, typename out_t>
  static void launch(const at::Tensor& x, at::Tensor& out, const Plan& plan) {
    launch_kernel<in_t, out_t>(x, out, plan);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(nemesis_fast, CUDA, m) {
  m.impl("gaussian_augment", &gaussian_augment_op<CudaLauncher>);
}

}  // namespace nemesis_fast::gaussian_augment
