"""Row-chunked soft-PU driver shared by the compiled backends (`cpu`, `cuda`).

The B_a×B_c logits are never held at once: the anchors are cut into chunks of `chunk_rows` rows, and for
every chunk one GEMM by torch (MKL on the CPU, cuBLAS on a GPU) writes the raw dot products
`dots[i, m, k] = <s_{start+i}, z^m_k>` of every modality into a reused `[chunk_rows, M, B_c]` buffer (the M
candidate sets stacked as one `[M·B_c, d]` matrix: one large GEMM instead of M smaller ones), and one fused
*epilogue* of the backend turns that block into what the pass needs. Peak extra memory: `chunk_rows·M·B_c`
accumulation-dtype elements plus the O((B_a + M·B_c)·d) inputs and gradients.

Epilogue protocol (what a backend plugs in; the callables return None and work in place; the targets and
options are bound into them once per call, as the compiled modules' `SoftPUParams` built by
`soft_pu_params`). Every per-row argument is a `[M, C]` view into an `[M, B_a]` array (row stride B_a) of the
chunk's rows:

```
fwd_epilogue(dots, first_anchor, out)
    dots          [C, M, B_c] accumulation dtype (float32, float64 for float64 inputs), contiguous: the raw
                  dots <s_j, z^m_k> of C whole anchor rows (no 1/τ applied). Scratch: it may be overwritten.
    first_anchor  int: the index of the chunk's first anchor; anchor j = first_anchor + i reads the anchor
                  arrays (anchor_cls, anchor_labeled, n11, n10) at j, and its partner is candidate
                  j + diag_offset when that is < B_c.
    out           SoftPUStats of [M, C] views: lb, ulb, lse, a_ulb (accumulation dtype) and ref (float64,
                  logit units), written. The chunk holds whole rows, so ρ_j comes from the same pass that
                  sums ℓ over P11 for lb ("phi": a max-shifted log-mean-exp over P11), without a pre-pass.

bwd_epilogue(dots, first_anchor, stats, grad_lb, grad_ulb, grad_temperature)
    dots          [C, M, B_c] in: the raw dots as above (recomputed by the driver); out: overwritten with
                  ∂L/∂<s_j, z^m_k> = G_jk / τ (docs/math.md, "Gradients").
    stats         SoftPUStats of [M, C] views: the forward's lse, ref and a_ulb of these rows (every weight
                  is recomputed from that stored ref).
    grad_lb, grad_ulb: [M, C] views, the upstream gradients of these rows.
    grad_temperature: [M, C] view that receives each row's −(1/τ) Σ_k G_jk ℓ_jk, or None.

fwd_grad_epilogue(dots, first_anchor, out, grad_temperature)
    Both at once for unit upstream gradients (the gradient of Σ (lb + ulb)): writes `out` as fwd_epilogue
    does and overwrites the raw dots with ∂/∂dots as bwd_epilogue does (and grad_temperature when given).
```

The driver then forms `grad_s[chunk] = G' @ z` and accumulates `grad_z += G'ᵀ @ s[chunk]` (G' = G/τ as
`[C, M·B_c]`, z as `[M·B_c, d]`): two GEMMs per chunk (each only when asked for), always in the same order,
so results do not depend on the thread count. `soft_pu_fwd_grad_chunked` does the forward and these two
GEMMs while the chunk is at hand (as Liger-Kernel's fused linear cross-entropy does): 3 GEMM-equivalents in
all, against 4 for a forward followed by a backward that recomputes the dots.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any, NamedTuple

import torch
from torch import Tensor

from mkefast.ops._common import SoftPUGrads, SoftPUOptions, SoftPUStats, SoftPUTargets, acc_dtype

__all__ = [
    "BwdEpilogue", "FwdEpilogue", "FwdGradEpilogue", "GradEpilogue", "SymFwdEpilogue", "chunk_rows_for",
    "kernel_targets", "logit_bound", "pointers", "soft_pu_bwd_chunked", "soft_pu_fwd_chunked",
    "soft_pu_fwd_grad_chunked", "soft_pu_grad_chunked", "soft_pu_params", "soft_pu_sym_fwd_chunked",
]

FwdEpilogue = Callable[[Tensor, int, SoftPUStats], None]
BwdEpilogue = Callable[[Tensor, int, SoftPUStats, Tensor, Tensor, Tensor | None], None]
FwdGradEpilogue = Callable[[Tensor, int, SoftPUStats, Tensor | None], None]
GradEpilogue = Callable[[Tensor, int, Tensor | None], None]
SymFwdEpilogue = Callable[[Tensor, int, SoftPUStats, Tensor, Tensor, Tensor], None]

# The widest span 2R of logits over which exp(ℓ − R) stays a normal number in each accumulation dtype (float32:
# e^-80 > 2^-126, with room for the sums; float64: e^-1400 > 2^-1022).
_BOUNDED_SPAN = {torch.float32: 80.0, torch.float64: 1400.0}


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


class _Layout(NamedTuple):
    """The inputs in the accumulation dtype, the candidates stacked as `[M·B_c, d]`, and the chunk buffer."""

    s: Tensor  # [B_a, d]
    z: Tensor  # [M·B_c, d]
    m: int
    b_c: int
    buf: Tensor  # [chunk_rows, M, B_c]


def _layout(anchors: Tensor, candidates: Tensor, chunk_rows: int) -> _Layout:
    acc = acc_dtype(anchors.dtype)
    s, z = anchors.to(acc).contiguous(), candidates.to(acc).contiguous()
    m, b_c, d = z.shape
    return _Layout(s, z.view(m * b_c, d), m, b_c, s.new_empty(min(chunk_rows, s.shape[0]), m, b_c))


def _stats_like(s: Tensor, m: int) -> SoftPUStats:
    """Empty `[M, B_a]` statistics: ref in float64, the others in the accumulation dtype of `s`."""
    return SoftPUStats(*(s.new_empty(m, s.shape[0], dtype=torch.float64 if name == "ref" else s.dtype)
                         for name in SoftPUStats._fields))


def _grad_buffers(lay: _Layout, needs_anchors: bool, needs_candidates: bool,
                  needs_temperature: bool) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
    """Empty gradients of the anchors, the stacked candidates and the rows' ∂L/∂τ shares, each only if asked."""
    return (torch.empty_like(lay.s) if needs_anchors else None,
            torch.empty_like(lay.z) if needs_candidates else None,
            lay.s.new_empty(lay.m, lay.s.shape[0]) if needs_temperature else None)


