"""Benchmark of the soft-PU loss: every backend (+ torch.compile of the reference) against B.

Labels: a fraction `labeled_frac` (default 5%) of the batch is labeled with one of `classes` (default 10)
classes; the rest carries pseudo labels (`pseudo=True`, the default), as in Robult training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
import torch.nn.functional as F

import mkefast
from mkefast.backends import reference
from mkefast.bench._common import backend_providers, itemsize, mode_callables
from mkefast.bench.runner import Case, OpSpec
from mkefast.ops._common import SoftPUOptions, make_targets

DEFAULTS = {"labeled_frac": 0.05, "classes": 10, "pseudo": True}

# Peak bytes above the inputs per M·B² logit of the reference backend (float32), used to skip points that
# cannot fit: measured 22.7 for fwd+bwd at B = 8192, M = 2 (2910 MiB, benchmarks/results/soft_pu_cpu.csv);
# 32 leaves a margin, and bounds the forward alone too.
_REFERENCE_BYTES_PER_PAIR = {"fwd": 32.0, "bwd": 32.0, "fwd+bwd": 32.0}


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


def _compiled_reference(state: dict[str, Any]) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """torch.compile of the reference math (the public op is one opaque node to the compiler)."""
    targets = make_targets(state["labels"], state["labeled"], state["pseudo"])
    options = SoftPUOptions()

    def loss(fused: torch.Tensor, unimodal: torch.Tensor) -> torch.Tensor:
        s, z = F.normalize(fused, dim=-1), F.normalize(unimodal, dim=-1)
        terms = reference._soft_pu_terms(s, z, targets, options)
        return (terms.lb + terms.ulb).mean()

    return cast(Callable[[torch.Tensor, torch.Tensor], torch.Tensor], torch.compile(loss, dynamic=False))


def step(case: Case, state: dict[str, Any]) -> Any:
    fused, unimodal = state["fused"], state["unimodal"]
    if case.provider == "reference_compiled":
        compiled = _compiled_reference(state)

        def loss() -> torch.Tensor:
            return compiled(fused, unimodal)
    else:
        def loss() -> torch.Tensor:
            return cast(torch.Tensor, mkefast.soft_pu_loss(fused, unimodal, state["labels"], state["labeled"],
                                                           state["pseudo"], backend=case.provider))

    return mode_callables(case.mode, loss, (fused, unimodal))


_GEMMS = {"fwd": 1, "bwd": 3, "fwd+bwd": 4}


def flops(case: Case) -> float:
    """2·B²·d·M per GEMM-equivalent: the forward is one, the backward three (recompute + two)."""
    return 2.0 * case.B**2 * case.d * case.M * _GEMMS[case.mode]


def io_bytes(case: Case) -> float:
    """Inputs read per pass, plus the gradients written by a backward."""
    inputs = (case.B * case.d * (1 + case.M)) * itemsize(case.dtype)
    return {"fwd": inputs, "bwd": 2 * inputs, "fwd+bwd": 3 * inputs}[case.mode]


def predicted_bytes(case: Case) -> float:
    if case.provider.startswith("reference"):
        return _REFERENCE_BYTES_PER_PAIR[case.mode] * case.M * case.B**2
    return 0.0


def providers(device: str) -> list[str]:
    return backend_providers("soft_pu", device)


SPEC = OpSpec("soft_pu", prepare, step, flops, io_bytes, predicted_bytes, providers)
