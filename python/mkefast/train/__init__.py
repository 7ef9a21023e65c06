"""The methods' trainers: MKE (`mke_trainer`), Robult (`robult_trainer`), and what they share (`common`:
seeding, devices, batches, accuracy, checkpoints). The papers' experiments are in `mkefast.experiments`."""

from mkefast.train.common import Checkpointer, accuracy, progress, seed_everything
from mkefast.train.mke_trainer import TrainConfig, student_loss, train_classifier
from mkefast.train.robult_trainer import RobultConfig, RobultTrainer, robult_loss

__all__ = [
    "Checkpointer",
    "RobultConfig",
    "RobultTrainer",
    "TrainConfig",
    "accuracy",
    "progress",
    "robult_loss",
    "seed_everything",
    "student_loss",
    "train_classifier",
]
