"""Label helpers: bins, label sets, and a teacher's pseudo labels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mkefast.data.labels import (
    PseudoLabels,
    discretize,
    multilabel_to_class_ids,
    pseudo_labels,
    pseudo_labels_from_logits,
    quantile_edges,
    teacher_labels,
)


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, views: object) -> torch.Tensor:
        assert not self.training  # a teacher labels without its perturbations
        return self.logits


def test_pseudo_labels_hard_soft_threshold() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.1], [-3.0, 3.0]])
    teacher = FixedLogits(logits).train()
    hard = pseudo_labels(teacher, {}, soft=False)
    assert torch.equal(hard.targets, torch.tensor([0, 1, 1])) and bool(hard.mask.all()) and not hard.soft
    assert teacher.training  # its mode is given back
    soft = pseudo_labels(teacher, {}, soft=True)
    assert soft.soft
    torch.testing.assert_close(soft.targets, logits.softmax(1))
    kept = pseudo_labels(teacher, {}, threshold=0.8)
    assert kept.mask.tolist() == [True, False, True]
    assert kept.class_ids().tolist() == [0, -1, 1]
    assert pseudo_labels(teacher, {}, soft=True, threshold=0.8).class_ids().tolist() == [0, -1, 1]
    with pytest.raises(ValueError, match="threshold"):
        pseudo_labels(teacher, {}, threshold=0.999)
    assert not pseudo_labels(teacher, {}, threshold=0.999, allow_empty=True).mask.any()
    with pytest.raises(ValueError, match="threshold"):
        pseudo_labels(teacher, {}, threshold=1.0)
    with pytest.raises(ValueError, match="logits"):
        PseudoLabels.from_logits(torch.zeros(3))


def test_pseudo_labels_from_logits_threshold() -> None:
    logits = torch.tensor([[5.0, 0.0], [0.1, 0.0], [0.0, 3.0]])
    assert pseudo_labels_from_logits(logits).tolist() == [0, 0, 1]
    assert pseudo_labels_from_logits(logits, 0.9).tolist() == [0, -1, 1]


def test_teacher_labels_accepts_ids_or_logits() -> None:
    views = [torch.zeros(3, 2)]
    logits = torch.tensor([[5.0, 0.0], [0.1, 0.0], [0.0, 3.0]])
    assert teacher_labels(lambda v: logits, views, 3, threshold=0.9).tolist() == [0, -1, 1]
    assert teacher_labels(lambda v: torch.tensor([2, -1, 0]), views, 3).tolist() == [2, -1, 0]
    for bad in (torch.zeros(3), torch.zeros(4, dtype=torch.long), torch.zeros(2, 3)):
        with pytest.raises(ValueError, match="teacher"):
            teacher_labels(lambda v, bad=bad: bad, views, 3)


def test_multilabel_to_class_ids() -> None:
    sets = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0]])
    ids, vocab = multilabel_to_class_ids(sets)
    assert ids[0] == ids[2] and len({ids[0].item(), ids[1].item(), ids[3].item()}) == 3
    torch.testing.assert_close(vocab[ids], sets.bool())
    other, _ = multilabel_to_class_ids(torch.tensor([[0, 1, 0], [1, 1, 1]], dtype=torch.bool), vocab)
    assert other.tolist() == [ids[1].item(), -1]
    with pytest.raises(TypeError, match="label_sets"):
        multilabel_to_class_ids(torch.rand(2, 3))
    with pytest.raises(ValueError, match="label_sets"):
        multilabel_to_class_ids(torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="vocabulary"):
        multilabel_to_class_ids(sets, vocab[:, :2])


def test_quantile_bins() -> None:
    values = torch.arange(100, dtype=torch.float32)
    edges = quantile_edges(values, 4)
    assert edges.shape == (3,)
    assert torch.bincount(discretize(values, edges)).tolist() == [25, 25, 25, 25]
    with pytest.raises(ValueError, match="values"):
        quantile_edges(torch.empty(0), 4)
    with pytest.raises(ValueError, match="num_bins"):
        quantile_edges(values, 1)
