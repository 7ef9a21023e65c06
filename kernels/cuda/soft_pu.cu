// Fused epilogues of the chunked soft-PU op (docs/math.md, "The general op") on the GPU.
//
// The chunk driver (mkefast.backends._chunked) computes, per modality and per chunk of C anchors, the raw dot
// products dots[i, k] = <s_j, z_k> (anchor j = first_anchor + i, candidates k < B_c) with one cuBLAS GEMM.
// These kernels do everything else in one or two passes over the chunk, one block per row. With the partner
// p = j + diag_offset (when < B_c) and D(j) = every candidate, minus p when the diagonal is excluded:
//
//   ℓ_jk  = dots[i, k] / τ
//   lse_j = log Σ_{k∈D} exp(ℓ_jk)                   (-inf for an empty D: one candidate, excluded)
//   P11(j, k) = k∈D & alab[j] & lab[k] & acls[j] == cls[k]
//   P10(j, k) = k∈D & !(alab[j] & lab[k]) & (k == p | (acls[j] >= 0 & cls[k] == acls[j]))
//   ρ_j   = mean_{P11} ℓ ("logit") or log mean_{P11} e^ℓ ("phi", max-shifted), else ℓ_jp (0 without a
//           partner): logit units, summed in double and stored in float64 for the backward
//   w_jk  = exp(-½((ℓ - ρ)/σ)²), or in "phi" exp(-½((e^ℓ - e^ρ)/σ)²) in log form (e^ℓ never forms);
//           1 when σ = inf, and 1 by definition for the fallback pair (P11 empty, k = p)
//   lb_j  = lse_j - Σ_{P11} ℓ / |P11|      ulb_j = Σ_{P10} w (lse_j - ℓ) / |P10|      a_ulb_j = Σ_{P10} w / |P10|
//
// Backward (docs/math.md, "Gradients"): G_jk = CP p_jk - C11 [P11] - C10 w_jk [P10] with p = exp(ℓ - lse) on
// D (0 off it), CP = g11 [P11 ≠ ∅] + g10 a_ulb, C11 = g11/|P11|, C10 = g10/|P10|. The kernel writes
// G/τ = ∂L/∂dots over the chunk in place, so that the driver's two GEMMs give grad_s = (G/τ) z and
// grad_z = (G/τ)ᵀ s, and, when asked, the row's share of ∂L/∂τ = -(1/τ) Σ_k G_jk ℓ_jk, summed over centred
// logits ℓ - lse (Σ_k G_jk = 0), which keeps large logits (small τ) from cancelling, with the dense part
// normalized by its own Σ_k p_jk (see the kernel).
//
// Masks are rebuilt from the O(B) arrays: no B×B (or C×B) mask ever exists. Arithmetic is in the chunk's
// type A (float, or double for float64 inputs) except ρ: the forward sums it in double, and both passes
// compare ℓ with it as ρ_hi + ρ_lo (two A's), so that ℓ - ρ is exact for the close pairs whose weights
// matter. Offsets into the chunk are int64 because C·B can pass 2^31. NaN inputs give NaN outputs: maxima
// use comparisons that keep the running value only against numbers, and every sum carries NaN through.
#include <cmath>
#include <limits>

#include "common.cuh"
#include "launchers.h"

