// CPU kernel of jsma_saliency_search.
//
// 1. Each sample's usable features (in the domain, no NaN) are packed, in order, into float32 arrays (t, u) and
//    their positions, padded with (-inf, -inf) so that the scan reads whole vectors past the end. Packing keeps
//    the order, so the smallest packed (i, j) is the smallest (p, q).
// 2. Each sample is first searched by bounding (pruned_search): a good pair from a few seed features gives a
//    score s0, and a bound that no pair scoring s0 or more can fail leaves, on a CNN's gradients, at most a few
//    hundred candidate pairs of the n^2 / 2. Where the bound keeps more than 1/kMaxCandidateShare of the pairs (flat or strongly
//    anticorrelated gradients) or cannot be used (magnitudes out of its range), the sample goes to step 3.
// 3. The pairs i < j of the remaining samples are split into row ranges of similar pair counts, grouped into
//    tasks of at least kMinPairsPerTask pairs that run in parallel (at::parallel_for). A row is scanned with
//    16-lane vectors for its highest clamped score (scan_rows), and read again for the first j holding it only
//    where it beats the range's best so far.
//    Rows whose score bound (suffix maxima of t and u) is below the best score found so far in the same range
//    are skipped: the bound is exact under float32 rounding (rounding is monotone), so no pair that could win
//    or tie is ever skipped.
// 4. The row ranges of a sample are combined in order, a later one winning only with a strictly higher score.
//
// Extra memory: four float32 arrays (t, u and their suffix maxima) and one int32 array (positions) of about n
// entries per sample, and the bounding's scratch of about n entries per thread: O(B * n).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "cpu/simd.h"
#include "jsma_saliency_search.h"

namespace nemesis_fast::jsma_saliency_search {
namespace {

constexpr int64_t kLanes = 16;
constexpr int64_t kPad = kLanes;  // (-inf, -inf) entries after each packed sample
// Work below these sizes runs on the calling thread: waking the thread pool costs more than it saves, and on a
// loaded machine a parallel region can wait a whole scheduler time slice for its last thread.
constexpr int64_t kMinPairsPerTask = 1 << 24;  // a few milliseconds of one core
constexpr int64_t kMinFeaturesPerPackTask = 1 << 20;
constexpr int64_t kMinFeaturesPerPruneTask = 1 << 16;
// pruned_search: samples of fewer usable features go straight to the full scan; the seeds are the top
// kSeedsPerKey features by t, by u and by t + u; the full scan takes over when more than 1/kMaxCandidateShare of
// the pairs stay candidates.
constexpr int64_t kMinPrunedFeatures = 64;
constexpr int64_t kSeedsPerKey = 16;
constexpr int64_t kMaxCandidateShare = 8;
// The bound's rounding analysis (see pruned_search) holds for |t|, |u| <= kLargestPruned and s0 >= kSmallestSeed:
// every sum and product of a pair that could score s0 or more is then a normal float32.
constexpr float kLargestPruned = 1e15f;
constexpr float kSmallestSeed = 1e-20f;

struct Best {
  float score = kNoPair;
  int64_t i = -1;  // packed positions
  int64_t j = -1;
};

// fl(max(a, 0) * u) of the pair (p, q): its score where that is above 0, which needs a > 0 and u > 0 (and then
// max(a, 0) = a, so the bits are the score's); an invalid pair's is 0, -0, negative or NaN, and so is a valid pair's
// that underflowed to 0. `x > y ? x : y` is the x86 max instruction's own rule (y where either is NaN), so the
// loops below vectorise to it.
inline float clamped_score(float tp, float up, float tq, float uq) {
  const float a = tp + tq;
  return (a > 0.0f ? a : 0.0f) * (up + uq);
}

// Scores pair (i, j), i < j, into `best` as the reference does: valid iff a > 0 and u > 0, score a * u, ties
// to the smaller (i, j).
inline void consider(const float* t, const float* u, int64_t i, int64_t j, Best& best) {
  const float a = t[i] + t[j];
  const float s = u[i] + u[j];
  if (a > 0.0f && s > 0.0f && ranks_before(a * s, i, j, best.score, best.i, best.j)) best = {a * s, i, j};
}

// The reference's scan of row i against the columns j > i of a packed sample of m features: its best score (-1
// where no pair is valid) and the smallest j holding it. For a row whose valid pairs all score 0.
Best scan_row_exactly(const float* __restrict t, const float* __restrict u, int64_t m, int64_t i) {
  Best best;
  for (int64_t j = i + 1; j < m; ++j) consider(t, u, i, j, best);
  return best;
}

// The best pair (i, j) of rows [row_begin, row_end) of one packed sample of m features. `t` and `u` hold m values
// then kPad of -inf; `t_max[i]` / `u_max[i]` are the maxima of t / u over positions >= i (-inf at m).
// A row is scanned for its highest clamped score alone (per lane a running maximum: two additions, two maxima and
// a multiplication a pair, no comparison and no index); only a row that beats the best so far (earlier rows win
// ties) is read again for the first j holding it, and a row with no score above 0 is scanned as the reference does
// while the range has found no valid pair, for a valid pair scoring 0.
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
    float lane_max[kLanes];
    for (int64_t l = 0; l < kLanes; ++l) lane_max[l] = 0.0f;
    for (int64_t j = i + 1; j < m; j += kLanes) {  // reads at most kLanes - 1 padding entries
#pragma GCC unroll 1  // kept a loop, which GCC vectorises (unrolled first, its 16 lanes stay scalar code)
      for (int64_t l = 0; l < kLanes; ++l) {
        const float score = clamped_score(tp, up, t[j + l], u[j + l]);
        lane_max[l] = score > lane_max[l] ? score : lane_max[l];
      }
    }
    float row_max = 0.0f;
    for (int64_t l = 0; l < kLanes; ++l) row_max = lane_max[l] > row_max ? lane_max[l] : row_max;
    if (row_max > 0.0f) {
      if (row_max > best.score) {
        int64_t j = i + 1;
        while (j < m && clamped_score(tp, up, t[j], u[j]) != row_max) ++j;
        // j < m: the same IEEE operations as the lanes' give the same bits; else, should a compiler ever round
        // the two differently, the row's best from the reference's own scan.
        best = j < m ? Best{row_max, i, j} : scan_row_exactly(t, u, m, i);
      }
    } else if (best.score < 0.0f) {
      const Best row = scan_row_exactly(t, u, m, i);
      if (row.score > best.score) best = row;
    }
  }
  return best;
}

