"""The structures every backend of the contrastive op shares: options, per-sample targets, per-row statistics.

The math is in docs/math.md ("The general op"). One call of a backend computes ONE direction of the op:
anchors `[B_a, d]` against candidates `[M, B_c, d]`; the symmetric form is two such calls (the functional
layer swaps the roles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "SoftPUGrads",
    "SoftPUOptions",
    "SoftPUStats",
    "SoftPUTargets",
    "acc_dtype",
    "make_targets",
]


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """The accumulation dtype of inputs of `dtype`: float64 for float64, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@dataclass(frozen=True)
class SoftPUOptions:
    """The scalar options of one direction of the op; hashable, so that compiled graphs can key on them.

    Attributes:
        temperature: τ > 0 (a Python float here: a tensor temperature is read once per call, in the op).
        rbf_sigma: σ > 0, or inf for unit weights.
        rbf_space: "logit" or "phi" (where the RBF compares proximities).
        exclude_diagonal: the instance pair (j, partner(j)) leaves the denominator and P11 / P10.
    """

    temperature: float = 0.1
    rbf_sigma: float = 1.0
    rbf_space: str = "logit"
    exclude_diagonal: bool = False

    @property
    def rbf_enabled(self) -> bool:
        """False when σ = inf: every weight is then exactly 1. (A comparison, not math.isfinite: under
        torch.compile with dynamic shapes σ may be a SymFloat.)"""
        return self.rbf_sigma < math.inf

    @property
    def phi(self) -> bool:
        return self.rbf_space == "phi"

    @property
    def inv_sigma(self) -> float:
        """1/σ (0 when σ = inf). Weights are formed as exp(-½ ((x - r)/σ)²), never with 1/(2σ²), which
        overflows for σ < 1e-154 in float64 and σ < 1e-19 in float32."""
        return 1.0 / self.rbf_sigma if self.rbf_enabled else 0.0

    @property
    def log_sigma(self) -> float:
        """log σ, for the "phi" weights in log form (docs/math.md, "Numerics")."""
        return math.log(self.rbf_sigma) if self.rbf_enabled else math.inf


class SoftPUTargets(NamedTuple):
    """The O(B) arrays from which every backend rebuilds the masks P11 / P10 and the instance pairs.

    With c the dense class id (-1: none; a labeled sample always has one) and lab the labeled flag, for
    anchor j and candidate k:

        partner(j) = j + diag_offset if j + diag_offset < B_c, else none
        diag(j, k) = (k == partner(j))
        P11(j, k)  = anchor_labeled[j] & labeled[k] & anchor_cls[j] == cls[k]
        P10(j, k)  = !(anchor_labeled[j] & labeled[k]) & (diag(j, k) | (anchor_cls[j] >= 0 & cls[k] == anchor_cls[j]))
        with exclude_diagonal, diag(j, k) pairs leave P11, P10 and the denominator.

    n11 / n10 are the exact set sizes after that exclusion.
    """

    cls: Tensor  # [B_c] int32: dense class id of each candidate, -1 for none
    labeled: Tensor  # [B_c] bool
    anchor_cls: Tensor  # [B_a] int32: dense class id of each anchor, -1 for none
    anchor_labeled: Tensor  # [B_a] bool
    n11: Tensor  # [B_a] float32: |P11(j)|
    n10: Tensor  # [B_a] float32: |P10(j)|
    num_classes: int  # C (dense ids are in [0, C))
    # Anchor j's instance partner is candidate j + diag_offset (when that is < B_c). 0 in one process; a
    # rank's offset in the gathered batch under torch.distributed.
    diag_offset: int = 0

    def partner_ok(self, num_anchors: int) -> Tensor:
        """`[B_a]` bool: which anchors have an instance partner among the candidates."""
        rows = torch.arange(num_anchors, device=self.cls.device) + self.diag_offset
        return rows < self.cls.shape[0]


class SoftPUStats(NamedTuple):
    """What one direction's forward returns; every tensor is `[M, B_a]`.

    lb, ulb: the per-anchor terms (accumulation dtype). lse: log Σ_k exp(ℓ_jk) over the candidates in the
    denominator (accumulation dtype; -inf for a row without any). ref: the RBF reference ρ_j in LOGIT units
    in both spaces (phi: ρ = log r, so that e^ρ never overflows), float64, so that the backward recomputes
    every weight from the very value the forward used. a_ulb: Σ_{k∈P10(j)} w_jk / |P10(j)| (accumulation
    dtype), which the backward needs before it can visit a column.
    """

    lb: Tensor
    ulb: Tensor
    lse: Tensor
    ref: Tensor
    a_ulb: Tensor


class SoftPUGrads(NamedTuple):
    """What one direction's backward returns (None where not asked for).

    anchors: `[B_a, d]`; candidates: `[M, B_c, d]` (accumulation or input dtype; the op casts);
    temperature: a tensor of any shape whose SUM is ∂L/∂τ = -(1/τ) Σ_jk G_jk ℓ_jk (per-row partial sums, so
    that the backends reduce in a fixed order).
    """

    anchors: Tensor | None
    candidates: Tensor | None
    temperature: Tensor | None


def _class_ids(*arrays: Tensor) -> tuple[list[Tensor], int]:
    """Dense ids in [0, C) for the non-negative values of all `arrays` together (-1 stays -1)."""
    joint = torch.cat(arrays)
    has = joint >= 0
    uniq, inverse = torch.unique(torch.where(has, joint, joint.new_full((), -1)), return_inverse=True)
    offset = 1 if uniq.numel() > 0 and bool(uniq[0] < 0) else 0
    dense = torch.where(has, inverse - offset, inverse.new_full((), -1))
    return list(dense.split([a.shape[0] for a in arrays])), int(uniq.numel()) - offset