def _rows(t: Tensor | None, start: int, stop: int) -> Tensor | None:
    return None if t is None else t[:, start:stop]


def _dots(lay: _Layout, start: int, stop: int) -> Tensor:
    """The chunk's raw dots `[C, M, B_c]`, by one GEMM against the stacked candidates."""
    dots = lay.buf[: stop - start]
    torch.mm(lay.s[start:stop], lay.z.mT, out=dots.view(stop - start, lay.m * lay.b_c))
    return dots


def _grad_gemms(lay: _Layout, g: Tensor, start: int, stop: int, grad_s: Tensor | None, grad_z: Tensor | None,
                ) -> None:
    """`grad_s[start:stop] = G' @ z` and `grad_z += G'ᵀ @ s[start:stop]` for the chunk's G' `[C, M, B_c]`."""
    g2 = g.view(stop - start, lay.m * lay.b_c)
    if grad_s is not None:
        torch.mm(g2, lay.z, out=grad_s[start:stop])
    if grad_z is not None:
        if start == 0:
            torch.mm(g2.mT, lay.s[start:stop], out=grad_z)
        else:
            grad_z.addmm_(g2.mT, lay.s[start:stop])


def soft_pu_fwd_chunked(
    anchors: Tensor,  # [B_a, d]
    candidates: Tensor,  # [M, B_c, d]
    epilogue: FwdEpilogue,
    chunk_rows: int,
) -> SoftPUStats:
    """The soft-PU forward, chunk by chunk: one GEMM and one `epilogue` call per chunk.

    Args:
        anchors: `[B_a, d]`.
        candidates: `[M, B_c, d]`, same dtype and device.
        epilogue: the backend's fused pass, with the targets and options bound (see the module docstring).
        chunk_rows: anchors per chunk (see `chunk_rows_for`).

    Returns:
        `SoftPUStats`, each `[M, B_a]`: ref in float64, the others in the accumulation dtype.
    """
    lay = _layout(anchors, candidates, chunk_rows)
    stats = _stats_like(lay.s, lay.m)
    b_a = lay.s.shape[0]
    for start in _chunks(b_a, chunk_rows):
        stop = min(start + chunk_rows, b_a)
        epilogue(_dots(lay, start, stop), start, SoftPUStats(*(t[:, start:stop] for t in stats)))
    return stats


