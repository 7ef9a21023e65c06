"""The latent cosine reconstruction loss (SPEC §2): autograd Function and functional API."""

from __future__ import annotations

import torch
from torch import Tensor

from mkefast.backends import get_backend, resolve_backend
from mkefast.ops._validate import REDUCTIONS, check_choice, check_float_tensor, check_same_device

__all__ = ["CosineReconstructionFunction", "cosine_reconstruction_loss"]


class CosineReconstructionFunction(torch.autograd.Function):
    """Per-row loss `1 - cos²` of two `[N, d]` tensors on one backend.

    Returns `[N]` in the accumulation dtype (float64 for float64 inputs, float32 otherwise), so that the
    reduction of many low-precision rows does not round at every step.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        reconstruction: Tensor,  # [N, d]
        target: Tensor,  # [N, d]
        backend: str,
    ) -> Tensor:
        ctx.save_for_backward(reconstruction, target)
        ctx.backend = backend  # type: ignore[attr-defined]
        return get_backend(backend).cosine_rec_fwd(reconstruction, target)

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_loss: Tensor
    ) -> tuple[Tensor | None, Tensor | None, None]:
        reconstruction, target = ctx.saved_tensors  # type: ignore[attr-defined]
        needs_rec, needs_target = ctx.needs_input_grad[0], ctx.needs_input_grad[1]  # type: ignore[attr-defined]
        if not (needs_rec or needs_target):
            return None, None, None
        grad_rec, grad_target = get_backend(ctx.backend).cosine_rec_bwd(  # type: ignore[attr-defined]
            reconstruction, target, grad_loss.contiguous(), needs_rec, needs_target
        )
        if (needs_rec and grad_rec is None) or (needs_target and grad_target is None):
            raise RuntimeError(f"mkefast: backend {ctx.backend!r} returned no gradient for cosine_rec")  # type: ignore[attr-defined]
        return (
            grad_rec.to(reconstruction.dtype) if needs_rec else None,  # type: ignore[union-attr]
            grad_target.to(target.dtype) if needs_target else None,  # type: ignore[union-attr]
            None,
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
    name = resolve_backend(backend, "cosine_rec", device, reconstruction.dtype, d)
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
