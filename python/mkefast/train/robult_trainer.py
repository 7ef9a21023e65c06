"""Robult's trainer: its configuration, the loss of one batch (weighted and routed), and the training loop.

Losses, for a mini-batch with labeled mask `L` (docs/math.md):

```
L_sup = CE(c(H^0)[L], y[L]) + mean_i CE(c(H̃^i)[L], y[L])      (L1 instead of CE for regression)
L_PU  = soft_pu_loss(S, stack(Z^i), y_pu, L, pseudo)             (lb + ulb terms)
L_rec = cosine_reconstruction_loss(stack(H̃^i), stack(H^i))
L     = w_sup L_sup + w_pu (lb·use_lb + ulb·use_ulb) + w_rec L_rec
```

Routing (which parameters each loss trains): L_sup trains everything; L_PU trains f^i, f^0 and g^0 (it
reads only S and Z^i, and its pseudo labels are detached, so it never reaches g^i, r^i or c); L_rec trains
only g^i and r^i: it is computed on a second pass of g^i and r^i over the detached H^i and Z^i, with the
detached H^i as target, so the one `backward()` of the weighted sum gives each parameter exactly the
gradients its losses are allowed to send (the extra pass costs two small MLPs, far less than a second
backward through the whole graph).

`robult_loss` is that computation for one batch; `RobultTrainer.fit` loops over batches with it, and any
other loop (plain PyTorch, `mkefast.lightning.RobultModule`, ...) computes the same with::

    step = robult_loss(model, views, targets, labeled, config=config)
    step.total.backward()
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mkefast._build import BACKEND_NAMES
from mkefast.data.labels import discretize, pseudo_labels_from_logits, quantile_edges, teacher_labels
from mkefast.models.robult_model import Robult, RobultOutput
from mkefast.ops import cosine_reconstruction_loss, soft_pu_loss
from mkefast.ops._validate import RBF_SPACES
from mkefast.train.common import (
    Checkpointer,
    TensorBatches,
    accuracy,
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
    "LOSS_KEYS",
    "RobultConfig",
    "RobultLosses",
    "RobultStep",
    "RobultTrainer",
    "Teacher",
    "evaluate",
    "make_optimizer",
    "pu_classes",
    "regression_bin_edges",
    "robult_loss",
    "robult_losses",
    "unpack_robult_batch",
    "weighted_total",
]

Views = Mapping[str, Tensor] | Sequence[Tensor]
Teacher = Callable[[list[Tensor]], Tensor]
"""Pseudo-labeller: maps the M views `[N, f_i]` to class ids `[N]` (negative: no guess) or logits `[N, K]`."""

LOSS_KEYS: tuple[str, ...] = ("sup", "pu_lb", "pu_ulb", "rec", "total")
"""The names of the losses in the trainer's history and in the Lightning logs, in `RobultStep` order."""