def soft_pu_grad_chunked(
    anchors: Tensor,  # [B_a, d]
    candidates: Tensor,  # [M, B_c, d]
    needs_anchors: bool,
    needs_candidates: bool,
    needs_temperature: bool,
    epilogue: GradEpilogue,
    chunk_rows: int,
) -> SoftPUGrads:
    """A backward pass, chunk by chunk: recompute the dots, let `epilogue(dots, first_anchor, grad_temperature)`
    turn them into ∂L/∂dots (and write the rows' `[M, C]` shares of ∂L/∂τ when given), then one GEMM per
    gradient asked for.

    Returns:
        `SoftPUGrads`: anchors `[B_a, d]`, candidates `[M, B_c, d]`, temperature `[M, B_a]` (its sum is
        ∂L/∂τ), each in the accumulation dtype, or None where not asked for.
    """
    if not (needs_anchors or needs_candidates or needs_temperature):
        return SoftPUGrads(None, None, None)
    lay = _layout(anchors, candidates, chunk_rows)
    b_a = lay.s.shape[0]
    grad_s, grad_z, grad_tau = _grad_buffers(lay, needs_anchors, needs_candidates, needs_temperature)
    for start in _chunks(b_a, chunk_rows):
        stop = min(start + chunk_rows, b_a)
        g = _dots(lay, start, stop)
        epilogue(g, start, _rows(grad_tau, start, stop))
        _grad_gemms(lay, g, start, stop, grad_s, grad_z)
    return SoftPUGrads(grad_s, None if grad_z is None else grad_z.view(candidates.shape), grad_tau)


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
    """The soft-PU backward (`soft_pu_grad_chunked`), with `epilogue` given each chunk's rows of the forward's
    statistics and of the upstream gradients.

    Returns:
        `SoftPUGrads` as `soft_pu_grad_chunked`.
    """
    acc = acc_dtype(anchors.dtype)
    stats = SoftPUStats(*(t.to(torch.float64 if name == "ref" else acc).contiguous()
                          for name, t in zip(SoftPUStats._fields, stats, strict=True)))
    g_lb, g_ulb = grad_lb.to(acc).contiguous(), grad_ulb.to(acc).contiguous()

    def rows(dots: Tensor, first_anchor: int, grad_tau: Tensor | None) -> None:
        stop = first_anchor + dots.shape[0]
        epilogue(dots, first_anchor, SoftPUStats(*(t[:, first_anchor:stop] for t in stats)),
                 g_lb[:, first_anchor:stop], g_ulb[:, first_anchor:stop], grad_tau)

    return soft_pu_grad_chunked(anchors, candidates, needs_anchors, needs_candidates, needs_temperature, rows,
                                chunk_rows)


def soft_pu_fwd_grad_chunked(
    anchors: Tensor,  # [B_a, d]
    candidates: Tensor,  # [M, B_c, d]
    needs_anchors: bool,
    needs_candidates: bool,
    needs_temperature: bool,
    epilogue: FwdGradEpilogue,
    chunk_rows: int,
) -> tuple[SoftPUStats, SoftPUGrads]:
    """The forward and the gradients of Σ_ij (lb + ulb), chunk by chunk: one GEMM for the dots, `epilogue`
    for the statistics and G/τ, then one GEMM per gradient asked for, while the chunk is still at hand.

    Returns:
        `(SoftPUStats, SoftPUGrads)` as `soft_pu_fwd_chunked` and `soft_pu_bwd_chunked` (with unit upstream
        gradients) return them.
    """
    lay = _layout(anchors, candidates, chunk_rows)
    stats = _stats_like(lay.s, lay.m)
    b_a = lay.s.shape[0]
    grad_s, grad_z, grad_tau = _grad_buffers(lay, needs_anchors, needs_candidates, needs_temperature)
    for start in _chunks(b_a, chunk_rows):
        stop = min(start + chunk_rows, b_a)
        g = _dots(lay, start, stop)
        epilogue(g, start, SoftPUStats(*(t[:, start:stop] for t in stats)), _rows(grad_tau, start, stop))
        _grad_gemms(lay, g, start, stop, grad_s, grad_z)
    return stats, SoftPUGrads(grad_s, None if grad_z is None else grad_z.view(candidates.shape), grad_tau)


