"""The latent cosine reconstruction loss (docs/math.md, "Cosine reconstruction loss"): autograd Function and
functional API, on the same path as the contrastive op: prepare → terms → reduce."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mkefast.backends import reference
from mkefast.ops._library import resolve
from mkefast.ops._validate import REDUCTIONS, check_backend, check_choice, check_float_tensor, check_same_device

__all__ = ["CosineReconstructionFunction", "cosine_rec_terms", "cosine_reconstruction_loss", "prepare_cosine_rec"]


class CosineReconstructionFunction(torch.autograd.Function):
    """Per-row `1 - cos²` of two `[N, d]` tensors on a fused backend: `[N]` in the accumulation dtype.

    Forward and backward are the custom ops `mkefast::cosine_rec_fwd` / `mkefast::cosine_rec_bwd`
    (`mkefast.ops._library`). The rows come back in float32 (float64 for float64 inputs), so that the
    reduction of many low-precision rows does not round at every step.
    """

    @staticmethod
    def forward(reconstruction: Tensor, target: Tensor, backend: str) -> Tensor:
        return torch.ops.mkefast.cosine_rec_fwd(reconstruction, target, backend)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        reconstruction, target, backend = inputs
        ctx.save_for_backward(reconstruction, target)
        ctx.backend = backend

    @staticmethod
    def backward(ctx: Any, grad_rows: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        reconstruction, target = ctx.saved_tensors
        needs = [bool(n) for n in ctx.needs_input_grad[:2]]
        if not any(needs):
            return None, None, None
        if torch.is_grad_enabled():
            raise NotImplementedError(
                f"mkefast: the {ctx.backend!r} backend's backward is not itself differentiable: double backward "
                "(create_graph=True) and torch.func transforms need backend='reference'")
        grads = iter(torch.ops.mkefast.cosine_rec_bwd(reconstruction, target, grad_rows.contiguous(), needs,
                                                      ctx.backend))
        return (next(grads) if needs[0] else None, next(grads) if needs[1] else None, None)


def prepare_cosine_rec(reconstruction: object, target: object, *, reduction: object, backend: object
                       ) -> tuple[Tensor, Tensor, str]:
    """The checks of `cosine_reconstruction_loss`, with messages that name the argument; the resolved backend."""
    reconstruction = check_float_tensor("reconstruction", reconstruction)
    target = check_float_tensor("target", target)
    if reconstruction.dim() < 2:
        raise ValueError(f"reconstruction: expected a [..., B, d] tensor, got shape {list(reconstruction.shape)}")
    if target.shape != reconstruction.shape:
        raise ValueError(f"target: expected shape {list(reconstruction.shape)} (that of reconstruction), "
                         f"got {list(target.shape)}")
    if target.dtype != reconstruction.dtype:
        raise TypeError(f"target: expected dtype {reconstruction.dtype} (that of reconstruction), got {target.dtype}")
    if reconstruction.numel() == 0:
        raise ValueError(f"reconstruction: expected a non-empty tensor, got shape {list(reconstruction.shape)}")
    check_choice("reduction", reduction, REDUCTIONS)
    device = check_same_device(reconstruction=reconstruction, target=target)
    name = resolve(check_backend(backend), "cosine_rec", device, reconstruction.dtype, False)
    return reconstruction, target, name


def cosine_rec_terms(reconstruction: Tensor, target: Tensor, backend: str) -> Tensor:
    """Per-row losses `[...]` (the input shape without d) in the accumulation dtype."""
    if backend == "reference":
        return reference.cosine_rec_rows(reconstruction, target)
    d = reconstruction.shape[-1]
    rows = CosineReconstructionFunction.apply(reconstruction.reshape(-1, d).contiguous(),
                                              target.reshape(-1, d).contiguous(), backend)
    return rows.reshape(reconstruction.shape[:-1])


def cosine_reconstruction_loss(
    reconstruction: Tensor,
    target: Tensor,
    *,
    reduction: str = "mean",
    backend: str = "auto",
) -> Tensor:
    """Latent cosine reconstruction loss, `1 − cos²` per row.

    ```
    per_row = 1 - (<a, b> / max(|a| |b|, 1e-8))²      a = reconstruction row, b = target row
    ```

    Args:
        reconstruction: `[..., B, d]` float tensor (in Robult, `[M, B, d]`).
        target: same shape, dtype and device as `reconstruction`.
        reduction: `"mean"` over every row, `"sum"`, or `"none"` for the `[..., B]` per-row losses.
        backend: `"auto"`, `"reference"`, `"cpu"`, `"cuda"` or `"triton"`.

    Returns:
        A scalar (or `[..., B]`) in the inputs' dtype. Gradients flow to both inputs.

    Raises:
        TypeError, ValueError: a malformed argument; the message names it.
        BackendUnavailableError: a backend asked for by name cannot run here.
    """
    reconstruction, target, name = prepare_cosine_rec(reconstruction, target, reduction=reduction, backend=backend)
    rows = cosine_rec_terms(reconstruction, target, name)
    if reduction == "mean":
        out = rows.mean()
    elif reduction == "sum":
        out = rows.sum()
    else:
        out = rows
    return out.to(reconstruction.dtype)
