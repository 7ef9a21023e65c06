"""Label helpers: class ids for the soft-PU masks (bins, label sets) and pseudo labels from a teacher.

- `quantile_edges` / `discretize`: regression targets -> equal-count bins, the classes of the soft-PU masks.
- `multilabel_to_class_ids`: multi-label rows -> one class per distinct label set (label powerset).
- `PseudoLabels.from_logits` / `pseudo_labels`: a teacher's hard or soft labels and the rows it is confident
  about (MKE's students learn from them).
- `pseudo_labels_from_logits` / `teacher_labels`: class ids with -1 where there is no confident guess (the
  form the soft-PU loss reads).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "PseudoLabels",
    "discretize",
    "multilabel_to_class_ids",
    "pseudo_labels",
    "pseudo_labels_from_logits",
    "quantile_edges",
    "teacher_labels",
]


def quantile_edges(values: Tensor, num_bins: int) -> Tensor:
    """The `num_bins - 1` inner quantile edges of `values` `[N]` (equal-count bins)."""
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"values: expected a non-empty [N] tensor, got {list(values.shape)}")
    if num_bins < 2:
        raise ValueError(f"num_bins: expected >= 2, got {num_bins}")
    q = torch.linspace(0, 1, num_bins + 1, dtype=torch.float64)[1:-1]
    return torch.quantile(values.double(), q.to(values.device)).to(values.dtype)


def discretize(values: Tensor, edges: Tensor) -> Tensor:
    """Bin ids `[N]` int64 of regression targets `[N]` for the soft-PU masks (`edges` from `quantile_edges`)."""
    return torch.bucketize(values.contiguous(), edges.to(values.device).contiguous()).long()


def multilabel_to_class_ids(label_sets: Tensor, vocabulary: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Maps multi-label rows to class ids, one class per distinct label set (label powerset).

    Two samples are then positives of each other in the soft-PU loss exactly when their label sets are
    equal. Pass the vocabulary returned for the training rows to map other rows the same way.

    Args:
        label_sets: `[N, L]` bool or 0/1 indicator matrix.
        vocabulary: `[K, L]` known label sets (class k = row k), or None to build it from `label_sets`.

    Returns:
        `(class_ids [N] int64, vocabulary [K, L] bool)`; with a given vocabulary, unknown sets map to -1.
    """
    if label_sets.dim() != 2:
        raise ValueError(f"label_sets: expected an [N, L] indicator matrix, got {list(label_sets.shape)}")
    if label_sets.dtype != torch.bool:
        if label_sets.is_floating_point() or not bool(((label_sets == 0) | (label_sets == 1)).all()):
            raise TypeError(f"label_sets: expected a bool or 0/1 integer tensor, got {label_sets.dtype}")
        label_sets = label_sets.bool()
    if vocabulary is None:
        vocabulary, ids = torch.unique(label_sets, dim=0, return_inverse=True)
        return ids.long(), vocabulary
    if vocabulary.dim() != 2 or vocabulary.shape[1] != label_sets.shape[1]:
        raise ValueError(f"vocabulary: expected shape [K, {label_sets.shape[1]}], got {list(vocabulary.shape)}")
    match = (label_sets.unsqueeze(1) == vocabulary.bool().unsqueeze(0)).all(-1)  # [N, K]
    ids = torch.where(match.any(1), match.float().argmax(1), torch.full_like(match[:, 0], -1, dtype=torch.long))
    return ids.long(), vocabulary.bool()


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold: expected a confidence in [0, 1), got {threshold}")


