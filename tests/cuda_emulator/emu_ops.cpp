// The emulator's settings and counters as ops, and the kernels that test the emulator itself: each built-in
// against what CUDA defines, and each misuse it must refuse.
#include <torch/library.h>

#include "emu.h"

namespace {

void configure(int64_t multiprocessors, int64_t blocks_per_sm, int64_t concurrent_blocks, int64_t order,
               int64_t seed, int64_t fill) {
  TORCH_CHECK(multiprocessors >= 1 && blocks_per_sm >= 1 && concurrent_blocks >= 1, "emu: settings must be >= 1");
  TORCH_CHECK(order >= 0 && order <= 2, "emu: order must be 0, 1 or 2");
  TORCH_CHECK(fill >= 0 && fill <= 255, "emu: fill must be a byte");
  emu::config() = {multiprocessors, blocks_per_sm, concurrent_blocks, static_cast<emu::Order>(order),
                   static_cast<uint64_t>(seed), static_cast<int>(fill)};
  emu::counters() = {};
}

std::vector<int64_t> counters() {
  const auto& c = emu::counters();
  return {c.launches, c.blocks, c.threads, c.switches};
}

// Each thread's (blockIdx.x, blockIdx.y, threadIdx.x, threadIdx.y, blockDim.x * blockDim.y, gridDim.x, gridDim.y).
__global__ void coordinates_kernel(int64_t* out) {
  const int64_t block = blockIdx.y * gridDim.x + blockIdx.x;
  const int64_t thread = threadIdx.y * blockDim.x + threadIdx.x;
  int64_t* row = out + 7 * (block * blockDim.x * blockDim.y + thread);
  row[0] = blockIdx.x;
  row[1] = blockIdx.y;
  row[2] = threadIdx.x;
  row[3] = threadIdx.y;
  row[4] = blockDim.x * blockDim.y;
  row[5] = gridDim.x;
  row[6] = gridDim.y;
}

// Per thread of one block of 64: its lane's value after __shfl_xor_sync(.., 5) and __shfl_down_sync(.., 3).
__global__ void shuffle_kernel(int64_t* out) {
  const int value = 100 + static_cast<int>(threadIdx.x);
  out[2 * threadIdx.x] = __shfl_xor_sync(0xffffffffu, value, 5);
  out[2 * threadIdx.x + 1] = __shfl_down_sync(0xffffffffu, static_cast<float>(value), 3u);
}

// Each thread writes its slot of a shared array and reads its neighbour's, with or without the barrier between.
template <bool kBarrier>
__global__ void neighbour_kernel(int64_t* out) {
  EMU_SHARED(int, slots, [128], 16);
  slots[threadIdx.x] = static_cast<int>(threadIdx.x);
  if (kBarrier) __syncthreads();
  out[threadIdx.x] = slots[(threadIdx.x + 1) % blockDim.x];
}

__global__ void divergent_barrier_kernel(int64_t*) {
  if (threadIdx.x < 16) {
    __syncthreads();
  } else {
    __syncthreads();
  }
}

__global__ void exited_lane_kernel(int64_t* out) {
  if (threadIdx.x == 7) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
}

__global__ void deadlock_kernel(int64_t* out) {
  if (threadIdx.x == 0) {
    __syncthreads();  // waits for the other 31, which wait for it in the shuffle
  } else {
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);
  }
}

// A 16-byte vector read 4 bytes past an aligned address (a GPU faults: misaligned address).
__global__ void misaligned_kernel(const float* data, int64_t* out) {
  const float4 v = *reinterpret_cast<const float4*>(data + 1);
  out[threadIdx.x] = static_cast<int64_t>(v.x);
}

// A __shared__ array of 8 indexed by every thread of 32.
__global__ void out_of_bounds_kernel(int64_t* out) {
  EMU_SHARED(int, slots, [8], 16);
  slots[threadIdx.x] = 1;
  out[threadIdx.x] = 1;
}

// atomicMax from every block on one word; returns the maximum and whether every old value was below it.
__global__ void atomic_kernel(int* word, int64_t* out) {
  const int value = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  const int old = atomicMax(word, value);
  out[value] = old;
}

