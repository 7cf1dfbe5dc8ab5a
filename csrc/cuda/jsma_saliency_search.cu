// CUDA kernel of jsma_saliency_search: a tiled scan of the pairs that keeps only running bests.
//
// The features of a sample are cut into tiles of kTile. Tile pairs (r, c) with r <= c cover the pairs p < q
// (p in row tile r, q in column tile c); numbered row by row, each sample's tile pairs are split into `chunks`
// contiguous runs, one block per (sample, run). A block loads its row tile into shared memory; each thread owns
// one column q and scans the kTile rows in two steps:
//  1. the highest clamped score fl(max(a, 0) * u) of the rows: no comparison, no index, five instructions a pair
//     (two additions, two maxima, a multiplication). A clamped score above 0 is the score of a valid pair with
//     the same bits (max(a, 0) * u > 0 needs a > 0 and u > 0, and then max(a, 0) = a); an invalid pair's is 0,
//     -0, negative or NaN (which fmaxf ignores), and so is a valid pair's that underflowed to 0.
//  2. Only where that maximum is above 0 and can still win or tie (not below the sample's best so far, below):
//     the first row whose clamped score equals it, so the smallest p of the column's best. Where it is not above
//     0 and no block has yet found a score above 0 for the sample, the rows are scanned again as the reference
//     does (every comparison), for a valid pair scoring 0.
// The thread merges (score, p, q) into its running best in (score desc, p asc, q asc) order. A block reduction in
// the same order writes one partial per block; a second kernel reduces each sample's partials in order.
//
// Pruning: a first kernel stores each tile's maxima of t and u; every score of a tile pair is at most
// fl(fl(max t_r + max t_c) * fl(max u_r + max u_c)) (rounding is monotone). Each sample keeps in global memory
// the highest score any block has found so far (atomicMax on the bits of a non-negative float); a thread skips
// a tile pair whose bound is below it, or whose bound sums are not both > 0. A skipped pair can neither win nor
// tie, so the result does not depend on what was skipped, and stays deterministic.
//
// Launches: three kernels (tile maxima, which also resets the thresholds; search; finish), and no fills: the
// finishing kernel writes every output. Only a call with no pair to search (B = 0 or n < 2) fills its outputs.
//
// Grid: `chunks_per_sample` sizes it from the number of blocks that the GPU holds at once (the occupancy API
// on the search kernel itself) so that the last wave of blocks is not a nearly empty one; see there.
//
// Extra memory: 12 bytes per block (O(B * chunks), chunks at most kMaxWaves waves of resident blocks over B),
// 8 bytes per tile and 4 per sample.
//
// Per pair the math is that of the header: two float32 additions and one multiplication, explicitly rounded
// (no contraction), and exact maxima and comparisons, so the result equals the reference's bit for bit.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <limits>

#include "jsma_saliency_search.h"

