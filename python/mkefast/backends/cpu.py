"""The `cpu` backend: compiled C++ (mkefast._C) with OpenMP, for CPU tensors.

Python allocates every buffer and hands raw pointers to the C++ kernels of `csrc/cpu/`.

Soft-PU runs the row-chunked scheme of `mkefast.backends._chunked`: per chunk of anchor rows and modality,
one fp32 (fp64) GEMM by torch for the dots, then one fused OpenMP pass (`soft_pu_fwd_cpu` /
`soft_pu_bwd_cpu`) for the softmax statistics, the masks, the RBF weights and either the loss terms or
the gradient coefficients. The backward recomputes the dots of each chunk (one GEMM), overwrites them with
∂L/∂dots and applies two GEMMs; the forward keeps nothing of size B×B. The chunk holds at most
`MKEFAST_CPU_CHUNK_MB` MiB of dots (default `DEFAULT_CHUNK_MB`; see benchmarks/README.md for the
measurement behind it), so the extra memory is O(chunk·B + B·d), never O(B²). The chunking depends only on
the sizes and that budget, and every row is reduced by one thread in a fixed order: the results are the
same for any thread count.

Low-precision inputs (bfloat16, float16) are computed in float32; the kernels exist for float32 and
float64.
"""

from __future__ import annotations

import functools
import os
from typing import Any, NamedTuple

import torch
from torch import Tensor

from mkefast._build import cpu_module
from mkefast.backends._chunked import chunk_rows_for, kernel_targets, soft_pu_bwd_chunked, soft_pu_fwd_chunked
from mkefast.ops._common import SoftPUOptions, SoftPUStats, SoftPUTargets

__all__ = [
    "DEFAULT_CHUNK_MB",
    "chunk_rows",
    "cosine_rec_bwd",
    "cosine_rec_fwd",
    "soft_pu_bwd",
    "soft_pu_fwd",
    "unsupported_reason",
]

# MiB of dots per chunk. Measured at B = 8192, d = 128, M = 2 (benchmarks/README.md): with one thread 4 MiB
# is ~10-20% faster than 16-64 MiB (the epilogue reads the block while it is still in the cache), but with
# several threads on a busy machine every chunk costs two OpenMP barriers and small chunks lost up to 3×;
# 32 MiB (1024 rows at B = 8192, 128 rows at B = 64k) is the robust choice, and still O(chunk·B).
DEFAULT_CHUNK_MB = 32.0

_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}


def unsupported_reason(op: str, device: torch.device, dtype: torch.dtype) -> str | None:
    if device.type != "cpu":
        return f"the cpu backend runs on CPU tensors, got {device.type} tensors"
    return None


def _compute(t: Tensor) -> Tensor:
    """Low-precision inputs are computed in float32 (the kernels exist for float32 and float64)."""
    return t if t.dtype in _SUFFIX else t.float()


def _kernel(name: str, dtype: torch.dtype) -> Any:
    return getattr(cpu_module(), f"{name}_{_SUFFIX[dtype]}")


def chunk_rows(num_rows: int, num_cols: int, dtype: torch.dtype) -> int:
    """Anchor rows per chunk: as many `[num_cols]` rows of `dtype` as `MKEFAST_CPU_CHUNK_MB` MiB hold.

    Raises:
        ValueError: `MKEFAST_CPU_CHUNK_MB` is set but is not a positive number.
    """
    raw = os.environ.get("MKEFAST_CPU_CHUNK_MB", "").strip()
    try:
        budget = float(raw) if raw else DEFAULT_CHUNK_MB
    except ValueError:
        raise ValueError(f"MKEFAST_CPU_CHUNK_MB: expected a positive number of MiB, got {raw!r}") from None
    if not budget > 0:
        raise ValueError(f"MKEFAST_CPU_CHUNK_MB: expected a positive number of MiB, got {raw!r}")
    return chunk_rows_for(num_rows, num_cols, _acc(dtype), budget)


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


class _ClassIndex(NamedTuple):
    """Candidates grouped by class, so that the kernels visit only an anchor's own class for P11 / P10."""

    members: Tensor  # [B] int32: candidate indices sorted by class (stable), those without a class first
    begin: Tensor  # [C + 1] int64: class c is members[begin[c]:begin[c + 1]] (a view into a [C + 2] buffer)
    max_size: int  # the largest class


