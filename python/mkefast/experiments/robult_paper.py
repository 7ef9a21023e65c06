"""Robult's experiments: Robult against supervised baselines and its ablations, and `mkefast robult`.

`run_experiment` splits a multi-view data set (labeled / unlabeled / test), trains each variant and
measures test accuracy with every view and with each view alone (a modality missing at test time). The
variants are Robult, its ablations of the paper's Table 3 (`ROBULT_VARIANTS`) and "supervised": Robult's
encoder and classifier on the labeled rows only (early fusion of all views, and one network per view). The
method itself (model, losses, trainer) is in `mkefast.models.robult_model` and
`mkefast.train.robult_trainer`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mkefast.data.mfeat import MultiViewData
from mkefast.experiments.common import add_device_argument, fraction, positive_int, write_json
from mkefast.experiments.robult_baselines import (
    train_gmc_variant,
    train_robult_mke_variant,
    train_self_training_variant,
)
from mkefast.models.mlp import MLP
from mkefast.models.robult_model import Robult
from mkefast.train.common import accuracy, resolve_device, seed_everything, to_device
from mkefast.train.robult_trainer import RobultConfig, RobultTrainer, evaluate

__all__ = ["ALL_VARIANTS", "BASELINE_VARIANTS", "ROBULT_VARIANTS", "add_parser", "format_table", "run_experiment",
           "supervised_network", "train_supervised"]

# Variant name -> the RobultConfig fields it overrides (the ablations of the paper's Table 3).
ROBULT_VARIANTS: dict[str, dict[str, Any]] = {
    "robult": {},
    "robult_no_rec": {"rec_weight": 0.0},
    "robult_no_lb": {"use_lb": False},
    "robult_no_ulb": {"use_ulb": False},
    "robult_no_sup": {"sup_weight": 0.0},
}

BASELINE_VARIANTS: tuple[str, ...] = ("gmc", "robult_mke", "self_training")
"""The other methods of `mkefast.experiments.robult_baselines`: GMC's loss on Robult's encoders and fusion,
Robult with an MKE student's pseudo labels, and FixMatch-style self-training."""

ALL_VARIANTS: tuple[str, ...] = (*ROBULT_VARIANTS, "supervised", *BASELINE_VARIANTS)
"""Every model `run_experiment` can train, in table order."""


class _EarlyFusionMLP(nn.Module):
    """Encoder + classifier on the concatenated views: the supervised baselines' network."""

    def __init__(self, in_features: int, num_classes: int, encoder_hidden: Sequence[int], hidden_size: int,
                 classifier_hidden: Sequence[int]) -> None:
        super().__init__()
        self.encoder = MLP(in_features, encoder_hidden, hidden_size)
        self.classifier = MLP(hidden_size, classifier_hidden, num_classes)

    def forward(self, xs: list[Tensor]) -> Tensor:
        return self.classifier(self.encoder(torch.cat(xs, -1)))


def supervised_network(in_features: Sequence[int], num_classes: int, *, encoder_hidden: Sequence[int] = (256,),
                       hidden_size: int = 128, classifier_hidden: Sequence[int] = ()) -> nn.Module:
    """The supervised baselines' network: Robult's encoder f (on the concatenated views of `in_features`)
    and classifier c, mapping a list of views `[B, f_i]` to logits `[B, K]`."""
    return _EarlyFusionMLP(sum(in_features), num_classes, encoder_hidden, hidden_size, classifier_hidden)


