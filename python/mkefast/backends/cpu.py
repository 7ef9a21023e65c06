"""The `cpu` backend: compiled C++ (mkefast._C) with OpenMP, for CPU tensors.

Python allocates every buffer and hands raw pointers to the C++ kernels of `csrc/cpu/`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mkefast._build import cpu_module

__all__ = ["cosine_rec_bwd", "cosine_rec_fwd", "unsupported_reason"]

_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def unsupported_reason(op: str, device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cpu":
        return f"the cpu backend runs on CPU tensors, got {device.type} tensors"
    if op == "soft_pu":
        return "soft_pu is not implemented by the cpu backend yet"
    return None


def _compute(t: Tensor) -> Tensor:
    """Low-precision inputs are computed in float32 (the kernels exist for float32 and float64)."""
    return t if t.dtype in _SUFFIX else t.float()


def cosine_rec_fwd(reconstruction: Tensor, target: Tensor) -> Tensor:
    """Per-row `1 - cos²` of `[N, d]` inputs; `[N]` in float32 (float64 for float64 inputs)."""
    a, b = _compute(reconstruction).contiguous(), _compute(target).contiguous()
    n, d = a.shape
    loss = torch.empty(n, dtype=a.dtype)
    getattr(cpu_module(), f"cosine_rec_fwd_{_SUFFIX[a.dtype]}")(a.data_ptr(), b.data_ptr(), loss.data_ptr(), n, d, d, d)
    return loss


def cosine_rec_bwd(
    reconstruction: Tensor, target: Tensor, grad_loss: Tensor, needs_reconstruction: bool, needs_target: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Both gradients in one fused pass; grad_loss `[N]`."""
    a, b = _compute(reconstruction).contiguous(), _compute(target).contiguous()
    n, d = a.shape
    g = grad_loss.to(a.dtype).contiguous()
    grad_a = torch.empty_like(a) if needs_reconstruction else None
    grad_b = torch.empty_like(b) if needs_target else None
    getattr(cpu_module(), f"cosine_rec_bwd_{_SUFFIX[a.dtype]}")(
        a.data_ptr(), b.data_ptr(), g.data_ptr(),
        grad_a.data_ptr() if grad_a is not None else 0, grad_b.data_ptr() if grad_b is not None else 0,
        n, d, d, d,
    )
    return grad_a, grad_b
