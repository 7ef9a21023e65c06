// Soft-PU contrastive loss on the CPU: the fused epilogues of the row-chunked scheme
// (mkefast/backends/_chunked.py), compiled once per instruction set. CMakeLists.txt builds this file as
// several translation units, each with its own flags and `MKEFAST_ISA` (the namespace of its table, see
// csrc/cpu/soft_pu_kernels.h): baseline (SSE2 on x86-64), avx2 (AVX2 + FMA), avx512 (AVX-512 F/BW/DQ/VL,
// 512-bit vectors). The code is the same; what changes is how wide the `omp simd` loops (the dense exp and
// sums) vectorize. csrc/cpu/isa.cpp picks one table at import.
//
// Torch computes the raw dots of C whole anchor rows against the M·B_c stacked candidates with one GEMM; one
// pass here turns every (row, modality) segment into the per-row statistics (forward), into the gradient of
// the dots (backward), or into both at once (forward + gradient of Σ (lb + ulb)). Segments are independent:
// OpenMP splits them over threads, each is computed by one thread in a fixed order, so results do not depend
// on the number of threads.
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
//   driver, and, when asked, the row's share of ∂L/∂τ = −(1/τ) Σ_k G_k ℓ_k, summed as (1/τ) Σ_k corr_k (ℓ_k −
//   lse − μ), μ = Σ_k p_k (ℓ_k − lse): Σ_k G_k = 0 and Σ_k p_k (ℓ_k − lse − μ) = 0, so the dense terms drop
//   out, and the centred logits keep the sum free of the cancellation of large ℓ (small τ).
// The fused forward + gradient (g11 = g10 = 1) needs no second exp: it stores e_k = exp(ℓ_k − max) while it
// sums them, and p_k = e_k / Σ e; the sparse coefficients (C11, C10 w_k) and ρ come from the logits before
// that overwrite, since none of them needs lse.
// The forward stores ρ in float64 and the backward reads it back, so both passes weigh every pair alike.
// The sparse sums, the weights and the softmax normalizer are accumulated in double; the dense terms are
// formed in T (float lanes keep the exp loops vectorized).
#include <cmath>
#include <cstdint>
#include <limits>
#include <new>

#include "common/soft_pu_params.h"
#include "common/vec_math.h"
#include "cpu/soft_pu_kernels.h"

#ifndef MKEFAST_ISA
#error "MKEFAST_ISA (the namespace of this variant) must be defined by the build"
#endif

