"""nn.Modules holding the options of the mkefast ops (like `torch.nn` losses)."""

from mkefast.nn.losses import ClipLoss, CosineReconstructionLoss, SoftPULoss, SupConLoss

__all__ = ["ClipLoss", "CosineReconstructionLoss", "SoftPULoss", "SupConLoss"]
