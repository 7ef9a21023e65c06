"""Robult in one namespace: the model, its loss and trainer, the label helpers, and the experiment runner.

>>> from mkefast import robult
>>> model = robult.Robult([76, 64], num_outputs=10, modality_names=["fou", "kar"])
>>> trainer = robult.RobultTrainer(model, robult.RobultConfig(epochs=100))  # then trainer.fit(...)

In a loop of your own, `robult.robult_loss(model, views, targets, labeled, config=config).total` is what
the trainer differentiates for each batch.
"""

from mkefast.data.labels import (
    discretize,
    multilabel_to_class_ids,
    pseudo_labels_from_logits,
    quantile_edges,
    teacher_labels,
)
from mkefast.experiments.robult_paper import ROBULT_VARIANTS, run_experiment, train_supervised
from mkefast.models.robult_model import LATE_FUSIONS, Robult, RobultOutput, late_fusion
from mkefast.train.robult_trainer import (
    RobultConfig,
    RobultLosses,
    RobultStep,
    RobultTrainer,
    evaluate,
    make_optimizer,
    pu_classes,
    regression_bin_edges,
    robult_loss,
    robult_losses,
    unpack_robult_batch,
    weighted_total,
)

__all__ = [
    "LATE_FUSIONS",
    "ROBULT_VARIANTS",
    "Robult",
    "RobultConfig",
    "RobultLosses",
    "RobultOutput",
    "RobultStep",
    "RobultTrainer",
    "discretize",
    "evaluate",
    "late_fusion",
    "make_optimizer",
    "multilabel_to_class_ids",
    "pseudo_labels_from_logits",
    "pu_classes",
    "quantile_edges",
    "regression_bin_edges",
    "robult_loss",
    "robult_losses",
    "run_experiment",
    "teacher_labels",
    "train_supervised",
    "unpack_robult_batch",
    "weighted_total",
]
