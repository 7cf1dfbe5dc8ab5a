// The emulator's stand-in for c10/cuda/CUDAGuard.h: the emulated device is the CPU, so the guard only checks
// that the tensors are CPU tensors.
#pragma once

#include "../../../emu.h"

namespace c10::cuda {

struct CUDAGuard {
  explicit CUDAGuard(c10::Device device) {
    TORCH_CHECK(device.is_cpu(), "emu: the emulated CUDA kernels take CPU tensors, got one on ", device);
  }
};

}  // namespace c10::cuda
