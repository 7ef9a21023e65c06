"""Reference models: the MLP building block, MKE's classifier (`mke_classifier`), Robult (`robult_model`)."""

from mkefast.models.mke_classifier import MKEClassifier, Perturbation
from mkefast.models.mlp import MLP
from mkefast.models.robult_model import Robult, RobultOutput, late_fusion

__all__ = ["MLP", "MKEClassifier", "Perturbation", "Robult", "RobultOutput", "late_fusion"]
