"""CLIP's contrastive loss as open_clip computes it, on the general op (docs/math.md, "Special cases": CLIP)."""

from __future__ import annotations

import math

from torch import Tensor

from mkefast.ops._validate import check_float_tensor, check_scalar
from mkefast.ops.soft_pu import SoftPUProblem, prepare_soft_pu, reduce_terms, soft_pu_terms

__all__ = ["clip_loss", "prepare_clip"]


def prepare_clip(
    image_features: object, text_features: object, logit_scale: object, *, normalize: object, reduction: object,
    backend: object,
) -> SoftPUProblem:
    """The checks of `clip_loss`, then the general op's problem: InfoNCE in both directions with τ = 1/scale."""
    image = check_float_tensor("image_features", image_features)
    text = check_float_tensor("text_features", text_features)
    if image.dim() != 2:
        raise ValueError(f"image_features: expected a [B, d] tensor, got shape {list(image.shape)}")
    if text.shape != image.shape:
        raise ValueError(f"text_features: expected shape {list(image.shape)} (that of image_features), got "
                         f"{list(text.shape)}")
    scale = check_scalar("logit_scale", logit_scale)
    return prepare_soft_pu(
        image, text, None, None, None, temperature=1.0 / scale, rbf_sigma=math.inf, rbf_space="logit",
        normalize=normalize, reduction=reduction, return_parts=False, symmetric=True, exclude_diagonal=False,
        backend=backend,
    )


def clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: float | Tensor,
    *,
    normalize: bool = False,
    reduction: str = "mean",
    backend: str = "auto",
) -> Tensor:
    """CLIP's symmetric InfoNCE, equal to open_clip's `ClipLoss` (loss and gradients, `logit_scale` included).

    ```
    logits = logit_scale · I Tᵀ                                           [B, B]
    loss   = ½ (CE(logits, arange(B)) + CE(logitsᵀ, arange(B)))
    ```

    It is the general op with nothing labeled, σ = inf, τ = 1/logit_scale and `symmetric=True`
    (docs/math.md, "Special cases"); the fused backends never build the B×B logits.

    Args:
        image_features: `[B, d]` float tensor (normalized already, as open_clip's model returns them).
        text_features: `[B, d]`, same dtype and device.
        logit_scale: the multiplier s > 0, a float or a 0-d tensor (learnable: typically
            `model.logit_scale.exp()`).
        normalize: L2-normalize both first (open_clip's loss does not).
        reduction: "mean" (open_clip's), "sum", or "none" (`[B]`: ½ of each sample's two cross-entropies).
        backend: "auto", "reference", "cpu", "cuda" or "triton".

    Returns:
        The loss in the features' dtype.
    """
    problem = prepare_clip(image_features, text_features, logit_scale, normalize=normalize, reduction=reduction,
                           backend=backend)
    lb, ulb = soft_pu_terms(problem)
    return reduce_terms(lb[0], ulb[0], problem.config.reduction, False, problem.anchors.dtype)  # type: ignore[return-value]
