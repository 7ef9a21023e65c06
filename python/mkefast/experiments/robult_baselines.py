"""What `mkefast robult` compares Robult with besides supervised training: GMC, self-training, and Robult
taught by an MKE student.

- `gmc`: GMC (Poklukar et al., ICML 2022; github miguelsvasco/gmc) on Robult's own encoders f^i, fusion
  f^0 and shared head g^0. GMC's loss is NT-Xent between the joint representation S = g^0(H^0) and each
  modality's Z^i = g^0(H^i), summed over the modalities; its supervised variant adds the supervised loss
  of a classifier on S (here on the labeled rows only). With a modality missing, GMC classifies the mean of
  the available modalities' representations: NT-Xent has aligned them with S, so the same classifier reads
  them. The temperature is GMC's for its supervised experiments (0.3; its unsupervised ones use 0.1).
- `robult_mke`: Robult whose soft-PU pseudo labels come from an MKE multimodal student of the same split
  (a teacher on the labeled rows of one view pseudo-labels the unlabeled rows; the MM student learns from
  them on every view, perturbed) instead of from Robult's own classifier c(H^0).
- `self_training`: FixMatch on features: Robult's supervised baseline network, trained on the labeled rows
  and on the unlabeled rows whose own prediction on the clean row reaches a confidence threshold, against
  that prediction, from a noisy copy of the row. Like the supervised baseline, one network per test
  condition (early fusion of every view, and each view alone).

Each `train_*_variant` function trains one variant on one split and returns its test accuracy (%) with
every view ("full") and with each view alone (its name), the conditions of `robult_paper.run_experiment`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mkefast.data.mfeat import MultiViewSplit
from mkefast.experiments.mke_paper import mfeat_config, run_mke
from mkefast.models.robult_model import Robult
from mkefast.ops import supcon_loss
from mkefast.train.common import TensorBatches, accuracy, resolve_device, seed_everything, to_device
from mkefast.train.robult_trainer import RobultConfig, RobultTrainer, evaluate

__all__ = [
    "GMC_TEMPERATURE",
    "SELF_TRAINING_NOISE",
    "SELF_TRAINING_THRESHOLD",
    "GMCModel",
    "gmc_loss",
    "train_gmc",
    "train_gmc_variant",
    "train_robult_mke_variant",
    "train_self_training",
    "train_self_training_variant",
]

GMC_TEMPERATURE = 0.3
"""τ of GMC's supervised experiments (its `model_ingredients.py` for MOSI / MOSEI)."""

SELF_TRAINING_THRESHOLD = 0.95
"""FixMatch's confidence threshold for a pseudo label."""

SELF_TRAINING_NOISE = 1.0
"""Std of the Gaussian noise of the strong view, in units of the (standardized) features."""