namespace mkefast::cpu::MKEFAST_ISA {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

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
  // The only candidate is the excluded partner: an empty denominator, no term and no gradient.
  bool empty(std::int64_t cols) const { return excluded && cols == 1; }
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

// w of candidate k, with the fallback pair's w = 1 by definition.
inline double pair_weight(const SoftPUParams& p, const Anchor& a, std::int64_t k, double l, const Reference& ref) {
  return (k == a.partner && !(a.n11 > 0)) ? 1.0 : rbf_weight(p, l, ref);
}

// Scales a row of dots into logits in place and returns their max.
// ℓ = dot · (1/τ), rounded to T and stored, in a pass of its own: every pass that subtracts from ℓ (ℓ − max,
// ℓ − lse) reads the same rounded value. Formed inside the subtraction, the product would be contracted into
// an FMA of the unrounded one in one pass and not in another, an inconsistency of ulp(ℓ) in every softmax
// (measured in float32: 3.8e-6 relative at |ℓ| = 87; at |ℓ| ≈ 10⁴, where ulp(ℓ) ≈ 10⁻³, gradient errors 4-12x
// the reference's).
template <typename T>
inline void scale(T* row, std::int64_t cols, T inv_tau) {
#pragma omp simd
  for (std::int64_t k = 0; k < cols; ++k) row[k] *= inv_tau;
}

// `scale`, returning the row's max.
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

// Σ_k e_k and Σ_k e_k t_k with e_k = exp(t_k), t_k = row[k] − mx, over a row of logits; with kStore, e_k
// replaces row[k].
struct ExpSums {
  double e = 0.0, et = 0.0;
};

template <bool kStore, bool kTau, typename T>
ExpSums exp_sums(T* row, std::int64_t cols, T mx) {
  double es = 0.0, et = 0.0;
  if constexpr (kTau) {
#pragma omp simd reduction(+ : es, et)
    for (std::int64_t k = 0; k < cols; ++k) {
      const T t = row[k] - mx;
      const T e = vexp(t);
      if constexpr (kStore) row[k] = e;
      es += static_cast<double>(e);
      // An excluded partner enters as t = −inf, e = 0: its term is 0, not 0 · inf (a NaN t leaves es NaN).
      et += static_cast<double>(e > T(0) ? e * t : T(0));
    }
  } else {
#pragma omp simd reduction(+ : es)
    for (std::int64_t k = 0; k < cols; ++k) {
      const T e = vexp(row[k] - mx);
      if constexpr (kStore) row[k] = e;
      es += static_cast<double>(e);
    }
  }
  return {es, et};
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

// The masked sums of a row of logits: ρ, Σ_{P11} ℓ, W = Σ_{P10} w, WL = Σ_{P10} w ℓ, and, with kGrad, the
// sparse gradient coefficients of unit upstream gradients (1/|P11| on P11, w/|P10| on P10) per class
// member in `corr` (and for the partner pair), their sum, and Σ corr (ℓ − centre).
struct Sparse {
  double rho = 0.0, s11 = 0.0, w10 = 0.0, wl10 = 0.0;
  double corr_pair = 0.0, corr_sum = 0.0, corr_l = 0.0;
  bool pair = false;
};

template <bool kGrad, typename T>
Sparse sparse_sums(const SoftPUParams& p, const Anchor& a, const T* row, double centre, double* corr) {
  Sparse s;
  reference_of(p, a, row, s.rho, s.s11);
  const Reference ref = reference_window(p, s.rho);
  const double c11 = a.n11 > 0 ? 1.0 / a.n11 : 0.0;
  const double c10 = a.n10 > 0 ? 1.0 / a.n10 : 0.0;
  const auto visit = [&](std::int64_t k) {
    const double l = row[k];
    double c;
    if (a.in_p11(p, k)) {
      c = c11;
    } else {
      const double w = pair_weight(p, a, k, l, ref);
      s.w10 += w;
      s.wl10 += w * l;
      c = c10 * w;
    }
    if constexpr (kGrad) {
      s.corr_sum += c;
      s.corr_l += c * (l - centre);
    }
    return c;
  };
  for (std::int64_t q = 0; q < a.count; ++q) {
    const std::int32_t k = a.members[q];
    const double c = a.skips(k) ? 0.0 : visit(k);
    if constexpr (kGrad) corr[q] = c;
  }
  s.pair = a.partner_pair(p);
  if (s.pair) s.corr_pair = visit(a.partner);
  return s;
}

// One (row, modality) segment of the forward, and with kGrad of the gradient of lb + ulb: `row` holds the
// raw dots on entry; on exit the logits (forward) or ∂(lb + ulb)/∂dots (kGrad). Returns the row's
// Σ_k G_k (ℓ_k − lse) when kTau. `corr` is scratch of at least the class size (kGrad).
template <bool kGrad, bool kTau, typename T>
double fwd_row(const SoftPUParams& p, const Anchor& a, T* row, std::int64_t cols, const SoftPURows<T>& out,
               std::int64_t at, double* corr) {
  const T inv_tau = static_cast<T>(p.inv_tau);
  // The excluded partner sits out the dense loops as -inf (exp → 0) and gets its logit back afterwards.
  const T partner_dot = a.excluded ? row[a.partner] : T(0);
  if (a.excluded) row[a.partner] = -std::numeric_limits<T>::infinity();
  const T mx = a.empty(cols) ? -std::numeric_limits<T>::infinity() : scale_and_max(row, cols, inv_tau);
  if (a.excluded) row[a.partner] = partner_dot * inv_tau;
  const Sparse s = sparse_sums<kGrad>(p, a, row, static_cast<double>(mx), corr);
  if (a.excluded) row[a.partner] = -std::numeric_limits<T>::infinity();
  // Summed in double: lse must be exact to its own rounding, as the backward's softmax and the ∂L/∂τ shares
  // are formed from it (a float sum over the ~B/4 terms of a vector lane loses ~√B·ε).
  const ExpSums sums = a.empty(cols) ? ExpSums{} : exp_sums<kGrad, kTau && kGrad>(row, cols, mx);
  // An empty denominator has lse = -inf. A row of -inf logits has no finite max; its lse is -inf, as
  // torch.logsumexp says. A row of NaN also leaves mx = -inf (NaN fails every compare), but its sum is NaN,
  // and NaN must come out.
  const bool no_max = std::isinf(mx) && mx < 0 && !std::isnan(sums.e);
  const double log_sum = std::log(sums.e);
  const double lse = (a.empty(cols) || no_max) ? static_cast<double>(mx) : static_cast<double>(mx) + log_sum;
  const double a_ulb = a.n10 > 0 ? s.w10 / a.n10 : 0.0;
  out.lse[at] = static_cast<T>(lse);
  out.ref[at] = s.rho;
  out.lb[at] = static_cast<T>(a.n11 > 0 ? lse - s.s11 / a.n11 : 0.0);
  out.ulb[at] = static_cast<T>(a.n10 > 0 ? (s.w10 * lse - s.wl10) / a.n10 : 0.0);
  out.a_ulb[at] = static_cast<T>(a_ulb);
  if constexpr (!kGrad) {
    if (a.excluded) row[a.partner] = partner_dot * inv_tau;
    return 0.0;
  } else {
    if (a.empty(cols) || no_max) {  // no term, no gradient (and no 0 · inf)
      for (std::int64_t k = 0; k < cols; ++k) row[k] = T(0);
      return 0.0;
    }
    // G/τ = (CP e_k / Σe − corr_k) / τ; the excluded partner's e_k is 0.
    const double cp = (a.n11 > 0 ? 1.0 : 0.0) + a_ulb;
    const T coef = static_cast<T>(cp * p.inv_tau / sums.e);
#pragma omp simd
    for (std::int64_t k = 0; k < cols; ++k) row[k] *= coef;
    for (std::int64_t q = 0; q < a.count; ++q) {
      const std::int32_t k = a.members[q];
      row[k] = static_cast<T>(static_cast<double>(row[k]) - corr[q] * p.inv_tau);
    }
    if (s.pair) row[a.partner] = static_cast<T>(static_cast<double>(row[a.partner]) - s.corr_pair * p.inv_tau);
    if constexpr (kTau) {
      // Σ G (ℓ − lse) = −Σ corr (ℓ − mx − μ), μ = Σ p (ℓ − mx) the softmax mean (Σ G = 0; as in bwd_row).
      return s.corr_sum * (sums.et / sums.e) - s.corr_l;
    } else {
      return 0.0;
    }
  }
}

// Σ_k e_k (ℓ_k − lse) and Σ_k e_k over the dense part of a row (e_k = exp(ℓ_k − lse), the softmax as the
// backward forms it from the stored lse).
struct DenseSums {
  double et = 0.0, e = 0.0;
  DenseSums operator+(const DenseSums& o) const { return {et + o.et, e + o.e}; }
};

// row[k] = coef · exp(ℓ_k − lse) over [begin, end) of the logits; with kTau also the DenseSums.
template <bool kTau, typename T>
DenseSums dense_grad(T* row, std::int64_t begin, std::int64_t end, T lse, T coef) {
  DenseSums sums;
  if constexpr (kTau) {
    double et = 0.0, es = 0.0;
#pragma omp simd reduction(+ : et, es)
    for (std::int64_t k = begin; k < end; ++k) {
      const T t = row[k] - lse;
      const T e = vexp(t);
      row[k] = coef * e;
      et += static_cast<double>(e * t);
      es += static_cast<double>(e);
    }
    sums = {et, es};
  } else {
#pragma omp simd
    for (std::int64_t k = begin; k < end; ++k) row[k] = coef * vexp(row[k] - lse);
  }
  return sums;
}

// One segment of the backward: raw dots in, ∂L/∂dots out; returns Σ_k G_k (ℓ_k − lse) when kTau (else 0).
// `corr` is scratch of at least the class size.
template <bool kTau, typename T>
double bwd_row(const SoftPUParams& p, const Anchor& a, T* row, std::int64_t cols, double lse, double rho,
               double a_ulb, double g11, double g10, double* corr) {
  const T inv_tau = static_cast<T>(p.inv_tau);
  if (a.empty(cols)) {  // no term, no gradient (and no 0 · inf)
    row[0] = T(0);
    return 0.0;
  }
  // The sparse coefficients (C11, or C10 w) need ℓ_k, which the dense pass overwrites: collect them first.
  const double c11 = a.n11 > 0 ? g11 / a.n11 : 0.0;
  const double c10 = a.n10 > 0 ? g10 / a.n10 : 0.0;
  const Reference ref = reference_window(p, rho);
  scale(row, cols, inv_tau);  // ℓ as the forward rounded it
  double tau_sparse = 0.0, corr_sum = 0.0;
  const auto coefficient = [&](std::int64_t k) {
    const double l = static_cast<double>(row[k]);
    const double c = a.in_p11(p, k) ? c11 : c10 * pair_weight(p, a, k, l, ref);
    if constexpr (kTau) {
      tau_sparse += c * (l - lse);
      corr_sum += c;
    }
    return c;
  };
  for (std::int64_t q = 0; q < a.count; ++q) {
    const std::int32_t k = a.members[q];
    corr[q] = a.skips(k) ? 0.0 : coefficient(k);
  }
  const bool pair = a.partner_pair(p);
  const double corr_pair = pair ? coefficient(a.partner) : 0.0;

  const double cp = (a.n11 > 0 ? g11 : 0.0) + g10 * a_ulb;
  const T coef = static_cast<T>(cp * p.inv_tau);
  const T lse_t = static_cast<T>(lse);
  DenseSums dense;
  if (a.excluded) {  // p_k = 0 off D: the partner sits out the dense loop
    dense = dense_grad<kTau>(row, 0, a.partner, lse_t, coef) + dense_grad<kTau>(row, a.partner + 1, cols, lse_t, coef);
    row[a.partner] = T(0);
  } else {
    dense = dense_grad<kTau>(row, 0, cols, lse_t, coef);
  }

  for (std::int64_t q = 0; q < a.count; ++q) {
    const std::int32_t k = a.members[q];
    row[k] = static_cast<T>(static_cast<double>(row[k]) - corr[q] * p.inv_tau);
  }
  if (pair) row[a.partner] = static_cast<T>(static_cast<double>(row[a.partner]) - corr_pair * p.inv_tau);
  // Σ G (ℓ − lse) = Σ G (ℓ − lse − μ), μ = Σ p (ℓ − lse) the softmax mean (Σ G = 0), where the dense part
  // vanishes: −Σ corr (ℓ − lse − μ). Neither the rounding of the stored lse (it shifts ℓ − lse and μ alike)
  // nor that of the stored a_ulb in CP (which leaves CP ≠ Σ corr by a rounding, times ℓ − lse ≈ −log B_c
  // when uncentred) reaches the share.
  if constexpr (kTau) {
    return corr_sum * (dense.et / dense.e) - tau_sparse;
  } else {
    return 0.0;
  }
}

// The (row, modality) segments of a chunk, in memory order: segment u is row u / M, modality u % M.
template <typename T>
struct Segment {
  T* row;
  std::int64_t at;  // index of the segment in every [M, B_a] per-row array, from the chunk's first row
  Anchor anchor;
};

template <typename T>
Segment<T> segment(const SoftPUParams& p, const ClassIndex& ix, const SoftPUChunk<T>& c, std::int64_t u) {
  const std::int64_t i = u / c.modalities, m = u % c.modalities;
  return {c.dots + u * c.cols, m * c.stride + i, anchor_of(p, ix, c.first_anchor + i, c.cols)};
}

template <typename T>
void fwd_chunk(const SoftPUParams& p, const ClassIndex& ix, const SoftPUChunk<T>& c, const SoftPURows<T>& r,
               int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t u = 0; u < c.rows * c.modalities; ++u) {
    const Segment<T> s = segment(p, ix, c, u);
    fwd_row<false, false>(p, s.anchor, s.row, c.cols, r, s.at, nullptr);
  }
}

// Scratch of `n` doubles for one thread (operator new: no library template is instantiated here).
struct Scratch {
  explicit Scratch(std::int64_t n) : data(static_cast<double*>(::operator new(sizeof(double) * (n > 0 ? n : 1)))) {}
  ~Scratch() { ::operator delete(data); }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  double* data;
};

template <typename T>
void bwd_chunk(const SoftPUParams& p, const ClassIndex& ix, const SoftPUChunk<T>& c, const SoftPURows<T>& r,
               int threads) {
#pragma omp parallel num_threads(threads)
  {
    const Scratch corr(ix.max_size);
#pragma omp for schedule(static)
    for (std::int64_t u = 0; u < c.rows * c.modalities; ++u) {
      const Segment<T> s = segment(p, ix, c, u);
      const double l = r.lse[s.at], rho = r.ref[s.at], au = r.a_ulb[s.at], g11 = r.grad_lb[s.at],
                   g10 = r.grad_ulb[s.at];
      if (r.grad_temperature != nullptr) {
        r.grad_temperature[s.at] = static_cast<T>(
            -p.inv_tau * bwd_row<true>(p, s.anchor, s.row, c.cols, l, rho, au, g11, g10, corr.data));
      } else {
        bwd_row<false>(p, s.anchor, s.row, c.cols, l, rho, au, g11, g10, corr.data);
      }
    }
  }
}

template <typename T>
void fwd_grad_chunk(const SoftPUParams& p, const ClassIndex& ix, const SoftPUChunk<T>& c, const SoftPURows<T>& r,
                    int threads) {
#pragma omp parallel num_threads(threads)
  {
    const Scratch corr(ix.max_size);
#pragma omp for schedule(static)
    for (std::int64_t u = 0; u < c.rows * c.modalities; ++u) {
      const Segment<T> s = segment(p, ix, c, u);
      if (r.grad_temperature != nullptr) {
        r.grad_temperature[s.at] =
            static_cast<T>(-p.inv_tau * fwd_row<true, true>(p, s.anchor, s.row, c.cols, r, s.at, corr.data));
      } else {
        fwd_row<true, false>(p, s.anchor, s.row, c.cols, r, s.at, corr.data);
      }
    }
  }
}

// ---- Symmetric InfoNCE: nothing labeled, no pseudo labels, B_a = B_c, partner k = j (docs/math.md,
// "Symmetric InfoNCE in one pass"). Then P11 = ∅ and P10 = {partner} with w = 1, so each direction's term is
// lse − ℓ_jj, and the reverse direction's rows are the columns of the same logits: one forward pass gives
// both directions (the rows' lse here, the columns' accumulated chunk by chunk), and one backward pass forms
// G = g_j (p^row_jk − δ_jk) + g'_k (p^col_jk − δ_jk) for both at once.
//
// With a shift R ≥ every |ℓ| whose span 2R stays inside the exp's range (`bounded`), exp(ℓ − R) is one number
// that serves the row sums and the column sums (the forward), and p^row and p^col are it times a per-row
// and a per-column factor (the backward): one exp per pair in each pass instead of two.
//
// Both lse are kept in double (their float rounding, ~ulp(ℓ), would reach every softmax in the backward as a
// relative error); the float loops subtract them as a hi + lo pair of floats.

// Columns per block of the column pass: one thread owns a block and reads its rows in order, so every
// column's sum is formed in the same order for any thread count. Wide (8 KiB of float per row): each row
// segment then spans whole pages, where 1 KiB segments at a stride of B_c floats missed the TLB row by row.
constexpr std::int64_t kColumnBlock = 2048;

// The column pass of the forward over a chunk of logits (or, bounded, of e = exp(ℓ − R)): running
// (col_max, col_sum) of every one of the M·B_c columns, col_sum = Σ exp(ℓ − col_max) in double. Bounded,
// the e are summed as they are and col_max is not used.
template <bool kBounded, typename T>
void sym_cols_chunk(const SoftPUChunk<T>& c, T* col_max, double* col_sum, int threads) {
  const std::int64_t n = c.modalities * c.cols;
  const std::int64_t blocks = (n + kColumnBlock - 1) / kColumnBlock;
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t b = 0; b < blocks; ++b) {
    const std::int64_t k0 = b * kColumnBlock;
    const std::int64_t w = n - k0 < kColumnBlock ? n - k0 : kColumnBlock;
    double sum[kColumnBlock];
    T shift[kColumnBlock];
    if constexpr (kBounded) {
      for (std::int64_t k = 0; k < w; ++k) sum[k] = col_sum[k0 + k];
    } else {
      T mx[kColumnBlock];
      for (std::int64_t k = 0; k < w; ++k) mx[k] = col_max[k0 + k];
      for (std::int64_t i = 0; i < c.rows; ++i) {
        const T* row = c.dots + i * n + k0;
#pragma omp simd
        for (std::int64_t k = 0; k < w; ++k) mx[k] = row[k] > mx[k] ? row[k] : mx[k];  // NaN: the sum has it
      }
      for (std::int64_t k = 0; k < w; ++k) {
        // A column that is -inf so far keeps shift 0: exp(−inf − 0) = 0, where −inf − (−inf) would be NaN.
        shift[k] = std::isinf(mx[k]) && mx[k] < 0 ? T(0) : mx[k];
        const T old = col_max[k0 + k];
        sum[k] = col_sum[k0 + k] * (old == mx[k] ? 1.0 : std::exp(static_cast<double>(old) - shift[k]));
        col_max[k0 + k] = mx[k];
      }
    }
    for (std::int64_t i = 0; i < c.rows; ++i) {
      const T* row = c.dots + i * n + k0;
      if constexpr (kBounded) {
#pragma omp simd
        for (std::int64_t k = 0; k < w; ++k) sum[k] += static_cast<double>(row[k]);
      } else {
#pragma omp simd
        for (std::int64_t k = 0; k < w; ++k) sum[k] += static_cast<double>(vexp(row[k] - shift[k]));
      }
    }
    for (std::int64_t k = 0; k < w; ++k) col_sum[k0 + k] = sum[k];
  }
}

