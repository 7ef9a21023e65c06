"""Benchmark of the cosine reconstruction loss on `[M, B, d]` inputs: every backend (+ torch.compile)."""

from __future__ import annotations

from typing import Any

import torch

import mkefast
from mkefast.backends import reference
from mkefast.bench._common import backend_providers, itemsize, mode_callables
from mkefast.bench.runner import Case, OpSpec


def prepare(case: Case) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, case.dtype)
    a = torch.randn(case.M, case.B, case.d, generator=g).to(case.device, dtype).requires_grad_()
    b = torch.randn(case.M, case.B, case.d, generator=g).to(case.device, dtype).requires_grad_()
    return {"a": a, "b": b}


def step(case: Case, state: dict[str, Any]) -> Any:
    a, b = state["a"], state["b"]
    if case.provider == "reference_compiled":
        compiled = torch.compile(lambda x, y: reference._cosine_rows(x, y).mean(), dynamic=False)

        def loss() -> torch.Tensor:
            return compiled(a, b)
    else:
        def loss() -> torch.Tensor:
            return mkefast.cosine_reconstruction_loss(a, b, backend=case.provider)

    return mode_callables(case.mode, loss, (a, b))


def flops(case: Case) -> float:
    """Three length-d dot products per row forward (6·d), twice that backward (recompute + two axpys)."""
    rows = case.M * case.B
    return {"fwd": 6.0, "bwd": 12.0, "fwd+bwd": 18.0}[case.mode] * rows * case.d


def io_bytes(case: Case) -> float:
    """Both inputs read per pass, both gradients written by a backward."""
    tensor = case.M * case.B * case.d * itemsize(case.dtype)
    return {"fwd": 2 * tensor, "bwd": 4 * tensor, "fwd+bwd": 6 * tensor}[case.mode]


def predicted_bytes(case: Case) -> float:
    return 0.0


def providers(device: str) -> list[str]:
    return backend_providers("cosine_rec", device)


SPEC = OpSpec("cosine_rec", prepare, step, flops, io_bytes, predicted_bytes, providers)
