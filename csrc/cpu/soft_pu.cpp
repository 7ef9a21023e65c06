// Soft-PU contrastive loss on the CPU: the fused epilogues of the row-chunked scheme
// (mkefast/backends/_chunked.py). Torch computes the raw dots of C whole anchor rows against the B_c
// candidates with one GEMM; one pass here turns them into the per-row statistics (forward) or into the
// gradient of the dots (backward). Rows are independent: OpenMP splits them over threads, each row is
// computed by one thread in a fixed order, so results do not depend on the number of threads.
//
// Per anchor row j (docs/math.md, "The general op"), with ℓ_k = dots[k] / τ, partner p = j + diag_offset
// (when < B_c) and D(j) = every candidate, minus p when the diagonal is excluded:
//   lse   = max + log Σ_{k∈D} exp(ℓ_k − max)                      dense, vectorized
//   P11   = {k ∈ D : lab_j ∧ lab_k ∧ cls_k = cls_j}
//   P10   = {k ∈ D : ¬(lab_j ∧ lab_k) ∧ (k = p ∨ (cls_j ≥ 0 ∧ cls_k = cls_j))}
// Both sets lie inside the anchor's class, plus the partner as the instance pair (a sample with a label
// always has a class). So the masked sums visit only the candidates of class cls_j, listed by
// `class_members` (candidate indices sorted by class, class c at [class_begin[c], class_begin[c+1])), and
// the partner: O(B·B/C) instead of O(B²) per modality, and no mask is ever built.
//   ρ     = mean_{P11} ℓ ("logit") or log mean_{P11} e^ℓ ("phi", max-shifted), else ℓ_p (0 without a
//           partner): in float64 and logit units, from the same pass (the chunk holds whole rows)
//   w_k   = exp(−½((ℓ_k − ρ)/σ)²) or, in "phi", exp(−½((e^ℓ_k − e^ρ)/σ)²) in log form; 1 when σ = inf;
//           the fallback pair (P11 empty, k = p) has w = 1 by definition
//   lb    = lse − Σ_{P11} ℓ / |P11|       ulb = Σ_{P10} w_k (lse − ℓ_k) / |P10|     a_ulb = Σ_{P10} w / |P10|
// Backward (docs/math.md, "Gradients"), with p_k = exp(ℓ_k − lse) on D:
//   G_k = CP p_k − C11 [k∈P11] − C10 w_k [k∈P10],  CP = g11 [P11 ≠ ∅] + g10 a_ulb,  C11 = g11/|P11|,
//   C10 = g10/|P10|; the kernel writes ∂L/∂dots_k = G_k / τ over the dots, ready for the two GEMMs of the
//   driver, and, when asked, the row's share of ∂L/∂τ = −(1/τ) Σ_k G_k ℓ_k, summed as −(1/τ) Σ_k G_k (ℓ_k −
//   lse): Σ_k G_k = 0, and the centred logits keep the sum free of the cancellation of large ℓ (small τ);
//   the dense part is normalized by its own Σ_k p_k (see bwd_row).
// The forward stores ρ in float64 and the backward reads it back, so both passes weigh every pair alike.
// The sparse sums, the weights and the softmax normalizer are accumulated in double; the dense terms are
// formed in T (float lanes keep the exp loops vectorized).
#include <pybind11/pybind11.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/parallel.h"
#include "common/soft_pu_params.h"
#include "common/vec_math.h"

namespace mkefast::cpu {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// Candidates grouped by class, so that a row visits only its own class for P11 / P10.
struct ClassIndex {
  const std::int32_t* members;  // [B_c] candidate indices sorted by class
  const std::int64_t* begin;    // [C + 1] class c is members[begin[c]:begin[c + 1]]
};

// What a row needs to know about its anchor.
struct Anchor {
  std::int64_t partner;  // candidate index of the instance partner, -1 for none
  bool excluded;         // the partner leaves D, P11 and P10
  std::int32_t cls;
  bool labeled;
  double n11, n10;
  const std::int32_t* members;  // the candidates of class `cls` (none when cls < 0)
  std::int64_t count;

