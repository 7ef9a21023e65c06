"""Triton kernels of the soft-PU contrastive op (docs/math.md, "The general op"): flash-style tiles over the
anchor × candidate pairs of one direction.

Notation: anchor j is row j of `anchors` (`[B_a, d]`), candidate k is row k of `candidates[i]` (`[M, B_c, d]`),
ℓ_jk = <s_j, z_k> / τ. Anchor j's instance partner is candidate j + diag_offset when that is < B_c (none
otherwise). No kernel ever holds more than one `[BLOCK_M, BLOCK_N]` tile of ℓ: every pass streams over the
other index and keeps O(BLOCK) statistics.

Base-2 logits. Every tile works on u_jk = ℓ_jk · log2(e), so that the hot exponentials are `exp2` (one MUFU
instruction) and the scale 1/τ folds into the same multiply: u = <s, z> · (log2(e) / τ). Natural-unit results
are recovered once per row (× ln 2). The RBF reference enters the kernels in the same units, ρ_u = ρ · log2(e),
rounded once to float32 by the host from the float64 ρ that the forward returns (docs/math.md, "Numerics"):
forward and backward both derive it from that one stored value, so every weight is recomputed bit for bit.

Masks. They are rebuilt per tile from O(B) arrays: the class id (-1: none) and labeled flag of each candidate
(`cls`, `lab`, `[B_c]`) and of each anchor (`a_cls`, `a_lab`, `[B_a]`), with diag(j, k) = (k == partner(j)):

    P11(j, k) = a_lab[j] & lab[k] & a_cls[j] == cls[k]
    P10(j, k) = !(a_lab[j] & lab[k]) & (diag(j, k) | (a_cls[j] >= 0 & cls[k] == a_cls[j]))

With EXCLUDE_DIAGONAL the partner pair leaves P11, P10 and the denominator (its u is replaced by -inf in the
log-sum-exp). Their sizes n11, n10 (after that exclusion) come precomputed per anchor. Masked-out candidates
(k >= B_c, the ragged edge of the last tile) load class -2 and no label, so they fail every mask test, and
u = -inf in the log-sum-exp; masked-out anchors have no partner, no class and no label.

Forward (`_soft_pu_fwd_kernel`, grid = (anchor blocks, M)). docs/math.md, "Terms":

    lb_j  = (1/n11) Σ_{P11} (lse_j - ℓ_jk)              = lse_j - S11_j / n11
    ulb_j = (1/n10) Σ_{P10} w_jk (lse_j - ℓ_jk)         = (W_j lse_j - WL_j) / n10
    S11_j = Σ_{P11} ℓ_jk,   W_j = Σ_{P10} w_jk,   WL_j = Σ_{P10} w_jk ℓ_jk

With RBF off (w = 1 on P10) W_j is n10, which the host has counted: the kernel does not sum it (that sum, whose
mask is then independent of ℓ, took the mask tiles into a second register layout and spilled registers).
lse_j is only known after the last tile, but it factors out of both sums, so one pass accumulates S11, W, WL
beside the online log-sum-exp (running max m and Σ exp2(u - m), rescaled by exp2(m_old - m_new) whenever the
max grows, as in flash attention; while a row has seen no candidate, m = -inf and the rescale uses 0 instead,
so that a row whose denominator is empty ends with lse = -inf and no NaN). This needs w_jk while streaming,
i.e. ρ_j before the pass: w and ρ are constants of the loss (no gradient flows through them), so they can be
computed by anything, beforehand. In "logit" space ρ_j is an O(B·d) float64 computation on the host
(`mkefast.ops._common.logit_references`). In "phi" space ρ_j = log mean_{P11} exp(ℓ_jk) needs the pairs, so
`_soft_pu_phi_ref_kernel` computes it in a pre-pass over the *labeled* candidates only (P11 ⊆ labeled), which
the host lists first by a stable sort, as a log-sum-exp with a running max (τ = 0.01 gives ℓ up to 100, and
e^100 overflows float32). Anchors with P11 empty take the partner's logit from a row-wise dot (0 without one).

RBF weights (docs/math.md, "RBF weights" and "Numerics"), in base 2, with σ = inf the compile-time case
RBF = False (w = 1 on P10), and w = 1 *by definition* on the fallback pair (P11 empty, k = partner):

    logit: w = exp(-½ ((ℓ - ρ)/σ)²) = exp2(-½ log2(e) t²),   t = (u - ρ_u) · (ln 2 / σ)
    phi:   |e^ℓ - e^ρ| / σ = exp(a - log σ + log(1 - e^{-δ})),  a = max(ℓ, ρ), δ = |ℓ - ρ|, so
           w = exp2(-½ log2(e) exp2(2 L)),   L = max(u, ρ_u) - log2 σ + log2(1 - e^{-δ})

t² and exp2(2 L) overflow only to +inf (w = 0); δ = 0 gives t = 0 or L = -inf, hence w = 1; e^ℓ itself is
never formed. 1 - e^{-δ} is a short Taylor series for small δ, where the difference would cancel (the
interpreter has no libdevice `expm1`).

Backward. With p_jk = exp(ℓ_jk - lse_j) and the upstream gradients g_lb, g_ulb (docs/math.md, "Gradients"):

    G_jk = CP_j p_jk - C11_j [P11] - C10_j w_jk [P10],
    CP = g_lb [n11 > 0] + g_ulb a_ulb,  C11 = g_lb / n11,  C10 = g_ulb / n10   (per row, from the host)

    ∂L/∂s_j = (1/τ) Σ_i Σ_k G_jk z_k,   ∂L/∂z_k = (1/τ) Σ_j G_jk s_j,   ∂L/∂τ = -(1/τ) Σ G_jk ℓ_jk

p is formed in natural units, p = exp(ℓ' - lse) with ℓ' = u · ln 2, rounded exactly as the forward rounded the
row maximum in lse = m ln 2 + log l: where a row's largest logit dominates its denominator (an anchor close to
its partner), G = g (p - 1) there cancels, and p - 1 = -(the other pairs' share) carries only the final
rounding of lse, as in the reference. Comparing base-2 u with lse · log2(e), or rounding m + log2 l before
converting, would add roundings of ~1e-6 to that p - 1, which 1/τ turns into gradient errors several times
the reference's. A row with an empty
denominator has CP = 0 and gets lse = +inf from the host (p = 0 instead of exp(-inf + inf)), hence exactly zero
gradient.

∂L/∂τ. Each row needs Σ_k G_jk ℓ_jk. In exact arithmetic every row of G sums to 0 (with G = CP p - q,
q = C11 [P11] + C10 w [P10]: Σ_k p = 1 and Σ_k q = CP), so any shift c of ℓ gives the same sum; after rounding
it does not, and the two systematic errors are proportional to p: the float32 lse is off by δ (every p is
scaled by e^{-δ}) and CP is rounded (ΔCP). They add (ΔCP - δ CP) Σ_k p_k (ℓ_k - c) to the row's sum, which
vanishes for c = E_p[ℓ] = Σ p ℓ / Σ p, the softmax mean of ℓ. So the kernels return per row T = Σ G ℓ,
Γ = Σ G, A = Σ p ℓ and S = Σ p, and the host forms Σ_k G (ℓ - E_p[ℓ]) = T - (A/S) Γ. (Shifting by lse
instead also cancels them, but makes every term as large as |ℓ - lse|, and their rounding several times the
reference's float32 error.)

Each tile recomputes ℓ (one MMA), forms G elementwise and feeds it, rounded to the input dtype, to a second
MMA. The deterministic default uses two kernels that each own their output rows and write them once:
`_soft_pu_bwd_rows_kernel` (grid = anchor blocks × d blocks, loops over modalities and candidates; it also
writes the per-anchor τ partial sums) and `_soft_pu_bwd_cols_kernel` (grid = candidate blocks × M × d blocks,
loops over anchors; it forms each tile as the others do, [anchors, candidates], so that ℓ is bitwise the
forward's, and feeds Gᵀ to its product, as flash attention's backward forms dK from dSᵀ). The optional
`_soft_pu_bwd_atomic_kernel` does both in one sweep (ℓ recomputed once instead of twice) and adds its
anchor-gradient and τ partials into fp32 buffers with atomics: faster, but the order of the additions, hence
the last bits, vary from run to run.

Feature blocks. ℓ is accumulated over d in BLOCK_D chunks, so any d works; in the forward, when one chunk
covers d (SINGLE_D), the tile of the streamed-over side's fixed operand is loaded once, before the loop (bf16 and
fp16: fp32 operands always stream, in FMA_BLOCK_D chunks, which their registers hold without spilling). The
backward kernels always stream (64-wide chunks, re-read from L1/L2): they also hold the gradient's fp32
accumulator, and holding the operands too spills registers (`mkefast kernels`). A kernel that writes a gradient
`[rows, d]` owns one BLOCK_DO-wide column block of it (program axis "d blocks"; BLOCK_DO is a tile parameter:
narrower blocks hold less, but each recomputes its tiles of ℓ).

Precision. Operands go to `tl.dot` in their own dtype (bf16/fp16 on the tensor cores) with fp32 accumulation;
fp32 operands use `input_precision="ieee"` (exact fp32, no TF32: FMA instructions, with their own tile
configurations). All statistics are fp32. Under the interpreter (INTERPRET) the operands are upcast to fp32
first, because its bf16 `dot` is wrong; G is still rounded to the input dtype first (to nearest, by `round_to`:
the interpreter's own bf16 conversion does not), so the interpreter reproduces the GPU's rounding.

Offsets. M·B·d exceeds 2^31 for large batches (B = 2^20, d = 256, M = 9), so every row offset is formed in
int64 before the multiplication by d.
"""

