"""What the experiment commands share: argument types, the `--device` option, and the JSON they write."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from mkefast._build import provenance

__all__ = ["add_device_argument", "default_device", "fraction", "positive_int", "write_json"]


def default_device() -> str:
    """The device the commands train on unless told otherwise: CUDA when one is visible, else the CPU."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """Adds `--device` (default: `default_device()`); the losses run on the backend `auto` picks there."""
    parser.add_argument("--device", default=default_device(),
                        help="where to train: cpu, cuda, cuda:1, ... (default: cuda when available)")


def fraction(text: str) -> float:
    """argparse type: a fraction in (0, 1]."""
    value = float(text)
    if not 0.0 < value <= 1.0 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    """Writes `payload` and its provenance (mkefast version and commit, torch, Triton, date) to `path`."""
    if path is None:
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps({**payload, "provenance": provenance()}, indent=2, default=str) + "\n")
