"""Multimodal Knowledge Expansion (Xue, Ren, Gao, Zhao; ICCV 2021): the public API in one namespace.

>>> from mkefast import mke
>>> from mkefast.data import split_twomoon
>>> split = split_twomoon()
>>> config = mke.twomoon_config(perturbation=mke.Perturbation(input_noise=2.0))
>>> result = mke.run_mke(split, config, seed=0)  # doctest: +SKIP
>>> result.accuracy["mm_student"] > result.accuracy["um_teacher"]  # doctest: +SKIP
True
"""

from mkefast.models.mke import PERTURBATION_KINDS, MKEClassifier, Perturbation, scaled_gaussian_noise
from mkefast.train.mke import (
    MODELS,
    TABLE2_GRID,
    MKEConfig,
    MKEResult,
    PseudoLabels,
    TrainConfig,
    accuracy,
    distillation_loss,
    mfeat_config,
    plot_twomoon,
    pseudo_labels,
    run_mke,
    run_seeds,
    table2,
    train_classifier,
    twomoon_config,
)

__all__ = [
    "MODELS",
    "PERTURBATION_KINDS",
    "TABLE2_GRID",
    "MKEClassifier",
    "MKEConfig",
    "MKEResult",
    "Perturbation",
    "PseudoLabels",
    "TrainConfig",
    "accuracy",
    "distillation_loss",
    "mfeat_config",
    "plot_twomoon",
    "pseudo_labels",
    "run_mke",
    "run_seeds",
    "scaled_gaussian_noise",
    "table2",
    "train_classifier",
    "twomoon_config",
]
