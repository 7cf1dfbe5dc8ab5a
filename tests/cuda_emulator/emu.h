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
// Not emulated: memory-model effects between barriers (a fiber runs alone until it yields), the hardware's
// floating-point intrinsics (the host's IEEE arithmetic, which __fadd_rn and friends equal; no contraction with
// -ffp-contract=off), timing and occupancy (the device properties are settings).
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

struct Warp {
  int size = 0;
  int arrived = 0;
  int exited = 0;
  uint64_t generation = 0;
  uint64_t slots[2][32] = {};
  Site site;
  std::vector<Fiber*> waiting;
};

struct Block {
  uint3 block_idx{};
  std::vector<Fiber> fibers;
  std::vector<Warp> warps;
  int live = 0;
  int arrived = 0;
  Site site;
  std::vector<Fiber*> waiting;
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

// Releases the threads waiting at the block's barrier once every thread that has not returned is there
// (returned threads count as arrived, as on sm_70 and later).
inline void release_block_if_complete(Block& b) {
  if (b.arrived == 0 || b.arrived < b.live) return;
  for (Fiber* f : b.waiting) f->state = FiberState::kReady;
  b.waiting.clear();
  b.arrived = 0;
}

inline void syncthreads(const char* file, int line) {
  Fiber& f = this_fiber();
  Block& b = *f.block;
  if (b.arrived == 0) {
    b.site = {file, line};
  } else if (!b.site.same(file, line)) {
    fail("divergent __syncthreads: thread " + std::to_string(f.linear) + " waits at " + where(file, line) +
         ", others at " + where(b.site.file, b.site.line));
  }
  ++b.arrived;
  f.state = FiberState::kWaiting;
  b.waiting.push_back(&f);
  release_block_if_complete(b);
  yield_to_scheduler();
}

// One exchange among the lanes of the caller's warp: each lane puts `value` in, and gets lane `source`'s.
inline uint64_t warp_exchange(unsigned int mask, uint64_t value, int source, const char* file, int line) {
  Fiber& f = this_fiber();
  Warp& w = f.block->warps[f.warp];
  if (mask != 0xffffffffu) fail("a shuffle with mask " + std::to_string(mask) + " at " + where(file, line) +
                                "; the emulator supports whole warps only");
  if (w.size != 32) fail("a full-mask shuffle in a warp of " + std::to_string(w.size) + " threads at " +
                         where(file, line));
  if (w.exited != 0) fail("a full-mask shuffle at " + where(file, line) + " after " + std::to_string(w.exited) +
                          " lane(s) of the warp returned");
  if (w.arrived == 0) {
    w.site = {file, line};
  } else if (!w.site.same(file, line)) {
    fail("divergent shuffles: lane " + std::to_string(f.lane) + " at " + where(file, line) + ", others at " +
         where(w.site.file, w.site.line));
  }
  const int buffer = static_cast<int>(w.generation & 1);  // the next exchange writes the other one
  w.slots[buffer][f.lane] = value;
  ++w.arrived;
  f.state = FiberState::kWaiting;
  w.waiting.push_back(&f);
  if (w.arrived == w.size) {
    for (Fiber* waiting : w.waiting) waiting->state = FiberState::kReady;
    w.waiting.clear();
    w.arrived = 0;
    ++w.generation;
  }
  yield_to_scheduler();
  return w.slots[buffer][source];
}

template <typename T>
T exchange_as(unsigned int mask, T value, int source, const char* file, int line) {
  static_assert(sizeof(T) <= sizeof(uint64_t) && std::is_trivially_copyable_v<T>);
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof(T));
  bits = warp_exchange(mask, bits, source, file, line);
  T out;
  std::memcpy(&out, &bits, sizeof(T));
  return out;
}

template <typename T>
T shfl_xor(unsigned int mask, T value, int lane_mask, const char* file, int line) {
  return exchange_as(mask, value, this_fiber().lane ^ lane_mask, file, line);
}

template <typename T>
T shfl_down(unsigned int mask, T value, unsigned int delta, const char* file, int line) {
  const int lane = this_fiber().lane;
  const int source = lane + static_cast<int>(delta) < 32 ? lane + static_cast<int>(delta) : lane;
  return exchange_as(mask, value, source, file, line);
}

// The per-block array of one __shared__ declaration (told apart by the address of a static tag in the
// declaring function), filled with the fill byte when the block first reaches it.
template <typename Array, size_t kAlign>
Array& shared_array(const void* tag) {
  Block& b = *this_fiber().block;
  auto& storage = b.shared[tag];
  if (!storage) {
    storage.reset(new unsigned char[sizeof(Array) + kAlign]);
    std::memset(storage.get(), config().fill, sizeof(Array) + kAlign);
  }
  const auto address = reinterpret_cast<uintptr_t>(storage.get());
  return *reinterpret_cast<Array*>((address + kAlign - 1) / kAlign * kAlign);
}

