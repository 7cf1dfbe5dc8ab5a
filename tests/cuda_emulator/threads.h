// The emulator's threads: CUDA's built-in types, the settings and counters, and the fibers that stand for GPU
// threads, grouped in warps and blocks (see emu.h).
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <ucontext.h>
#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <numeric>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>


// The built-in vector types and dim3, in the global namespace as CUDA has them.
struct uint3 {
  unsigned int x, y, z;
};
struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) float4 {
  float x, y, z, w;
};
struct alignas(8) uint2 {
  unsigned int x, y;
};
struct alignas(16) uint4 {
  unsigned int x, y, z, w;
};
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

struct emu_stream;
using cudaStream_t = emu_stream*;
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;

namespace emu {

enum class Order : int64_t { kForward = 0, kReverse = 1, kShuffled = 2 };

// What the tests set through nemesis_fast_emu::configure.
struct Config {
  int64_t multiprocessors = 4;     // the device property multiProcessorCount
  int64_t blocks_per_sm = 8;       // what the occupancy API answers (sm_90's for the JSMA search kernel)
  int64_t concurrent_blocks = 2;   // blocks whose threads run interleaved
  Order order = Order::kForward;   // of the blocks, and of the ready fibers in each round
  uint64_t seed = 0;               // for Order::kShuffled
  int fill = 0x3C;                 // the byte that fills shared memory and at::empty (0x3C3C3C3C is 0.0115f)
};

// What the emulator counted since the last reset.
struct Counters {
  int64_t launches = 0;
  int64_t blocks = 0;
  int64_t threads = 0;
  int64_t switches = 0;
};

inline Config& config() {
  static Config value;
  return value;
}
inline Counters& counters() {
  static Counters value;
  return value;
}

struct Block;

enum class FiberState { kReady, kWaiting, kDone };

struct Fiber {
  ucontext_t context;
  char* stack = nullptr;
  FiberState state = FiberState::kReady;
  uint3 thread_idx{};
  Block* block = nullptr;
  int linear = 0;  // threadIdx in x-fastest order
  int lane = 0;
  int warp = 0;
  void* fake_stack = nullptr;  // AddressSanitizer's, across a switch
};

// Where threads wait: the source line of the barrier or shuffle, to catch divergence.
struct Site {
  const char* file = nullptr;
  int line = 0;
  bool same(const char* f, int l) const { return line == l && std::strcmp(file, f) == 0; }
};

// The threads waiting at a block's __syncthreads or at a warp's shuffle (synchronization.h: arrive, release).
struct Barrier {
  int arrived = 0;
  Site site;  // where the first of them waits
  std::vector<Fiber*> waiting;
};

struct Warp {
  int size = 0;
  int exited = 0;
  uint64_t generation = 0;
  uint64_t slots[2][32] = {};
  Barrier barrier;
};

struct Block {
  uint3 block_idx{};
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int live = 0;
  Barrier barrier;
  std::map<const void*, std::unique_ptr<unsigned char[]>> shared;  // one array per __shared__ declaration
};

struct Grid;

// The state of the launch in progress on this OS thread.
struct Current {
  Grid* grid = nullptr;
  Fiber* fiber = nullptr;
};
inline Current& current() {
  static thread_local Current value;
  return value;
}

[[noreturn]] void fail(const std::string& message);
void yield_to_scheduler();

inline Fiber& this_fiber() {
  Fiber* f = current().fiber;
  TORCH_CHECK(f != nullptr, "emu: a CUDA built-in used outside a kernel");
  return *f;
}

inline std::string where(const char* file, int line) {
  std::ostringstream s;
  s << file << ":" << line;
  return s.str();
}

}  // namespace emu
