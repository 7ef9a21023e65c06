"""The `triton` backend: fused flash-style Triton kernels (`mkefast.kernels.triton`).

It runs on CUDA tensors, and on CPU tensors under the Triton interpreter (`TRITON_INTERPRET=1`, for tests).
float16, bfloat16 and float32 are supported; float64 is not (`unsupported_reason` says so, and `auto`
falls back): the kernels accumulate in fp32, and fp64 tensor-core tiles would buy nothing here.

The soft-PU forward is one tiled pass per modality (plus, for `rbf_space="phi"`, a pre-pass over the labeled
candidates for the references r_j); the backward recomputes the tiles. Nothing of size B×B (or chunk×B) is
ever allocated; only `[M, B_a]` per-row statistics are saved. See the kernels' module docstring for the math.

Backward variants. By default the backward is deterministic: one row-parallel kernel for the anchors'
gradient and one column-parallel kernel for the candidates', each writing its output once (ℓ is recomputed
by both). Set `ATOMIC_BACKWARD = True` on this module, or `MKEFAST_TRITON_ATOMIC=1` in the environment before
it is imported, for the single-kernel variant: ℓ is recomputed once and the anchors' gradient is accumulated
with fp32 atomics, which is faster but not bitwise reproducible.

Precision. fp32 inputs use exact fp32 products in `tl.dot` (`input_precision="ieee"`, no TF32), bf16 / fp16
inputs go to the tensor cores as they are; accumulations and statistics are fp32. The backward rounds
∂L/∂ℓ to the input dtype before its second product, as any bf16 attention backward does.

Autotuning. On a GPU each kernel is tuned once per (B_a, B, d, dtypes) and the choice is cached by Triton,
so the first call at a new batch size is slow.
"""

from __future__ import annotations

import functools
import math
import os
from types import ModuleType

import torch
from torch import Tensor

from mkefast._build import triton_importable, triton_interpreted
from mkefast.ops._common import SoftPUOptions, SoftPUStats, SoftPUTargets, logit_references

__all__ = [
    "ATOMIC_BACKWARD",
    "cosine_rec_bwd",
    "cosine_rec_fwd",
    "soft_pu_bwd",
    "soft_pu_fwd",
    "unsupported_reason",
]

ATOMIC_BACKWARD: bool = os.environ.get("MKEFAST_TRITON_ATOMIC", "0").strip() not in ("", "0")

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
_OPS = ("soft_pu", "cosine_rec")
# Widest d-block of the soft-PU tiles; wider features are looped over (and the gradients tiled) in such blocks.
_MAX_PAIR_BLOCK_D = 256
_LOG2E = 1.0 / math.log(2.0)
_LN2 = math.log(2.0)


def unsupported_reason(op: str, device: torch.device, dtype: torch.dtype) -> str | None:
    """None when the Triton kernels can run `op` on `device` tensors of `dtype`, else why not."""
    if op not in _OPS:
        return f"unknown op {op!r} (expected one of {_OPS})"
    ok, why = triton_importable()
    if not ok:
        return why
    if dtype not in _DTYPES:
        return f"{dtype} is not supported by the triton backend (float16, bfloat16, float32 only)"
    if device.type == "cuda":
        return None
    if device.type == "cpu":
        return None if triton_interpreted() else "CPU tensors need the Triton interpreter (TRITON_INTERPRET=1)"
    return f"{device.type} tensors are not supported by the triton backend"


@functools.cache
def _kernels() -> tuple[ModuleType, ModuleType]:
    """The kernel modules, imported on first use (Triton's import is slow, and fixes the interpreter mode)."""
    from mkefast.kernels.triton import cosine_rec, soft_pu

    return soft_pu, cosine_rec


def _check_device(*tensors: Tensor) -> None:
    kernels = _kernels()[0]
    for t in tensors:
        if t.device.type == "cpu" and not kernels.INTERPRET:
            raise RuntimeError("mkefast triton backend: CPU tensors need TRITON_INTERPRET=1 set before the kernels "
                               "are imported")


def _pair_block_d(d: int) -> int:
    # tl.dot needs K >= 16.
    return min(max(16, 1 << (d - 1).bit_length()), _MAX_PAIR_BLOCK_D)


def _dot_precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _rbf_coef(options: SoftPUOptions) -> float:
    """The factor of (x' - r')² in the exponent of exp2 (see the kernels' module docstring)."""
    if not options.rbf_enabled:
        return 0.0
    scale = _LOG2E if options.rbf_space == "phi" else _LN2
    return -options.inv_two_sigma_sq * scale


def _kernel_ref(ref: Tensor, options: SoftPUOptions) -> Tensor:
    """r_j in the kernels' units: base-2 logits in "logit" space, φ itself in "phi" space."""
    return ref if options.rbf_space == "phi" else ref * _LOG2E


