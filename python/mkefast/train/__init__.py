"""Trainers of the reference models and the helpers they share (seeding, checkpoints, progress)."""

from mkefast.train.common import Checkpointer, progress, seed_everything

__all__ = ["Checkpointer", "progress", "seed_everything"]
