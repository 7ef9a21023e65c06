"""Triton kernels of the soft-PU contrastive loss (SPEC §1): flash-style tiles over the anchor × candidate pairs.

Notation: anchor j (row of `fused`, `[B_a, d]`) is sample J = row_offset + j of the batch; candidate k is
row k of `unimodal[i]` (`[M, B, d]`); ℓ_jk = <s_j, z_k> / τ. No kernel ever holds more than one
`[BLOCK_M, BLOCK_N]` tile of ℓ: every pass streams over the other index and keeps O(BLOCK) statistics.

Base-2 logits. Every tile works on u_jk = ℓ_jk · log2(e), so that the hot exponentials are `exp2` (one MUFU
instruction) and the scale 1/τ folds into the same multiply: u = <s, z> · (log2(e) / τ). Natural-unit
results are recovered once per row (× ln 2).

Masks. They are rebuilt per tile from O(B) arrays (class id `cls`, -1 = no class, and the `labeled` flag):

    P11(j, k) = lab[J] & lab[k] & cls[J] == cls[k]
    P10(j, k) = !(lab[J] & lab[k]) & (k == J | (cls[J] >= 0 & cls[k] == cls[J]))

Their sizes n11, n10 come precomputed per sample. Masked-out candidates (k >= B, the ragged edge of the last
tile) get u = -inf, which gives p = 0 and w = 0 and fails every mask test below.

Forward (`_soft_pu_fwd_kernel`, grid = (anchor blocks, M)). With nll_jk = lse_j - ℓ_jk:

    lb_j  = (1/n11) Σ_{P11} (lse_j - ℓ_jk)              = lse_j - S11_j / n11
    ulb_j = (1/n10) Σ_{P10} w_jk (lse_j - ℓ_jk)         = (W_j lse_j - WL_j) / n10
    S11_j = Σ_{P11} ℓ_jk,   W_j = Σ_{P10} w_jk,   WL_j = Σ_{P10} w_jk ℓ_jk

lse_j is only known after the last tile, but it factors out of both sums, so one pass accumulates S11, W, WL
beside the online log-sum-exp (running max m and Σ exp2(u - m), rescaled by exp2(m_old - m_new) whenever the
max grows, as in flash attention). This needs w_jk while streaming, i.e. the reference r_j before the pass:
w and r are constants of the loss (no gradient flows through them, SPEC §1), so they can be computed by
anything, beforehand. In "logit" space r_j is an O(B·d) computation on the host
(`mkefast.ops._common.logit_references`). In "phi" space r_j = mean_{P11} exp(ℓ_jk) needs the pairs, so
`_soft_pu_phi_ref_kernel` computes it in a pre-pass over the *labeled* candidates only (P11 ⊆ labeled),
which the host lists first by a stable sort; the unlabeled anchors take exp(ℓ_jj) from a row-wise dot.

RBF weight in base 2: w = exp(-(x - r)² / (2σ²)) = exp2(RBF_COEF · (x' - r')²), where in "logit" space
x' = u, r' = r · log2(e) and RBF_COEF = -ln(2) / (2σ²); in "phi" space x' = exp2(u) = exp(ℓ), r' = r and
RBF_COEF = -log2(e) / (2σ²). σ = inf is the compile-time case RBF = False: w = 1 on P10.

Backward. With p_jk = exp(ℓ_jk - lse_j) and upstream gradients g_lb, g_ulb of each anchor's terms,

    G_jk = ∂L/∂ℓ_jk = g_lb (A11 p_jk - [P11]/n11) + g_ulb (A10 p_jk - w_jk [P10]/n10),
    A11 = [n11 > 0],  A10 = W_j / n10 = a_ulb_j (saved by the forward),

so G_jk = CP_j p_jk - C11_j [P11] - C10_j w_jk [P10] with per-row constants CP = g_lb A11 + g_ulb a_ulb,
C11 = g_lb / n11, C10 = g_ulb / n10 computed on the host (no division inside a tile). Then

    ∂L/∂s_j = (1/τ) Σ_k G_jk z_k      (summed over the modalities)
    ∂L/∂z_k = (1/τ) Σ_j G_jk s_j      (per modality)

Each tile recomputes ℓ (one MMA), forms G elementwise and feeds it, rounded to the input dtype, to a second
MMA. The deterministic default uses two kernels that each own their output rows and write them once:
`_soft_pu_bwd_rows_kernel` (grid = anchor blocks × d blocks, loops over modalities and candidates) and
`_soft_pu_bwd_cols_kernel` (grid = candidate blocks × M × d blocks, loops over anchors; it computes the tile
transposed, [candidates, anchors], so that its reduction runs along the tile's rows too). The optional
`_soft_pu_bwd_atomic_kernel` does both in one sweep (ℓ recomputed once instead of twice) and adds its
anchor-gradient partials into an fp32 buffer with atomics: faster, but the order of the additions, hence the
last bits, vary from run to run.

Feature blocks. ℓ is accumulated over d in BLOCK_D chunks, so any d works; when one chunk covers d
(SINGLE_D), the tile of the streamed-over side's fixed operand is loaded once, before the loop. A kernel that
writes a gradient `[rows, d]` owns one BLOCK_D-wide column block of it (program axis "d blocks").

Precision. Operands go to `tl.dot` in their own dtype (bf16/fp16 on the tensor cores) with fp32 accumulation;
fp32 operands use `input_precision="ieee"` (exact fp32, no TF32). All statistics are fp32. Under the
interpreter (INTERPRET) the operands are upcast to fp32 first, because its bf16 `dot` is wrong; G is still
rounded to the input dtype first, so the interpreter reproduces the GPU's rounding.

Offsets. M·B·d exceeds 2^31 for large batches (B = 2^20, d = 256, M = 9), so every row offset is formed in
int64 before the multiplication by d.
"""