  // The partner as the instance pair of P10: outside the anchor's class (inside it, the class loop has it),
  // not a labeled-labeled pair, and not excluded.
  bool partner_pair(const SoftPUParams& p) const {
    return partner >= 0 && !excluded && !(cls >= 0 && p.cls[partner] == cls) && !(labeled && p.labeled[partner]);
  }
  // Whether candidate k of the anchor's class (or the partner pair) is in P11, else in P10 (k not excluded).
  bool in_p11(const SoftPUParams& p, std::int64_t k) const { return labeled && p.labeled[k] != 0; }
  bool skips(std::int64_t k) const { return excluded && k == partner; }
};

Anchor anchor_of(const SoftPUParams& p, const ClassIndex& ix, std::int64_t anchor, std::int64_t cols) {
  const std::int64_t q = anchor + p.diag_offset;
  const bool has = q < cols;
  const std::int32_t c = p.anchor_cls[anchor];
  return {has ? q : -1,
          has && p.exclude_diagonal,
          c,
          p.anchor_labeled[anchor] != 0,
          static_cast<double>(p.n11[anchor]),
          static_cast<double>(p.n10[anchor]),
          c >= 0 ? ix.members + ix.begin[c] : nullptr,
          c >= 0 ? ix.begin[c + 1] - ix.begin[c] : 0};
}

// The reference ρ of a row (logit units) and, in "phi" space, e^ρ/σ and the window lo < l < hi of the
// logits whose weight is not exactly 0: |e^l − e^ρ| < 45σ. Outside it ½((e^l − e^ρ)/σ)² > 1012 and
// w = exp(−1012) is 0 in double, so the far pairs (most of a class once 1/τ is large) cost two comparisons.
// The margin to the last non-zero weight (distance 38.6σ) absorbs the rounding of the bounds.
struct Reference {
  double rho, lo, hi;
  double scaled;  // e^{ρ − log σ} (inf where it overflows)
};

Reference reference_window(const SoftPUParams& p, double rho) {
  if (!(p.rbf && p.phi)) return {rho, -kInf, kInf, 0.0};
  const double c = std::exp(std::log(45.0) + p.log_sigma - rho);  // 45σ / e^ρ, without forming e^ρ
  // A NaN ρ leaves hi NaN: every comparison with it fails, and the weights stay NaN.
  return {rho, c < 1.0 ? rho + std::log1p(-c) : -kInf, rho + std::log1p(c), std::exp(rho - p.log_sigma)};
}

// Below it, e^l/σ and e^ρ/σ are subtracted directly: their difference is then exact to ~2^10·ε, far below
// any distance that moves a weight, and costs one exp instead of two.
constexpr double kDirect = 1024.0;

// w of a pair of logit l against the reference (docs/math.md, "Numerics").
inline double rbf_weight(const SoftPUParams& p, double l, const Reference& ref) {
  if (!p.rbf) return 1.0;
  if (p.phi) {
    if (l < ref.lo || l > ref.hi) return 0.0;
    const double e = std::exp(l - p.log_sigma);
    double dist;
    if (e < kDirect && ref.scaled < kDirect) {
      dist = e - ref.scaled;
    } else {
      // |e^l − e^ρ| / σ = e^{a − log σ} (1 − e^{−δ}), a = max(l, ρ), δ = |l − ρ|: finite for any l and ρ
      // of nearby size. In double, e^{a − log σ} overflows only for distances far beyond any float (then
      // inf · (1 − e^{−δ}) = inf and w = 0, as its true value rounds); δ = 0 is w = 1 exactly (and would be
      // inf · 0 there). A NaN δ fails the test and stays NaN.
      const double delta = std::fabs(l - ref.rho);
      if (delta == 0.0) return 1.0;
      dist = std::exp((l > ref.rho ? l : ref.rho) - p.log_sigma) * -std::expm1(-delta);
    }
    return std::exp(-0.5 * dist * dist);
  }
  // (ℓ − ρ)/σ squared overflows only to +inf, where w = 0.
  const double u = (l - ref.rho) * p.inv_sigma;
  return std::exp(-0.5 * u * u);
}

// Scales a row of dots into logits in place and returns their max.
template <typename T>
inline T scale_and_max(T* row, std::int64_t cols, T inv_tau) {
  T mx = -std::numeric_limits<T>::infinity();
#pragma omp simd reduction(max : mx)
  for (std::int64_t k = 0; k < cols; ++k) {
    const T l = row[k] * inv_tau;
    row[k] = l;
    mx = l > mx ? l : mx;
  }
  return mx;
}

// lse over D of a row of dots, which it leaves scaled to logits (the excluded partner's included).
template <typename T>
double row_lse(const Anchor& a, T* row, std::int64_t cols, T inv_tau) {
  if (a.excluded && cols == 1) {  // the partner was the only candidate: an empty denominator
    row[0] *= inv_tau;
    return -kInf;
  }
  // The excluded partner sits out the dense loops as -inf (exp → 0) and gets its logit back afterwards.
  const T partner_dot = a.excluded ? row[a.partner] : T(0);
  if (a.excluded) row[a.partner] = -std::numeric_limits<T>::infinity();
  const T mx = scale_and_max(row, cols, inv_tau);
  // Summed in double: lse must be exact to its own rounding, as the backward's softmax and the ∂L/∂τ shares
  // are formed from it (a float sum over the ~B/4 terms of a vector lane loses ~√B·ε).
  double sum = 0;
#pragma omp simd reduction(+ : sum)
  for (std::int64_t k = 0; k < cols; ++k) sum += static_cast<double>(vexp(row[k] - mx));
  if (a.excluded) row[a.partner] = partner_dot * inv_tau;
  // A row of -inf logits has no finite max; its lse is -inf, as torch.logsumexp says. A row of NaN also
  // leaves mx = -inf (NaN fails every compare), but its sum is NaN, and NaN must come out.
  const bool no_max = std::isinf(mx) && mx < 0 && !std::isnan(sum);
  return no_max ? static_cast<double>(mx) : static_cast<double>(mx) + std::log(sum);
}

// ρ of the row (logits in `row`), and Σ_{P11} ℓ.
template <typename T>
void reference_of(const SoftPUParams& p, const Anchor& a, const T* row, double& rho, double& s11) {
  s11 = 0.0;
  double mx = -kInf, se = 0.0;  // online max-shifted Σ e^ℓ over P11 ("phi")
  if (a.labeled) {
    for (std::int64_t q = 0; q < a.count; ++q) {
      const std::int32_t k = a.members[q];
      if (!a.in_p11(p, k) || a.skips(k)) continue;
      const double l = row[k];
      s11 += l;
      if (p.phi) {
        if (l > mx) {
          se = se * std::exp(mx - l) + 1.0;
          mx = l;
        } else {
          se += std::exp(l - mx);  // a NaN ℓ fails the compare above and makes se NaN here
        }
      }
    }
  }
  if (!(a.n11 > 0)) {
    rho = a.partner >= 0 ? static_cast<double>(row[a.partner]) : 0.0;
  } else {
    rho = p.phi ? mx + std::log(se) - std::log(a.n11) : s11 / a.n11;
  }
}

// w of candidate k, with the fallback pair's w = 1 by definition.
inline double pair_weight(const SoftPUParams& p, const Anchor& a, std::int64_t k, double l, const Reference& ref) {
  return (k == a.partner && !(a.n11 > 0)) ? 1.0 : rbf_weight(p, l, ref);
}

// One row of the forward. `row` holds the raw dots on entry and the logits on exit.
template <typename T>
void fwd_row(const SoftPUParams& p, const Anchor& a, T* row, std::int64_t cols, T* lb, T* ulb, T* lse_out,
             double* ref_out, T* a_ulb_out) {
  const double lse = row_lse(a, row, cols, static_cast<T>(p.inv_tau));
  double rho, s11;
  reference_of(p, a, row, rho, s11);
  const Reference ref = reference_window(p, rho);
  double s10 = 0.0, w10 = 0.0;
  const auto add10 = [&](std::int64_t k) {
    const double l = row[k];
    const double w = pair_weight(p, a, k, l, ref);
    s10 += w * (lse - l);
    w10 += w;
  };
  for (std::int64_t q = 0; q < a.count; ++q) {
    const std::int32_t k = a.members[q];
    if (!a.in_p11(p, k) && !a.skips(k)) add10(k);
  }
  if (a.partner_pair(p)) add10(a.partner);
  *lse_out = static_cast<T>(lse);
  *ref_out = rho;
  *lb = static_cast<T>(a.n11 > 0 ? lse - s11 / a.n11 : 0.0);
  *ulb = static_cast<T>(a.n10 > 0 ? s10 / a.n10 : 0.0);
  *a_ulb_out = static_cast<T>(a.n10 > 0 ? w10 / a.n10 : 0.0);
}

// Σ_k e_k (ℓ_k − lse) and Σ_k e_k over the dense part of a row (e_k = exp(ℓ_k − lse), the softmax as the
// backward forms it from the stored lse).
struct DenseSums {
  double et = 0.0, e = 0.0;
  DenseSums operator+(const DenseSums& o) const { return {et + o.et, e + o.e}; }
};

// row[k] = coef · exp(ℓ_k − lse) over [begin, end) of the raw dots; with kTau also the DenseSums.
template <bool kTau, typename T>
DenseSums dense_grad(T* row, std::int64_t begin, std::int64_t end, T inv_tau, T lse, T coef) {
  DenseSums sums;
  if constexpr (kTau) {
    double et = 0.0, es = 0.0;
#pragma omp simd reduction(+ : et, es)
    for (std::int64_t k = begin; k < end; ++k) {
      const T t = row[k] * inv_tau - lse;
      const T e = vexp(t);
      row[k] = coef * e;
      et += static_cast<double>(e * t);
      es += static_cast<double>(e);
    }
    sums = {et, es};
  } else {
#pragma omp simd
    for (std::int64_t k = begin; k < end; ++k) row[k] = coef * vexp(row[k] * inv_tau - lse);
  }
  return sums;
}

// One row of the backward: raw dots in, ∂L/∂dots out; returns Σ_k G_k (ℓ_k − lse) when kTau (else 0).
// `corr` is scratch of at least the class size.
template <bool kTau, typename T>
double bwd_row(const SoftPUParams& p, const Anchor& a, T* row, std::int64_t cols, double lse, double rho,
               double a_ulb, double g11, double g10, std::vector<double>& corr) {
  const T inv_tau = static_cast<T>(p.inv_tau);
  if (a.excluded && cols == 1) {  // an empty denominator: no term, no gradient (and no 0 · inf)
    row[0] = T(0);
    return 0.0;
  }
  // The sparse coefficients (C11, or C10 w) need ℓ_k, which the dense pass overwrites: collect them first.
  const double c11 = a.n11 > 0 ? g11 / a.n11 : 0.0;
  const double c10 = a.n10 > 0 ? g10 / a.n10 : 0.0;
  const Reference ref = reference_window(p, rho);
  double tau_sparse = 0.0;
  const auto coefficient = [&](std::int64_t k) {
    const double l = static_cast<double>(row[k] * inv_tau);
    const double c = a.in_p11(p, k) ? c11 : c10 * pair_weight(p, a, k, l, ref);
    if constexpr (kTau) tau_sparse += c * (l - lse);
    return c;
  };
  for (std::int64_t q = 0; q < a.count; ++q) {
    const std::int32_t k = a.members[q];
    corr[static_cast<std::size_t>(q)] = a.skips(k) ? 0.0 : coefficient(k);
  }
  const bool pair = a.partner_pair(p);
  const double corr_pair = pair ? coefficient(a.partner) : 0.0;

  const double cp = (a.n11 > 0 ? g11 : 0.0) + g10 * a_ulb;
  const T coef = static_cast<T>(cp * p.inv_tau);
  const T lse_t = static_cast<T>(lse);
  DenseSums dense;
  if (a.excluded) {  // p_k = 0 off D: the partner sits out the dense loop
    dense = dense_grad<kTau>(row, 0, a.partner, inv_tau, lse_t, coef) +
            dense_grad<kTau>(row, a.partner + 1, cols, inv_tau, lse_t, coef);
    row[a.partner] = T(0);
  } else {
    dense = dense_grad<kTau>(row, 0, cols, inv_tau, lse_t, coef);
  }

  for (std::int64_t q = 0; q < a.count; ++q) {
    const std::int32_t k = a.members[q];
    row[k] = static_cast<T>(static_cast<double>(row[k]) - corr[static_cast<std::size_t>(q)] * p.inv_tau);
  }
  if (pair) row[a.partner] = static_cast<T>(static_cast<double>(row[a.partner]) - corr_pair * p.inv_tau);
  // The stored lse is off its exact value by a rounding r: every e_k is off by the factor e^{-r} and every
  // ℓ_k − lse by −r. Normalizing the dense sum by Σ e_k removes the first, and the second cancels against
  // the sparse sum, whose coefficients add up to CP: the share is then exact to first order in r.
  if constexpr (kTau) {
    return cp * (dense.et / dense.e) - tau_sparse;
  } else {
    return 0.0;
  }
}

// dots: [C, B_c] row-major; lb, ulb, lse, ref, a_ulb: [C]. Row i is anchor first_anchor + i.
template <typename T>
void soft_pu_fwd_cpu(const SoftPUParams& p, const ClassIndex& ix, T* dots, std::int64_t rows, std::int64_t cols,
                     std::int64_t first_anchor, T* lb, T* ulb, T* lse, double* ref, T* a_ulb, int num_threads) {
#pragma omp parallel for schedule(static) num_threads(threads_for(rows * cols, num_threads))
  for (std::int64_t i = 0; i < rows; ++i) {
    const Anchor a = anchor_of(p, ix, first_anchor + i, cols);
    fwd_row(p, a, dots + i * cols, cols, lb + i, ulb + i, lse + i, ref + i, a_ulb + i);
  }
}

// dots: [C, B_c] raw dots in, ∂L/∂dots out; lse, ref, a_ulb, grad_lb, grad_ulb: [C]; grad_temperature: [C]
// (the rows' shares of ∂L/∂τ) or null when not needed.
template <typename T>
void soft_pu_bwd_cpu(const SoftPUParams& p, const ClassIndex& ix, T* dots, std::int64_t rows, std::int64_t cols,
                     std::int64_t first_anchor, std::int64_t max_class_size, const T* lse, const double* ref,
                     const T* a_ulb, const T* grad_lb, const T* grad_ulb, T* grad_temperature, int num_threads) {
#pragma omp parallel num_threads(threads_for(rows * cols, num_threads))
  {
    std::vector<double> corr(static_cast<std::size_t>(max_class_size));
#pragma omp for schedule(static)
    for (std::int64_t i = 0; i < rows; ++i) {
      const Anchor a = anchor_of(p, ix, first_anchor + i, cols);
      T* row = dots + i * cols;
      const double l = lse[i], r = ref[i], au = a_ulb[i], g11 = grad_lb[i], g10 = grad_ulb[i];
      if (grad_temperature != nullptr) {
        grad_temperature[i] = static_cast<T>(-p.inv_tau * bwd_row<true>(p, a, row, cols, l, r, au, g11, g10, corr));
      } else {
        bwd_row<false>(p, a, row, cols, l, r, au, g11, g10, corr);
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
      (std::string("soft_pu_fwd_") + suffix).c_str(),
      [](const SoftPUParams& params, uintptr_t dots, int64_t rows, int64_t cols, int64_t first_anchor,
         uintptr_t class_members, uintptr_t class_begin, uintptr_t lb, uintptr_t ulb, uintptr_t lse, uintptr_t ref,
         uintptr_t a_ulb, int num_threads) {
        const ClassIndex ix{as_ptr<const std::int32_t>(class_members), as_ptr<const std::int64_t>(class_begin)};
        py::gil_scoped_release release;
        soft_pu_fwd_cpu<T>(params, ix, as_ptr<T>(dots), rows, cols, first_anchor, as_ptr<T>(lb), as_ptr<T>(ulb),
                           as_ptr<T>(lse), as_ptr<double>(ref), as_ptr<T>(a_ulb), num_threads);
      },
      "Forward epilogue over a [rows, cols] chunk of raw dot products (anchors first_anchor...): writes the "
      "[rows] statistics lb, ulb, lse, a_ulb (this dtype) and ref (float64). The chunk is left as logits.",
      py::kw_only(), py::arg("params"), py::arg("dots"), py::arg("rows"), py::arg("cols"), py::arg("first_anchor"),
      py::arg("class_members"), py::arg("class_begin"), py::arg("lb"), py::arg("ulb"), py::arg("lse"),
      py::arg("ref"), py::arg("a_ulb"), py::arg("num_threads"));
  m.def(
      (std::string("soft_pu_bwd_") + suffix).c_str(),
      [](const SoftPUParams& params, uintptr_t dots, int64_t rows, int64_t cols, int64_t first_anchor,
         uintptr_t class_members, uintptr_t class_begin, int64_t max_class_size, uintptr_t lse, uintptr_t ref,
         uintptr_t a_ulb, uintptr_t grad_lb, uintptr_t grad_ulb, uintptr_t grad_temperature, int num_threads) {
        const ClassIndex ix{as_ptr<const std::int32_t>(class_members), as_ptr<const std::int64_t>(class_begin)};
        py::gil_scoped_release release;
        soft_pu_bwd_cpu<T>(params, ix, as_ptr<T>(dots), rows, cols, first_anchor, max_class_size,
                           as_ptr<const T>(lse), as_ptr<const double>(ref), as_ptr<const T>(a_ulb),
                           as_ptr<const T>(grad_lb), as_ptr<const T>(grad_ulb), as_ptr<T>(grad_temperature),
                           num_threads);
      },
      "Backward epilogue: overwrites a [rows, cols] chunk of raw dot products with G / tau; grad_temperature "
      "(0: not needed) receives the [rows] shares of dL/dtau.",
      py::kw_only(), py::arg("params"), py::arg("dots"), py::arg("rows"), py::arg("cols"), py::arg("first_anchor"),
      py::arg("class_members"), py::arg("class_begin"), py::arg("max_class_size"), py::arg("lse"), py::arg("ref"),
      py::arg("a_ulb"), py::arg("grad_lb"), py::arg("grad_ulb"), py::arg("grad_temperature"),
      py::arg("num_threads"));
}

}  // namespace

void register_soft_pu(pybind11::module_& m) {
  bind_dtype<float>(m, "f32");
  bind_dtype<double>(m, "f64");
}

}  // namespace mkefast::cpu
