// Counter-based normal noise shared by the C++ and CUDA kernels (and mirrored in Triton and in the Python
// reference, nemesis_fast/reference/gaussian_augment.py, which is the specification).
//
// Philox4x32-10 (Salmon et al., SC 2011) maps a 128-bit counter and a 64-bit key to four 32-bit words. Box-Muller
// turns each pair of words into two standard normals: with k = w >> 8 (24 bits), the radius is sqrt(-2 ln u),
// u = (k_a + 1) * 2^-24 in (0, 1], and the angle is 2 pi k_b / 2^24. ln, sin and cos are fixed float32
// polynomials evaluated in a fixed order, with no library calls and no branches, so that the loops vectorise on
// CPUs and every backend produces the same bits: each + and * below is one correctly rounded IEEE operation
// (the rn:: helpers), never fused with its neighbour into a multiply-add.
#pragma once

#include <c10/macros/Macros.h>

#include <cmath>
#include <cstdint>
#include <cstring>

namespace nemesis_fast::philox {

constexpr uint32_t kM0 = 0xD2511F53u;
constexpr uint32_t kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u;
constexpr uint32_t kW1 = 0xBB67AE85u;
constexpr int kRounds = 10;

// Coefficients fitted for this package; see the reference module.
constexpr float kSin0 = -0.0001951528392964974f, kSin1 = 0.00833216030150652f, kSin2 = -0.16666655242443085f;
constexpr float kCos0 = 2.44331567955669e-05f, kCos1 = -0.0013887316454201937f, kCos2 = 0.04166664555668831f;
constexpr float kLog0 = -0.07634492963552475f, kLog1 = 0.12761574983596802f, kLog2 = -0.13160182535648346f,
                kLog3 = 0.14201758801937103f, kLog4 = -0.16623356938362122f, kLog5 = 0.20001226663589478f,
                kLog6 = -0.2500081956386566f, kLog7 = 0.3333333134651184f;
constexpr float kLn2 = 0.6931471824645996f;
constexpr float kSqrt2 = 1.4142135381698608f;
constexpr float kAngleStep = 3.7450702927776729e-07f;  // 2 pi / 2^24
constexpr float kInv2To24 = 5.9604644775390625e-08f;   // 2^-24

struct Words {
  uint32_t w0, w1, w2, w3;
};

C10_HOST_DEVICE inline Words philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                           uint32_t k1) {
#pragma unroll
  for (int round = 0; round < kRounds; ++round) {
    if (round > 0) {
      k0 += kW0;
      k1 += kW1;
    }
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  return {c0, c1, c2, c3};
}

C10_HOST_DEVICE inline float float_from_bits(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
#endif
}

C10_HOST_DEVICE inline uint32_t bits_from_float(float value) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(value);
#else
  uint32_t bits;
  std::memcpy(&bits, &value, sizeof(bits));
  return bits;
#endif
}

// Correctly rounded arithmetic that no compiler contracts into an FMA. On the GPU the __f*_rn / __d*_rn
// intrinsics guarantee it whatever nvcc's flags (-fmad, --use_fast_math); host code is compiled with
// -ffp-contract=off (setup.py), where plain operators are IEEE operations.
namespace rn {
#if defined(__CUDA_ARCH__)
__device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float div(float a, float b) { return __fdiv_rn(a, b); }
__device__ __forceinline__ float sqrt(float a) { return __fsqrt_rn(a); }
__device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double div(double a, double b) { return __ddiv_rn(a, b); }
#else
template <typename T>
inline T add(T a, T b) {
  return a + b;
}
template <typename T>
inline T mul(T a, T b) {
  return a * b;
}
template <typename T>
inline T div(T a, T b) {
  return a / b;
}
inline float sqrt(float a) { return std::sqrt(a); }
#endif
}  // namespace rn