inline int atomic_max(int* address, int value) {
  const int old = *address;
  *address = std::max(old, value);
  this_fiber().state = FiberState::kReady;
  yield_to_scheduler();  // another block may run before this thread goes on
  return old;
}

// A grid run as fibers; see the file comment.
struct Grid {
  dim3 grid_dim;
  dim3 block_dim;
  std::function<void()> body;
  ucontext_t scheduler{};
  std::optional<std::string> error;
  std::vector<char*> free_stacks;
  std::vector<std::unique_ptr<char[]>> stacks;
  std::mt19937_64 random;
  const void* scheduler_stack = nullptr;  // the OS thread's stack, for AddressSanitizer's switches
  size_t scheduler_stack_size = 0;
  void* scheduler_fake_stack = nullptr;

  static constexpr size_t kStack = 256 * 1024;

  char* take_stack() {
    if (free_stacks.empty()) {
      stacks.emplace_back(new char[kStack]);
      return stacks.back().get();
    }
    char* s = free_stacks.back();
    free_stacks.pop_back();
    return s;
  }

  template <typename T>
  void arrange(std::vector<T>& items) {
    switch (config().order) {
      case Order::kForward:
        break;
      case Order::kReverse:
        std::reverse(items.begin(), items.end());
        break;
      case Order::kShuffled:
        std::shuffle(items.begin(), items.end(), random);
        break;
    }
  }

  void start_block(Block& b, uint3 index);
  void run();
};

void fiber_entry();

// AddressSanitizer must know which stack runs (a build with -fsanitize=address; no-ops otherwise). Into a fiber:
// start before the switch, finish after it on the fiber's side, which learns the scheduler's stack; back: the same
// the other way, with no fake stack to keep when the fiber has returned.
inline void entering_fiber(Grid& g, Fiber& f) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(&g.scheduler_fake_stack, f.stack, Grid::kStack);
#else
  (void)g;
  (void)f;
#endif
}
inline void entered_fiber(Grid& g, Fiber& f) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(f.fake_stack, &g.scheduler_stack, &g.scheduler_stack_size);
#else
  (void)g;
  (void)f;
#endif
}
inline void leaving_fiber(Grid& g, Fiber& f, bool returned) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(returned ? nullptr : &f.fake_stack, g.scheduler_stack, g.scheduler_stack_size);
#else
  (void)g;
  (void)f;
  (void)returned;
#endif
}
inline void left_fiber(Grid& g) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(g.scheduler_fake_stack, nullptr, nullptr);
#else
  (void)g;
#endif
}

inline void Grid::start_block(Block& b, uint3 index) {
  b.block_idx = index;
  const int threads = static_cast<int>(block_dim.x * block_dim.y * block_dim.z);
  b.fibers = std::vector<Fiber>(threads);
  b.warps = std::vector<Warp>((threads + 31) / 32);
  for (size_t w = 0; w < b.warps.size(); ++w) b.warps[w].size = std::min(32, threads - 32 * static_cast<int>(w));
  b.live = threads;
  for (int t = 0; t < threads; ++t) {
    Fiber& f = b.fibers[t];
    f.linear = t;
    f.lane = t % 32;
    f.warp = t / 32;
    f.block = &b;
    f.thread_idx = {t % block_dim.x, (t / block_dim.x) % block_dim.y, t / (block_dim.x * block_dim.y)};
    f.stack = take_stack();
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack;
    f.context.uc_stack.ss_size = kStack;
    f.context.uc_link = &scheduler;
    makecontext(&f.context, fiber_entry, 0);
  }
  counters().blocks += 1;
  counters().threads += threads;
}

