"""The ops: autograd Functions and the functional API (like `torch.nn.functional`)."""

from mkefast.ops.cosine_rec import CosineReconstructionFunction, cosine_reconstruction_loss
from mkefast.ops.soft_pu import SoftPULossFunction, SoftPUParts, soft_pu_loss

__all__ = [
    "CosineReconstructionFunction",
    "SoftPULossFunction",
    "SoftPUParts",
    "cosine_reconstruction_loss",
    "soft_pu_loss",
]
