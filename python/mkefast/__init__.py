"""mkefast: fused kernels and reference trainers for semi-supervised multimodal learning.

Two methods, MKE (Multimodal Knowledge Expansion) and Robult (soft Positive-Unlabeled contrastive
learning with latent reconstruction), and the ops that make them fast at large batch sizes:

>>> import torch, mkefast
>>> fused, unimodal = torch.randn(8, 16), torch.randn(2, 8, 16)
>>> labels = torch.randint(0, 3, (8,)); labeled = torch.rand(8) < 0.5
>>> loss = mkefast.soft_pu_loss(fused, unimodal, labels, labeled)
"""

from mkefast._build import available_backends, build_config
from mkefast.nn import ClipLoss, CosineReconstructionLoss, SoftPULoss, SupConLoss
from mkefast.ops import (
    CosineReconstructionFunction,
    SoftPULossFunction,
    SoftPUParts,
    clip_loss,
    cosine_reconstruction_loss,
    soft_pu_loss,
    supcon_loss,
)

__version__ = "0.1.0"

__all__ = [
    "ClipLoss",
    "CosineReconstructionFunction",
    "CosineReconstructionLoss",
    "SoftPULoss",
    "SoftPULossFunction",
    "SoftPUParts",
    "SupConLoss",
    "__version__",
    "available_backends",
    "build_config",
    "clip_loss",
    "cosine_reconstruction_loss",
    "soft_pu_loss",
    "supcon_loss",
]
