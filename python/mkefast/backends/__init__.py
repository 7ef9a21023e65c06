"""Backend registry and selection.

Every backend module (`reference`, `cpu`, `cuda`, `triton`) computes the ops of docs/math.md. The fused
ones (`cpu`, `cuda`, `triton`) expose the same host functions with the same signatures, which the custom ops
of `mkefast.ops._library` call:

- `soft_pu_fwd(anchors, candidates, targets, options) -> SoftPUStats`
- `soft_pu_bwd(anchors, candidates, targets, options, stats, grad_lb, grad_ulb, needs_anchors,
  needs_candidates, needs_temperature) -> SoftPUGrads`
- optionally `soft_pu_fwd_grad(anchors, candidates, targets, options, needs_anchors, needs_candidates,
  needs_temperature) -> (SoftPUStats, SoftPUGrads)`: the forward AND the gradients of Σ_ij (lb + ulb) (every
  upstream gradient 1), formed while each block of logits is at hand; the op layer uses it for losses that
  give every term the same upstream gradient, and then skips the backward's recomputation
- optionally `soft_pu_sym_fwd(anchors, candidates, targets, options) -> (SoftPUStats, lse, lse_rev)` and
  `soft_pu_sym_bwd(anchors, candidates, targets, options, lse, lse_rev, grad_ulb, grad_ulb_rev, needs_anchors,
  needs_candidates, needs_temperature) -> SoftPUGrads`: symmetric InfoNCE (nothing labeled, no pseudo labels,
  B_a = B_c, the diagonal kept: CLIP) with both directions in one pass each (docs/math.md, "Symmetric InfoNCE
  in one pass"); lse, lse_rev `[M, B]` float64, the rows' and the columns' log-sum-exp
- `cosine_rec_fwd(reconstruction, target) -> rows`
- `cosine_rec_bwd(reconstruction, target, grad_rows, needs_reconstruction, needs_target)
  -> (grad_reconstruction | None, grad_target | None)`
- `unsupported_reason(op, device, dtype) -> str | None`: None when the backend can run `op` on such tensors.

`reference` is plain differentiable PyTorch instead (`soft_pu_terms`, `cosine_rec_rows`): torch's autograd
differentiates it, so it is called directly, not through a custom op.

Contract of the soft-PU functions (ONE direction of the op: the symmetric form is two calls, or one
`soft_pu_sym_*` call where that hook applies):
- anchors `[B_a, d]`, candidates `[M, B_c, d]`: contiguous, one float dtype (float16, bfloat16, float32,
  float64), on one device, already L2-normalized when the user asked for it. B_a and B_c are independent.
- targets: `mkefast.ops._common.SoftPUTargets` (per-candidate `cls`/`labeled` `[B_c]`, per-anchor
  `anchor_cls`/`anchor_labeled`/`n11`/`n10` `[B_a]`, `num_classes`, `diag_offset`: anchor j's partner is
  candidate j + diag_offset when that is < B_c).
- options: `SoftPUOptions` (temperature as a Python float, rbf_sigma, rbf_space, exclude_diagonal).
- stats: `SoftPUStats`, each `[M, B_a]`: lb, ulb, lse, a_ulb in the accumulation dtype (float64 for
  float64 inputs, else float32); ref in float64, in logit units in both RBF spaces. The backward must
  recompute every weight from that stored ref, and the diagonal fallback pair has w = 1 by definition.
- grad_lb, grad_ulb: `[M, B_a]` in the accumulation dtype. The backward returns the gradients asked for
  (`SoftPUGrads`: anchors `[B_a, d]`, candidates `[M, B_c, d]`, temperature: any tensor whose sum is
  ∂L/∂τ), in the accumulation or the input dtype (the op casts to the input dtype).
- Never allocate anything of size B_a×B_c (the row-chunked backends hold chunk×B_c).
- They run inside custom ops: they must return new tensors, never an input or a view of one.

Choice: the `backend=` argument, else the environment variable `MKEFAST_BACKEND`, else `"auto"`, which
picks the fastest backend that is built, matches the device and supports the call, and logs once why a
faster one was skipped.
"""

from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType

import torch

from mkefast._build import BACKEND_NAMES, backend_unavailable_reason