inline void Grid::run() {
  random.seed(config().seed);
  const uint64_t total = static_cast<uint64_t>(grid_dim.x) * grid_dim.y * grid_dim.z;
  std::vector<uint64_t> block_order(total);
  std::iota(block_order.begin(), block_order.end(), 0);
  arrange(block_order);
  const size_t pool = static_cast<size_t>(std::max<int64_t>(1, config().concurrent_blocks));
  std::vector<std::unique_ptr<Block>> active;
  size_t next = 0;
  while (!error && (next < block_order.size() || !active.empty())) {
    while (active.size() < pool && next < block_order.size()) {
      const uint64_t k = block_order[next++];
      active.push_back(std::make_unique<Block>());
      const uint3 index{static_cast<unsigned int>(k % grid_dim.x),
                        static_cast<unsigned int>((k / grid_dim.x) % grid_dim.y),
                        static_cast<unsigned int>(k / (static_cast<uint64_t>(grid_dim.x) * grid_dim.y))};
      start_block(*active.back(), index);
    }
    std::vector<Fiber*> round;
    for (auto& b : active) {
      for (Fiber& f : b->fibers) {
        if (f.state == FiberState::kReady) round.push_back(&f);
      }
    }
    if (round.empty()) {
      std::ostringstream s;
      s << "emu: deadlock: no thread can go on;";
      for (auto& b : active) {
        s << " block " << b->block_idx.x << ": " << b->arrived << " of " << b->live << " at __syncthreads";
        if (b->arrived) s << " (" << where(b->site.file, b->site.line) << ")";
        for (auto& w : b->warps) {
          if (w.arrived) s << ", " << w.arrived << " lanes at " << where(w.site.file, w.site.line);
        }
        s << ";";
      }
      error = s.str();
      break;
    }
    arrange(round);
    for (Fiber* f : round) {
      if (f->state != FiberState::kReady) continue;
      current().fiber = f;
      counters().switches += 1;
      entering_fiber(*this, *f);
      swapcontext(&scheduler, &f->context);
      left_fiber(*this);
      current().fiber = nullptr;
      if (error) break;
    }
    for (auto it = active.begin(); it != active.end();) {
      Block& b = **it;
      if (b.live == 0) {
        for (Fiber& f : b.fibers) free_stacks.push_back(f.stack);
        it = active.erase(it);
      } else {
        ++it;
      }
    }
  }
}

inline void yield_to_scheduler() {
  Fiber& f = this_fiber();
  Grid& g = *current().grid;
  leaving_fiber(g, f, false);
  swapcontext(&f.context, &g.scheduler);
  entered_fiber(g, f);
}

[[noreturn]] inline void fail(const std::string& message) {
  Grid* g = current().grid;
  TORCH_CHECK(g != nullptr && current().fiber != nullptr, "emu: ", message);
  if (!g->error) g->error = "emu: " + message;
  // Back to the scheduler for good: it stops at the error, and this fiber's stack is dropped unwound.
  leaving_fiber(*g, *current().fiber, false);
  swapcontext(&current().fiber->context, &g->scheduler);
  std::abort();  // not reached: nothing resumes a fiber after an error
}

inline void fiber_entry() {
  Grid* g = current().grid;
  entered_fiber(*g, this_fiber());
  g->body();
  Fiber& f = this_fiber();
  Block& b = *f.block;
  Warp& w = b.warps[f.warp];
  if (w.arrived != 0) fail("a lane returned while " + std::to_string(w.arrived) + " lane(s) of its warp wait at " +
                           where(w.site.file, w.site.line));
  f.state = FiberState::kDone;
  ++w.exited;
  --b.live;
  release_block_if_complete(b);
  leaving_fiber(*g, f, true);
  // Returning resumes uc_link: the scheduler.
}

// `kernel<<<grid, block, shared_bytes, stream>>>(args...)`, run to completion before it returns (the emulated
// stream is synchronous).
class Launch {
 public:
  Launch(dim3 grid, dim3 block, size_t shared_bytes = 0, cudaStream_t stream = nullptr)
      : grid_(grid), block_(block) {
    (void)shared_bytes;
    (void)stream;
  }

  template <typename... Params, typename... Args>
  void operator()(void (*kernel)(Params...), Args&&... args) const {
    // The arguments converted to the parameter types and copied, as a launch does.
    std::tuple<std::decay_t<Params>...> values(std::forward<Args>(args)...);
    run([&] { std::apply(kernel, values); });
  }

 private:
  void run(std::function<void()> body) const {
    TORCH_CHECK(current().grid == nullptr, "emu: a kernel launched from inside a kernel");
    const uint64_t threads = static_cast<uint64_t>(block_.x) * block_.y * block_.z;
    TORCH_CHECK(threads >= 1 && threads <= 1024, "emu: a block of ", threads, " threads (CUDA allows 1 to 1024)");
    TORCH_CHECK(grid_.x >= 1 && grid_.y >= 1 && grid_.z >= 1 && grid_.y <= 65535 && grid_.z <= 65535 &&
                    grid_.x <= 2147483647u,
                "emu: an invalid grid (", grid_.x, ", ", grid_.y, ", ", grid_.z, ")");
    Grid g;
    g.grid_dim = grid_;
    g.block_dim = block_;
    g.body = std::move(body);
    current().grid = &g;
    counters().launches += 1;
    try {
      g.run();
    } catch (...) {
      current() = {};
      throw;
    }
    current() = {};
    TORCH_CHECK(!g.error, *g.error);
  }

  dim3 grid_;
  dim3 block_;
};

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