def _common_meta(fused: Tensor, options: SoftPUOptions) -> dict[str, object]:
    d = fused.shape[1]
    block_d = _pair_block_d(d)
    return {
        "RBF": options.rbf_enabled,
        "PHI": options.rbf_space == "phi",
        "SINGLE_D": d <= block_d,
        "BLOCK_D": block_d,
        "DOT_PRECISION": _dot_precision(fused.dtype),
        "INTERPRET": _kernels()[0].INTERPRET,
    }


def _phi_references(fused: Tensor, unimodal: Tensor, targets: SoftPUTargets, options: SoftPUOptions) -> Tensor:
    """r_j of `rbf_space="phi"`, `[M, B_a]` float32, by the pre-pass kernel over the labeled candidates."""
    kernels = _kernels()[0]
    m, b, d = unimodal.shape
    b_a = fused.shape[0]
    labeled = targets.labeled
    # Labeled candidates first, in index order; their count stays on the device (no synchronization).
    order = torch.argsort((~labeled).to(torch.uint8), stable=True).to(torch.int32)
    n_lab = labeled.sum(dtype=torch.int32).reshape(1)
    ref = torch.empty(m, b_a, device=fused.device, dtype=torch.float32)
    block_d = _pair_block_d(d)
    kernels._soft_pu_phi_ref_kernel[lambda meta: (_cdiv(b_a, meta["BLOCK_M"]), m)](
        fused, unimodal, targets.cls, labeled.view(torch.uint8), targets.n11, order, n_lab, ref,
        b_a, b, d, targets.row_offset, _LOG2E / options.temperature,
        BLOCK_D=block_d, DOT_PRECISION=_dot_precision(fused.dtype), INTERPRET=kernels.INTERPRET,
    )
    return ref


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def soft_pu_fwd(
    fused: Tensor,  # [B_a, d]
    unimodal: Tensor,  # [M, B, d]
    targets: SoftPUTargets,
    options: SoftPUOptions,
) -> SoftPUStats:
    """Forward of the soft-PU loss in one tiled pass per modality; `[M, B_a]` float32 statistics.

    ```
    ℓ = s zᵀ / τ;  lse_j = logsumexp_k ℓ_jk
    lb_j  = lse_j - Σ_{P11} ℓ_jk / |P11|
    ulb_j = (Σ_{P10} w_jk) lse_j / |P10| - Σ_{P10} w_jk ℓ_jk / |P10|
    ```
    """
    _check_device(fused, unimodal)
    soft_pu = _kernels()[0]
    m, b, d = unimodal.shape
    b_a = fused.shape[0]
    if options.rbf_space == "phi":
        ref = _phi_references(fused, unimodal, targets, options)
    else:
        ref = logit_references(fused, unimodal, targets, options.temperature).float()
    lb, ulb, lse, a_ulb = (torch.empty(m, b_a, device=fused.device, dtype=torch.float32) for _ in range(4))
    soft_pu._soft_pu_fwd_kernel[lambda meta: (_cdiv(b_a, meta["BLOCK_M"]), m)](
        fused, unimodal, targets.cls, targets.labeled.view(torch.uint8), targets.n11, targets.n10,
        _kernel_ref(ref, options).contiguous(), lb, ulb, lse, a_ulb,
        b_a, b, d, targets.row_offset, _LOG2E / options.temperature, _rbf_coef(options),
        **_common_meta(fused, options),
    )
    return SoftPUStats(lb, ulb, lse, ref, a_ulb)


