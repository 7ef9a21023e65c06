"""Row-chunked soft-PU driver shared by the compiled backends (`cpu`, `cuda`).

The B_a×B logits are never held at once: the anchors are cut into chunks of `chunk_rows` rows, and for
every chunk and modality one GEMM by torch (MKL on the CPU, cuBLAS on a GPU) writes the raw dot products
`dots[i, k] = <s_{row0+i}, z_k>` into a reused `[chunk_rows, B]` buffer, and one fused *epilogue* of the
backend turns that block into what the pass needs. Peak extra memory: `chunk_rows·B` accumulation-dtype
elements plus the O(B·d) inputs and gradients.

Epilogue protocol (what a backend plugs in; both callables return None and work in place):

```
fwd_epilogue(dots, first_row, targets, options, out)
    dots      [C, B] accumulation dtype (float32, float64 for float64 inputs), contiguous: the raw dots
              <s_j, z_k> of C whole anchor rows (no 1/τ applied). Scratch: the epilogue may overwrite it.
    first_row int: candidate index of the chunk's first anchor, row_offset already added, so anchor i of
              the chunk is candidate first_row + i (its diagonal is column first_row + i; its class,
              labeled flag, n11 and n10 are read at first_row + i).
    targets   SoftPUTargets (arrays over the B candidates, on the inputs' device).
    options   SoftPUOptions.
    out       SoftPUStats of contiguous [C] views (lb, ulb, lse, ref, a_ulb) into the [M, B_a] results of
              this modality; the epilogue writes all five, the reference r_j included, in both RBF spaces:
              the chunk holds whole rows, so r_j = mean_{P11(j)} x_jk (or x_jj) comes from the same pass
              that sums ℓ over P11 for lb, at no extra cost and without a separate O(B·d) pre-pass.

bwd_epilogue(dots, first_row, targets, options, stats, grad_lb, grad_ulb)
    dots      [C, B] in: the raw dots as above (recomputed by the driver); out: overwritten with
              ∂L/∂<s_j, z_k> = G_jk / τ, where (SPEC §1, one upstream gradient per part)
                  G_jk = g_lb_j (A11_j p_jk − a11_jk) + g_ulb_j (A10_j p_jk − a10_jk)
                  p_jk = exp(ℓ_jk − lse_j),  a11 = 1/|P11(j)| on P11,  a10 = w_jk/|P10(j)| on P10,
                  A11_j = [P11(j) non-empty],  A10_j = a_ulb_j.
    first_row, targets, options: as above.
    stats     SoftPUStats of contiguous [C] views: the forward's lse, ref and a_ulb of these rows (lb and
              ulb are there too but not needed).
    grad_lb, grad_ulb: [C] contiguous views, the upstream gradients of these rows.
```

The driver then accumulates `grad_s[chunk] += G' @ z` and `grad_z += G'ᵀ @ s[chunk]` (G' = G/τ) by two
GEMMs per chunk and modality, always in the same order, so results do not depend on the thread count.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mkefast.ops._common import SoftPUOptions, SoftPUStats, SoftPUTargets

__all__ = [
    "BwdEpilogue", "FwdEpilogue", "chunk_rows_for", "kernel_targets", "soft_pu_bwd_chunked", "soft_pu_fwd_chunked",
]

FwdEpilogue = Callable[[Tensor, int, SoftPUTargets, SoftPUOptions, SoftPUStats], None]
BwdEpilogue = Callable[[Tensor, int, SoftPUTargets, SoftPUOptions, SoftPUStats, Tensor, Tensor], None]


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def chunk_rows_for(num_rows: int, num_cols: int, dtype: torch.dtype, budget_mb: float) -> int:
    """Rows per chunk so that one `[rows, num_cols]` buffer of `dtype` fits in `budget_mb` MiB.

    At least 1 and at most `num_rows`; it depends only on the sizes and the budget (never on the thread
    count), so that the results are the same on every machine with the same budget.
    """
    if not budget_mb > 0:
        raise ValueError(f"budget_mb: expected a positive number of MiB, got {budget_mb}")
    row_bytes = num_cols * torch.empty((), dtype=dtype).element_size()
    return max(1, min(num_rows, int(budget_mb * 2**20) // row_bytes))


def kernel_targets(targets: SoftPUTargets) -> SoftPUTargets:
    """The label arrays in the layout the compiled epilogues read: contiguous int32 / bool / float32."""
    return targets._replace(
        cls=targets.cls.to(torch.int32).contiguous(),
        labeled=targets.labeled.to(torch.bool).contiguous(),
        n11=targets.n11.to(torch.float32).contiguous(),
        n10=targets.n10.to(torch.float32).contiguous(),
    )


def _chunks(num_rows: int, chunk_rows: int) -> range:
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows: expected a positive number of rows, got {chunk_rows}")
    return range(0, num_rows, chunk_rows)


def soft_pu_fwd_chunked(
    fused: Tensor,  # [B_a, d]
    unimodal: Tensor,  # [M, B, d]
    targets: SoftPUTargets,
    options: SoftPUOptions,
    epilogue: FwdEpilogue,
    chunk_rows: int,
) -> SoftPUStats:
    """The soft-PU forward, chunk by chunk: one GEMM and one `epilogue` call per chunk and modality.

    Args:
        fused: `[B_a, d]` anchors (anchor j is candidate `targets.row_offset + j`).
        unimodal: `[M, B, d]` candidates, same dtype and device.
        targets: the label arrays; options: the scalar options.
        epilogue: the backend's fused pass (see the module docstring).
        chunk_rows: anchors per chunk (see `chunk_rows_for`).

    Returns:
        `SoftPUStats`, each `[M, B_a]` in the accumulation dtype.
    """
    acc = _acc(fused.dtype)
    s, z = fused.to(acc), unimodal.to(acc)
    m, b, _ = z.shape
    b_a = s.shape[0]
    stats = SoftPUStats(*(s.new_empty(m, b_a) for _ in SoftPUStats._fields))
    rows = min(chunk_rows, b_a)
    buf = s.new_empty(rows, b)
    for start in _chunks(b_a, chunk_rows):
        stop = min(start + chunk_rows, b_a)
        dots = buf[: stop - start]
        for i in range(m):
            torch.matmul(s[start:stop], z[i].mT, out=dots)
            out = SoftPUStats(*(t[i, start:stop] for t in stats))
            epilogue(dots, targets.row_offset + start, targets, options, out)
    return stats


def soft_pu_bwd_chunked(
    fused: Tensor,  # [B_a, d]
    unimodal: Tensor,  # [M, B, d]
    targets: SoftPUTargets,
    options: SoftPUOptions,
    stats: SoftPUStats,  # [M, B_a] each
    grad_lb: Tensor,  # [M, B_a]
    grad_ulb: Tensor,  # [M, B_a]
    needs_fused: bool,
    needs_unimodal: bool,
    epilogue: BwdEpilogue,
    chunk_rows: int,
) -> tuple[Tensor | None, Tensor | None]:
    """The soft-PU backward, chunk by chunk: recompute the dots, let `epilogue` turn them into G/τ, two GEMMs.

    Returns:
        `(grad_fused [B_a, d] | None, grad_unimodal [M, B, d] | None)` in the accumulation dtype.
    """
    acc = _acc(fused.dtype)
    s, z = fused.to(acc), unimodal.to(acc)
    m, b, _ = z.shape
    b_a = s.shape[0]
    grad_s = torch.zeros_like(s) if needs_fused else None
    grad_z = torch.zeros_like(z) if needs_unimodal else None
    if grad_s is None and grad_z is None:
        return None, None
    g_lb, g_ulb = grad_lb.to(acc).contiguous(), grad_ulb.to(acc).contiguous()
    rows = min(chunk_rows, b_a)
    buf = s.new_empty(rows, b)
    for start in _chunks(b_a, chunk_rows):
        stop = min(start + chunk_rows, b_a)
        s_chunk = s[start:stop]
        g = buf[: stop - start]
        for i in range(m):
            torch.matmul(s_chunk, z[i].mT, out=g)
            views = SoftPUStats(*(t[i, start:stop] for t in stats))
            epilogue(g, targets.row_offset + start, targets, options, views, g_lb[i, start:stop],
                     g_ulb[i, start:stop])
            if grad_s is not None:
                grad_s[start:stop].addmm_(g, z[i])
            if grad_z is not None:
                grad_z[i].addmm_(g.mT, s_chunk)
    return grad_s, grad_z
