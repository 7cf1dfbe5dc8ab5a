// CPU kernel of gaussian_augment. The work is cut into tiles of one sample's features (kTile at a time), spread
// over threads with at::parallel_for. A tile of x is read once, into the math type, and every output row of that
// sample is written from it: the originals, then each noisy copy. The normals of a copy are drawn in two vector
// loops: Philox words 16 (AVX-512) or 8 (AVX2) groups at a time, with intrinsics because compilers widen the
// 32x32->64-bit products of Philox into full 64-bit multiplies; then Box-Muller, which the compiler vectorises
// (cloned for AVX-512 and AVX2 and chosen at load time).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "cpu/simd.h"
#include "gaussian_augment.h"


namespace nemesis_fast::gaussian_augment {
namespace {

constexpr int64_t kTile = 2048;            // features per tile, a multiple of 4 * 16
constexpr int64_t kTileGroups = kTile / 4;  // Philox calls per tile
constexpr int64_t kGrain = 1 << 15;         // output elements per parallel task, at least

// Philox words of feature groups g0 .. g0 + n - 1 of one noisy copy: word j of group g0 + i goes to
// w[j * kTileGroups + i]. The SIMD versions round n up to their width (the buffer has room; extra words are unused).
using WordsFn = void (*)(uint32_t* w, uint32_t g0, int64_t n, uint32_t copy, uint32_t sample_lo, uint32_t sample_hi,
                         uint32_t key_lo, uint32_t key_hi);

void words_scalar(uint32_t* w, uint32_t g0, int64_t n, uint32_t copy, uint32_t sample_lo, uint32_t sample_hi,
                  uint32_t key_lo, uint32_t key_hi) {
  for (int64_t i = 0; i < n; ++i) {
    const philox::Words r =
        philox::philox4x32_10(g0 + static_cast<uint32_t>(i), copy, sample_lo, sample_hi, key_lo, key_hi);
    w[i] = r.w0;
    w[kTileGroups + i] = r.w1;
    w[2 * kTileGroups + i] = r.w2;
    w[3 * kTileGroups + i] = r.w3;
  }
}

#ifdef NEMESIS_FAST_X86_SIMD
// Philox on 16 lanes (16 groups) at a time. _mm512_mul_epu32 multiplies the even 32-bit lanes into 64-bit
// products; the odd lanes are shifted down first. The high and low halves are then blended back into 32-bit lanes.
__attribute__((target("avx512f"))) void words_avx512(uint32_t* w, uint32_t g0, int64_t n, uint32_t copy,
                                                     uint32_t sample_lo, uint32_t sample_hi, uint32_t key_lo,
                                                     uint32_t key_hi) {
  const __m512i m0 = _mm512_set1_epi64(philox::kM0), m1 = _mm512_set1_epi64(philox::kM1);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  constexpr __mmask16 kOdd = 0xAAAA;
  for (int64_t i = 0; i < n; i += 16) {
    __m512i c0 = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(g0 + static_cast<uint32_t>(i))), lane);
    __m512i c1 = _mm512_set1_epi32(static_cast<int>(copy));
    __m512i c2 = _mm512_set1_epi32(static_cast<int>(sample_lo));
    __m512i c3 = _mm512_set1_epi32(static_cast<int>(sample_hi));
    uint32_t k0 = key_lo, k1 = key_hi;
    for (int round = 0; round < philox::kRounds; ++round) {
      if (round > 0) {
        k0 += philox::kW0;
        k1 += philox::kW1;
      }
      const __m512i even0 = _mm512_mul_epu32(c0, m0), odd0 = _mm512_mul_epu32(_mm512_srli_epi64(c0, 32), m0);
      const __m512i even1 = _mm512_mul_epu32(c2, m1), odd1 = _mm512_mul_epu32(_mm512_srli_epi64(c2, 32), m1);
      const __m512i hi0 = _mm512_mask_blend_epi32(kOdd, _mm512_srli_epi64(even0, 32), odd0);
      const __m512i lo0 = _mm512_mask_blend_epi32(kOdd, even0, _mm512_slli_epi64(odd0, 32));
      const __m512i hi1 = _mm512_mask_blend_epi32(kOdd, _mm512_srli_epi64(even1, 32), odd1);
      const __m512i lo1 = _mm512_mask_blend_epi32(kOdd, even1, _mm512_slli_epi64(odd1, 32));
      c0 = _mm512_ternarylogic_epi32(hi1, c1, _mm512_set1_epi32(static_cast<int>(k0)), 0x96);  // a ^ b ^ c
      c1 = lo1;
      c2 = _mm512_ternarylogic_epi32(hi0, c3, _mm512_set1_epi32(static_cast<int>(k1)), 0x96);
      c3 = lo0;
    }
    _mm512_storeu_si512(w + i, c0);
    _mm512_storeu_si512(w + kTileGroups + i, c1);
    _mm512_storeu_si512(w + 2 * kTileGroups + i, c2);
    _mm512_storeu_si512(w + 3 * kTileGroups + i, c3);
  }
}

