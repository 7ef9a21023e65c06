"""The `cuda` backend: compiled CUDA kernels (mkefast._C_cuda) for CUDA tensors.

Soft-PU runs the row-chunked scheme of `mkefast.backends._chunked`, shared with the `cpu` backend: per chunk
of anchors and per modality, torch (cuBLAS) computes the raw dot products `[C, B]`, and one fused CUDA
epilogue (`soft_pu_fwd_kernel` / `soft_pu_bwd_kernel` in kernels/cuda/soft_pu.cu) does the masks, the
softmax statistics, the RBF weights and the loss terms of those rows, or overwrites them with the gradient
of the logits for the two backward GEMMs. It is the GPU path for large feature sizes, where the GEMMs
dominate, and a GPU implementation independent of the Triton one.

Precision: every input dtype (float16, bfloat16, float32, float64) is computed in its accumulation dtype,
float32 (float64 for float64 inputs), GEMMs included: the driver upcasts the inputs once, and the GEMMs run
in full float32 (TF32 only if the user enabled it in torch). That keeps the logits exact to float32 rounding
(a bfloat16 GEMM with bfloat16 output would round ℓ = <s, z>/τ to 3 significant digits) at the cost of
float32 GEMM speed.

The cosine reconstruction loss is one fused kernel (kernels/cuda/cosine_rec.cu): a warp per row, 16-byte
loads, float32 accumulation (float64 for float64), both gradients from one launch, in the inputs' dtype.

Python allocates every buffer; the kernels get raw pointers, sizes, the device index and the current
stream, so they are ordered with the surrounding torch work.
"""

from __future__ import annotations

from types import ModuleType

import torch
from torch import Tensor

from mkefast._build import backend_unavailable_reason, cuda_module
from mkefast.backends._chunked import chunk_rows_for, kernel_targets, soft_pu_bwd_chunked, soft_pu_fwd_chunked
from mkefast.ops._common import SoftPUOptions, SoftPUStats, SoftPUTargets

__all__ = ["cosine_rec_bwd", "cosine_rec_fwd", "soft_pu_bwd", "soft_pu_fwd", "unsupported_reason"]

_SUFFIX = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16"}

# Size of the reused [C, B] chunk of logits, in MiB: large enough that a chunk's GEMM fills the GPU
# (2048 rows at B = 65536 in float32), small next to the O(B·d) inputs of a large batch.
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


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _where(t: Tensor) -> tuple[int, int]:
    """The device index and current stream handle that every launch takes."""
    return t.device.index, torch.cuda.current_stream(t.device).cuda_stream


def _fwd_epilogue(
    dots: Tensor, first_row: int, targets: SoftPUTargets, options: SoftPUOptions, out: SoftPUStats
) -> None:
    """`soft_pu_fwd_kernel` on one `[C, B]` chunk of dot products; writes the five `[C]` views of `out`."""
    device, stream = _where(dots)
    getattr(_lib(), f"soft_pu_fwd_{_SUFFIX[dots.dtype]}")(
        dots.data_ptr(), targets.cls.data_ptr(), targets.labeled.data_ptr(), targets.n11.data_ptr(),
        targets.n10.data_ptr(), out.lb.data_ptr(), out.ulb.data_ptr(), out.lse.data_ptr(), out.ref.data_ptr(),
        out.a_ulb.data_ptr(), dots.shape[0], dots.shape[1], dots.stride(0), first_row, 1.0 / options.temperature,
        options.inv_two_sigma_sq, options.rbf_space == "phi", device, stream,
    )


def _bwd_epilogue(
    dots: Tensor, first_row: int, targets: SoftPUTargets, options: SoftPUOptions, stats: SoftPUStats,
    grad_lb: Tensor, grad_ulb: Tensor,
) -> None:
    """`soft_pu_bwd_kernel` on one `[C, B]` chunk: overwrites the dot products with ∂L/∂dots = G/τ."""
    device, stream = _where(dots)
    getattr(_lib(), f"soft_pu_bwd_{_SUFFIX[dots.dtype]}")(
        dots.data_ptr(), targets.cls.data_ptr(), targets.labeled.data_ptr(), targets.n11.data_ptr(),
        targets.n10.data_ptr(), stats.lse.data_ptr(), stats.ref.data_ptr(), stats.a_ulb.data_ptr(),
        grad_lb.data_ptr(), grad_ulb.data_ptr(), dots.shape[0], dots.shape[1], dots.stride(0), first_row,
        1.0 / options.temperature, options.inv_two_sigma_sq, options.rbf_space == "phi", device, stream,
    )


def _chunk_rows(fused: Tensor, unimodal: Tensor) -> int:
    return chunk_rows_for(fused.shape[0], unimodal.shape[1], _acc(fused.dtype), CHUNK_BUDGET_MB)


def soft_pu_fwd(fused: Tensor, unimodal: Tensor, targets: SoftPUTargets, options: SoftPUOptions) -> SoftPUStats:
    """Forward of the soft-PU loss. fused `[B_a, d]`, unimodal `[M, B, d]`; returns `[M, B_a]` statistics."""
    return soft_pu_fwd_chunked(fused, unimodal, kernel_targets(targets), options, _fwd_epilogue,
                               _chunk_rows(fused, unimodal))


def soft_pu_bwd(
    fused: Tensor,
    unimodal: Tensor,
    targets: SoftPUTargets,
    options: SoftPUOptions,
    stats: SoftPUStats,
    grad_lb: Tensor,
    grad_ulb: Tensor,
    needs_fused: bool,
    needs_unimodal: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of Σ grad_lb·lb + grad_ulb·ulb: `[B_a, d]` and `[M, B, d]` in the accumulation dtype."""
    acc = _acc(fused.dtype)
    stats = SoftPUStats(*(t.to(acc).contiguous() for t in stats))
    return soft_pu_bwd_chunked(fused, unimodal, kernel_targets(targets), options, stats, grad_lb, grad_ulb,
                               needs_fused, needs_unimodal, _bwd_epilogue, _chunk_rows(fused, unimodal))


def cosine_rec_fwd(reconstruction: Tensor, target: Tensor) -> Tensor:
    """Per-row `1 - cos²` of `[N, d]` inputs; `[N]` in float32 (float64 for float64 inputs)."""
    a, b = reconstruction.contiguous(), target.contiguous()
    n, d = a.shape
    loss = torch.empty(n, dtype=_acc(a.dtype), device=a.device)
    getattr(_lib(), f"cosine_rec_fwd_{_SUFFIX[a.dtype]}")(a.data_ptr(), b.data_ptr(), loss.data_ptr(), n, d,
                                                          *_where(a))
    return loss


def cosine_rec_bwd(
    reconstruction: Tensor, target: Tensor, grad_loss: Tensor, needs_reconstruction: bool, needs_target: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Both gradients from one fused launch, `[N, d]` in the inputs' dtype; grad_loss `[N]`."""
    a, b = reconstruction.contiguous(), target.contiguous()
    n, d = a.shape
    g = grad_loss.to(_acc(a.dtype)).contiguous()
    grad_a = torch.empty_like(a) if needs_reconstruction else None
    grad_b = torch.empty_like(b) if needs_target else None
    getattr(_lib(), f"cosine_rec_bwd_{_SUFFIX[a.dtype]}")(
        a.data_ptr(), b.data_ptr(), g.data_ptr(),
        grad_a.data_ptr() if grad_a is not None else 0, grad_b.data_ptr() if grad_b is not None else 0,
        n, d, *_where(a),
    )
    return grad_a, grad_b