from __future__ import annotations

import triton
import triton.language as tl
from mkefast._build import triton_interpreted

from ._common import round_to

__all__ = [
    "INTERPRET",
    "ROW_CONSTANTS",
    "_soft_pu_bwd_atomic_kernel",
    "_soft_pu_bwd_cols_kernel",
    "_soft_pu_bwd_rows_kernel",
    "_soft_pu_fwd_kernel",
    "_soft_pu_phi_ref_kernel",
]

# Fixed when this module is imported: `triton.jit` picks the interpreter at decoration time, too.
INTERPRET: bool = triton_interpreted()

LN2: tl.constexpr = tl.constexpr(0.6931471805599453)
LOG2E: tl.constexpr = tl.constexpr(1.4426950408889634)
HALF_LOG2E: tl.constexpr = tl.constexpr(0.7213475204444817)  # ½ log2(e): exp(-x/2) = exp2(-HALF_LOG2E x)

# The backward's per-row constants, stacked `[5, M, B_a]` float32 in this order by the host.
ROW_CONSTANTS = ("lse", "cp", "c11", "c10", "ref_u")


# Register budget of a tile configuration: the fp32 values per thread of its [BLOCK_M, BLOCK_N] tile plus those
# of the gradient block it accumulates ([rows, BLOCK_DO]), at most this many per kernel. ptxas's register file
# is 255 per thread; the rest goes to the masks, the weights' temporaries, addresses and the operands. The
# budgets are what `mkefast kernels` measures spill-free on sm_90a and sm_80 (Triton 3.6 and newer) for every
# variant and dtype at d <= 256; a configuration over budget spills somewhere there and is pruned before
# autotuning. fp32 operands (products on the FMA units, `FMA_BLOCK_D`) have their own configurations and budget:
# their forward takes 220-250 registers at 16 values per thread and 180-215 at 8, their backward 240-255 at 32.
_BUDGET = {"ref": 16, "fwd": 32, "rows": 48, "cols": 48, "atomic": 40}
_FMA_BUDGET = {"ref": 8, "fwd": 8, "rows": 24, "cols": 24, "atomic": 32}
# ptxas, left to itself, caps a kernel that needs a little more than 128 registers (256 threads) or 168 (128
# threads) at that, so that one more block fits on a multiprocessor, and spills 8-40 bytes to get there. The fp32
# configurations let it use the whole register file (.maxnreg 255): every fp32 kernel spilled so in some tile, the
# phi pre-pass in each one on sm_90a. The tensor-core ones keep ptxas's choice (.maxnreg 255 takes the heaviest
# atomic backward from 181 registers to 255 on sm_90a), and what it spills in a tile that is within budget is
# measured here: {(BLOCK_M, BLOCK_N, warps, stages, BLOCK_DO): the launch's compile-time arguments under which it
# spills ({}: all)} per kernel. Both are on sm_80 under Triton 3.9 at d = 64: the column-parallel backward (8
# bytes) and the forward with RBF off (16 bytes).
_FMA_MAXNREG = 255
_SPILLING: dict[str, dict[tuple[int, ...], dict[str, object]]] = {
    "cols": {(32, 64, 8, 2, 64): {}}, "fwd": {(64, 64, 8, 2): {"RBF": False}}}