__all__ = ["BACKEND_NAMES", "CHUNKED_MIN_DIM", "BackendUnavailableError", "get_backend", "resolve_backend"]

_log = logging.getLogger("mkefast")
_warned: set[tuple[str, str]] = set()

# Preference order of `auto`, fastest first, per device type.
_AUTO_ORDER = {"cuda": ("triton", "cuda", "reference"), "cpu": ("cpu", "reference")}


class BackendUnavailableError(RuntimeError):
    """A backend asked for by name cannot run here (not built, no device, or unsupported input)."""


def get_backend(name: str) -> ModuleType:
    """The module implementing backend `name` (imported on first use)."""
    if name not in BACKEND_NAMES:
        raise ValueError(f"backend: expected one of {(*BACKEND_NAMES, 'auto')}, got {name!r}")
    return importlib.import_module(f"mkefast.backends.{name}")


def _why_not(name: str, op: str, device: torch.device, dtype: torch.dtype) -> str | None:
    reason = backend_unavailable_reason(name)
    if reason is None:
        reason = get_backend(name).unsupported_reason(op, device, dtype)
    return reason


# Feature size from which `auto` prefers the chunked cuBLAS path (`cuda`) over the fused Triton tiles for
# soft-PU on a GPU: the per-chunk GEMMs then dominate and cuBLAS wins. Only for float32/float64 inputs: the
# chunked path computes its logits in float32 (bf16 logits would be less exact than the reference), so for
# bf16/fp16 it gives up the tensor cores that Triton keeps. NOT YET MEASURED: 1024 is a guess;
# `bash benchmarks/gpu_check.sh` times both over d and prints the measured crossover. See benchmarks/README.md.
CHUNKED_MIN_DIM = 1024


def _auto_order(op: str, device: torch.device, dtype: torch.dtype, wide: bool) -> tuple[str, ...]:
    order = _AUTO_ORDER.get(device.type, ("reference",))
    wide_fp32 = wide and dtype in (torch.float32, torch.float64)
    if op == "soft_pu" and device.type == "cuda" and wide_fp32:
        return ("cuda", "triton", "reference")
    return order


def resolve_backend(name: str, op: str, device: torch.device, dtype: torch.dtype, wide: bool = False) -> str:
    """The backend to run `op` on tensors of `device`/`dtype` with, for the user's choice `name`.

    Args:
        name: a backend name or `"auto"`; `"auto"` is replaced by `MKEFAST_BACKEND` when that is set.
        op: `"soft_pu"` or `"cosine_rec"`.
        device: the inputs' device.
        dtype: the inputs' floating dtype.
        wide: the feature size d is at least `CHUNKED_MIN_DIM` (it moves the GPU choice between the fused and
            the chunked kernels).

    Raises:
        ValueError: `name` (or `MKEFAST_BACKEND`) is not a backend name.
        BackendUnavailableError: a backend asked for by name cannot run these inputs here.
    """
    if not isinstance(name, str):
        raise TypeError(f"backend: expected a str, got {type(name).__name__}")
    source = "backend"
    if name == "auto":
        env = os.environ.get("MKEFAST_BACKEND", "").strip()
        if env and env != "auto":
            name, source = env, "MKEFAST_BACKEND"
    if name != "auto":
        if name not in BACKEND_NAMES:
            raise ValueError(f"{source}: expected one of {(*BACKEND_NAMES, 'auto')}, got {name!r}")
        reason = _why_not(name, op, device, dtype)
        if reason is not None:
            raise BackendUnavailableError(
                f"{source}={name!r} cannot run {op} on {device.type} {dtype}: {reason}; "
                f"available here: {', '.join(_available_for(op, device, dtype))}"
            )
        return name
    for candidate in _auto_order(op, device, dtype, wide):
        reason = _why_not(candidate, op, device, dtype)
        if reason is None:
            return candidate
        key = (candidate, f"{op}/{device.type}/{dtype}")
        if key not in _warned:
            _warned.add(key)
            _log.info("mkefast: backend 'auto' skips %r for %s on %s %s: %s", candidate, op, device.type,
                      dtype, reason)
    return "reference"


def _available_for(op: str, device: torch.device, dtype: torch.dtype) -> list[str]:
    return [n for n in BACKEND_NAMES if _why_not(n, op, device, dtype) is None]
