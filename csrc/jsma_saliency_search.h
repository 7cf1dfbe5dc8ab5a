// Argument checks and the per-pair math of jsma_saliency_search, shared by the CPU and CUDA kernels.
//
// Each feature i of a sample becomes a pair of float32 values (t_i, u_i) such that for a pair p < q,
//   a = t_p + t_q,  u = u_p + u_q,  valid iff a > 0 and u > 0,  score = a * u.
// Increasing: t = target_grad, u = -other_grad, so u = -(o_p + o_q) exactly (rounding is symmetric) and the
// score is a * (-b). Decreasing: t = -target_grad, u = other_grad, so the score is (-a) * b. A feature outside
// the domain or with a NaN gradient becomes (-inf, -inf): every pair touching it has a = -inf or NaN, invalid.
// A valid score is >= 0 (0 after an underflow), so -1 marks "no valid pair".
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <cstdint>
#include <limits>

#include "checks.h"

namespace nemesis_fast::jsma_saliency_search {

constexpr float kNoPair = -1.0f;

// The (t, u) values of one feature; see the file comment.
C10_HOST_DEVICE inline void prepare(float target, float other, bool in_domain, bool increase, float& t, float& u) {
  const bool usable = in_domain && target == target && other == other;  // x == x is false only for NaN
  const float minus_inf = -std::numeric_limits<float>::infinity();
  t = usable ? (increase ? target : -target) : minus_inf;
  u = usable ? (increase ? -other : other) : minus_inf;
}

// Whether (score, p, q) ranks before (best, best_p, best_q): higher score, then smaller p, then smaller q.
C10_HOST_DEVICE inline bool ranks_before(float score, int64_t p, int64_t q, float best, int64_t best_p,
                                         int64_t best_q) {
  return score > best || (score == best && (p < best_p || (p == best_p && q < best_q)));
}

// Checks the inputs; returns n (features per sample).
inline int64_t check_inputs(const at::Tensor& target_grad, const at::Tensor& other_grad,
                            const at::Tensor& search_domain) {
  check_float_tensor(target_grad, "target_grad");
  check_same_dtype_device(target_grad, "target_grad", other_grad, "other_grad");
  TORCH_CHECK_VALUE(target_grad.dim() == 2, "nemesis_fast: target_grad must have shape (B, n), got ",
                    target_grad.sizes());
  check_same_shape(target_grad, "target_grad", other_grad, "other_grad");
  check_same_shape(target_grad, "target_grad", search_domain, "search_domain");
  TORCH_CHECK_VALUE(search_domain.scalar_type() == at::kBool, "nemesis_fast: search_domain must be a bool tensor, got ",
                    search_domain.scalar_type());
  TORCH_CHECK_VALUE(search_domain.device() == target_grad.device(), "nemesis_fast: search_domain must be on ",
                    target_grad.device(), ", got ", search_domain.device());
  const int64_t n = target_grad.size(1);
  TORCH_CHECK_VALUE(n <= std::numeric_limits<int32_t>::max(), "nemesis_fast: target_grad has ", n,
                    " features per sample; at most 2^31 - 1 are supported");
  return n;
}

// Outputs (p, q, found) of shape (B,), filled with "no pair": for a kernel that writes only the samples where it
// finds one (CPU), or a call with nothing to search (B = 0 or n < 2). Three fills: the CUDA kernel, whose
// finishing kernel writes every output, allocates its own instead.
inline std::tuple<at::Tensor, at::Tensor, at::Tensor> empty_result(const at::Tensor& target_grad) {
  const auto options = target_grad.options().dtype(at::kLong);
  const int64_t batch = target_grad.size(0);
  return {at::full({batch}, -1, options), at::full({batch}, -1, options),
          at::zeros({batch}, options.dtype(at::kBool))};
}

}  // namespace nemesis_fast::jsma_saliency_search