// The forward of one (row, modality) segment: raw dots in; out, the logits (general, for the column pass) or
// e = exp(ℓ − R) (bounded), ℓ formed by `scale`. Writes the row's lse (double), ref = ℓ_jj and ulb = lse − ℓ_jj
// (lb = 0, a_ulb = 1).
template <bool kBounded, typename T>
void sym_fwd_row(T* row, std::int64_t cols, std::int64_t partner, T inv_tau, T bound, const SoftPURows<T>& out,
                 double* row_lse, std::int64_t at) {
  const T mx = scale_and_max(row, cols, inv_tau);
  const double diag = static_cast<double>(row[partner]);
  const T shift = kBounded ? bound : mx;
  const bool no_max = !kBounded && std::isinf(shift) && shift < 0;  // a row of −inf: exp(−inf − 0) = 0
  const T sh = no_max ? T(0) : shift;
  double es = 0.0;
  if constexpr (kBounded) {
#pragma omp simd reduction(+ : es)
    for (std::int64_t k = 0; k < cols; ++k) {
      const T e = vexp(row[k] - sh);
      row[k] = e;
      es += static_cast<double>(e);
    }
  } else {
#pragma omp simd reduction(+ : es)
    for (std::int64_t k = 0; k < cols; ++k) es += static_cast<double>(vexp(row[k] - sh));
  }
  // As torch.logsumexp: −inf for a row of −inf (its sum is 0), NaN where a NaN made the sum NaN.
  const double lse = (no_max && !std::isnan(es)) ? static_cast<double>(shift) : static_cast<double>(sh) + std::log(es);
  row_lse[at] = lse;
  out.lse[at] = static_cast<T>(lse);
  out.ref[at] = diag;
  out.lb[at] = T(0);
  out.ulb[at] = static_cast<T>(lse - diag);
  out.a_ulb[at] = T(1);
}

