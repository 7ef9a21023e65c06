"""Robult trainer (SPEC §4), its baselines and ablations, and the `mkefast robult` command.

Losses, for a mini-batch with labeled mask `L`:

```
L_sup = CE(c(H^0)[L], y[L]) + mean_i CE(c(H̃^i)[L], y[L])      (L1 instead of CE for regression)
L_PU  = soft_pu_loss(S, stack(Z^i), y_pu, L, pseudo)             (lb + ulb terms, SPEC §1)
L_rec = cosine_reconstruction_loss(stack(H̃^i), stack(H^i))      (SPEC §2)
L     = w_sup L_sup + w_pu (lb·use_lb + ulb·use_ulb) + w_rec L_rec
```

Routing (which parameters each loss trains): L_sup trains everything; L_PU trains f^i, f^0 and g^0 (it
reads only S and Z^i, and its pseudo labels are detached, so it never reaches g^i, r^i or c); L_rec trains
only g^i and r^i: it is computed on a second pass of g^i and r^i over the detached H^i and Z^i, with the
detached H^i as target, so the one `backward()` of the weighted sum gives each parameter exactly the
gradients its losses are allowed to send (the extra pass costs two small MLPs, far less than a second
backward through the whole graph).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mkefast.models.mlp import MLP
from mkefast.models.robult import Robult, RobultOutput
from mkefast.ops import cosine_reconstruction_loss, soft_pu_loss
from mkefast.train.common import Checkpointer, progress, seed_everything

__all__ = [
    "ROBULT_VARIANTS",
    "RobultConfig",
    "RobultLosses",
    "RobultTrainer",
    "demo_section",
    "discretize",
    "evaluate",
    "multilabel_to_class_ids",
    "pseudo_labels_from_logits",
    "quantile_edges",
    "robult_losses",
    "run_experiment",
    "train_supervised",
]

Teacher = Callable[[list[Tensor]], Tensor]
"""Pseudo-labeller: maps the M views `[N, f_i]` to class ids `[N]` (negative: no guess) or logits `[N, K]`."""

# Variant name -> the RobultConfig fields it overrides (the ablations of the paper's Table 3).
ROBULT_VARIANTS: dict[str, dict[str, Any]] = {
    "robult": {},
    "robult_no_rec": {"rec_weight": 0.0},
    "robult_no_lb": {"use_lb": False},
    "robult_no_ulb": {"use_ulb": False},
    "robult_no_sup": {"sup_weight": 0.0},
}


_ALL_VARIANTS = (*ROBULT_VARIANTS, "supervised")


@dataclass(frozen=True)
class RobultConfig:
    """Training options of `RobultTrainer` (and of the supervised baselines: epochs, batch, optimizer).

    Attributes:
        epochs: passes over the training rows.
        batch_size: rows per step, or None for full-batch training. The default 256 keeps the B×B soft-PU
            pass cheap (full batch on mfeat's 1400 training rows costs ~30x more per epoch with the
            reference backend) while a batch still holds every class and, at 5% labels, ~13 labeled rows.
        lr, weight_decay: AdamW settings.
        temperature, rbf_sigma, rbf_space: soft-PU options (SPEC §1).
        sup_weight, pu_weight, rec_weight: loss weights.
        use_lb, use_ulb: keep the labeled / unlabeled term of the soft-PU loss (ablations).
        pseudo_threshold: pseudo labels whose softmax confidence is below this become -1 (no guess).
        use_pseudo_labels: feed pseudo labels (from c(H^0), or the teacher) to the soft-PU loss.
        probe_epochs: with sup_weight = 0, epochs of a second stage that trains only c on the frozen
            representations of the labeled rows (otherwise nothing would train the classifier).
        num_bins: regression only: quantile bins of the target that give the soft-PU classes.
        backend: backend of the soft-PU and cosine losses.
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

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ValueError(f"epochs: expected >= 0, got {self.epochs}")
        if self.batch_size is not None and self.batch_size < 2:
            raise ValueError(f"batch_size: expected >= 2 (the contrastive loss is batchwise) or None, "
                             f"got {self.batch_size}")
        for name in ("sup_weight", "pu_weight", "rec_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.pseudo_threshold < 1.0:
            raise ValueError(f"pseudo_threshold: expected a value in [0, 1), got {self.pseudo_threshold}")
        if self.lr <= 0:
            raise ValueError(f"lr: expected > 0, got {self.lr}")
        if self.num_bins < 2:
            raise ValueError(f"num_bins: expected >= 2, got {self.num_bins}")


class RobultLosses(NamedTuple):
    """The unweighted losses of one batch (scalars), each already routed to its parameters."""

    sup: Tensor
    pu_labeled: Tensor
    pu_unlabeled: Tensor
    rec: Tensor


def multilabel_to_class_ids(label_sets: Tensor, vocabulary: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Maps multi-label rows to class ids, one class per distinct label set (label powerset).

    Two samples are then positives of each other in the soft-PU loss exactly when their label sets are
    equal. Pass the vocabulary returned for the training rows to map other rows the same way.

    Args:
        label_sets: `[N, L]` bool or 0/1 indicator matrix.
        vocabulary: `[K, L]` known label sets (class k = row k), or None to build it from `label_sets`.

    Returns:
        `(class_ids [N] int64, vocabulary [K, L] bool)`; with a given vocabulary, unknown sets map to -1.
    """
    if label_sets.dim() != 2:
        raise ValueError(f"label_sets: expected an [N, L] indicator matrix, got {list(label_sets.shape)}")
    if label_sets.dtype != torch.bool:
        if label_sets.is_floating_point() or not bool(((label_sets == 0) | (label_sets == 1)).all()):
            raise TypeError(f"label_sets: expected a bool or 0/1 integer tensor, got {label_sets.dtype}")
        label_sets = label_sets.bool()
    if vocabulary is None:
        vocabulary, ids = torch.unique(label_sets, dim=0, return_inverse=True)
        return ids.long(), vocabulary
    if vocabulary.dim() != 2 or vocabulary.shape[1] != label_sets.shape[1]:
        raise ValueError(f"vocabulary: expected shape [K, {label_sets.shape[1]}], got {list(vocabulary.shape)}")
    match = (label_sets.unsqueeze(1) == vocabulary.bool().unsqueeze(0)).all(-1)  # [N, K]
    ids = torch.where(match.any(1), match.float().argmax(1), torch.full_like(match[:, 0], -1, dtype=torch.long))
    return ids.long(), vocabulary.bool()


def quantile_edges(values: Tensor, num_bins: int) -> Tensor:
    """The `num_bins - 1` inner quantile edges of `values` `[N]` (equal-count bins)."""
    if values.dim() != 1 or values.numel() == 0:
        raise ValueError(f"values: expected a non-empty [N] tensor, got {list(values.shape)}")
    q = torch.linspace(0, 1, num_bins + 1, dtype=torch.float64)[1:-1]
    return torch.quantile(values.double(), q).to(values.dtype)


def discretize(values: Tensor, edges: Tensor) -> Tensor:
    """Bin ids `[N]` int64 of regression targets `[N]` for the soft-PU masks (`edges` from `quantile_edges`)."""
    return torch.bucketize(values.contiguous(), edges.contiguous()).long()


def pseudo_labels_from_logits(logits: Tensor, threshold: float = 0.0) -> Tensor:
    """argmax of `logits` `[B, K]` as `[B]` int64; -1 where the softmax confidence is below `threshold`."""
    probs = logits.detach().softmax(-1)
    conf, ids = probs.max(-1)
    return torch.where(conf >= threshold, ids, torch.full_like(ids, -1))


def _supervised_loss(logits: Tensor, targets: Tensor, task: str) -> Tensor:
    if task == "classification":
        return F.cross_entropy(logits, targets)
    return F.l1_loss(logits, targets.view_as(logits))


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
        pu_labels: `[B]` int64 classes of the soft-PU masks (= targets for classification).
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


def _total(losses: RobultLosses, config: RobultConfig) -> Tensor:
    pu = losses.pu_labeled * float(config.use_lb) + losses.pu_unlabeled * float(config.use_ulb)
    return config.sup_weight * losses.sup + config.pu_weight * pu + config.rec_weight * losses.rec


def _ordered_views(model: Robult, views: Mapping[str, Tensor] | Sequence[Tensor]) -> list[Tensor]:
    if isinstance(views, Mapping):
        missing = [n for n in model.modality_names if n not in views]
        if missing:
            raise ValueError(f"views: missing modalities {missing}")
        return [views[n] for n in model.modality_names]
    views = list(views)
    if len(views) != model.num_modalities:
        raise ValueError(f"views: expected {model.num_modalities} tensors, got {len(views)}")
    return views


class RobultTrainer:
    """Trains a `Robult` model on labeled + unlabeled rows with mini-batches, checkpoints and validation.

    Args:
        model: the model (its `task` chooses cross-entropy or L1).
        config: the options.
        teacher: optional pseudo-labeller used instead of argmax c(H^0) (e.g. an MKE teacher); called once
            on all training rows, since it does not learn.
        checkpoint: file to save the state to every `checkpoint_every` epochs and to resume from.
        checkpoint_every: save period in epochs.
        show_progress: a progress bar (None: when stderr is a terminal).
    """

    def __init__(
        self,
        model: Robult,
        config: RobultConfig | None = None,
        *,
        teacher: Teacher | None = None,
        checkpoint: str | None = None,
        checkpoint_every: int = 50,
        show_progress: bool | None = None,
    ) -> None:
        self.model = model
        self.config = config or RobultConfig()
        self.teacher = teacher
        self.checkpointer = Checkpointer(checkpoint, every=checkpoint_every)
        self.show_progress = show_progress
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=self.config.lr,
                                           weight_decay=self.config.weight_decay)
        self.history: list[dict[str, float]] = []

    def _pu_labels(self, targets: Tensor, labeled: Tensor) -> tuple[Tensor, Tensor | None]:
        """Soft-PU classes of the rows (-1 where unlabeled), and the regression bin edges (or None)."""
        if self.model.task == "classification":
            return torch.where(labeled, targets, torch.full_like(targets, -1)), None
        first = targets.reshape(len(targets), -1)[:, 0]
        edges = quantile_edges(first[labeled], self.config.num_bins)
        return torch.where(labeled, discretize(first, edges), torch.full_like(first, -1, dtype=torch.long)), edges

    def _teacher_labels(self, views: list[Tensor]) -> Tensor:
        assert self.teacher is not None
        with torch.no_grad():
            guess = self.teacher(views)
        if guess.dim() == 2:
            return pseudo_labels_from_logits(guess, self.config.pseudo_threshold)
        if guess.dim() != 1 or guess.shape[0] != len(views[0]) or guess.is_floating_point():
            raise ValueError(f"teacher: expected [N] class ids or [N, K] logits, got {guess.dtype} "
                             f"{list(guess.shape)}")
        return guess.long()

    def fit(
        self,
        views: Mapping[str, Tensor] | Sequence[Tensor],
        targets: Tensor,
        labeled: Tensor,
        *,
        val: tuple[Mapping[str, Tensor] | Sequence[Tensor], Tensor] | None = None,
        eval_every: int = 10,
    ) -> list[dict[str, float]]:
        """Trains for `config.epochs` epochs (resuming from the checkpoint when there is one).

        Args:
            views: the N training rows of each modality, `[N, f_i]` (list in model order, or by name).
            targets: `[N]` class ids or `[N]` / `[N, K]` regression targets (unread where unlabeled).
            labeled: `[N]` bool.
            val: optional `(views, targets)` evaluated every `eval_every` epochs ("val" in the history:
                accuracy in percent, or mean absolute error for regression).
            eval_every: validation period in epochs.

        Returns:
            One dict per epoch: the mean losses ("sup", "pu_lb", "pu_ulb", "rec", "total") and "val".
        """
        model, config = self.model, self.config
        xs = _ordered_views(model, views)
        n = len(targets)
        if labeled.dtype != torch.bool or labeled.shape != (n,):
            raise ValueError(f"labeled: expected a [{n}] bool tensor, got {labeled.dtype} {list(labeled.shape)}")
        if any(len(x) != n for x in xs):
            raise ValueError(f"views: expected {n} rows in every modality (len(targets)), got "
                             f"{[len(x) for x in xs]}")
        if not bool(labeled.any()) and config.sup_weight > 0:
            raise ValueError("labeled: expected at least one labeled row")
        pu_labels, edges = self._pu_labels(targets, labeled)
        teacher_labels = self._teacher_labels(xs) if self.teacher is not None else None
        use_pseudo = config.use_pseudo_labels and (teacher_labels is not None or config.sup_weight > 0)
        batch = n if config.batch_size is None else min(config.batch_size, n)
        generator = torch.Generator().manual_seed(int(torch.randint(0, 2**62, ()).item()))

        start = 0
        state = self.checkpointer.load()
        if state is not None:
            model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.history = state["history"]
            generator.set_state(state["generator"])
            Checkpointer.set_rng_state(state["rng"])
            start = state["epoch"]

        for epoch in progress(range(start, config.epochs), desc="robult", total=config.epochs - start,
                              enabled=self.show_progress):
            model.train()
            sums = dict.fromkeys(("sup", "pu_lb", "pu_ulb", "rec", "total"), 0.0)
            perm = torch.randperm(n, generator=generator)
            steps = 0
            # The last incomplete batch is dropped: a tiny batch gives the contrastive loss few candidates.
            for lo in range(0, n - batch + 1, batch):
                idx = perm[lo:lo + batch]
                out = model([x[idx] for x in xs])
                pseudo = None
                if use_pseudo:
                    if teacher_labels is not None:
                        pseudo = teacher_labels[idx]
                    elif edges is None:
                        pseudo = pseudo_labels_from_logits(out.logits, config.pseudo_threshold)
                    else:
                        pseudo = discretize(out.logits.detach()[:, 0].contiguous(), edges)
                losses = robult_losses(model, out, targets[idx], labeled[idx], pu_labels=pu_labels[idx],
                                       pseudo_labels=pseudo, config=config)
                total = _total(losses, config)
                self.optimizer.zero_grad(set_to_none=True)
                total.backward()
                self.optimizer.step()
                for key, value in zip(("sup", "pu_lb", "pu_ulb", "rec", "total"), (*losses, total), strict=True):
                    sums[key] += float(value.detach())
                steps += 1
            record = {k: v / steps for k, v in sums.items()}
            if val is not None and (epoch + 1) % eval_every == 0:
                record["val"] = self._validate(*val)
            self.history.append(record)
            self.checkpointer.maybe_save(epoch + 1, {
                "model": model.state_dict(), "optimizer": self.optimizer.state_dict(), "epoch": epoch + 1,
                "history": self.history, "generator": generator.get_state(), "rng": Checkpointer.rng_state(),
            }, force=epoch + 1 == config.epochs)
        if config.sup_weight == 0 and config.probe_epochs > 0:
            self._probe(xs, targets, labeled)
        model.eval()
        return self.history

    def _validate(self, views: Mapping[str, Tensor] | Sequence[Tensor], targets: Tensor) -> float:
        self.model.eval()
        pred = self.model.predict(_ordered_views(self.model, views))
        self.model.train()
        if self.model.task == "classification":
            return 100.0 * float((pred.argmax(-1) == targets).float().mean())
        return float((pred - targets.view_as(pred)).abs().mean())

    def _probe(self, xs: list[Tensor], targets: Tensor, labeled: Tensor) -> None:
        """Trains only c on the frozen H^0 and H̃^i of the labeled rows (the `sup_weight = 0` ablation)."""
        model = self.model
        model.eval()
        with torch.no_grad():
            out = model([x[labeled] for x in xs])
        feats = torch.cat([out.fused_hidden.unsqueeze(0), out.reconstruction])  # [M + 1, L, h]
        y = targets[labeled]
        opt = torch.optim.AdamW(model.classifier.parameters(), lr=self.config.lr,
                                weight_decay=self.config.weight_decay)
        for _ in range(self.config.probe_epochs):
            loss = torch.stack([_supervised_loss(model.classifier(f), y, model.task) for f in feats]).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


class _EarlyFusionMLP(nn.Module):
    """Encoder + classifier on the concatenated views: the supervised baselines' network."""

    def __init__(self, in_features: int, num_classes: int, encoder_hidden: Sequence[int], hidden_size: int,
                 classifier_hidden: Sequence[int]) -> None:
        super().__init__()
        self.encoder = MLP(in_features, encoder_hidden, hidden_size)
        self.classifier = MLP(hidden_size, classifier_hidden, num_classes)

    def forward(self, xs: list[Tensor]) -> Tensor:
        return self.classifier(self.encoder(torch.cat(xs, -1)))


def train_supervised(xs: list[Tensor], labels: Tensor, num_classes: int, config: RobultConfig, steps: int,
                     *, encoder_hidden: Sequence[int] = (256,), hidden_size: int = 128,
                     classifier_hidden: Sequence[int] = ()) -> nn.Module:
    """The supervised baseline: Robult's encoder f + classifier c on the given labeled views only.

    One view gives the per-view baseline; several are concatenated (early fusion). Cross-entropy on the
    labeled rows with Robult's optimizer settings, for `steps` updates (give it as many as Robult makes,
    so that the few labeled rows do not leave it under-trained).

    Returns:
        A module mapping a list of views `[B, f_i]` to logits `[B, K]`, in eval mode.
    """
    net = _EarlyFusionMLP(sum(x.shape[1] for x in xs), num_classes, encoder_hidden, hidden_size,
                          classifier_hidden)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(labels)
    batch = n if config.batch_size is None else min(config.batch_size, n)
    perm, lo = torch.randperm(n), 0
    for _ in range(steps):
        if lo + batch > n:
            perm, lo = torch.randperm(n), 0
        idx = perm[lo:lo + batch]
        lo += batch
        loss = F.cross_entropy(net([x[idx] for x in xs]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


@torch.no_grad()
def evaluate(model: Robult, views: Mapping[str, Tensor], labels: Tensor, *,
             fusion: str = "mean_prob") -> dict[str, float]:
    """Test accuracy in percent with every modality ("full") and with each modality alone (its name)."""
    model.eval()
    acc = {"full": 100.0 * float((model.predict(views).argmax(-1) == labels).float().mean())}
    for name in model.modality_names:
        pred = model.predict(views, available=[name], fusion=fusion)
        acc[name] = 100.0 * float((pred.argmax(-1) == labels).float().mean())
    return acc


def run_experiment(data: Any, *, labeled_fraction: float, seed: int, config: RobultConfig,
                   variants: Sequence[str] = _ALL_VARIANTS,
                   model_kwargs: Mapping[str, Any] | None = None, show_progress: bool | None = None,
                   ) -> dict[str, dict[str, float]]:
    """Splits `data` (a `MultiViewData`), trains each variant, returns test accuracy per variant/condition.

    "supervised" trains on the labeled rows only: early fusion of all views for "full", one network per
    view for the view's own condition. The other variants are `ROBULT_VARIANTS`.
    """
    from mkefast.data.mfeat import split_multiview

    unknown = [v for v in variants if v not in ROBULT_VARIANTS and v != "supervised"]
    if unknown:
        raise ValueError(f"variants: unknown {unknown}; expected names from {list(_ALL_VARIANTS)}")
    split = split_multiview(data, labeled_fraction=labeled_fraction, seed=seed)
    names = list(split.labeled.views)
    num_classes = int(data.num_classes)
    train_views = {n: torch.cat([split.labeled.views[n], split.unlabeled.views[n]]) for n in names}
    train_labels = torch.cat([split.labeled.labels, split.unlabeled.labels])
    labeled = torch.arange(len(train_labels)) < len(split.labeled)
    kwargs = dict(model_kwargs or {})
    batch = len(train_labels) if config.batch_size is None else min(config.batch_size, len(train_labels))
    steps = config.epochs * (len(train_labels) // batch)
    results: dict[str, dict[str, float]] = {}
    for variant in variants:
        seed_everything(seed)
        if variant == "supervised":
            acc = {}
            for cond, cond_names in [("full", names), *[(n, [n]) for n in names]]:
                net = train_supervised([split.labeled.views[n] for n in cond_names], split.labeled.labels,
                                       num_classes, config, steps, **{k: v for k, v in kwargs.items() if k in
                                                               ("encoder_hidden", "hidden_size",
                                                                "classifier_hidden")})
                with torch.no_grad():
                    pred = net([split.test.views[n] for n in cond_names]).argmax(-1)
                acc[cond] = 100.0 * float((pred == split.test.labels).float().mean())
            results[variant] = acc
            continue
        model = Robult([train_views[n].shape[1] for n in names], num_classes, modality_names=names, **kwargs)
        RobultTrainer(model, replace(config, **ROBULT_VARIANTS[variant]),
                      show_progress=show_progress).fit(train_views, train_labels, labeled)
        results[variant] = evaluate(model, split.test.views, split.test.labels)
    return results


def _print_table(accuracy: Mapping[str, Mapping[str, float]], file: Any = None) -> None:
    conditions = list(next(iter(accuracy.values())))
    width = max(len(v) for v in accuracy)
    print(f"{'test accuracy (%)':<{width}}  " + "  ".join(f"{c:>7}" for c in conditions), file=file)
    for variant, acc in accuracy.items():
        print(f"{variant:<{width}}  " + "  ".join(f"{acc[c]:7.2f}" for c in conditions), file=file)


def _config_from_args(args: argparse.Namespace) -> RobultConfig:
    # The models are tiny: extra threads cost more in synchronization than they save in math.
    torch.set_num_threads(args.threads)
    return RobultConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        pseudo_threshold=args.pseudo_threshold, backend=args.backend)


def _finish(args: argparse.Namespace, accuracy: dict[str, dict[str, float]], config: dict[str, Any]) -> int:
    _print_table(accuracy)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"accuracy": accuracy, "config": config}, f, indent=2)
    return 0


def _run_mfeat(args: argparse.Namespace) -> int:
    from mkefast.data.mfeat import load_mfeat

    views = [v.strip() for v in args.views.split(",") if v.strip()]
    if len(views) < 2:
        raise ValueError(f"--views: expected at least two comma-separated views, got {args.views!r}")
    config = _config_from_args(args)
    data = load_mfeat(views, data_dir=args.data_dir)
    start = time.perf_counter()
    accuracy = run_experiment(data, labeled_fraction=args.labeled_fraction, seed=args.seed, config=config,
                              variants=_variants(args.variants))
    meta = {"dataset": "mfeat", "views": views, "labeled_fraction": args.labeled_fraction,
            "seed": args.seed, "seconds": round(time.perf_counter() - start, 1), **asdict(config)}
    return _finish(args, accuracy, meta)


def _run_synthetic(args: argparse.Namespace) -> int:
    from mkefast.data.synthetic import make_synthetic

    config = _config_from_args(args)
    data = make_synthetic(args.samples, num_modalities=args.modalities, seed=args.data_seed)
    start = time.perf_counter()
    accuracy = run_experiment(data, labeled_fraction=args.labeled_fraction, seed=args.seed, config=config,
                              variants=_variants(args.variants))
    meta = {"dataset": "synthetic", "samples": args.samples, "modalities": args.modalities,
            "data_seed": args.data_seed, "labeled_fraction": args.labeled_fraction, "seed": args.seed,
            "seconds": round(time.perf_counter() - start, 1), **asdict(config)}
    return _finish(args, accuracy, meta)


def _variants(text: str) -> tuple[str, ...]:
    variants = tuple(v.strip() for v in text.split(",") if v.strip())
    if not variants:
        raise ValueError("--variants: expected at least one name")
    return variants


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 < value <= 1.0 or math.isnan(value):
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1], got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text}")
    return value