@dataclass
class PseudoLabels:
    """A teacher's labels for unlabeled rows.

    Attributes:
        targets: int64 class ids `[N]` (hard) or float32 probabilities `[N, C]` (soft).
        mask: bool `[N]`, the rows whose teacher confidence reaches the threshold (all rows without one).
        confidence: float32 `[N]`, the teacher's top probability.
    """

    targets: Tensor
    mask: Tensor
    confidence: Tensor

    @property
    def soft(self) -> bool:
        return self.targets.dim() == 2

    @classmethod
    def from_logits(cls, logits: Tensor, *, soft: bool = False, threshold: float = 0.0) -> PseudoLabels:
        """Labels from a teacher's logits `[N, C]` (detached, softmax in float32 or wider).

        Args:
            logits: the teacher's outputs.
            soft: keep the probabilities (for a KL loss) instead of the argmax.
            threshold: rows whose top probability is below it are left out of `mask`, in [0, 1).
        """
        _check_threshold(threshold)
        if logits.dim() != 2:
            raise ValueError(f"logits: expected [N, C], got {list(logits.shape)}")
        logits = logits.detach()
        probs = (logits if logits.dtype == torch.float64 else logits.float()).softmax(dim=-1)
        confidence, hard = probs.max(dim=-1)
        return cls(probs if soft else hard, confidence >= threshold, confidence)

    def class_ids(self) -> Tensor:
        """Hard class ids `[N]` int64 with -1 on the rows left out by the threshold."""
        ids = self.targets.argmax(dim=-1) if self.soft else self.targets
        return torch.where(self.mask, ids, torch.full_like(ids, -1))


def _eval_call(teacher: Callable[[Any], Tensor], views: Any) -> Tensor:
    """Calls `teacher` without gradients; a module runs in eval mode (no dropout or noise) and gets its
    mode back."""
    was_training = isinstance(teacher, nn.Module) and teacher.training
    if isinstance(teacher, nn.Module):
        teacher.eval()
    try:
        with torch.no_grad():
            return teacher(views)
    finally:
        if was_training:
            assert isinstance(teacher, nn.Module)
            teacher.train()


def pseudo_labels(teacher: Callable[[Mapping[str, Tensor]], Tensor], views: Mapping[str, Tensor], *,
                  soft: bool = False, threshold: float = 0.0, allow_empty: bool = False) -> PseudoLabels:
    """Labels the rows of `views` with `teacher` (a module runs in eval mode, so without perturbations).

    Args:
        teacher: a classifier mapping the views to logits `[N, C]`.
        views: the unlabeled rows, view name -> `[N, f_view]` (moved to the teacher's device when it is a
            module with parameters).
        soft: keep the teacher's probabilities (for a KL loss) instead of its argmax.
        threshold: keep only rows whose top probability is >= threshold (0 keeps all), in [0, 1).
        allow_empty: return a mask that keeps no row instead of raising (for one batch of many).

    Raises:
        ValueError: the threshold is out of range, or keeps no row and `allow_empty` is False.
    """
    _check_threshold(threshold)
    if isinstance(teacher, nn.Module):
        device = next((p.device for p in teacher.parameters()), None)
        if device is not None:
            views = {name: x.to(device) for name, x in views.items()}
    labels = PseudoLabels.from_logits(_eval_call(teacher, views), soft=soft, threshold=threshold)
    if not allow_empty and not bool(labels.mask.any()):
        raise ValueError(f"threshold: no row reaches a teacher confidence of {threshold} "
                         f"(max {float(labels.confidence.max()):.3f})")
    return labels


def pseudo_labels_from_logits(logits: Tensor, threshold: float = 0.0) -> Tensor:
    """argmax of `logits` `[B, K]` as `[B]` int64; -1 where the softmax confidence is below `threshold`."""
    return PseudoLabels.from_logits(logits, threshold=threshold).class_ids()


def teacher_labels(teacher: Callable[[Any], Tensor], views: Any, rows: int, *, threshold: float = 0.0) -> Tensor:
    """A teacher's guesses for the soft-PU loss: class ids `[rows]` int64, -1 where it has none.

    Args:
        teacher: maps the views to class ids `[rows]` (negative: no guess) or logits `[rows, K]`.
        views: what the teacher reads (e.g. Robult's list of M views `[rows, f_i]`).
        rows: the number of rows in `views`.
        threshold: with logits, guesses whose softmax confidence is below it become -1.

    Raises:
        ValueError: the teacher returned something else than `[rows]` integers or `[rows, K]` logits.
    """
    guess = _eval_call(teacher, views)
    if guess.dim() == 2 and guess.shape[0] == rows and guess.is_floating_point():
        return pseudo_labels_from_logits(guess, threshold)
    if guess.dim() != 1 or guess.shape[0] != rows or guess.is_floating_point():
        raise ValueError(f"teacher: expected [{rows}] class ids or [{rows}, K] logits, got {guess.dtype} "
                         f"{list(guess.shape)}")
    return guess.long()
