"""Data sets: TwoMoon (generated, the MKE paper's protocol), UCI Multiple Features (mfeat, shipped),
synthetic views with known redundant / unique / synergistic information, your own views from an .npz
archive (`load_npz`); and the label helpers (bins, label sets, pseudo labels) in `mkefast.data.labels`."""

from mkefast.data.labels import (
    PseudoLabels,
    discretize,
    multilabel_to_class_ids,
    pseudo_labels,
    pseudo_labels_from_logits,
    quantile_edges,
    teacher_labels,
)
from mkefast.data.mfeat import (
    MFEAT_VIEWS,
    MultiViewData,
    MultiViewSplit,
    MultiViewTensors,
    load_mfeat,
    split_indices,
    split_multiview,
)
from mkefast.data.npz import load_npz
from mkefast.data.twomoon import TWOMOON_VIEWS, load_twomoon, split_twomoon, twomoon_seeds

__all__ = [
    "MFEAT_VIEWS",
    "TWOMOON_VIEWS",
    "MultiViewData",
    "MultiViewSplit",
    "MultiViewTensors",
    "PseudoLabels",
    "discretize",
    "load_mfeat",
    "load_npz",
    "load_twomoon",
    "multilabel_to_class_ids",
    "pseudo_labels",
    "pseudo_labels_from_logits",
    "quantile_edges",
    "split_indices",
    "split_multiview",
    "split_twomoon",
    "teacher_labels",
    "twomoon_seeds",
]
