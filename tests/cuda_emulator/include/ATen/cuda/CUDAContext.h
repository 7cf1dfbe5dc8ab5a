// The emulator's stand-in for ATen/cuda/CUDAContext.h: device properties from the emulator's settings, and a
// stream that is only a name (the emulator runs every launch to completion).
#pragma once

#include "../../../emu.h"

namespace at::cuda {

struct EmulatedDeviceProperties {
  int multiProcessorCount;
};

inline const EmulatedDeviceProperties* getDeviceProperties(c10::DeviceIndex device) {
  TORCH_CHECK(device >= 0, "emu: device properties asked for device ", static_cast<int>(device));
  static thread_local EmulatedDeviceProperties properties;
  properties.multiProcessorCount = static_cast<int>(::emu::config().multiprocessors);
  return &properties;
}

inline const EmulatedDeviceProperties* getCurrentDeviceProperties() { return getDeviceProperties(0); }

struct EmulatedStream {
  operator cudaStream_t() const { return nullptr; }
};

inline EmulatedStream getCurrentCUDAStream() { return {}; }

}  // namespace at::cuda

// The occupancy API: the emulator's blocks-per-SM setting, whatever the kernel.
template <typename Kernel>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* blocks, Kernel, int, size_t) {
  *blocks = static_cast<int>(::emu::config().blocks_per_sm);
  return cudaSuccess;
}
