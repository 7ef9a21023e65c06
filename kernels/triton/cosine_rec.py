"""Triton kernels of the cosine reconstruction loss (docs/math.md, "Cosine reconstruction loss"): one row per
loss term, `1 - cos²`.

Scale-free. The loss of rows a, b does not change when either is scaled, but their norms overflow float32 at
|a| ≈ 1e19 and underflow at 1e-19. So each row is divided by its largest magnitude first, â = a / s_a,
b̂ = b / s_b (s = 1 for a zero row), and everything is formed from the scaled rows, whose norms lie in
[1, √d]; the 1e-8 floor of the denominator is divided by the same factors, f = (1e-8 / s_a) / s_b:

    dot = <â, b̂>,  na = |â|²,  nb = |b̂|²,  den = max(√na √nb, f),  c = dot / den
    loss = 1 - c²
    ∂loss/∂a = (1/s_a) (-2c b̂ / den + 2c² â / na)     (the second term only when den is not clamped:
    ∂loss/∂b = (1/s_b) (-2c â / den + 2c² b̂ / nb)      a clamped den does not depend on a or b)

so, with the upstream gradient g of the row, grad_a = K1a b̂ + KA â and grad_b = K1b â + KB b̂ with the row
factors K1a = -2 g c / (den s_a), K1b = -2 g c / (den s_b), KA = 2 g c² / (na s_a), KB = 2 g c² / (nb s_b),
formed in an order that underflows only where the gradient itself does. A row longer than one block is
reduced in one pass with a running maximum, as an online softmax keeps its running max: when a row's maximum
grows from s to s', the sums so far are rescaled by s/s' (dot) and (s/s')² (na, nb).

The op is memory-bound: the forward reads each input once; the backward reads each input once and writes
each gradient once when a row block fits in registers (SINGLE_D: d <= MAX_BLOCK_D), else it streams the rows
twice (the second read mostly hits L2). Arithmetic is fp32 whatever the input dtype; row offsets are int64
(N·d exceeds 2^31 at 256k rows of d = 16k).
"""

from __future__ import annotations

import triton
import triton.language as tl
from mkefast._build import triton_interpreted

from ._common import round_to

__all__ = ["MAX_BLOCK_D", "_cosine_rec_bwd_kernel", "_cosine_rec_fwd_kernel"]

INTERPRET: bool = triton_interpreted()

# Widest feature block held in registers; wider rows are processed in MAX_BLOCK_D chunks.
MAX_BLOCK_D = 4096
EPS: tl.constexpr = tl.constexpr(1e-8)
FLT_MIN: tl.constexpr = tl.constexpr(1.1754943508222875e-38)  # the smallest normal float32


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
def _nonzero(s):
    """The row scale s, or 1 for a zero row (which then stays zero)."""
    return tl.where(s > 0.0, s, 1.0)


