// The emulator's synchronisation points: __syncthreads, the warp shuffles, atomicMax, and the per-block
// __shared__ arrays. Each checks what CUDA leaves undefined and then waits for the scheduler (see emu.h).
#pragma once

#include "threads.h"

namespace emu {

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
  if (lane_mask < 0 || lane_mask > 31) fail("__shfl_xor_sync with lane mask " + std::to_string(lane_mask) + " at " +
                                            where(file, line) + "; the emulator takes 0 to 31");
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

}  // namespace emu
