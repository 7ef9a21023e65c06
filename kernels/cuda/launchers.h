// Host launchers of the CUDA kernels in this folder. Plain C++ declarations (no pybind11, no device code)
// so that csrc/bindings/cuda_module.cpp, compiled by the host compiler, can bind them. Every launcher takes
// raw device pointers, sizes, the element type and the stream, enqueues its kernel on that stream and returns
// the cudaError_t of the launch as an int (0 = success). Tensors are contiguous and row-major unless a
// leading dimension is passed; the Python side (mkefast.backends.cuda) allocates every buffer.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "common/soft_pu_params.h"

namespace mkefast::cuda {

// Element type of the floating-point buffers of a call (values as in the Python bindings' dtype suffixes).
enum class DType : int { f32 = 0, f64 = 1, f16 = 2, bf16 = 3 };

// ---------------------------------------------------------------- soft-PU loss (kernels/cuda/soft_pu.cu)
// Epilogues of the chunked soft-PU op: a chunk holds the raw dot products dots[i, k] = <s_j, z_k> of the
// anchors j = first_anchor + i, i < rows, against all `cols` = B_c candidates of one modality, in the
// accumulation type `dtype` (f32, or f64 for float64 inputs). `params` carries the targets (device pointers
// to the SoftPUTargets arrays) and the options; every [C] buffer is indexed by i (pass the pointer to the
// chunk's first row).

// Forward: lse, the RBF reference ρ_j (logit units, float64; from the row itself: over P11, or the partner
// pair), lb, ulb and a_ulb of every row of the chunk. The chunk is only read.
int launch_soft_pu_fwd(const SoftPUParams& params,
                       const void* dots,  // [C, B_c] (row stride ld)
                       void* lb,          // [C]
                       void* ulb,         // [C]
                       void* lse,         // [C]
                       double* ref,       // [C]
                       void* a_ulb,       // [C]
                       std::int64_t rows, std::int64_t cols, std::int64_t ld, std::int64_t first_anchor, DType dtype,
                       cudaStream_t stream);

// Backward: overwrites the chunk in place with ∂L/∂dots[i, k] = G_jk / τ (G_jk = ∂L/∂ℓ_jk) given the forward
// statistics and the upstream gradients of lb and ulb, so that grad_s = (G/τ) @ z and grad_z = (G/τ)ᵀ @ s;
// grad_temperature (null: not needed) receives each row's −(1/τ) Σ_k G_jk ℓ_jk.
int launch_soft_pu_bwd(const SoftPUParams& params,
                       void* dots,              // [C, B_c] (row stride ld): dot products in, G/τ out
                       const void* lse,         // [C]
                       const double* ref,       // [C]
                       const void* a_ulb,       // [C]
                       const void* grad_lb,     // [C]
                       const void* grad_ulb,    // [C]
                       void* grad_temperature,  // [C] or null
                       std::int64_t rows, std::int64_t cols, std::int64_t ld, std::int64_t first_anchor, DType dtype,
                       cudaStream_t stream);

// ---------------------------------------------------------------- cosine reconstruction (kernels/cuda/cosine_rec.cu)
// a, b and the gradients in `dtype` (f32, f64, f16 or bf16); loss and grad_loss in the accumulation type
// (f64 for f64 inputs, else f32).

int launch_cosine_rec_fwd(const void* a,  // [N, d]
                          const void* b,  // [N, d]
                          void* loss,     // [N]
                          std::int64_t n, std::int64_t d, DType dtype, cudaStream_t stream);

// grad_a / grad_b may be null (that gradient is not written).
int launch_cosine_rec_bwd(const void* a,          // [N, d]
                          const void* b,          // [N, d]
                          const void* grad_loss,  // [N]
                          void* grad_a,           // [N, d] or null
                          void* grad_b,           // [N, d] or null
                          std::int64_t n, std::int64_t d, DType dtype, cudaStream_t stream);

}  // namespace mkefast::cuda
