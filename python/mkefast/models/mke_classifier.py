"""MKE's model for teachers and students: an early-fusion classifier over named views, with the paper's
perturbations.

Multimodal Knowledge Expansion (Xue, Ren, Gao, Zhao; ICCV 2021) trains a multimodal student on pseudo
labels of a unimodal teacher; a perturbation of the student (its consistency regularization) is what lets
it correct the teacher's mistakes. The three perturbations of the paper (Table 2) are:

- T1, input noise: ``x + v0 * mean(|x|) * eps``, one scale per view and batch.
- T2, hidden noise: ``h1 + v1 * mean(|h1|) * eps`` on the first hidden layer's output (after its dropout).
- T3, dropout with probability ``r0`` after every hidden layer.

All three act in training mode only. As in the official code, the noise scale ``mean(|.|)`` is part of the
graph (not detached), so T2's gradient also sees how the noise scale depends on the weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from mkefast.models.mlp import MLP

__all__ = ["PERTURBATION_KINDS", "MKEClassifier", "Perturbation", "scaled_gaussian_noise"]

PERTURBATION_KINDS: tuple[str, ...] = ("none", "input", "hidden", "dropout")


@dataclass(frozen=True)
class Perturbation:
    """The student's perturbations; all zero is no regularization.

    Attributes:
        input_noise: T1 strength v0 (noise std = v0 · mean|x|), >= 0.
        hidden_noise: T2 strength v1 (noise std = v1 · mean|h1|), >= 0.
        dropout: T3 probability r0 after each hidden layer, in [0, 1).
    """

    input_noise: float = 0.0
    hidden_noise: float = 0.0
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if self.input_noise < 0:
            raise ValueError(f"input_noise: expected v0 >= 0, got {self.input_noise}")
        if self.hidden_noise < 0:
            raise ValueError(f"hidden_noise: expected v1 >= 0, got {self.hidden_noise}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected r0 in [0, 1), got {self.dropout}")

    @classmethod
    def of(cls, kind: str, strength: float) -> Perturbation:
        """One perturbation by name: `"input"` (T1), `"hidden"` (T2), `"dropout"` (T3) or `"none"`."""
        if kind not in PERTURBATION_KINDS:
            raise ValueError(f"kind: expected one of {list(PERTURBATION_KINDS)}, got {kind!r}")
        if kind == "none":
            return cls()
        field = {"input": "input_noise", "hidden": "hidden_noise", "dropout": "dropout"}[kind]
        return cls(**{field: strength})

    def describe(self) -> str:
        parts = [f"{name}={value:g}" for name, value in (("v0", self.input_noise), ("v1", self.hidden_noise),
                                                         ("r0", self.dropout)) if value]
        return ", ".join(parts) or "none"


def scaled_gaussian_noise(x: Tensor, strength: float) -> Tensor:
    """Returns `x + strength * mean(|x|) * eps`, `eps ~ N(0, 1)` of the shape of `x`, from torch's global RNG.

    The scale is one scalar for the whole tensor (the batch mean of |x|), as in the paper's code.
    """
    if strength == 0:
        return x
    return x + strength * x.abs().mean() * torch.randn_like(x)


class MKEClassifier(nn.Module):
    """Early fusion: encode each view, concatenate, classify with an `MLP`; T1-T3 act in training mode.

    With no encoders, the views are concatenated as they are (the paper's TwoMoon MLPs); an encoder per view
    (any module mapping `[N, f_view]` to `[N, e_view]`) plugs in other data, e.g. a CNN for images. Input
    noise (T1) is applied to the raw view, before its encoder, one scale per view.

    Args:
        view_features: view name -> size of what enters the fusion (the encoder's output size when the view
            has an encoder, else the view's feature count); the order fixes the concatenation order.
        hidden: hidden layer sizes of the fused MLP (T2 acts on the first one, so it needs one).
        num_classes: number of classes.
        perturbation: the perturbations used in training mode.
        encoders: optional view name -> encoder module.

    Shapes:
        forward: `{view: [N, f_view]}` -> logits `[N, num_classes]`.
    """

    def __init__(
        self,
        view_features: Mapping[str, int],
        hidden: Sequence[int],
        num_classes: int,
        *,
        perturbation: Perturbation | None = None,
        encoders: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if not view_features:
            raise ValueError("view_features: expected at least one view")
        encoders = dict(encoders or {})
        unknown = sorted(set(encoders) - set(view_features))
        if unknown:
            raise ValueError(f"encoders: views {unknown} are not in view_features {list(view_features)}")
        self.perturbation = perturbation or Perturbation()
        if self.perturbation.hidden_noise and not hidden:
            raise ValueError("hidden: T2 (hidden_noise) needs at least one hidden layer")
        self.views = tuple(view_features)
        self.encoders = nn.ModuleDict({name: encoders.get(name, nn.Identity()) for name in self.views})
        self.mlp = MLP(sum(view_features.values()), hidden, num_classes, dropout=self.perturbation.dropout)

    @property
    def num_classes(self) -> int:
        return self.mlp.out_features

    def extra_repr(self) -> str:
        return f"views={list(self.views)}, perturbation={self.perturbation.describe()}"

    def forward(self, views: Mapping[str, Tensor]) -> Tensor:
        missing = [name for name in self.views if name not in views]
        if missing:
            raise ValueError(f"views: missing {missing}; this model reads {list(self.views)}")
        noisy = self.training and self.perturbation.input_noise > 0
        parts = []
        for name in self.views:
            x = views[name]
            if noisy:
                x = scaled_gaussian_noise(x, self.perturbation.input_noise)
            parts.append(self.encoders[name](x))
        h = torch.cat(parts, dim=1)
        for i, block in enumerate(self.mlp.hidden_layers):
            h = block(h)
            if i == 0 and self.training:
                h = scaled_gaussian_noise(h, self.perturbation.hidden_noise)
        return self.mlp.head(h)