def add_parser(subparsers: Any) -> None:
    """Registers `mkefast robult {mfeat,synthetic}`."""
    robult = subparsers.add_parser("robult", help="Robult vs supervised baselines and ablations")
    kinds = robult.add_subparsers(dest="dataset", required=True)
    mfeat = kinds.add_parser("mfeat", help="UCI Multiple Features, any views")
    mfeat.add_argument("--views", required=True, help="comma-separated view names, >= 2 (e.g. fou,kar)")
    mfeat.add_argument("--data-dir", default=None, help="folder of mfeat-<view>.csv (default: shipped copy)")
    mfeat.add_argument("--variants", default=",".join(_ALL_VARIANTS),
                       help="comma-separated models to train (default: all)")
    mfeat.set_defaults(func=_run_mfeat)
    synthetic = kinds.add_parser("synthetic", help="generated views with redundant/unique/synergistic bits")
    synthetic.add_argument("--samples", type=_positive_int, default=2000)
    synthetic.add_argument("--modalities", type=_positive_int, default=2)
    synthetic.add_argument("--data-seed", type=int, default=0)
    synthetic.add_argument("--variants", default="robult,robult_no_rec,supervised",
                           help="comma-separated models to train")
    synthetic.set_defaults(func=_run_synthetic)
    for p in (mfeat, synthetic):
        p.add_argument("--labeled-fraction", type=_fraction, default=0.05)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--epochs", type=_positive_int, default=RobultConfig.epochs)
        p.add_argument("--batch-size", type=_positive_int, default=RobultConfig.batch_size)
        p.add_argument("--lr", type=float, default=RobultConfig.lr)
        p.add_argument("--pseudo-threshold", type=float, default=RobultConfig.pseudo_threshold)
        p.add_argument("--backend", default="auto")
        p.add_argument("--threads", type=_positive_int, default=1, help="torch threads (default 1)")
        p.add_argument("--json", default=None, help="write the results as JSON to this path")