def _class_index(targets: SoftPUTargets) -> _ClassIndex:
    cls = targets.cls.to(torch.int64)
    counts = torch.bincount(cls + 1, minlength=targets.num_classes + 1)  # bucket 0: no class
    bounds = torch.zeros(targets.num_classes + 2, dtype=torch.int64)
    torch.cumsum(counts, 0, out=bounds[1:])
    members = torch.argsort(cls, stable=True).to(torch.int32)
    max_size = int(counts[1:].max()) if targets.num_classes > 0 else 0
    return _ClassIndex(members, bounds[1:], max_size)


def _target_args(targets: SoftPUTargets, index: _ClassIndex, options: SoftPUOptions) -> tuple[object, ...]:
    """The label arrays and options as the kernels take them (pointers, then scalars)."""
    return (
        targets.cls.data_ptr(), targets.labeled.data_ptr(), targets.n11.data_ptr(), targets.n10.data_ptr(),
        index.members.data_ptr(), index.begin.data_ptr(), 1.0 / options.temperature, options.inv_two_sigma_sq,
        options.rbf_enabled, options.rbf_space == "phi",
    )


def _fwd_epilogue(
    index: _ClassIndex, dots: Tensor, first_row: int, targets: SoftPUTargets, options: SoftPUOptions,
    out: SoftPUStats,
) -> None:
    rows, b = dots.shape
    _kernel("soft_pu_fwd", dots.dtype)(
        dots.data_ptr(), rows, b, first_row, *_target_args(targets, index, options),
        *(t.data_ptr() for t in out), torch.get_num_threads(),
    )


def _bwd_epilogue(
    index: _ClassIndex, dots: Tensor, first_row: int, targets: SoftPUTargets, options: SoftPUOptions,
    stats: SoftPUStats, grad_lb: Tensor, grad_ulb: Tensor,
) -> None:
    rows, b = dots.shape
    _kernel("soft_pu_bwd", dots.dtype)(
        dots.data_ptr(), rows, b, first_row, *_target_args(targets, index, options),
        stats.lse.data_ptr(), stats.ref.data_ptr(), stats.a_ulb.data_ptr(), grad_lb.data_ptr(),
        grad_ulb.data_ptr(), index.max_size, torch.get_num_threads(),
    )


def soft_pu_fwd(fused: Tensor, unimodal: Tensor, targets: SoftPUTargets, options: SoftPUOptions) -> SoftPUStats:
    """Forward of the soft-PU loss. fused `[B_a, d]`, unimodal `[M, B, d]`; returns `[M, B_a]` statistics."""
    targets = kernel_targets(targets)
    index = _class_index(targets)
    rows = chunk_rows(fused.shape[0], unimodal.shape[1], fused.dtype)
    return soft_pu_fwd_chunked(fused, unimodal, targets, options, functools.partial(_fwd_epilogue, index), rows)


def soft_pu_bwd(
    fused: Tensor,
    unimodal: Tensor,
    targets: SoftPUTargets,
    options: SoftPUOptions,
    stats: SoftPUStats,
    grad_lb: Tensor,
    grad_ulb: Tensor,
    needs_fused: bool,
    needs_unimodal: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of Σ grad_lb·lb + grad_ulb·ulb (grad_lb, grad_ulb `[M, B_a]`), in the accumulation dtype."""
    targets = kernel_targets(targets)
    index = _class_index(targets)
    acc = _acc(fused.dtype)
    stats = SoftPUStats(*(t.to(acc).contiguous() for t in stats))
    rows = chunk_rows(fused.shape[0], unimodal.shape[1], fused.dtype)
    return soft_pu_bwd_chunked(fused, unimodal, targets, options, stats, grad_lb, grad_ulb, needs_fused,
                               needs_unimodal, functools.partial(_bwd_epilogue, index), rows)


def cosine_rec_fwd(reconstruction: Tensor, target: Tensor) -> Tensor:
    """Per-row `1 - cos²` of `[N, d]` inputs; `[N]` in float32 (float64 for float64 inputs)."""
    a, b = _compute(reconstruction).contiguous(), _compute(target).contiguous()
    n, d = a.shape
    loss = torch.empty(n, dtype=a.dtype)
    _kernel("cosine_rec_fwd", a.dtype)(a.data_ptr(), b.data_ptr(), loss.data_ptr(), n, d, d, d,
                                       torch.get_num_threads())
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
    _kernel("cosine_rec_bwd", a.dtype)(
        a.data_ptr(), b.data_ptr(), g.data_ptr(),
        grad_a.data_ptr() if grad_a is not None else 0, grad_b.data_ptr() if grad_b is not None else 0,
        n, d, d, d, torch.get_num_threads(),
    )
    return grad_a, grad_b
