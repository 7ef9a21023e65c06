"""The Robult model (docs/math.md): encoders, fusion, shared / unique heads, reconstruction, classifier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn

from mkefast.models.mlp import MLP

__all__ = ["LATE_FUSIONS", "Robult", "RobultOutput", "late_fusion"]

LATE_FUSIONS: tuple[str, ...] = ("mean_prob", "mean_logit", "max_conf")
"""Ways `Robult.predict` combines the unimodal predictions when a modality is missing."""

TASKS: tuple[str, ...] = ("classification", "regression")


class RobultOutput(NamedTuple):
    """Every latent of one forward pass over all M modalities (B samples).

    Attributes:
        hidden: H^i = f^i(x^i), `[M, B, h]`.
        fused_hidden: H^0 = f^0([H^1, …, H^M]), `[B, h]`.
        shared: Z^i = g^0(H^i), `[M, B, p]`.
        fused_shared: S = g^0(H^0), `[B, p]`.
        unique: U^i = g^i(H^i), `[M, B, u]`.
        reconstruction: H̃^i = r^i(U^i, Z^i), `[M, B, h]`.
        logits: c(H^0), `[B, K]` (class logits, or K regression outputs).
        unimodal_logits: c(H̃^i), `[M, B, K]`.
    """

    hidden: Tensor
    fused_hidden: Tensor
    shared: Tensor
    fused_shared: Tensor
    unique: Tensor
    reconstruction: Tensor
    logits: Tensor
    unimodal_logits: Tensor


def late_fusion(unimodal_logits: Tensor, fusion: str = "mean_prob") -> Tensor:
    """Class probabilities `[B, K]` from the logits `[A, B, K]` of A available modalities.

    ```
    mean_prob:  mean_i softmax(logits_i)             (soft voting)
    mean_logit: softmax(mean_i logits_i)             (normalized geometric mean: a product of experts)
    max_conf:   softmax(logits_i*) with i* = argmax_i max_k softmax(logits_i)_k, per sample
    ```
    """
    if fusion not in LATE_FUSIONS:
        raise ValueError(f"fusion: expected one of {LATE_FUSIONS}, got {fusion!r}")
    if unimodal_logits.dim() != 3 or unimodal_logits.shape[0] == 0:
        raise ValueError(f"unimodal_logits: expected a non-empty [A, B, K] tensor, got "
                         f"{list(unimodal_logits.shape)}")
    if fusion == "mean_logit":
        return unimodal_logits.mean(0).softmax(-1)
    probs = unimodal_logits.softmax(-1)
    if fusion == "mean_prob":
        return probs.mean(0)
    best = probs.amax(-1).argmax(0)  # [B]: the most confident modality of each sample
    return probs.gather(0, best.view(1, -1, 1).expand(1, *probs.shape[1:])).squeeze(0)


class Robult(nn.Module):
    """Robult for M >= 2 modalities: a modular pipeline that survives missing modalities at test time.

    ```
    H^i = f^i(x^i)                      encoders (one per modality; an MLP by default)
    H^0 = f^0([H^1, …, H^M])            fusion network on the concatenation
    Z^i = g^0(H^i),  S = g^0(H^0)       shared head: the space of the soft-PU contrastive loss
    U^i = g^i(H^i)                      unique heads: what Z^i does not keep of modality i
    H̃^i = r^i([U^i, Z^i])              reconstruction of H^i from its shared and unique parts
    c(H^0), c(H̃^i)                     one classifier on H-space, for the fused and each unimodal path
    ```

    With every modality present, `predict` uses the fused path c(H^0). With a subset, f^0 cannot run
    (it needs every H^i), so each available modality predicts alone through c(H̃^i) and the predictions
    are fused late (`late_fusion`). The default is the mean of probabilities (soft voting): it needs no
    calibration between modalities beyond what the shared classifier gives, and one confidently wrong
    modality moves it less than the mean of logits, whose product-of-experts behaviour lets the most
    extreme logits dominate; `max_conf` trusts the single most confident modality per sample. All three
    cost one softmax over the A available unimodal predictions.

    Args:
        in_features: input size of each modality, `[f_1, …, f_M]` (M >= 2).
        num_outputs: number of classes (classification) or of regression targets.
        hidden_size: h, the size of H^i, H^0 and H̃^i.
        shared_size: p, the size of Z^i and S.
        unique_size: u, the size of U^i.
        encoder_hidden: hidden layers of the default MLP encoders.
        head_hidden: hidden layers of f^0, g^0, g^i and r^i.
        classifier_hidden: hidden layers of c (empty: a linear classifier on H-space).
        dropout: dropout after the hidden layers of the encoders.
        encoders: M modules mapping `[B, f_i]` to `[B, h]`, replacing the default MLPs.
        modality_names: names of the modalities (default "0", …, "M-1"), usable in `predict`.
        task: "classification" or "regression" (changes only what `predict` returns).
    """

    def __init__(
        self,
        in_features: Sequence[int],
        num_outputs: int,
        *,
        hidden_size: int = 128,
        shared_size: int = 64,
        unique_size: int = 64,
        encoder_hidden: Sequence[int] = (256,),
        head_hidden: Sequence[int] = (128,),
        classifier_hidden: Sequence[int] = (),
        dropout: float = 0.0,
        encoders: Sequence[nn.Module] | None = None,
        modality_names: Sequence[str] | None = None,
        task: str = "classification",
    ) -> None:
        super().__init__()
        in_features = list(in_features)
        m = len(in_features)
        if m < 2:
            raise ValueError(f"in_features: expected the sizes of at least 2 modalities, got {in_features}")
        if num_outputs < 1:
            raise ValueError(f"num_outputs: expected >= 1, got {num_outputs}")
        if task not in TASKS:
            raise ValueError(f"task: expected one of {TASKS}, got {task!r}")
        names = [str(i) for i in range(m)] if modality_names is None else [str(n) for n in modality_names]
        if len(names) != m or len(set(names)) != m:
            raise ValueError(f"modality_names: expected {m} distinct names, got {list(names)}")
        self._default_encoders = encoders is None
        if encoders is None:
            encoders = [MLP(f, encoder_hidden, hidden_size, dropout=dropout) for f in in_features]
        elif len(encoders) != m:
            raise ValueError(f"encoders: expected {m} modules (one per modality), got {len(encoders)}")
        self.encoders = nn.ModuleList(encoders)  # f^i
        self.fusion = MLP(m * hidden_size, head_hidden, hidden_size)  # f^0
        self.shared_head = MLP(hidden_size, head_hidden, shared_size)  # g^0
        self.unique_heads = nn.ModuleList(MLP(hidden_size, head_hidden, unique_size) for _ in range(m))  # g^i
        self.reconstructors = nn.ModuleList(  # r^i
            MLP(unique_size + shared_size, head_hidden, hidden_size) for _ in range(m)
        )
        self.classifier = MLP(hidden_size, classifier_hidden, num_outputs)  # c
        self.in_features = in_features
        self.num_outputs = num_outputs
        self.hidden_size = hidden_size
        self.modality_names = names
        self.task = task

    @property
    def num_modalities(self) -> int:
        return len(self.modality_names)

    def _index(self, modality: int | str) -> int:
        if isinstance(modality, str):
            if modality not in self.modality_names:
                raise ValueError(f"available: unknown modality {modality!r}; expected one of "
                                 f"{self.modality_names}")
            return self.modality_names.index(modality)
        if not 0 <= modality < self.num_modalities:
            raise ValueError(f"available: modality index {modality} out of range [0, {self.num_modalities})")
        return modality

    def _as_list(self, views: Sequence[Tensor | None] | Mapping[str, Tensor]) -> list[Tensor | None]:
        if isinstance(views, Mapping):
            unknown = set(views) - set(self.modality_names)
            if unknown:
                raise ValueError(f"views: unknown modalities {sorted(unknown)}; expected {self.modality_names}")
            return [views.get(name) for name in self.modality_names]
        views = list(views)
        if len(views) != self.num_modalities:
            raise ValueError(f"views: expected {self.num_modalities} entries (None for a missing one), "
                             f"got {len(views)}")
        return views

    def encode(self, index: int, x: Tensor) -> Tensor:
        """H^i = f^i(x^i), `[B, f_i]` -> `[B, h]` (custom encoders may take other input shapes)."""
        if self._default_encoders and (x.dim() != 2 or x.shape[1] != self.in_features[index]):
            raise ValueError(f"views[{self.modality_names[index]!r}]: expected shape "
                             f"[B, {self.in_features[index]}], got {list(x.shape)}")
        h = self.encoders[index](x)
        if h.shape != (x.shape[0], self.hidden_size):
            raise ValueError(f"encoders[{index}]: expected an output [B, {self.hidden_size}], "
                             f"got {list(h.shape)}")
        return h

    def reconstruct(self, hidden: Tensor, shared: Tensor) -> tuple[Tensor, Tensor]:
        """(U, H̃): U^i = g^i(H^i) and H̃^i = r^i([U^i, Z^i]) for `hidden` `[M, B, h]`, `shared` `[M, B, p]`."""
        unique = torch.stack([g(h) for g, h in zip(self.unique_heads, hidden, strict=True)])
        rec = torch.stack([r(torch.cat([u, z], -1))
                           for r, u, z in zip(self.reconstructors, unique, shared, strict=True)])
        return unique, rec

    def forward(self, views: Sequence[Tensor] | Mapping[str, Tensor]) -> RobultOutput:
        """Every latent and both predictions, from all M modalities `[B, f_i]` (a list or name -> tensor)."""
        xs = self._as_list(views)
        if any(x is None for x in xs):
            missing = [n for n, x in zip(self.modality_names, xs, strict=True) if x is None]
            raise ValueError(f"views: forward needs every modality, missing {missing}; use predict()")
        hidden = torch.stack([self.encode(i, x) for i, x in enumerate(xs)])  # type: ignore[arg-type]
        fused_hidden = self.fusion(torch.cat(list(hidden), -1))
        shared = self.shared_head(hidden)
        fused_shared = self.shared_head(fused_hidden)
        unique, rec = self.reconstruct(hidden, shared)
        return RobultOutput(
            hidden=hidden,
            fused_hidden=fused_hidden,
            shared=shared,
            fused_shared=fused_shared,
            unique=unique,
            reconstruction=rec,
            logits=self.classifier(fused_hidden),
            unimodal_logits=self.classifier(rec),
        )

    def unimodal_logits(self, index: int, x: Tensor) -> Tensor:
        """c(H̃^i) from modality i alone: `[B, f_i]` -> `[B, K]`."""
        h = self.encode(index, x)
        z = self.shared_head(h)
        u = self.unique_heads[index](h)
        return self.classifier(self.reconstructors[index](torch.cat([u, z], -1)))

    @torch.no_grad()
    def predict(
        self,
        views: Sequence[Tensor | None] | Mapping[str, Tensor],
        available: Sequence[int | str] | None = None,
        *,
        fusion: str = "mean_prob",
    ) -> Tensor:
        """Predictions from any non-empty subset of the modalities (eval mode is the caller's choice).

        All modalities available: the fused path c(H^0). Otherwise: c(H̃^i) for each available modality,
        combined by `late_fusion(…, fusion)` (classification) or averaged (regression).

        Args:
            views: a list of M tensors `[B, f_i]` (None where missing) or a mapping name -> tensor.
            available: indices or names of the modalities to use (default: every one given).
            fusion: "mean_prob" (default), "mean_logit" or "max_conf"; see the class docstring.

        Returns:
            Class probabilities `[B, K]` (classification) or predicted values `[B, K]` (regression).
        """
        xs = self._as_list(views)
        if available is None:
            idx = [i for i, x in enumerate(xs) if x is not None]
        else:
            idx = sorted({self._index(a) for a in available})
        if not idx:
            raise ValueError("available: expected at least one modality")
        missing = [self.modality_names[i] for i in idx if xs[i] is None]
        if missing:
            raise ValueError(f"views: modalities {missing} are listed as available but not given")
        if fusion not in LATE_FUSIONS:
            raise ValueError(f"fusion: expected one of {LATE_FUSIONS}, got {fusion!r}")
        if len(idx) == self.num_modalities:
            logits = self.forward(xs).logits  # type: ignore[arg-type]
            return logits.softmax(-1) if self.task == "classification" else logits
        per = torch.stack([self.unimodal_logits(i, xs[i]) for i in idx])  # type: ignore[arg-type]
        if self.task == "regression":
            return per.mean(0)
        return late_fusion(per, fusion)
