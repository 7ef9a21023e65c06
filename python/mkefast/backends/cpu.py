"""The `cpu` backend: compiled C++ (mkefast._C) with OpenMP, for CPU tensors.

Python allocates every buffer and hands raw pointers to the C++ kernels of `csrc/cpu/`, by keyword; the
targets and options of a call travel as one `mkefast._C.SoftPUParams` (`_chunked.soft_pu_params`).

Soft-PU runs the row-chunked scheme of `mkefast.backends._chunked`: per chunk of anchor rows, one fp32
(fp64) GEMM by torch for the dots against the M stacked candidate sets, then one fused OpenMP pass (the
`soft_pu_*` bindings of `csrc/cpu/soft_pu.cpp`) for the softmax statistics, the masks, the RBF weights and
either the loss terms or the gradient coefficients (and the rows' shares of ∂L/∂τ). The backward recomputes
the dots of each chunk (one GEMM), overwrites them with ∂L/∂dots and applies a GEMM per gradient asked for;
`soft_pu_fwd_grad` forms the forward and the gradients of Σ (lb + ulb) in one pass (3 GEMM-equivalents
instead of 4). Symmetric InfoNCE (CLIP) takes `soft_pu_sym_fwd` / `soft_pu_sym_bwd`: the forward forms the
rows' and the columns' log-sum-exp in one pass, the backward both directions' gradients in one pass (4
GEMM-equivalents instead of 6; docs/math.md, "Symmetric InfoNCE in one pass"). The forward keeps nothing of
size B_a×B_c. The fused pass is compiled once per instruction
set (SSE2, AVX2, AVX-512) and the module picks the widest one the processor runs when it is imported
(`MKEFAST_CPU_ISA` names one instead; `mkefast info` shows the choice). The chunk holds at most
`MKEFAST_CPU_CHUNK_MB` MiB of dots (default `DEFAULT_CHUNK_MB`; see benchmarks/README.md for the measurement
behind it), so the extra memory is O(chunk·B_c + (B_a + B_c)·d). The chunking depends only on the sizes and
that budget, and every row is reduced by one thread in a fixed order: the results are the same for any
thread count.

The cosine reconstruction loss is one fused pass per row, accumulated in double (float64 rows scaled by their
largest magnitude first), so that it is scale-free (docs/math.md, "Cosine reconstruction loss").

Low-precision inputs (bfloat16, float16) are computed in float32; the kernels exist for float32 and
float64.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from types import ModuleType
from typing import Any, NamedTuple

import torch
from torch import Tensor

from mkefast._build import backend_unavailable_reason, cpu_module
from mkefast.backends._chunked import (
    chunk_rows_for,
    kernel_targets,
    logit_bound,
    pointers,
    soft_pu_bwd_chunked,
    soft_pu_fwd_chunked,
    soft_pu_fwd_grad_chunked,
    soft_pu_grad_chunked,
    soft_pu_params,
    soft_pu_sym_fwd_chunked,
)
from mkefast.ops._common import SoftPUGrads, SoftPUOptions, SoftPUStats, SoftPUTargets, acc_dtype

__all__ = [
    "DEFAULT_CHUNK_MB",
    "chunk_rows",
    "cosine_rec_bwd",
    "cosine_rec_fwd",
    "soft_pu_bwd",
    "soft_pu_fwd",
    "soft_pu_fwd_grad",
    "soft_pu_sym_bwd",
    "soft_pu_sym_fwd",
    "unsupported_reason",
]

# MiB of dots per chunk. Measured at B = 8192, d = 128, M = 2 (benchmarks/README.md): with one thread 4 MiB
# is ~10-20% faster than 16-64 MiB (the epilogue reads the block while it is still in the cache), but with
# several threads on a busy machine every chunk costs two OpenMP barriers and small chunks lost up to 3×;
# 32 MiB (1024 rows at B = 8192, 128 rows at B = 64k) is the robust choice, and still O(chunk·B).
DEFAULT_CHUNK_MB = 32.0

_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def unsupported_reason(op: str, device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cpu":
        return f"the cpu backend runs on CPU tensors, got {device.type} tensors"
    return None


def _lib() -> ModuleType:
    lib = cpu_module()
    if lib is None:
        raise RuntimeError(f"mkefast: the cpu backend cannot run: {backend_unavailable_reason('cpu')}")
    return lib


def _kernel(name: str, dtype: torch.dtype) -> Any:
    return getattr(_lib(), f"{name}_{_SUFFIX[dtype]}")


def chunk_rows(num_rows: int, num_cols: int, dtype: torch.dtype) -> int:
    """Anchor rows per chunk: as many `[num_cols]` rows of `dtype` as `MKEFAST_CPU_CHUNK_MB` MiB hold.

    Raises:
        ValueError: `MKEFAST_CPU_CHUNK_MB` is set but is not a positive finite number.
    """
    raw = os.environ.get("MKEFAST_CPU_CHUNK_MB", "").strip()
    try:
        budget = float(raw) if raw else DEFAULT_CHUNK_MB
    except ValueError:
        budget = math.nan
    if not (budget > 0 and math.isfinite(budget)):
        raise ValueError(f"MKEFAST_CPU_CHUNK_MB: expected a positive finite number of MiB, got {raw!r}")
    return chunk_rows_for(num_rows, num_cols, acc_dtype(dtype), budget)


class _ClassIndex(NamedTuple):
    """Candidates grouped by class, so that the kernels visit only an anchor's own class for P11 / P10."""

    members: Tensor  # [B_c] int32: candidate indices sorted by class (stable), those without a class first
    begin: Tensor  # [C + 1] int64: class c is members[begin[c]:begin[c + 1]] (a view into a [C + 2] buffer)
    max_size: int  # the largest class

    def kwargs(self) -> dict[str, int]:
        return {"class_members": self.members.data_ptr(), "class_begin": self.begin.data_ptr(),
                "max_class_size": self.max_size}


