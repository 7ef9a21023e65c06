// Cosine reconstruction loss on the CPU: one fused pass per row (docs/math.md, "Cosine reconstruction
// loss").
//
//   per_row = 1 - c^2,   c = <a, b> / den,   den = max(|a| |b|, 1e-8)
//
// Scale-free: the rows are multiplied by the inverses ia, ib of their largest magnitudes before any product,
// and the floor with them, so that no norm overflows or underflows whatever the inputs' scale:
//   â = a ia,  b̂ = b ib,  c = <â, b̂> / n̂,  n̂ = max(|â| |b̂|, 1e-8 ia ib)
// Gradients (g = upstream gradient of the row), from dc/dâ = b̂ / n̂ − c â / |â|² and dâ/da = ia:
//   unclamped:  d(per_row)/da = s ia (b̂ − (<â, b̂> / |â|²) â),  s = −2 c g / n̂   (c n̂ = <â, b̂>)
//   clamped:    the floor is a constant and the norm term vanishes: d/da = s ia b̂
//   and the same for b with the roles swapped.
// Accumulation is in double: for float inputs the dot product and norms of a 1k-wide row then stay exact to
// fp32 rounding, at no measurable cost in this memory-bound loop, and double holds every product of float
// values (1e±38 squared), so only float64 rows need the scaling (ia = ib = 1 for float). `omp simd` lets the
// compiler split the sums over vector lanes (a fixed order, so still deterministic) without -ffast-math.
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "common/parallel.h"

namespace mkefast::cpu {
namespace {

constexpr double kEps = 1e-8;

// 1 / the largest magnitude of a float64 row (1 for an all-zero row, and for float rows). The magnitude is
// floored at 2^-1000 so that its inverse stays finite: a row of subnormals then scales to values below 1,
// still far from underflow. NaN fails the max's compare; the scaled sums then carry it to the result.
template <typename T>
double inv_scale(const T* x, std::int64_t d) {
  if constexpr (std::is_same_v<T, double>) {
    double m = 0.0;
#pragma omp simd reduction(max : m)
    for (std::int64_t t = 0; t < d; ++t) {
      const double v = std::fabs(x[t]);
      m = v > m ? v : m;
    }
    constexpr double kMinScale = 0x1p-1000;
    return m > 0.0 ? 1.0 / (m > kMinScale ? m : kMinScale) : 1.0;
  } else {
    (void)x;
    (void)d;
    return 1.0;
  }
}

// The scaled statistics of one row pair: â = a ia, b̂ = b ib.
struct RowStats {
  double ia, ib;       // the inverse scales
  double dot, aa, bb;  // <â, b̂>, |â|², |b̂|²
  double den;          // max(|â| |b̂|, 1e-8 ia ib)
  bool clamped;
};

template <typename T>
RowStats row_stats(const T* a, const T* b, std::int64_t d) {
  const double ia = inv_scale(a, d), ib = inv_scale(b, d);
  double dot = 0.0, aa = 0.0, bb = 0.0;
#pragma omp simd reduction(+ : dot, aa, bb)
  for (std::int64_t t = 0; t < d; ++t) {
    const double x = static_cast<double>(a[t]) * ia, y = static_cast<double>(b[t]) * ib;
    dot += x * y;
    aa += x * x;
    bb += y * y;
  }
  const double prod = std::sqrt(aa) * std::sqrt(bb);
  const double floor = kEps * ia * ib;
  const bool clamped = !(prod > floor);  // NaN goes the clamped way, and dot (NaN) keeps the result NaN
  // den = 0 only where the floor underflowed and a row is all zero (then <â, b̂> = 0): any positive den then
  // gives the true c = 0 instead of 0/0.
  return {ia, ib, dot, aa, bb, clamped ? (floor > 0.0 ? floor : 1.0) : prod, clamped};
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

// grad[t] = scale (x[t] kx − k y[t] ky) over a row: the gradient of one side.
template <typename T>
void row_grad(T* grad, const T* x, const T* y, std::int64_t d, double scale, double kx, double k, double ky) {
#pragma omp simd
  for (std::int64_t t = 0; t < d; ++t) {
    grad[t] = static_cast<T>(scale * (static_cast<double>(x[t]) * kx - k * (static_cast<double>(y[t]) * ky)));
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
    // −2 c g, times ia/den: both factors stay normal where their product is already tiny.
    const double cg = -2.0 * (s.dot / s.den) * static_cast<double>(grad_loss[i]);
    // Under the clamp the denominator is a constant and the norm terms vanish.
    const double ka = s.clamped ? 0.0 : s.dot / s.aa, kb = s.clamped ? 0.0 : s.dot / s.bb;
    if (grad_a != nullptr) row_grad(grad_a + i * d, bi, ai, d, cg * (s.ia / s.den), s.ib, ka, s.ia);
    if (grad_b != nullptr) row_grad(grad_b + i * d, ai, bi, d, cg * (s.ib / s.den), s.ia, kb, s.ib);
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