def soft_pu_bwd(
    fused: Tensor,  # [B_a, d]
    unimodal: Tensor,  # [M, B, d]
    targets: SoftPUTargets,
    options: SoftPUOptions,
    stats: SoftPUStats,  # [M, B_a] each
    grad_lb: Tensor,  # [M, B_a] float32
    grad_ulb: Tensor,  # [M, B_a] float32
    needs_fused: bool,
    needs_unimodal: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of Σ grad_lb·lb + grad_ulb·ulb, recomputing the tiles (w and r held constant).

    ```
    G_jk = g_lb_j (A11_j p_jk - [P11]/|P11|) + g_ulb_j (a_ulb_j p_jk - w_jk [P10]/|P10|)
    grad_fused_j = Σ_i Σ_k G^i_jk z^i_k / τ;   grad_unimodal^i_k = Σ_j G^i_jk s_j / τ
    ```

    Deterministic by default; `ATOMIC_BACKWARD` selects the single-kernel atomic variant (module docstring).
    """
    if not (needs_fused or needs_unimodal):
        return None, None
    _check_device(fused, unimodal)
    soft_pu = _kernels()[0]
    m, b, d = unimodal.shape
    b_a = fused.shape[0]
    rows = slice(targets.row_offset, targets.row_offset + b_a)
    n11, n10 = targets.n11[rows], targets.n10[rows]
    grad_lb, grad_ulb = grad_lb.float(), grad_ulb.float()
    # Per-row constants of G = CP p - C11 [P11] - C10 w [P10] (module docstring of the kernels).
    lse_u = (stats.lse * _LOG2E).contiguous()
    cp = (grad_lb * (n11 > 0) + grad_ulb * stats.a_ulb).contiguous()
    c11 = torch.where(n11 > 0, grad_lb / n11.clamp(min=1), 0.0).contiguous()
    c10 = torch.where(n10 > 0, grad_ulb / n10.clamp(min=1), 0.0).contiguous()
    ref = _kernel_ref(stats.ref.float(), options).contiguous()
    meta = _common_meta(fused, options)
    n_dblocks = _cdiv(d, int(meta["BLOCK_D"]))  # type: ignore[call-overload]
    cls, lab = targets.cls, targets.labeled.view(torch.uint8)
    scalars = (b_a, b, d, targets.row_offset, _LOG2E / options.temperature, _rbf_coef(options),
               1.0 / options.temperature)
    stat_args = (lse_u, cp, c11, c10, ref)

    def col_grid(meta: dict[str, int]) -> tuple[int, int, int]:
        return (_cdiv(b, meta["BLOCK_N"]), m, n_dblocks)

    grad_fused = grad_unimodal = None
    if needs_fused and needs_unimodal and ATOMIC_BACKWARD:
        grad_acc = torch.zeros(b_a, d, device=fused.device, dtype=torch.float32)
        grad_unimodal = torch.empty_like(unimodal)
        soft_pu._soft_pu_bwd_atomic_kernel[col_grid](
            fused, unimodal, cls, lab, *stat_args, grad_acc, grad_unimodal, *scalars, **meta
        )
        return grad_acc.to(fused.dtype), grad_unimodal
    if needs_fused:
        grad_fused = torch.empty_like(fused)
        soft_pu._soft_pu_bwd_rows_kernel[lambda meta: (_cdiv(b_a, meta["BLOCK_M"]), n_dblocks)](
            fused, unimodal, cls, lab, *stat_args, grad_fused, m, *scalars, **meta
        )
    if needs_unimodal:
        grad_unimodal = torch.empty_like(unimodal)
        soft_pu._soft_pu_bwd_cols_kernel[col_grid](
            fused, unimodal, cls, lab, *stat_args, grad_unimodal, *scalars, **meta
        )
    return grad_fused, grad_unimodal


def cosine_rec_fwd(
    reconstruction: Tensor,  # [N, d]
    target: Tensor,  # [N, d]
) -> Tensor:
    """Per-row `1 - cos²`, `[N]` float32, in one fused kernel.

    ```
    rows = 1 - (<a, b> / max(|a| |b|, 1e-8))²
    ```
    """
    _check_device(reconstruction, target)
    cosine = _kernels()[1]
    n, d = reconstruction.shape
    loss = torch.empty(n, device=reconstruction.device, dtype=torch.float32)
    cosine._cosine_rec_fwd_kernel[lambda meta: (_cdiv(n, meta["BLOCK_R"]),)](
        reconstruction, target, loss, n, d, BLOCK_D=_cosine_block_d(d, cosine.MAX_BLOCK_D)
    )
    return loss


def _cosine_block_d(d: int, cap: int) -> int:
    return min(1 << (d - 1).bit_length(), cap)


def cosine_rec_bwd(
    reconstruction: Tensor,  # [N, d]
    target: Tensor,  # [N, d]
    grad_loss: Tensor,  # [N]
    needs_reconstruction: bool,
    needs_target: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Both gradients of Σ grad_loss·rows in one fused kernel (each input read once when d <= 4096)."""
    if not (needs_reconstruction or needs_target):
        return None, None
    _check_device(reconstruction, target)
    cosine = _kernels()[1]
    n, d = reconstruction.shape
    block_d = _cosine_block_d(d, cosine.MAX_BLOCK_D)
    grad_a = torch.empty_like(reconstruction) if needs_reconstruction else None
    grad_b = torch.empty_like(target) if needs_target else None
    # An output that is not needed still needs a valid pointer argument; the kernel never writes it.
    placeholder = grad_a if grad_a is not None else grad_b
    cosine._cosine_rec_bwd_kernel[lambda meta: (_cdiv(n, meta["BLOCK_R"]),)](
        reconstruction, target, grad_loss.float().contiguous(),
        grad_a if grad_a is not None else placeholder, grad_b if grad_b is not None else placeholder,
        n, d, NEED_A=needs_reconstruction, NEED_B=needs_target, SINGLE_D=d <= block_d, BLOCK_D=block_d,
    )
    return grad_a, grad_b