# (BLOCK_M, BLOCK_N, warps, stages) of the forward's candidates, (..., BLOCK_DO) of the backward's: for the tensor
# cores, and for fp32 operands (smaller tiles). The atomic backward pipelines its 64 x 32 tile in 3 stages: with
# 2, ptxas caps its RBF-off variant at 128 registers for sm_80 and spills 8 bytes (Triton 3.6); with 3 it takes 165.
_SHAPES = {
    "fwd": [(128, 128, 8, 2), (128, 64, 8, 3), (64, 64, 4, 3), (64, 64, 8, 2), (64, 32, 4, 3)],
    "fwd_fma": [(64, 64, 8, 2), (64, 32, 4, 3), (64, 32, 8, 2), (32, 64, 8, 2), (32, 32, 4, 3)],
    "bwd": [(64, 64, 4, 2, 64), (64, 64, 8, 2, 128), (64, 64, 8, 2, 64), (32, 64, 8, 2, 64), (64, 32, 8, 2, 64)],
    "atomic": [(64, 64, 4, 2, 64), (64, 64, 8, 2, 128), (64, 64, 8, 2, 64), (32, 64, 8, 2, 64), (64, 32, 8, 3, 64)],
}
_SHAPES["bwd_fma"] = _SHAPES["atomic_fma"] = _SHAPES["bwd"]


def _compiled_configs(kind: str = "fwd") -> list[triton.Config]:
    """Autotuning candidates of the pair kernels of `kind` ("fwd": the forward and the phi pre-pass, "bwd": the
    deterministic backward, "atomic") when compiled (the backward's also choose BLOCK_DO, the width of the
    gradient's column block), for the tensor cores and for fp32 operands (those with `_FMA_MAXNREG`); `_pruner`
    keeps those of the launch's dtype within its register budget."""
    return [triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, **({"BLOCK_DO": do[0]} if do else {})}, num_warps=w,
                          num_stages=s, maxnreg=maxnreg)
            for shapes, maxnreg in ((_SHAPES[kind], None), (_SHAPES[f"{kind}_fma"], _FMA_MAXNREG))
            for bm, bn, w, s, *do in shapes]


def _tile_configs(kind: str = "fwd") -> list[triton.Config]:
    """`_compiled_configs(kind)`, or one config under the interpreter (nothing to time there).

    The interpreter's tiles are small and unequal, so that the tests' small batches still span several tiles
    of each kind, and a mix-up of the two block sizes fails them; its 16-wide gradient blocks split every d > 16.
    """
    if INTERPRET:
        return [triton.Config({"BLOCK_M": 16, "BLOCK_N": 32, **({"BLOCK_DO": 16} if kind != "fwd" else {})},
                              num_warps=4, num_stages=1)]
    return _compiled_configs(kind)


def tile_values_per_thread(kernel: str, config: triton.Config, d: int) -> float:
    """The fp32 values per thread that a configuration holds in `kernel` ("fwd", "rows", "cols", "atomic") at
    feature size d: its ℓ tile, plus the gradient block it accumulates (`_BUDGET`, `_FMA_BUDGET`)."""
    if kernel == "ref":
        kernel = "fwd"
    bm, bn = config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]
    values = bm * bn
    if kernel != "fwd":
        block_do = min(config.kwargs["BLOCK_DO"], max(16, 1 << (d - 1).bit_length()))
        values += {"rows": bm, "cols": bn, "atomic": bm + bn}[kernel] * block_do
    return values / (32 * config.num_warps)


def _spills(kernel: str, config: triton.Config, launch: dict[str, object]) -> bool:
    """Whether `_SPILLING` lists this tensor-core configuration of `kernel` for a launch with these arguments."""
    shape = (config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"], config.num_warps, config.num_stages,
             *([config.kwargs["BLOCK_DO"]] if "BLOCK_DO" in config.kwargs else []))
    when = _SPILLING.get(kernel, {}).get(shape)
    return when is not None and all(launch.get(k) == v for k, v in when.items())


def _pruner(kernel: str):
    def prune(configs: list[triton.Config], named_args: dict, **kwargs: object) -> list[triton.Config]:
        d = int(named_args["D"])
        fma = kwargs["DOT_PRECISION"] == "ieee"
        budget = (_FMA_BUDGET if fma else _BUDGET)[kernel]
        # A gradient block wider than d only wastes lanes: the narrowest one that covers d does it all.
        widest = max(16, 1 << (d - 1).bit_length())
        # Under the interpreter the one configuration sets no maxnreg: for fp32 there is none of that kind, and it
        # stays.
        ours = [c for c in configs if (c.maxnreg == _FMA_MAXNREG) == fma] or configs
        kept = [c for c in ours if tile_values_per_thread(kernel, c, d) <= budget
                and ("BLOCK_DO" not in c.kwargs or c.kwargs["BLOCK_DO"] <= max(widest, 64))
                and (fma or not _spills(kernel, c, kwargs))]
        return kept or ours[-1:]
    prune.__name__ = f"_prune_{kernel}"
    return prune


_KEY = ["B_A", "B_C", "D"]

# fp32 operands multiply on the FMA units (input_precision "ieee": no tensor cores), where each thread holds its
# rows of both operands over the whole d chunk: a held `[BLOCK_M, d]` operand spills kilobytes at d = 128, and
# 128-wide chunks hundreds of bytes (`mkefast kernels`), so they stream in chunks of 16 (tl.dot's narrowest).
# Those products accumulate one k after the other into the same accumulator, so the chunk width does not change
# a bit of ℓ: the forward and the backward still agree.
FMA_BLOCK_D: tl.constexpr = tl.constexpr(16)


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
    """Σ_d a[r, d] b[c, d] for the `[len(a_rows), len(b_rows)]` tile, looping over d in BLOCK_D chunks (FMA_BLOCK_D
    ones for fp32 operands).

    a_rows / b_rows are int64 element offsets of the rows (row index × D).
    """
    if DOT_PRECISION == "ieee":
        acc = _dot_chunks(a_base, a_rows, a_ok, b_base, b_rows, b_ok, D, FMA_BLOCK_D, DOT_PRECISION, INTERPRET)
    else:
        acc = _dot_chunks(a_base, a_rows, a_ok, b_base, b_rows, b_ok, D, BLOCK_D, DOT_PRECISION, INTERPRET)
    return acc


