"""The latent cosine reconstruction loss (SPEC §2): autograd formula and functional API."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mkefast.ops._library import resolve
from mkefast.ops._validate import REDUCTIONS, check_choice, check_float_tensor, check_same_device

__all__ = ["CosineReconstructionFunction", "cosine_reconstruction_loss"]


class CosineReconstructionFunction:
    """The autograd of the cosine op: per-row loss `1 - cos²` of two `[N, d]` tensors on one backend.

    The forward and backward are the custom ops `mkefast::cosine_rec_fwd` / `mkefast::cosine_rec_bwd` (see
    `mkefast.ops._library`); `setup_context` and `backward` are registered as the forward op's autograd
    formula, so the same code runs in eager mode and under `torch.compile`. The rows come back `[N]` in the
    accumulation dtype (float64 for float64 inputs, float32 otherwise), so that the reduction of many
    low-precision rows does not round at every step.
    """

    @staticmethod
    def apply(reconstruction: Tensor, target: Tensor, backend: str) -> Tensor:
        """Per-row losses `[N]` of contiguous `[N, d]` inputs on the backend named `backend`."""
        return torch.ops.mkefast.cosine_rec_fwd(reconstruction, target, backend)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        reconstruction, target, backend = inputs
        ctx.save_for_backward(reconstruction, target)
        ctx.backend = backend

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        reconstruction, target = ctx.saved_tensors
        needs_rec, needs_target = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if not (needs_rec or needs_target):
            return None, None, None
        grads = iter(torch.ops.mkefast.cosine_rec_bwd(
            reconstruction, target, grad_loss.contiguous(), needs_rec, needs_target, ctx.backend
        ))
        return (next(grads) if needs_rec else None, next(grads) if needs_target else None, None)


torch.library.register_autograd(
    "mkefast::cosine_rec_fwd", CosineReconstructionFunction.backward,
    setup_context=CosineReconstructionFunction.setup_context,
)


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
    d = reconstruction.shape[-1]
    name = resolve(backend, "cosine_rec", device, reconstruction.dtype, d)
    rows = CosineReconstructionFunction.apply(
        reconstruction.reshape(-1, d).contiguous(), target.reshape(-1, d).contiguous(), name
    )
    if reduction == "mean":
        out = rows.mean()
    elif reduction == "sum":
        out = rows.sum()
    else:
        out = rows.reshape(reconstruction.shape[:-1])
    return out.to(reconstruction.dtype)