namespace mkefast::cuda {
namespace {

constexpr int kRowThreads = 256;

__device__ __forceinline__ float acc_exp(float x) { return expf(x); }
__device__ __forceinline__ double acc_exp(double x) { return exp(x); }
__device__ __forceinline__ float acc_expm1(float x) { return expm1f(x); }
__device__ __forceinline__ double acc_expm1(double x) { return expm1(x); }
__device__ __forceinline__ float acc_log(float x) { return logf(x); }
__device__ __forceinline__ double acc_log(double x) { return log(x); }
__device__ __forceinline__ float acc_abs(float x) { return fabsf(x); }
__device__ __forceinline__ double acc_abs(double x) { return fabs(x); }

// Running (max, Σ exp(ℓ - max)) of a set of logits: the one-read ("online") softmax normalizer.
template <typename A>
struct MaxSum {
  A max;
  A sum;
};

// s·exp(m - new_max), where an empty part (sum 0, max -inf) contributes 0 instead of 0·exp(-inf + inf) = NaN.
template <typename A>
__device__ __forceinline__ A rescaled(MaxSum<A> part, A new_max) {
  return part.sum == A(0) ? A(0) : part.sum * acc_exp(part.max - new_max);
}

template <typename A>
__device__ __forceinline__ MaxSum<A> merge(MaxSum<A> a, MaxSum<A> b) {
  const A m = b.max > a.max ? b.max : a.max;
  return {m, rescaled(a, m) + rescaled(b, m)};
}

// Adds one logit. A NaN logit fails the comparison and makes the sum NaN, which then stays NaN.
template <typename A>
__device__ __forceinline__ void push(MaxSum<A>& ms, A l) {
  if (l > ms.max) {
    ms.sum = ms.sum * acc_exp(ms.max - l) + A(1);
    ms.max = l;
  } else {
    ms.sum += acc_exp(l - ms.max);
  }
}

// log Σ exp of what was pushed: -inf for nothing (max -inf, sum 0).
template <typename A>
__device__ __forceinline__ A log_sum(MaxSum<A> ms) {
  return ms.sum == A(0) ? -std::numeric_limits<A>::infinity() : ms.max + acc_log(ms.sum);
}

// Merges every thread's part; every thread gets the total. Ends with a barrier (the scratch is reused).
template <typename A>
__device__ MaxSum<A> block_merge(MaxSum<A> ms) {
  __shared__ A max_part[kWarpSize];
  __shared__ A sum_part[kWarpSize];
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    ms = merge(ms, MaxSum<A>{__shfl_xor_sync(kFullMask, ms.max, offset), __shfl_xor_sync(kFullMask, ms.sum, offset)});
  }
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  if (lane == 0) {
    max_part[warp] = ms.max;
    sum_part[warp] = ms.sum;
  }
  __syncthreads();
  const bool valid = lane < static_cast<int>(blockDim.x) / kWarpSize;
  ms = {valid ? max_part[lane] : -std::numeric_limits<A>::infinity(), valid ? sum_part[lane] : A(0)};
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    ms = merge(ms, MaxSum<A>{__shfl_xor_sync(kFullMask, ms.max, offset), __shfl_xor_sync(kFullMask, ms.sum, offset)});
  }
  __syncthreads();
  return ms;
}

// One anchor row: its partner, its arrays, and the membership of candidate k in D / P11 / P10.
struct Row {
  std::int64_t partner;  // -1 for none
  bool excluded;
  std::int32_t cls;
  bool labeled;
  float n11, n10;

  __device__ static Row of(const SoftPUParams& p, std::int64_t anchor, std::int64_t cols) {
    const std::int64_t q = anchor + p.diag_offset;
    const bool has = q < cols;
    return {has ? q : -1, has && p.exclude_diagonal, p.anchor_cls[anchor], p.anchor_labeled[anchor] != 0,
            p.n11[anchor], p.n10[anchor]};
  }
  __device__ bool skips(std::int64_t k) const { return excluded && k == partner; }
  __device__ bool in_p11(const SoftPUParams& p, std::int64_t k) const {
    return labeled && p.labeled[k] != 0 && p.cls[k] == cls;
  }
  __device__ bool in_p10(const SoftPUParams& p, std::int64_t k) const {
    return !(labeled && p.labeled[k] != 0) && (k == partner || (cls >= 0 && p.cls[k] == cls));
  }
  __device__ bool fallback_pair(std::int64_t k) const { return k == partner && !(n11 > 0.0f); }
};

