// Soft-PU contrastive loss on the CPU: the fused epilogues of the row-chunked scheme
// (mkefast/backends/_chunked.py). Torch computes the raw dots of C whole anchor rows with one GEMM; one
// pass here turns them into the per-row statistics (forward) or into the gradient coefficients
// (backward). Rows are independent: OpenMP splits them over threads, each row is computed by one thread
// in a fixed order, so results do not depend on the number of threads.
//
// Per anchor row j (candidate jc = first_row + i), with ℓ_k = dots[k] / τ (SPEC §1):
//   lse   = max + log Σ_k exp(ℓ_k − max)                          dense, vectorized
//   P11   = {k : lab_j ∧ lab_k ∧ cls_k = cls_j}
//   P10   = {k : ¬(lab_j ∧ lab_k) ∧ (k = jc ∨ (cls_j ≥ 0 ∧ cls_k = cls_j))}
// Both sets lie inside the anchor's class (plus the diagonal when cls_j < 0, where P10 = {jc} and P11 = ∅:
// a sample with a label always has a class). So the masked sums visit only the members of class cls_j,
// listed by `class_members` (candidate indices sorted by class, class c at [class_begin[c],
// class_begin[c+1])): O(B·B/C) instead of O(B²) per modality, and the B×B masks are never built.
//   x_k   = ℓ_k ("logit") or exp(ℓ_k) ("phi")
//   r_j   = mean_{P11} x_k, or x_jc when P11 is empty        (the chunk holds whole rows: no pre-pass)
//   w_k   = exp(−(x_k − r_j)² / (2σ²))                          (1 when σ = inf)
//   lb    = Σ_{P11} (lse − ℓ_k) / |P11|          ulb = Σ_{P10} w_k (lse − ℓ_k) / |P10|
//   a_ulb = Σ_{P10} w_k / |P10|
// Backward, with upstream gradients g11 (of lb) and g10 (of ulb) and p_k = exp(ℓ_k − lse):
//   ∂L/∂ℓ_k = (g11·[P11 ≠ ∅] + g10·a_ulb) p_k − g11/|P11| [k∈P11] − g10 w_k/|P10| [k∈P10]
// and the kernel writes ∂L/∂dots_k = (∂L/∂ℓ_k) / τ over the dots, ready for the two GEMMs of the driver.
// The sparse sums accumulate in double; the dense softmax sum in T (float lanes keep it vectorized, and the
// terms are all in (0, 1], so the relative error stays ~√B·ε).
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/parallel.h"
#include "common/vec_math.h"