template <typename T>
void sym_fwd_chunk(const SoftPUParams& p, const ClassIndex& ix, const SoftPUChunk<T>& c, const SoftPURows<T>& r,
                   const SoftPUSymmetric<T>& sym, int threads) {
  const T inv_tau = static_cast<T>(p.inv_tau);
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t u = 0; u < c.rows * c.modalities; ++u) {
    const Segment<T> s = segment(p, ix, c, u);
    if (sym.bounded) {
      sym_fwd_row<true>(s.row, c.cols, s.anchor.partner, inv_tau, sym.shift, r, sym.row_lse, s.at);
    } else {
      sym_fwd_row<false>(s.row, c.cols, s.anchor.partner, inv_tau, sym.shift, r, sym.row_lse, s.at);
    }
  }
  if (sym.bounded) {
    sym_cols_chunk<true>(c, sym.col_max, sym.col_sum, threads);
  } else {
    sym_cols_chunk<false>(c, sym.col_max, sym.col_sum, threads);
  }
}

// One segment of the backward: raw dots in, ∂L/∂dots = G/τ out, G_k = g p^row_k + g'_k p^col_k − (g + g'_j)
// δ_jk, with lse = lse_hi + lse_lo (and the columns' hi[k] + lo[k]). Bounded (e = exp(ℓ − R)):
// p^row = e · e^{R − lse}, and g'_k p^col_k = e · col_factor[k] (g'_k e^{R − lse'_k}, formed per column).
// Returns the share Σ_k G_k ℓ_k, formed as g [Σ p^row (ℓ − lse) − (ℓ_jj − lse)] + Σ_k g'_k p^col_k (ℓ_k −
// lse'_k) − g'_j (ℓ_jj − lse'_j): the rows' shares sum to Σ_jk G_jk ℓ_jk because each softmax sums to 1, and
// no term carries a large ℓ uncancelled.
template <bool kBounded, bool kTau, typename T>
double sym_grad_row(T* row, std::int64_t cols, std::int64_t j, double inv_tau_d, const SoftPUSymmetric<T>& sym,
                    std::int64_t col0, double lse, double g) {
  const T inv_tau = static_cast<T>(inv_tau_d);
  const T* hi = sym.lse_col_hi + col0;
  const T* lo = sym.lse_col_lo + col0;
  const T* g_col = sym.grad_col + col0;
  scale(row, cols, inv_tau);  // ℓ as the forward rounded it
  const double diag = static_cast<double>(row[j]);
  const T lse_hi = static_cast<T>(lse), lse_lo = static_cast<T>(lse - static_cast<double>(lse_hi));
  double s_row = 0.0, s_col = 0.0;
  if constexpr (kBounded) {
    const T shift = sym.shift;
    const T* factor = sym.col_factor + col0;
    const T row_factor = static_cast<T>(g * std::exp(static_cast<double>(shift) - lse));
    double s_et = 0.0;
#pragma omp simd reduction(+ : s_et, s_col)
    for (std::int64_t k = 0; k < cols; ++k) {
      const T l = row[k];
      const T e = vexp(l - shift);
      const T pc = e * factor[k];
      row[k] = (e * row_factor + pc) * inv_tau;
      if constexpr (kTau) {
        const T t = (l - lse_hi) - lse_lo;
        s_et += static_cast<double>(e * t);
        s_col += static_cast<double>(pc * ((l - hi[k]) - lo[k]));
      }
    }
    // Σ p^row (ℓ − lse) = e^{R − lse} Σ e (ℓ − lse).
    if constexpr (kTau) s_row = std::exp(static_cast<double>(shift) - lse) * s_et;
  } else {
    const T g_t = static_cast<T>(g);
#pragma omp simd reduction(+ : s_row, s_col)
    for (std::int64_t k = 0; k < cols; ++k) {
      const T l = row[k];
      const T tr = (l - lse_hi) - lse_lo, tc = (l - hi[k]) - lo[k];
      const T pr = vexp(tr);
      const T pc = g_col[k] * vexp(tc);
      row[k] = (g_t * pr + pc) * inv_tau;
      if constexpr (kTau) {
        s_row += static_cast<double>(pr * tr);
        s_col += static_cast<double>(pc * tc);
      }
    }
  }
  const double gj = static_cast<double>(g_col[j]);
  row[j] = static_cast<T>(static_cast<double>(row[j]) - (g + gj) * inv_tau_d);
  if constexpr (kTau) {
    const double lse_col_j = static_cast<double>(hi[j]) + static_cast<double>(lo[j]);
    return g * (s_row - (diag - lse)) + s_col - gj * (diag - lse_col_j);
  } else {
    return 0.0;
  }
}

