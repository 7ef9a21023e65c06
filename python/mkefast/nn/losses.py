"""Loss modules: thin holders of options around `mkefast.soft_pu_loss` and `mkefast.cosine_reconstruction_loss`."""

from __future__ import annotations

import math

from torch import Tensor, nn

from mkefast.ops import SoftPUParts, cosine_reconstruction_loss, soft_pu_loss
from mkefast.ops._validate import RBF_SPACES, REDUCTIONS, check_bool, check_choice, check_positive_float

__all__ = ["CosineReconstructionLoss", "SoftPULoss"]


class SoftPULoss(nn.Module):
    """Soft Positive-Unlabeled contrastive loss; see `mkefast.soft_pu_loss` for the math and shapes.

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
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.temperature = check_positive_float("temperature", temperature, allow_inf=False)
        self.rbf_sigma = check_positive_float("rbf_sigma", rbf_sigma, allow_inf=True)
        self.rbf_space = check_choice("rbf_space", rbf_space, RBF_SPACES)
        self.normalize = check_bool("normalize", normalize)
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.return_parts = check_bool("return_parts", return_parts)
        self.backend = backend

    def forward(
        self,
        fused: Tensor,
        unimodal: Tensor,
        labels: Tensor,
        labeled: Tensor,
        pseudo_labels: Tensor | None = None,
    ) -> Tensor | SoftPUParts:
        return soft_pu_loss(
            fused, unimodal, labels, labeled, pseudo_labels,
            temperature=self.temperature, rbf_sigma=self.rbf_sigma, rbf_space=self.rbf_space,
            normalize=self.normalize, reduction=self.reduction, return_parts=self.return_parts,
            backend=self.backend,
        )

    def extra_repr(self) -> str:
        sigma = "inf" if math.isinf(self.rbf_sigma) else f"{self.rbf_sigma:g}"
        return (f"temperature={self.temperature:g}, rbf_sigma={sigma}, rbf_space={self.rbf_space!r}, "
                f"normalize={self.normalize}, reduction={self.reduction!r}, backend={self.backend!r}")


class CosineReconstructionLoss(nn.Module):
    """Latent cosine reconstruction loss `1 − cos²` per row; see `mkefast.cosine_reconstruction_loss`."""

    def __init__(self, *, reduction: str = "mean", backend: str = "auto") -> None:
        super().__init__()
        self.reduction = check_choice("reduction", reduction, REDUCTIONS)
        self.backend = backend

    def forward(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        return cosine_reconstruction_loss(reconstruction, target, reduction=self.reduction, backend=self.backend)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, backend={self.backend!r}"
