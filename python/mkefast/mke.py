"""Multimodal Knowledge Expansion (Xue, Ren, Gao, Zhao; ICCV 2021): the public API in one namespace.

The method: `MKEClassifier` (teachers and students, with the paper's perturbations), `student_loss` (one
batch), `train_classifier` (a teacher or a student, from tensors or a data loader), `pseudo_labels`. The
paper's experiments: `run_mke`, `run_seeds`, `table2`, `twomoon_config`, `mfeat_config`, `plot_twomoon`.

>>> from mkefast import mke
>>> from mkefast.data import split_twomoon
>>> split = split_twomoon()
>>> config = mke.twomoon_config(perturbation=mke.Perturbation(input_noise=2.0))
>>> result = mke.run_mke(split, config, seed=0)  # doctest: +SKIP
>>> result.accuracy["mm_student"] > result.accuracy["um_teacher"]  # doctest: +SKIP
True
"""

from mkefast.data.labels import PseudoLabels, pseudo_labels
from mkefast.experiments.mke_paper import (
    MODELS,
    TABLE2_GRID,
    MKEConfig,
    MKEResult,
    mfeat_config,
    plot_twomoon,
    run_mke,
    run_seeds,
    table2,
    twomoon_config,
)
from mkefast.models.mke_classifier import PERTURBATION_KINDS, MKEClassifier, Perturbation, scaled_gaussian_noise
from mkefast.train.common import accuracy
from mkefast.train.mke_trainer import (
    TrainConfig,
    distillation_loss,
    make_optimizer,
    student_loss,
    train_classifier,
    unpack_mke_batch,
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
    "make_optimizer",
    "mfeat_config",
    "plot_twomoon",
    "pseudo_labels",
    "run_mke",
    "run_seeds",
    "scaled_gaussian_noise",
    "student_loss",
    "table2",
    "train_classifier",
    "twomoon_config",
    "unpack_mke_batch",
]
