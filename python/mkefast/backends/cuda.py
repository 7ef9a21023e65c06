"""The `cuda` backend: compiled CUDA kernels (mkefast._C_cuda) for CUDA tensors.

Soft-PU runs the row-chunked scheme of `mkefast.backends._chunked`, shared with the `cpu` backend: per chunk
of anchors and per modality, torch (cuBLAS) computes the raw dot products `[C, B_c]`, and one fused CUDA
epilogue (`soft_pu_fwd_kernel` / `soft_pu_bwd_kernel` in kernels/cuda/soft_pu.cu) does the masks, the
softmax statistics, the RBF weights and the loss terms of those rows, or overwrites them with the gradient
of the logits for the backward GEMMs (and writes the rows' shares of ∂L/∂τ). It is the GPU path for large
feature sizes, where the GEMMs dominate, and a GPU implementation independent of the Triton one.

Precision: every input dtype (float16, bfloat16, float32, float64) is computed in its accumulation dtype,
float32 (float64 for float64 inputs), GEMMs included: the driver upcasts the inputs once, and the GEMMs run
in full float32 (TF32 only if the user enabled it in torch). That keeps the logits exact to float32 rounding
(a bfloat16 GEMM with bfloat16 output would round ℓ = <s, z>/τ to 3 significant digits) at the cost of
float32 GEMM speed. The RBF references are kept in float64 (docs/math.md, "Numerics").

The cosine reconstruction loss is one fused kernel (kernels/cuda/cosine_rec.cu): a warp per row, 16-byte
loads, rows scaled by their largest magnitude (scale-free), float32 accumulation (float64 for float64),
both gradients from one launch, in the inputs' dtype.

Python allocates every buffer; the kernels get raw pointers, sizes, the device index and the current
stream, by keyword (the targets and options of a call as one `mkefast._C_cuda.SoftPUParams`), so they are
ordered with the surrounding torch work.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from mkefast._build import backend_unavailable_reason, cuda_module
from mkefast.backends._chunked import (
    chunk_rows_for,
    kernel_targets,
    pointers,
    soft_pu_bwd_chunked,
    soft_pu_fwd_chunked,
    soft_pu_params,
)
from mkefast.ops._common import SoftPUGrads, SoftPUOptions, SoftPUStats, SoftPUTargets, acc_dtype

__all__ = ["cosine_rec_bwd", "cosine_rec_fwd", "soft_pu_bwd", "soft_pu_fwd", "unsupported_reason"]

_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16"}

# Size of the reused [C, B_c] chunk of logits, in MiB: large enough that a chunk's GEMM fills the GPU
# (2048 rows at B_c = 65536 in float32), small next to the O(B·d) inputs of a large batch.
CHUNK_BUDGET_MB = 512.0


def unsupported_reason(op: str, device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cuda":
        return f"the cuda backend runs on CUDA tensors, got {device.type} tensors"
    if dtype not in _SUFFIX:
        return f"the cuda backend supports float16, bfloat16, float32 and float64, got {dtype}"
    return None


def _lib() -> ModuleType:
    lib = cuda_module()
    if lib is None:
        raise RuntimeError(f"mkefast: the cuda backend cannot run: {backend_unavailable_reason('cuda')}")
    return lib


def _where(t: Tensor) -> dict[str, int]:
    """The device index and current stream handle that every launch takes."""
    return {"device": t.device.index, "stream": torch.cuda.current_stream(t.device).cuda_stream}


def _chunk_rows(anchors: Tensor, candidates: Tensor) -> int:
    return chunk_rows_for(anchors.shape[0], candidates.shape[1], acc_dtype(anchors.dtype), CHUNK_BUDGET_MB)


def soft_pu_fwd(anchors: Tensor, candidates: Tensor, targets: SoftPUTargets, options: SoftPUOptions) -> SoftPUStats:
    """One direction's forward (the backend contract of `mkefast.backends`): `soft_pu_fwd_kernel` on every
    `[C, B_c]` chunk of dot products.

    Args:
        anchors: `[B_a, d]`.
        candidates: `[M, B_c, d]`.

    Returns:
        `SoftPUStats`, each `[M, B_a]` (ref float64, the others float32, or float64 for float64 inputs).
    """
    lib = _lib()
    targets = kernel_targets(targets)
    params = soft_pu_params(lib, targets, options)

    def epilogue(dots: Tensor, first_anchor: int, out: SoftPUStats) -> None:
        getattr(lib, f"soft_pu_fwd_{_SUFFIX[dots.dtype]}")(
            params=params, dots=dots.data_ptr(), rows=dots.shape[0], cols=dots.shape[1], ld=dots.stride(0),
            first_anchor=first_anchor, **pointers(out._asdict()), **_where(dots),
        )

    return soft_pu_fwd_chunked(anchors, candidates, epilogue, _chunk_rows(anchors, candidates))


def soft_pu_bwd(
    anchors: Tensor,
    candidates: Tensor,
    targets: SoftPUTargets,
    options: SoftPUOptions,
    stats: SoftPUStats,
    grad_lb: Tensor,
    grad_ulb: Tensor,
    needs_anchors: bool,
    needs_candidates: bool,
    needs_temperature: bool,
) -> SoftPUGrads:
    """Gradients of Σ grad_lb·lb + grad_ulb·ulb in the accumulation dtype: anchors `[B_a, d]`, candidates
    `[M, B_c, d]`, temperature `[M, B_a]` (summing to ∂L/∂τ); `soft_pu_bwd_kernel` turns each recomputed
    chunk of dot products into ∂L/∂dots = G/τ."""
    lib = _lib()
    targets = kernel_targets(targets)
    params = soft_pu_params(lib, targets, options)

    def epilogue(dots: Tensor, first_anchor: int, rows_stats: SoftPUStats, g_lb: Tensor, g_ulb: Tensor,
                 g_tau: Tensor | None) -> None:
        getattr(lib, f"soft_pu_bwd_{_SUFFIX[dots.dtype]}")(
            params=params, dots=dots.data_ptr(), rows=dots.shape[0], cols=dots.shape[1], ld=dots.stride(0),
            first_anchor=first_anchor,
            **pointers({"lse": rows_stats.lse, "ref": rows_stats.ref, "a_ulb": rows_stats.a_ulb, "grad_lb": g_lb,
                        "grad_ulb": g_ulb, "grad_temperature": g_tau}),
            **_where(dots),
        )

    return soft_pu_bwd_chunked(anchors, candidates, stats, grad_lb, grad_ulb, needs_anchors, needs_candidates,
                               needs_temperature, epilogue, _chunk_rows(anchors, candidates))


def _rows(t: Tensor) -> Tensor:
    """`[..., d]` as contiguous `[N, d]` rows (a view where the input is contiguous already)."""
    return t.reshape(-1, t.shape[-1]).contiguous()


def cosine_rec_fwd(reconstruction: Tensor, target: Tensor) -> Tensor:
    """Per-row `1 - cos²` of `[..., d]` inputs; `[...]` in float32 (float64 for float64 inputs)."""
    a, b = _rows(reconstruction), _rows(target)
    n, d = a.shape
    loss = torch.empty(n, dtype=acc_dtype(a.dtype), device=a.device)
    getattr(_lib(), f"cosine_rec_fwd_{_SUFFIX[a.dtype]}")(a=a.data_ptr(), b=b.data_ptr(), loss=loss.data_ptr(), n=n,
                                                          d=d, **_where(a))
    return loss.view(reconstruction.shape[:-1])


def cosine_rec_bwd(
    reconstruction: Tensor, target: Tensor, grad_rows: Tensor, needs_reconstruction: bool, needs_target: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Both gradients from one fused launch, `[..., d]` in the inputs' dtype; grad_rows `[...]`."""
    a, b = _rows(reconstruction), _rows(target)
    n, d = a.shape
    g = grad_rows.reshape(n).to(acc_dtype(a.dtype)).contiguous()
    grad_a = torch.empty_like(a) if needs_reconstruction else None
    grad_b = torch.empty_like(b) if needs_target else None
    getattr(_lib(), f"cosine_rec_bwd_{_SUFFIX[a.dtype]}")(
        a=a.data_ptr(), b=b.data_ptr(), grad_loss=g.data_ptr(), **pointers({"grad_a": grad_a, "grad_b": grad_b}),
        n=n, d=d, **_where(a),
    )
    shape = reconstruction.shape
    return (None if grad_a is None else grad_a.view(shape)), (None if grad_b is None else grad_b.view(shape))
