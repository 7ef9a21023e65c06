"""The `triton` backend (CUDA tensors)."""

from __future__ import annotations

import torch


def unsupported_reason(op: str, device: torch.device, dtype: torch.dtype) -> str | None:
    return "the triton backend is not implemented yet"
