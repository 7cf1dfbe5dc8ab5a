// CPU kernel of jsma_saliency_search.
//
// 1. Each sample's usable features (in the domain, no NaN) are packed, in order, into float32 arrays (t, u) and
//    their positions, padded with (-inf, -inf) so that the scan reads whole vectors past the end. Packing keeps
//    the order, so the smallest packed (i, j) is the smallest (p, q).
// 2. The pairs i < j of each sample are split into row ranges of similar pair counts, grouped into tasks of at
//    least kMinPairsPerTask pairs that run in parallel (at::parallel_for). A row is scanned with 16-lane
//    vectors; each lane keeps its running best score and j (strictly greater wins, so a lane keeps its first,
//    smallest j), then the lanes are reduced.
//    Rows whose score bound (suffix maxima of t and u) is below the best score found so far in the same range
//    are skipped: the bound is exact under float32 rounding (rounding is monotone), so no pair that could win
//    or tie is ever skipped.
// 3. The row ranges of a sample are combined in order, a later one winning only with a strictly higher score.
//
// Extra memory: four float32 arrays (t, u and their suffix maxima) and one int32 array (positions) of about n
// entries per sample: O(B * n).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "jsma_saliency_search.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define NEMESIS_FAST_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NEMESIS_FAST_CPU_CLONES
#endif

