"""Benchmark of CLIP's symmetric InfoNCE (`[B, d]` image and text features, a learnable logit scale): every
backend, torch.compile of the reference, and open_clip's dense formula (`dense_clip`), which
`mkefast.nn.ClipLoss` replaces with one import."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mkefast
from mkefast.bench._common import COMPILED, backend_providers, compiled, gemm_flops, itemsize
from mkefast.bench.runner import Case, OpSpec

__all__ = ["DENSE", "SPEC", "DenseClipLoss"]

DENSE = "dense_clip"
"""open_clip's `ClipLoss` computation in plain PyTorch (`DenseClipLoss`)."""

# Peak bytes above the inputs per B² pair, used to skip points that cannot fit: fwd+bwd, float32, measured at
# B = 2048, d = 512 (reference 75, torch.compile of it 26, dense_clip 22; the reference runs both directions
# with their masks), with margins.
BYTES_PER_PAIR = {"reference": 84.0, COMPILED: 32.0, DENSE: 28.0}


class DenseClipLoss(nn.Module):
    """open_clip's `ClipLoss` in one process, as open_clip computes it (two B×B logit matrices):

    ```
    logits_per_image = logit_scale · I Tᵀ,  logits_per_text = logit_scale · T Iᵀ
    loss = ½ (CE(logits_per_image, arange(B)) + CE(logits_per_text, arange(B)))
    ```

    The peer that `mkefast.nn.ClipLoss` replaces (open_clip is not a dependency of mkefast); same forward
    signature `(image_features, text_features, logit_scale, output_dict=False)`.
    """

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: Tensor | float,
                output_dict: bool = False) -> Tensor | dict[str, Tensor]:
        logits_per_image = logit_scale * image_features @ text_features.T
        logits_per_text = logit_scale * text_features @ image_features.T
        labels = torch.arange(image_features.shape[0], device=image_features.device)
        total = (F.cross_entropy(logits_per_image, labels) + F.cross_entropy(logits_per_text, labels)) / 2
        return {"contrastive_loss": total} if output_dict else total


def prepare(case: Case) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    dtype = getattr(torch, case.dtype)
    image, text = (F.normalize(torch.randn(case.B, case.d, generator=g), dim=-1).to(case.device, dtype)
                   for _ in range(2))
    # CLIP's initialization: logit_scale = log(1/0.07), learned, used as its exponential.
    log_scale = torch.tensor(math.log(1 / 0.07), device=case.device)
    return {"image": image.requires_grad_(), "text": text.requires_grad_(), "log_scale": log_scale.requires_grad_()}


def loss(case: Case, state: dict[str, Any]) -> Callable[[], Tensor]:
    if case.provider == DENSE:
        criterion: Callable[..., Any] = DenseClipLoss()
    else:
        criterion = mkefast.nn.ClipLoss(backend="reference" if case.provider == COMPILED else case.provider)

    def fn(image: Tensor, text: Tensor, log_scale: Tensor) -> Tensor:
        out: Tensor = criterion(image, text, log_scale.exp())
        return out

    run = compiled(fn) if case.provider == COMPILED else fn
    return lambda: run(state["image"], state["text"], state["log_scale"])


def leaves(state: dict[str, Any]) -> tuple[Tensor, ...]:
    return state["image"], state["text"], state["log_scale"]


def flops(case: Case) -> float:
    """2·B²·d per GEMM-equivalent (I Tᵀ; its transpose holds the same products): fwd 1, bwd 3, fwd+bwd 4."""
    return gemm_flops(case.mode, case.B, case.B, case.d)


def io_bytes(case: Case) -> float:
    """Both feature sets read per pass, plus their gradients written by a backward."""
    inputs = 2 * case.B * case.d * itemsize(case.dtype)
    return {"fwd": inputs, "bwd": 2 * inputs, "fwd+bwd": 3 * inputs}[case.mode]


def predicted_bytes(case: Case) -> float:
    return BYTES_PER_PAIR.get(case.provider, 0.0) * case.B**2


def providers(device: str) -> list[str]:
    return backend_providers("soft_pu", device, peers=(DENSE,))


SPEC = OpSpec("clip", prepare, loss, leaves, flops, io_bytes, predicted_bytes, providers, has_modalities=False)
