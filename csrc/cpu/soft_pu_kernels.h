// The soft-PU epilogues of the CPU module, as compiled once per instruction set (csrc/cpu/isa/), and the table
// through which the bindings call the variant chosen at import (csrc/cpu/isa.cpp). Torch-free and
// pybind11-free: the per-ISA translation units include nothing but this, the C++ standard library and
// csrc/common, so that no inline function of a library is compiled with an instruction set the processor
// may lack (the linker keeps one copy of each, from any translation unit).
#pragma once

#include <cstdint>

#include "common/soft_pu_params.h"

namespace mkefast::cpu {

// Candidates grouped by class, so that a row visits only its own class for P11 / P10.
struct ClassIndex {
  const std::int32_t* members;  // [B_c] candidate indices sorted by class
  const std::int64_t* begin;    // [C + 1] class c is members[begin[c]:begin[c + 1]]
  std::int64_t max_size;        // the largest class (the per-thread scratch of the gradient passes)
};

// One chunk of the row-chunked scheme (mkefast/backends/_chunked.py): the raw dots <s_j, z^m_k> of `rows`
// whole anchor rows j = first_anchor + i against the `cols` candidates of each of the `modalities`
// modalities, laid out [rows, modalities, cols] (one GEMM against the stacked candidates wrote them).
template <typename T>
struct SoftPUChunk {
  T* dots;
  std::int64_t rows, cols, modalities;
  std::int64_t first_anchor;
  std::int64_t stride;  // elements between modalities in every [M, B_a] per-row array below
};

// Per-row arrays of the chunk, each pointing at [0, first_anchor] of an [M, B_a] array (modality m of row i
// at [m * stride + i]); null where a pass does not use it.
template <typename T>
struct SoftPURows {
  T* lb = nullptr;
  T* ulb = nullptr;
  T* lse = nullptr;
  double* ref = nullptr;  // ρ in logit units, float64
  T* a_ulb = nullptr;
  const T* grad_lb = nullptr;
  const T* grad_ulb = nullptr;
  T* grad_temperature = nullptr;  // the rows' shares of ∂L/∂τ
};

// What the symmetric InfoNCE passes (csrc/cpu/isa/soft_pu_rows.cpp) need beyond the rows' arrays: the rows'
// lse in double (an [M, B] array addressed like the rows' arrays), and `[M, B_c]` arrays with one entry per
// column of the logits, i.e. per anchor of the reverse direction.
template <typename T>
struct SoftPUSymmetric {
  bool bounded = false;  // every |ℓ| ≤ shift, and exp(ℓ − shift) stays normal: one exp per pair
  T shift = T(0);        // R (bounded)
  double* row_lse = nullptr;      // forward: written; backward: read
  T* col_max = nullptr;           // forward, general: running column max (start at -inf)
  double* col_sum = nullptr;      // forward: running Σ exp(ℓ − col_max) (bounded: Σ exp(ℓ − R)); start at 0
  const T* lse_col_hi = nullptr;  // backward: the reverse direction's lse as hi + lo floats
  const T* lse_col_lo = nullptr;
  const T* grad_col = nullptr;    // backward: the upstream gradient of the reverse direction's terms
  const T* col_factor = nullptr;  // backward, bounded: grad_col · exp(R − lse_col)
};

template <typename T>
struct SoftPUKernelsOf {
  // Forward: writes lb, ulb, lse, ref, a_ulb; the chunk is left as logits.
  void (*fwd)(const SoftPUParams&, const ClassIndex&, const SoftPUChunk<T>&, const SoftPURows<T>&, int threads);
  // Backward: reads lse, ref, a_ulb, grad_lb, grad_ulb; overwrites the chunk with ∂L/∂dots = G / τ and, when
  // grad_temperature is set, writes the rows' shares of ∂L/∂τ.
  void (*bwd)(const SoftPUParams&, const ClassIndex&, const SoftPUChunk<T>&, const SoftPURows<T>&, int threads);
  // Both at once for unit upstream gradients (the gradient of Σ (lb + ulb)): the forward's statistics, and
  // ∂/∂dots over the chunk (and the ∂/∂τ shares when grad_temperature is set), one read of each row.
  void (*fwd_grad)(const SoftPUParams&, const ClassIndex&, const SoftPUChunk<T>&, const SoftPURows<T>&,
                   int threads);
  // Symmetric InfoNCE, forward: the rows' lb, ulb, lse, ref, a_ulb as `fwd` (and lse in double), and the
  // running column sums.
  void (*sym_fwd)(const SoftPUParams&, const ClassIndex&, const SoftPUChunk<T>&, const SoftPURows<T>&,
                  const SoftPUSymmetric<T>&, int threads);
  // Symmetric InfoNCE, backward: reads the rows' lse (double) and grad_ulb and the columns' lse and upstream
  // gradients; overwrites the chunk with ∂L/∂dots of both directions (and the ∂L/∂τ shares, when asked).
  void (*sym_grad)(const SoftPUParams&, const ClassIndex&, const SoftPUChunk<T>&, const SoftPURows<T>&,
                   const SoftPUSymmetric<T>&, int threads);
};

struct SoftPUKernels {
  const char* isa;
  SoftPUKernelsOf<float> f32;
  SoftPUKernelsOf<double> f64;
};

// One table per compiled variant; each namespace is one translation unit of csrc/cpu/isa/soft_pu_rows.cpp.
// The baseline (the module's own flags) is `sse2` on x86-64 and `generic` elsewhere.
namespace baseline {
const SoftPUKernels& soft_pu_kernels();
}
#ifdef MKEFAST_ISA_AVX2
namespace avx2 {
const SoftPUKernels& soft_pu_kernels();
}
#endif
#ifdef MKEFAST_ISA_AVX512
namespace avx512 {
const SoftPUKernels& soft_pu_kernels();
}
#endif

}  // namespace mkefast::cpu
