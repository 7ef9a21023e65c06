// Fused epilogues of the chunked soft-PU loss (SPEC §1) on the GPU.
//
// The chunk driver (mkefast.backends._chunked) computes, per modality and per chunk of C anchors, the raw dot
// products dots[j, k] = <s_J, z_k> with one cuBLAS GEMM (J = first_row + j is the anchor's index among the
// B candidates). These kernels do everything else in one or two passes over the chunk, one block per row.
// The chunk holds whole rows, so the reference r_J comes from the row itself in both RBF spaces:
//
//   ℓ_Jk  = dots[j, k] / τ
//   lse_J = log Σ_k exp(ℓ_Jk)
//   P11(J, k) = lab[J] & lab[k] & cls[J] == cls[k]
//   P10(J, k) = !(lab[J] & lab[k]) & (k == J | (cls[J] >= 0 & cls[k] == cls[J]))
//   x_Jk  = ℓ_Jk ("logit") or exp(ℓ_Jk) ("phi");   r_J = mean_{P11} x_Jk, or x_JJ if P11 is empty
//   w_Jk  = exp(-(x_Jk - r_J)² / (2σ²))              (1 when σ = inf, passed as inv_two_sigma_sq = 0)
//   lb_J  = Σ_{P11} (lse_J - ℓ_Jk) / |P11|          ulb_J = Σ_{P10} w_Jk (lse_J - ℓ_Jk) / |P10|
//   a_ulb_J = Σ_{P10} w_Jk / |P10|                   (each 0 when its set is empty)
//
// Backward: with a11 = 1/|P11| on P11, a10 = w/|P10| on P10, A11 = [|P11| > 0], A10 = a_ulb and
// p = exp(ℓ - lse), the loss Σ_J g11_J lb_J + g10_J ulb_J has
//   ∂/∂ℓ_Jk = g11_J (A11 p_Jk - a11_Jk) + g10_J (A10 p_Jk - a10_Jk),
// since ∂lse/∂ℓ_Jk = p_Jk and w, r are constants. The kernel writes G/τ = ∂L/∂dots over the chunk in place,
// so that the driver's two GEMMs give grad_s = (G/τ) z and grad_z = (G/τ)ᵀ s directly.
//
// Masks are rebuilt from the O(B) arrays: no B×B (or C×B) mask ever exists. All arithmetic is in the chunk's
// type A (float, or double for float64 inputs); offsets into the chunk are int64 because C·B can pass 2^31.
// NaN inputs give NaN outputs: maxima use comparisons that keep the running value only against numbers, and
// every sum carries NaN through.
#include <cmath>
#include <limits>

#include "common.cuh"
#include "launchers.h"