// ρ as hi + lo in A (lo = 0 in double), so that ℓ - ρ = (ℓ - hi) - lo is exact for ℓ within 2× of ρ.
template <typename A>
struct Ref {
  A hi, lo;
  __device__ static Ref of(double rho) {
    const A hi = static_cast<A>(rho);
    return {hi, static_cast<A>(rho - static_cast<double>(hi))};
  }
};

// The RBF weight of a pair of logit l against the reference (docs/math.md, "Numerics").
template <typename A>
__device__ __forceinline__ A rbf_weight(const SoftPUParams& p, A l, Ref<A> ref) {
  if (!p.rbf) return A(1);  // σ = inf: exactly 1, even where (x - r)² is inf
  const A diff = (l - ref.hi) - ref.lo;
  if (p.phi) {
    // |e^ℓ - e^ρ|/σ = exp(a - log σ + log(1 - e^{-δ})), a = max(ℓ, ρ), δ = |ℓ - ρ|: finite before it is
    // squared; δ = 0 gives log 0 = -inf and w = 1 exactly.
    const A a = l > ref.hi ? l : ref.hi;
    const A log_dist = a - static_cast<A>(p.log_sigma) + acc_log(-acc_expm1(-acc_abs(diff)));
    return acc_exp(A(-0.5) * acc_exp(A(2) * log_dist));
  }
  const A u = diff * static_cast<A>(p.inv_sigma);  // squared, overflows only to +inf: w = 0
  return acc_exp(A(-0.5) * u * u);
}

// 1/n, and 0 for an empty set (whose terms are then 0, as in the reference).
template <typename A>
__device__ __forceinline__ A inv_count(float n) {
  return n > 0.0f ? A(1) / static_cast<A>(n) : A(0);
}

// ℓ = dot · (1/τ), rounded before any use (__fmul_rn is never contracted). nvcc may fuse a product into the
// subtraction that follows it (ℓ − lse, ℓ − max, lse − ℓ), and then the backward's softmax would come from
// another ℓ than the forward's lse, by ulp(ℓ): 10⁻³ in every p at |ℓ| ≈ 10⁴ in float32 (the C++ backward did,
// csrc/cpu/isa/soft_pu_rows.cpp). nvcc 13.0 happens not to fuse these (the SASS is the same either way); this
// keeps it so.
__device__ __forceinline__ float rounded_logit(float dot, float inv_tau) { return __fmul_rn(dot, inv_tau); }
__device__ __forceinline__ double rounded_logit(double dot, double inv_tau) { return __dmul_rn(dot, inv_tau); }