def _class_index(targets: SoftPUTargets) -> _ClassIndex:
    cls = targets.cls.to(torch.int64)
    counts = torch.bincount(cls + 1, minlength=targets.num_classes + 1)  # bucket 0: no class
    bounds = torch.zeros(targets.num_classes + 2, dtype=torch.int64)
    torch.cumsum(counts, 0, out=bounds[1:])
    members = torch.argsort(cls, stable=True).to(torch.int32)
    max_size = int(counts[1:].max()) if targets.num_classes > 0 else 0
    return _ClassIndex(members, bounds[1:], max_size)


class _Call(NamedTuple):
    """What every epilogue launch of one call shares: the params object (with the target arrays it points
    into, kept alive here), the class index, and the chunk geometry."""

    params: Any
    targets: SoftPUTargets
    classes: _ClassIndex
    rows: int  # anchors per chunk

    def launch(self, kernel: str, dots: Tensor, first_anchor: int, rows: Mapping[str, Tensor | None],
               **extra: Any) -> None:
        """`kernel` on the chunk `dots` `[C, M, B_c]`; `rows`: its `[M, C]` per-row views (stride B_a);
        `extra`: the kernel's other keyword arguments."""
        stride = next(t.stride(0) for t in rows.values() if t is not None)
        _kernel(kernel, dots.dtype)(
            params=self.params, dots=dots.data_ptr(), rows=dots.shape[0], cols=dots.shape[2],
            modalities=dots.shape[1], first_anchor=first_anchor, stride=stride, **self.classes.kwargs(),
            **pointers(rows), **extra, num_threads=torch.get_num_threads(),
        )


def _call(anchors: Tensor, candidates: Tensor, targets: SoftPUTargets, options: SoftPUOptions) -> _Call:
    targets = kernel_targets(targets)
    m, b_c = candidates.shape[0], candidates.shape[1]
    return _Call(soft_pu_params(_lib(), targets, options), targets, _class_index(targets),
                 chunk_rows(anchors.shape[0], m * b_c, anchors.dtype))


