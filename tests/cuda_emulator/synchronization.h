// The emulator's synchronisation points: __syncthreads, the warp shuffles, atomicMax, and the per-block
// __shared__ arrays. Each checks what CUDA leaves undefined and then waits for the scheduler (see emu.h).
#pragma once

#include "threads.h"

namespace emu {

// The calling fiber waits at `barrier`, from (file, line); `who` names it ("thread 3") for the error where others
// wait there from another line.
inline void arrive(Barrier& barrier, const char* file, int line, const std::string& who, const char* what) {
  Fiber& f = this_fiber();
  if (barrier.arrived == 0) {
    barrier.site = {file, line};
  } else if (!barrier.site.same(file, line)) {
    fail(std::string("divergent ") + what + ": " + who + " waits at " + where(file, line) + ", others at " +
         where(barrier.site.file, barrier.site.line));
  }
  ++barrier.arrived;
  f.state = FiberState::kWaiting;
  barrier.waiting.push_back(&f);
}

// Every fiber waiting at `barrier` goes on.
inline void release(Barrier& barrier) {
  for (Fiber* f : barrier.waiting) f->state = FiberState::kReady;
  barrier.waiting.clear();
  barrier.arrived = 0;
}

// Releases the block's barrier once every thread that has not returned is there (returned threads count as
// arrived, as on sm_70 and later).
inline void release_block_if_complete(Block& b) {
  if (b.barrier.arrived != 0 && b.barrier.arrived >= b.live) release(b.barrier);
}

inline void syncthreads(const char* file, int line) {
  Fiber& f = this_fiber();
  arrive(f.block->barrier, file, line, "thread " + std::to_string(f.linear), "__syncthreads");
  release_block_if_complete(*f.block);
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
  const int buffer = static_cast<int>(w.generation & 1);  // the next exchange writes the other one
  w.slots[buffer][f.lane] = value;
  arrive(w.barrier, file, line, "lane " + std::to_string(f.lane), "shuffles");
  if (w.barrier.arrived == w.size) {
    release(w.barrier);
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