def demo_section(ctx: Any) -> None:
    """The Robult part of `mkefast demo`: mfeat fou + kar, 5% labels, one seed, with a view missing.

    Adds to `ctx` (a `mkefast.demo.DemoContext`) one row per model and test condition, and a bar panel.
    """
    from mkefast.data.mfeat import load_mfeat

    accuracy = run_experiment(load_mfeat(("fou", "kar")), labeled_fraction=0.05, seed=0,
                              config=RobultConfig(), variants=("robult", "supervised"), show_progress=False)
    conditions = {"full": "fou+kar", "fou": "fou only", "kar": "kar only"}
    for variant, title in (("supervised", "supervised"), ("robult", "Robult")):
        for cond, label in conditions.items():
            ctx.rows.append(("mfeat Robult, 5% labels, seed 0", f"{title} ({label})", accuracy[variant][cond]))

    def draw(ax: Any) -> None:
        x = np.arange(len(conditions))
        for k, (variant, color) in enumerate((("supervised", "#999999"), ("robult", "#3366cc"))):
            ax.bar(x + (k - 0.5) * 0.4, [accuracy[variant][c] for c in conditions], 0.4, color=color,
                   label=variant)
        ax.set_xticks(x, list(conditions.values()), fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("test accuracy %")
        ax.legend(fontsize=7, loc="lower right")

    ctx.panels.append(("Robult: mfeat, 5% labels, views missing", draw))
