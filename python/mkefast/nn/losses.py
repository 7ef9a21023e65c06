"""Loss modules: thin holders of options around the functional ops, validated when they are built.

`SupConLoss` and `ClipLoss` take the forward arguments of the libraries they replace
(pytorch-metric-learning's `SupConLoss`, open_clip's `ClipLoss`), so that switching is one import.
"""

from __future__ import annotations

import math
from typing import Any

from torch import Tensor, nn

from mkefast import distributed
from mkefast.ops import SoftPUParts, clip_loss, cosine_reconstruction_loss, soft_pu_loss, supcon_loss
from mkefast.ops._validate import (
    RBF_SPACES,
    REDUCTIONS,
    check_backend,
    check_bool,
    check_choice,
    check_positive_float,
    check_scalar,
)

__all__ = ["ClipLoss", "CosineReconstructionLoss", "SoftPULoss", "SupConLoss"]


class SoftPULoss(nn.Module):
    """Soft Positive-Unlabeled contrastive loss (and, by its options, SupCon, InfoNCE, CLIP, queues); see
    `mkefast.soft_pu_loss` for the math and shapes.

    Args:
        distributed: compute over the global batch of `group` (`mkefast.distributed.soft_pu_loss`).

    Example:
        >>> criterion = SoftPULoss(temperature=0.1, rbf_sigma=1.0)
        >>> loss = criterion(fused, unimodal, labels, labeled, pseudo_labels)  # doctest: +SKIP
    """

    def __init__(
        self,
        *,
        temperature: float = 0.1,
        rbf_sigma: float = 1.0,
        rbf_space: str = "logit",
        normalize: bool = True,
        reduction: str = "mean",
        return_parts: bool = False,
        symmetric: bool = False,
        exclude_diagonal: bool = False,
        backend: str = "auto",
        distributed: bool = False,
        group: Any = None,
    ) -> None:
        super().__init__()
        self.temperature = check_positive_float("temperature", temperature, allow_inf=False)
        self.rbf_sigma = check_positive_float("rbf_sigma", rbf_sigma, allow_inf=True)
        self.rbf_space = check_choice("rbf_space", rbf_space, RBF_SPACES)
        self.normalize = check_bool("normalize", normalize)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.return_parts = check_bool("return_parts", return_parts)
        self.symmetric = check_bool("symmetric", symmetric)
        self.exclude_diagonal = check_bool("exclude_diagonal", exclude_diagonal)
        self.backend = check_backend(backend)
        self.distributed = check_bool("distributed", distributed)
        self.group = group

    def forward(
        self,
        fused: Tensor,
        unimodal: Tensor,
        labels: Tensor | None = None,
        labeled: Tensor | None = None,
        pseudo_labels: Tensor | None = None,
    ) -> Tensor | SoftPUParts:
        options: dict[str, Any] = dict(
            temperature=self.temperature, rbf_sigma=self.rbf_sigma, rbf_space=self.rbf_space,
            normalize=self.normalize, reduction=self.reduction, return_parts=self.return_parts,
            symmetric=self.symmetric, exclude_diagonal=self.exclude_diagonal, backend=self.backend,
        )
        if self.distributed:
            return distributed.soft_pu_loss(fused, unimodal, labels, labeled, pseudo_labels, group=self.group,
                                            **options)
        return soft_pu_loss(fused, unimodal, labels, labeled, pseudo_labels, **options)

    def extra_repr(self) -> str:
        sigma = "inf" if math.isinf(self.rbf_sigma) else f"{self.rbf_sigma:g}"
        return (f"temperature={self.temperature:g}, rbf_sigma={sigma}, rbf_space={self.rbf_space!r}, "
                f"normalize={self.normalize}, reduction={self.reduction!r}, symmetric={self.symmetric}, "
                f"exclude_diagonal={self.exclude_diagonal}, backend={self.backend!r}")


