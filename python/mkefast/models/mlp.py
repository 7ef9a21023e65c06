"""The MLP building block shared by the MKE and Robult reference models."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["MLP"]


class MLP(nn.Module):
    """Linear layers with an activation and optional dropout after every hidden layer.

    Args:
        in_features: input size.
        hidden: sizes of the hidden layers (may be empty: a linear model).
        out_features: output size (no activation on the output).
        dropout: dropout probability after each hidden layer's activation.
        activation: module class for the hidden activation.

    Attributes:
        hidden_layers: the `(Linear, activation, Dropout)` blocks, so that callers can act on a hidden layer
            (MKE's T2 perturbation adds noise to the first one).
        head: the output Linear.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        out_features: int,
        *,
        dropout: float = 0.0,
        activation: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if in_features < 1 or out_features < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"MLP: expected positive sizes, got in={in_features}, hidden={list(hidden)}, "
                             f"out={out_features}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout: expected a probability in [0, 1), got {dropout}")
        blocks = []
        width = in_features
        for h in hidden:
            blocks.append(nn.Sequential(nn.Linear(width, h), activation(), nn.Dropout(dropout)))
            width = h
        self.hidden_layers = nn.ModuleList(blocks)
        self.head = nn.Linear(width, out_features)
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: Tensor, hidden_noise: Tensor | float | None = None) -> Tensor:
        """Maps `[N, in_features]` to `[N, out_features]`.

        Args:
            x: the input batch.
            hidden_noise: when given, a Gaussian noise of this std (a float or a `[N, 1]` tensor) is added to
                the first hidden layer's output during training.
        """
        for i, block in enumerate(self.hidden_layers):
            x = block(x)
            if i == 0 and hidden_noise is not None and self.training:
                x = x + torch.randn_like(x) * hidden_noise
        return self.head(x)