def soft_pu_fwd(anchors: Tensor, candidates: Tensor, targets: SoftPUTargets, options: SoftPUOptions) -> SoftPUStats:
    """One direction's forward (the backend contract of `mkefast.backends`).

    Args:
        anchors: `[B_a, d]`.
        candidates: `[M, B_c, d]`.

    Returns:
        `SoftPUStats`, each `[M, B_a]` (ref float64, the others float32, or float64 for float64 inputs).
    """
    call = _call(anchors, candidates, targets, options)

    def epilogue(dots: Tensor, first_anchor: int, out: SoftPUStats) -> None:
        call.launch("soft_pu_fwd", dots, first_anchor, out._asdict())

    return soft_pu_fwd_chunked(anchors, candidates, epilogue, call.rows)


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
    """Gradients of Σ grad_lb·lb + grad_ulb·ulb (grad_lb, grad_ulb `[M, B_a]`) in the accumulation dtype:
    anchors `[B_a, d]`, candidates `[M, B_c, d]`, temperature `[M, B_a]` (summing to ∂L/∂τ)."""
    call = _call(anchors, candidates, targets, options)

    def epilogue(dots: Tensor, first_anchor: int, rows_stats: SoftPUStats, g_lb: Tensor, g_ulb: Tensor,
                 g_tau: Tensor | None) -> None:
        call.launch("soft_pu_bwd", dots, first_anchor, {
            "lse": rows_stats.lse, "ref": rows_stats.ref, "a_ulb": rows_stats.a_ulb, "grad_lb": g_lb,
            "grad_ulb": g_ulb, "grad_temperature": g_tau})

    return soft_pu_bwd_chunked(anchors, candidates, stats, grad_lb, grad_ulb, needs_anchors, needs_candidates,
                               needs_temperature, epilogue, call.rows)


def soft_pu_fwd_grad(
    anchors: Tensor,
    candidates: Tensor,
    targets: SoftPUTargets,
    options: SoftPUOptions,
    needs_anchors: bool,
    needs_candidates: bool,
    needs_temperature: bool,
) -> tuple[SoftPUStats, SoftPUGrads]:
    """The forward and the gradients of Σ_ij (lb + ulb) in one pass over the pairs (the optional hook of the
    backend contract): per chunk one GEMM for the dots, one fused pass for the statistics and G/τ (one exp
    per pair), and the two gradient GEMMs, 3 GEMM-equivalents in all.

    Returns:
        `(SoftPUStats, SoftPUGrads)` as `soft_pu_fwd` and `soft_pu_bwd` (with unit upstream gradients) return
        them.
    """
    call = _call(anchors, candidates, targets, options)

    def epilogue(dots: Tensor, first_anchor: int, out: SoftPUStats, g_tau: Tensor | None) -> None:
        call.launch("soft_pu_fwd_grad", dots, first_anchor, {**out._asdict(), "grad_temperature": g_tau})

    return soft_pu_fwd_grad_chunked(anchors, candidates, needs_anchors, needs_candidates, needs_temperature,
                                    epilogue, call.rows)


def soft_pu_sym_fwd(anchors: Tensor, candidates: Tensor, targets: SoftPUTargets, options: SoftPUOptions,
                    ) -> tuple[SoftPUStats, Tensor, Tensor]:
    """Symmetric InfoNCE's forward in one pass over the pairs (the optional hook of the backend contract, for
    calls with nothing labeled, no pseudo labels, B_a = B_c and the diagonal kept): per chunk one GEMM, the
    rows' statistics and the running column log-sum-exp.

    Returns:
        The rows' `SoftPUStats` `[M, B]`, and the rows' and the columns' lse `[M, B]` in float64 (the
        columns': the reverse direction's anchors').
    """
    call = _call(anchors, candidates, targets, options)
    shift = logit_bound(anchors, candidates, options.temperature)

    def epilogue(dots: Tensor, first_anchor: int, out: SoftPUStats, row_lse: Tensor, col_max: Tensor,
                 col_sum: Tensor) -> None:
        call.launch("soft_pu_sym_fwd", dots, first_anchor, out._asdict(), row_lse=row_lse.data_ptr(),
                    bounded=shift is not None, shift=shift or 0.0, col_max=col_max.data_ptr(),
                    col_sum=col_sum.data_ptr())

    return soft_pu_sym_fwd_chunked(anchors, candidates, epilogue, call.rows, shift)


