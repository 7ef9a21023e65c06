"""Lightning modules for Robult and MKE students (needs the optional extra: `pip install mkefast[lightning]`).

Both are thin wrappers around the per-batch losses the built-in trainers use (`robult_loss`,
`student_loss`), so a `lightning.Trainer` computes exactly what `RobultTrainer` and `train_classifier`
compute; Lightning then owns the loop, the devices, logging and checkpointing (`config.device` and the
trainers' checkpoints are not used here).

>>> import lightning
>>> from mkefast import robult
>>> from mkefast.lightning import RobultModule
>>> module = RobultModule(robult.Robult([76, 64], 10), robult.RobultConfig())
>>> lightning.Trainer(max_epochs=100).fit(module, train_loader)  # doctest: +SKIP

The train loader yields `(views, targets, labeled)` batches for Robult and `(views,)` or `(views, index)`
batches for an MKE student (see `mkefast.train.mke_trainer.unpack_mke_batch`); a validation loader yields
`(views, labels)` and logs `val/acc` (`val/mae` for Robult regression).
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor, nn

try:
    import lightning.pytorch as pl
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("mkefast.lightning needs Lightning: pip install 'mkefast[lightning]'") from exc

from mkefast.data.labels import PseudoLabels, teacher_labels
from mkefast.models.robult_model import Robult
from mkefast.train.common import accuracy
from mkefast.train.mke_trainer import Teacher as MKETeacher
from mkefast.train.mke_trainer import TrainConfig, make_optimizer, student_loss, unpack_mke_batch
from mkefast.train.robult_trainer import LOSS_KEYS, RobultConfig, Teacher, robult_loss, unpack_robult_batch
from mkefast.train.robult_trainer import make_optimizer as make_robult_optimizer

__all__ = ["MKEStudentModule", "RobultModule"]


class RobultModule(pl.LightningModule):
    """Trains a `Robult` model with `robult_loss`; logs `train/sup`, `train/pu_lb`, `train/pu_ulb`,
    `train/rec` and `train/total` per epoch.

    Args:
        model: the model.
        config: the loss options, learning rate and weight decay (epochs, batch size and device are the
            Trainer's and the loader's business).
        teacher: optional pseudo-labeller of each batch, instead of the model's own predictions.
        bin_edges: regression only: the soft-PU bins (`mkefast.robult.regression_bin_edges`).
    """

    def __init__(self, model: Robult, config: RobultConfig | None = None, *, teacher: Teacher | None = None,
                 bin_edges: Tensor | None = None) -> None:
        super().__init__()
        if not isinstance(model, Robult):
            raise TypeError(f"model: expected a mkefast Robult, got {type(model).__name__}")
        if model.task == "regression" and bin_edges is None:
            raise ValueError("bin_edges: expected the soft-PU bins of a regression model "
                             "(mkefast.robult.regression_bin_edges)")
        self.model = model
        self.config = config or RobultConfig()
        self.teacher = teacher
        self.bin_edges = bin_edges
        # A plain dict, so that Lightning's checkpoints stay loadable with weights_only=True.
        self.save_hyperparameters({"config": asdict(self.config)})

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        xs, targets, labeled = unpack_robult_batch(batch, self.model)
        guesses = None
        if self.teacher is not None:
            guesses = teacher_labels(self.teacher, xs, len(targets), threshold=self.config.pseudo_threshold)
        step = robult_loss(self.model, xs, targets, labeled, config=self.config, pseudo_labels=guesses,
                           bin_edges=self.bin_edges)
        for key, value in zip(LOSS_KEYS, (*step.losses, step.total), strict=True):
            self.log(f"train/{key}", value.detach(), on_step=False, on_epoch=True, batch_size=len(targets))
        return step.total

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        views, labels = batch
        if self.model.task == "classification":
            self.log("val/acc", accuracy(self.model.predict, (views, labels)), batch_size=len(labels))
        else:
            pred = self.model.predict(views)
            self.log("val/mae", (pred - labels.view_as(pred)).abs().mean(), batch_size=len(labels))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_robult_optimizer(self.model, self.config)


class MKEStudentModule(pl.LightningModule):
    """Trains an MKE student (or a teacher, on true labels) with `student_loss`; logs `train/loss` and
    `train/kept` (the share of rows whose pseudo label counts).

    The labels come from `teacher` (each batch is `(views,)`), from `targets` over the whole set (each batch
    is `(views, index)`), or from the batches themselves (`(views, targets)`).

    Args:
        student: the classifier to train, `{view: [B, f]} -> [B, C]` (e.g. an `MKEClassifier`, whose
            perturbations act in training mode).
        config: optimizer, learning rate, weight decay and `double_softmax` (epochs and device are the
            Trainer's).
        teacher: a pseudo-labeller of each batch (a module is moved with this one and runs in eval mode).
        targets: `[N]` / `[N, C]` labels or `PseudoLabels` of the whole set, read by row index.
        soft, threshold: the teacher's labels are soft; rows below this confidence are left out.
    """

    def __init__(self, student: nn.Module, config: TrainConfig, *, teacher: MKETeacher | None = None,
                 targets: Tensor | PseudoLabels | None = None, soft: bool = False, threshold: float = 0.0) -> None:
        super().__init__()
        if teacher is not None and targets is not None:
            raise ValueError("targets, teacher: give the labels either for the whole set or by a teacher, not both")
        self.student = student
        self.config = config
        self.teacher = teacher
        if isinstance(teacher, nn.Module):
            teacher.requires_grad_(False)
        self.targets, self.soft, self.threshold = targets, soft, threshold
        self.save_hyperparameters({"config": asdict(config), "soft": soft, "threshold": threshold})

    def training_step(self, batch: Any, batch_idx: int) -> Tensor | None:
        views, targets, mask = unpack_mke_batch(batch, targets=self.targets, teacher=self.teacher, soft=self.soft,
                                                threshold=self.threshold, device=self.device)
        rows = len(targets)
        if mask is not None:
            self.log("train/kept", mask.float().mean(), on_step=False, on_epoch=True, batch_size=rows)
            if not bool(mask.any()):
                return None  # no confident pseudo label in this batch: Lightning skips the step
        loss = student_loss(self.student, views, targets, mask, double_softmax=self.config.double_softmax)
        self.log("train/loss", loss.detach(), on_step=False, on_epoch=True, batch_size=rows)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        views, labels = batch
        self.log("val/acc", accuracy(self.student, (views, labels)), batch_size=len(labels))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return make_optimizer([p for p in self.student.parameters() if p.requires_grad], self.config)
