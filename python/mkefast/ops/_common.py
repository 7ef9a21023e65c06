"""Options, per-sample targets and per-row statistics shared by every backend of the soft-PU loss."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor


@dataclass(frozen=True)
class SoftPUOptions:
    """The scalar options of the soft-PU loss; hashable, so that compiled graphs can key on them."""

    temperature: float = 0.1
    rbf_sigma: float = 1.0
    rbf_space: str = "logit"

    @property
    def rbf_enabled(self) -> bool:
        """False when σ = inf: every weight is then exactly 1."""
        return math.isfinite(self.rbf_sigma)

    @property
    def inv_two_sigma_sq(self) -> float:
        """1 / (2 σ²), 0 when σ = inf."""
        return 0.0 if not self.rbf_enabled else 1.0 / (2.0 * self.rbf_sigma * self.rbf_sigma)


class SoftPUTargets(NamedTuple):
    """The O(B) arrays from which every backend rebuilds the P11/P10 masks and their sizes.

    Every array is over the B candidates; anchor j is candidate `row_offset + j` (see `row_offset`).

    With c_k = labels[k] if labeled[k] else pseudo_labels[k] (negative: no guess), remapped to dense ids:

        P11(j, k) = labeled[j] and labeled[k] and cls[j] == cls[k]
        P10(j, k) = not (labeled[j] and labeled[k]) and (k == j or (cls[j] >= 0 and cls[k] == cls[j]))
    """

    cls: Tensor  # [B] int32: dense class id in [0, C), -1 for "no class"
    labeled: Tensor  # [B] bool
    n11: Tensor  # [B] float32: |P11(j)|
    n10: Tensor  # [B] float32: |P10(j)|
    num_classes: int  # C
    # The anchors may be a slice of the candidate batch (torch.distributed: each rank holds B_a anchors and
    # the gathered B candidates): anchor j is sample row_offset + j for every per-sample array above and
    # for the diagonal test k == j. 0 in the single-process case, where B_a == B.
    row_offset: int = 0


class SoftPUStats(NamedTuple):
    """What a soft-PU forward returns; every tensor is `[M, B]` in the accumulation dtype (float64 for
    float64 inputs, float32 otherwise).

    lb, ulb: the per-anchor loss terms. lse: log Σ_k exp(ℓ_jk). ref: the RBF reference r_j (in the chosen
    space). a_ulb: Σ_{k∈P10(j)} w_jk / |P10(j)|, the total coefficient of the unlabeled term, which the
    backward needs before it can visit a column.
    """

    lb: Tensor
    ulb: Tensor
    lse: Tensor
    ref: Tensor
    a_ulb: Tensor


def make_targets(labels: Tensor, labeled: Tensor, pseudo_labels: Tensor | None) -> SoftPUTargets:
    """Builds the per-sample class ids and the exact mask sizes in O(B log B), without a B×B mask."""
    labeled = labeled.to(torch.bool)
    raw = labels.to(torch.int64)
    if pseudo_labels is not None:
        raw = torch.where(labeled, raw, pseudo_labels.to(torch.int64))
    else:
        raw = torch.where(labeled, raw, torch.full_like(raw, -1))
    has_class = raw >= 0
    # Dense ids keep per-class tables small whatever the user's class ids are.
    uniq, inverse = torch.unique(torch.where(has_class, raw, raw.new_full((), -1)), return_inverse=True)
    offset = 1 if uniq.numel() > 0 and bool(uniq[0] < 0) else 0
    cls = torch.where(has_class, inverse - offset, inverse.new_full((), -1))
    num_classes = int(uniq.numel()) - offset
    safe = cls.clamp(min=0)
    minlength = max(num_classes, 1)
    n_lab = torch.bincount(safe[labeled & has_class], minlength=minlength)
    n_unl = torch.bincount(safe[~labeled & has_class], minlength=minlength)
    n11 = torch.where(labeled, n_lab[safe], 0)
    n10_unlabeled = torch.where(has_class, n_lab[safe] + n_unl[safe], 1)
    n10 = torch.where(labeled, n_unl[safe], n10_unlabeled)
    return SoftPUTargets(
        cls=cls.to(torch.int32).contiguous(),
        labeled=labeled.contiguous(),
        n11=n11.to(torch.float32),
        n10=n10.to(torch.float32),
        num_classes=num_classes,
    )


def logit_references(fused: Tensor, unimodal: Tensor, targets: SoftPUTargets, temperature: float) -> Tensor:
    """r_j of `rbf_space="logit"` for every modality in O(M·B·d), before any pass over pairs.

    r_j = <s_j, Σ_{k∈P11(j)} z_k> / (τ |P11(j)|) when j is labeled (P11(j) then holds j), else ℓ_jj.

    Args:
        fused: `[B_a, d]` anchors (anchor j is candidate `targets.row_offset + j`).
        unimodal: `[M, B, d]` candidates.

    Returns:
        `[M, B_a]` float32 (float64 for float64 inputs).
    """
    acc = torch.float64 if fused.dtype == torch.float64 else torch.float32
    s = fused.to(acc)
    z = unimodal.to(acc)
    m, _, d = z.shape
    rows = slice(targets.row_offset, targets.row_offset + s.shape[0])
    diag = torch.einsum("bd,mbd->mb", s, z[:, rows])
    lab = targets.labeled
    anchor_lab = lab[rows]
    if not bool(anchor_lab.any()):
        return diag / temperature
    cls = targets.cls.to(torch.int64)
    sums = z.new_zeros(m, max(targets.num_classes, 1), d)
    sums.index_add_(1, cls[lab], z[:, lab])
    own = sums[:, cls[rows].clamp(min=0)]  # [M, B_a, d]: the class sum of each anchor's label
    mean_dot = torch.einsum("bd,mbd->mb", s, own) / targets.n11[rows].clamp(min=1).to(acc)
    return torch.where(anchor_lab, mean_dot, diag) / temperature
