"""Triton kernels of the cosine reconstruction loss (SPEC §2): one row per loss term, `1 - cos²`.

For rows a, b of length d, with dot = <a, b>, na = |a|², nb = |b|², den = max(|a| |b|, 1e-8), c = dot / den:

    loss = 1 - c²
    ∂loss/∂a = -2c ∂c/∂a = -2c b / den + 2c² a / na      (the second term only when den is not clamped:
    ∂loss/∂b = -2c a / den + 2c² b / nb                   a clamped den does not depend on a or b)

so, with the upstream gradient g of the row, grad_a = K1 b + KA a and grad_b = K1 a + KB b where
K1 = -2 g c / den, KA = 2 g c² / na, KB = 2 g c² / nb: three row reductions, then one elementwise pass.

The op is memory-bound: the forward reads each input once; the backward reads each input once and writes
each gradient once when a row block fits in registers (SINGLE_D: d <= MAX_BLOCK_D), else it streams the rows
twice (the second read mostly hits L2). Arithmetic is fp32 whatever the input dtype; row offsets are int64
(N·d exceeds 2^31 at 256k rows of d = 16k).
"""

from __future__ import annotations

import triton
import triton.language as tl
from mkefast._build import triton_interpreted

__all__ = ["MAX_BLOCK_D", "_cosine_rec_bwd_kernel", "_cosine_rec_fwd_kernel"]

INTERPRET: bool = triton_interpreted()

# Widest feature block held in registers; wider rows are processed in MAX_BLOCK_D chunks.
MAX_BLOCK_D = 4096
EPS: tl.constexpr = tl.constexpr(1e-8)


def _row_configs() -> list[triton.Config]:
    """Autotuning space: rows per program and warps (one config under the interpreter)."""
    if INTERPRET:
        return [triton.Config({"BLOCK_R": 16}, num_warps=4)]
    return [triton.Config({"BLOCK_R": r}, num_warps=w) for r in (1, 2, 4, 8, 16) for w in (4, 8)]


def _prune(configs: list[triton.Config], named_args: dict, **kwargs: object) -> list[triton.Config]:
    """Keeps at most 16k elements per input tile (the rest would spill registers)."""
    block_d = int(kwargs["BLOCK_D"])  # type: ignore[call-overload]
    kept = [c for c in configs if c.kwargs["BLOCK_R"] * block_d <= 16384]
    return kept or configs[:1]


@triton.jit
def _row_sums(a_ptr, b_ptr, offs, row_ok, D, BLOCK_D: tl.constexpr):
    """(<a, b>, |a|², |b|²) of the rows at int64 element offsets `offs`, in fp32."""
    dot = tl.zeros((offs.shape[0],), dtype=tl.float32)
    na = tl.zeros((offs.shape[0],), dtype=tl.float32)
    nb = tl.zeros((offs.shape[0],), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        mask = row_ok[:, None] & (cols < D)[None, :]
        a = tl.load(a_ptr + offs[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + offs[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dot += tl.sum(a * b, axis=1)
        na += tl.sum(a * a, axis=1)
        nb += tl.sum(b * b, axis=1)
    return dot, na, nb


@triton.jit
def _cosine(dot, na, nb):
    """(c, den) with den = max(|a| |b|, 1e-8), the norms multiplied as the reference does."""
    den = tl.maximum(tl.sqrt(na) * tl.sqrt(nb), EPS)
    return dot / den, den


@triton.autotune(configs=_row_configs(), key=["D"], prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _cosine_rec_fwd_kernel(
    a_ptr,  # [N, d] reconstruction
    b_ptr,  # [N, d] target
    loss_ptr,  # [N] float32 out
    N, D,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < N
    dot, na, nb = _row_sums(a_ptr, b_ptr, rows.to(tl.int64) * D, row_ok, D, BLOCK_D)
    c, _ = _cosine(dot, na, nb)
    tl.store(loss_ptr + rows, 1.0 - c * c, mask=row_ok)


@triton.autotune(configs=_row_configs(), key=["D"], prune_configs_by={"early_config_prune": _prune})
@triton.jit
def _cosine_rec_bwd_kernel(
    a_ptr,  # [N, d] reconstruction
    b_ptr,  # [N, d] target
    grad_loss_ptr,  # [N] float32 upstream gradient of each row
    grad_a_ptr,  # [N, d] out (written only when NEED_A), the inputs' dtype
    grad_b_ptr,  # [N, d] out (written only when NEED_B)
    N, D,
    NEED_A: tl.constexpr, NEED_B: tl.constexpr, SINGLE_D: tl.constexpr,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_ok = rows < N
    offs = rows.to(tl.int64) * D
    cols = tl.arange(0, BLOCK_D)
    if SINGLE_D:
        # The whole rows stay in registers between the reductions and the gradients: one read of each input.
        mask = row_ok[:, None] & (cols < D)[None, :]
        a = tl.load(a_ptr + offs[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + offs[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dot = tl.sum(a * b, axis=1)
        na = tl.sum(a * a, axis=1)
        nb = tl.sum(b * b, axis=1)
    else:
        dot, na, nb = _row_sums(a_ptr, b_ptr, offs, row_ok, D, BLOCK_D)
    c, den = _cosine(dot, na, nb)
    g = tl.load(grad_loss_ptr + rows, mask=row_ok, other=0.0)
    k1 = -2.0 * g * c / den
    # A clamped den is a constant: only the -2c b / den term remains (and na or nb may be 0 there).
    free = tl.sqrt(na) * tl.sqrt(nb) > EPS
    g2 = 2.0 * g * c * c
    ka = tl.where(free, g2 / tl.where(free, na, 1.0), 0.0)
    kb = tl.where(free, g2 / tl.where(free, nb, 1.0), 0.0)
    for d0 in range(0, D, BLOCK_D):
        if not SINGLE_D:
            cols = d0 + tl.arange(0, BLOCK_D)
            mask = row_ok[:, None] & (cols < D)[None, :]
            a = tl.load(a_ptr + offs[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            b = tl.load(b_ptr + offs[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if NEED_A:
            grad_a = k1[:, None] * b + ka[:, None] * a
            tl.store(grad_a_ptr + offs[:, None] + cols[None, :], grad_a.to(grad_a_ptr.dtype.element_ty), mask=mask)
        if NEED_B:
            grad_b = k1[:, None] * a + kb[:, None] * b
            tl.store(grad_b_ptr + offs[:, None] + cols[None, :], grad_b.to(grad_b_ptr.dtype.element_ty), mask=mask)