def make_targets(
    labels: Tensor,  # [B_c] int64 (values ignored where not labeled)
    labeled: Tensor,  # [B_c] bool
    pseudo_labels: Tensor | None,  # [B_c] int64, negative: no guess
    anchor_labels: Tensor,  # [B_a]
    anchor_labeled: Tensor,  # [B_a]
    anchor_pseudo: Tensor | None,  # [B_a]
    *,
    diag_offset: int,
    exclude_diagonal: bool,
) -> SoftPUTargets:
    """Dense class ids and the exact mask sizes in O(B log B), without a B_a×B_c mask.

    The anchors' arrays are separate from the candidates' (an anchor need not be a candidate: SupCon with
    reference embeddings); `mkefast.soft_pu_loss` passes the candidates' own first rows.
    """
    def classes(lab: Tensor, lbl: Tensor, pseudo: Tensor | None) -> Tensor:
        guess = pseudo.to(torch.int64) if pseudo is not None else torch.full_like(lbl, -1, dtype=torch.int64)
        return torch.where(lab, lbl.to(torch.int64), guess)

    labeled, anchor_labeled = labeled.to(torch.bool), anchor_labeled.to(torch.bool)
    (cls, a_cls), num_classes = _class_ids(classes(labeled, labels, pseudo_labels),
                                           classes(anchor_labeled, anchor_labels, anchor_pseudo))
    b_a, b_c = a_cls.shape[0], cls.shape[0]
    bins = max(num_classes, 1)
    has = cls >= 0
    n_lab = torch.bincount(cls[labeled & has], minlength=bins)
    n_unl = torch.bincount(cls[~labeled & has], minlength=bins)
    a_has = a_cls >= 0
    safe = a_cls.clamp(min=0)
    n11 = torch.where(anchor_labeled & a_has, n_lab[safe], 0)
    # P10 by class: the unlabeled candidates of the class for a labeled anchor, all of them otherwise.
    n10 = torch.where(a_has, torch.where(anchor_labeled, n_unl[safe], n_lab[safe] + n_unl[safe]), 0)

    # The partner pair: in P11 or P10 already by class, in P10 as the instance pair, or in neither.
    partner = torch.arange(b_a, device=cls.device) + diag_offset
    p_ok = partner < b_c
    p = partner.clamp(max=b_c - 1)
    p_lab, p_cls = labeled[p] & p_ok, torch.where(p_ok, cls[p], -2)
    both = anchor_labeled & p_lab
    same = a_has & (p_cls == a_cls)
    in11 = p_ok & both & same
    in10_by_class = p_ok & ~both & same
    in10_as_pair = p_ok & ~both & ~same
    n10 = n10 + in10_as_pair.to(n10.dtype)
    if exclude_diagonal:
        n11 = n11 - in11.to(n11.dtype)
        n10 = n10 - (in10_by_class | in10_as_pair).to(n10.dtype)
    return SoftPUTargets(
        cls=cls.to(torch.int32).contiguous(),
        labeled=labeled.contiguous(),
        anchor_cls=a_cls.to(torch.int32).contiguous(),
        anchor_labeled=anchor_labeled.contiguous(),
        n11=n11.to(torch.float32),
        n10=n10.to(torch.float32),
        num_classes=num_classes,
        diag_offset=diag_offset,
    )


def logit_references(anchors: Tensor, candidates: Tensor, targets: SoftPUTargets, options: SoftPUOptions) -> Tensor:
    """ρ_j of `rbf_space="logit"` for every modality in O(M·(B_a + B_c)·d), before any pass over pairs.

    ρ_j = <s_j, Σ_{k∈P11(j)} z_k> / (τ |P11(j)|) when P11(j) is non-empty, else ℓ_{j,partner(j)} (0 for an
    anchor without a partner, whose P10 is then empty too). Computed in float64.

    Args:
        anchors: `[B_a, d]`.
        candidates: `[M, B_c, d]`.

    Returns:
        `[M, B_a]` float64.
    """
    s, z = anchors.double(), candidates.double()
    m, b_c, d = z.shape
    b_a = s.shape[0]
    p_ok = targets.partner_ok(b_a)
    p = (torch.arange(b_a, device=s.device) + targets.diag_offset).clamp(max=b_c - 1)
    diag = torch.where(p_ok, torch.einsum("bd,mbd->mb", s, z[:, p]), 0.0)
    lab, cls = targets.labeled, targets.cls.to(torch.int64)
    sums = z.new_zeros(m, max(targets.num_classes, 1), d)
    sums.index_add_(1, cls[lab], z[:, lab])
    own = sums[:, targets.anchor_cls.to(torch.int64).clamp(min=0)]  # [M, B_a, d]: the class sum of each anchor
    if options.exclude_diagonal:
        partner_in_p11 = p_ok & targets.anchor_labeled & lab[p] & (cls[p] == targets.anchor_cls.to(torch.int64))
        own = own - torch.where(partner_in_p11[None, :, None], z[:, p], 0.0)
    n11 = targets.n11.double()
    mean_dot = torch.einsum("bd,mbd->mb", s, own) / n11.clamp(min=1)
    return torch.where(n11 > 0, mean_dot, diag) / options.temperature