namespace nemesis_fast::jsma_saliency_search {
namespace {

constexpr int kTile = 256;  // threads per block, rows per row tile, columns per column tile
constexpr int kWarps = kTile / 32;
constexpr int64_t kMaxWaves = 8;  // the most waves of resident blocks that chunks_per_sample considers
constexpr int32_t kNoIndex = std::numeric_limits<int32_t>::max();

// The number of chunks each sample's tile pairs are cut into: the search kernel runs one block per (sample,
// chunk), and a chunk is a contiguous run of floor or ceil(tile_pairs / chunks) of the sample's tile pairs.
//
// `resident` blocks run at once (SMs x blocks per SM, the latter from the occupancy API on the search kernel:
// 8 on sm_90, where its 256-thread blocks at 32 registers reach the 2048-thread limit). The batch * chunks
// blocks then run in waves = ceil(batch * chunks / resident) rounds, each as long as its longest block:
//   estimated time = waves * ceil(tile_pairs / chunks)   (in tile pairs; the work of a whole wave).
// A last wave that is nearly empty costs as much as a full one, which this charges. For a given number of
// waves w, the most chunks that fit, floor(w * resident / batch), give the shortest blocks, so only those
// candidates (w = 1 .. kMaxWaves, and 1 chunk when even one wave cannot hold a block per sample) are tried;
// ties go to fewer chunks (fewer blocks: fewer row tiles loaded and partials reduced). The tile pairs of the
// diagonal and the pairs that pruning skips make the real block times uneven; the estimate ignores both.
//
// Example: H200 (132 SMs, so 1056 resident blocks), B = 128, n = 3072 (12 tiles, 78 tile pairs per sample):
// 8 chunks, 1024 blocks in one wave of at most 10 tile pairs a block, against 9.45 if the 9984 tile pairs
// were spread evenly over the 1056 slots. (A fixed 16 blocks per SM gave 17 chunks: 2176 blocks, 2.06 waves,
// the third almost empty.)
constexpr int64_t chunks_per_sample(int64_t batch, int64_t tile_pairs, int64_t resident) {
  int64_t best_chunks = 1;
  int64_t best_time = ((batch + resident - 1) / resident) * tile_pairs;
  for (int64_t waves = 1; waves <= kMaxWaves; ++waves) {
    const int64_t chunks = std::min(tile_pairs, waves * resident / batch);
    if (chunks < 1) continue;
    const int64_t time = ((batch * chunks + resident - 1) / resident) * ((tile_pairs + chunks - 1) / chunks);
    if (time < best_time || (time == best_time && chunks < best_chunks)) {
      best_time = time;
      best_chunks = chunks;
    }
  }
  return best_chunks;
}
static_assert(chunks_per_sample(128, 78, 132 * 8) == 8);        // the example above
static_assert(chunks_per_sample(1, 78, 132 * 8) == 78);         // one sample: a block per tile pair
static_assert(chunks_per_sample(5000, 10, 132 * 8) == 1);       // more samples than slots: a block per sample
static_assert(chunks_per_sample(1, 173166, 132 * 8) == 1056);   // n = 150528, one sample: one full wave
// 3000 blocks, 2.84 waves of at most 16 tile pairs: 48, against 44.3 spread evenly (1 chunk: 78; 7: 48 too).
static_assert(chunks_per_sample(600, 78, 132 * 8) == 5);

struct Inputs {
  int64_t t_stride0, t_stride1, o_stride0, o_stride1, d_stride0, d_stride1;
};

template <typename scalar_t>
__device__ __forceinline__ void load_feature(const scalar_t* __restrict__ target, const scalar_t* __restrict__ other,
                                             const bool* __restrict__ domain, const Inputs& in, int64_t b,
                                             int64_t k, int64_t n, bool increase, float& t, float& u) {
  if (k < n) {
    prepare(static_cast<float>(target[b * in.t_stride0 + k * in.t_stride1]),
            static_cast<float>(other[b * in.o_stride0 + k * in.o_stride1]), domain[b * in.d_stride0 + k * in.d_stride1],
            increase, t, u);
  } else {
    t = u = -std::numeric_limits<float>::infinity();
  }
}

__device__ __forceinline__ void scan_pair(float tp, float up, float tq, float uq, int row, float& best,
                                          int& best_row) {
  const float a = __fadd_rn(tp, tq);
  const float s = __fadd_rn(up, uq);
  const float score = __fmul_rn(a, s);
  // fminf ignores one NaN, but then score is NaN and fails the comparison.
  if (fminf(a, s) > 0.0f && score > best) {
    best = score;
    best_row = row;
  }
}

// fl(max(a, 0) * u) of the pair (p, q): the pair's score where that is above 0 (see the file comment).
__device__ __forceinline__ float clamped_score(float tp, float up, float tq, float uq) {
  return __fmul_rn(fmaxf(__fadd_rn(tp, tq), 0.0f), __fadd_rn(up, uq));
}

// Step 1: the highest clamped score of the rows of one tile against the thread's column (tq, uq), at least 0. Off
// the diagonal all kTile rows, read four at a time (one shared-memory load serves four pairs) into four running
// maxima (fmaxf is exact, so their order does not matter); on the diagonal only the rows before the column.
template <bool kDiagonal>
__device__ __forceinline__ float tile_max_score(const float* __restrict__ row_t, const float* __restrict__ row_u,
                                                float tq, float uq, int limit) {
  if constexpr (kDiagonal) {
    float best = 0.0f;
    for (int i = 0; i < limit; ++i) best = fmaxf(best, clamped_score(row_t[i], row_u[i], tq, uq));
    return best;
  }
  const float4* t4 = reinterpret_cast<const float4*>(row_t);
  const float4* u4 = reinterpret_cast<const float4*>(row_u);
  float4 best = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
#pragma unroll 4
  for (int i = 0; i < kTile / 4; ++i) {
    const float4 t = t4[i];
    const float4 u = u4[i];
    best.x = fmaxf(best.x, clamped_score(t.x, u.x, tq, uq));
    best.y = fmaxf(best.y, clamped_score(t.y, u.y, tq, uq));
    best.z = fmaxf(best.z, clamped_score(t.z, u.z, tq, uq));
    best.w = fmaxf(best.w, clamped_score(t.w, u.w, tq, uq));
  }
  return fmaxf(fmaxf(best.x, best.y), fmaxf(best.z, best.w));
}

// Step 2: the first of the `limit` rows whose clamped score against (tq, uq) is `score` (> 0, found by step 1).
__device__ __forceinline__ int first_row_scoring(const float* __restrict__ row_t, const float* __restrict__ row_u,
                                                 float tq, float uq, int limit, float score) {
  for (int i = 0; i < limit; ++i) {
    if (clamped_score(row_t[i], row_u[i], tq, uq) == score) return i;
  }
  return limit;  // not reached: step 1 found the score among these rows
}

// The reference's scan of the rows of one tile against the thread's column (tq, uq), for a valid pair scoring 0
// (step 2): the best score and its row (strictly greater wins, and rows come in order, so the smallest row among
// ties). Off the diagonal all kTile rows, on the diagonal only the rows before the column.
template <bool kDiagonal>
__device__ __forceinline__ void scan_tile(const float* __restrict__ row_t, const float* __restrict__ row_u, float tq,
                                          float uq, int limit, float& best, int& best_row) {
  if constexpr (kDiagonal) {
    for (int i = 0; i < limit; ++i) scan_pair(row_t[i], row_u[i], tq, uq, i, best, best_row);
    return;
  }
  const float4* t4 = reinterpret_cast<const float4*>(row_t);
  const float4* u4 = reinterpret_cast<const float4*>(row_u);
#pragma unroll 4
  for (int i = 0; i < kTile / 4; ++i) {
    const float4 t = t4[i];
    const float4 u = u4[i];
    scan_pair(t.x, u.x, tq, uq, 4 * i, best, best_row);
    scan_pair(t.y, u.y, tq, uq, 4 * i + 1, best, best_row);
    scan_pair(t.z, u.z, tq, uq, 4 * i + 2, best, best_row);
    scan_pair(t.w, u.w, tq, uq, 4 * i + 3, best, best_row);
  }
}

__device__ __forceinline__ void take_if_better(float score, int32_t p, int32_t q, float& best, int32_t& best_p,
                                               int32_t& best_q) {
  if (ranks_before(score, p, q, best, best_p, best_q)) {
    best = score;
    best_p = p;
    best_q = q;
  }
}

// The block-wide maximum of v, in every thread.
__device__ __forceinline__ float block_max(float v, float* scratch) {
  for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = v;
  __syncthreads();
  float result = scratch[0];
  for (int w = 1; w < kWarps; ++w) result = fmaxf(result, scratch[w]);
  __syncthreads();
  return result;
}

// The maxima of t and u over each tile of each sample: one block per (sample, tile). The first block of each
// sample also resets its threshold to "nothing found" (-1), for the search kernel that follows on the stream.
template <typename scalar_t>
__global__ void __launch_bounds__(kTile)
    tile_max_kernel(const scalar_t* __restrict__ target, const scalar_t* __restrict__ other,
                    const bool* __restrict__ domain, Inputs in, int64_t n, bool increase, int64_t tiles,
                    float2* __restrict__ tile_max, int* __restrict__ threshold) {
  __shared__ float scratch[kWarps];
  const int64_t block = blockIdx.x;
  const int64_t b = block / tiles;
  const int64_t tile = block % tiles;
  float t, u;
  load_feature(target, other, domain, in, b, tile * kTile + threadIdx.x, n, increase, t, u);
  t = block_max(t, scratch);  // prepared values are never NaN
  u = block_max(u, scratch);
  if (threadIdx.x == 0) {
    tile_max[block] = make_float2(t, u);
    if (tile == 0) threshold[b] = -1;
  }
}

template <typename scalar_t>
__global__ void __launch_bounds__(kTile)
    search_kernel(const scalar_t* __restrict__ target, const scalar_t* __restrict__ other,
                  const bool* __restrict__ domain, Inputs in, int64_t n, bool increase, int64_t tiles,
                  int64_t tile_pairs, int64_t chunks, const float2* __restrict__ tile_max,
                  int* __restrict__ threshold, float* __restrict__ partial_score, int32_t* __restrict__ partial_p,
                  int32_t* __restrict__ partial_q) {
  __shared__ __align__(16) float row_t[kTile];
  __shared__ __align__(16) float row_u[kTile];
  __shared__ float warp_score[kWarps];
  __shared__ int32_t warp_p[kWarps];
  __shared__ int32_t warp_q[kWarps];

  const int64_t block = blockIdx.x;
  const int64_t b = block / chunks;
  const int64_t chunk = block % chunks;
  const int64_t first = chunk * tile_pairs / chunks;
  const int64_t last = (chunk + 1) * tile_pairs / chunks;
  const int tid = threadIdx.x;
  const float2* sample_max = tile_max + b * tiles;
  int* const sample_threshold = threshold + b;

  // The tile pair numbered `first`: row tile r has tiles - r column tiles, r..tiles-1.
  int64_t r = 0;
  int64_t rest = first;
  while (rest >= tiles - r) {
    rest -= tiles - r;
    ++r;
  }
  int64_t c = r + rest;

  float best = kNoPair;
  int32_t best_p = kNoIndex;
  int32_t best_q = kNoIndex;
  int64_t loaded_row_tile = -1;
  for (int64_t k = first; k < last; ++k) {
    if (r != loaded_row_tile) {  // uniform across the block
      __syncthreads();
      float t, u;
      load_feature(target, other, domain, in, b, r * kTile + tid, n, increase, t, u);
      row_t[tid] = t;
      row_u[tid] = u;
      __syncthreads();
      loaded_row_tile = r;
    }
    // The skip test may differ between threads (they read the threshold at different times); it only skips
    // the scan, never a barrier.
    const float2 max_r = sample_max[r];
    const float2 max_c = sample_max[c];
    const float a_bound = __fadd_rn(max_r.x, max_c.x);
    const float u_bound = __fadd_rn(max_r.y, max_c.y);
    const int seen_bits = *static_cast<volatile int*>(sample_threshold);  // read through to L2
    const float seen = seen_bits >= 0 ? __int_as_float(seen_bits) : kNoPair;
    if (a_bound > 0.0f && u_bound > 0.0f && !(__fmul_rn(a_bound, u_bound) < seen)) {
      const int64_t q = c * kTile + tid;
      float tq, uq;
      load_feature(target, other, domain, in, b, q, n, increase, tq, uq);
      const bool diagonal = r == c;
      const int rows = diagonal ? tid : kTile;  // on the diagonal, the rows before the column
      float tile_best = diagonal ? tile_max_score<true>(row_t, row_u, tq, uq, rows)
                                 : tile_max_score<false>(row_t, row_u, tq, uq, rows);
      int tile_row = 0;
      if (tile_best > 0.0f) {
        if (tile_best < seen) tile_best = kNoPair;  // cannot win or tie: not located
        else tile_row = first_row_scoring(row_t, row_u, tq, uq, rows, tile_best);
      } else if (seen > 0.0f) {
        tile_best = kNoPair;  // a score above 0 exists: a pair scoring 0 cannot win
      } else {
        tile_best = kNoPair;
        if (diagonal) {
          scan_tile<true>(row_t, row_u, tq, uq, rows, tile_best, tile_row);
        } else {
          scan_tile<false>(row_t, row_u, tq, uq, rows, tile_best, tile_row);
        }
      }
      if (tile_best >= 0.0f) {
        take_if_better(tile_best, static_cast<int32_t>(r * kTile + tile_row), static_cast<int32_t>(q), best, best_p,
                       best_q);
        // Non-negative floats order like their bits as signed ints.
        if (tile_best > seen) atomicMax(sample_threshold, __float_as_int(tile_best));
      }
    }
    if (++c == tiles) {
      ++r;
      c = r;
    }
  }

  // Block reduction in (score desc, p asc, q asc) order.
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other_score = __shfl_down_sync(0xffffffffu, best, offset);
    const int32_t other_p = __shfl_down_sync(0xffffffffu, best_p, offset);
    const int32_t other_q = __shfl_down_sync(0xffffffffu, best_q, offset);
    take_if_better(other_score, other_p, other_q, best, best_p, best_q);
  }
  const int warp = tid / 32;
  if (tid % 32 == 0) {
    warp_score[warp] = best;
    warp_p[warp] = best_p;
    warp_q[warp] = best_q;
  }
  __syncthreads();
  if (tid == 0) {
    for (int w = 1; w < kWarps; ++w) take_if_better(warp_score[w], warp_p[w], warp_q[w], best, best_p, best_q);
    partial_score[block] = best;
    partial_p[block] = best_p;
    partial_q[block] = best_q;
  }
}

// One thread per sample: its partials, in order.
__global__ void finish_kernel(const float* __restrict__ partial_score, const int32_t* __restrict__ partial_p,
                              const int32_t* __restrict__ partial_q, int64_t batch, int64_t chunks,
                              int64_t* __restrict__ p_out, int64_t* __restrict__ q_out, bool* __restrict__ found) {
  const int64_t b = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (b >= batch) return;
  float best = kNoPair;
  int32_t best_p = kNoIndex;
  int32_t best_q = kNoIndex;
  for (int64_t k = b * chunks; k < (b + 1) * chunks; ++k) {
    take_if_better(partial_score[k], partial_p[k], partial_q[k], best, best_p, best_q);
  }
  const bool ok = best >= 0.0f;
  p_out[b] = ok ? best_p : -1;
  q_out[b] = ok ? best_q : -1;
  found[b] = ok;
}

// Blocks of search_kernel<scalar_t> that `device` runs at once: SMs x resident blocks per SM, from the occupancy
// API (the kernel's registers, shared memory and block size on this device), asked once per device.
template <typename scalar_t>
int64_t resident_search_blocks(c10::DeviceIndex device) {
  static std::array<std::atomic<int>, C10_COMPILE_TIME_MAX_GPUS> blocks_per_sm{};
  int per_sm = device < C10_COMPILE_TIME_MAX_GPUS ? blocks_per_sm[device].load(std::memory_order_relaxed) : 0;
  if (per_sm == 0) {
    C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, search_kernel<scalar_t>, kTile, 0));
    per_sm = std::max(per_sm, 1);
    if (device < C10_COMPILE_TIME_MAX_GPUS) blocks_per_sm[device].store(per_sm, std::memory_order_relaxed);
  }
  return static_cast<int64_t>(per_sm) * at::cuda::getDeviceProperties(device)->multiProcessorCount;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> search_cuda(const at::Tensor& target_grad,
                                                           const at::Tensor& other_grad,
                                                           const at::Tensor& search_domain, bool increase) {
  const int64_t n = check_inputs(target_grad, other_grad, search_domain);
  const c10::cuda::CUDAGuard guard(target_grad.device());
  const int64_t batch = target_grad.size(0);
  if (batch == 0 || n < 2) return empty_result(target_grad);  // no pair to search: the only fills

  const int64_t tiles = (n + kTile - 1) / kTile;
  const int64_t tile_pairs = tiles * (tiles + 1) / 2;
  TORCH_CHECK_VALUE(batch * tiles <= std::numeric_limits<int32_t>::max(), "nemesis_fast: target_grad is too large (",
                    batch, " x ", n, ")");
  const auto options = target_grad.options();
  // Every element of these is written by the kernels before it is read: no fills.
  at::Tensor tile_max = at::empty({batch * tiles, 2}, options.dtype(at::kFloat));
  at::Tensor threshold = at::empty({batch}, options.dtype(at::kInt));
  at::Tensor p = at::empty({batch}, options.dtype(at::kLong));
  at::Tensor q = at::empty({batch}, options.dtype(at::kLong));
  at::Tensor found = at::empty({batch}, options.dtype(at::kBool));
  const Inputs in{target_grad.stride(0), target_grad.stride(1), other_grad.stride(0),
                  other_grad.stride(1),  search_domain.stride(0), search_domain.stride(1)};
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, target_grad.scalar_type(), "jsma_saliency_search_cuda", [&] {
        const int64_t chunks =
            chunks_per_sample(batch, tile_pairs, resident_search_blocks<scalar_t>(target_grad.device().index()));
        const int64_t blocks = batch * chunks;
        TORCH_CHECK_VALUE(blocks <= std::numeric_limits<int32_t>::max(),
                          "nemesis_fast: target_grad has too many samples (", batch, ")");
        at::Tensor partial_score = at::empty({blocks}, options.dtype(at::kFloat));
        at::Tensor partial_index = at::empty({2, blocks}, options.dtype(at::kInt));
        const scalar_t* t = target_grad.const_data_ptr<scalar_t>();
        const scalar_t* o = other_grad.const_data_ptr<scalar_t>();
        const bool* d = search_domain.const_data_ptr<bool>();
        auto* maxima = reinterpret_cast<float2*>(tile_max.mutable_data_ptr<float>());
        int* thresholds = threshold.mutable_data_ptr<int>();
        tile_max_kernel<scalar_t>
            <<<static_cast<unsigned>(batch * tiles), kTile, 0, stream>>>(t, o, d, in, n, increase, tiles, maxima,
                                                                          thresholds);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        int32_t* partial_p = partial_index.mutable_data_ptr<int32_t>();
        search_kernel<scalar_t><<<static_cast<unsigned>(blocks), kTile, 0, stream>>>(
            t, o, d, in, n, increase, tiles, tile_pairs, chunks, maxima, thresholds,
            partial_score.mutable_data_ptr<float>(), partial_p, partial_p + blocks);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        constexpr int kFinishThreads = 128;
        const auto finish_blocks = static_cast<unsigned>((batch + kFinishThreads - 1) / kFinishThreads);
        finish_kernel<<<finish_blocks, kFinishThreads, 0, stream>>>(
            partial_score.const_data_ptr<float>(), partial_p, partial_p + blocks, batch, chunks,
            p.mutable_data_ptr<int64_t>(), q.mutable_data_ptr<int64_t>(), found.mutable_data_ptr<bool>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return {p, q, found};
}

}  // namespace

TORCH_LIBRARY_IMPL(nemesis_fast, CUDA, m) {
  m.impl("jsma_saliency_search", &search_cuda);
}

}  // namespace nemesis_fast::jsma_saliency_search
