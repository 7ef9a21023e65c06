"""Robult in one namespace: the model, its trainer and losses, the helpers, and the experiment runner.

>>> from mkefast import robult
>>> model = robult.Robult([76, 64], num_outputs=10, modality_names=["fou", "kar"])
>>> trainer = robult.RobultTrainer(model, robult.RobultConfig(epochs=100))  # then trainer.fit(...)
"""

from mkefast.models.robult import LATE_FUSIONS, Robult, RobultOutput, late_fusion
from mkefast.train.robult import (
    ROBULT_VARIANTS,
    RobultConfig,
    RobultLosses,
    RobultTrainer,
    discretize,
    evaluate,
    multilabel_to_class_ids,
    pseudo_labels_from_logits,
    quantile_edges,
    robult_losses,
    run_experiment,
    train_supervised,
)

__all__ = [
    "LATE_FUSIONS",
    "ROBULT_VARIANTS",
    "Robult",
    "RobultConfig",
    "RobultLosses",
    "RobultOutput",
    "RobultTrainer",
    "discretize",
    "evaluate",
    "late_fusion",
    "multilabel_to_class_ids",
    "pseudo_labels_from_logits",
    "quantile_edges",
    "robult_losses",
    "run_experiment",
    "train_supervised",
]
