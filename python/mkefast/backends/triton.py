"""The `triton` backend: fused flash-style Triton kernels (`mkefast.kernels.triton`).

It runs on CUDA tensors, and on CPU tensors under the Triton interpreter (`TRITON_INTERPRET=1`, for tests).
float16, bfloat16 and float32 are supported; float64 is not (`unsupported_reason` says so, and `auto`
falls back): the kernels accumulate in fp32, and fp64 tensor-core tiles would buy nothing here.

One call computes one direction of the op of docs/math.md ("The general op"): anchors `[B_a, d]` against
candidates `[M, B_c, d]`, any B_a and B_c. The forward is one tiled pass per modality (plus, for
`rbf_space="phi"`, a pre-pass over the labeled candidates for the references ρ_j); the backward recomputes
the tiles. Nothing of size B_a×B_c (or chunk×B_c) is ever allocated; only `[M, B_a]` per-row statistics are
saved. The references ρ are float64 in logit units, as every backend stores them; the kernels read them once
rounded to float32 base-2 units, the same in both passes (docs/math.md, "Numerics"). See the kernels' module
docstring for the math and the numerical tricks.

Backward variants. By default the backward is deterministic: one row-parallel kernel for the anchors'
gradient and the per-anchor partial sums of ∂L/∂τ, one column-parallel kernel for the candidates', each
writing its output once (ℓ is recomputed by both). Set `ATOMIC_BACKWARD = True` on this module, or
`MKEFAST_TRITON_ATOMIC=1` in the environment before it is imported, for the single-kernel variant (used when
both input gradients are asked for): ℓ is recomputed once and the anchors' gradient and the τ partial sums
are accumulated with fp32 atomics, which is faster but not bitwise reproducible.

Precision. fp32 inputs use exact fp32 products in `tl.dot` (`input_precision="ieee"`, no TF32), bf16 / fp16
inputs go to the tensor cores as they are; accumulations and statistics are fp32. The backward rounds
∂L/∂ℓ to the input dtype before its second product, as any bf16 attention backward does.

Autotuning. On a GPU each kernel is tuned once per (B_a, B_c, d, dtypes) and the choice is cached by Triton,
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
from mkefast.ops._common import SoftPUGrads, SoftPUOptions, SoftPUStats, SoftPUTargets, logit_references

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
# The backward and the "phi" pre-pass stream their ℓ products over d in narrower blocks, even where one block
# covers d: holding both [tile, d] operands across the loop (besides the backward's gradient accumulator)
# spills registers (`mkefast kernels`).
_MAX_PAIR_BLOCK_D = 256
_MAX_STREAMED_BLOCK_D = 64
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


def _pair_block_d(d: int, streamed: bool = False) -> int:
    # tl.dot needs K >= 16.
    return min(max(16, 1 << (d - 1).bit_length()), _MAX_STREAMED_BLOCK_D if streamed else _MAX_PAIR_BLOCK_D)


def _dot_precision(dtype: torch.dtype) -> str:
    return "ieee" if dtype == torch.float32 else "tf32"


def _rbf_scalars(options: SoftPUOptions) -> tuple[float, float]:
    """(ln 2 / σ, log2 σ): the "logit" and the "phi" weights' scalars in the kernels' base-2 units (0, 0 when
    σ = inf, where the kernels skip the weights)."""
    if not options.rbf_enabled:
        return 0.0, 0.0
    return _LN2 * options.inv_sigma, options.log_sigma * _LOG2E


def _kernel_ref(ref: Tensor) -> Tensor:
    """ρ_u = ρ · log2(e) in float32 from the float64 ρ `[M, B_a]`: forward and backward both read the weights'
    reference through this one rounding, so they use the very same value. The "phi" pre-pass returns float32
    ρ_u, which survives the round trip ρ_u → float64 ρ = ρ_u · ln 2 → ρ_u exactly (a relative change of a few
    float64 ulps is far below half a float32 ulp)."""
    return (ref * _LOG2E).float().contiguous()


def _common_meta(anchors: Tensor, options: SoftPUOptions, backward: bool = False) -> dict[str, object]:
    d = anchors.shape[1]
    block_d = _pair_block_d(d, streamed=backward)
    meta: dict[str, object] = {
        "RBF": options.rbf_enabled,
        "PHI": options.phi,
        "EXCLUDE_DIAGONAL": options.exclude_diagonal,
        "BLOCK_D": block_d,
        "DOT_PRECISION": _dot_precision(anchors.dtype),
        "INTERPRET": _kernels()[0].INTERPRET,
    }
    if not backward:  # the backward always streams its ℓ products over d (_MAX_STREAMED_BLOCK_D)
        meta["SINGLE_D"] = d <= block_d
    return meta


def _phi_references(anchors: Tensor, candidates: Tensor, targets: SoftPUTargets, options: SoftPUOptions) -> Tensor:
    """ρ of `rbf_space="phi"`, `[M, B_a]` float64 (logit units), by the pre-pass kernel over the labeled
    candidates (log mean exp with a running max; the partner's logit where P11 is empty)."""
    kernels = _kernels()[0]
    m, b_c, d = candidates.shape
    b_a = anchors.shape[0]
    labeled = targets.labeled
    # Labeled candidates first, in index order; their count stays on the device (no synchronization).
    order = torch.argsort((~labeled).to(torch.uint8), stable=True).to(torch.int32)
    n_lab = labeled.sum(dtype=torch.int32).reshape(1)
    ref_u = torch.empty(m, b_a, device=anchors.device, dtype=torch.float32)
    kernels._soft_pu_phi_ref_kernel[lambda meta: (_cdiv(b_a, meta["BLOCK_M"]), m)](
        anchors, candidates, targets.cls, targets.anchor_cls, targets.anchor_labeled.view(torch.uint8),
        targets.n11, order, n_lab, ref_u,
        b_a, b_c, d, targets.diag_offset, _LOG2E / options.temperature,
        EXCLUDE_DIAGONAL=options.exclude_diagonal, BLOCK_D=_pair_block_d(d, streamed=True),
        DOT_PRECISION=_dot_precision(anchors.dtype), INTERPRET=kernels.INTERPRET,
    )
    return ref_u.double() * _LN2


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _label_args(targets: SoftPUTargets) -> tuple[Tensor, ...]:
    """The per-candidate then per-anchor label arrays and |P11|, as every pair kernel takes them."""
    return (targets.cls, targets.labeled.view(torch.uint8), targets.anchor_cls,
            targets.anchor_labeled.view(torch.uint8), targets.n11)


def soft_pu_fwd(
    anchors: Tensor,  # [B_a, d]
    candidates: Tensor,  # [M, B_c, d]
    targets: SoftPUTargets,
    options: SoftPUOptions,
) -> SoftPUStats:
    """One direction's forward in one tiled pass per modality (docs/math.md, "Terms").

    ```
    ℓ = s zᵀ / τ;  lse_j = logsumexp over the denominator D(j)
    lb_j  = lse_j - Σ_{P11} ℓ_jk / |P11|
    ulb_j = (Σ_{P10} w_jk) lse_j / |P10| - Σ_{P10} w_jk ℓ_jk / |P10|
    ```

    Returns:
        `SoftPUStats`, each `[M, B_a]`: lb, ulb, lse, a_ulb float32; ref float64 in logit units.
    """
    _check_device(anchors, candidates)
    soft_pu = _kernels()[0]
    m, b_c, d = candidates.shape
    b_a = anchors.shape[0]
    if options.phi:
        ref = _phi_references(anchors, candidates, targets, options)
    else:
        ref = logit_references(anchors, candidates, targets, options)
    lb, ulb, lse, a_ulb = (torch.empty(m, b_a, device=anchors.device, dtype=torch.float32) for _ in range(4))
    soft_pu._soft_pu_fwd_kernel[lambda meta: (_cdiv(b_a, meta["BLOCK_M"]), m)](
        anchors, candidates, *_label_args(targets), targets.n10, _kernel_ref(ref), lb, ulb, lse, a_ulb,
        b_a, b_c, d, targets.diag_offset, _LOG2E / options.temperature, *_rbf_scalars(options),
        **_common_meta(anchors, options),
    )
    return SoftPUStats(lb, ulb, lse, ref, a_ulb)


def _row_constants(targets: SoftPUTargets, stats: SoftPUStats, grad_lb: Tensor, grad_ulb: Tensor) -> Tensor:
    """`[5, M, B_a]` float32 in the kernels' ROW_CONSTANTS order: lse, CP, C11, C10, ρ_u.

    G = CP p - C11 [P11] - C10 w [P10] (docs/math.md, "Gradients"). A row with an empty denominator
    (lse = -inf) has CP = 0; lse = +inf there makes p = 0 instead of exp(-inf + inf) = NaN.
    """
    n11, n10 = targets.n11, targets.n10
    grad_lb, grad_ulb = grad_lb.float(), grad_ulb.float()
    lse = torch.where(stats.lse == -math.inf, math.inf, stats.lse.float())
    cp = torch.where(n11 > 0, grad_lb, 0.0) + grad_ulb * stats.a_ulb.float()
    c11 = torch.where(n11 > 0, grad_lb / n11.clamp(min=1), 0.0)
    c10 = torch.where(n10 > 0, grad_ulb / n10.clamp(min=1), 0.0)
    return torch.stack([lse, cp, c11, c10, _kernel_ref(stats.ref)]).contiguous()


def _temperature_partials(tau_sums: Tensor, options: SoftPUOptions) -> Tensor:
    """Per-anchor shares `[B_a]` of ∂L/∂τ = -(1/τ) Σ_ik G ℓ from the kernels' row sums (T, Γ, A, S) =
    (Σ G ℓ, Σ G, Σ p ℓ, Σ p) `[4, M, B_a]`: Σ_k G ℓ = T - (A/S) Γ per row, the sum about the softmax mean of ℓ,
    which cancels the rounding of lse and CP (kernels' module docstring, "∂L/∂τ")."""
    t, gamma, a, s = tau_sums
    rows = t - torch.where(s > 0, a / s, 0.0) * gamma
    return rows.sum(0) * (-1.0 / options.temperature)


def soft_pu_bwd(
    anchors: Tensor,  # [B_a, d]
    candidates: Tensor,  # [M, B_c, d]
    targets: SoftPUTargets,
    options: SoftPUOptions,
    stats: SoftPUStats,  # [M, B_a] each
    grad_lb: Tensor,  # [M, B_a]
    grad_ulb: Tensor,  # [M, B_a]
    needs_anchors: bool,
    needs_candidates: bool,
    needs_temperature: bool,
) -> SoftPUGrads:
    """Gradients of Σ grad_lb·lb + grad_ulb·ulb, recomputing the tiles (w and ρ held constant).

    ```
    G_jk = g_lb_j (A11_j p_jk - [P11]/|P11|) + g_ulb_j (a_ulb_j p_jk - w_jk [P10]/|P10|)
    grad_anchors_j = Σ_i Σ_k G^i_jk z^i_k / τ;   grad_candidates^i_k = Σ_j G^i_jk s_j / τ
    ∂L/∂τ = -(1/τ) Σ_i Σ_jk G^i_jk ℓ^i_jk
    ```

    Deterministic by default; `ATOMIC_BACKWARD` selects the single-kernel atomic variant (module docstring)
    when both input gradients are asked for.

    Returns:
        `SoftPUGrads`: anchors `[B_a, d]` and candidates `[M, B_c, d]` in the input dtype; temperature `[B_a]`
        float32 per-anchor partial sums of ∂L/∂τ.
    """
    if not (needs_anchors or needs_candidates or needs_temperature):
        return SoftPUGrads(None, None, None)
    _check_device(anchors, candidates)
    soft_pu = _kernels()[0]
    m, b_c, d = candidates.shape
    b_a = anchors.shape[0]
    consts = _row_constants(targets, stats, grad_lb, grad_ulb)
    meta = _common_meta(anchors, options, backward=True)
    labels = _label_args(targets)
    scalars = (m, b_a, b_c, d, targets.diag_offset, _LOG2E / options.temperature, *_rbf_scalars(options),
               1.0 / options.temperature)

    # The gradients are written in BLOCK_DO-wide column blocks (a tile configuration: ℓ is recomputed for each).
    def col_grid(meta: dict[str, int]) -> tuple[int, int, int]:
        return (_cdiv(b_c, meta["BLOCK_N"]), m, _cdiv(d, meta["BLOCK_DO"]))

    grad_anchors = grad_candidates = None
    # Per row: T, Γ, A, S (kernels' module docstring, "∂L/∂τ"); zero-filled for the atomic kernel.
    tau_sums = torch.zeros(4, m, b_a, device=anchors.device, dtype=torch.float32)
    if needs_anchors and needs_candidates and ATOMIC_BACKWARD:
        grad_acc = torch.zeros(b_a, d, device=anchors.device, dtype=torch.float32)
        grad_candidates = torch.empty_like(candidates)
        soft_pu._soft_pu_bwd_atomic_kernel[col_grid](
            anchors, candidates, *labels, consts, grad_acc, tau_sums, grad_candidates, *scalars,
            GRAD_T=needs_temperature, **meta,
        )
        grad_anchors = grad_acc.to(anchors.dtype)
    else:
        if needs_anchors or needs_temperature:
            grad_anchors = torch.empty_like(anchors) if needs_anchors else None
            # Without the anchors' gradient one d block suffices (the ℓ tiles loop over all of d); an output the
            # kernel does not write still needs a valid pointer.
            soft_pu._soft_pu_bwd_rows_kernel[lambda meta: (_cdiv(b_a, meta["BLOCK_M"]),
                                                           _cdiv(d, meta["BLOCK_DO"]) if needs_anchors else 1)](
                anchors, candidates, *labels, consts, tau_sums if grad_anchors is None else grad_anchors, tau_sums,
                *scalars, GRAD_S=needs_anchors, GRAD_T=needs_temperature, **meta,
            )
        if needs_candidates:
            grad_candidates = torch.empty_like(candidates)
            soft_pu._soft_pu_bwd_cols_kernel[col_grid](
                anchors, candidates, *labels, consts, grad_candidates, *scalars, **meta,
            )
    temperature = _temperature_partials(tau_sums, options) if needs_temperature else None
    return SoftPUGrads(grad_anchors, grad_candidates, temperature)


def cosine_rec_fwd(
    reconstruction: Tensor,  # [N, d]
    target: Tensor,  # [N, d]
) -> Tensor:
    """Per-row `1 - cos²`, `[N]` float32, in one fused kernel (docs/math.md, "Cosine reconstruction loss").

    ```
    rows = 1 - (<a, b> / max(|a| |b|, 1e-8))²
    ```
    computed scale-free: each row is divided by its largest magnitude first (the kernels' module docstring).
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
        INTERPRET=cosine.INTERPRET,
    )
    return grad_a, grad_b
