// A CUDA emulator for the tests: the package's .cu kernels, compiled as host C++, run on the CPU.
//
// tests/_cuda_emulator.py rewrites each csrc/cuda/*.cu into a .cpp that includes this header first (launches
// `k<<<grid, block, smem, stream>>>(args)` become `::emu::Launch(grid, block, smem, stream)(k, args)`, each
// `__shared__` array a per-block array, `at::empty` an allocation filled with a byte pattern), and compiles it
// against ATen's CPU headers and the stand-ins for the CUDA headers under include/.
//
// Every CUDA thread is a fiber (ucontext) on the calling OS thread. A pool of `concurrent_blocks` blocks runs at
// once; their ready fibers run in rounds, in thread order, reversed or shuffled (a seeded choice), each until it
// waits at __syncthreads or a shuffle, yields after an atomic, or returns. So shared memory read before the
// barrier that orders it reads what the order happened to leave, or the fill pattern, and a result that depends
// on which block ran first shows up when the order changes. The emulator refuses, with an error naming the source
// line, what CUDA leaves undefined and the kernels must never do: a shuffle on a partial mask or in a warp with
// an exited lane, lanes (or threads of a block) waiting at different shuffles (barriers), a deadlock.
//
// With the build's -fsanitize=alignment,bounds (UBSan's checks, reported by emu_ops.cpp's handlers, no UBSan
// runtime) it also refuses misaligned accesses and indices past fixed-size arrays; built with AddressSanitizer
// (test_cuda_emulated_memory.py) accesses outside the tensors.
//
// The parts: threads.h (built-in types, settings, fibers, warps, blocks), synchronization.h (barriers, shuffles,
// atomics, __shared__ arrays), scheduler.h (the grid's fibers run, the launch); here the filled allocations and the
// CUDA names the kernels use.
//
// Not emulated: memory-model effects between barriers (a fiber runs alone until it yields), the hardware's
// floating-point intrinsics (the host's IEEE arithmetic, which __fadd_rn and friends equal; no contraction with
// -ffp-contract=off), timing and occupancy (the device properties are settings).
#pragma once

#include "scheduler.h"

namespace emu {

// at::empty and at::empty_like, filled with the fill byte: a kernel that leaves an output element unwritten
// leaves the pattern there, not the zeros a fresh page would hold.
inline at::Tensor filled(at::Tensor t) {
  if (t.numel() > 0) std::memset(t.data_ptr(), config().fill, t.nbytes());
  return t;
}
inline at::Tensor empty(at::IntArrayRef sizes, at::TensorOptions options = {},
                        std::optional<at::MemoryFormat> format = std::nullopt) {
  return filled(at::empty(sizes, options, format));
}
inline at::Tensor empty_like(const at::Tensor& x, at::TensorOptions options = {},
                             std::optional<at::MemoryFormat> format = std::nullopt) {
  return filled(at::empty_like(x, options, format));
}

// A CPU tensor stands for a tensor on device 0.
inline c10::DeviceIndex device_index(const c10::Device& device) {
  return device.is_cpu() ? 0 : device.index();
}


}  // namespace emu

// The CUDA built-ins.
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
#define __align__(n) alignas(n)
#define threadIdx (::emu::this_fiber().thread_idx)
#define blockIdx (::emu::this_fiber().block->block_idx)
#define blockDim (::emu::current().grid->block_dim)
#define gridDim (::emu::current().grid->grid_dim)
#define __syncthreads() ::emu::syncthreads(__FILE__, __LINE__)
#define __shfl_xor_sync(mask, value, lane_mask) ::emu::shfl_xor(mask, value, lane_mask, __FILE__, __LINE__)
#define __shfl_down_sync(mask, value, delta) ::emu::shfl_down(mask, value, delta, __FILE__, __LINE__)
// A __shared__ array, rewritten by tests/_cuda_emulator.py into EMU_SHARED(type, name, [extent], alignment).
#define EMU_SHARED(type, name, extent, alignment) \
  static const char name##_emu_tag = 0;           \
  type(&name) extent = ::emu::shared_array<type extent, alignment>(&name##_emu_tag)

inline int atomicMax(int* address, int value) { return ::emu::atomic_max(address, value); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline int __float_as_int(float v) {
  int out;
  std::memcpy(&out, &v, sizeof(out));
  return out;
}
inline float __int_as_float(int v) {
  float out;
  std::memcpy(&out, &v, sizeof(out));
  return out;
}
template <typename T>
inline void __stwb(T* address, T value) {
  *address = value;
}

// c10/cuda's checks: a launch raises its own errors.
#define C10_CUDA_CHECK(expression) TORCH_CHECK((expression) == cudaSuccess, "emu: ", #expression, " failed")
#define C10_CUDA_KERNEL_LAUNCH_CHECK() \
  do {                                 \
  } while (0)
#ifndef C10_COMPILE_TIME_MAX_GPUS
#define C10_COMPILE_TIME_MAX_GPUS 16
#endif