class SupConLoss(nn.Module):
    """pytorch-metric-learning's `SupConLoss`, fused: `forward(embeddings, labels, indices_tuple=None,
    ref_emb=None, ref_labels=None)`; see `mkefast.supcon_loss`.

    Switching from pytorch-metric-learning is one import:

    >>> from mkefast.nn import SupConLoss   # instead of pytorch_metric_learning.losses   # doctest: +SKIP
    >>> loss = SupConLoss(temperature=0.1)(embeddings, labels)   # doctest: +SKIP

    Miners (`indices_tuple`) are not supported: the loss uses every pair, as pytorch-metric-learning's does
    without a miner.
    """

    def __init__(self, temperature: float = 0.1, *, normalize: bool = True, reduction: str = "mean",
                 backend: str = "auto", distributed: bool = False, group: Any = None) -> None:
        super().__init__()
        self.temperature = check_positive_float("temperature", temperature, allow_inf=False)
        self.normalize = check_bool("normalize", normalize)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.backend = check_backend(backend)
        self.distributed = check_bool("distributed", distributed)
        self.group = group

    def forward(self, embeddings: Tensor, labels: Tensor | None = None, indices_tuple: Any = None,
                ref_emb: Tensor | None = None, ref_labels: Tensor | None = None) -> Tensor:
        if indices_tuple is not None:
            raise ValueError("indices_tuple: mkefast.nn.SupConLoss does not take miners; it uses every pair "
                             "(pytorch-metric-learning's behaviour without a miner). Drop the miner, or keep "
                             "pytorch-metric-learning's SupConLoss for mined pairs")
        if labels is None:
            raise ValueError("labels: expected a [B] tensor of labels, got None")
        # pytorch-metric-learning drops the pair (j, j) whenever the reference labels ARE the labels (the same
        # tensor object, or ref_labels omitted), even with a separate ref_emb.
        exclude = ref_emb is None or ref_labels is None or ref_labels is labels
        if ref_emb is not None and ref_labels is None:
            ref_labels = labels
        options: dict[str, Any] = dict(temperature=self.temperature, normalize=self.normalize,
                                       reduction=self.reduction, backend=self.backend, exclude_diagonal=exclude)
        if self.distributed:
            return distributed.supcon_loss(embeddings, labels, ref_emb, ref_labels, group=self.group, **options)
        return supcon_loss(embeddings, labels, ref_emb, ref_labels, **options)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:g}, normalize={self.normalize}, backend={self.backend!r}"


class ClipLoss(nn.Module):
    """open_clip's `ClipLoss`, fused: `forward(image_features, text_features, logit_scale, output_dict=False)`;
    see `mkefast.clip_loss`.

    Args:
        normalize: L2-normalize the features first (open_clip's loss expects normalized features and does not).
        reduction: "mean" (open_clip's), "sum", or "none".
        backend: "auto", "reference", "cpu", "cuda" or "triton".
        distributed: all-gather the features with gradients over `group` (open_clip's
            `gather_with_grad=True`; `mkefast.distributed.clip_loss`).
    """

    def __init__(self, *, normalize: bool = False, reduction: str = "mean", backend: str = "auto",
                 distributed: bool = False, group: Any = None) -> None:
        super().__init__()
        self.normalize = check_bool("normalize", normalize)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.backend = check_backend(backend)
        self.distributed = check_bool("distributed", distributed)
        self.group = group

    def forward(self, image_features: Tensor, text_features: Tensor, logit_scale: float | Tensor,
                output_dict: bool = False) -> Tensor | dict[str, Tensor]:
        check_scalar("logit_scale", logit_scale)
        options: dict[str, Any] = dict(normalize=self.normalize, reduction=self.reduction, backend=self.backend)
        if self.distributed:
            loss = distributed.clip_loss(image_features, text_features, logit_scale, group=self.group, **options)
        else:
            loss = clip_loss(image_features, text_features, logit_scale, **options)
        return {"contrastive_loss": loss} if output_dict else loss

    def extra_repr(self) -> str:
        return f"normalize={self.normalize}, reduction={self.reduction!r}, backend={self.backend!r}"


class CosineReconstructionLoss(nn.Module):
    """Latent cosine reconstruction loss `1 − cos²` per row; see `mkefast.cosine_reconstruction_loss`."""

    def __init__(self, *, reduction: str = "mean", backend: str = "auto") -> None:
        super().__init__()
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.backend = check_backend(backend)

    def forward(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        return cosine_reconstruction_loss(reconstruction, target, reduction=self.reduction, backend=self.backend)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, backend={self.backend!r}"
