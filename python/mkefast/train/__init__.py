"""Trainers of the reference models and the helpers they share (seeding, checkpoints, progress)."""

from mkefast.train.common import Checkpointer, progress, seed_everything
from mkefast.train.mke import MKEConfig, TrainConfig, run_mke
from mkefast.train.robult import RobultConfig, RobultTrainer

__all__ = [
    "Checkpointer",
    "MKEConfig",
    "RobultConfig",
    "RobultTrainer",
    "TrainConfig",
    "progress",
    "run_mke",
    "seed_everything",
]
