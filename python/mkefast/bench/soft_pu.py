"""Benchmark of the soft-PU loss: every backend (+ torch.compile of the reference) against B.

Labels: a fraction `labeled_frac` (default 5%) of the batch is labeled with one of `classes` (default 10)
classes; the rest carries pseudo labels (`pseudo=True`, the default), as in Robult training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch

import mkefast
from mkefast.bench._common import COMPILED, backend_providers, compiled, gemm_flops, itemsize
from mkefast.bench.runner import Case, OpSpec

DEFAULTS = {"labeled_frac": 0.05, "classes": 10, "pseudo": True}

# Peak bytes above the inputs per M·B² pair, used to skip points that cannot fit: the reference measured
# 22.7 for fwd+bwd at B = 8192, M = 2 (2910 MiB, benchmarks/results/soft_pu_cpu.csv), torch.compile of it
# 8.1 (1064 MiB); with margins, and bounding the forward alone too.
BYTES_PER_PAIR = {"reference": 32.0, COMPILED: 12.0}


def _extra(case: Case) -> dict[str, Any]:
    return {**DEFAULTS, **dict(case.extra)}


def prepare(case: Case) -> dict[str, Any]:
    extra = _extra(case)
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, case.dtype)
    fused = torch.randn(case.B, case.d, generator=g).to(case.device, dtype).requires_grad_()
    unimodal = torch.randn(case.M, case.B, case.d, generator=g).to(case.device, dtype).requires_grad_()
    labels = torch.randint(0, int(extra["classes"]), (case.B,), generator=g)
    labeled = torch.rand(case.B, generator=g) < float(extra["labeled_frac"])
    pseudo = torch.randint(0, int(extra["classes"]), (case.B,), generator=g) if extra["pseudo"] else None
    return {"fused": fused, "unimodal": unimodal, "labels": labels.to(case.device),
            "labeled": labeled.to(case.device), "pseudo": pseudo.to(case.device) if pseudo is not None else None}


def loss(case: Case, state: dict[str, Any]) -> Callable[[], torch.Tensor]:
    labels, labeled, pseudo = state["labels"], state["labeled"], state["pseudo"]
    backend = "reference" if case.provider == COMPILED else case.provider

    def fn(fused: torch.Tensor, unimodal: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, backend=backend))

    run = compiled(fn) if case.provider == COMPILED else fn
    return lambda: run(state["fused"], state["unimodal"])


def leaves(state: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    return state["fused"], state["unimodal"]


def flops(case: Case) -> float:
    """2·B²·d·M per GEMM-equivalent: the forward is one, the backward three (recompute + two)."""
    return gemm_flops(case.mode, case.B, case.B, case.d, case.M)


def io_bytes(case: Case) -> float:
    """Inputs read per pass, plus the gradients written by a backward."""
    inputs = (case.B * case.d * (1 + case.M)) * itemsize(case.dtype)
    return {"fwd": inputs, "bwd": 2 * inputs, "fwd+bwd": 3 * inputs}[case.mode]


def predicted_bytes(case: Case) -> float:
    return BYTES_PER_PAIR.get(case.provider, 0.0) * case.M * case.B**2


def providers(device: str) -> list[str]:
    return backend_providers("soft_pu", device)


SPEC = OpSpec("soft_pu", prepare, loss, leaves, flops, io_bytes, predicted_bytes, providers)
