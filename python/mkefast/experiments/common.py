"""What the experiment commands share: argument types, the `--device` and `--progress` options, the checks a
command makes before it trains, and the JSON they write.

The argument types check a value where argparse reads it, so that a mistake is reported as
`mkefast <command>: error: argument --seed: expected ...` before anything is loaded or trained.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mkefast._build import provenance
from mkefast.train.common import check_device

__all__ = [
    "MAX_SEED",
    "add_device_argument",
    "add_progress_argument",
    "check_backend",
    "default_device",
    "device_name",
    "existing_dir",
    "existing_file",
    "float_range",
    "fraction",
    "int_range",
    "name_list",
    "nonnegative_float",
    "one_name",
    "open_fraction",
    "output_dir",
    "output_file",
    "positive_float",
    "positive_int",
    "probability",
    "require_modules",
    "seed_int",
    "write_json",
]

MAX_SEED = 2**32 - 1
"""The largest seed every consumer accepts (scikit-learn's `random_state` is a 32-bit unsigned integer)."""


def default_device() -> str:
    """The device the commands train on unless told otherwise: CUDA when one is visible, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def device_name(text: str) -> str:
    """argparse type: a device that exists here (`cpu`, `cuda`, `cuda:<index>`, `mps`)."""
    try:
        check_device(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:<index>, got {text!r}") from None
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device is visible here "
                                             "(torch.cuda.is_available() is False); use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(f"{text!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise argparse.ArgumentTypeError(f"{text!r}: MPS is not available here; use --device cpu")
    elif device.type != "cpu":
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:<index>, got {text!r}")
    return text


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """Adds `--device` (default: `default_device()`); the losses run on the backend `auto` picks there."""
    parser.add_argument("--device", type=device_name, default=default_device(),
                        help="where to train: cpu, cuda, cuda:1, ... (cuda where one is visible)")


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """Adds `--progress` / `--no-progress` (default: bars on a terminal, a line every few seconds elsewhere)."""
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="report training progress: bars on a terminal, a line per stage and every few seconds "
                             "in a log (default: on, unless MKEFAST_PROGRESS=0)")


def _number(text: str, kind: type[int] | type[float]) -> Any:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, "
                                         f"got {text!r}") from None


def int_range(low: int, high: int | None = None) -> Callable[[str], int]:
    """argparse type: an integer in [low, high] (no upper bound when `high` is None)."""

    def parse(text: str) -> int:
        value = _number(text, int)
        if value < low or (high is not None and value > high):
            expected = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"expected an integer {expected}, got {text}")
        return int(value)

    return parse


def float_range(low: float, high: float, *, low_open: bool = False, high_open: bool = False) -> Callable[[str], float]:
    """argparse type: a finite number between `low` and `high` (each bound excluded when `*_open`)."""
    interval = f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"

    def parse(text: str) -> float:
        value = _number(text, float)
        above = value > low if low_open else value >= low
        below = value < high if high_open else value <= high
        if not (math.isfinite(value) and above and below):
            raise argparse.ArgumentTypeError(f"expected a number in {interval}, got {text}")
        return float(value)

    return parse


positive_int = int_range(1)
"""argparse type: an integer >= 1."""

seed_int = int_range(0, MAX_SEED)
"""argparse type: a seed in [0, 2**32 - 1]."""

fraction = float_range(0.0, 1.0, low_open=True)
"""argparse type: a fraction in (0, 1]."""

open_fraction = float_range(0.0, 1.0, low_open=True, high_open=True)
"""argparse type: a fraction in (0, 1) (a labeled part and an unlabeled part, both non-empty)."""

probability = float_range(0.0, 1.0, high_open=True)
"""argparse type: a confidence threshold in [0, 1)."""

positive_float = float_range(0.0, math.inf, low_open=True, high_open=True)
"""argparse type: a finite number > 0."""

nonnegative_float = float_range(0.0, math.inf, high_open=True)
"""argparse type: a finite number >= 0."""


def name_list(known: Sequence[str] | None = None, *, minimum: int = 1) -> Callable[[str], tuple[str, ...]]:
    """argparse type: comma-separated distinct names, at least `minimum`, each from `known` when given."""

    def parse(text: str) -> tuple[str, ...]:
        names = tuple(part.strip() for part in text.split(","))
        if any(not name for name in names) or len(names) < minimum:
            raise argparse.ArgumentTypeError(f"expected {'a name' if minimum == 1 else f'at least {minimum} names'}"
                                             f"{'' if minimum == 1 else ' separated by commas'}, got {text!r}")
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise argparse.ArgumentTypeError(f"{', '.join(duplicates)} given twice in {text!r}")
        unknown = [n for n in names if known is not None and n not in known]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(map(repr, unknown))}; expected names from "
                                             f"{', '.join(known or ())}")
        return names

    return parse


def one_name(known: Sequence[str] | None = None) -> Callable[[str], str]:
    """argparse type: one name, from `known` when given."""
    parse_list = name_list(known)

    def parse(text: str) -> str:
        names = parse_list(text)
        if len(names) != 1:
            raise argparse.ArgumentTypeError(f"expected one name, got {text!r}")
        return names[0]

    return parse


def _writable_place(path: Path) -> None:
    """Raises ArgumentTypeError unless `path` can be created (or overwritten) without creating anything now."""
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise argparse.ArgumentTypeError(f"{str(path)!r}: {str(ancestor)!r} is a file, not a directory")
    target = path if path.exists() else ancestor
    if not os.access(target, os.W_OK | (os.X_OK if target.is_dir() else 0)):
        raise argparse.ArgumentTypeError(f"{str(path)!r}: no permission to write in {str(target)!r}")


def output_file(text: str) -> Path:
    """argparse type: a file the command can write at the end (missing folders are created then)."""
    path = Path(text)
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"expected a file path, got {text!r}"
                                         f"{' (a directory)' if text else ''}")
    _writable_place(path)
    return path


def output_dir(text: str) -> Path:
    """argparse type: a directory the command can create or write in."""
    path = Path(text)
    if not text or (path.exists() and not path.is_dir()):
        raise argparse.ArgumentTypeError(f"expected a directory, got {text!r}{' (a file)' if text else ''}")
    _writable_place(path)
    return path


def existing_file(text: str) -> Path:
    """argparse type: a readable file."""
    path = Path(text)
    if not path.is_file():
        reason = "a directory" if path.is_dir() else "no such file"
        raise argparse.ArgumentTypeError(f"{text!r}: {reason}")
    if not os.access(path, os.R_OK):
        raise argparse.ArgumentTypeError(f"{text!r}: no permission to read it")
    return path


def existing_dir(text: str) -> Path:
    """argparse type: a directory that exists."""
    path = Path(text)
    if not path.is_dir():
        reason = "a file, not a directory" if path.exists() else "no such directory"
        raise argparse.ArgumentTypeError(f"{text!r}: {reason}")
    return path


def require_modules(*names: str) -> None:
    """Imports the optional modules a command needs before it starts training, so that a missing one ends the
    command at once (`mkefast.cli` names the extra that installs it) instead of after minutes of work.

    Raises:
        ModuleNotFoundError: one of them is not installed.
    """
    for name in names:
        importlib.import_module(name)


def check_backend(backend: str, device: str) -> None:
    """Checks, before training, that the losses' `backend` (or `MKEFAST_BACKEND` for `"auto"`) can run the ops
    Robult trains with on `device` in float32.

    Raises:
        ValueError: an unknown backend name.
        BackendUnavailableError: a backend asked for by name that cannot run here, with the reason.
    """
    from mkefast.backends import resolve_backend

    for op in ("soft_pu", "cosine_rec"):
        resolve_backend(backend, op, torch.device(device), torch.float32)


def write_json(path: str | os.PathLike[str] | None, payload: dict[str, Any]) -> None:
    """Writes `payload` and its provenance (mkefast version and commit, torch, Triton, date) to `path`."""
    if path is None:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**payload, "provenance": provenance()}, indent=2, default=str) + "\n")