namespace mkefast::cuda {
namespace {

constexpr int kRowThreads = 256;

__device__ __forceinline__ float acc_exp(float x) { return expf(x); }
__device__ __forceinline__ double acc_exp(double x) { return exp(x); }
__device__ __forceinline__ float acc_log(float x) { return logf(x); }
__device__ __forceinline__ double acc_log(double x) { return log(x); }

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

// The RBF weight w of a pair with logit l against the anchor's reference r.
template <typename A>
__device__ __forceinline__ A rbf_weight(A l, A r, A inv_two_sigma_sq, bool phi_space) {
  if (!(inv_two_sigma_sq > A(0))) return A(1);  // σ = inf: exactly 1, even where (x - r)² is inf
  const A x = phi_space ? acc_exp(l) : l;
  const A diff = x - r;
  return acc_exp(-diff * diff * inv_two_sigma_sq);
}

// 1/n, and 0 for an empty set (whose terms are then 0, as in the reference).
template <typename A>
__device__ __forceinline__ A inv_count(float n) {
  return n > 0.0f ? A(1) / static_cast<A>(n) : A(0);
}

// One block per chunk row j. Pass 1 (one read of the row): the online max / sum-exp for lse and Σ_{P11} x for
// the reference. Pass 2: the three masked sums, which need lse and r; it reads the label arrays (O(B), shared
// by every row, so they stay in L2) and loads again only the logits of the row's P11 ∪ P10 members.
template <typename A>
__global__ void __launch_bounds__(kRowThreads) soft_pu_fwd_kernel(
    const A* __restrict__ dots, const std::int32_t* __restrict__ cls, const std::uint8_t* __restrict__ labeled,
    const float* __restrict__ n11, const float* __restrict__ n10, A* __restrict__ lb,
    A* __restrict__ ulb, A* __restrict__ lse_out, A* __restrict__ ref_out, A* __restrict__ a_ulb, std::int64_t cols,
    std::int64_t ld, std::int64_t first_row, A inv_tau, A inv_two_sigma_sq, bool phi_space) {
  const std::int64_t j = blockIdx.x;
  const std::int64_t anchor = first_row + j;
  const A* row = dots + j * ld;
  const std::int32_t cls_j = cls[anchor];
  const bool lab_j = labeled[anchor] != 0;
  const float n11_j = n11[anchor];
  // P11(J) is non-empty only for a labeled anchor (it then holds J itself).
  const bool has_p11 = lab_j && n11_j > 0.0f;

  MaxSum<A> ms{-std::numeric_limits<A>::infinity(), A(0)};
  A x11[1] = {A(0)};
  for (std::int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
    const A l = row[k] * inv_tau;
    push(ms, l);
    if (has_p11 && labeled[k] != 0 && cls[k] == cls_j) x11[0] += phi_space ? acc_exp(l) : l;
  }
  ms = block_merge(ms);
  const A lse = ms.max + acc_log(ms.sum);
  A r;
  if (has_p11) {  // uniform over the block, so the barriers inside block_sum are safe
    block_sum(x11);
    r = x11[0] / static_cast<A>(n11_j);
  } else {
    const A l_diag = row[anchor] * inv_tau;
    r = phi_space ? acc_exp(l_diag) : l_diag;
  }

  // acc = {Σ_{P11} (lse - ℓ), Σ_{P10} w (lse - ℓ), Σ_{P10} w}
  A acc[3] = {A(0), A(0), A(0)};
  for (std::int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
    const bool both = lab_j && labeled[k] != 0;
    const bool same = cls[k] == cls_j;
    // P11 when both are labeled, P10 otherwise; the two sets are disjoint.
    const bool in_set = both ? same : (k == anchor || (cls_j >= 0 && same));
    if (!in_set) continue;
    const A l = row[k] * inv_tau;
    const A nll = lse - l;
    if (both) {
      acc[0] += nll;
    } else {
      const A w = rbf_weight(l, r, inv_two_sigma_sq, phi_space);
      acc[1] += w * nll;
      acc[2] += w;
    }
  }
  block_sum(acc);
  if (threadIdx.x == 0) {
    const A inv_n10 = inv_count<A>(n10[anchor]);
    lb[j] = acc[0] * inv_count<A>(n11_j);
    ulb[j] = acc[1] * inv_n10;
    a_ulb[j] = acc[2] * inv_n10;
    lse_out[j] = lse;
    ref_out[j] = r;
  }
}

// One block per chunk row j, one read and one write of the row: G/τ in place of the dot products.
template <typename A>
__global__ void __launch_bounds__(kRowThreads) soft_pu_bwd_kernel(
    A* __restrict__ dots, const std::int32_t* __restrict__ cls, const std::uint8_t* __restrict__ labeled,
    const float* __restrict__ n11, const float* __restrict__ n10, const A* __restrict__ lse,
    const A* __restrict__ ref, const A* __restrict__ a_ulb, const A* __restrict__ grad_lb,
    const A* __restrict__ grad_ulb, std::int64_t cols, std::int64_t ld, std::int64_t first_row, A inv_tau,
    A inv_two_sigma_sq, bool phi_space) {
  const std::int64_t j = blockIdx.x;
  const std::int64_t anchor = first_row + j;
  A* row = dots + j * ld;
  const std::int32_t cls_j = cls[anchor];
  const bool lab_j = labeled[anchor] != 0;
  const bool has_p11 = n11[anchor] > 0.0f;
  const A lse_j = lse[j];
  const A r = ref[j];
  const A g11 = grad_lb[j];
  const A g10 = grad_ulb[j];
  // Coefficient of p: g11·A11 + g10·A10; an empty P11 contributes nothing (lb is the constant 0 there).
  const A coef_p = (has_p11 ? g11 : A(0)) + g10 * a_ulb[j];
  const A g11_a11 = g11 * inv_count<A>(n11[anchor]);
  const A g10_inv_n10 = g10 * inv_count<A>(n10[anchor]);
  for (std::int64_t k = threadIdx.x; k < cols; k += blockDim.x) {
    const A l = row[k] * inv_tau;
    A g = coef_p * acc_exp(l - lse_j);
    const bool both = lab_j && labeled[k] != 0;
    const bool same = cls[k] == cls_j;
    if (both) {
      if (same) g -= g11_a11;
    } else if (k == anchor || (cls_j >= 0 && same)) {
      g -= g10_inv_n10 * rbf_weight(l, r, inv_two_sigma_sq, phi_space);
    }
    row[k] = g * inv_tau;
  }
}

template <typename A>
int soft_pu_fwd(const void* dots, const std::int32_t* cls, const std::uint8_t* labeled, const float* n11,
                const float* n10, void* lb, void* ulb, void* lse, void* ref, void* a_ulb,
                std::int64_t rows, std::int64_t cols, std::int64_t ld, std::int64_t first_row, double inv_tau,
                double inv_two_sigma_sq, bool phi_space, cudaStream_t stream) {
  soft_pu_fwd_kernel<A><<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
      static_cast<const A*>(dots), cls, labeled, n11, n10, static_cast<A*>(lb), static_cast<A*>(ulb),
      static_cast<A*>(lse), static_cast<A*>(ref), static_cast<A*>(a_ulb), cols, ld, first_row, static_cast<A>(inv_tau),
      static_cast<A>(inv_two_sigma_sq), phi_space);
  return static_cast<int>(cudaGetLastError());
}

template <typename A>
int soft_pu_bwd(void* dots, const std::int32_t* cls, const std::uint8_t* labeled, const float* n11, const float* n10,
                const void* lse, const void* ref, const void* a_ulb, const void* grad_lb, const void* grad_ulb,
                std::int64_t rows, std::int64_t cols, std::int64_t ld, std::int64_t first_row, double inv_tau,
                double inv_two_sigma_sq, bool phi_space, cudaStream_t stream) {
  soft_pu_bwd_kernel<A><<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(
      static_cast<A*>(dots), cls, labeled, n11, n10, static_cast<const A*>(lse), static_cast<const A*>(ref),
      static_cast<const A*>(a_ulb), static_cast<const A*>(grad_lb), static_cast<const A*>(grad_ulb), cols, ld,
      first_row, static_cast<A>(inv_tau), static_cast<A>(inv_two_sigma_sq), phi_space);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int launch_soft_pu_fwd(const void* dots, const std::int32_t* cls, const std::uint8_t* labeled, const float* n11,
                       const float* n10, void* lb, void* ulb, void* lse, void* ref, void* a_ulb,
                       std::int64_t rows, std::int64_t cols, std::int64_t ld, std::int64_t first_row,
                       double inv_tau, double inv_two_sigma_sq, bool phi_space, DType dtype, cudaStream_t stream) {
  if (rows <= 0) return static_cast<int>(cudaSuccess);
  if (rows > std::numeric_limits<int>::max()) return static_cast<int>(cudaErrorInvalidConfiguration);
  switch (dtype) {
    case DType::f32:
      return soft_pu_fwd<float>(dots, cls, labeled, n11, n10, lb, ulb, lse, ref, a_ulb, rows, cols, ld,
                                first_row, inv_tau, inv_two_sigma_sq, phi_space, stream);
    case DType::f64:
      return soft_pu_fwd<double>(dots, cls, labeled, n11, n10, lb, ulb, lse, ref, a_ulb, rows, cols, ld,
                                 first_row, inv_tau, inv_two_sigma_sq, phi_space, stream);
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
}

int launch_soft_pu_bwd(void* dots, const std::int32_t* cls, const std::uint8_t* labeled, const float* n11,
                       const float* n10, const void* lse, const void* ref, const void* a_ulb, const void* grad_lb,
                       const void* grad_ulb, std::int64_t rows, std::int64_t cols, std::int64_t ld,
                       std::int64_t first_row, double inv_tau, double inv_two_sigma_sq, bool phi_space, DType dtype,
                       cudaStream_t stream) {
  if (rows <= 0) return static_cast<int>(cudaSuccess);
  if (rows > std::numeric_limits<int>::max()) return static_cast<int>(cudaErrorInvalidConfiguration);
  switch (dtype) {
    case DType::f32:
      return soft_pu_bwd<float>(dots, cls, labeled, n11, n10, lse, ref, a_ulb, grad_lb, grad_ulb, rows, cols, ld,
                                first_row, inv_tau, inv_two_sigma_sq, phi_space, stream);
    case DType::f64:
      return soft_pu_bwd<double>(dots, cls, labeled, n11, n10, lse, ref, a_ulb, grad_lb, grad_ulb, rows, cols, ld,
                                 first_row, inv_tau, inv_two_sigma_sq, phi_space, stream);
    default:
      return static_cast<int>(cudaErrorInvalidValue);
  }
}

}  // namespace mkefast::cuda