// One block per chunk row. Pass 1 (one read of the row): the online max / sum-exp over D for lse, and over
// P11 the double sums for ρ and lb. Pass 2: the P10 sums, which need lse and ρ; it reads the label arrays
// (O(B), shared by every row, so they stay in L2) and loads again only the logits of the row's P10 members.
template <typename A>
__global__ void __launch_bounds__(kRowThreads) soft_pu_fwd_kernel(
    const A* __restrict__ dots, const SoftPUParams p, A* __restrict__ lb, A* __restrict__ ulb,
    A* __restrict__ lse_out, double* __restrict__ ref_out, A* __restrict__ a_ulb, std::int64_t cols, std::int64_t ld,
    std::int64_t first_anchor) {
  const std::int64_t i = blockIdx.x;
  const Row r = Row::of(p, first_anchor + i, cols);
  const A* row = dots + i * ld;
  const A inv_tau = static_cast<A>(p.inv_tau);
  const bool has_p11 = r.n11 > 0.0f;  // uniform over the block, so the barriers below are safe

  MaxSum<A> ms{-std::numeric_limits<A>::infinity(), A(0)};
  MaxSum<double> ms11{-std::numeric_limits<double>::infinity(), 0.0};  // "phi": Σ_{P11} e^ℓ, max-shifted
  double s11[1] = {0.0};                                                // Σ_{P11} ℓ
  for (std::int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
    if (r.skips(k)) continue;
    const A l = rounded_logit(row[k], inv_tau);
    push(ms, l);
    if (has_p11 && r.in_p11(p, k)) {
      s11[0] += static_cast<double>(l);
      if (p.phi) push(ms11, static_cast<double>(l));
    }
  }
  const A lse = log_sum(block_merge(ms));
  double rho;
  if (has_p11) {
    block_sum(s11);
    rho = p.phi ? log_sum(block_merge(ms11)) - log(static_cast<double>(r.n11)) : s11[0] / r.n11;
  } else {
    rho = r.partner >= 0 ? static_cast<double>(rounded_logit(row[r.partner], inv_tau)) : 0.0;
  }
  const Ref<A> ref = Ref<A>::of(rho);

  A acc[2] = {A(0), A(0)};  // Σ_{P10} w (lse - ℓ), Σ_{P10} w
  for (std::int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
    if (r.skips(k) || !r.in_p10(p, k)) continue;
    const A l = rounded_logit(row[k], inv_tau);
    const A w = r.fallback_pair(k) ? A(1) : rbf_weight(p, l, ref);
    acc[0] += w * (lse - l);
    acc[1] += w;
  }
  block_sum(acc);
  if (threadIdx.x == 0) {
    const A inv_n10 = inv_count<A>(r.n10);
    lb[i] = has_p11 ? static_cast<A>(static_cast<double>(lse) - s11[0] / r.n11) : A(0);
    ulb[i] = acc[0] * inv_n10;
    a_ulb[i] = acc[1] * inv_n10;
    lse_out[i] = lse;
    ref_out[i] = rho;
  }
}

// One block per chunk row, one read and one write of the row: G/τ in place of the dot products, and the
// row's share of ∂L/∂τ when grad_temperature is not null.
template <typename A>
__global__ void __launch_bounds__(kRowThreads) soft_pu_bwd_kernel(
    A* __restrict__ dots, const SoftPUParams p, const A* __restrict__ lse, const double* __restrict__ ref,
    const A* __restrict__ a_ulb, const A* __restrict__ grad_lb, const A* __restrict__ grad_ulb,
    A* __restrict__ grad_temperature, std::int64_t cols, std::int64_t ld, std::int64_t first_anchor) {
  const std::int64_t i = blockIdx.x;
  const Row r = Row::of(p, first_anchor + i, cols);
  A* row = dots + i * ld;
  const A inv_tau = static_cast<A>(p.inv_tau);
  const A lse_j = lse[i];
  const Ref<A> rho = Ref<A>::of(ref[i]);
  const A g11 = grad_lb[i];
  const A g10 = grad_ulb[i];
  // Coefficient of p: g11·A11 + g10·A10; an empty P11 contributes nothing (lb is the constant 0 there).
  const A coef_p = (r.n11 > 0.0f ? g11 : A(0)) + g10 * a_ulb[i];
  const A c11 = g11 * inv_count<A>(r.n11);
  const A c10 = g10 * inv_count<A>(r.n10);
  // For ∂L/∂τ: Σ_D e (ℓ - lse), Σ_D e (e = exp(ℓ - lse)) and Σ_{P11 ∪ P10} c (ℓ - lse) of the sparse terms.
  A tau[3] = {A(0), A(0), A(0)};
  for (std::int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
    if (r.skips(k)) {  // off D: p = 0, and in no set (an empty D has only this k, and CP = 0)
      row[k] = A(0);
      continue;
    }
    const A l = rounded_logit(row[k], inv_tau);
    const A t = l - lse_j;
    const A e = acc_exp(t);
    A c = A(0);
    if (r.in_p11(p, k)) {
      c = c11;
    } else if (r.in_p10(p, k)) {
      c = c10 * (r.fallback_pair(k) ? A(1) : rbf_weight(p, l, rho));
    }
    tau[0] += e * t;
    tau[1] += e;
    tau[2] += c * t;
    row[k] = (coef_p * e - c) * inv_tau;
  }
  if (grad_temperature != nullptr) {  // uniform over the block
    block_sum(tau);
    // The stored lse is off its exact value by a rounding r: every e is off by the factor e^{-r} and every
    // ℓ - lse by -r. Normalizing the dense sum by Σ e removes the first, and the second cancels against the
    // sparse sum, whose coefficients add up to CP: the share is then exact to first order in r.
    // An empty D has Σ e = 0 and no share (a NaN goes the dividing way and stays NaN).
    const A dense = tau[1] == A(0) ? A(0) : coef_p * (tau[0] / tau[1]);
    if (threadIdx.x == 0) grad_temperature[i] = -inv_tau * (dense - tau[2]);
  }
}

