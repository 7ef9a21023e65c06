"""Pieces shared by the per-op benchmark modules."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import cast

import torch

from mkefast._build import BACKEND_NAMES
from mkefast.backends import BackendUnavailableError, resolve_backend

COMPILED = "reference_compiled"
"""The provider that runs the `reference` backend's dense math under `torch.compile`."""


def backend_providers(
    op: str, device: str, dtype: torch.dtype = torch.float32, peers: tuple[str, ...] = ()
) -> list[str]:
    """The backends that can run `op` on `device` here, then `reference_compiled`, then the `peers` (other
    libraries' implementations of the same loss, which run on any device)."""
    names = []
    for name in BACKEND_NAMES:
        try:
            resolve_backend(name, op, torch.device(device), dtype)
        except BackendUnavailableError:
            continue
        names.append(name)
    return [*names, COMPILED, *peers]


def installed(module: str) -> bool:
    """Whether `module` can be imported here (without importing it)."""
    return importlib.util.find_spec(module) is not None


def compiled(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """`torch.compile` of `fn` with static shapes (one benchmark point is one shape). The reference backend is
    plain differentiable PyTorch, so the compiler sees, fuses and differentiates the whole dense computation."""
    return cast(Callable[..., torch.Tensor], torch.compile(fn, dynamic=False))


def itemsize(dtype: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype)).element_size()


_GEMMS = {"fwd": 1, "bwd": 3, "fwd+bwd": 4}


def gemm_flops(mode: str, rows: int, cols: int, d: int, m: int = 1) -> float:
    """Work in GEMM-equivalents of one `[rows, d] × [d, cols]` product (2·rows·cols·d flops) per modality: the
    forward is one (the logits), the backward three (the logits again and the two input gradients). The
    same count for every provider of an op, so that TFLOP/s compares providers at equal work."""
    return 2.0 * rows * cols * d * m * _GEMMS[mode]