from __future__ import annotations

import triton
import triton.language as tl
from mkefast._build import triton_interpreted

__all__ = [
    "INTERPRET",
    "_soft_pu_bwd_atomic_kernel",
    "_soft_pu_bwd_cols_kernel",
    "_soft_pu_bwd_rows_kernel",
    "_soft_pu_fwd_kernel",
    "_soft_pu_phi_ref_kernel",
]

# Fixed when this module is imported: `triton.jit` picks the interpreter at decoration time, too.
INTERPRET: bool = triton_interpreted()

LN2: tl.constexpr = tl.constexpr(0.6931471805599453)


def _tile_configs() -> list[triton.Config]:
    """Autotuning space of the pair kernels: one config under the interpreter (nothing to time there)."""
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 64, "BLOCK_N": 64}, num_warps=4, num_stages=1)]
    # The small asymmetric tiles are for the backward at d = 256, whose [tile, d] fp32 accumulator and ℓ tile
    # exceed the register file at 64 x 64 (ptxas reports spills there; the autotuner weighs that against size).
    shapes = [(128, 128, 8, 2), (128, 128, 8, 3), (128, 64, 4, 3), (128, 64, 8, 3), (128, 64, 8, 4),
              (64, 128, 4, 3), (64, 128, 8, 3), (64, 64, 4, 3), (64, 64, 4, 4), (64, 64, 8, 2),
              (32, 64, 4, 3), (64, 32, 4, 3)]
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s) for bm, bn, w, s in shapes]


_KEY = ["B_A", "B", "D"]


@triton.jit
def _mma(a, b, acc, DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr):
    """acc + a @ b with fp32 accumulation (operands upcast under the interpreter, whose bf16 dot is wrong)."""
    if INTERPRET:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(a, b, acc, input_precision=DOT_PRECISION)