template <typename T>
void sym_grad_chunk(const SoftPUParams& p, const ClassIndex& ix, const SoftPUChunk<T>& c, const SoftPURows<T>& r,
                    const SoftPUSymmetric<T>& sym, int threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
  for (std::int64_t u = 0; u < c.rows * c.modalities; ++u) {
    const Segment<T> s = segment(p, ix, c, u);
    const std::int64_t col0 = (u % c.modalities) * c.cols;  // this modality's columns in the [M, B_c] arrays
    const double lse = sym.row_lse[s.at], g = static_cast<double>(r.grad_ulb[s.at]);
    const std::int64_t j = s.anchor.partner;
    double share;
    if (sym.bounded) {
      share = r.grad_temperature != nullptr ? sym_grad_row<true, true>(s.row, c.cols, j, p.inv_tau, sym, col0, lse, g)
                                            : sym_grad_row<true, false>(s.row, c.cols, j, p.inv_tau, sym, col0, lse, g);
    } else {
      share = r.grad_temperature != nullptr ? sym_grad_row<false, true>(s.row, c.cols, j, p.inv_tau, sym, col0, lse, g)
                                            : sym_grad_row<false, false>(s.row, c.cols, j, p.inv_tau, sym, col0, lse, g);
    }
    if (r.grad_temperature != nullptr) r.grad_temperature[s.at] = static_cast<T>(-p.inv_tau * share);
  }
}

template <typename T>
constexpr SoftPUKernelsOf<T> kernels_of() {
  return {&fwd_chunk<T>, &bwd_chunk<T>, &fwd_grad_chunk<T>, &sym_fwd_chunk<T>, &sym_grad_chunk<T>};
}

}  // namespace

const SoftPUKernels& soft_pu_kernels() {
  static const SoftPUKernels table{MKEFAST_ISA_NAME, kernels_of<float>(), kernels_of<double>()};
  return table;
}

}  // namespace mkefast::cpu::MKEFAST_ISA