template <typename A>
int soft_pu_fwd(const SoftPUParams& params, const void* dots, void* lb, void* ulb, void* lse, double* ref,
                void* a_ulb, std::int64_t rows, std::int64_t cols, std::int64_t ld, std::int64_t first_anchor,
                cudaStream_t stream) {
  soft_pu_fwd_kernel<A><<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
      static_cast<const A*>(dots), params, static_cast<A*>(lb), static_cast<A*>(ulb), static_cast<A*>(lse), ref,
      static_cast<A*>(a_ulb), cols, ld, first_anchor);
  return static_cast<int>(cudaGetLastError());
}

template <typename A>
int soft_pu_bwd(const SoftPUParams& params, void* dots, const void* lse, const double* ref, const void* a_ulb,
                const void* grad_lb, const void* grad_ulb, void* grad_temperature, std::int64_t rows,
                std::int64_t cols, std::int64_t ld, std::int64_t first_anchor, cudaStream_t stream) {
  soft_pu_bwd_kernel<A><<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
      static_cast<A*>(dots), params, static_cast<const A*>(lse), ref, static_cast<const A*>(a_ulb),
      static_cast<const A*>(grad_lb), static_cast<const A*>(grad_ulb), static_cast<A*>(grad_temperature), cols, ld,
      first_anchor);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int launch_soft_pu_fwd(const SoftPUParams& params, const void* dots, void* lb, void* ulb, void* lse, double* ref,
                       void* a_ulb, std::int64_t rows, std::int64_t cols, std::int64_t ld, std::int64_t first_anchor,
                       DType dtype, cudaStream_t stream) {
  if (rows <= 0) return static_cast<int>(cudaSuccess);
  if (rows > std::numeric_limits<int>::max()) return static_cast<int>(cudaErrorInvalidConfiguration);
  switch (dtype) {
    case DType::f32:
      return soft_pu_fwd<float>(params, dots, lb, ulb, lse, ref, a_ulb, rows, cols, ld, first_anchor, stream);
    case DType::f64:
      return soft_pu_fwd<double>(params, dots, lb, ulb, lse, ref, a_ulb, rows, cols, ld, first_anchor, stream);
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
}

int launch_soft_pu_bwd(const SoftPUParams& params, void* dots, const void* lse, const double* ref,
                       const void* a_ulb, const void* grad_lb, const void* grad_ulb, void* grad_temperature,
                       std::int64_t rows, std::int64_t cols, std::int64_t ld, std::int64_t first_anchor, DType dtype,
                       cudaStream_t stream) {
  if (rows <= 0) return static_cast<int>(cudaSuccess);
  if (rows > std::numeric_limits<int>::max()) return static_cast<int>(cudaErrorInvalidConfiguration);
  switch (dtype) {
    case DType::f32:
      return soft_pu_bwd<float>(params, dots, lse, ref, a_ulb, grad_lb, grad_ulb, grad_temperature, rows, cols, ld,
                                first_anchor, stream);
    case DType::f64:
      return soft_pu_bwd<double>(params, dots, lse, ref, a_ulb, grad_lb, grad_ulb, grad_temperature, rows, cols,
                                 ld, first_anchor, stream);
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace mkefast::cuda