def train_supervised(xs: list[Tensor], labels: Tensor, num_classes: int, config: RobultConfig, steps: int,
                     *, encoder_hidden: Sequence[int] = (256,), hidden_size: int = 128,
                     classifier_hidden: Sequence[int] = ()) -> nn.Module:
    """The supervised baseline: Robult's encoder f + classifier c on the given labeled views only.

    One view gives the per-view baseline; several are concatenated (early fusion). Cross-entropy on the
    labeled rows with Robult's optimizer settings, for `steps` updates (give it as many as Robult makes,
    so that the few labeled rows do not leave it under-trained), on `config.device`.

    Returns:
        A module mapping a list of views `[B, f_i]` to logits `[B, K]`, in eval mode.
    """
    net = supervised_network([x.shape[1] for x in xs], num_classes, encoder_hidden=encoder_hidden,
                             hidden_size=hidden_size, classifier_hidden=classifier_hidden)
    device = resolve_device(config.device, net)
    net.to(device)
    xs, labels = to_device(xs, device), labels.to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n = len(labels)
    batch = n if config.batch_size is None else min(config.batch_size, n)
    perm, lo = torch.randperm(n), 0
    for _ in range(steps):
        if lo + batch > n:
            perm, lo = torch.randperm(n), 0
        idx = perm[lo:lo + batch].to(device)
        lo += batch
        loss = F.cross_entropy(net([x[idx] for x in xs]), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return net.eval()


def run_experiment(data: MultiViewData, *, labeled_fraction: float, seed: int, config: RobultConfig,
                   variants: Sequence[str] = ALL_VARIANTS,
                   model_kwargs: Mapping[str, Any] | None = None, show_progress: bool | None = None,
                   mke_teacher_view: str | None = None) -> dict[str, dict[str, float]]:
    """Splits `data`, trains each variant, returns test accuracy (percent) per variant and condition.

    "supervised" trains on the labeled rows only: early fusion of all views for "full", one network per
    view for the view's own condition. `BASELINE_VARIANTS` are in `mkefast.experiments.robult_baselines`
    ("robult_mke" takes its MKE teacher's view from `mke_teacher_view`, default the first view); the others
    are `ROBULT_VARIANTS`. Each variant starts from `seed_everything(seed)`.
    """
    from mkefast.data.mfeat import split_multiview

    unknown = [v for v in variants if v not in ALL_VARIANTS]
    if unknown:
        raise ValueError(f"variants: unknown {unknown}; expected names from {list(ALL_VARIANTS)}")
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
                acc[cond] = accuracy(net, ([split.test.views[n] for n in cond_names], split.test.labels))
            results[variant] = acc
            continue
        if variant == "gmc":
            results[variant] = train_gmc_variant(split, config, num_classes, model_kwargs=kwargs)
            continue
        if variant == "robult_mke":
            results[variant] = train_robult_mke_variant(split, config, num_classes, seed=seed,
                                                        teacher_view=mke_teacher_view, model_kwargs=kwargs,
                                                        show_progress=show_progress)
            continue
        if variant == "self_training":
            results[variant] = train_self_training_variant(split, config, num_classes, steps, model_kwargs=kwargs)
            continue
        model = Robult([train_views[n].shape[1] for n in names], num_classes, modality_names=names, **kwargs)
        RobultTrainer(model, replace(config, **ROBULT_VARIANTS[variant]),
                      show_progress=show_progress).fit(train_views, train_labels, labeled)
        results[variant] = evaluate(model, split.test.views, split.test.labels)
    return results


def format_table(accuracy_by_variant: Mapping[str, Mapping[str, float]]) -> str:
    """A text table of test accuracies (percent): one row per variant, one column per condition."""
    conditions = list(next(iter(accuracy_by_variant.values())))
    width = max(len(v) for v in accuracy_by_variant)
    lines = [f"{'test accuracy (%)':<{width}}  " + "  ".join(f"{c:>7}" for c in conditions)]
    for variant, acc in accuracy_by_variant.items():
        lines.append(f"{variant:<{width}}  " + "  ".join(f"{acc[c]:7.2f}" for c in conditions))
    return "\n".join(lines)


def _config_from_args(args: argparse.Namespace) -> RobultConfig:
    # The models are tiny: extra threads cost more in synchronization than they save in math.
    torch.set_num_threads(args.threads)
    return RobultConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                        pseudo_threshold=args.pseudo_threshold, backend=args.backend, device=args.device)


def _variants(text: str) -> tuple[str, ...]:
    variants = tuple(v.strip() for v in text.split(",") if v.strip())
    if not variants:
        raise ValueError("--variants: expected at least one name")
    return variants


