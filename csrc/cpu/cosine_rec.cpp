// Cosine reconstruction loss on the CPU: one fused pass per row.
//
//   per_row = 1 - c^2,   c = <a, b> / den,   den = max(|a| |b|, 1e-8)
//
// Gradients (g = upstream gradient of the row):
//   den > 1e-8:  dc/da = b / den - c a / |a|^2      dc/db = a / den - c b / |b|^2
//   den = 1e-8:  dc/da = b / den                   dc/db = a / den       (the clamp is constant)
//   d(per_row)/da = -2 c g dc/da, and the same for b.
// Accumulation is in double for float inputs: the dot product and norms of a 1k-wide row then stay exact
// to fp32 rounding, at no measurable cost in this memory-bound loop. `omp simd` lets the compiler split the
// three sums over vector lanes (a fixed order, so still deterministic) without -ffast-math.
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "common/parallel.h"

namespace mkefast::cpu {
namespace {

constexpr double kEps = 1e-8;

struct RowStats {
  double dot, aa, bb;
};

template <typename T>
RowStats row_stats(const T* a, const T* b, std::int64_t d) {
  double dot = 0.0, aa = 0.0, bb = 0.0;
#pragma omp simd reduction(+ : dot, aa, bb)
  for (std::int64_t t = 0; t < d; ++t) {
    const double x = a[t], y = b[t];
    dot += x * y;
    aa += x * x;
    bb += y * y;
  }
  return {dot, aa, bb};
}

// a, b: [N, d] row-major (row stride = stride); loss: [N].
template <typename T>
void cosine_rec_fwd_cpu(const T* a, const T* b, T* loss, std::int64_t n, std::int64_t d, std::int64_t stride_a,
                        std::int64_t stride_b, int num_threads) {
#pragma omp parallel for schedule(static) num_threads(threads_for(n * d, num_threads))
  for (std::int64_t i = 0; i < n; ++i) {
    const RowStats s = row_stats(a + i * stride_a, b + i * stride_b, d);
    const double den = std::fmax(std::sqrt(s.aa) * std::sqrt(s.bb), kEps);
    const double c = s.dot / den;
    loss[i] = static_cast<T>(1.0 - c * c);
  }
}

// grad_loss: [N]; grad_a, grad_b: [N, d] contiguous, or null when not needed.
template <typename T>
void cosine_rec_bwd_cpu(const T* a, const T* b, const T* grad_loss, T* grad_a, T* grad_b, std::int64_t n,
                        std::int64_t d, std::int64_t stride_a, std::int64_t stride_b, int num_threads) {
#pragma omp parallel for schedule(static) num_threads(threads_for(n * d, num_threads))
  for (std::int64_t i = 0; i < n; ++i) {
    const T* ai = a + i * stride_a;
    const T* bi = b + i * stride_b;
    const RowStats s = row_stats(ai, bi, d);
    const double na = std::sqrt(s.aa), nb = std::sqrt(s.bb);
    const double prod = na * nb;
    const bool clamped = !(prod > kEps);  // NaN goes the unclamped way and stays NaN
    const double den = clamped ? kEps : prod;
    const double c = s.dot / den;
    const double scale = -2.0 * c * static_cast<double>(grad_loss[i]) / den;
    // -2 c g (b/den - c a/|a|^2) = scale * (b - (dot/|a|^2) a), since c/|a|^2 = (dot/den)/|a|^2.
    const double ka = clamped ? 0.0 : s.dot / s.aa;
    const double kb = clamped ? 0.0 : s.dot / s.bb;
    if (grad_a != nullptr) {
      T* ga = grad_a + i * d;
      for (std::int64_t t = 0; t < d; ++t) ga[t] = static_cast<T>(scale * (bi[t] - ka * ai[t]));
    }
    if (grad_b != nullptr) {
      T* gb = grad_b + i * d;
      for (std::int64_t t = 0; t < d; ++t) gb[t] = static_cast<T>(scale * (ai[t] - kb * bi[t]));
    }
  }
}

template <typename T>
void bind_dtype(pybind11::module_& m, const char* suffix) {
  using std::int64_t;
  using std::uintptr_t;
  m.def((std::string("cosine_rec_fwd_") + suffix).c_str(),
        [](uintptr_t a, uintptr_t b, uintptr_t loss, int64_t n, int64_t d, int64_t stride_a, int64_t stride_b,
           int num_threads) {
          pybind11::gil_scoped_release release;
          cosine_rec_fwd_cpu<T>(as_ptr<const T>(a), as_ptr<const T>(b), as_ptr<T>(loss), n, d, stride_a, stride_b,
                                num_threads);
        });
  m.def((std::string("cosine_rec_bwd_") + suffix).c_str(),
        [](uintptr_t a, uintptr_t b, uintptr_t grad_loss, uintptr_t grad_a, uintptr_t grad_b, int64_t n, int64_t d,
           int64_t stride_a, int64_t stride_b, int num_threads) {
          pybind11::gil_scoped_release release;
          cosine_rec_bwd_cpu<T>(as_ptr<const T>(a), as_ptr<const T>(b), as_ptr<const T>(grad_loss), as_ptr<T>(grad_a),
                                as_ptr<T>(grad_b), n, d, stride_a, stride_b, num_threads);
        });
}

}  // namespace

void register_cosine_rec(pybind11::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
}

}  // namespace mkefast::cpu
