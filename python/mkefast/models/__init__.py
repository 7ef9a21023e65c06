"""Reference models: the MLP building block, MKE teachers/students, the Robult pipeline."""

from mkefast.models.mlp import MLP

__all__ = ["MLP"]
