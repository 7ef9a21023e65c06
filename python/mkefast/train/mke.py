"""MKE training: teacher, pseudo labels, students, baselines, rounds of expansion, and the `mke` command.

One run (`run_mke`) for one seed:

1. UM teacher: trained on the labeled part with true labels, reading only `teacher_views`.
2. Pseudo labels of the teacher on the unlabeled part: hard (argmax, cross-entropy) or soft (the teacher's
   probabilities, KL divergence), optionally only where the teacher's confidence reaches a threshold.
3. Students trained on the unlabeled part with those pseudo labels: UM student (teacher views, no
   perturbation), Noisy student (teacher views, perturbed), MM student (no reg) (all `student_views`, no
   perturbation), MM student (all views, perturbed). MM student (sup) trains on the labeled and unlabeled
   parts with their true labels (an upper bound).
4. Rounds of expansion: for `rounds > 1` the MM student pseudo-labels the unlabeled part again and a new MM
   student is trained on those labels.

Accuracies are measured on the test part after the last epoch, in percent. Every model is trained from
`seed_everything(seed)`, so a stage does not depend on which other stages ran; with `checkpoint_dir`,
every stage saves its state periodically and a re-run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mkefast.data.mfeat import MultiViewSplit, MultiViewTensors
from mkefast.models.mke import PERTURBATION_KINDS, MKEClassifier, Perturbation
from mkefast.train.common import Checkpointer, progress, seed_everything

__all__ = [
    "MODELS",
    "MKEConfig",
    "MKEResult",
    "PseudoLabels",
    "TrainConfig",
    "accuracy",
    "distillation_loss",
    "mfeat_config",
    "pseudo_labels",
    "run_mke",
    "run_seeds",
    "train_classifier",
    "twomoon_config",
]

MODELS: tuple[str, ...] = ("um_teacher", "um_student", "noisy_student", "mm_student_noreg", "mm_student",
                           "mm_student_sup")
"""Result keys, in table order."""

_TITLES = {"um_teacher": "UM teacher", "um_student": "UM student", "noisy_student": "Noisy student",
           "mm_student_noreg": "MM student (no reg)", "mm_student": "MM student",
           "mm_student_sup": "MM student (sup)"}


@dataclass(frozen=True)
class TrainConfig:
    """How one model is trained: full-batch steps (one per epoch), as in the paper's TwoMoon code.

    Attributes:
        epochs: number of full-batch steps.
        lr: learning rate.
        optimizer: `"sgd"` (plain, as in the paper) or `"adam"`.
        weight_decay: L2 penalty passed to the optimizer.
        double_softmax: apply a softmax to the logits before the loss, like the official notebook (whose
            network ends in a softmax that `CrossEntropyLoss` then normalizes again); off by default.
        checkpoint_every: save period in epochs when a checkpoint path is given.
    """

    epochs: int
    lr: float = 0.01
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    double_softmax: bool = False
    checkpoint_every: int = 200

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs: expected >= 0, got {self.epochs}")
        if self.lr <= 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if self.optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer: expected 'sgd' or 'adam', got {self.optimizer!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay: expected >= 0, got {self.weight_decay}")


@dataclass
class PseudoLabels:
    """A teacher's labels for the unlabeled rows.

    Attributes:
        targets: int64 class ids `[N]` (hard) or float32 probabilities `[N, C]` (soft).
        mask: bool `[N]`, the rows whose teacher confidence reaches the threshold (all rows without one).
        confidence: float32 `[N]`, the teacher's top probability.
    """

    targets: Tensor
    mask: Tensor
    confidence: Tensor

    @property
    def soft(self) -> bool:
        return self.targets.dim() == 2


@torch.no_grad()
def pseudo_labels(teacher: nn.Module, views: Mapping[str, Tensor], *, soft: bool = False,
                  threshold: float = 0.0) -> PseudoLabels:
    """Labels the rows of `views` with `teacher` (in eval mode, so without perturbations).

    Args:
        teacher: a classifier mapping the views to logits `[N, C]`.
        views: the unlabeled rows, view name -> `[N, f_view]`.
        soft: keep the teacher's probabilities (for a KL loss) instead of its argmax.
        threshold: keep only rows whose top probability is >= threshold (0 keeps all), in [0, 1).

    Raises:
        ValueError: the threshold is out of range or keeps no row.
    """
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"threshold: expected a confidence in [0, 1), got {threshold}")
    teacher.eval()
    probs = teacher(views).float().softmax(dim=1)
    confidence, hard = probs.max(dim=1)
    mask = confidence >= threshold
    if not bool(mask.any()):
        raise ValueError(f"threshold: no row reaches a teacher confidence of {threshold} "
                         f"(max {float(confidence.max()):.3f})")
    return PseudoLabels(probs if soft else hard, mask, confidence)


def distillation_loss(logits: Tensor, targets: Tensor, mask: Tensor | None = None, *,
                      double_softmax: bool = False) -> Tensor:
    """Mean loss of the student over the kept rows.

    Hard targets (int64 `[N]`) give the cross-entropy; soft targets (`[N, C]` probabilities `p`) give
    `KL(p || softmax(logits))` summed over classes::

        loss = mean over kept rows of  -log softmax(z)[y]              # hard
        loss = mean over kept rows of  sum_c p_c (log p_c - log softmax(z)_c)    # soft

    Args:
        logits: student outputs `[N, C]`.
        targets: `[N]` class ids or `[N, C]` probabilities.
        mask: bool `[N]`, rows to keep (all when None).
        double_softmax: replace `z` by `softmax(z)` first (the official notebook's network output).
    """
    if logits.dim() != 2:
        raise ValueError(f"logits: expected [N, C], got {list(logits.shape)}")
    if double_softmax:
        logits = logits.softmax(dim=1)
    if mask is not None:
        logits, targets = logits[mask], targets[mask]
    if targets.dim() == 1:
        return F.cross_entropy(logits, targets)
    if targets.shape != logits.shape:
        raise ValueError(f"targets: expected [N] or {list(logits.shape)}, got {list(targets.shape)}")
    return F.kl_div(logits.log_softmax(dim=1), targets, reduction="batchmean")


@torch.no_grad()
def accuracy(model: nn.Module, data: MultiViewTensors) -> float:
    """Top-1 accuracy of `model` (eval mode) on `data`, in percent."""
    model.eval()
    predicted = model(data.views).argmax(dim=1)
    return float((predicted == data.labels).double().mean()) * 100.0


def train_classifier(model: nn.Module, views: Mapping[str, Tensor], targets: Tensor, *, config: TrainConfig,
                     mask: Tensor | None = None, checkpoint: str | os.PathLike[str] | None = None,
                     desc: str = "train", show_progress: bool | None = None) -> nn.Module:
    """Trains `model` in place with full-batch steps and returns it in eval mode.

    The perturbations and their noise come from torch's global RNG, so seed it before building the model.
    With `checkpoint`, the model, optimizer, epoch and RNG states are saved every
    `config.checkpoint_every` epochs and at the end; if the file exists the run resumes from it (a
    finished run is only loaded), which gives the same weights as an uninterrupted run.

    Args:
        model: the classifier, `{view: [N, f]} -> [N, C]`.
        views: the training rows.
        targets: `[N]` class ids or `[N, C]` soft labels.
        config: the optimization settings.
        mask: bool `[N]`, rows that count in the loss.
        checkpoint: file to save to and resume from.
        desc: progress bar label.
        show_progress: force the bar on or off (default: on when stderr is a terminal).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer: torch.optim.Optimizer
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    else:
        optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    checkpointer = Checkpointer(checkpoint, every=config.checkpoint_every)
    start = 0
    state = checkpointer.load()
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        Checkpointer.set_rng_state(state["rng"])
        start = int(state["epoch"])

    def snapshot(epoch: int) -> dict[str, Any]:
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                "rng": Checkpointer.rng_state()}

    model.train()
    for epoch in progress(range(start, config.epochs), desc=desc, total=config.epochs - start,
                          enabled=show_progress):
        optimizer.zero_grad(set_to_none=True)
        loss = distillation_loss(model(views), targets, mask, double_softmax=config.double_softmax)
        loss.backward()
        optimizer.step()
        if checkpointer.path is not None and (epoch + 1) % checkpointer.every == 0:
            checkpointer.maybe_save(epoch + 1, snapshot(epoch + 1))
    if checkpointer.path is not None and start < config.epochs:
        checkpointer.maybe_save(config.epochs, snapshot(config.epochs), force=True)
    return model.eval()