namespace mkefast::cpu {
namespace {

// The label arrays (over the B candidates) and the scalar options, shared by both passes.
struct Targets {
  const std::int32_t* cls;            // [B] dense class id, -1 for none
  const std::uint8_t* labeled;        // [B] bool
  const float* n11;                   // [B] |P11|
  const float* n10;                   // [B] |P10|
  const std::int32_t* class_members;  // [B] candidate indices sorted by class (cls = -1 excluded)
  const std::int64_t* class_begin;    // [C + 1] start of each class in class_members
  double inv_tau;
  double inv_two_sigma_sq;  // 1 / (2σ²)
  bool rbf;                 // false: σ = inf, every weight is 1
  bool phi;                 // rbf_space == "phi"
};

// ℓ → x of the RBF space. Sparse loops only, so the exact libm exp.
template <typename T>
inline double rbf_x(const Targets& t, T logit) {
  return t.phi ? std::exp(static_cast<double>(logit)) : static_cast<double>(logit);
}

template <typename T>
inline double rbf_w(const Targets& t, double x, double ref) {
  if (!t.rbf) return 1.0;
  const double u = x - ref;
  return std::exp(-u * u * t.inv_two_sigma_sq);
}

// Scales a row of dots into logits in place and returns their max.
template <typename T>
inline T scale_and_max(T* row, std::int64_t b, T inv_tau) {
  T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
  for (std::int64_t k = 0; k < b; ++k) {
    const T l = row[k] * inv_tau;
    row[k] = l;
    mx = l > mx ? l : mx;
  }
  return mx;
}

// One row of the forward. `row` holds the raw dots on entry and the logits on exit.
template <typename T>
void fwd_row(const Targets& t, T* row, std::int64_t b, std::int64_t jc, T* lb, T* ulb, T* lse_out, T* ref_out,
             T* a_ulb_out) {
  const T mx = scale_and_max(row, b, static_cast<T>(t.inv_tau));
  T sum = 0;
#pragma omp simd reduction(+ : sum)
  for (std::int64_t k = 0; k < b; ++k) sum += vexp(row[k] - mx);
  // A row of -inf logits has no finite max; its lse is -inf, as torch.logsumexp says. A row of NaN also
  // leaves mx = -inf (NaN fails every compare), but its sum is NaN, and NaN must come out.
  const bool no_max = std::isinf(mx) && mx < 0 && !std::isnan(sum);
  const double lse = no_max ? static_cast<double>(mx) : static_cast<double>(mx) + std::log(static_cast<double>(sum));

  const std::int32_t c = t.cls[jc];
  const bool lab_j = t.labeled[jc] != 0;
  const double n11 = t.n11[jc], n10 = t.n10[jc];
  double s11 = 0.0, x11 = 0.0, s10 = 0.0, w10 = 0.0;
  double ref;
  if (c < 0) {
    // No class: P11 = ∅ and P10 = {jc}.
    ref = rbf_x(t, row[jc]);
    const double w = rbf_w<T>(t, ref, ref);
    s10 = w * (lse - static_cast<double>(row[jc]));
    w10 = w;
  } else {
    const std::int32_t* members = t.class_members + t.class_begin[c];
    const std::int64_t count = t.class_begin[c + 1] - t.class_begin[c];
    if (lab_j) {
      for (std::int64_t q = 0; q < count; ++q) {
        const std::int32_t k = members[q];
        if (!t.labeled[k]) continue;
        s11 += lse - static_cast<double>(row[k]);
        x11 += rbf_x(t, row[k]);
      }
    }
    ref = n11 > 0 ? x11 / n11 : rbf_x(t, row[jc]);
    for (std::int64_t q = 0; q < count; ++q) {
      const std::int32_t k = members[q];
      if (lab_j && t.labeled[k]) continue;
      const double w = rbf_w<T>(t, rbf_x(t, row[k]), ref);
      s10 += w * (lse - static_cast<double>(row[k]));
      w10 += w;
    }
  }
  *lse_out = static_cast<T>(lse);
  *ref_out = static_cast<T>(ref);
  *lb = static_cast<T>(n11 > 0 ? s11 / n11 : 0.0);
  *ulb = static_cast<T>(n10 > 0 ? s10 / n10 : 0.0);
  *a_ulb_out = static_cast<T>(n10 > 0 ? w10 / n10 : 0.0);
}

// One row of the backward: raw dots in, ∂L/∂dots out. `corr` is scratch of at least the class size.
template <typename T>
void bwd_row(const Targets& t, T* row, std::int64_t b, std::int64_t jc, double lse, double ref, double a_ulb,
             double g11, double g10, std::vector<double>& corr) {
  const T inv_tau = static_cast<T>(t.inv_tau);
  const std::int32_t c = t.cls[jc];
  const bool lab_j = t.labeled[jc] != 0;
  const double n11 = t.n11[jc], n10 = t.n10[jc];
  const std::int32_t* members = c < 0 ? nullptr : t.class_members + t.class_begin[c];
  const std::int64_t count = c < 0 ? 0 : t.class_begin[c + 1] - t.class_begin[c];

  // The sparse coefficients a_jk (already times the upstream gradient and 1/τ) need ℓ_k, which the dense
  // pass overwrites: collect them first.
  const double c11 = n11 > 0 ? g11 / n11 * t.inv_tau : 0.0;
  const double c10 = n10 > 0 ? g10 / n10 * t.inv_tau : 0.0;
  double corr_diag = 0.0;
  if (c < 0) {
    const double x = rbf_x(t, row[jc] * inv_tau);
    corr_diag = c10 * rbf_w<T>(t, x, ref);
  } else {
    for (std::int64_t q = 0; q < count; ++q) {
      const std::int32_t k = members[q];
      const T l = row[k] * inv_tau;
      corr[q] = (lab_j && t.labeled[k]) ? c11 : c10 * rbf_w<T>(t, rbf_x(t, l), ref);
    }
  }

  const double a11 = n11 > 0 ? g11 : 0.0;
  const T coef = static_cast<T>((a11 + g10 * a_ulb) * t.inv_tau);
  const T lse_t = static_cast<T>(lse);
#pragma omp simd
  for (std::int64_t k = 0; k < b; ++k) row[k] = coef * vexp(row[k] * inv_tau - lse_t);

  if (c < 0) {
    row[jc] = static_cast<T>(row[jc] - corr_diag);
  } else {
    for (std::int64_t q = 0; q < count; ++q) row[members[q]] = static_cast<T>(row[members[q]] - corr[q]);
  }
}

// dots: [C, B] row-major; lb, ulb, lse, ref, a_ulb: [C]. Row i is candidate first_row + i.
template <typename T>
void soft_pu_fwd_cpu(const Targets& t, T* dots, std::int64_t rows, std::int64_t b, std::int64_t first_row, T* lb,
                     T* ulb, T* lse, T* ref, T* a_ulb, int num_threads) {
#pragma omp parallel for schedule(static) num_threads(threads_for(rows * b, num_threads))
  for (std::int64_t i = 0; i < rows; ++i) {
    fwd_row(t, dots + i * b, b, first_row + i, lb + i, ulb + i, lse + i, ref + i, a_ulb + i);
  }
}

// dots: [C, B] raw dots in, ∂L/∂dots out; lse, ref, a_ulb, grad_lb, grad_ulb: [C].
template <typename T>
void soft_pu_bwd_cpu(const Targets& t, T* dots, std::int64_t rows, std::int64_t b, std::int64_t first_row,
                     const T* lse, const T* ref, const T* a_ulb, const T* grad_lb, const T* grad_ulb,
                     std::int64_t max_class_size, int num_threads) {
#pragma omp parallel num_threads(threads_for(rows * b, num_threads))
  {
    std::vector<double> corr(static_cast<std::size_t>(max_class_size));
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < rows; ++i) {
      bwd_row(t, dots + i * b, b, first_row + i, static_cast<double>(lse[i]), static_cast<double>(ref[i]),
              static_cast<double>(a_ulb[i]), static_cast<double>(grad_lb[i]), static_cast<double>(grad_ulb[i]),
              corr);
    }
  }
}

Targets make_targets(std::uintptr_t cls, std::uintptr_t labeled, std::uintptr_t n11, std::uintptr_t n10,
                     std::uintptr_t class_members, std::uintptr_t class_begin, double inv_tau,
                     double inv_two_sigma_sq, bool rbf, bool phi) {
  return Targets{as_ptr<const std::int32_t>(cls), as_ptr<const std::uint8_t>(labeled), as_ptr<const float>(n11),
                 as_ptr<const float>(n10), as_ptr<const std::int32_t>(class_members),
                 as_ptr<const std::int64_t>(class_begin), inv_tau, inv_two_sigma_sq, rbf, phi};
}

template <typename T>
void bind_dtype(pybind11::module_& m, const char* suffix) {
  using std::int64_t;
  using std::uintptr_t;
  m.def((std::string("soft_pu_fwd_") + suffix).c_str(),
        [](uintptr_t dots, int64_t rows, int64_t b, int64_t first_row, uintptr_t cls, uintptr_t labeled,
           uintptr_t n11, uintptr_t n10, uintptr_t class_members, uintptr_t class_begin, double inv_tau,
           double inv_two_sigma_sq, bool rbf, bool phi, uintptr_t lb, uintptr_t ulb, uintptr_t lse, uintptr_t ref,
           uintptr_t a_ulb, int num_threads) {
          const Targets t =
              make_targets(cls, labeled, n11, n10, class_members, class_begin, inv_tau, inv_two_sigma_sq, rbf, phi);
          pybind11::gil_scoped_release release;
          soft_pu_fwd_cpu<T>(t, as_ptr<T>(dots), rows, b, first_row, as_ptr<T>(lb), as_ptr<T>(ulb), as_ptr<T>(lse),
                             as_ptr<T>(ref), as_ptr<T>(a_ulb), num_threads);
        });
  m.def((std::string("soft_pu_bwd_") + suffix).c_str(),
        [](uintptr_t dots, int64_t rows, int64_t b, int64_t first_row, uintptr_t cls, uintptr_t labeled,
           uintptr_t n11, uintptr_t n10, uintptr_t class_members, uintptr_t class_begin, double inv_tau,
           double inv_two_sigma_sq, bool rbf, bool phi, uintptr_t lse, uintptr_t ref, uintptr_t a_ulb,
           uintptr_t grad_lb, uintptr_t grad_ulb, int64_t max_class_size, int num_threads) {
          const Targets t =
              make_targets(cls, labeled, n11, n10, class_members, class_begin, inv_tau, inv_two_sigma_sq, rbf, phi);
          pybind11::gil_scoped_release release;
          soft_pu_bwd_cpu<T>(t, as_ptr<T>(dots), rows, b, first_row, as_ptr<const T>(lse), as_ptr<const T>(ref),
                             as_ptr<const T>(a_ulb), as_ptr<const T>(grad_lb), as_ptr<const T>(grad_ulb),
                             max_class_size, num_threads);
        });
}

}  // namespace

void register_soft_pu(pybind11::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
}

}  // namespace mkefast::cpu
