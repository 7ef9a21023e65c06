"""Helpers shared by the trainers: seeded runs, resumable checkpoints, progress bars."""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

__all__ = ["Checkpointer", "progress", "seed_everything"]

T = TypeVar("T")


def seed_everything(seed: int) -> torch.Generator:
    """Seeds Python, NumPy and torch; returns a torch.Generator seeded the same, for explicit use."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def progress(iterable: Iterable[T], *, desc: str, total: int | None = None, enabled: bool | None = None,
             leave: bool = False) -> Iterator[T]:
    """A tqdm bar on stderr when it is a terminal (or `enabled=True`), the plain iterable otherwise."""
    if enabled is None:
        enabled = sys.stderr.isatty() and os.environ.get("MKEFAST_PROGRESS", "1") != "0"
    if not enabled:
        return iter(iterable)
    from tqdm.auto import tqdm

    return iter(tqdm(iterable, desc=desc, total=total, leave=leave, dynamic_ncols=True))


class Checkpointer:
    """Saves and restores a training state every `every` steps, so that an interrupted run resumes.

    The state is a dict of anything `torch.save` handles (module and optimizer `state_dict()`s, the step,
    RNG states); writes go to a temporary file first and are renamed, so a crash never leaves a torn file.

    Args:
        path: checkpoint file, or None to disable checkpointing.
        every: save period in steps.
    """

    def __init__(self, path: str | os.PathLike[str] | None, every: int = 100) -> None:
        if every < 1:
            raise ValueError(f"every: expected a period >= 1, got {every}")
        self.path = Path(path) if path is not None else None
        self.every = every

    def load(self) -> dict[str, Any] | None:
        """The saved state, or None when there is none."""
        if self.path is None or not self.path.exists():
            return None
        return torch.load(self.path, map_location="cpu", weights_only=False)

    def maybe_save(self, step: int, state: dict[str, Any], *, force: bool = False) -> None:
        """Saves `state` when `step` is a multiple of `every` (or `force`)."""
        if self.path is None or not (force or step % self.every == 0):
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)

    @staticmethod
    def rng_state() -> dict[str, Any]:
        """Every RNG state a training loop consumes, to store in a checkpoint."""
        return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}

    @staticmethod
    def set_rng_state(state: dict[str, Any]) -> None:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
