// The emulator's stand-in for ATen/native/cuda/Loops.cuh: ATen's gpu_kernel is ATen's loop, not the package's,
// so the emulator runs the package's lambda through ATen's CPU loop over the same TensorIterator.
#pragma once

#include <ATen/native/cpu/Loops.h>

#include "../../../../emu.h"

#define GPU_LAMBDA

namespace at::native {

template <typename Function>
void gpu_kernel(TensorIteratorBase& iter, const Function& f) {
  cpu_kernel(iter, f);
}

}  // namespace at::native