at::Tensor selftest(const std::string& name) {
  auto options = at::TensorOptions().dtype(at::kLong);
  if (name == "coordinates") {
    at::Tensor out = at::full({3 * 2 * 4 * 8, 7}, -1, options);
    emu::Launch(dim3(3, 2), dim3(4, 8))(coordinates_kernel, out.data_ptr<int64_t>());
    return out;
  }
  if (name == "shuffle") {
    at::Tensor out = at::full({64, 2}, -1, options);
    emu::Launch(1, 64)(shuffle_kernel, out.data_ptr<int64_t>());
    return out;
  }
  if (name == "neighbour" || name == "neighbour_without_barrier") {
    at::Tensor out = at::full({128}, -1, options);
    if (name == "neighbour") {
      emu::Launch(1, 128)(neighbour_kernel<true>, out.data_ptr<int64_t>());
    } else {
      emu::Launch(1, 128)(neighbour_kernel<false>, out.data_ptr<int64_t>());
    }
    return out;
  }
  if (name == "atomic") {
    at::Tensor word = at::full({1}, -1, options.dtype(at::kInt));
    at::Tensor out = at::full({4 * 64 + 1}, -1, options);
    emu::Launch(4, 64)(atomic_kernel, word.data_ptr<int>(), out.data_ptr<int64_t>());
    out[4 * 64] = word[0].item<int>();
    return out;
  }
  at::Tensor out = at::full({128}, -1, options);
  if (name == "divergent_barrier") {
    emu::Launch(1, 64)(divergent_barrier_kernel, out.data_ptr<int64_t>());
  } else if (name == "exited_lane") {
    emu::Launch(1, 32)(exited_lane_kernel, out.data_ptr<int64_t>());
  } else if (name == "deadlock") {
    emu::Launch(1, 32)(deadlock_kernel, out.data_ptr<int64_t>());
  } else if (name == "misaligned") {
    at::Tensor data = at::zeros({8}, at::TensorOptions().dtype(at::kFloat));
    TORCH_CHECK(reinterpret_cast<uintptr_t>(data.data_ptr()) % 16 == 0, "emu: an unaligned allocation");
    emu::Launch(1, 32)(misaligned_kernel, data.const_data_ptr<float>(), out.data_ptr<int64_t>());
  } else if (name == "out_of_bounds") {
    emu::Launch(1, 32)(out_of_bounds_kernel, out.data_ptr<int64_t>());
  } else if (name == "partial_warp_shuffle") {
    emu::Launch(1, 48)(shuffle_kernel, out.data_ptr<int64_t>());
  } else {
    TORCH_CHECK(false, "emu: no self-test named ", name);
  }
  return out;
}

}  // namespace

// UBSan's checks of alignment and of array bounds (the build's -fsanitize=alignment,bounds, without UBSan's
// runtime): a misaligned access is what faults on a GPU ("misaligned address"), an index past a fixed-size array
// (a __shared__ one, a vector's elements) what reads or writes a neighbour there. Both fail the launch, naming
// the line; outside a kernel they raise.
namespace {

struct SourceLocation {
  const char* file;
  uint32_t line;
  uint32_t column;
};
struct TypeDescriptor {
  uint16_t kind;
  uint16_t info;
  char name[1];
};
struct TypeMismatchData {
  SourceLocation location;
  const TypeDescriptor* type;
  unsigned char log_alignment;
  unsigned char type_check_kind;
};
struct OutOfBoundsData {
  SourceLocation location;
  const TypeDescriptor* array_type;
  const TypeDescriptor* index_type;
};

[[noreturn]] void undefined(const std::string& message) {
  if (emu::current().fiber != nullptr) emu::fail(message);
  TORCH_CHECK(false, "emu: ", message);
}

}  // namespace

extern "C" {
void __ubsan_handle_type_mismatch_v1(TypeMismatchData* data, uintptr_t pointer) {
  std::ostringstream s;
  s << (pointer == 0 ? "a null pointer" : "a misaligned pointer") << " to " << data->type->name << " (alignment "
    << (1u << data->log_alignment) << ", address " << std::hex << pointer << std::dec << ") at "
    << data->location.file << ":" << data->location.line;
  undefined(s.str());
}
void __ubsan_handle_type_mismatch_v1_abort(TypeMismatchData* data, uintptr_t pointer) {
  __ubsan_handle_type_mismatch_v1(data, pointer);
}
void __ubsan_handle_out_of_bounds(OutOfBoundsData* data, uintptr_t index) {
  std::ostringstream s;
  s << "index " << static_cast<intptr_t>(index) << " out of bounds of " << data->array_type->name << " at "
    << data->location.file << ":" << data->location.line;
  undefined(s.str());
}
void __ubsan_handle_out_of_bounds_abort(OutOfBoundsData* data, uintptr_t index) {
  __ubsan_handle_out_of_bounds(data, index);
}
}

TORCH_LIBRARY(nemesis_fast_emu, m) {
  m.def("configure(int multiprocessors, int blocks_per_sm, int concurrent_blocks, int order, int seed, int fill) -> ()",
        &configure);
  m.def("counters() -> int[]", &counters);
  m.def("selftest(str name) -> Tensor", &selftest);
}