// ln u for u in (0, 1]: u = 2^e f with f in [sqrt(1/2), sqrt(2)), ln u = ln(1 + t) + e ln 2 with t = f - 1.
C10_HOST_DEVICE inline float log_unit(float u) {
  const uint32_t bits = bits_from_float(u);
  int32_t e = static_cast<int32_t>(bits >> 23) - 127;
  float f = float_from_bits((bits & 0x7FFFFFu) | 0x3F800000u);
  const bool big = f > kSqrt2;
  f = big ? rn::mul(f, 0.5f) : f;
  e = big ? e + 1 : e;
  const float t = rn::add(f, -1.0f);
  float p = rn::add(rn::mul(kLog0, t), kLog1);
  p = rn::add(rn::mul(p, t), kLog2);
  p = rn::add(rn::mul(p, t), kLog3);
  p = rn::add(rn::mul(p, t), kLog4);
  p = rn::add(rn::mul(p, t), kLog5);
  p = rn::add(rn::mul(p, t), kLog6);
  p = rn::add(rn::mul(p, t), kLog7);
  // t + t t (t p - 1/2) + e ln 2, left to right.
  const float series = rn::add(t, rn::mul(rn::mul(t, t), rn::add(rn::mul(t, p), -0.5f)));
  return rn::add(series, rn::mul(static_cast<float>(e), kLn2));
}

// Two standard normals (r cos theta, r sin theta) from two words.
C10_HOST_DEVICE inline void box_muller(uint32_t radius_word, uint32_t angle_word, float& z_cos, float& z_sin) {
  const float u = rn::mul(static_cast<float>(static_cast<int32_t>(radius_word >> 8) + 1), kInv2To24);
  const float radius = rn::sqrt(rn::mul(log_unit(u), -2.0f));
  const int32_t k = static_cast<int32_t>(angle_word >> 8);
  const int32_t quadrant = (k + (1 << 21)) >> 22;  // nearest multiple of pi/2, 0..4
  const float x = rn::mul(static_cast<float>(k - (quadrant << 22)), kAngleStep);  // [-pi/4, pi/4)
  const float x2 = rn::mul(x, x);
  // sin x = x + x x2 ((S0 x2 + S1) x2 + S2); cos x = 1 + x2 (x2 ((C0 x2 + C1) x2 + C2) - 1/2).
  const float sin_poly = rn::add(rn::mul(rn::add(rn::mul(kSin0, x2), kSin1), x2), kSin2);
  const float sin_x = rn::add(x, rn::mul(rn::mul(x, x2), sin_poly));
  const float cos_poly = rn::add(rn::mul(rn::add(rn::mul(kCos0, x2), kCos1), x2), kCos2);
  const float cos_x = rn::add(1.0f, rn::mul(x2, rn::add(rn::mul(x2, cos_poly), -0.5f)));
  // cos(theta), sin(theta) for theta = quadrant * pi/2 + x.
  const bool odd = (quadrant & 1) != 0;
  const float cos_base = odd ? sin_x : cos_x;
  const float sin_base = odd ? cos_x : sin_x;
  const bool cos_negative = ((quadrant + 1) & 2) != 0;
  const bool sin_negative = (quadrant & 2) != 0;
  z_cos = rn::mul(radius, cos_negative ? -cos_base : cos_base);
  z_sin = rn::mul(radius, sin_negative ? -sin_base : sin_base);
}

// The four normals of feature group `group` (features 4 group .. 4 group + 3) of noisy copy `copy` of the sample
// with global index `sample`, under `seed` (key = its low and high 32 bits).
struct Normal4 {
  float z0, z1, z2, z3;
};

C10_HOST_DEVICE inline Normal4 normal4(uint32_t group, uint32_t copy, uint32_t sample_lo, uint32_t sample_hi,
                                       uint32_t key_lo, uint32_t key_hi) {
  const Words w = philox4x32_10(group, copy, sample_lo, sample_hi, key_lo, key_hi);
  Normal4 n;
  box_muller(w.w0, w.w1, n.z0, n.z1);
  box_muller(w.w2, w.w3, n.z2, n.z3);
  return n;
}

}  // namespace nemesis_fast::philox
