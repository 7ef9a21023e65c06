"""MKE's trainer: the student's loss, one batch at a time, and the loop that trains a teacher or a student.

Multimodal Knowledge Expansion (Xue, Ren, Gao, Zhao; ICCV 2021) trains a unimodal teacher on the labeled
rows, labels the unlabeled rows with it (`mkefast.data.labels.pseudo_labels`) and trains a multimodal,
perturbed student on those pseudo labels (the perturbations live in `MKEClassifier`, active in training
mode). Every model is trained by `train_classifier` with `student_loss`; the paper's protocol (which
models, which views, rounds of expansion) is `mkefast.experiments.mke_paper.run_mke`.

A custom loop computes what `train_classifier` computes with::

    views, targets, mask = unpack_mke_batch(batch, teacher=teacher)     # or targets=... by row index
    loss = student_loss(student, views, targets, mask, double_softmax=config.double_softmax)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mkefast.data.labels import PseudoLabels, pseudo_labels
from mkefast.train.common import (
    Checkpointer,
    TensorBatches,
    check_device,
    describe_loader,
    fingerprint,
    loader_generators,
    progress,
    resolve_device,
    run_identity,
    to_device,
)

__all__ = [
    "OPTIMIZERS",
    "TrainConfig",
    "distillation_loss",
    "make_optimizer",
    "student_loss",
    "train_classifier",
    "unpack_mke_batch",
]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")

Views = Mapping[str, Tensor]
Teacher = Callable[[Views], Tensor]
"""A pseudo-labeller of MKE students: maps the views `{name: [B, f]}` to logits `[B, C]` (e.g. a trained
`MKEClassifier`; a module runs in eval mode)."""


@dataclass(frozen=True)
class TrainConfig:
    """How one model (teacher or student) is trained.

    Attributes:
        epochs: passes over the training rows (one step each with `batch_size=None`).
        lr: learning rate.
        optimizer: `"sgd"` (plain, as in the paper) or `"adam"`.
        weight_decay: L2 penalty passed to the optimizer.
        double_softmax: apply a softmax to the logits before the loss, like the official notebook (whose
            network ends in a softmax that `CrossEntropyLoss` then normalizes again); off by default.
        checkpoint_every: save period in epochs when a checkpoint path is given.
        batch_size: rows per step from in-memory tensors (a new permutation every epoch), or None for
            full-batch steps, the paper's TwoMoon protocol. A data loader brings its own batches.
        device: where the model and the batches go ("cpu", "cuda", "cuda:1", ...), or None for where the
            model already is.
    """

    epochs: int
    lr: float = 0.01
    optimizer: str = "sgd"
    weight_decay: float = 0.0
    double_softmax: bool = False
    checkpoint_every: int = 200
    batch_size: int | None = None
    device: str | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs: expected >= 0, got {self.epochs}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer: expected one of {list(OPTIMIZERS)}, got {self.optimizer!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay: expected >= 0, got {self.weight_decay}")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every: expected >= 1, got {self.checkpoint_every}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ValueError(f"batch_size: expected >= 1 or None (full batch), got {self.batch_size}")
        check_device(self.device)


def make_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of `config` (SGD or Adam with its lr and weight decay) over `params`."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


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


def student_loss(model: nn.Module, views: Views, targets: Tensor, mask: Tensor | None = None, *,
                 double_softmax: bool = False) -> Tensor:
    """The loss of one batch for an MKE teacher or student: `distillation_loss(model(views), ...)`.

    The student's perturbations (input noise, hidden noise, dropout) act inside `model` when it is in
    training mode, so this is the perturbed loss of the paper; in eval mode it is the plain one.

    Args:
        model: the classifier, `{view: [B, f]} -> [B, C]`.
        views: the batch.
        targets: `[B]` class ids (true or pseudo labels) or `[B, C]` soft labels.
        mask: bool `[B]`, the rows that count (e.g. the teacher's confident ones), or None for all.
        double_softmax: see `distillation_loss`.
    """
    return distillation_loss(model(views), targets, mask, double_softmax=double_softmax)


def _index_rows(index: object, targets: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
    if not isinstance(index, Tensor) or index.dim() != 1 or index.dtype.is_floating_point or index.dtype == torch.bool:
        raise ValueError("batch: with targets given for the whole set, expected (views, row index) batches, the "
                         "index an integer [B] tensor")
    rows = index.to(targets.device)
    return targets[rows], None if mask is None else mask[rows.to(mask.device)]


def unpack_mke_batch(
    batch: object,
    *,
    targets: Tensor | PseudoLabels | None = None,
    mask: Tensor | None = None,
    teacher: Teacher | None = None,
    soft: bool = False,
    threshold: float = 0.0,
    device: torch.device | None = None,
) -> tuple[Views, Tensor, Tensor | None]:
    """The views, targets and kept rows of one batch from a data loader (default collate).

    Three forms, by what is given:

    - `teacher`: the batch is `views` or `(views,)`; the targets are the teacher's pseudo labels of the
      batch (hard, or soft with `soft=True`; rows below `threshold` confidence are masked out).
    - `targets` (`[N]` / `[N, C]` over the whole unlabeled set, or `PseudoLabels`): the batch is
      `(views, index)` and the targets are those of the rows `index` `[B]`.
    - neither: the batch is `(views, targets)` (a teacher, or a supervised model, on true labels).

    Args:
        batch: what the loader yields.
        targets, mask: labels and kept rows of the whole set, read by row index.
        teacher, soft, threshold: the pseudo-labeller of the batch.
        device: where to move the batch first (the teacher then runs there), or None to leave it.

    Returns:
        `(views {name: [B, f]}, targets [B] or [B, C], mask [B] bool or None)`.
    """
    if targets is not None and teacher is not None:
        raise ValueError("targets, teacher: give the labels either for the whole set or by a teacher, not both")
    parts = list(batch) if isinstance(batch, (list, tuple)) else [batch]
    expected = 1 if teacher is not None else 2
    if len(parts) != expected or not isinstance(parts[0], Mapping):
        form = "(views,)" if teacher is not None else "(views, index)" if targets is not None else "(views, targets)"
        raise ValueError(f"batch: expected {form} with views a mapping name -> [B, f] tensor, got "
                         f"{type(batch).__name__} of {len(parts)} item(s)")
    views: Views = parts[0] if device is None else to_device(dict(parts[0]), device)
    batch_targets: object
    batch_mask: Tensor | None
    if teacher is not None:
        labels = pseudo_labels(teacher, views, soft=soft, threshold=threshold, allow_empty=True)
        batch_targets, batch_mask = labels.targets, labels.mask
    elif targets is not None:
        if isinstance(targets, PseudoLabels):
            batch_targets, batch_mask = _index_rows(parts[1], targets.targets, targets.mask if mask is None else mask)
        else:
            batch_targets, batch_mask = _index_rows(parts[1], targets, mask)
    else:
        batch_targets, batch_mask = parts[1], None
    if not isinstance(batch_targets, Tensor):
        raise ValueError(f"batch: expected targets as a tensor, got {type(batch_targets).__name__}")
    if device is not None:
        batch_targets = batch_targets.to(device)
        batch_mask = None if batch_mask is None else batch_mask.to(device)
    return views, batch_targets, batch_mask


def _check_rows(views: Views, targets: Tensor, mask: Tensor | None) -> int:
    n = int(targets.shape[0])
    bad = {name: int(x.shape[0]) for name, x in views.items() if x.shape[0] != n}
    if bad:
        raise ValueError(f"views: expected {n} rows in every view (len(targets)), got {bad}")
    if mask is not None and (mask.dtype != torch.bool or mask.shape != (n,)):
        raise ValueError(f"mask: expected a [{n}] bool tensor, got {mask.dtype} {list(mask.shape)}")
    return n


def train_classifier(
    model: nn.Module,
    data: Views | Iterable[Any],
    targets: Tensor | PseudoLabels | None = None,
    *,
    config: TrainConfig,
    mask: Tensor | None = None,
    teacher: Teacher | None = None,
    soft: bool = False,
    threshold: float = 0.0,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_key: Mapping[str, Any] | None = None,
    desc: str = "train",
    show_progress: bool | None = None,
) -> nn.Module:
    """Trains `model` in place (a teacher on true labels, or a student on pseudo labels); returns it in eval mode.

    From in-memory tensors (`data` a mapping view -> `[N, f]`, with `targets`, or a `teacher` that labels
    them once), an epoch is one full-batch step (`config.batch_size=None`) or one pass of mini-batches in
    a new order. From a data loader (any iterable of batches, see `unpack_mke_batch` for their forms), an
    epoch is one pass over it and the order is the loader's. The perturbations and their noise come from
    torch's global RNG, so seed it before building the model.

    With `checkpoint`, the run is saved every `config.checkpoint_every` epochs and at the end, with its
    configuration: `config`, the model (class, architecture, initial weights), the RNG state at the start,
    the data (a fingerprint of the tensors; for a loader only its type and size, so describe the data in
    `checkpoint_key`) and `checkpoint_key`. A run with the same configuration resumes from it (a finished
    one is only loaded) and ends with the same weights as an uninterrupted run; another configuration
    starts fresh.

    Args:
        model: the classifier, `{view: [B, f]} -> [B, C]`.
        data: the training rows, view name -> `[N, f]`, or an iterable of batches (e.g. a `DataLoader`).
        targets: `[N]` class ids, `[N, C]` soft labels or `PseudoLabels` of the N rows (with a loader:
            read by the batch's row index).
        config: the optimization settings (and device).
        mask: bool `[N]`, rows that count in the loss.
        teacher: labels the rows instead of `targets` (once for tensors, per batch for a loader).
        soft, threshold: the teacher's labels are soft, and rows below this confidence are left out.
        checkpoint: file to save to and resume from.
        checkpoint_key: what else identifies the run (e.g. the experiment's settings and data).
        desc: what the progress report calls this run.
        show_progress: report progress (a bar on a terminal, a line every few seconds and at the end in a log),
            or not; None: unless `MKEFAST_PROGRESS=0` (`mkefast.train.common.progress`).

    Raises:
        ValueError: inconsistent inputs, a device that is not here, or an unreadable checkpoint.
    """
    device = resolve_device(config.device, model)
    model.to(device)
    identity = run_identity(model) if checkpoint is not None else {}
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config)
    generators: list[torch.Generator] = []
    epoch_batches: Callable[[], Iterator[tuple[Views, Tensor, Tensor | None]]]
    if isinstance(data, Mapping):
        views: Views = to_device(dict(data), device)
        if teacher is not None:
            if targets is not None:
                raise ValueError("targets, teacher: give the labels either as targets or by a teacher, not both")
            targets = pseudo_labels(teacher, views, soft=soft, threshold=threshold)
        if isinstance(targets, PseudoLabels):
            mask = targets.mask if mask is None else mask
            targets = targets.targets
        if targets is None:
            raise ValueError("targets: expected the labels of the rows (or a teacher) with views tensors")
        n = _check_rows(views, targets, mask)
        full_targets = targets.to(device)
        full_mask = None if mask is None else mask.to(device)
        data_key: dict[str, Any] = {"rows": n, "fingerprint": fingerprint(
            *(views[k] for k in sorted(views)), full_targets, full_mask), "views": sorted(views)}
        if config.batch_size is None:
            epoch_batches = lambda: iter([(views, full_targets, full_mask)])
        else:
            batches = TensorBatches(n, config.batch_size, drop_last=False)
            generators.append(batches.generator)
            epoch_batches = lambda: (({k: x[idx] for k, x in views.items()}, full_targets[idx],
                                      None if full_mask is None else full_mask[idx]) for idx in batches)
    else:
        loader = data
        generators = loader_generators(loader)
        data_key = describe_loader(loader)
        epoch_batches = lambda: (unpack_mke_batch(batch, targets=targets, mask=mask, teacher=teacher, soft=soft,
                                                  threshold=threshold, device=device) for batch in loader)
    run = {k: v for k, v in asdict(config).items() if k != "checkpoint_every"}
    checkpointer = Checkpointer(checkpoint, every=config.checkpoint_every, config={
        "trainer": "mke.train_classifier", "train": {**run, "device": str(device)}, "data": data_key,
        "teacher": None if teacher is None else {"soft": soft, "threshold": threshold},
        **identity, "run": dict(checkpoint_key or {})})
    start, _ = checkpointer.restore(model, optimizer, generators)

    model.train()
    epochs = progress(range(start, config.epochs), desc=desc, enabled=show_progress, unit="epoch")
    for epoch in epochs:
        for batch_views, batch_targets, batch_mask in epoch_batches():
            if batch_mask is not None and not bool(batch_mask.any()):
                continue  # the teacher is confident about no row of this batch: nothing to learn from
            optimizer.zero_grad(set_to_none=True)
            loss = student_loss(model, batch_views, batch_targets, batch_mask, double_softmax=config.double_softmax)
            loss.backward()
            optimizer.step()
            epochs.set_stats(loss=loss)
        checkpointer.maybe_save(epoch + 1, model, optimizer, generators)
    if start < config.epochs:
        checkpointer.maybe_save(config.epochs, model, optimizer, generators, force=True)
    return model.eval()