def soft_pu_sym_bwd(
    anchors: Tensor,
    candidates: Tensor,
    targets: SoftPUTargets,
    options: SoftPUOptions,
    lse: Tensor,
    lse_col: Tensor,
    grad_ulb: Tensor,
    grad_ulb_col: Tensor,
    needs_anchors: bool,
    needs_candidates: bool,
    needs_temperature: bool,
) -> SoftPUGrads:
    """Gradients of Σ grad_ulb·ulb + grad_ulb_col·ulb_col (the two directions' terms of symmetric InfoNCE,
    `[M, B]` each) in one pass over the pairs: per chunk one GEMM for the dots, one fused pass for G/τ of both
    directions, and the two gradient GEMMs (`soft_pu_sym_fwd`'s conditions; `lse` and `lse_col` are the rows'
    and the columns' float64 log-sum-exp it returned)."""
    call = _call(anchors, candidates, targets, options)
    shift = logit_bound(anchors, candidates, options.temperature)
    acc = acc_dtype(anchors.dtype)
    row_lse, lse_col = lse.to(torch.float64).contiguous(), lse_col.to(torch.float64).contiguous()
    grad_row, grad_col = grad_ulb.to(acc).contiguous(), grad_ulb_col.to(acc).contiguous()
    # The kernels subtract the columns' lse as a pair of floats hi + lo, as exact as the double.
    col_hi = lse_col.to(acc)
    col_lo = (lse_col - col_hi.double()).to(acc)
    # g'_k e^{R − lse'_k}: p^col = exp(ℓ − R) times it (docs/math.md, "Symmetric InfoNCE in one pass").
    factor = (grad_col.double() * (shift - lse_col).exp()).to(acc) if shift is not None else None

    def epilogue(dots: Tensor, first_anchor: int, grad_tau: Tensor | None) -> None:
        rows = slice(first_anchor, first_anchor + dots.shape[0])
        call.launch("soft_pu_sym_grad", dots, first_anchor,
                    {"row_lse": row_lse[:, rows], "grad_ulb": grad_row[:, rows], "grad_temperature": grad_tau},
                    bounded=shift is not None, shift=shift or 0.0, lse_col_hi=col_hi.data_ptr(),
                    lse_col_lo=col_lo.data_ptr(), grad_col=grad_col.data_ptr(),
                    col_factor=0 if factor is None else factor.data_ptr())

    return soft_pu_grad_chunked(anchors, candidates, needs_anchors, needs_candidates, needs_temperature, epilogue,
                                call.rows)


def _rows(t: Tensor) -> Tensor:
    """`[..., d]` as contiguous `[N, d]` rows in the accumulation dtype (the kernels exist for float32 and
    float64; low-precision inputs are computed in float32)."""
    return t.to(acc_dtype(t.dtype)).reshape(-1, t.shape[-1]).contiguous()


def cosine_rec_fwd(reconstruction: Tensor, target: Tensor) -> Tensor:
    """Per-row `1 - cos²` of `[..., d]` inputs; `[...]` in float32 (float64 for float64 inputs)."""
    a, b = _rows(reconstruction), _rows(target)
    n, d = a.shape
    loss = torch.empty(n, dtype=a.dtype)
    _kernel("cosine_rec_fwd", a.dtype)(a=a.data_ptr(), b=b.data_ptr(), loss=loss.data_ptr(), n=n, d=d, stride_a=d,
                                       stride_b=d, num_threads=torch.get_num_threads())
    return loss.view(reconstruction.shape[:-1])


def cosine_rec_bwd(
    reconstruction: Tensor, target: Tensor, grad_rows: Tensor, needs_reconstruction: bool, needs_target: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Both gradients in one fused pass, `[..., d]` in the accumulation dtype; grad_rows `[...]`."""
    a, b = _rows(reconstruction), _rows(target)
    n, d = a.shape
    g = grad_rows.reshape(n).to(a.dtype).contiguous()
    grad_a = torch.empty_like(a) if needs_reconstruction else None
    grad_b = torch.empty_like(b) if needs_target else None
    _kernel("cosine_rec_bwd", a.dtype)(
        a=a.data_ptr(), b=b.data_ptr(), grad_loss=g.data_ptr(), **pointers({"grad_a": grad_a, "grad_b": grad_b}),
        n=n, d=d, stride_a=d, stride_b=d, num_threads=torch.get_num_threads(),
    )
    shape = reconstruction.shape
    return (None if grad_a is None else grad_a.view(shape)), (None if grad_b is None else grad_b.view(shape))