@triton.jit
def _dot_rows(a_base, a_rows, a_ok, b_base, b_rows, b_ok, D, BLOCK_D: tl.constexpr,
              DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr):
    """Σ_d a[r, d] b[c, d] for the `[len(a_rows), len(b_rows)]` tile, looping over d in BLOCK_D chunks.

    a_rows / b_rows are int64 element offsets of the rows (row index × D).
    """
    acc = tl.zeros((a_rows.shape[0], b_rows.shape[0]), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        col_ok = cols < D
        a = tl.load(a_base + a_rows[:, None] + cols[None, :], mask=a_ok[:, None] & col_ok[None, :], other=0.0)
        b = tl.load(b_base + b_rows[:, None] + cols[None, :], mask=b_ok[:, None] & col_ok[None, :], other=0.0)
        acc = _mma(a, tl.trans(b), acc, DOT_PRECISION, INTERPRET)
    return acc


@triton.jit
def _pair_masks(anchor, cls_j, lab_j, cand, cls_k, lab_k):
    """(P11, P10) of the pairs; every argument is broadcast to the tile's shape (either orientation)."""
    same = cls_j == cls_k
    both = lab_j & lab_k
    p11 = both & same
    p10 = (both == 0) & ((cand == anchor) | (same & (cls_j >= 0)))
    return p11, p10


@triton.jit
def _rbf_weight(u, ref, rbf_coef, PHI: tl.constexpr):
    """exp(-(x - r)² / (2σ²)) in base 2 (see the module docstring); u = ℓ log2(e), ref in the kernel's units."""
    dx = tl.exp2(u) - ref if PHI else u - ref
    return tl.exp2(dx * dx * rbf_coef)


@triton.jit
def _pair_grad(u, lse_u, cp, c11, c10, ref, p11, p10, rbf_coef, RBF: tl.constexpr, PHI: tl.constexpr):
    """G = ∂L/∂ℓ on the tile: CP p - C11 [P11] - C10 w [P10], with p = exp2(u - lse·log2(e))."""
    g = cp * tl.exp2(u - lse_u) - tl.where(p11, c11, 0.0)
    if RBF:
        g -= tl.where(p10, c10 * _rbf_weight(u, ref, rbf_coef, PHI), 0.0)
    else:
        g -= tl.where(p10, c10, 0.0)
    return g


@triton.jit
def _load_anchors(cls_ptr, lab_ptr, rows, row_ok, row_offset):
    """Sample index J, class and labeled flag of the anchors `rows`.

    Masked rows get J = -1 (no diagonal pair), no class and no label, so that every pair of theirs is masked.
    """
    anchor = tl.where(row_ok, rows + row_offset, -1)
    cls_j = tl.load(cls_ptr + anchor, mask=row_ok, other=-1)
    lab_j = tl.load(lab_ptr + anchor, mask=row_ok, other=0) != 0
    return anchor, cls_j, lab_j


@triton.jit
def _load_candidates(cls_ptr, lab_ptr, cols, col_ok):
    # Class -2 matches no anchor (anchors hold >= -1): masked candidates fail every mask test.
    cls_k = tl.load(cls_ptr + cols, mask=col_ok, other=-2)
    lab_k = tl.load(lab_ptr + cols, mask=col_ok, other=0) != 0
    return cls_k, lab_k


@triton.autotune(configs=_tile_configs(), key=_KEY)
@triton.jit
def _soft_pu_phi_ref_kernel(
    s_ptr,  # [B_a, d] anchors
    z_ptr,  # [M, B, d] candidates
    cls_ptr,  # [B] int32 class ids (-1: none)
    lab_ptr,  # [B] uint8 labeled flags
    n11_ptr,  # [B] float32 |P11|
    lab_idx_ptr,  # [B] int32: the labeled candidates first (stable order), then the others
    n_lab_ptr,  # [1] int32: how many candidates are labeled
    ref_ptr,  # [M, B_a] float32 out: r_j = mean_{P11} exp(ℓ_jk), or exp(ℓ_jj) when P11(j) is empty
    B_A, B, D, row_offset,
    qk_scale,  # log2(e) / τ
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    mod = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < B_A
    anchor, cls_j, lab_j = _load_anchors(cls_ptr, lab_ptr, rows, row_ok, row_offset)
    z_base = z_ptr + mod * B * D
    s_rows = rows.to(tl.int64) * D
    # P11 ⊆ labeled candidates: only the first n_lab entries of lab_idx can contribute.
    n_lab = tl.load(n_lab_ptr)
    phi_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, n_lab, BLOCK_N):
        slot = k0 + tl.arange(0, BLOCK_N)
        slot_ok = slot < n_lab
        cand = tl.load(lab_idx_ptr + slot, mask=slot_ok, other=0)
        cls_k = tl.load(cls_ptr + cand, mask=slot_ok, other=-2)
        u = _dot_rows(s_ptr, s_rows, row_ok, z_base, cand.to(tl.int64) * D, slot_ok, D, BLOCK_D,
                      DOT_PRECISION, INTERPRET) * qk_scale
        p11 = lab_j[:, None] & (cls_j[:, None] == cls_k[None, :])
        phi_sum += tl.sum(tl.where(p11, tl.exp2(u), 0.0), axis=1)
    # ℓ_jj as a row-wise dot of s_j with its own candidate z_J.
    diag = tl.zeros((BLOCK_M,), dtype=tl.float32)
    z_rows = anchor.to(tl.int64) * D
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        mask = row_ok[:, None] & (cols < D)[None, :]
        s = tl.load(s_ptr + s_rows[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        z = tl.load(z_base + z_rows[:, None] + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        diag += tl.sum(s * z, axis=1)
    n11 = tl.load(n11_ptr + anchor, mask=row_ok, other=0.0)
    ref = tl.where(n11 > 0, phi_sum / tl.maximum(n11, 1.0), tl.exp2(diag * qk_scale))
    tl.store(ref_ptr + mod * B_A + rows, ref, mask=row_ok)


@triton.autotune(configs=_tile_configs(), key=_KEY)
@triton.jit
def _soft_pu_fwd_kernel(
    s_ptr,  # [B_a, d] anchors
    z_ptr,  # [M, B, d] candidates
    cls_ptr,  # [B] int32 class ids (-1: none)
    lab_ptr,  # [B] uint8 labeled flags
    n11_ptr,  # [B] float32 |P11|
    n10_ptr,  # [B] float32 |P10|
    ref_ptr,  # [M, B_a] float32 r_j in the kernel's units (logit: × log2(e); phi: as is)
    lb_ptr,  # [M, B_a] float32 out
    ulb_ptr,  # [M, B_a] float32 out
    lse_ptr,  # [M, B_a] float32 out (natural log)
    a_ulb_ptr,  # [M, B_a] float32 out: W / n10
    B_A, B, D, row_offset,
    qk_scale,  # log2(e) / τ
    rbf_coef,  # see the module docstring
    RBF: tl.constexpr, PHI: tl.constexpr, SINGLE_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    mod = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < B_A
    anchor, cls_j, lab_j = _load_anchors(cls_ptr, lab_ptr, rows, row_ok, row_offset)
    stat = mod * B_A + rows
    ref = tl.load(ref_ptr + stat, mask=row_ok, other=0.0)
    z_base = z_ptr + mod * B * D
    s_rows = rows.to(tl.int64) * D
    d_cols = tl.arange(0, BLOCK_D)
    if SINGLE_D:
        s_tile = tl.load(s_ptr + s_rows[:, None] + d_cols[None, :], mask=row_ok[:, None] & (d_cols < D)[None, :],
                         other=0.0)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)  # running max of u (base-2 logits)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)  # Σ exp2(u - m_i)
    s11 = tl.zeros((BLOCK_M,), dtype=tl.float32)  # Σ_{P11} u
    w_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)  # Σ_{P10} w
    wu = tl.zeros((BLOCK_M,), dtype=tl.float32)  # Σ_{P10} w u
    for k0 in range(0, B, BLOCK_N):
        cols = k0 + tl.arange(0, BLOCK_N)
        col_ok = cols < B
        z_rows = cols.to(tl.int64) * D
        if SINGLE_D:
            z_tile = tl.load(z_base + z_rows[:, None] + d_cols[None, :],
                             mask=col_ok[:, None] & (d_cols < D)[None, :], other=0.0)
            acc = _mma(s_tile, tl.trans(z_tile), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32),
                       DOT_PRECISION, INTERPRET)
        else:
            acc = _dot_rows(s_ptr, s_rows, row_ok, z_base, z_rows, col_ok, D, BLOCK_D, DOT_PRECISION, INTERPRET)
        u = tl.where(col_ok[None, :], acc * qk_scale, float("-inf"))

        # Online log-sum-exp: rescale the running sum whenever the row max grows.
        m_new = tl.maximum(m_i, tl.max(u, axis=1))
        l_i = l_i * tl.exp2(m_i - m_new) + tl.sum(tl.exp2(u - m_new[:, None]), axis=1)
        m_i = m_new

        cls_k, lab_k = _load_candidates(cls_ptr, lab_ptr, cols, col_ok)
        p11, p10 = _pair_masks(anchor[:, None], cls_j[:, None], lab_j[:, None], cols[None, :], cls_k[None, :],
                               lab_k[None, :])
        s11 += tl.sum(tl.where(p11, u, 0.0), axis=1)
        w = tl.where(p10, _rbf_weight(u, ref[:, None], rbf_coef, PHI), 0.0) if RBF else p10.to(tl.float32)
        w_sum += tl.sum(w, axis=1)
        # Not w * u: u = -inf on masked candidates, where w = 0.
        wu += tl.sum(w * tl.where(p10, u, 0.0), axis=1)

    lse = (m_i + tl.log2(l_i)) * LN2
    n11 = tl.load(n11_ptr + anchor, mask=row_ok, other=0.0)
    n10 = tl.load(n10_ptr + anchor, mask=row_ok, other=0.0)
    inv10 = 1.0 / tl.maximum(n10, 1.0)
    lb = tl.where(n11 > 0, lse - s11 * LN2 / tl.maximum(n11, 1.0), 0.0)
    ulb = tl.where(n10 > 0, (w_sum * lse - wu * LN2) * inv10, 0.0)
    tl.store(lb_ptr + stat, lb, mask=row_ok)
    tl.store(ulb_ptr + stat, ulb, mask=row_ok)
    tl.store(lse_ptr + stat, lse, mask=row_ok)
    tl.store(a_ulb_ptr + stat, w_sum * inv10, mask=row_ok)


@triton.autotune(configs=_tile_configs(), key=_KEY)
@triton.jit
def _soft_pu_bwd_rows_kernel(
    s_ptr,  # [B_a, d] anchors
    z_ptr,  # [M, B, d] candidates
    cls_ptr,  # [B] int32 class ids (-1: none)
    lab_ptr,  # [B] uint8 labeled flags
    lse_ptr,  # [M, B_a] float32 lse · log2(e)
    cp_ptr,  # [M, B_a] float32 CP
    c11_ptr,  # [M, B_a] float32 C11
    c10_ptr,  # [M, B_a] float32 C10
    ref_ptr,  # [M, B_a] float32 r_j in the kernel's units
    grad_s_ptr,  # [B_a, d] out, the dtype of the anchors
    M, B_A, B, D, row_offset,
    qk_scale,  # log2(e) / τ
    rbf_coef,
    inv_temp,  # 1 / τ
    RBF: tl.constexpr, PHI: tl.constexpr, SINGLE_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < B_A
    anchor, cls_j, lab_j = _load_anchors(cls_ptr, lab_ptr, rows, row_ok, row_offset)
    s_rows = rows.to(tl.int64) * D
    d_out = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = d_out < D
    if SINGLE_D:
        s_tile = tl.load(s_ptr + s_rows[:, None] + d_out[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)

    # One accumulator for every modality: the anchors' gradient is written once, in a fixed order.
    z_stride = tl.cast(B, tl.int64) * D  # B may be specialized to a constexpr (B = 1): cast, not .to
    grad = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for mod in range(0, M):
        stat = mod * B_A + rows
        lse_u = tl.load(lse_ptr + stat, mask=row_ok, other=0.0)
        cp = tl.load(cp_ptr + stat, mask=row_ok, other=0.0)
        c11 = tl.load(c11_ptr + stat, mask=row_ok, other=0.0)
        c10 = tl.load(c10_ptr + stat, mask=row_ok, other=0.0)
        ref = tl.load(ref_ptr + stat, mask=row_ok, other=0.0)
        z_base = z_ptr + mod * z_stride
        for k0 in range(0, B, BLOCK_N):
            cols = k0 + tl.arange(0, BLOCK_N)
            col_ok = cols < B
            z_rows = cols.to(tl.int64) * D
            z_out = tl.load(z_base + z_rows[:, None] + d_out[None, :], mask=col_ok[:, None] & d_ok[None, :],
                            other=0.0)
            if SINGLE_D:
                acc = _mma(s_tile, tl.trans(z_out), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32),
                           DOT_PRECISION, INTERPRET)
            else:
                acc = _dot_rows(s_ptr, s_rows, row_ok, z_base, z_rows, col_ok, D, BLOCK_D, DOT_PRECISION, INTERPRET)
            u = tl.where(col_ok[None, :], acc * qk_scale, float("-inf"))
            cls_k, lab_k = _load_candidates(cls_ptr, lab_ptr, cols, col_ok)
            p11, p10 = _pair_masks(anchor[:, None], cls_j[:, None], lab_j[:, None], cols[None, :], cls_k[None, :],
                                   lab_k[None, :])
            g = _pair_grad(u, lse_u[:, None], cp[:, None], c11[:, None], c10[:, None], ref[:, None], p11, p10,
                           rbf_coef, RBF, PHI)
            grad = _mma(g.to(z_out.dtype), z_out, grad, DOT_PRECISION, INTERPRET)
    out = grad_s_ptr + s_rows[:, None] + d_out[None, :]
    tl.store(out, (grad * inv_temp).to(grad_s_ptr.dtype.element_ty), mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _transposed_tile(s_ptr, s_chunk, z_tile, z_base, z_rows, col_ok, s_rows, row_ok, D, cls_ptr, lab_ptr, cols, cls_k,
                     lab_k, rows, row_offset, lse_ptr, cp_ptr, c11_ptr, c10_ptr, ref_ptr, stat, qk_scale, rbf_coef,
                     RBF: tl.constexpr, PHI: tl.constexpr, SINGLE_D: tl.constexpr, BLOCK_D: tl.constexpr,
                     DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr):
    """Gᵀ on the `[candidates, anchors]` tile of the column-parallel kernels (anchor vectors broadcast on axis 0).

    s_chunk / z_tile are the caller's d-block of the anchors / candidates: the whole rows when SINGLE_D.
    """
    anchor, cls_j, lab_j = _load_anchors(cls_ptr, lab_ptr, rows, row_ok, row_offset)
    lse_u = tl.load(lse_ptr + stat, mask=row_ok, other=0.0)
    cp = tl.load(cp_ptr + stat, mask=row_ok, other=0.0)
    c11 = tl.load(c11_ptr + stat, mask=row_ok, other=0.0)
    c10 = tl.load(c10_ptr + stat, mask=row_ok, other=0.0)
    ref = tl.load(ref_ptr + stat, mask=row_ok, other=0.0)
    if SINGLE_D:
        acc = _mma(z_tile, tl.trans(s_chunk), tl.zeros((z_rows.shape[0], rows.shape[0]), dtype=tl.float32),
                   DOT_PRECISION, INTERPRET)
    else:
        acc = _dot_rows(z_base, z_rows, col_ok, s_ptr, s_rows, row_ok, D, BLOCK_D, DOT_PRECISION, INTERPRET)
    # Masked anchors load zero statistics, hence G = 0 there; masked candidates need u = -inf.
    u = tl.where(col_ok[:, None], acc * qk_scale, float("-inf"))
    p11, p10 = _pair_masks(anchor[None, :], cls_j[None, :], lab_j[None, :], cols[:, None], cls_k[:, None],
                           lab_k[:, None])
    return _pair_grad(u, lse_u[None, :], cp[None, :], c11[None, :], c10[None, :], ref[None, :], p11, p10, rbf_coef,
                      RBF, PHI)


@triton.autotune(configs=_tile_configs(), key=_KEY)
@triton.jit
def _soft_pu_bwd_cols_kernel(
    s_ptr,  # [B_a, d] anchors
    z_ptr,  # [M, B, d] candidates
    cls_ptr,  # [B] int32 class ids (-1: none)
    lab_ptr,  # [B] uint8 labeled flags
    lse_ptr,  # [M, B_a] float32 lse · log2(e)
    cp_ptr,  # [M, B_a] float32 CP
    c11_ptr,  # [M, B_a] float32 C11
    c10_ptr,  # [M, B_a] float32 C10
    ref_ptr,  # [M, B_a] float32 r_j in the kernel's units
    grad_z_ptr,  # [M, B, d] out, the dtype of the candidates
    B_A, B, D, row_offset,
    qk_scale, rbf_coef, inv_temp,
    RBF: tl.constexpr, PHI: tl.constexpr, SINGLE_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    mod = tl.program_id(1).to(tl.int64)
    pid_d = tl.program_id(2)
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < B
    cls_k, lab_k = _load_candidates(cls_ptr, lab_ptr, cols, col_ok)
    z_base = z_ptr + mod * B * D
    z_rows = cols.to(tl.int64) * D
    d_out = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = d_out < D
    z_tile = tl.load(z_base + z_rows[:, None] + d_out[None, :], mask=col_ok[:, None] & d_ok[None, :], other=0.0)

    grad = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for j0 in range(0, B_A, BLOCK_M):
        rows = j0 + tl.arange(0, BLOCK_M)
        row_ok = rows < B_A
        s_rows = rows.to(tl.int64) * D
        s_out = tl.load(s_ptr + s_rows[:, None] + d_out[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        g_t = _transposed_tile(s_ptr, s_out, z_tile, z_base, z_rows, col_ok, s_rows, row_ok, D, cls_ptr, lab_ptr,
                               cols, cls_k, lab_k, rows, row_offset, lse_ptr, cp_ptr, c11_ptr, c10_ptr, ref_ptr,
                               mod * B_A + rows, qk_scale, rbf_coef, RBF, PHI, SINGLE_D, BLOCK_D, DOT_PRECISION,
                               INTERPRET)
        grad = _mma(g_t.to(s_out.dtype), s_out, grad, DOT_PRECISION, INTERPRET)
    out = grad_z_ptr + mod * B * D + z_rows[:, None] + d_out[None, :]
    tl.store(out, (grad * inv_temp).to(grad_z_ptr.dtype.element_ty), mask=col_ok[:, None] & d_ok[None, :])


@triton.autotune(configs=_tile_configs(), key=_KEY, reset_to_zero=["grad_s_ptr"])
@triton.jit
def _soft_pu_bwd_atomic_kernel(
    s_ptr,  # [B_a, d] anchors
    z_ptr,  # [M, B, d] candidates
    cls_ptr,  # [B] int32 class ids (-1: none)
    lab_ptr,  # [B] uint8 labeled flags
    lse_ptr,  # [M, B_a] float32 lse · log2(e)
    cp_ptr,  # [M, B_a] float32 CP
    c11_ptr,  # [M, B_a] float32 C11
    c10_ptr,  # [M, B_a] float32 C10
    ref_ptr,  # [M, B_a] float32 r_j in the kernel's units
    grad_s_ptr,  # [B_a, d] float32 out, zero-filled: atomically accumulated over candidate blocks and modalities
    grad_z_ptr,  # [M, B, d] out, the dtype of the candidates
    B_A, B, D, row_offset,
    qk_scale, rbf_coef, inv_temp,
    RBF: tl.constexpr, PHI: tl.constexpr, SINGLE_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    mod = tl.program_id(1).to(tl.int64)
    pid_d = tl.program_id(2)
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < B
    cls_k, lab_k = _load_candidates(cls_ptr, lab_ptr, cols, col_ok)
    z_base = z_ptr + mod * B * D
    z_rows = cols.to(tl.int64) * D
    d_out = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_ok = d_out < D
    z_tile = tl.load(z_base + z_rows[:, None] + d_out[None, :], mask=col_ok[:, None] & d_ok[None, :], other=0.0)

    grad = tl.zeros((BLOCK_N, BLOCK_D), dtype=tl.float32)
    for j0 in range(0, B_A, BLOCK_M):
        rows = j0 + tl.arange(0, BLOCK_M)
        row_ok = rows < B_A
        s_rows = rows.to(tl.int64) * D
        s_out = tl.load(s_ptr + s_rows[:, None] + d_out[None, :], mask=row_ok[:, None] & d_ok[None, :], other=0.0)
        g_t = _transposed_tile(s_ptr, s_out, z_tile, z_base, z_rows, col_ok, s_rows, row_ok, D, cls_ptr, lab_ptr,
                               cols, cls_k, lab_k, rows, row_offset, lse_ptr, cp_ptr, c11_ptr, c10_ptr, ref_ptr,
                               mod * B_A + rows, qk_scale, rbf_coef, RBF, PHI, SINGLE_D, BLOCK_D, DOT_PRECISION,
                               INTERPRET)
        g_low = g_t.to(s_out.dtype)
        grad = _mma(g_low, s_out, grad, DOT_PRECISION, INTERPRET)
        partial = _mma(tl.trans(g_low), z_tile, tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32), DOT_PRECISION,
                       INTERPRET)
        tl.atomic_add(grad_s_ptr + s_rows[:, None] + d_out[None, :], partial * inv_temp,
                      mask=row_ok[:, None] & d_ok[None, :], sem="relaxed")
    out = grad_z_ptr + mod * B * D + z_rows[:, None] + d_out[None, :]
    tl.store(out, (grad * inv_temp).to(grad_z_ptr.dtype.element_ty), mask=col_ok[:, None] & d_ok[None, :])
