"""Benchmark of the supervised contrastive loss (single view, `[B, d]` embeddings, `classes` labels): every
backend, torch.compile of the reference, and pytorch-metric-learning's `SupConLoss` (`pml`, when installed),
which `mkefast.nn.SupConLoss` replaces with one import."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

import mkefast
from mkefast.bench._common import COMPILED, backend_providers, compiled, gemm_flops, installed, itemsize
from mkefast.bench.runner import Case, OpSpec

PML = "pml"
"""pytorch-metric-learning's `SupConLoss` (every pair as a B×B matrix)."""

DEFAULTS = {"classes": 10, "temperature": 0.1}

# Peak bytes above the inputs per B² pair, used to skip points that cannot fit: fwd+bwd, float32, measured at
# B = 2048 (reference 29.6, torch.compile of it 5.0, pml 45.5), with margins.
BYTES_PER_PAIR = {"reference": 36.0, COMPILED: 8.0, PML: 52.0}


def _extra(case: Case) -> dict[str, Any]:
    return {**DEFAULTS, **dict(case.extra)}


def prepare(case: Case) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    embeddings = torch.randn(case.B, case.d, generator=g).to(case.device, getattr(torch, case.dtype))
    labels = torch.randint(0, int(_extra(case)["classes"]), (case.B,), generator=g)
    return {"embeddings": embeddings.requires_grad_(), "labels": labels.to(case.device)}


def loss(case: Case, state: dict[str, Any]) -> Callable[[], torch.Tensor]:
    temperature = float(_extra(case)["temperature"])
    labels = state["labels"]
    if case.provider == PML:
        from pytorch_metric_learning.losses import SupConLoss

        criterion = SupConLoss(temperature=temperature)
        return lambda: criterion(state["embeddings"], labels)
    backend = "reference" if case.provider == COMPILED else case.provider

    def fn(embeddings: torch.Tensor) -> torch.Tensor:
        return mkefast.supcon_loss(embeddings, labels, temperature=temperature, backend=backend)

    run = compiled(fn) if case.provider == COMPILED else fn
    return lambda: run(state["embeddings"])


def leaves(state: dict[str, Any]) -> tuple[torch.Tensor, ...]:
    return (state["embeddings"],)


def flops(case: Case) -> float:
    """2·B²·d per GEMM-equivalent (the embeddings against themselves): fwd 1, bwd 3, fwd+bwd 4."""
    return gemm_flops(case.mode, case.B, case.B, case.d)


def io_bytes(case: Case) -> float:
    """The embeddings read per pass, plus their gradient written by a backward."""
    inputs = case.B * case.d * itemsize(case.dtype)
    return {"fwd": inputs, "bwd": 2 * inputs, "fwd+bwd": 3 * inputs}[case.mode]


def predicted_bytes(case: Case) -> float:
    return BYTES_PER_PAIR.get(case.provider, 0.0) * case.B**2


def providers(device: str) -> list[str]:
    return backend_providers("soft_pu", device, peers=(PML,) if installed("pytorch_metric_learning") else ())


SPEC = OpSpec("supcon", prepare, loss, leaves, flops, io_bytes, predicted_bytes, providers, has_modalities=False)
