"""Pieces shared by the per-op benchmark modules."""

from __future__ import annotations

import torch

from mkefast._build import BACKEND_NAMES
from mkefast.backends import BackendUnavailableError, resolve_backend


def backend_providers(op: str, device: str, dtype: torch.dtype = torch.float32) -> list[str]:
    """The backends that can run `op` on `device` here, then `reference_compiled` (torch.compile)."""
    names = []
    for name in BACKEND_NAMES:
        try:
            resolve_backend(name, op, torch.device(device), dtype)
        except BackendUnavailableError:
            continue
        names.append(name)
    return [*names, "reference_compiled"]


def itemsize(dtype: str) -> int:
    return torch.empty((), dtype=getattr(torch, dtype)).element_size()
