"""Reference models: the MLP building block, MKE teachers/students, the Robult pipeline."""

from mkefast.models.mke import MKEClassifier, Perturbation
from mkefast.models.mlp import MLP
from mkefast.models.robult import Robult, RobultOutput, late_fusion

__all__ = ["MLP", "MKEClassifier", "Perturbation", "Robult", "RobultOutput", "late_fusion"]