def logit_bound(anchors: Tensor, candidates: Tensor, temperature: float) -> float | None:
    """R ≥ every |ℓ_jk| = |<s_j, z_k>|/τ (Cauchy-Schwarz: max ‖s‖ · max ‖z‖ / τ, with a margin for the GEMM's
    rounding), when exp(ℓ − R) stays a normal number over the whole span [−R, R] in the accumulation dtype;
    else None (and for NaN or infinite inputs).

    Then one shift serves every row and every column: the symmetric passes need one exp per pair, not two.
    L2-normalized features give R = 1/τ (CLIP: R = logit_scale, 14.3 at open_clip's start, 100 at its cap,
    where the bound no longer holds in float32).
    """
    acc = acc_dtype(anchors.dtype)
    norms = torch.linalg.vector_norm(anchors.to(torch.float64), dim=-1).max() * torch.linalg.vector_norm(
        candidates.to(torch.float64), dim=-1).max()
    bound = float(norms) / temperature * (1.0 + 2.0**-10) + 2.0**-10
    return bound if 2.0 * bound <= _BOUNDED_SPAN[acc] else None


def soft_pu_sym_fwd_chunked(
    anchors: Tensor,  # [B, d]
    candidates: Tensor,  # [M, B, d]
    epilogue: SymFwdEpilogue,
    chunk_rows: int,
    shift: float | None,
) -> tuple[SoftPUStats, Tensor, Tensor]:
    """The forward of symmetric InfoNCE (docs/math.md, "Symmetric InfoNCE in one pass"): one GEMM per chunk,
    and `epilogue(dots, first_anchor, out, row_lse, col_max, col_sum)` writes the rows' statistics (`out`, and
    their lse in float64 into the `[M, C]` view `row_lse`) and updates the running column statistics (`[M, B]`:
    col_max in the accumulation dtype from −inf, col_sum in float64 from 0; with a `shift` from
    `logit_bound`, col_sum sums exp(ℓ − shift) and col_max is not used).

    Returns:
        The rows' `SoftPUStats` (`[M, B]` each, as `soft_pu_fwd_chunked`), and the rows' and the columns'
        log-sum-exp `[M, B]` in float64 (the columns': the lse of the reverse direction's anchors).
    """
    m, b_c = candidates.shape[0], candidates.shape[1]
    acc = acc_dtype(anchors.dtype)
    row_lse = anchors.new_empty((m, anchors.shape[0]), dtype=torch.float64)
    col_max = anchors.new_full((m, b_c), -math.inf, dtype=acc)
    col_sum = anchors.new_zeros((m, b_c), dtype=torch.float64)

    def rows_and_columns(dots: Tensor, first_anchor: int, out: SoftPUStats) -> None:
        epilogue(dots, first_anchor, out, row_lse[:, first_anchor:first_anchor + dots.shape[0]], col_max, col_sum)

    stats = soft_pu_fwd_chunked(anchors, candidates, rows_and_columns, chunk_rows)
    if shift is not None:
        lse_col = shift + col_sum.log()
    else:
        top = col_max.to(torch.float64)
        # As torch.logsumexp: a column of −inf has lse −inf (its sum is 0); a NaN keeps the sum NaN.
        lse_col = torch.where(top.isneginf() & ~col_sum.isnan(), top, top + col_sum.log())
    return stats, row_lse, lse_col
