// Cosine reconstruction loss on the CPU: one fused pass per row (docs/math.md, "Cosine reconstruction
// loss").
//
//   per_row = 1 - c^2,   c = <a, b> / den,   den = max(|a| |b|, 1e-8)
//
// Scale-free: each row is first divided by its largest magnitude (sa, sb), the floor by sa·sb, so that no
// norm overflows or underflows whatever the inputs' scale (1e20 or 1e-20 in float, 1e200 in double):
//   â = a / sa,  b̂ = b / sb,  c = <â, b̂> / n̂,  n̂ = max(|â| |b̂|, 1e-8 / (sa sb))
// Gradients (g = upstream gradient of the row), from dc/dâ = b̂ / n̂ − c â / |â|² and dâ/da = 1 / sa:
//   unclamped:  d(per_row)/da = s (b̂ − (<â, b̂> / |â|²) â),  s = −2 c g / (n̂ sa)   (c n̂ = <â, b̂>)
//   clamped:    the floor is a constant and the norm term vanishes: d/da = s b̂
//   and the same for b with the roles swapped.
// Accumulation is in double for float inputs: the dot product and norms of a 1k-wide row then stay exact to
// fp32 rounding, at no measurable cost in this memory-bound loop. `omp simd` lets the compiler split the
// sums over vector lanes (a fixed order, so still deterministic) without -ffast-math.
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>

#include "common/parallel.h"

namespace mkefast::cpu {
namespace {

constexpr double kEps = 1e-8;

// The largest magnitude of a row, or 1 for an all-zero row. It skips NaN (NaN fails the compare); the
// scaled sums then carry the NaN to the result.
template <typename T>
double scale_of(const T* x, std::int64_t d) {
  T m = 0;
#pragma omp simd reduction(max : m)
  for (std::int64_t t = 0; t < d; ++t) {
    const T v = std::fabs(x[t]);
    m = v > m ? v : m;
  }
  return m > 0 ? static_cast<double>(m) : 1.0;
}

// The scaled statistics of one row pair: â = a / sa, b̂ = b / sb.
struct RowStats {
  double sa, sb;       // the scales
  double dot, aa, bb;  // <â, b̂>, |â|², |b̂|²
  double den;          // max(|â| |b̂|, 1e-8 / (sa sb))
  bool clamped;
};

template <typename T>
RowStats row_stats(const T* a, const T* b, std::int64_t d) {
  RowStats s{scale_of(a, d), scale_of(b, d), 0.0, 0.0, 0.0, 0.0, false};
  const double ia = s.sa, ib = s.sb;
  double dot = 0.0, aa = 0.0, bb = 0.0;
#pragma omp simd reduction(+ : dot, aa, bb)
  for (std::int64_t t = 0; t < d; ++t) {
    const double x = static_cast<double>(a[t]) / ia, y = static_cast<double>(b[t]) / ib;
    dot += x * y;
    aa += x * x;
    bb += y * y;
  }
  s.dot = dot;
  s.aa = aa;
  s.bb = bb;
  const double prod = std::sqrt(aa) * std::sqrt(bb);
  const double floor = kEps / (s.sa * s.sb);
  s.clamped = !(prod > floor);  // NaN goes the clamped way, and dot (NaN) keeps the result NaN
  // den = 0 only where the floor underflowed and a row is all zero (then <â, b̂> = 0): any positive den then
  // gives the true c = 0 instead of 0/0.
  s.den = s.clamped ? (floor > 0.0 ? floor : 1.0) : prod;
  return s;
}

// a, b: [N, d] row-major (row stride = stride); loss: [N].
template <typename T>
void cosine_rec_fwd_cpu(const T* a, const T* b, T* loss, std::int64_t n, std::int64_t d, std::int64_t stride_a,
                        std::int64_t stride_b, int num_threads) {
#pragma omp parallel for schedule(static) num_threads(threads_for(n * d, num_threads))
  for (std::int64_t i = 0; i < n; ++i) {
    const RowStats s = row_stats(a + i * stride_a, b + i * stride_b, d);
    const double c = s.dot / s.den;
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
    const double c = s.dot / s.den;
    const double g = -2.0 * c * static_cast<double>(grad_loss[i]) / s.den;
    const double ka = s.clamped ? 0.0 : s.dot / s.aa;
    const double kb = s.clamped ? 0.0 : s.dot / s.bb;
    if (grad_a != nullptr) {
      T* ga = grad_a + i * d;
      const double scale = g / s.sa;
      for (std::int64_t t = 0; t < d; ++t) {
        ga[t] = static_cast<T>(scale * (static_cast<double>(bi[t]) / s.sb - ka * (static_cast<double>(ai[t]) / s.sa)));
      }
    }
    if (grad_b != nullptr) {
      T* gb = grad_b + i * d;
      const double scale = g / s.sb;
      for (std::int64_t t = 0; t < d; ++t) {
        gb[t] = static_cast<T>(scale * (static_cast<double>(ai[t]) / s.sa - kb * (static_cast<double>(bi[t]) / s.sb)));
      }
    }
  }
}

template <typename T>
void bind_dtype(pybind11::module_& m, const char* suffix) {
  namespace py = pybind11;
  using std::int64_t;
  using std::uintptr_t;
  m.def(
      (std::string("cosine_rec_fwd_") + suffix).c_str(),
      [](uintptr_t a, uintptr_t b, uintptr_t loss, int64_t n, int64_t d, int64_t stride_a, int64_t stride_b,
         int num_threads) {
        py::gil_scoped_release release;
        cosine_rec_fwd_cpu<T>(as_ptr<const T>(a), as_ptr<const T>(b), as_ptr<T>(loss), n, d, stride_a, stride_b,
                              num_threads);
      },
      "Per-row 1 - cos^2 of [n, d] rows (row strides stride_a, stride_b) into loss [n].", py::kw_only(),
      py::arg("a"), py::arg("b"), py::arg("loss"), py::arg("n"), py::arg("d"), py::arg("stride_a"),
      py::arg("stride_b"), py::arg("num_threads"));
  m.def(
      (std::string("cosine_rec_bwd_") + suffix).c_str(),
      [](uintptr_t a, uintptr_t b, uintptr_t grad_loss, uintptr_t grad_a, uintptr_t grad_b, int64_t n, int64_t d,
         int64_t stride_a, int64_t stride_b, int num_threads) {
        py::gil_scoped_release release;
        cosine_rec_bwd_cpu<T>(as_ptr<const T>(a), as_ptr<const T>(b), as_ptr<const T>(grad_loss), as_ptr<T>(grad_a),
                              as_ptr<T>(grad_b), n, d, stride_a, stride_b, num_threads);
      },
      "Both gradients in one pass into contiguous [n, d] grad_a / grad_b (0: not needed).", py::kw_only(),
      py::arg("a"), py::arg("b"), py::arg("grad_loss"), py::arg("grad_a"), py::arg("grad_b"), py::arg("n"),
      py::arg("d"), py::arg("stride_a"), py::arg("stride_b"), py::arg("num_threads"));
}

}  // namespace

void register_cosine_rec(pybind11::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
}

}  // namespace mkefast::cpu
