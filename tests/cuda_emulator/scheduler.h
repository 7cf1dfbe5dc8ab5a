// The emulator's scheduler: a grid's blocks and their threads run as fibers, and a launch (see emu.h).
#pragma once

#include "synchronization.h"

namespace emu {

// A grid run as fibers; see emu.h.
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
  TORCH_CHECK(total <= (uint64_t{1} << 24), "emu: a grid of ", total, " blocks, more than the emulator runs (2^24)");
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
        const Barrier& block = b->barrier;
        s << " block " << b->block_idx.x << ": " << block.arrived << " of " << b->live << " at __syncthreads";
        if (block.arrived) s << " (" << where(block.site.file, block.site.line) << ")";
        for (auto& w : b->warps) {
          const Barrier& lanes = w.barrier;
          if (lanes.arrived) s << ", " << lanes.arrived << " lanes at " << where(lanes.site.file, lanes.site.line);
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
  if (w.barrier.arrived != 0) {
    fail("a lane returned while " + std::to_string(w.barrier.arrived) + " lane(s) of its warp wait at " +
         where(w.barrier.site.file, w.barrier.site.line));
  }
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

}  // namespace emu
