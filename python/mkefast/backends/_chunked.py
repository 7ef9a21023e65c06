"""Row-chunked soft-PU driver shared by the compiled backends (`cpu`, `cuda`).

The B_a×B_c logits are never held at once: the anchors are cut into chunks of `chunk_rows` rows, and for
every chunk and modality one GEMM by torch (MKL on the CPU, cuBLAS on a GPU) writes the raw dot products
`dots[i, k] = <s_{start+i}, z_k>` into a reused `[chunk_rows, B_c]` buffer, and one fused *epilogue* of the
backend turns that block into what the pass needs. Peak extra memory: `chunk_rows·B_c` accumulation-dtype
elements plus the O((B_a + B_c)·d) inputs and gradients.

Epilogue protocol (what a backend plugs in; both callables return None and work in place; the targets and
options are bound into them once per call, as the compiled modules' `SoftPUParams` built by
`soft_pu_params`):

```
fwd_epilogue(dots, first_anchor, out)
    dots          [C, B_c] accumulation dtype (float32, float64 for float64 inputs), contiguous: the raw dots
                  <s_j, z_k> of C whole anchor rows (no 1/τ applied). Scratch: the epilogue may overwrite it.
    first_anchor  int: the index of the chunk's first anchor; anchor j = first_anchor + i reads the anchor
                  arrays (anchor_cls, anchor_labeled, n11, n10) at j, and its partner is candidate
                  j + diag_offset when that is < B_c.
    out           SoftPUStats of contiguous [C] views into the [M, B_a] results of this modality: lb, ulb,
                  lse, a_ulb (accumulation dtype) and ref (float64, logit units). The chunk holds whole rows,
                  so ρ_j comes from the same pass that sums ℓ over P11 for lb ("phi": a max-shifted
                  log-mean-exp over P11), without a separate pre-pass.

bwd_epilogue(dots, first_anchor, stats, grad_lb, grad_ulb, grad_temperature)
    dots          [C, B_c] in: the raw dots as above (recomputed by the driver); out: overwritten with
                  ∂L/∂<s_j, z_k> = G_jk / τ (docs/math.md, "Gradients").
    stats         SoftPUStats of contiguous [C] views: the forward's lse, ref and a_ulb of these rows (every
                  weight is recomputed from that stored ref).
    grad_lb, grad_ulb: [C] contiguous views, the upstream gradients of these rows.
    grad_temperature: [C] contiguous view that receives each row's −(1/τ) Σ_k G_jk ℓ_jk, or None.
```

The driver then accumulates `grad_s[chunk] += G' @ z` and `grad_z += G'ᵀ @ s[chunk]` (G' = G/τ) by two
GEMMs per chunk and modality (each only when asked for), always in the same order, so results do not
depend on the thread count.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from mkefast.ops._common import SoftPUGrads, SoftPUOptions, SoftPUStats, SoftPUTargets, acc_dtype

__all__ = [
    "BwdEpilogue", "FwdEpilogue", "chunk_rows_for", "kernel_targets", "pointers", "soft_pu_bwd_chunked",
    "soft_pu_fwd_chunked", "soft_pu_params",
]

FwdEpilogue = Callable[[Tensor, int, SoftPUStats], None]
BwdEpilogue = Callable[[Tensor, int, SoftPUStats, Tensor, Tensor, Tensor | None], None]


def chunk_rows_for(num_rows: int, num_cols: int, dtype: torch.dtype, budget_mb: float) -> int:
    """Rows per chunk so that one `[rows, num_cols]` buffer of `dtype` fits in `budget_mb` MiB.

    At least 1 and at most `num_rows`; it depends only on the sizes and the budget (never on the thread
    count), so that the results are the same on every machine with the same budget.

    Raises:
        ValueError: `budget_mb` is not a positive finite number.
    """
    if not (budget_mb > 0 and math.isfinite(budget_mb)):
        raise ValueError(f"budget_mb: expected a positive finite number of MiB, got {budget_mb}")
    row_bytes = num_cols * torch.empty((), dtype=dtype).element_size()
    return max(1, min(num_rows, int(budget_mb * 2**20) // row_bytes))


def kernel_targets(targets: SoftPUTargets) -> SoftPUTargets:
    """The arrays in the layout the compiled epilogues read: contiguous int32 / bool / float32."""
    return targets._replace(
        cls=targets.cls.to(torch.int32).contiguous(),
        labeled=targets.labeled.to(torch.bool).contiguous(),
        anchor_cls=targets.anchor_cls.to(torch.int32).contiguous(),
        anchor_labeled=targets.anchor_labeled.to(torch.bool).contiguous(),
        n11=targets.n11.to(torch.float32).contiguous(),
        n10=targets.n10.to(torch.float32).contiguous(),
    )


def soft_pu_params(lib: ModuleType, targets: SoftPUTargets, options: SoftPUOptions) -> Any:
    """`lib.SoftPUParams` (lib: `mkefast._C` or `mkefast._C_cuda`): the targets' arrays (from
    `kernel_targets`, which must outlive every launch that reads the result) and the options, by keyword.

    The RBF width travels as 1/σ and log σ (docs/math.md, "Numerics"): the kernels never form 1/(2σ²).
    """
    return lib.SoftPUParams(
        cls=targets.cls.data_ptr(),
        labeled=targets.labeled.data_ptr(),
        anchor_cls=targets.anchor_cls.data_ptr(),
        anchor_labeled=targets.anchor_labeled.data_ptr(),
        n11=targets.n11.data_ptr(),
        n10=targets.n10.data_ptr(),
        diag_offset=targets.diag_offset,
        exclude_diagonal=options.exclude_diagonal,
        inv_tau=1.0 / options.temperature,
        inv_sigma=options.inv_sigma,
        log_sigma=options.log_sigma,
        rbf=options.rbf_enabled,
        phi=options.phi,
    )


def pointers(tensors: Mapping[str, Tensor | None]) -> dict[str, int]:
    """`data_ptr()` of each tensor by name (0 for None: "not needed"), as keyword arguments of a kernel."""
    return {name: 0 if t is None else t.data_ptr() for name, t in tensors.items()}


def _chunks(num_rows: int, chunk_rows: int) -> range:
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected a positive number of rows, got {chunk_rows}")
    return range(0, num_rows, chunk_rows)


def soft_pu_fwd_chunked(
    anchors: Tensor,  # [B_a, d]
    candidates: Tensor,  # [M, B_c, d]
    epilogue: FwdEpilogue,
    chunk_rows: int,
) -> SoftPUStats:
    """The soft-PU forward, chunk by chunk: one GEMM and one `epilogue` call per chunk and modality.

    Args:
        anchors: `[B_a, d]`.
        candidates: `[M, B_c, d]`, same dtype and device.
        epilogue: the backend's fused pass, with the targets and options bound (see the module docstring).
        chunk_rows: anchors per chunk (see `chunk_rows_for`).

    Returns:
        `SoftPUStats`, each `[M, B_a]`: ref in float64, the others in the accumulation dtype.
    """
    acc = acc_dtype(anchors.dtype)
    s, z = anchors.to(acc), candidates.to(acc)
    m, b_c, _ = z.shape
    b_a = s.shape[0]
    stats = SoftPUStats(*(s.new_empty(m, b_a, dtype=torch.float64 if name == "ref" else acc)
                          for name in SoftPUStats._fields))
    buf = s.new_empty(min(chunk_rows, b_a), b_c)
    for start in _chunks(b_a, chunk_rows):
        stop = min(start + chunk_rows, b_a)
        dots = buf[: stop - start]
        for i in range(m):
            torch.matmul(s[start:stop], z[i].mT, out=dots)
            epilogue(dots, start, SoftPUStats(*(t[i, start:stop] for t in stats)))
    return stats


def soft_pu_bwd_chunked(
    anchors: Tensor,  # [B_a, d]
    candidates: Tensor,  # [M, B_c, d]
    stats: SoftPUStats,  # [M, B_a] each
    grad_lb: Tensor,  # [M, B_a]
    grad_ulb: Tensor,  # [M, B_a]
    needs_anchors: bool,
    needs_candidates: bool,
    needs_temperature: bool,
    epilogue: BwdEpilogue,
    chunk_rows: int,
) -> SoftPUGrads:
    """The soft-PU backward, chunk by chunk: recompute the dots, let `epilogue` turn them into G/τ (and the
    rows' shares of ∂L/∂τ), then one GEMM per gradient asked for.

    Returns:
        `SoftPUGrads`: anchors `[B_a, d]`, candidates `[M, B_c, d]`, temperature `[M, B_a]` (its sum is
        ∂L/∂τ), each in the accumulation dtype, or None where not asked for.
    """
    if not (needs_anchors or needs_candidates or needs_temperature):
        return SoftPUGrads(None, None, None)
    acc = acc_dtype(anchors.dtype)
    s, z = anchors.to(acc), candidates.to(acc)
    m, b_c, _ = z.shape
    b_a = s.shape[0]
    stats = SoftPUStats(*(t.to(torch.float64 if name == "ref" else acc).contiguous()
                          for name, t in zip(SoftPUStats._fields, stats, strict=True)))
    grad_s = torch.zeros_like(s) if needs_anchors else None
    grad_z = torch.zeros_like(z) if needs_candidates else None
    grad_tau = s.new_empty(m, b_a) if needs_temperature else None
    g_lb, g_ulb = grad_lb.to(acc).contiguous(), grad_ulb.to(acc).contiguous()
    buf = s.new_empty(min(chunk_rows, b_a), b_c)
    for start in _chunks(b_a, chunk_rows):
        stop = min(start + chunk_rows, b_a)
        s_chunk = s[start:stop]
        g = buf[: stop - start]
        for i in range(m):
            torch.matmul(s_chunk, z[i].mT, out=g)
            epilogue(g, start, SoftPUStats(*(t[i, start:stop] for t in stats)), g_lb[i, start:stop],
                     g_ulb[i, start:stop], None if grad_tau is None else grad_tau[i, start:stop])
            if grad_s is not None:
                grad_s[start:stop].addmm_(g, z[i])
            if grad_z is not None:
                grad_z[i].addmm_(g.mT, s_chunk)
    return SoftPUGrads(grad_s, grad_z, grad_tau)