class GMCModel(nn.Module):
    """GMC on Robult's encoders f^i, fusion f^0 and shared head g^0, with GMC's supervised head on S.

    ```
    Z^i = normalize(g^0(f^i(x^i)))        S = normalize(g^0(f^0([f^1(x^1), …, f^M(x^M)])))
    head(z) = W_c (z + W_2 relu(W_1 z))                                  (GMC's residual projection)
    logits = head(S) with every modality; head(mean of the available Z^i) otherwise
    ```

    Args:
        backbone: the Robult model whose f^i, f^0 and g^0 this one uses (its other parts are not used).
        num_classes: number of classes.
    """

    def __init__(self, backbone: Robult, num_classes: int) -> None:
        super().__init__()
        self.encoders = backbone.encoders
        self.fusion = backbone.fusion
        self.shared_head = backbone.shared_head
        size = self.shared_head.out_features
        self.proj1, self.proj2 = nn.Linear(size, size), nn.Linear(size, size)
        self.classifier = nn.Linear(size, num_classes)
        self.modality_names = list(backbone.modality_names)

    def representations(self, xs: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
        """`(Z [M, B, p], S [B, p])`, both L2-normalized, from the M views `[B, f_i]` in model order."""
        hidden = [f(x) for f, x in zip(self.encoders, xs, strict=True)]
        unimodal = torch.stack([F.normalize(self.shared_head(h), dim=-1) for h in hidden])
        joint = F.normalize(self.shared_head(self.fusion(torch.cat(hidden, dim=-1))), dim=-1)
        return unimodal, joint

    def classify(self, z: Tensor) -> Tensor:
        """Logits `[B, K]` of representations `[B, p]`."""
        return self.classifier(z + self.proj2(F.relu(self.proj1(z))))

    def forward(self, views: Mapping[str, Tensor]) -> Tensor:
        """Logits from the views given (by name): S with every modality, else the mean of their Z^i."""
        unknown = sorted(set(views) - set(self.modality_names))
        if unknown or not views:
            raise ValueError(f"views: expected a non-empty subset of {self.modality_names}, got {sorted(views)}")
        if len(views) == len(self.modality_names):
            return self.classify(self.representations([views[n] for n in self.modality_names])[1])
        z = [F.normalize(self.shared_head(self.encoders[self.modality_names.index(n)](x)), dim=-1)
             for n, x in views.items()]
        return self.classify(torch.stack(z).mean(0))


def gmc_loss(unimodal: Tensor, joint: Tensor, *, temperature: float = GMC_TEMPERATURE,
             backend: str = "auto") -> Tensor:
    """GMC's contrastive loss: Σ_i NT-Xent between the joint representations and those of modality i.

    For each modality, the 2B rows `[S; Z^i]` carry instance labels (row j of S and row j of Z^i are the
    positive pair; every other row of both is a negative), which is `mkefast.supcon_loss` on them::

        loss = Σ_i mean_{r < 2B} -log( exp(<e_r, e_r'>/τ) / Σ_{k ≠ r} exp(<e_r, e_k>/τ) ),  e = [S; Z^i]

    Args:
        unimodal: Z `[M, B, p]`.
        joint: S `[B, p]`.
        temperature: τ.
        backend: backend of `supcon_loss`.
    """
    if unimodal.dim() != 3 or joint.dim() != 2 or unimodal.shape[1:] != joint.shape:
        raise ValueError(f"unimodal, joint: expected [M, B, p] and [B, p], got {list(unimodal.shape)} and "
                         f"{list(joint.shape)}")
    ids = torch.arange(joint.shape[0], device=joint.device).repeat(2)
    return torch.stack([supcon_loss(torch.cat([joint, z]), ids, temperature=temperature, backend=backend)
                        for z in unimodal]).sum()


def train_gmc(model: GMCModel, xs: Sequence[Tensor], targets: Tensor, labeled: Tensor, config: RobultConfig, *,
              temperature: float = GMC_TEMPERATURE) -> GMCModel:
    """Trains `model` with GMC's loss on every row plus cross-entropy of head(S) on the labeled rows.

    Robult's schedule: `config.epochs` passes of `config.batch_size` batches (last incomplete one dropped),
    AdamW with the config's lr and weight decay, on `config.device`.

    Args:
        model: the model.
        xs: the M views `[N, f_i]` of the training rows, in model order.
        targets: `[N]` class ids (read where labeled).
        labeled: `[N]` bool.
        config: the schedule and the contrastive loss's backend.
        temperature: GMC's τ.

    Returns:
        The model, in eval mode.
    """
    device = resolve_device(config.device, model)
    model.to(device)
    xs, targets, labeled = to_device(list(xs), device), targets.to(device), labeled.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    batches = TensorBatches(len(targets), config.batch_size or len(targets), drop_last=True)
    model.train()
    for _ in range(config.epochs):
        for idx in batches:
            idx = idx.to(device)
            unimodal, joint = model.representations([x[idx] for x in xs])
            loss = gmc_loss(unimodal, joint, temperature=temperature, backend=config.backend)
            rows = labeled[idx]
            if bool(rows.any()):
                loss = loss + F.cross_entropy(model.classify(joint[rows]), targets[idx][rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval()


def _conditions(names: Sequence[str]) -> list[tuple[str, list[str]]]:
    return [("full", list(names)), *[(n, [n]) for n in names]]


def _training_rows(split: MultiViewSplit) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    names = list(split.labeled.views)
    views = {n: torch.cat([split.labeled.views[n], split.unlabeled.views[n]]) for n in names}
    targets = torch.cat([split.labeled.labels, split.unlabeled.labels])
    labeled = torch.arange(len(targets)) < len(split.labeled)
    return views, targets, labeled


def train_gmc_variant(split: MultiViewSplit, config: RobultConfig, num_classes: int, *,
                      model_kwargs: Mapping[str, Any] | None = None,
                      temperature: float = GMC_TEMPERATURE) -> dict[str, float]:
    """The `gmc` variant: `GMCModel` on a Robult backbone built with `model_kwargs`, trained by `train_gmc`.

    Returns:
        Test accuracy (%) with every view ("full") and with each view alone.
    """
    views, targets, labeled = _training_rows(split)
    names = list(views)
    backbone = Robult([views[n].shape[1] for n in names], num_classes, modality_names=names, **(model_kwargs or {}))
    model = train_gmc(GMCModel(backbone, num_classes), [views[n] for n in names], targets, labeled, config,
                      temperature=temperature)
    device = next(model.parameters()).device
    return {cond: accuracy(model, ({n: split.test.views[n] for n in cond_names}, split.test.labels), device=device)
            for cond, cond_names in _conditions(names)}


class _ViewList(nn.Module):
    """A model of named views called with Robult's list of views in model order (a Robult teacher)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model, self.names = model, list(names)
        self.eval()  # a teacher does not learn: `teacher_labels` leaves it in eval mode

    def forward(self, xs: Sequence[Tensor]) -> Tensor:
        return self.model(dict(zip(self.names, xs, strict=True)))


def train_robult_mke_variant(split: MultiViewSplit, config: RobultConfig, num_classes: int, *, seed: int,
                             teacher_view: str | None = None, model_kwargs: Mapping[str, Any] | None = None,
                             show_progress: bool | None = None) -> dict[str, float]:
    """The `robult_mke` variant: Robult whose soft-PU pseudo labels are an MKE multimodal student's.

    MKE (`mke_paper.run_mke` with `mfeat_config`): a teacher on the labeled rows of `teacher_view` (default:
    the first view) pseudo-labels the unlabeled rows, and an MM student on every view, perturbed (T1 v0 = 2),
    learns from them. Its predictions on the training rows replace c(H^0)'s argmax as Robult's pseudo labels
    (`RobultTrainer(teacher=...)`, with `config.pseudo_threshold`); the rest is Robult.

    Returns:
        Test accuracy (%) with every view ("full") and with each view alone.
    """
    views, targets, labeled = _training_rows(split)
    names = list(views)
    teacher_view = names[0] if teacher_view is None else teacher_view
    if teacher_view not in names:
        raise ValueError(f"teacher_view: expected one of the views {names}, got {teacher_view!r}")
    mke = mfeat_config(teacher_view, names, models=("mm_student",))
    mke = replace(mke, teacher_train=replace(mke.teacher_train, device=config.device),
                  student_train=replace(mke.student_train, device=config.device))
    student = run_mke(split, mke, seed=seed, show_progress=show_progress).students["mm_student"]
    seed_everything(seed)  # the same initialization and batches as the robult variant
    model = Robult([views[n].shape[1] for n in names], num_classes, modality_names=names, **(model_kwargs or {}))
    RobultTrainer(model, config, teacher=_ViewList(student, names), show_progress=show_progress).fit(
        views, targets, labeled)
    return evaluate(model, split.test.views, split.test.labels)


def train_self_training(net: nn.Module, labeled_xs: Sequence[Tensor], labels: Tensor, unlabeled_xs: Sequence[Tensor],
                        config: RobultConfig, steps: int, *, threshold: float = SELF_TRAINING_THRESHOLD,
                        noise: float = SELF_TRAINING_NOISE) -> nn.Module:
    """FixMatch on features: trains `net` (a list of views `[B, f_i]` -> logits `[B, K]`) in place.

    Every step takes a batch of labeled rows and a batch of unlabeled rows (`config.batch_size` each, at
    most all of them; each in a new order every pass)::

        p = softmax(net(x_u)).detach()                      (weak view: the clean row)
        mask = max_k p >= threshold,  ŷ = argmax_k p
        loss = CE(net(x_l), y) + mean_u mask · CE(net(x_u + noise · ε), ŷ)     (strong view: noisy row)

    Args:
        net: the network, in training mode during the loop.
        labeled_xs, labels: the labeled rows' views `[L, f_i]` and classes `[L]`.
        unlabeled_xs: the unlabeled rows' views `[U, f_i]`.
        config: AdamW's lr and weight decay, the batch size and the device.
        steps: optimizer steps.
        threshold: confidence a pseudo label needs, in [0, 1).
        noise: std of the strong view's Gaussian noise (>= 0).

    Returns:
        `net`, in eval mode.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold: expected a confidence in [0, 1), got {threshold}")
    if not noise >= 0:
        raise ValueError(f"noise: expected a std >= 0, got {noise}")
    device = resolve_device(config.device, net)
    net.to(device)
    labeled_xs, unlabeled_xs = to_device(list(labeled_xs), device), to_device(list(unlabeled_xs), device)
    labels = labels.to(device)
    batch = config.batch_size or max(len(labels), len(unlabeled_xs[0]))
    labeled_batches = TensorBatches(len(labels), batch, drop_last=False)
    unlabeled_batches = TensorBatches(len(unlabeled_xs[0]), batch, drop_last=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)

    def endless(batches: TensorBatches) -> Any:
        while True:
            yield from batches

    labeled_idx, unlabeled_idx = endless(labeled_batches), endless(unlabeled_batches)
    net.train()
    for _ in range(steps):
        li, ui = next(labeled_idx).to(device), next(unlabeled_idx).to(device)
        loss = F.cross_entropy(net([x[li] for x in labeled_xs]), labels[li])
        weak = [x[ui] for x in unlabeled_xs]
        with torch.no_grad():
            confidence, guess = net(weak).softmax(-1).max(-1)
        strong = [x + noise * torch.randn_like(x) for x in weak]
        unlabeled_loss = F.cross_entropy(net(strong), guess, reduction="none")
        loss = loss + (unlabeled_loss * (confidence >= threshold)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return net.eval()


def train_self_training_variant(split: MultiViewSplit, config: RobultConfig, num_classes: int, steps: int, *,
                                model_kwargs: Mapping[str, Any] | None = None,
                                threshold: float = SELF_TRAINING_THRESHOLD,
                                noise: float = SELF_TRAINING_NOISE) -> dict[str, float]:
    """The `self_training` variant: for each test condition, the supervised baseline's network on its views
    (early fusion of every view, or the view alone) trained by `train_self_training` for `steps` steps.

    Returns:
        Test accuracy (%) with every view ("full") and with each view alone.
    """
    from mkefast.experiments.robult_paper import supervised_network

    names = list(split.labeled.views)
    acc = {}
    for cond, cond_names in _conditions(names):
        net = supervised_network([split.labeled.views[n].shape[1] for n in cond_names], num_classes,
                                 **{k: v for k, v in (model_kwargs or {}).items()
                                    if k in ("encoder_hidden", "hidden_size", "classifier_hidden")})
        train_self_training(net, [split.labeled.views[n] for n in cond_names], split.labeled.labels,
                            [split.unlabeled.views[n] for n in cond_names], config, steps, threshold=threshold,
                            noise=noise)
        acc[cond] = accuracy(net, ([split.test.views[n] for n in cond_names], split.test.labels))
    return acc