@triton.jit
def _row_sums(a_ptr, b_ptr, offs, row_ok, D, BLOCK_D: tl.constexpr):
    """(<â, b̂>, |â|², |b̂|², s_a, s_b) of the rows at int64 element offsets `offs`, in fp32, in one pass.

    s_a, s_b are the rows' largest magnitudes (module docstring); the sums are rescaled whenever they grow.
    """
    dot = tl.zeros((offs.shape[0],), dtype=tl.float32)
    na = tl.zeros((offs.shape[0],), dtype=tl.float32)
    nb = tl.zeros((offs.shape[0],), dtype=tl.float32)
    ma = tl.zeros((offs.shape[0],), dtype=tl.float32)  # running max |a| (0 while the row was zero so far)
    mb = tl.zeros((offs.shape[0],), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        mask = row_ok[:, None] & (cols < D)[None, :]
        a = tl.load(a_ptr + offs[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + offs[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        ma_new = tl.maximum(ma, tl.max(tl.abs(a), axis=1))
        mb_new = tl.maximum(mb, tl.max(tl.abs(b), axis=1))
        sa = _nonzero(ma_new)
        sb = _nonzero(mb_new)
        # The sums so far are in units of the old maximum; they are all 0 while it is 0.
        ra = tl.where(ma > 0.0, ma / sa, 0.0)
        rb = tl.where(mb > 0.0, mb / sb, 0.0)
        a = a / sa[:, None]
        b = b / sb[:, None]
        dot = dot * (ra * rb) + tl.sum(a * b, axis=1)
        na = na * (ra * ra) + tl.sum(a * a, axis=1)
        nb = nb * (rb * rb) + tl.sum(b * b, axis=1)
        ma = ma_new
        mb = mb_new
    return dot, na, nb, _nonzero(ma), _nonzero(mb)


@triton.jit
def _cosine(dot, na, nb, sa, sb):
    """(c, den, free) with den = max(|â| |b̂|, f), the floor f = 1e-8 / (s_a s_b) in the scaled units, and free =
    [den is not clamped]; the norms are multiplied as the reference does.

    f underflows for a zero row against one near the format's maximum (s_a s_b > 1e30); the smallest normal
    number stands in for it there, which changes nothing but the 0 / 0: the numerator is 0 wherever it happens.
    """
    norms = tl.sqrt(na) * tl.sqrt(nb)
    floor = tl.maximum((EPS / sa) / sb, FLT_MIN)
    den = tl.maximum(norms, floor)
    return dot / den, den, norms > floor


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
    dot, na, nb, sa, sb = _row_sums(a_ptr, b_ptr, rows.to(tl.int64) * D, row_ok, D, BLOCK_D)
    c, _, _ = _cosine(dot, na, nb, sa, sb)
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
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr, INTERPRET: tl.constexpr,
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
        sa = _nonzero(tl.max(tl.abs(a), axis=1))
        sb = _nonzero(tl.max(tl.abs(b), axis=1))
        a = a / sa[:, None]
        b = b / sb[:, None]
        dot = tl.sum(a * b, axis=1)
        na = tl.sum(a * a, axis=1)
        nb = tl.sum(b * b, axis=1)
    else:
        dot, na, nb, sa, sb = _row_sums(a_ptr, b_ptr, offs, row_ok, D, BLOCK_D)
    c, den, free = _cosine(dot, na, nb, sa, sb)
    g = tl.load(grad_loss_ptr + rows, mask=row_ok, other=0.0)
    # The row factors with 1/s_a, 1/s_b folded in, in an order that underflows only where the gradient itself
    # does: with the floor active, den is huge and c tiny (rows ~1e-15: c ~ 1e-22, den ~ 1e22, gradient ~ 1e-29),
    # and den s_a = 1e-8 / s_b there, so -2 g c / (den s_a) stays in range where -2 g c / den would not.
    k = -2.0 * g * c
    k1a = k / (den * sa)
    k1b = k / (den * sb)
    # A clamped den is a constant: only the -2c b̂ / den term remains (and na or nb may be 0 there).
    g2 = -k * c
    ka = tl.where(free, g2 / (tl.where(free, na, 1.0) * sa), 0.0)
    kb = tl.where(free, g2 / (tl.where(free, nb, 1.0) * sb), 0.0)
    for d0 in range(0, D, BLOCK_D):
        if not SINGLE_D:
            cols = d0 + tl.arange(0, BLOCK_D)
            mask = row_ok[:, None] & (cols < D)[None, :]
            a = tl.load(a_ptr + offs[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32) / sa[:, None]
            b = tl.load(b_ptr + offs[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32) / sb[:, None]
        if NEED_A:
            grad_a = k1a[:, None] * b + ka[:, None] * a
            out = round_to(grad_a, grad_a_ptr.dtype.element_ty, INTERPRET)
            tl.store(grad_a_ptr + offs[:, None] + cols[None, :], out, mask=mask)
        if NEED_B:
            grad_b = k1b[:, None] * a + kb[:, None] * b
            out = round_to(grad_b, grad_b_ptr.dtype.element_ty, INTERPRET)
            tl.store(grad_b_ptr + offs[:, None] + cols[None, :], out, mask=mask)
