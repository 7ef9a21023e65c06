"""Benchmark of the cosine reconstruction loss on `[M, B, d]` inputs: every backend (+ torch.compile)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import mkefast
from mkefast.bench._common import COMPILED, backend_providers, compiled, itemsize
from mkefast.bench.runner import Case, OpSpec


def prepare(case: Case) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, case.dtype)
    a = torch.randn(case.M, case.B, case.d, generator=g).to(case.device, dtype).requires_grad_()
    b = torch.randn(case.M, case.B, case.d, generator=g).to(case.device, dtype).requires_grad_()
    return {"a": a, "b": b}


def loss(case: Case, state: dict[str, Any]) -> Callable[[], torch.Tensor]:
    backend = "reference" if case.provider == COMPILED else case.provider

    def fn(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return mkefast.cosine_reconstruction_loss(a, b, backend=backend)

    run = compiled(fn) if case.provider == COMPILED else fn
    return lambda: run(state["a"], state["b"])


def leaves(state: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    return state["a"], state["b"]


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


SPEC = OpSpec("cosine_rec", prepare, loss, leaves, flops, io_bytes, predicted_bytes, providers)
