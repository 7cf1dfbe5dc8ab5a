// The x86 vector extensions that the CPU kernels may use: clones of the plain loops for AVX-512 and AVX2 (the
// compiler vectorises them; the loader picks the widest this CPU runs), and explicit intrinsic loops where the
// compiler's own would be poor. NEMESIS_FAST_CPU_SIMD=avx2|scalar caps the explicit loops (the tests check each).
#pragma once

#include <cstdlib>
#include <string>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#include <immintrin.h>
#define NEMESIS_FAST_X86_SIMD 1
#define NEMESIS_FAST_CPU_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define NEMESIS_FAST_CPU_CLONES
#endif

namespace nemesis_fast::cpu {

enum class Simd { kScalar, kAvx2, kAvx512 };

// The widest explicit SIMD loop this CPU runs, within the cap set by NEMESIS_FAST_CPU_SIMD.
inline Simd widest_simd() {
  const char* cap = std::getenv("NEMESIS_FAST_CPU_SIMD");
  const std::string limit = cap ? cap : "";
#ifdef NEMESIS_FAST_X86_SIMD
  __builtin_cpu_init();
  if (limit.empty() && __builtin_cpu_supports("avx512f")) return Simd::kAvx512;
  if ((limit.empty() || limit == "avx2") && __builtin_cpu_supports("avx2")) return Simd::kAvx2;
#endif
  return Simd::kScalar;
}

}  // namespace nemesis_fast::cpu