// The same on 8 lanes.
__attribute__((target("avx2"))) void words_avx2(uint32_t* w, uint32_t g0, int64_t n, uint32_t copy,
                                                uint32_t sample_lo, uint32_t sample_hi, uint32_t key_lo,
                                                uint32_t key_hi) {
  const __m256i m0 = _mm256_set1_epi64x(philox::kM0), m1 = _mm256_set1_epi64x(philox::kM1);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int64_t i = 0; i < n; i += 8) {
    __m256i c0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(g0 + static_cast<uint32_t>(i))), lane);
    __m256i c1 = _mm256_set1_epi32(static_cast<int>(copy));
    __m256i c2 = _mm256_set1_epi32(static_cast<int>(sample_lo));
    __m256i c3 = _mm256_set1_epi32(static_cast<int>(sample_hi));
    uint32_t k0 = key_lo, k1 = key_hi;
    for (int round = 0; round < philox::kRounds; ++round) {
      if (round > 0) {
        k0 += philox::kW0;
        k1 += philox::kW1;
      }
      const __m256i even0 = _mm256_mul_epu32(c0, m0), odd0 = _mm256_mul_epu32(_mm256_srli_epi64(c0, 32), m0);
      const __m256i even1 = _mm256_mul_epu32(c2, m1), odd1 = _mm256_mul_epu32(_mm256_srli_epi64(c2, 32), m1);
      const __m256i hi0 = _mm256_blend_epi32(_mm256_srli_epi64(even0, 32), odd0, 0xAA);
      const __m256i lo0 = _mm256_blend_epi32(even0, _mm256_slli_epi64(odd0, 32), 0xAA);
      const __m256i hi1 = _mm256_blend_epi32(_mm256_srli_epi64(even1, 32), odd1, 0xAA);
      const __m256i lo1 = _mm256_blend_epi32(even1, _mm256_slli_epi64(odd1, 32), 0xAA);
      c0 = _mm256_xor_si256(_mm256_xor_si256(hi1, c1), _mm256_set1_epi32(static_cast<int>(k0)));
      c1 = lo1;
      c2 = _mm256_xor_si256(_mm256_xor_si256(hi0, c3), _mm256_set1_epi32(static_cast<int>(k1)));
      c3 = lo0;
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + i), c0);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + kTileGroups + i), c1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + 2 * kTileGroups + i), c2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(w + 3 * kTileGroups + i), c3);
  }
}
#endif

// The widest version this CPU runs.
WordsFn pick_words() {
#ifdef NEMESIS_FAST_X86_SIMD
  switch (cpu::widest_simd()) {
    case cpu::Simd::kAvx512:
      return words_avx512;
    case cpu::Simd::kAvx2:
      return words_avx2;
    case cpu::Simd::kScalar:
      break;
  }
#endif
  return words_scalar;
}