@dataclass(frozen=True)
class MKEConfig:
    """One MKE experiment: which views the teacher and the students see, sizes, training, perturbation.

    Attributes:
        teacher_views: views of the unimodal teacher (and of the UM / Noisy students).
        student_views: views of the multimodal students (early fusion in this order).
        perturbation: the perturbation of the Noisy and MM students.
        teacher_hidden, um_student_hidden, mm_student_hidden: hidden layer sizes.
        teacher_train, student_train: optimization of the teacher and of every student.
        soft_labels: soft pseudo labels (KL) instead of hard ones (cross-entropy).
        threshold: teacher confidence below which an unlabeled row is dropped (0 keeps all).
        rounds: rounds of expansion (the MM student of round r teaches the one of round r + 1).
        models: which of `MODELS` to train (the teacher always is).
    """

    teacher_views: tuple[str, ...]
    student_views: tuple[str, ...]
    perturbation: Perturbation = field(default_factory=lambda: Perturbation(input_noise=2.0))
    teacher_hidden: tuple[int, ...] = (32, 32)
    um_student_hidden: tuple[int, ...] = (32, 32)
    mm_student_hidden: tuple[int, ...] = (16, 16)
    teacher_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1000))
    student_train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=2000))
    soft_labels: bool = False
    threshold: float = 0.0
    rounds: int = 1
    models: tuple[str, ...] = MODELS

    def __post_init__(self) -> None:
        if not self.teacher_views or not self.student_views:
            raise ValueError("teacher_views, student_views: expected at least one view each")
        if self.rounds < 1:
            raise ValueError(f"rounds: expected >= 1, got {self.rounds}")
        unknown = [m for m in self.models if m not in MODELS]
        if unknown:
            raise ValueError(f"models: unknown {unknown}; expected names from {list(MODELS)}")
        if not 0.0 <= self.threshold < 1.0:
            raise ValueError(f"threshold: expected a confidence in [0, 1), got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def twomoon_config(perturbation: Perturbation | None = None, **overrides: Any) -> MKEConfig:
    """The paper's TwoMoon setting: teacher on `"xa"`, MM students on `("xa", "xb")`, v0 = 2 by default."""
    config = MKEConfig(teacher_views=("xa",), student_views=("xa", "xb"))
    if perturbation is not None:
        config = replace(config, perturbation=perturbation)
    return replace(config, **overrides)


def mfeat_config(teacher_view: str, student_views: Sequence[str], perturbation: Perturbation | None = None,
                 **overrides: Any) -> MKEConfig:
    """Defaults for UCI mfeat: one-hidden-layer MLPs of 128 units trained with Adam, full batch.

    The MM student is regularized by input noise (v0 = 1) and dropout (r0 = 0.5) together unless
    `perturbation` says otherwise; `results/mke.md` shows why both help on real data.
    """
    adam = TrainConfig(epochs=300, lr=1e-3, optimizer="adam", weight_decay=1e-4)
    config = MKEConfig(
        teacher_views=(teacher_view,),
        student_views=tuple(student_views),
        perturbation=perturbation or Perturbation(input_noise=1.0, dropout=0.5),
        teacher_hidden=(128,),
        um_student_hidden=(128,),
        mm_student_hidden=(128,),
        teacher_train=adam,
        student_train=adam,
    )
    return replace(config, **overrides)


@dataclass
class MKEResult:
    """Test accuracies (percent) of one seed: `accuracy[model]`, and the MM student after each round."""

    accuracy: dict[str, float]
    rounds: list[float]
    teacher: MKEClassifier | None = None
    students: dict[str, MKEClassifier] = field(default_factory=dict)


def _concat(a: MultiViewTensors, b: MultiViewTensors) -> MultiViewTensors:
    return MultiViewTensors({name: torch.cat([a.views[name], b.views[name]]) for name in a.views},
                            torch.cat([a.labels, b.labels]))


def run_mke(split: MultiViewSplit, config: MKEConfig, *, seed: int,
            checkpoint_dir: str | os.PathLike[str] | None = None, show_progress: bool | None = None,
            teacher: MKEClassifier | None = None) -> MKEResult:
    """Trains the teacher (unless given) and the students of `config.models` for one seed.

    Args:
        split: labeled / unlabeled / test parts holding every view of `config`.
        config: the experiment.
        seed: seeds every model (each is built right after `seed_everything(seed)`).
        checkpoint_dir: folder of per-stage checkpoints (`seed<seed>-<stage>.pt`) for resuming.
        show_progress: progress bars on or off (default: when stderr is a terminal).
        teacher: an already trained teacher (e.g. shared across perturbations of a grid).

    Returns:
        The accuracies, the trained teacher and students.
    """
    names = set(config.teacher_views) | set(config.student_views)
    for part in ("labeled", "unlabeled", "test"):
        missing = sorted(names - set(getattr(split, part).views))
        if missing:
            raise ValueError(f"split: the {part} part lacks the views {missing}")
    num_classes = int(max(int(split.labeled.labels.max()), int(split.unlabeled.labels.max()),
                          int(split.test.labels.max()))) + 1
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None

    def fit(stage: str, views: tuple[str, ...], hidden: tuple[int, ...], perturbation: Perturbation,
            data: MultiViewTensors, targets: Tensor, mask: Tensor | None, train: TrainConfig) -> MKEClassifier:
        seed_everything(seed)
        model = MKEClassifier({v: data.views[v].shape[1] for v in views}, hidden, num_classes,
                              perturbation=perturbation)
        path = directory / f"seed{seed}-{stage}.pt" if directory is not None else None
        train_classifier(model, data.views, targets, config=train, mask=mask, checkpoint=path,
                         desc=f"seed {seed} {stage}", show_progress=show_progress)
        return model

    none = Perturbation()
    if teacher is None:
        teacher = fit("teacher", config.teacher_views, config.teacher_hidden, none, split.labeled,
                      split.labeled.labels, None, config.teacher_train)
    acc = {"um_teacher": accuracy(teacher, split.test)}
    unlabeled = split.unlabeled
    labels = pseudo_labels(teacher, unlabeled.views, soft=config.soft_labels, threshold=config.threshold)
    students: dict[str, MKEClassifier] = {}
    plans = {
        "um_student": (config.teacher_views, config.um_student_hidden, none),
        "noisy_student": (config.teacher_views, config.um_student_hidden, config.perturbation),
        "mm_student_noreg": (config.student_views, config.mm_student_hidden, none),
        "mm_student": (config.student_views, config.mm_student_hidden, config.perturbation),
    }
    for name, (views, hidden, perturbation) in plans.items():
        if name in config.models:
            students[name] = fit(name, views, hidden, perturbation, unlabeled, labels.targets, labels.mask,
                                 config.student_train)
            acc[name] = accuracy(students[name], split.test)
    rounds: list[float] = []
    if "mm_student" in students:
        rounds.append(acc["mm_student"])
        for r in range(2, config.rounds + 1):
            labels = pseudo_labels(students["mm_student"], unlabeled.views, soft=config.soft_labels,
                                   threshold=config.threshold)
            students["mm_student"] = fit(f"mm_student_round{r}", config.student_views, config.mm_student_hidden,
                                         config.perturbation, unlabeled, labels.targets, labels.mask,
                                         config.student_train)
            rounds.append(accuracy(students["mm_student"], split.test))
        acc["mm_student"] = rounds[-1]
    if "mm_student_sup" in config.models:
        train = _concat(split.labeled, unlabeled)
        students["mm_student_sup"] = fit("mm_student_sup", config.student_views, config.mm_student_hidden,
                                         none, train, train.labels, None, config.student_train)
        acc["mm_student_sup"] = accuracy(students["mm_student_sup"], split.test)
    return MKEResult({m: acc[m] for m in MODELS if m in acc}, rounds, teacher, students)


def run_seeds(split_for_seed: Any, config: MKEConfig, seeds: Sequence[int], *,
              checkpoint_dir: str | os.PathLike[str] | None = None,
              show_progress: bool | None = None) -> dict[str, Any]:
    """Runs `run_mke` for every seed and averages; `split_for_seed(seed)` gives each seed's split.

    Returns:
        `{"accuracy": {model: mean %}, "std": {model: std %}, "rounds": [mean % per round],
        "per_seed": {seed: {model: %}}}`.
    """
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    per_seed: dict[str, dict[str, float]] = {}
    rounds: list[list[float]] = []
    for seed in seeds:
        result = run_mke(split_for_seed(seed), config, seed=seed, checkpoint_dir=checkpoint_dir,
                         show_progress=show_progress)
        per_seed[str(seed)] = result.accuracy
        rounds.append(result.rounds)
    models = [m for m in MODELS if m in next(iter(per_seed.values()))]
    table = np.array([[per_seed[str(s)][m] for m in models] for s in seeds])
    out: dict[str, Any] = {
        "accuracy": dict(zip(models, table.mean(axis=0).round(2).tolist(), strict=True)),
        "std": dict(zip(models, table.std(axis=0).round(2).tolist(), strict=True)),
        "per_seed": per_seed,
    }
    if rounds and rounds[0]:
        out["rounds"] = np.array(rounds).mean(axis=0).round(2).tolist()
    return out