@triton.jit
def _dot_chunks(a_base, a_rows, a_ok, b_base, b_rows, b_ok, D, BLOCK_D: tl.constexpr,
                DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr):
    acc = tl.zeros((a_rows.shape[0], b_rows.shape[0]), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        col_ok = cols < D
        a = tl.load(a_base + a_rows[:, None] + cols[None, :], mask=a_ok[:, None] & col_ok[None, :], other=0.0)
        b = tl.load(b_base + b_rows[:, None] + cols[None, :], mask=b_ok[:, None] & col_ok[None, :], other=0.0)
        acc = _mma(a, tl.trans(b), acc, DOT_PRECISION, INTERPRET)
    return acc


@triton.jit
def _load_anchors(a_cls_ptr, a_lab_ptr, n11_ptr, rows, row_ok, B_C, diag_offset):
    """(partner, class, labeled flag, fallback) of the anchors `rows`.

    partner is the candidate index of the instance pair, -1 when there is none (past B_c, or a masked row);
    fallback is [P11(j) = ∅]: ρ_j is then the partner's logit and that pair's weight is 1 by definition.
    Masked rows get no class, no label and no partner, so that every pair of theirs is masked.
    """
    partner = rows + diag_offset
    partner = tl.where(row_ok & (partner < B_C), partner, -1)
    cls_j = tl.load(a_cls_ptr + rows, mask=row_ok, other=-1)
    lab_j = tl.load(a_lab_ptr + rows, mask=row_ok, other=0) != 0
    fallback = tl.load(n11_ptr + rows, mask=row_ok, other=0.0) == 0.0
    return partner, cls_j, lab_j, fallback


@triton.jit
def _load_block(base, rows, row_ok, cols, col_ok):
    """The `[len(rows), len(cols)]` block at int64 row offsets `rows` and columns `cols` (0 where masked)."""
    return tl.load(base + rows[:, None] + cols[None, :], mask=row_ok[:, None] & col_ok[None, :], other=0.0)


@triton.jit
def _load_candidates(cls_ptr, lab_ptr, cols, col_ok):
    # Class -2 matches no anchor (anchors hold >= -1): masked candidates fail every mask test.
    cls_k = tl.load(cls_ptr + cols, mask=col_ok, other=-2)
    lab_k = tl.load(lab_ptr + cols, mask=col_ok, other=0) != 0
    return cls_k, lab_k


@triton.jit
def _pair_masks(partner, cls_j, lab_j, cand, cls_k, lab_k, EXCLUDE_DIAGONAL: tl.constexpr):
    """(diag, P11, P10) of the pairs; every argument is broadcast to the `[anchors, candidates]` tile's shape.

    With EXCLUDE_DIAGONAL the partner pair is in neither set (the caller also drops it from the denominator).
    """
    diag = cand == partner
    same = cls_j == cls_k
    both = lab_j & lab_k
    p11 = both & same
    p10 = (both == 0) & (diag | (same & (cls_j >= 0)))
    if EXCLUDE_DIAGONAL:
        p11 = p11 & (diag == 0)
        p10 = p10 & (diag == 0)
    return diag, p11, p10


@triton.jit
def _one_minus_exp_neg(x):
    """1 - e^{-x} for x >= 0: a Taylor series below 1/4, where the subtraction would cancel (relative error of
    the truncation < 2e-9 there), and the subtraction above."""
    series = x * (1.0 - x * (0.5 - x * (1.0 / 6.0 - x * (1.0 / 24.0 - x * (1.0 / 120.0 - x * (
        1.0 / 720.0 - x * (1.0 / 5040.0)))))))
    return tl.where(x < 0.25, series, 1.0 - tl.exp(-x))


@triton.jit
def _rbf_weight(u, ref_u, fallback_pair, rbf_scale, log2_sigma, PHI: tl.constexpr):
    """w of the pairs (module docstring): u and ρ_u in base-2 logit units; 1 on the fallback pair."""
    if PHI:
        lg = tl.maximum(u, ref_u) - log2_sigma + tl.log2(_one_minus_exp_neg(tl.abs(u - ref_u) * LN2))
        w = tl.exp2(tl.exp2(2.0 * lg) * -HALF_LOG2E)
    else:
        t = (u - ref_u) * rbf_scale
        w = tl.exp2((t * t) * -HALF_LOG2E)
    return tl.where(fallback_pair, 1.0, w)


@triton.jit
def _pair_terms(u, keep, lse, c11, c10, ref_u, diag, fallback, p11, p10, rbf_scale, log2_sigma, RBF: tl.constexpr,
                PHI: tl.constexpr):
    """(p, q, ℓ) on the tile, whose G = ∂L/∂ℓ = CP p - q: p = exp(ℓ - lse) on the pairs `keep` (the denominator)
    and 0 elsewhere, q = C11 [P11] + C10 w [P10], ℓ = u ln 2 (module docstring: why p in natural units). Off the
    denominator p = q = 0; masked rows have q = 0 and CP = 0."""
    ell = u * LN2
    # The select between the product and the difference also keeps the compiler from contracting them into
    # one FMA, which would skip the rounding of ℓ that the forward's lse went through.
    p = tl.exp2((tl.where(keep, ell, float("-inf")) - lse) * LOG2E)
    q = tl.where(p11, c11, 0.0)
    if RBF:
        q += tl.where(p10, c10 * _rbf_weight(u, ref_u, fallback & diag, rbf_scale, log2_sigma, PHI), 0.0)
    else:
        q += tl.where(p10, c10, 0.0)
    return p, q, ell


@triton.autotune(configs=_tile_configs(), key=_KEY, prune_configs_by={"early_config_prune": _pruner("ref")})
@triton.jit
def _soft_pu_phi_ref_kernel(
    s_ptr,  # [B_a, d] anchors
    z_ptr,  # [M, B_c, d] candidates
    cls_ptr,  # [B_c] int32 class ids of the candidates (-1: none)
    a_cls_ptr,  # [B_a] int32 class ids of the anchors
    a_lab_ptr,  # [B_a] uint8 labeled flags of the anchors
    n11_ptr,  # [B_a] float32 |P11|
    lab_idx_ptr,  # [B_c] int32: the labeled candidates first (stable order), then the others
    n_lab_ptr,  # [1] int32: how many candidates are labeled
    ref_ptr,  # [M, B_a] float32 out: ρ_u = log2 mean_{P11} exp2(u), or the partner's u when P11(j) is empty
    B_A, B_C, D, diag_offset,
    qk_scale,  # log2(e) / τ
    EXCLUDE_DIAGONAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    mod = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < B_A
    partner, cls_j, lab_j, fallback = _load_anchors(a_cls_ptr, a_lab_ptr, n11_ptr, rows, row_ok, B_C, diag_offset)
    z_base = z_ptr + mod * B_C * D
    s_rows = rows.to(tl.int64) * D
    # P11 ⊆ labeled candidates: only the first n_lab entries of lab_idx can contribute. Log-sum-exp of u over
    # P11 with a running max (m = -inf until the row meets its first member).
    n_lab = tl.load(n_lab_ptr)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for k0 in range(0, n_lab, BLOCK_N):
        slot = k0 + tl.arange(0, BLOCK_N)
        slot_ok = slot < n_lab
        cand = tl.load(lab_idx_ptr + slot, mask=slot_ok, other=0)
        cls_k = tl.load(cls_ptr + cand, mask=slot_ok, other=-2)
        u = _dot_rows(s_ptr, s_rows, row_ok, z_base, cand.to(tl.int64) * D, slot_ok, D, BLOCK_D,
                      DOT_PRECISION, INTERPRET) * qk_scale
        p11 = lab_j[:, None] & (cls_j[:, None] == cls_k[None, :])
        if EXCLUDE_DIAGONAL:
            p11 = p11 & (cand[None, :] != partner[:, None])
        u = tl.where(p11, u, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(u, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp2(m_i - m_safe) + tl.sum(tl.exp2(u - m_safe[:, None]), axis=1)
        m_i = m_new
    # The fallback: the partner's u as a row-wise dot of s_j with z_partner (0 without a partner).
    diag = tl.zeros((BLOCK_M,), dtype=tl.float32)
    has_partner = partner >= 0
    z_rows = partner.to(tl.int64) * D
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        col_ok = (cols < D)[None, :]
        s = tl.load(s_ptr + s_rows[:, None] + cols[None, :], mask=row_ok[:, None] & col_ok, other=0.0)
        z = tl.load(z_base + z_rows[:, None] + cols[None, :], mask=has_partner[:, None] & col_ok, other=0.0)
        diag += tl.sum(s.to(tl.float32) * z.to(tl.float32), axis=1)
    n11 = tl.load(n11_ptr + rows, mask=row_ok, other=0.0)
    ref = tl.where(fallback, diag * qk_scale, m_i + tl.log2(l_i) - tl.log2(tl.maximum(n11, 1.0)))
    tl.store(ref_ptr + mod * B_A + rows, ref, mask=row_ok)


@triton.autotune(configs=_tile_configs(), key=_KEY, prune_configs_by={"early_config_prune": _pruner("fwd")})
@triton.jit
def _soft_pu_fwd_kernel(
    s_ptr,  # [B_a, d] anchors
    z_ptr,  # [M, B_c, d] candidates
    cls_ptr,  # [B_c] int32 class ids of the candidates (-1: none)
    lab_ptr,  # [B_c] uint8 labeled flags of the candidates
    a_cls_ptr,  # [B_a] int32 class ids of the anchors
    a_lab_ptr,  # [B_a] uint8 labeled flags of the anchors
    n11_ptr,  # [B_a] float32 |P11|
    n10_ptr,  # [B_a] float32 |P10|
    ref_ptr,  # [M, B_a] float32 ρ_u = ρ · log2(e)
    lb_ptr,  # [M, B_a] float32 out
    ulb_ptr,  # [M, B_a] float32 out
    lse_ptr,  # [M, B_a] float32 out (natural log; -inf for an empty denominator)
    a_ulb_ptr,  # [M, B_a] float32 out: W / n10
    B_A, B_C, D, diag_offset,
    qk_scale,  # log2(e) / τ
    rbf_scale,  # ln 2 / σ ("logit" weights)
    log2_sigma,  # log2 σ ("phi" weights)
    RBF: tl.constexpr, PHI: tl.constexpr, EXCLUDE_DIAGONAL: tl.constexpr, SINGLE_D: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    mod = tl.program_id(1).to(tl.int64)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < B_A
    partner, cls_j, lab_j, fallback = _load_anchors(a_cls_ptr, a_lab_ptr, n11_ptr, rows, row_ok, B_C, diag_offset)
    stat = mod * B_A + rows
    ref = tl.load(ref_ptr + stat, mask=row_ok, other=0.0)
    z_base = z_ptr + mod * B_C * D
    s_rows = rows.to(tl.int64) * D
    d_cols = tl.arange(0, BLOCK_D)
    HOLD_S: tl.constexpr = SINGLE_D and DOT_PRECISION != "ieee"  # fp32 streams (FMA_BLOCK_D)
    if HOLD_S:
        s_tile = tl.load(s_ptr + s_rows[:, None] + d_cols[None, :], mask=row_ok[:, None] & (d_cols < D)[None, :],
                         other=0.0)

    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)  # running max of u over the denominator
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)  # Σ exp2(u - m_i)
    s11 = tl.zeros((BLOCK_M,), dtype=tl.float32)  # Σ_{P11} u
    w_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)  # Σ_{P10} w
    wu = tl.zeros((BLOCK_M,), dtype=tl.float32)  # Σ_{P10} w u
    for k0 in range(0, B_C, BLOCK_N):
        cols = k0 + tl.arange(0, BLOCK_N)
        col_ok = cols < B_C
        z_rows = cols.to(tl.int64) * D
        if HOLD_S:
            z_tile = tl.load(z_base + z_rows[:, None] + d_cols[None, :],
                             mask=col_ok[:, None] & (d_cols < D)[None, :], other=0.0)
            acc = _mma(s_tile, tl.trans(z_tile), tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32),
                       DOT_PRECISION, INTERPRET)
        else:
            acc = _dot_rows(s_ptr, s_rows, row_ok, z_base, z_rows, col_ok, D, BLOCK_D, DOT_PRECISION, INTERPRET)
        u = acc * qk_scale
        cls_k, lab_k = _load_candidates(cls_ptr, lab_ptr, cols, col_ok)
        diag, p11, p10 = _pair_masks(partner[:, None], cls_j[:, None], lab_j[:, None], cols[None, :],
                                     cls_k[None, :], lab_k[None, :], EXCLUDE_DIAGONAL)
        keep = col_ok[None, :]
        if EXCLUDE_DIAGONAL:
            keep = keep & (diag == 0)
        u_den = tl.where(keep, u, float("-inf"))

        # Online log-sum-exp: rescale the running sum whenever the row max grows (by 0 while it is -inf).
        m_new = tl.maximum(m_i, tl.max(u_den, axis=1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
        l_i = l_i * tl.exp2(m_i - m_safe) + tl.sum(tl.exp2(u_den - m_safe[:, None]), axis=1)
        m_i = m_new

        s11 += tl.sum(tl.where(p11, u, 0.0), axis=1)
        if RBF:
            w = tl.where(p10, _rbf_weight(u, ref[:, None], fallback[:, None] & diag, rbf_scale, log2_sigma, PHI),
                         0.0)
            w_sum += tl.sum(w, axis=1)
            wu += tl.sum(tl.where(p10, w * u, 0.0), axis=1)
        else:  # w = 1: W = n10 (after the loop)
            wu += tl.sum(tl.where(p10, u, 0.0), axis=1)

    # lse = ℓ_max + log l in natural units, with ℓ_max = m ln 2 rounded exactly as the backward rounds every
    # ℓ = u ln 2 (the select keeps the compiler from fusing that product into the sum): the row's dominant pair
    # then sees only lse's own final rounding in its p (module docstring, "p is formed in natural units").
    lse = tl.where(m_i == float("-inf"), float("-inf"), m_i * LN2) + tl.log2(l_i) * LN2
    n11 = tl.load(n11_ptr + rows, mask=row_ok, other=0.0)
    n10 = tl.load(n10_ptr + rows, mask=row_ok, other=0.0)
    if not RBF:
        w_sum = n10
    inv10 = 1.0 / tl.maximum(n10, 1.0)
    lb = tl.where(n11 > 0, lse - s11 * LN2 / tl.maximum(n11, 1.0), 0.0)
    ulb = tl.where(n10 > 0, (w_sum * lse - wu * LN2) * inv10, 0.0)
    tl.store(lb_ptr + stat, lb, mask=row_ok)
    tl.store(ulb_ptr + stat, ulb, mask=row_ok)
    tl.store(lse_ptr + stat, lse, mask=row_ok)
    tl.store(a_ulb_ptr + stat, w_sum * inv10, mask=row_ok)


@triton.jit
def _load_row_constants(const_ptr, stat, row_ok, M, B_A):
    """(lse, CP, C11, C10, ρ_u) of the rows at `stat` = mod·B_a + row (ROW_CONSTANTS); 0 on masked rows."""
    plane = tl.cast(M, tl.int64) * B_A
    lse = tl.load(const_ptr + stat, mask=row_ok, other=0.0)
    cp = tl.load(const_ptr + plane + stat, mask=row_ok, other=0.0)
    c11 = tl.load(const_ptr + 2 * plane + stat, mask=row_ok, other=0.0)
    c10 = tl.load(const_ptr + 3 * plane + stat, mask=row_ok, other=0.0)
    ref_u = tl.load(const_ptr + 4 * plane + stat, mask=row_ok, other=0.0)
    return lse, cp, c11, c10, ref_u


@triton.jit
def _tau_sums(g, p, ell):
    """Per row of the tile: (Σ G ℓ, Σ G, Σ p ℓ, Σ p), from which the host forms the row's Σ_k G ℓ (module
    docstring, "∂L/∂τ")."""
    return tl.sum(g * ell, axis=1), tl.sum(g, axis=1), tl.sum(p * ell, axis=1), tl.sum(p, axis=1)


@triton.jit
def _tile_terms(acc, cols, col_ok, cls_k, lab_k, partner, cls_j, lab_j, fallback, lse, c11, c10, ref, qk_scale,
                rbf_scale, log2_sigma, RBF: tl.constexpr, PHI: tl.constexpr, EXCLUDE_DIAGONAL: tl.constexpr):
    """(p, q, ℓ) (`_pair_terms`) of the `[anchors, candidates]` tile whose dot products <s_j, z_k> are `acc`; the
    per-anchor vectors are `[BLOCK_M]`, the per-candidate ones `[BLOCK_N]`.

    Every backward kernel forms its tiles in the forward's orientation and d order, so that ℓ is bitwise the
    forward's and the dominant pair of a row gets p = 1 exactly (module docstring).
    """
    u = acc * qk_scale
    diag, p11, p10 = _pair_masks(partner[:, None], cls_j[:, None], lab_j[:, None], cols[None, :], cls_k[None, :],
                                 lab_k[None, :], EXCLUDE_DIAGONAL)
    keep = col_ok[None, :]
    if EXCLUDE_DIAGONAL:
        keep = keep & (diag == 0)
    return _pair_terms(u, keep, lse[:, None], c11[:, None], c10[:, None], ref[:, None], diag, fallback[:, None], p11,
                       p10, rbf_scale, log2_sigma, RBF, PHI)


@triton.autotune(configs=_tile_configs("bwd"), key=_KEY,
                 prune_configs_by={"early_config_prune": _pruner("rows")})
@triton.jit
def _soft_pu_bwd_rows_kernel(
    s_ptr,  # [B_a, d] anchors
    z_ptr,  # [M, B_c, d] candidates
    cls_ptr,  # [B_c] int32 class ids of the candidates (-1: none)
    lab_ptr,  # [B_c] uint8 labeled flags of the candidates
    a_cls_ptr,  # [B_a] int32 class ids of the anchors
    a_lab_ptr,  # [B_a] uint8 labeled flags of the anchors
    n11_ptr,  # [B_a] float32 |P11|
    const_ptr,  # [5, M, B_a] float32 ROW_CONSTANTS
    grad_s_ptr,  # [B_a, d] out (GRAD_S), the dtype of the anchors
    tau_ptr,  # [4, M, B_a] float32 out (GRAD_T): the `_tau_sums` of every row
    M, B_A, B_C, D, diag_offset,
    qk_scale,  # log2(e) / τ
    rbf_scale,  # ln 2 / σ
    log2_sigma,  # log2 σ
    inv_temp,  # 1 / τ
    RBF: tl.constexpr, PHI: tl.constexpr, EXCLUDE_DIAGONAL: tl.constexpr,
    GRAD_S: tl.constexpr, GRAD_T: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    rows = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    row_ok = rows < B_A
    partner, cls_j, lab_j, fallback = _load_anchors(a_cls_ptr, a_lab_ptr, n11_ptr, rows, row_ok, B_C, diag_offset)
    s_rows = rows.to(tl.int64) * D
    d_out = pid_d * BLOCK_DO + tl.arange(0, BLOCK_DO)
    d_ok = d_out < D

    # One accumulator for every modality: the anchors' gradient is written once, in a fixed order.
    z_stride = tl.cast(B_C, tl.int64) * D  # B_c may be specialized to a constexpr (B_c = 1): cast, not .to
    grad = tl.zeros((BLOCK_M, BLOCK_DO), dtype=tl.float32)
    for mod in range(0, M):
        lse, cp, c11, c10, ref = _load_row_constants(const_ptr, mod * B_A + rows, row_ok, M, B_A)
        z_base = z_ptr + mod * z_stride
        tau_t = tl.zeros((BLOCK_M,), dtype=tl.float32)
        tau_g = tl.zeros((BLOCK_M,), dtype=tl.float32)
        tau_a = tl.zeros((BLOCK_M,), dtype=tl.float32)
        tau_s = tl.zeros((BLOCK_M,), dtype=tl.float32)
        for k0 in range(0, B_C, BLOCK_N):
            cols = k0 + tl.arange(0, BLOCK_N)
            col_ok = cols < B_C
            z_rows = cols.to(tl.int64) * D
            acc = _dot_rows(s_ptr, s_rows, row_ok, z_base, z_rows, col_ok, D, BLOCK_D, DOT_PRECISION, INTERPRET)
            cls_k, lab_k = _load_candidates(cls_ptr, lab_ptr, cols, col_ok)
            p, q, ell = _tile_terms(acc, cols, col_ok, cls_k, lab_k, partner, cls_j, lab_j, fallback, lse, c11, c10,
                                    ref, qk_scale, rbf_scale, log2_sigma, RBF, PHI, EXCLUDE_DIAGONAL)
            g = cp[:, None] * p - q
            if GRAD_T:
                t_part, g_part, a_part, s_part = _tau_sums(g, p, ell)
                tau_t += t_part
                tau_g += g_part
                tau_a += a_part
                tau_s += s_part
            if GRAD_S:
                z_out = _load_block(z_base, z_rows, col_ok, d_out, d_ok)
                grad = _mma(round_to(g, z_out.dtype, INTERPRET), z_out, grad, DOT_PRECISION, INTERPRET)
        if GRAD_T and pid_d == 0:  # every d block forms the same G; the first one writes the τ sums
            plane = tl.cast(M, tl.int64) * B_A
            tl.store(tau_ptr + mod * B_A + rows, tau_t, mask=row_ok)
            tl.store(tau_ptr + plane + mod * B_A + rows, tau_g, mask=row_ok)
            tl.store(tau_ptr + 2 * plane + mod * B_A + rows, tau_a, mask=row_ok)
            tl.store(tau_ptr + 3 * plane + mod * B_A + rows, tau_s, mask=row_ok)
    if GRAD_S:
        out = grad_s_ptr + s_rows[:, None] + d_out[None, :]
        tl.store(out, round_to(grad * inv_temp, grad_s_ptr.dtype.element_ty, INTERPRET),
                 mask=row_ok[:, None] & d_ok[None, :])


@triton.jit
def _anchor_block_tile(s_ptr, z_base, z_rows, cols, col_ok, cls_k, lab_k, a_cls_ptr, a_lab_ptr, n11_ptr,
                       const_ptr, j0, mod, d_out, d_ok, M, B_A, B_C, D, diag_offset, qk_scale, rbf_scale, log2_sigma,
                       RBF: tl.constexpr, PHI: tl.constexpr, EXCLUDE_DIAGONAL: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, DOT_PRECISION: tl.constexpr,
                       INTERPRET: tl.constexpr):
    """(G, p, ℓ, s_out, rows, row_ok, s_rows) of anchor block j0 against the column-parallel kernels' candidate
    block; s_out is the anchors' d block of the output."""
    rows = j0 + tl.arange(0, BLOCK_M)
    row_ok = rows < B_A
    s_rows = rows.to(tl.int64) * D
    partner, cls_j, lab_j, fallback = _load_anchors(a_cls_ptr, a_lab_ptr, n11_ptr, rows, row_ok, B_C, diag_offset)
    lse, cp, c11, c10, ref = _load_row_constants(const_ptr, mod * B_A + rows, row_ok, M, B_A)
    acc = _dot_rows(s_ptr, s_rows, row_ok, z_base, z_rows, col_ok, D, BLOCK_D, DOT_PRECISION, INTERPRET)
    s_out = _load_block(s_ptr, s_rows, row_ok, d_out, d_ok)
    p, q, ell = _tile_terms(acc, cols, col_ok, cls_k, lab_k, partner, cls_j, lab_j, fallback, lse, c11, c10, ref,
                            qk_scale, rbf_scale, log2_sigma, RBF, PHI, EXCLUDE_DIAGONAL)
    return cp[:, None] * p - q, p, ell, s_out, rows, row_ok, s_rows


@triton.autotune(configs=_tile_configs("bwd"), key=_KEY,
                 prune_configs_by={"early_config_prune": _pruner("cols")})
@triton.jit
def _soft_pu_bwd_cols_kernel(
    s_ptr,  # [B_a, d] anchors
    z_ptr,  # [M, B_c, d] candidates
    cls_ptr,  # [B_c] int32 class ids of the candidates (-1: none)
    lab_ptr,  # [B_c] uint8 labeled flags of the candidates
    a_cls_ptr,  # [B_a] int32 class ids of the anchors
    a_lab_ptr,  # [B_a] uint8 labeled flags of the anchors
    n11_ptr,  # [B_a] float32 |P11|
    const_ptr,  # [5, M, B_a] float32 ROW_CONSTANTS
    grad_z_ptr,  # [M, B_c, d] out, the dtype of the candidates
    M, B_A, B_C, D, diag_offset,
    qk_scale, rbf_scale, log2_sigma, inv_temp,
    RBF: tl.constexpr, PHI: tl.constexpr, EXCLUDE_DIAGONAL: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    mod = tl.program_id(1).to(tl.int64)
    pid_d = tl.program_id(2)
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < B_C
    cls_k, lab_k = _load_candidates(cls_ptr, lab_ptr, cols, col_ok)
    z_base = z_ptr + mod * B_C * D
    z_rows = cols.to(tl.int64) * D
    d_out = pid_d * BLOCK_DO + tl.arange(0, BLOCK_DO)
    d_ok = d_out < D

    grad = tl.zeros((BLOCK_N, BLOCK_DO), dtype=tl.float32)
    for j0 in range(0, B_A, BLOCK_M):
        g, _, _, s_out, _, _, _ = _anchor_block_tile(
            s_ptr, z_base, z_rows, cols, col_ok, cls_k, lab_k, a_cls_ptr, a_lab_ptr, n11_ptr, const_ptr, j0,
            mod, d_out, d_ok, M, B_A, B_C, D, diag_offset, qk_scale, rbf_scale, log2_sigma, RBF, PHI,
            EXCLUDE_DIAGONAL, BLOCK_M, BLOCK_D, DOT_PRECISION, INTERPRET)
        grad = _mma(tl.trans(round_to(g, s_out.dtype, INTERPRET)), s_out, grad, DOT_PRECISION, INTERPRET)
    out = grad_z_ptr + mod * B_C * D + z_rows[:, None] + d_out[None, :]
    tl.store(out, round_to(grad * inv_temp, grad_z_ptr.dtype.element_ty, INTERPRET),
             mask=col_ok[:, None] & d_ok[None, :])


@triton.autotune(configs=_tile_configs("atomic"), key=_KEY, reset_to_zero=["grad_s_ptr", "tau_ptr"],
                 prune_configs_by={"early_config_prune": _pruner("atomic")})
@triton.jit
def _soft_pu_bwd_atomic_kernel(
    s_ptr,  # [B_a, d] anchors
    z_ptr,  # [M, B_c, d] candidates
    cls_ptr,  # [B_c] int32 class ids of the candidates (-1: none)
    lab_ptr,  # [B_c] uint8 labeled flags of the candidates
    a_cls_ptr,  # [B_a] int32 class ids of the anchors
    a_lab_ptr,  # [B_a] uint8 labeled flags of the anchors
    n11_ptr,  # [B_a] float32 |P11|
    const_ptr,  # [5, M, B_a] float32 ROW_CONSTANTS
    grad_s_ptr,  # [B_a, d] float32 out, zero-filled: atomically accumulated over candidate blocks and modalities
    tau_ptr,  # [4, M, B_a] float32 out (GRAD_T), zero-filled: the `_tau_sums` of every row, atomically
    grad_z_ptr,  # [M, B_c, d] out, the dtype of the candidates
    M, B_A, B_C, D, diag_offset,
    qk_scale, rbf_scale, log2_sigma, inv_temp,
    RBF: tl.constexpr, PHI: tl.constexpr, EXCLUDE_DIAGONAL: tl.constexpr,
    GRAD_T: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DO: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INTERPRET: tl.constexpr,
):
    pid = tl.program_id(0)
    mod = tl.program_id(1).to(tl.int64)
    pid_d = tl.program_id(2)
    cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    col_ok = cols < B_C
    cls_k, lab_k = _load_candidates(cls_ptr, lab_ptr, cols, col_ok)
    z_base = z_ptr + mod * B_C * D
    z_rows = cols.to(tl.int64) * D
    d_out = pid_d * BLOCK_DO + tl.arange(0, BLOCK_DO)
    d_ok = d_out < D
    z_out = _load_block(z_base, z_rows, col_ok, d_out, d_ok)

    grad = tl.zeros((BLOCK_N, BLOCK_DO), dtype=tl.float32)
    for j0 in range(0, B_A, BLOCK_M):
        g, p, ell, s_out, rows, row_ok, s_rows = _anchor_block_tile(
            s_ptr, z_base, z_rows, cols, col_ok, cls_k, lab_k, a_cls_ptr, a_lab_ptr, n11_ptr, const_ptr, j0,
            mod, d_out, d_ok, M, B_A, B_C, D, diag_offset, qk_scale, rbf_scale, log2_sigma, RBF, PHI,
            EXCLUDE_DIAGONAL, BLOCK_M, BLOCK_D, DOT_PRECISION, INTERPRET)
        g_low = round_to(g, s_out.dtype, INTERPRET)
        grad = _mma(tl.trans(g_low), s_out, grad, DOT_PRECISION, INTERPRET)
        partial = _mma(g_low, z_out, tl.zeros((BLOCK_M, BLOCK_DO), dtype=tl.float32), DOT_PRECISION, INTERPRET)
        tl.atomic_add(grad_s_ptr + s_rows[:, None] + d_out[None, :], partial * inv_temp,
                      mask=row_ok[:, None] & d_ok[None, :], sem="relaxed")
        if GRAD_T and pid_d == 0:
            t_part, g_part, a_part, s_part = _tau_sums(g, p, ell)
            plane = tl.cast(M, tl.int64) * B_A
            tl.atomic_add(tau_ptr + mod * B_A + rows, t_part, mask=row_ok, sem="relaxed")
            tl.atomic_add(tau_ptr + plane + mod * B_A + rows, g_part, mask=row_ok, sem="relaxed")
            tl.atomic_add(tau_ptr + 2 * plane + mod * B_A + rows, a_part, mask=row_ok, sem="relaxed")
            tl.atomic_add(tau_ptr + 3 * plane + mod * B_A + rows, s_part, mask=row_ok, sem="relaxed")
    out = grad_z_ptr + mod * B_C * D + z_rows[:, None] + d_out[None, :]
    tl.store(out, round_to(grad * inv_temp, grad_z_ptr.dtype.element_ty, INTERPRET),
             mask=col_ok[:, None] & d_ok[None, :])
