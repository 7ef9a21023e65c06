"""nn.Modules holding the options of the mkefast ops (like `torch.nn` losses)."""

from mkefast.nn.losses import CosineReconstructionLoss, SoftPULoss

__all__ = ["CosineReconstructionLoss", "SoftPULoss"]