// The kSeedsPerKey features of largest key seen so far (ties to the earlier feature), in no particular order.
class TopFeatures {
 public:
  void offer(float key, int32_t feature) {
    if (size_ < kSeedsPerKey) {
      keys_[size_] = key;
      features_[size_++] = feature;
      if (size_ == kSeedsPerKey) find_smallest();
    } else if (key > keys_[smallest_]) {
      keys_[smallest_] = key;
      features_[smallest_] = feature;
      find_smallest();
    }
  }
  const int32_t* begin() const { return features_; }
  const int32_t* end() const { return features_ + size_; }

 private:
  void find_smallest() {
    smallest_ = 0;
    for (int64_t k = 1; k < size_; ++k) {
      if (keys_[k] < keys_[smallest_]) smallest_ = k;
    }
  }
  float keys_[kSeedsPerKey];
  int32_t features_[kSeedsPerKey];
  int64_t size_ = 0;
  int64_t smallest_ = 0;
};

// The best pair of one packed sample of m features by bounding, into `out`; false where the bound does not pay
// (the caller then scans every pair).
//
// A seed pair with score s0 = a0 * u0 (the best among the top features by t, by u and by t + u) sets
// lambda = sqrt(u0 / a0) and c_k = lambda * t_k + u_k / lambda. For a valid pair with exact sums A = t_i + t_j > 0
// and U = u_i + u_j > 0, A * U <= ((lambda * A + U / lambda) / 2)^2 = ((c_i + c_j) / 2)^2 (AM-GM, any lambda > 0;
// equality at the seed). Its float32 score fl(fl(A) * fl(U)) is at most A * U * (1 + 2^-24)^3 when the sums and
// the product are normal floats, which the guards (|t|, |u| <= kLargestPruned, s0 >= kSmallestSeed) ensure for
// any pair scoring s0 or more. So a pair that scores s0 or more, the best and every pair tying with it, has
// c_i + c_j >= 2 sqrt(s0) (1 + 2^-24)^-1.5, which the threshold below undercuts by a relative 1e-6 (against
// 9e-8) and by 1e-12 of the largest |lambda t_k| + |u_k / lambda| (against the rounding of c and of 1 / lambda in
// double, about 1e-15 of it).
// Every pair passing the threshold is scored as the full scan scores it, so the result is the scan's, ties
// included.
bool pruned_search(const float* t, const float* u, int64_t m, std::vector<double>& c,
                   std::vector<std::pair<double, int32_t>>& kept, Best& out) {
  if (m < kMinPrunedFeatures) return false;
  TopFeatures by_t, by_u, by_sum;
  for (int64_t k = 0; k < m; ++k) {
    if (!(std::abs(t[k]) <= kLargestPruned && std::abs(u[k]) <= kLargestPruned)) return false;
    const auto feature = static_cast<int32_t>(k);
    by_t.offer(t[k], feature);
    by_u.offer(u[k], feature);
    by_sum.offer(t[k] + u[k], feature);
  }
  std::vector<int32_t> seeds(by_t.begin(), by_t.end());
  seeds.insert(seeds.end(), by_u.begin(), by_u.end());
  seeds.insert(seeds.end(), by_sum.begin(), by_sum.end());
  std::sort(seeds.begin(), seeds.end());
  seeds.erase(std::unique(seeds.begin(), seeds.end()), seeds.end());
  Best seed;
  for (size_t x = 0; x < seeds.size(); ++x) {
    for (size_t y = x + 1; y < seeds.size(); ++y) consider(t, u, seeds[x], seeds[y], seed);
  }
  if (!(seed.score >= kSmallestSeed)) return false;

  const double lambda = std::sqrt(static_cast<double>(u[seed.i] + u[seed.j]) / (t[seed.i] + t[seed.j]));
  const double inverse = 1.0 / lambda;
  c.resize(m);
  double c_max = -std::numeric_limits<double>::infinity();
  double spread = 0.0;
  for (int64_t k = 0; k < m; ++k) {
    c[k] = lambda * t[k] + inverse * u[k];
    c_max = std::max(c_max, c[k]);
    spread = std::max(spread, lambda * std::abs(t[k]) + inverse * std::abs(u[k]));
  }
  const double threshold = 2.0 * std::sqrt(static_cast<double>(seed.score)) * (1.0 - 1e-6) - 1e-12 * spread;
  kept.clear();
  for (int64_t k = 0; k < m; ++k) {
    if (c[k] + c_max >= threshold) kept.emplace_back(c[k], static_cast<int32_t>(k));
  }
  const auto descending = [](const auto& x, const auto& y) { return x.first > y.first; };
  // Flat gradients: when the `sure`-th largest c passes half the threshold, the `sure` largest pair up into more
  // candidates than the budget. Found in O(m), before the sort.
  const int64_t budget = m * (m - 1) / 2 / kMaxCandidateShare;
  const auto sure = static_cast<int64_t>(std::ceil(std::sqrt(2.0 * static_cast<double>(budget)))) + 1;
  if (static_cast<int64_t>(kept.size()) >= sure) {
    std::nth_element(kept.begin(), kept.begin() + (sure - 1), kept.end(), descending);
    if (2.0 * kept[sure - 1].first >= threshold) return false;
  }
  std::sort(kept.begin(), kept.end(), descending);

  // The partners of kept[r] among kept[0..r) are a prefix, shorter as c falls: count them, then score them.
  const auto count = static_cast<int64_t>(kept.size());
  int64_t partners = count;
  int64_t candidates = 0;
  for (int64_t r = 0; r < count; ++r) {
    while (partners > 0 && kept[partners - 1].first + kept[r].first < threshold) --partners;
    candidates += std::min(partners, r);
  }
  if (candidates > budget) return false;
  Best best = seed;
  partners = count;
  for (int64_t r = 0; r < count; ++r) {
    while (partners > 0 && kept[partners - 1].first + kept[r].first < threshold) --partners;
    for (int64_t s = 0; s < std::min(partners, r); ++s) {
      const int64_t i = kept[s].second;
      const int64_t j = kept[r].second;
      consider(t, u, std::min(i, j), std::max(i, j), best);
    }
  }
  out = best;
  return true;
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

  std::vector<Best> best(batch);
  std::vector<int64_t> scan_counts(counts);  // the features each sample leaves to the full scan (0: none)
  const int64_t prune_grain = std::max<int64_t>(1, kMinFeaturesPerPruneTask / std::max<int64_t>(n, 1));
  at::parallel_for(0, batch, prune_grain, [&](int64_t begin, int64_t end) {
    std::vector<double> c;
    std::vector<std::pair<double, int32_t>> kept;
    for (int64_t b = begin; b < end; ++b) {
      if (pruned_search(t + b * stride, u + b * stride, counts[b], c, kept, best[b])) scan_counts[b] = 0;
    }
  });

  int64_t total_pairs = 0;
  for (const int64_t m : scan_counts) total_pairs += m * (m - 1) / 2;
  const int64_t per_task = std::max(kMinPairsPerTask, total_pairs / (4 * at::get_num_threads()));
  std::vector<int64_t> task_starts;
  const std::vector<Segment> segments = make_segments(scan_counts, per_task, task_starts);
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
