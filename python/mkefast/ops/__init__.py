"""The ops: autograd Functions and the functional API (like `torch.nn.functional`).

One general contrastive op (`soft_pu_loss`) with its exact special cases (`supcon_loss`, `clip_loss`), and
the cosine reconstruction loss. The math: docs/math.md.
"""

from mkefast.ops.clip import clip_loss
from mkefast.ops.cosine_rec import CosineReconstructionFunction, cosine_reconstruction_loss
from mkefast.ops.soft_pu import SoftPULossFunction, SoftPUParts, soft_pu_loss
from mkefast.ops.supcon import supcon_loss

__all__ = [
    "CosineReconstructionFunction",
    "SoftPULossFunction",
    "SoftPUParts",
    "clip_loss",
    "cosine_reconstruction_loss",
    "soft_pu_loss",
    "supcon_loss",
]