const WordsFn words = pick_words();

// z[4 i + j] = normal j of group i, from the words of `words`.
NEMESIS_FAST_CPU_CLONES void box_muller_span(const uint32_t* __restrict w, float* __restrict z, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    float z0, z1, z2, z3;
    philox::box_muller(w[i], w[kTileGroups + i], z0, z1);
    philox::box_muller(w[2 * kTileGroups + i], w[3 * kTileGroups + i], z2, z3);
    z[4 * i] = z0;
    z[4 * i + 1] = z1;
    z[4 * i + 2] = z2;
    z[4 * i + 3] = z3;
  }
}

template <typename in_t, typename math_t>
void load_span(const in_t* __restrict x, math_t* __restrict v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] = load_value<math_t>(x[i]);
}

// out = clip(v + sigma z), or clip(v) without noise.
template <bool kNoise, typename math_t, typename out_t>
void store_span(const math_t* __restrict v, const float* __restrict z, math_t sigma, math_t low, math_t high,
                out_t* __restrict out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const math_t y = kNoise ? add_noise(v[i], sigma, z[i]) : v[i];
    out[i] = static_cast<out_t>(clip(y, low, high));
  }
}

template <typename in_t, typename out_t>
void augment(const at::Tensor& x, at::Tensor& out, const Plan& p) {
  using math_t = math_type<in_t>;
  const in_t* src = x.const_data_ptr<in_t>();
  out_t* dst = out.mutable_data_ptr<out_t>();
  const math_t sigma = static_cast<math_t>(p.sigma);
  const math_t low = static_cast<math_t>(p.clip_min), high = static_cast<math_t>(p.clip_max);
  const bool noise = p.sigma != 0;
  const int64_t tiles_per_sample = (p.features + kTile - 1) / kTile;
  const int64_t tiles = p.batch * tiles_per_sample;
  const int64_t work_per_tile = std::max<int64_t>(1, std::min(p.features, kTile) * p.rows);
  const int64_t row_stride = p.batch * p.features;  // from copy c of sample b to copy c + 1
  at::parallel_for(0, tiles, std::max<int64_t>(1, kGrain / work_per_tile), [&](int64_t begin, int64_t end) {
    alignas(64) math_t v[kTile];
    alignas(64) float z[kTile];
    alignas(64) uint32_t w[kTile];
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / tiles_per_sample;
      const int64_t f0 = (t - b * tiles_per_sample) * kTile;
      const int64_t n = std::min(kTile, p.features - f0);
      const uint64_t sample = p.offset + static_cast<uint64_t>(b);
      load_span(src + b * p.features + f0, v, n);
      out_t* row = dst + b * p.features + f0;
      if (p.include_original) {
        store_span<false>(v, z, sigma, low, high, row, n);
        row += row_stride;
      }
      for (int64_t c = 0; c < p.copies; ++c, row += row_stride) {
        if (!noise) {
          store_span<false>(v, z, sigma, low, high, row, n);
          continue;
        }
        const int64_t groups = (n + 3) / 4;
        words(w, static_cast<uint32_t>(f0 / 4), groups, static_cast<uint32_t>(c), static_cast<uint32_t>(sample),
              static_cast<uint32_t>(sample >> 32), p.key_lo, p.key_hi);
        box_muller_span(w, z, groups);
        store_span<true>(v, z, sigma, low, high, row, n);
      }
    }
  });
}

struct CpuLauncher {
  struct Guard {
    explicit Guard(c10::Device) {}
  };
  template <typename in_t, typename out_t>
  static void launch(const at::Tensor& x, at::Tensor& out, const Plan& plan) {
    augment<in_t, out_t>(x, out, plan);
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(nemesis_fast, CPU, m) {
  m.impl("gaussian_augment", &gaussian_augment_op<CpuLauncher>);
}

}  // namespace nemesis_fast::gaussian_augment
