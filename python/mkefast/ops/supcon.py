"""Supervised contrastive loss as pytorch-metric-learning computes it, on the general op (docs/math.md,
"Special cases": SupCon, NT-Xent)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from mkefast.ops._validate import check_bool, check_float_tensor, check_integer_tensor
from mkefast.ops.soft_pu import SoftPUProblem, direction_terms, prepare_soft_pu, targets_of

__all__ = ["prepare_supcon", "reduce_supcon", "supcon_loss", "supcon_terms"]


class SupConTerms(NamedTuple):
    """Per-anchor losses `[B]` (0 for an anchor without a positive), which anchors have one, and the numbers
    of positive and negative pairs (0-d), from which pytorch-metric-learning decides whether to compute a
    loss at all."""

    losses: Tensor
    has_positive: Tensor
    pos_pairs: Tensor
    neg_pairs: Tensor


def prepare_supcon(
    embeddings: object, labels: object, ref_embeddings: object, ref_labels: object, *, temperature: object,
    normalize: object, reduction: object, backend: object, exclude_diagonal: object = None,
    label_floor: Tensor | None = None,
) -> SoftPUProblem:
    """The checks of `supcon_loss`, then the general op's problem: single view (candidates = the embeddings,
    the self pair excluded) or anchors against `ref_embeddings` (nothing excluded). The labels are shifted
    by `label_floor` (default: their minimum; across processes: the global one)."""
    embeddings = check_float_tensor("embeddings", embeddings)
    if embeddings.dim() != 2:
        raise ValueError(f"embeddings: expected a [B, d] tensor, got shape {list(embeddings.shape)}")
    labels = check_integer_tensor("labels", labels, (embeddings.shape[0],))
    if (ref_embeddings is None) != (ref_labels is None):
        raise ValueError("ref_labels: expected ref_embeddings and ref_labels together (both or neither)")
    if ref_embeddings is None:
        candidates, cand_labels = embeddings, labels
    else:
        candidates = check_float_tensor("ref_embeddings", ref_embeddings)
        if candidates.dim() != 2 or candidates.shape[1] != embeddings.shape[1]:
            raise ValueError(f"ref_embeddings: expected a [B_r, {embeddings.shape[1]}] tensor, got shape "
                             f"{list(candidates.shape)}")
        cand_labels = check_integer_tensor("ref_labels", ref_labels, (candidates.shape[0],))
    # Any integer ids, as in pytorch-metric-learning: shift them to >= 0 (the op reserves negatives for
    # "no class"); a min keeps the shapes static for torch.compile, unlike a unique.
    if exclude_diagonal is None:
        exclude_diagonal = ref_embeddings is None
    exclude_diagonal = check_bool("exclude_diagonal", exclude_diagonal)
    if exclude_diagonal and candidates.shape[0] != embeddings.shape[0]:
        raise ValueError(f"exclude_diagonal: needs as many reference rows as embeddings, got "
                         f"{candidates.shape[0]} and {embeddings.shape[0]}")
    low = torch.minimum(labels.min(), cand_labels.min()) if label_floor is None else label_floor
    problem = prepare_soft_pu(
        embeddings, candidates, cand_labels - low, None, None, temperature=temperature, rbf_sigma=math.inf,
        rbf_space="logit", normalize=normalize, reduction=reduction, return_parts=False, symmetric=False,
        exclude_diagonal=exclude_diagonal, backend=backend,
    )
    n = embeddings.shape[0]
    return problem._replace(anchor_labels=labels.to(torch.int64) - low,
                            anchor_labeled=torch.ones(n, dtype=torch.bool, device=labels.device))


def supcon_terms(problem: SoftPUProblem, diag_offset: int = 0) -> SupConTerms:
    """The per-anchor losses of a prepared SupCon call and the bookkeeping of pytorch-metric-learning's
    reduction: `mean_log_prob_pos` is 0 for anchors without a positive, and no loss at all is computed
    (zero) when the batch has no positive pair, no negative pair, or at most one of each."""
    targets = targets_of(problem, diag_offset)
    lb, _ = direction_terms(problem.anchors, problem.candidates, targets, problem.temperature, diag_offset,
                            problem.config)
    n11 = targets[4]
    denominator = problem.candidates.shape[1] - (1 if problem.config.exclude_diagonal else 0)
    pos_pairs = n11.sum()
    return SupConTerms(lb[0], n11 > 0, pos_pairs, n11.shape[0] * denominator - pos_pairs)


def reduce_supcon(
    terms: SupConTerms, reduction: str, dtype: torch.dtype, count: Tensor | None = None, mean_scale: float = 1.0
) -> Tensor:
    """"mean": over the `count` anchors with a positive (default: the local ones), times `mean_scale`; "sum";
    "none": `[B]`. Zero wherever
    pytorch-metric-learning computes no loss: no positive pair, no negative pair, or at most one of each
    (the counts in `terms` are global ones across processes)."""
    active = (terms.pos_pairs > 0) & (terms.neg_pairs > 0) & ((terms.pos_pairs > 1) | (terms.neg_pairs > 1))
    losses = torch.where(active, terms.losses, 0.0)
    if reduction == "none":
        return losses.to(dtype)
    total = losses.sum()
    if reduction == "sum":
        return total.to(dtype)
    count = terms.has_positive.sum() if count is None else count
    return (total * mean_scale / count.clamp(min=1)).to(dtype)


def supcon_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    temperature: float | Tensor = 0.1,
    normalize: bool = True,
    reduction: str = "mean",
    exclude_diagonal: bool | None = None,
    backend: str = "auto",
) -> Tensor:
    """Supervised contrastive loss, equal to pytorch-metric-learning's `SupConLoss` (loss and gradients).

    ```
    ℓ_jk = <e_j, e_k> / τ                 (e L2-normalized when normalize=True, as its CosineSimilarity)
    D(j) = every k ≠ j (single view), or every reference row k (with ref_embeddings)
    P(j) = {k ∈ D(j) : label_k == label_j}
    loss_j = -(1/|P(j)|) Σ_{k∈P(j)} log softmax_{D(j)}(ℓ_j)_k      (0 when P(j) is empty)
    "mean" = mean of loss_j over the anchors with |P(j)| > 0       (its AvgNonZeroReducer)
    ```

    It is the general op with every sample labeled, σ = inf and (single view) `exclude_diagonal=True`
    (docs/math.md, "Special cases"); the fused backends never build the B×B matrix. Like
    pytorch-metric-learning, the loss is 0 when the batch holds no positive pair, no negative pair, or at
    most one of each. NT-Xent / SimCLR is this loss on the 2N views of N samples with instance labels:

    >>> views = torch.cat([view_a, view_b])              # doctest: +SKIP
    >>> ids = torch.arange(n).repeat(2)                   # doctest: +SKIP
    >>> loss = mkefast.supcon_loss(views, ids, temperature=0.5)  # doctest: +SKIP

    Args:
        embeddings: `[B, d]` float tensor.
        labels: `[B]` integer labels (any values).
        ref_embeddings: `[B_r, d]` candidates (the reference set), or None for the single-view form.
        ref_labels: `[B_r]` their labels (given exactly when ref_embeddings is).
        temperature: τ, a float or a 0-d tensor (learnable).
        normalize: L2-normalize the embeddings first.
        reduction: "mean" (over anchors with a positive), "sum", or "none" (`[B]`).
        exclude_diagonal: leave the pair (j, j) out; default: True for the single view, False with
            reference embeddings (pytorch-metric-learning excludes it there too when `ref_labels` is the very
            same tensor object as `labels`; `mkefast.nn.SupConLoss` reproduces that).
        backend: "auto", "reference", "cpu", "cuda" or "triton".

    Returns:
        The loss in the embeddings' dtype.
    """
    problem = prepare_supcon(embeddings, labels, ref_embeddings, ref_labels, temperature=temperature,
                             normalize=normalize, reduction=reduction, backend=backend,
                             exclude_diagonal=exclude_diagonal)
    return reduce_supcon(supcon_terms(problem), problem.config.reduction, problem.anchors.dtype)