namespace nemesis_fast::jsma_saliency_search {
namespace {

constexpr int64_t kLanes = 16;
constexpr int64_t kPad = kLanes;  // (-inf, -inf) entries after each packed sample
// Work below these sizes runs on the calling thread: waking the thread pool costs more than it saves, and on a
// loaded machine a parallel region can wait a whole scheduler time slice for its last thread.
constexpr int64_t kMinPairsPerTask = 1 << 24;  // a few milliseconds of one core
constexpr int64_t kMinFeaturesPerPackTask = 1 << 20;

struct Best {
  float score = kNoPair;
  int64_t i = -1;  // packed positions
  int64_t j = -1;
};

// The best pair (i, j) of rows [row_begin, row_end) of one packed sample of m features. `t` and `u` hold m values
// then kPad of -inf; `t_max[i]` / `u_max[i]` are the maxima of t / u over positions >= i (-inf at m).
// The lane loops are plain scalar code that the compiler vectorises for each cloned instruction set (GCC lowers
// generic vector types before it clones, so they would run as scalar code here).
NEMESIS_FAST_CPU_CLONES Best scan_rows(const float* __restrict t, const float* __restrict u,
                                       const float* __restrict t_max, const float* __restrict u_max, int64_t m,
                                       int64_t row_begin, int64_t row_end) {
  Best best;
  for (int64_t i = row_begin; i < row_end; ++i) {
    const float tp = t[i];
    const float up = u[i];
    // Upper bound of every score in the row: fl(tp + t_q) <= fl(tp + max t) and likewise for u.
    const float a_bound = tp + t_max[i + 1];
    const float u_bound = up + u_max[i + 1];
    if (!(a_bound > 0.0f && u_bound > 0.0f)) continue;  // no valid pair in the row (also catches NaN)
    if (best.score >= 0.0f && a_bound * u_bound < best.score) continue;
    float lane_best[kLanes];
    int32_t lane_j[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) {
      lane_best[l] = kNoPair;
      lane_j[l] = 0;
    }
    for (int64_t j = i + 1; j < m; j += kLanes) {  // reads at most kLanes - 1 padding entries
      for (int64_t l = 0; l < kLanes; ++l) {
        const float a = tp + t[j + l];
        const float s = up + u[j + l];
        const float score = a * s;
        // Lanes see increasing j, and only a strictly higher score replaces: each lane keeps its smallest j.
        const bool better = (a > 0.0f) & (s > 0.0f) & (score > lane_best[l]);
        lane_best[l] = better ? score : lane_best[l];
        lane_j[l] = better ? static_cast<int32_t>(j + l) : lane_j[l];
      }
    }
    float row_best = kNoPair;
    int64_t row_j = -1;
    for (int64_t l = 0; l < kLanes; ++l) {
      if (lane_best[l] > row_best || (lane_best[l] == row_best && lane_j[l] < row_j)) {
        row_best = lane_best[l];
        row_j = lane_j[l];
      }
    }
    if (row_best > best.score) best = {row_best, i, row_j};  // earlier rows win ties
  }
  return best;
}

// A range of rows of one sample.
struct Segment {
  int64_t sample;
  int64_t row_begin;
  int64_t row_end;
};

// Splits the pairs of every sample into row ranges of about `pairs_per_task` pairs or fewer, in (sample, row)
// order, and groups consecutive ranges into tasks of about `pairs_per_task` pairs: `task_starts` receives the
// first segment of each task, then the number of segments.
std::vector<Segment> make_segments(const std::vector<int64_t>& counts, int64_t pairs_per_task,
                                   std::vector<int64_t>& task_starts) {
  std::vector<Segment> segments;
  int64_t task_pairs = 0;
  for (int64_t b = 0; b < static_cast<int64_t>(counts.size()); ++b) {
    const int64_t m = counts[b];
    int64_t begin = 0;
    int64_t pairs = 0;
    for (int64_t i = 0; i + 1 < m; ++i) {
      pairs += m - 1 - i;
      if (pairs >= pairs_per_task || i + 2 == m) {
        if (task_pairs == 0) task_starts.push_back(static_cast<int64_t>(segments.size()));
        segments.push_back({b, begin, i + 1});
        task_pairs += pairs;
        if (task_pairs >= pairs_per_task) task_pairs = 0;
        begin = i + 1;
        pairs = 0;
      }
    }
  }
  task_starts.push_back(static_cast<int64_t>(segments.size()));
  return segments;
}

template <typename scalar_t>
void pack(const at::Tensor& target_grad, const at::Tensor& other_grad, const at::Tensor& search_domain,
          bool increase, float* t, float* u, float* t_max, float* u_max, int32_t* positions, int64_t* counts) {
  const auto tg = target_grad.accessor<scalar_t, 2>();
  const auto og = other_grad.accessor<scalar_t, 2>();
  const auto dom = search_domain.accessor<bool, 2>();
  const int64_t batch = target_grad.size(0);
  const int64_t n = target_grad.size(1);
  const int64_t stride = n + kPad;
  const float minus_inf = -std::numeric_limits<float>::infinity();
  const int64_t grain = std::max<int64_t>(1, kMinFeaturesPerPackTask / std::max<int64_t>(n, 1));
  at::parallel_for(0, batch, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* tb = t + b * stride;
      float* ub = u + b * stride;
      int32_t* pb = positions + b * n;
      int64_t m = 0;
      for (int64_t k = 0; k < n; ++k) {
        float tv, uv;
        prepare(static_cast<float>(tg[b][k]), static_cast<float>(og[b][k]), dom[b][k], increase, tv, uv);
        if (tv == minus_inf || uv == minus_inf) continue;  // unusable: every pair with it has a or u -inf or NaN
        tb[m] = tv;
        ub[m] = uv;
        pb[m] = static_cast<int32_t>(k);
        ++m;
      }
      std::fill(tb + m, tb + m + kPad, minus_inf);
      std::fill(ub + m, ub + m + kPad, minus_inf);
      float* tmb = t_max + b * stride;
      float* umb = u_max + b * stride;
      tmb[m] = umb[m] = minus_inf;
      for (int64_t k = m - 1; k >= 0; --k) {
        // Packed values are never NaN: a NaN gradient makes the feature unusable, and a NaN from inf - inf
        // cannot arise from a single value.
        tmb[k] = std::max(tb[k], tmb[k + 1]);
        umb[k] = std::max(ub[k], umb[k + 1]);
      }
      counts[b] = m;
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> search_cpu(const at::Tensor& target_grad, const at::Tensor& other_grad,
                                                          const at::Tensor& search_domain, bool increase) {
  const int64_t n = check_inputs(target_grad, other_grad, search_domain);
  auto result = empty_result(target_grad);
  const int64_t batch = target_grad.size(0);
  if (batch == 0 || n < 2) return result;

  const int64_t stride = n + kPad;
  const auto float_options = target_grad.options().dtype(at::kFloat);
  at::Tensor values = at::empty({4, batch, stride}, float_options);  // t, u, and their suffix maxima
  at::Tensor positions = at::empty({batch, n}, float_options.dtype(at::kInt));
  std::vector<int64_t> counts(batch);
  float* t = values.mutable_data_ptr<float>();
  float* u = t + batch * stride;
  float* t_max = u + batch * stride;
  float* u_max = t_max + batch * stride;
  int32_t* pos = positions.mutable_data_ptr<int32_t>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, target_grad.scalar_type(), "jsma_saliency_search_cpu",
                                  [&] {
                                    pack<scalar_t>(target_grad, other_grad, search_domain, increase, t, u, t_max,
                                                   u_max, pos, counts.data());
                                  });

  int64_t total_pairs = 0;
  for (const int64_t m : counts) total_pairs += m * (m - 1) / 2;
  const int64_t per_task = std::max(kMinPairsPerTask, total_pairs / (4 * at::get_num_threads()));
  std::vector<int64_t> task_starts;
  const std::vector<Segment> segments = make_segments(counts, per_task, task_starts);
  std::vector<Best> partial(segments.size());
  const auto tasks = static_cast<int64_t>(task_starts.size()) - 1;
  at::parallel_for(0, tasks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t k = task_starts[begin]; k < task_starts[end]; ++k) {
      const Segment& segment = segments[k];
      const int64_t offset = segment.sample * stride;
      partial[k] = scan_rows(t + offset, u + offset, t_max + offset, u_max + offset, counts[segment.sample],
                             segment.row_begin, segment.row_end);
    }
  });

  std::vector<Best> best(batch);
  for (size_t k = 0; k < segments.size(); ++k) {
    Best& b = best[segments[k].sample];
    if (partial[k].score > b.score) b = partial[k];  // the segments of a sample come in row order
  }
  auto& [p_out, q_out, found_out] = result;
  int64_t* p = p_out.mutable_data_ptr<int64_t>();
  int64_t* q = q_out.mutable_data_ptr<int64_t>();
  bool* found = found_out.mutable_data_ptr<bool>();
  for (int64_t b = 0; b < batch; ++b) {
    if (best[b].score < 0.0f) continue;
    p[b] = pos[b * n + best[b].i];
    q[b] = pos[b * n + best[b].j];
    found[b] = true;
  }
  return result;
}

}  // namespace

TORCH_LIBRARY_IMPL(nemesis_fast, CPU, m) {
  m.impl("jsma_saliency_search", &search_cpu);
}

}  // namespace nemesis_fast::jsma_saliency_search
