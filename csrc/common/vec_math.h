// Torch-free elementwise math that the compiler can vectorize.
//
// Internal linkage (an unnamed namespace): the CPU module compiles its kernels once per instruction set
// (csrc/cpu/isa/), and an inline function with external linkage would be kept in ONE copy by the linker, from
// any of those translation units, so the baseline kernels could end up calling an AVX-512 copy.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mkefast {
namespace {

// exp(x) for float, branch-free so that `#pragma omp simd` loops vectorize it (glibc's expf is a scalar
// call without -ffast-math). Cephes' expf scheme:
//   n = round(x / ln 2),  r = x − n·ln 2 (ln 2 split in two for an exact product),  |r| ≤ ln2 / 2
//   exp(r) ≈ 1 + r + r²·P(r) (degree-5 minimax),  exp(x) = 2^n · exp(r)
// Max relative error ≈ 2 ulp on [-87, 88]. Below -87 (where 2^n would be denormal) it returns 0, above
// 88 it saturates at exp(88) — the kernels call it only on arguments ≤ 0 (x − max, −(x−r)²/(2σ²)). NaN in
// gives NaN out: the clamps are written as comparisons that a NaN fails, and P(NaN) is NaN.
inline float fast_exp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;
  constexpr float kLn2Lo = -2.12194440e-4f;
  constexpr float kRound = 12582912.0f;  // 1.5 · 2^23: adding it rounds to the nearest integer (SSE2 only)
  const float xc = x > 88.0f ? 88.0f : x;
  const float t = xc * kLog2e + kRound;
  const float n = t - kRound;
  std::int32_t ti;
  std::memcpy(&ti, &t, sizeof ti);
  const std::int32_t ni = ti - 0x4B400000;  // the integer n, read from the mantissa of t
  const float r = (xc - n * kLn2Hi) - n * kLn2Lo;
  const float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float er = p * r2 + r + 1.0f;
  // 2^n built in the exponent field; n ∈ [-126, 127] for xc ∈ [-87, 88]. Unsigned arithmetic keeps the
  // (discarded) results for NaN or very negative x well defined.
  const std::uint32_t bits = (static_cast<std::uint32_t>(ni) + 127u) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const float y = er * scale;
  return x < -87.0f ? 0.0f : y;
}

// The exp of the dense loops: the vectorizable one in float, the libm one in double (the float64 kernels
// are the tight-tolerance ones, not the fast ones).
inline float vexp(float x) { return fast_exp(x); }
inline double vexp(double x) { return std::exp(x); }

}  // namespace
}  // namespace mkefast
