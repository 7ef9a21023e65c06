"""Data sets: TwoMoon (generated, the MKE paper's protocol) and UCI Multiple Features (mfeat, shipped)."""

from mkefast.data.mfeat import (
    MFEAT_VIEWS,
    MultiViewData,
    MultiViewSplit,
    MultiViewTensors,
    load_mfeat,
    split_multiview,
)
from mkefast.data.twomoon import TWOMOON_VIEWS, load_twomoon, split_twomoon, twomoon_seeds

__all__ = [
    "MFEAT_VIEWS",
    "TWOMOON_VIEWS",
    "MultiViewData",
    "MultiViewSplit",
    "MultiViewTensors",
    "load_mfeat",
    "load_twomoon",
    "split_multiview",
    "split_twomoon",
    "twomoon_seeds",
]