def _run(args: argparse.Namespace, data: MultiViewData, meta: Mapping[str, Any]) -> int:
    """Runs the variants of `--variants` on `data` (any multi-view data set), prints the table, writes the
    JSON with `meta` (what identifies the data) and the options."""
    config = _config_from_args(args)
    start = time.perf_counter()
    accuracy_by_variant = run_experiment(data, labeled_fraction=args.labeled_fraction, seed=args.seed,
                                         config=config, variants=_variants(args.variants),
                                         mke_teacher_view=args.mke_teacher_view)
    print(format_table(accuracy_by_variant))
    write_json(args.json, {"accuracy": accuracy_by_variant, "config": {
        **meta, "labeled_fraction": args.labeled_fraction, "seed": args.seed,
        "seconds": round(time.perf_counter() - start, 1), "mke_teacher_view": args.mke_teacher_view,
        **asdict(config)}})
    return 0


def _run_mfeat(args: argparse.Namespace) -> int:
    from mkefast.data.mfeat import load_mfeat

    views = [v.strip() for v in args.views.split(",") if v.strip()]
    if len(views) < 2:
        raise ValueError(f"--views: expected at least two comma-separated views, got {args.views!r}")
    return _run(args, load_mfeat(views, data_dir=args.data_dir), {"dataset": "mfeat", "views": views})


def _run_synthetic(args: argparse.Namespace) -> int:
    from mkefast.data.synthetic import make_synthetic

    bits = {"redundant_bits": args.redundant_bits, "unique_bits": args.unique_bits,
            "synergistic_bits": args.synergistic_bits, "noise": args.noise}
    data = make_synthetic(args.samples, num_modalities=args.modalities, seed=args.data_seed, **bits)
    return _run(args, data, {"dataset": "synthetic", "samples": args.samples, "modalities": args.modalities,
                             "data_seed": args.data_seed, **bits})


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--labeled-fraction", type=fraction, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=positive_int, default=RobultConfig.epochs)
    parser.add_argument("--batch-size", type=positive_int, default=RobultConfig.batch_size)
    parser.add_argument("--lr", type=float, default=RobultConfig.lr)
    parser.add_argument("--pseudo-threshold", type=float, default=RobultConfig.pseudo_threshold)
    parser.add_argument("--backend", default="auto")
    add_device_argument(parser)
    parser.add_argument("--threads", type=positive_int, default=1, help="torch threads (default 1)")
    parser.add_argument("--mke-teacher-view", default=None,
                        help="robult_mke: the view of the MKE teacher (default: the first view)")
    parser.add_argument("--json", default=None, help="write the results as JSON to this path")


def add_parser(subparsers: Any) -> None:
    """Registers `mkefast robult {mfeat,synthetic}`."""
    robult = subparsers.add_parser("robult", help="Robult vs supervised baselines and ablations")
    kinds = robult.add_subparsers(dest="dataset", required=True)
    mfeat = kinds.add_parser("mfeat", help="UCI Multiple Features, any views")
    mfeat.add_argument("--views", required=True, help="comma-separated view names, >= 2 (e.g. fou,kar)")
    mfeat.add_argument("--data-dir", default=None, help="folder of mfeat-<view>.csv (default: shipped copy)")
    mfeat.add_argument("--variants", default=",".join(ALL_VARIANTS),
                       help="comma-separated models to train (default: all)")
    mfeat.set_defaults(func=_run_mfeat)
    synthetic = kinds.add_parser("synthetic", help="generated views with redundant/unique/synergistic bits")
    synthetic.add_argument("--samples", type=positive_int, default=2000)
    synthetic.add_argument("--modalities", type=positive_int, default=2)
    synthetic.add_argument("--data-seed", type=int, default=0)
    synthetic.add_argument("--redundant-bits", type=int, default=2, help="label bits every view carries")
    synthetic.add_argument("--unique-bits", type=int, default=1, help="label bits only its own view carries, per view")
    synthetic.add_argument("--synergistic-bits", type=int, default=0, help="label bits only all views together carry")
    synthetic.add_argument("--noise", type=float, default=0.6, help="std of the noise on each ±1 signal")
    synthetic.add_argument("--variants", default="robult,robult_no_rec,supervised",
                           help="comma-separated models to train")
    synthetic.set_defaults(func=_run_synthetic)
    for p in (mfeat, synthetic):
        _add_common(p)