@dataclass(frozen=True)
class RobultConfig:
    """Training options of `RobultTrainer` (and of the supervised baselines: epochs, batch, optimizer).

    Attributes:
        epochs: passes over the training rows.
        batch_size: rows per step from in-memory tensors, or None for full-batch training (a data loader
            brings its own batches). The default 256 keeps the B×B soft-PU pass cheap (full batch on
            mfeat's 1400 training rows costs ~30x more per epoch with the reference backend) while a batch
            still holds every class and, at 5% labels, ~13 labeled rows.
        lr, weight_decay: AdamW settings.
        temperature, rbf_sigma, rbf_space: soft-PU options (docs/math.md).
        sup_weight, pu_weight, rec_weight: loss weights.
        use_lb, use_ulb: keep the labeled / unlabeled term of the soft-PU loss (ablations).
        pseudo_threshold: pseudo labels whose softmax confidence is below this become -1 (no guess).
        use_pseudo_labels: feed pseudo labels (from c(H^0), or the teacher) to the soft-PU loss.
        probe_epochs: with sup_weight = 0, epochs of a second stage that trains only c on the frozen
            representations of the labeled rows (otherwise nothing would train the classifier).
        num_bins: regression only: quantile bins of the target that give the soft-PU classes.
        backend: backend of the soft-PU and cosine losses (`"auto"` picks the fastest for the device).
        device: where the model and the batches go ("cpu", "cuda", "cuda:1", ...), or None for where the
            model already is.
    """

    epochs: int = 100
    batch_size: int | None = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    temperature: float = 0.1
    rbf_sigma: float = 1.0
    rbf_space: str = "logit"
    sup_weight: float = 1.0
    pu_weight: float = 1.0
    rec_weight: float = 1.0
    use_lb: bool = True
    use_ulb: bool = True
    pseudo_threshold: float = 0.0
    use_pseudo_labels: bool = True
    probe_epochs: int = 200
    num_bins: int = 10
    backend: str = "auto"
    device: str | None = None

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs: expected >= 0, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 2:
            raise ValueError(f"batch_size: expected >= 2 (the contrastive loss is batchwise) or None, "
                             f"got {self.batch_size}")
        for name in ("sup_weight", "pu_weight", "rec_weight", "weight_decay"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.pseudo_threshold < 1.0:
            raise ValueError(f"pseudo_threshold: expected a value in [0, 1), got {self.pseudo_threshold}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature: expected a finite float > 0, got {self.temperature}")
        if not self.rbf_sigma > 0:
            raise ValueError(f"rbf_sigma: expected a float > 0 or math.inf, got {self.rbf_sigma}")
        if self.rbf_space not in RBF_SPACES:
            raise ValueError(f"rbf_space: expected one of {RBF_SPACES}, got {self.rbf_space!r}")
        if self.probe_epochs < 0:
            raise ValueError(f"probe_epochs: expected >= 0, got {self.probe_epochs}")
        if self.num_bins < 2:
            raise ValueError(f"num_bins: expected >= 2, got {self.num_bins}")
        if self.backend not in (*BACKEND_NAMES, "auto"):
            raise ValueError(f"backend: expected one of {(*BACKEND_NAMES, 'auto')}, got {self.backend!r}")
        check_device(self.device)


class RobultLosses(NamedTuple):
    """The unweighted losses of one batch (scalars), each already routed to its parameters."""

    sup: Tensor
    pu_labeled: Tensor
    pu_unlabeled: Tensor
    rec: Tensor


class RobultStep(NamedTuple):
    """What `robult_loss` computes for one batch: the weighted total to differentiate, its parts, the latents."""

    total: Tensor
    losses: RobultLosses
    output: RobultOutput


def make_optimizer(model: Robult, config: RobultConfig) -> torch.optim.Optimizer:
    """Robult's optimizer: AdamW over every parameter with the config's lr and weight decay."""
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _supervised_loss(logits: Tensor, targets: Tensor, task: str) -> Tensor:
    if task == "classification":
        return F.cross_entropy(logits, targets)
    return F.l1_loss(logits, targets.view_as(logits))


def _ordered_views(model: Robult, views: Views) -> list[Tensor]:
    if isinstance(views, Mapping):
        missing = [n for n in model.modality_names if n not in views]
        if missing:
            raise ValueError(f"views: missing modalities {missing}")
        return [views[n] for n in model.modality_names]
    views = list(views)
    if len(views) != model.num_modalities:
        raise ValueError(f"views: expected {model.num_modalities} tensors, got {len(views)}")
    return views


def regression_bin_edges(targets: Tensor, labeled: Tensor, num_bins: int) -> Tensor:
    """Quantile edges of the first target column over the labeled rows: the soft-PU classes of regression.

    Args:
        targets: `[N]` or `[N, K]` regression targets.
        labeled: `[N]` bool.
        num_bins: number of equal-count bins.
    """
    return quantile_edges(targets.reshape(len(targets), -1)[labeled, 0], num_bins)


def pu_classes(targets: Tensor, labeled: Tensor, *, task: str, bin_edges: Tensor | None = None) -> Tensor:
    """The classes of the soft-PU masks: `[B]` int64, the label (or its bin) where labeled, -1 elsewhere.

    Raises:
        ValueError: a regression task without `bin_edges`.
    """
    if task == "classification":
        return torch.where(labeled, targets, torch.full_like(targets, -1))
    if bin_edges is None:
        raise ValueError("bin_edges: expected the quantile edges of the targets for a regression model "
                         "(see regression_bin_edges)")
    first = targets.reshape(len(targets), -1)[:, 0]
    return torch.where(labeled, discretize(first, bin_edges), torch.full_like(first, -1, dtype=torch.long))


def robult_losses(
    model: Robult,
    out: RobultOutput,
    targets: Tensor,
    labeled: Tensor,
    *,
    pu_labels: Tensor,
    pseudo_labels: Tensor | None,
    config: RobultConfig,
) -> RobultLosses:
    """The routed losses of one batch (see the module docstring for the formulas and the routing).

    Args:
        model: the model that produced `out`.
        out: `model(views)` on the batch (B rows).
        targets: `[B]` class ids, or `[B]` / `[B, K]` regression targets (read only where labeled).
        labeled: `[B]` bool.
        pu_labels: `[B]` int64 classes of the soft-PU masks (`pu_classes`).
        pseudo_labels: `[B]` int64 guesses (-1: none), or None.
        config: loss options.
    """
    if bool(labeled.any()):
        sup = _supervised_loss(out.logits[labeled], targets[labeled], model.task)
        sup = sup + torch.stack([_supervised_loss(u[labeled], targets[labeled], model.task)
                                 for u in out.unimodal_logits]).mean()
    else:
        sup = out.logits.sum() * 0.0
    parts = soft_pu_loss(
        out.fused_shared, out.shared, pu_labels, labeled, pseudo_labels,
        temperature=config.temperature, rbf_sigma=config.rbf_sigma, rbf_space=config.rbf_space,
        return_parts=True, backend=config.backend,
    )
    if config.rec_weight > 0:
        _, rec_hat = model.reconstruct(out.hidden.detach(), out.shared.detach())
        rec = cosine_reconstruction_loss(rec_hat, out.hidden.detach(), backend=config.backend)
    else:
        rec = out.hidden.new_zeros(())
    return RobultLosses(sup, parts.labeled, parts.unlabeled, rec)  # type: ignore[union-attr]


def weighted_total(losses: RobultLosses, config: RobultConfig) -> Tensor:
    """`w_sup L_sup + w_pu (lb·use_lb + ulb·use_ulb) + w_rec L_rec`: the scalar one backward() trains with."""
    pu = losses.pu_labeled * float(config.use_lb) + losses.pu_unlabeled * float(config.use_ulb)
    return config.sup_weight * losses.sup + config.pu_weight * pu + config.rec_weight * losses.rec


def robult_loss(
    model: Robult,
    views: Views,
    targets: Tensor,
    labeled: Tensor,
    *,
    config: RobultConfig,
    pseudo_labels: Tensor | None = None,
    bin_edges: Tensor | None = None,
) -> RobultStep:
    """Robult's loss on one batch: the forward pass, the routed losses and their weighted total.

    The soft-PU loss gets pseudo labels for the unlabeled rows from, in order: `pseudo_labels` (a teacher's,
    see `mkefast.data.labels.teacher_labels`), else the model's own fused prediction c(H^0) (argmax with
    `config.pseudo_threshold`, or its bin for regression) while the supervised loss trains c, else none.
    `config.use_pseudo_labels=False` turns them off.

    Args:
        model: the model to train.
        views: the batch, a list of the M views `[B, f_i]` in model order or a mapping name -> view.
        targets: `[B]` class ids, or `[B]` / `[B, K]` regression targets (read only where labeled).
        labeled: `[B]` bool.
        config: the loss options.
        pseudo_labels: `[B]` int64 guesses of a teacher (-1: none), or None.
        bin_edges: regression only: the quantile edges of the targets (`regression_bin_edges`).

    Returns:
        `RobultStep(total, losses, output)`; `total.backward()` sends each loss to its parameters only.
    """
    out = model(_ordered_views(model, views))
    pu_labels = pu_classes(targets, labeled, task=model.task, bin_edges=bin_edges)
    pseudo = None
    if config.use_pseudo_labels:
        if pseudo_labels is not None:
            pseudo = pseudo_labels
        elif config.sup_weight > 0:
            if model.task == "classification":
                pseudo = pseudo_labels_from_logits(out.logits, config.pseudo_threshold)
            else:
                assert bin_edges is not None  # pu_classes raised otherwise
                pseudo = discretize(out.logits.detach()[:, 0].contiguous(), bin_edges)
    losses = robult_losses(model, out, targets, labeled, pu_labels=pu_labels, pseudo_labels=pseudo, config=config)
    return RobultStep(weighted_total(losses, config), losses, out)


def unpack_robult_batch(batch: object, model: Robult) -> tuple[list[Tensor], Tensor, Tensor]:
    """`(views, targets, labeled)` of one batch from a data loader, the views as a list in model order.

    Raises:
        ValueError: the batch is not a `(views, targets, labeled)` triple of matching rows.
    """
    if not isinstance(batch, (list, tuple)) or len(batch) != 3:
        raise ValueError(f"batch: expected (views, targets, labeled), got {type(batch).__name__}"
                         f"{f' of {len(batch)} items' if isinstance(batch, (list, tuple)) else ''}")
    views, targets, labeled = batch
    xs = _ordered_views(model, views)
    _check_rows(xs, targets, labeled)
    return xs, targets, labeled


def _check_rows(xs: list[Tensor], targets: Tensor, labeled: Tensor) -> int:
    n = len(targets)
    if labeled.dtype != torch.bool or labeled.shape != (n,):
        raise ValueError(f"labeled: expected a [{n}] bool tensor, got {labeled.dtype} {list(labeled.shape)}")
    if any(len(x) != n for x in xs):
        raise ValueError(f"views: expected {n} rows in every modality (len(targets)), got {[len(x) for x in xs]}")
    return n


Batch = tuple[list[Tensor], Tensor, Tensor, Tensor | None]
"""One training batch inside the trainer: views in model order, targets, labeled, teacher labels."""


class RobultTrainer:
    """Trains a `Robult` model on labeled + unlabeled rows with mini-batches, checkpoints and validation.

    Args:
        model: the model (its `task` chooses cross-entropy or L1); moved to `config.device`.
        config: the options.
        teacher: optional pseudo-labeller used instead of argmax c(H^0) (e.g. an MKE teacher); called once
            on all training rows given as tensors, on every batch of a loader (it does not learn).
        checkpoint: file to save the run to every `checkpoint_every` epochs and to resume from; it holds
            the configuration of the run (`config`, model, initial weights and RNG state, data fingerprint,
            `checkpoint_key`) and only a run with the same one resumes from it.
        checkpoint_every: save period in epochs.
        checkpoint_key: what else identifies the run (describe the data here when it comes from a loader,
            whose content is not fingerprinted).
        show_progress: report progress (a bar on a terminal, a line every few seconds and at the end in a log),
            or not; None: unless `MKEFAST_PROGRESS=0` (`mkefast.train.common.progress`).
        desc: what the progress report calls this run.
    """

    def __init__(
        self,
        model: Robult,
        config: RobultConfig | None = None,
        *,
        teacher: Teacher | None = None,
        checkpoint: str | os.PathLike[str] | None = None,
        checkpoint_every: int = 50,
        checkpoint_key: Mapping[str, Any] | None = None,
        show_progress: bool | None = None,
        desc: str = "robult",
    ) -> None:
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every: expected a period >= 1, got {checkpoint_every}")
        self.config = config or RobultConfig()
        self.device = resolve_device(self.config.device, model)
        self.model = model.to(self.device)
        self.teacher = teacher
        self.checkpoint, self.checkpoint_every = checkpoint, checkpoint_every
        self.checkpoint_key = dict(checkpoint_key or {})
        self.show_progress, self.desc = show_progress, desc
        self.optimizer = make_optimizer(self.model, self.config)
        self.history: list[dict[str, float]] = []

    def fit(
        self,
        data: Views | Iterable[Any],
        targets: Tensor | None = None,
        labeled: Tensor | None = None,
        *,
        val: Any = None,
        eval_every: int = 10,
        bin_edges: Tensor | None = None,
    ) -> list[dict[str, float]]:
        """Trains for `config.epochs` epochs (resuming from the checkpoint of the same run when there is one).

        Two forms: the tensors of all N training rows (`data` the views, with `targets` and `labeled`; an
        epoch is one pass of `config.batch_size` batches in a new order, the last incomplete one dropped),
        or a data loader (any iterable of `(views, targets, labeled)` batches, views a list in model order
        or a mapping by name, as a `DataLoader`'s default collate makes them; an epoch is one pass over
        it, in its order).

        Args:
            data: the views `[N, f_i]` (list in model order, or by name), or an iterable of batches.
            targets: `[N]` class ids or `[N]` / `[N, K]` regression targets (unread where unlabeled).
            labeled: `[N]` bool.
            val: optional `(views, targets)` tensors or an iterable of such batches, evaluated every
                `eval_every` epochs ("val" in the history: accuracy in percent, or mean absolute error for
                regression).
            eval_every: validation period in epochs.
            bin_edges: regression only: the soft-PU bins (default: quantiles of the labeled targets; from
                a loader that takes one extra pass over it).

        Returns:
            One dict per epoch: the mean losses ("sup", "pu_lb", "pu_ulb", "rec", "total") and "val".
        """
        model, config, device = self.model, self.config, self.device
        identity = run_identity(model) if self.checkpoint is not None else {}
        regression = model.task == "regression"
        epoch_batches: Callable[[], Iterator[Batch]]
        if targets is not None or labeled is not None:
            if targets is None or labeled is None or not isinstance(data, (Mapping, Sequence)):
                raise ValueError("data, targets, labeled: expected the views with both targets and labeled "
                                 "tensors, or a loader of (views, targets, labeled) batches alone")
            xs = to_device(_ordered_views(model, data), device)
            targets, labeled = targets.to(device), labeled.to(device)
            n = _check_rows(xs, targets, labeled)
            if not bool(labeled.any()) and config.sup_weight > 0:
                raise ValueError("labeled: expected at least one labeled row")
            edges = bin_edges if bin_edges is not None or not regression else regression_bin_edges(
                targets, labeled, config.num_bins)
            guesses = (teacher_labels(self.teacher, xs, n, threshold=config.pseudo_threshold)
                       if self.teacher is not None else None)
            batches = TensorBatches(n, config.batch_size or n, drop_last=True)
            generators = [batches.generator]
            data_key: dict[str, Any] = {"rows": n, "fingerprint": fingerprint(*xs, targets, labeled, guesses)}
            epoch_batches = lambda: (([x[idx] for x in xs], targets[idx], labeled[idx],
                                      None if guesses is None else guesses[idx]) for idx in batches)
            probe_batches = lambda: iter([([x[labeled] for x in xs], targets[labeled])])
        else:
            loader = data
            edges = bin_edges if bin_edges is not None or not regression else self._loader_bin_edges(loader)
            generators = loader_generators(loader)
            data_key = describe_loader(loader)
            epoch_batches = lambda: self._loader_batches(loader)
            probe_batches = lambda: ((xs_b, t_b) if bool(l_b.all()) else ([x[l_b] for x in xs_b], t_b[l_b])
                                     for xs_b, t_b, l_b, _ in self._loader_batches(loader, label=False)
                                     if bool(l_b.any()))
        checkpointer = Checkpointer(self.checkpoint, every=self.checkpoint_every, config={
            "trainer": "robult.RobultTrainer", "config": {**asdict(config), "device": str(device)}, "data": data_key,
            "bin_edges": None if edges is None else fingerprint(edges),
            "teacher": None if self.teacher is None else f"{type(self.teacher).__module__}."
                                                           f"{type(self.teacher).__qualname__}",
            **identity, "run": self.checkpoint_key})
        start, extra = checkpointer.restore(model, self.optimizer, generators)
        if start:
            self.history = list(extra["history"])

        epochs = progress(range(start, config.epochs), desc=self.desc, enabled=self.show_progress, unit="epoch")
        for epoch in epochs:
            model.train()
            sums = dict.fromkeys(LOSS_KEYS, 0.0)
            steps = labeled_rows = 0
            for xs_b, targets_b, labeled_b, guesses_b in epoch_batches():
                step = robult_loss(model, xs_b, targets_b, labeled_b, config=config, pseudo_labels=guesses_b,
                                   bin_edges=edges)
                self.optimizer.zero_grad(set_to_none=True)
                step.total.backward()
                self.optimizer.step()
                for key, value in zip(LOSS_KEYS, (*step.losses, step.total), strict=True):
                    sums[key] += float(value.detach())
                steps += 1
                labeled_rows += int(labeled_b.sum())
            if steps == 0:
                raise ValueError("data: an epoch gave no batch (an empty loader, or fewer rows than a batch)")
            if labeled_rows == 0 and config.sup_weight > 0:
                raise ValueError("labeled: expected at least one labeled row in an epoch")
            record = {k: v / steps for k, v in sums.items()}
            if val is not None and (epoch + 1) % eval_every == 0:
                record["val"] = self._validate(val)
            self.history.append(record)
            epochs.set_stats(**record)
            checkpointer.maybe_save(epoch + 1, model, self.optimizer, generators, {"history": self.history},
                                    force=epoch + 1 == config.epochs)
        if config.sup_weight == 0 and config.probe_epochs > 0:
            self._probe(probe_batches())
        model.eval()
        return self.history

    def _loader_batches(self, loader: Iterable[Any], *, label: bool = True) -> Iterator[Batch]:
        for batch in loader:
            xs, targets, labeled = to_device(unpack_robult_batch(batch, self.model), self.device)
            guesses = None
            if label and self.teacher is not None:
                guesses = teacher_labels(self.teacher, xs, len(targets), threshold=self.config.pseudo_threshold)
            yield xs, targets, labeled, guesses

    def _loader_bin_edges(self, loader: Iterable[Any]) -> Tensor:
        """The regression bins from one pass over the loader (the quantiles do not depend on its order)."""
        firsts = [t.reshape(len(t), -1)[lab, 0] for _, t, lab, _ in self._loader_batches(loader, label=False)]
        values = torch.cat(firsts) if firsts else torch.empty(0)
        return quantile_edges(values, self.config.num_bins)

    def _validate(self, val: Any) -> float:
        model = self.model
        model.eval()
        predict = lambda views: model.predict(_ordered_views(model, views))
        if model.task == "classification":
            result = accuracy(predict, val, device=self.device)
        elif isinstance(val, tuple) and len(val) == 2 and isinstance(val[1], Tensor):
            pred = predict(to_device(val[0], self.device))
            result = float((pred - val[1].to(self.device).view_as(pred)).abs().mean())
        else:
            total, count = 0.0, 0
            for views, targets in val:
                pred = predict(to_device(views, self.device))
                total += float((pred - targets.to(self.device).view_as(pred)).abs().sum())
                count += pred.numel()
            result = total / count
        model.train()
        return result

    def _probe(self, labeled_batches: Iterator[tuple[list[Tensor], Tensor]]) -> None:
        """Trains only c on the frozen H^0 and H̃^i of the labeled rows (the `sup_weight = 0` ablation)."""
        model = self.model
        model.eval()
        features, ys = [], []
        with torch.no_grad():
            for xs, y in labeled_batches:
                out = model(xs)
                features.append(torch.cat([out.fused_hidden.unsqueeze(0), out.reconstruction]))  # [M + 1, L, h]
                ys.append(y)
        if not features:
            return
        feats, y = torch.cat(features, dim=1), torch.cat(ys)
        opt = torch.optim.AdamW(model.classifier.parameters(), lr=self.config.lr,
                                weight_decay=self.config.weight_decay)
        for _ in range(self.config.probe_epochs):
            loss = torch.stack([_supervised_loss(model.classifier(f), y, model.task) for f in feats]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


@torch.no_grad()
def evaluate(model: Robult, views: Mapping[str, Tensor], labels: Tensor, *,
             fusion: str = "mean_prob") -> dict[str, float]:
    """Test accuracy in percent with every modality ("full") and with each modality alone (its name)."""
    model.eval()
    device = next(model.parameters()).device
    acc = {"full": accuracy(model.predict, (views, labels), device=device)}
    for name in model.modality_names:
        acc[name] = accuracy(lambda v, name=name: model.predict(v, available=[name], fusion=fusion),  # type: ignore[misc]
                             (views, labels), device=device)
    return acc
