"""MKE's experiments: the paper's protocol on TwoMoon (Table 2, Figure 3) and UCI mfeat, and `mkefast mke`.

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
every stage saves its state periodically and a re-run of the same experiment resumes where it stopped.
The method itself (model, loss, trainer) is in `mkefast.models.mke_classifier` and
`mkefast.train.mke_trainer`.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mkefast.data.labels import pseudo_labels
from mkefast.data.mfeat import MultiViewData, MultiViewSplit, MultiViewTensors
from mkefast.experiments.common import add_device_argument, positive_int, write_json
from mkefast.models.mke_classifier import PERTURBATION_KINDS, MKEClassifier, Perturbation
from mkefast.train.common import accuracy, fingerprint, seed_everything
from mkefast.train.mke_trainer import TrainConfig, train_classifier

__all__ = [
    "MODELS",
    "TABLE2_GRID",
    "MKEConfig",
    "MKEResult",
    "add_parser",
    "draw_decision_regions",
    "format_table",
    "mfeat_config",
    "plot_twomoon",
    "run_mke",
    "run_seeds",
    "table2",
    "twomoon_config",
]

MODELS: tuple[str, ...] = ("um_teacher", "um_student", "noisy_student", "mm_student_noreg", "mm_student",
                           "mm_student_sup")
"""Result keys, in table order."""

_TITLES = {"um_teacher": "UM teacher", "um_student": "UM student", "noisy_student": "Noisy student",
           "mm_student_noreg": "MM student (no reg)", "mm_student": "MM student",
           "mm_student_sup": "MM student (sup)"}


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

    The Noisy and MM students are regularized by input noise (T1, v0 = 2) unless `perturbation` says
    otherwise; it was the best of the settings compared in `results/mke.md` (no reg, v0 = 1 with
    r0 = 0.5, v0 = 2, r0 = 0.8, v0 = 1 with r0 = 0.8).
    """
    adam = TrainConfig(epochs=300, lr=1e-3, optimizer="adam", weight_decay=1e-4)
    config = MKEConfig(
        teacher_views=(teacher_view,),
        student_views=tuple(student_views),
        perturbation=perturbation or Perturbation(input_noise=2.0),
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


def _split_fingerprint(split: MultiViewSplit) -> str:
    parts = (split.labeled, split.unlabeled, split.test)
    return fingerprint(*(t for part in parts for t in (*(part.views[k] for k in sorted(part.views)), part.labels)))


def _checkpoint_key(config: MKEConfig, split: MultiViewSplit, seed: int) -> dict[str, Any]:
    """Everything a stage's checkpoint depends on: the experiment (less which models run and how often they
    save, which change no model), the seed and the data of every part."""
    experiment = config.to_dict()
    del experiment["models"]
    for train in ("teacher_train", "student_train"):
        del experiment[train]["checkpoint_every"]
    return {"experiment": experiment, "seed": seed, "split": _split_fingerprint(split)}


def run_mke(split: MultiViewSplit, config: MKEConfig, *, seed: int,
            checkpoint_dir: str | os.PathLike[str] | None = None, show_progress: bool | None = None,
            teacher: MKEClassifier | None = None) -> MKEResult:
    """Trains the teacher (unless given) and the students of `config.models` for one seed.

    Args:
        split: labeled / unlabeled / test parts holding every view of `config`.
        config: the experiment.
        seed: seeds every model (each is built right after `seed_everything(seed)`).
        checkpoint_dir: folder of per-stage checkpoints (`seed<seed>-<stage>.pt`) for resuming; each records
            the experiment, the seed and the data, and only the same experiment resumes from it.
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
    key = _checkpoint_key(config, split, seed) if directory is not None else {}

    def fit(stage: str, views: tuple[str, ...], hidden: tuple[int, ...], perturbation: Perturbation,
            data: MultiViewTensors, targets: Tensor, mask: Tensor | None, train: TrainConfig) -> MKEClassifier:
        seed_everything(seed)
        model = MKEClassifier({v: data.views[v].shape[1] for v in views}, hidden, num_classes,
                              perturbation=perturbation)
        path = directory / f"seed{seed}-{stage}.pt" if directory is not None else None
        train_classifier(model, data.views, targets, config=train, mask=mask, checkpoint=path,
                         checkpoint_key={**key, "stage": stage}, desc=f"seed {seed} {stage}",
                         show_progress=show_progress)
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


def run_seeds(split_for_seed: Callable[[int], MultiViewSplit], config: MKEConfig, seeds: Sequence[int], *,
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


TABLE2_GRID: dict[str, tuple[float, ...]] = {"input": (0.0, 1.0, 2.0), "hidden": (0.0, 5.0, 10.0),
                                             "dropout": (0.0, 0.4, 0.8)}
"""The paper's Table 2: T1 strengths v0, T2 strengths v1, T3 dropout rates r0."""


def table2(split: MultiViewSplit, config: MKEConfig, seeds: Sequence[int], *,
           show_progress: bool | None = None) -> dict[str, Any]:
    """The paper's Table 2 on one split: Noisy and MM students for every perturbation of `TABLE2_GRID`.

    The teacher of each seed is trained once and shared by all cells; cells with the same perturbation
    (the three zero-strength ones) are computed once.

    Returns:
        `{"teacher": mean %, "grid": {kind: {strength: {"noisy_student": %, "mm_student": %}}}}`.
    """
    teachers = {seed: run_mke(split, replace(config, models=()), seed=seed, show_progress=show_progress).teacher
                for seed in seeds}
    teacher_acc = float(np.mean([accuracy(t, split.test) for t in teachers.values() if t is not None]))
    cache: dict[Perturbation, dict[str, float]] = {}
    grid: dict[str, dict[str, dict[str, float]]] = {}
    for kind, strengths in TABLE2_GRID.items():
        grid[kind] = {}
        for strength in strengths:
            perturbation = Perturbation.of(kind, strength)
            if perturbation not in cache:
                cell = replace(config, perturbation=perturbation, models=("noisy_student", "mm_student"))
                runs = [run_mke(split, cell, seed=seed, teacher=teachers[seed], show_progress=show_progress)
                        for seed in seeds]
                cache[perturbation] = {m: round(float(np.mean([r.accuracy[m] for r in runs])), 2)
                                       for m in ("noisy_student", "mm_student")}
            grid[kind][f"{strength:g}"] = cache[perturbation]
    return {"teacher": round(teacher_acc, 2), "grid": grid}


def draw_decision_regions(ax: Any, model: MKEClassifier, split: MultiViewSplit, *, resolution: int = 300) -> None:
    """Colors the TwoMoon plane (xa, xb) by the class `model` predicts and scatters the test points.

    The plane spans the unlabeled and test points with a margin of 0.5.
    """
    from matplotlib.colors import ListedColormap

    xa = torch.cat([split.unlabeled.views["xa"], split.test.views["xa"]])
    xb = torch.cat([split.unlabeled.views["xb"], split.test.views["xb"]])
    grid_a, grid_b = torch.meshgrid(torch.linspace(float(xa.min()) - 0.5, float(xa.max()) + 0.5, resolution),
                                    torch.linspace(float(xb.min()) - 0.5, float(xb.max()) + 0.5, resolution),
                                    indexing="xy")
    grid_views = {"xa": grid_a.reshape(-1, 1), "xb": grid_b.reshape(-1, 1)}
    device = next(model.parameters()).device
    with torch.no_grad():
        region = model.eval()({k: v.to(device) for k, v in grid_views.items()}).argmax(dim=1).reshape(grid_a.shape)
    colors = ListedColormap(["#FF0000", "#0000FF"])
    ax.contourf(grid_a.numpy(), grid_b.numpy(), region.cpu().numpy(), cmap=colors, alpha=0.2)
    ax.scatter(split.test.views["xa"].numpy(), split.test.views["xb"].numpy(), c=split.test.labels.numpy(),
               cmap=colors, s=10, alpha=0.6)
    ax.set_xticks(())
    ax.set_yticks(())


def plot_twomoon(split: MultiViewSplit, result: MKEResult, path: str | os.PathLike[str]) -> None:
    """Draws the decision regions of the teacher, UM student and MM student (the paper's Figure 3)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    candidates = [("UM teacher", result.teacher, "um_teacher"),
                  ("UM student", result.students.get("um_student"), "um_student"),
                  ("MM student", result.students.get("mm_student"), "mm_student")]
    models = [(title, m, key) for title, m, key in candidates if m is not None]
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 3.8), squeeze=False)
    for ax, (title, model, key) in zip(axes[0], models, strict=True):
        draw_decision_regions(ax, model, split)
        ax.set_title(f"{title}: {result.accuracy[key]:.1f}%")
        ax.set_xlabel("xa (teacher's modality)")
    axes[0][0].set_ylabel("xb")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(accuracy_by_model: Mapping[str, float], std: Mapping[str, float] | None = None) -> str:
    """A two-column text table of accuracies (percent), in `MODELS` order."""
    lines = [f"{'model':<22}{'test acc %':>12}"]
    for model in MODELS:
        if model in accuracy_by_model:
            spread = f" ± {std[model]:.2f}" if std and model in std else ""
            lines.append(f"{_TITLES[model]:<22}{accuracy_by_model[model]:>12.2f}{spread}")
    return "\n".join(lines)


def _config_from_args(args: argparse.Namespace, config: MKEConfig) -> MKEConfig:
    """`config` with the command line's overrides: training, perturbation, pseudo labels, device."""
    common = {"double_softmax": args.double_softmax, "batch_size": args.batch_size, "device": args.device}
    teacher_train = replace(config.teacher_train, **common)
    student_train = replace(config.student_train, **common)
    if args.teacher_epochs is not None:
        teacher_train = replace(teacher_train, epochs=args.teacher_epochs)
    if args.student_epochs is not None:
        student_train = replace(student_train, epochs=args.student_epochs)
    perturbation = config.perturbation
    if args.perturbation is not None:
        if args.strength is None and args.perturbation != "none":
            raise ValueError("--strength: required with --perturbation")
        perturbation = Perturbation.of(args.perturbation, args.strength or 0.0)
    return replace(config, perturbation=perturbation, teacher_train=teacher_train, student_train=student_train,
                   soft_labels=args.soft, threshold=args.threshold, rounds=args.rounds)


def _twomoon_command(args: argparse.Namespace) -> int:
    from mkefast.data.twomoon import split_twomoon, twomoon_seeds

    if args.protocol == "paper" or args.differences:
        from mkefast.experiments.mke_paper_protocol import paper_command

        return paper_command(args)

    # Tiny full-batch models: one thread avoids inter-thread overhead that dwarfs the math.
    torch.set_num_threads(1)
    split = split_twomoon()
    seeds = twomoon_seeds(args.seeds)
    config = _config_from_args(args, twomoon_config())
    start = time.perf_counter()
    show = None if args.progress else False
    out = run_seeds(lambda seed: split, config, seeds, checkpoint_dir=args.checkpoint_dir, show_progress=show)
    print(f"TwoMoon, {len(seeds)} seeds, perturbation {config.perturbation.describe()}"
          f"{', double softmax' if args.double_softmax else ''}")
    print(format_table(out["accuracy"], out["std"]))
    if "rounds" in out and len(out["rounds"]) > 1:
        print("MM student per round:", ", ".join(f"{a:.2f}" for a in out["rounds"]))
    if args.table2:
        out["table2"] = table2(split, config, seeds, show_progress=show)
        print(f"\nTable 2 (UM teacher {out['table2']['teacher']:.2f}): Noisy student / MM student")
        for kind, cells in out["table2"]["grid"].items():
            print(f"  {kind:<8}" + "  ".join(f"{s}: {c['noisy_student']:.2f} / {c['mm_student']:.2f}"
                                            for s, c in cells.items()))
    if args.plot:
        result = run_mke(split, replace(config, models=("um_student", "mm_student")), seed=seeds[0],
                         show_progress=show)
        plot_twomoon(split, result, args.plot)
        print(f"plot: {args.plot}")
    out["config"] = {**config.to_dict(), "data": "twomoon", "seeds": seeds,
                     "seconds": round(time.perf_counter() - start, 1)}
    write_json(args.json, out)
    return 0


def _multiview_command(args: argparse.Namespace, source: str, load: Callable[[tuple[str, ...]], MultiViewData],
                       meta: Mapping[str, Any]) -> int:
    """`mkefast mke <source>` for any multi-view data set: `load(views)` reads the student's views, which
    are split per seed (`split_multiview`) with `--labeled-fraction`."""
    from mkefast.data.mfeat import split_multiview

    student_views = tuple(v.strip() for v in args.student_views.split(",") if v.strip())
    if args.teacher_view not in student_views:
        student_views = (args.teacher_view, *student_views)
    data = load(student_views)
    config = _config_from_args(args, mfeat_config(args.teacher_view, student_views))
    seeds = list(range(args.seed, args.seed + args.seeds))
    start = time.perf_counter()
    out = run_seeds(lambda seed: split_multiview(data, labeled_fraction=args.labeled_fraction, seed=seed),
                    config, seeds, checkpoint_dir=args.checkpoint_dir,
                    show_progress=None if args.progress else False)
    print(f"{source}, teacher {args.teacher_view}, students {'+'.join(student_views)}, "
          f"{args.labeled_fraction:g} labeled, seeds {seeds}, perturbation {config.perturbation.describe()}")
    print(format_table(out["accuracy"], out["std"]))
    out["config"] = {**config.to_dict(), "data": source, **meta, "labeled_fraction": args.labeled_fraction,
                     "seeds": seeds, "seconds": round(time.perf_counter() - start, 1)}
    write_json(args.json, out)
    return 0


def _mfeat_command(args: argparse.Namespace) -> int:
    from mkefast.data.mfeat import load_mfeat

    return _multiview_command(args, "mfeat", lambda views: load_mfeat(views, data_dir=args.data_dir), {})


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--perturbation", choices=PERTURBATION_KINDS,
                        help="the students' perturbation (default: the data set's)")
    parser.add_argument("--strength", type=float, help="v0 (input), v1 (hidden) or r0 (dropout)")
    parser.add_argument("--soft", action="store_true", help="soft pseudo labels (KL) instead of hard ones")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="drop unlabeled rows whose teacher confidence is below this")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of expansion (student -> teacher)")
    parser.add_argument("--double-softmax", action="store_true",
                        help="softmax before cross-entropy, as the official notebook (for its numbers)")
    parser.add_argument("--teacher-epochs", type=int, help="override the teacher's epochs")
    parser.add_argument("--student-epochs", type=int, help="override the students' epochs")
    parser.add_argument("--batch-size", type=positive_int, default=None,
                        help="mini-batches of this many rows (default: full batch, the paper's protocol)")
    add_device_argument(parser)
    parser.add_argument("--checkpoint-dir", help="save per-stage checkpoints here and resume from them")
    parser.add_argument("--progress", action="store_true", help="show progress bars")
    parser.add_argument("--json", help="write the results as JSON to this file")


def _add_multiview(parser: argparse.ArgumentParser) -> None:
    """The options of a multi-view data set split per seed (`_multiview_command`)."""
    parser.add_argument("--teacher-view", required=True, help="the teacher's view")
    parser.add_argument("--student-views", required=True, help="comma-separated views of the MM student")
    parser.add_argument("--labeled-fraction", type=float, default=0.05, help="labeled share of the train part")
    parser.add_argument("--seed", type=int, default=0, help="first seed (split and models)")
    parser.add_argument("--seeds", type=int, default=1, help="number of consecutive seeds")
    _add_common(parser)


def add_parser(subparsers: Any) -> None:
    """Registers `mkefast mke {twomoon,mfeat}`."""
    mke = subparsers.add_parser("mke", help="Multimodal Knowledge Expansion experiments")
    sub = mke.add_subparsers(dest="dataset", required=True)
    twomoon = sub.add_parser("twomoon", help="the paper's TwoMoon experiment (Table 2, Figure 3)")
    twomoon.add_argument("--seeds", type=int, default=10, help="number of seeds (drawn from seed 42)")
    twomoon.add_argument("--table2", action="store_true", help="also run the paper's Table 2 grid")
    twomoon.add_argument("--plot", help="save the decision boundaries (Figure 3) to this PNG")
    twomoon.add_argument("--protocol", choices=("ours", "paper"), default="ours",
                         help="ours (one teacher per seed, cross-entropy on logits; default) or the paper's "
                              "notebook protocol, which gives its published numbers")
    twomoon.add_argument("--differences", action="store_true",
                         help="with --protocol paper: measure each difference between the protocols alone")
    _add_common(twomoon)
    twomoon.set_defaults(func=_twomoon_command)
    mfeat = sub.add_parser("mfeat", help="UCI Multiple Features: a one-view teacher, a multi-view student")
    mfeat.add_argument("--data-dir", help="folder of mfeat-<view>.csv files (default: the shipped copy)")
    _add_multiview(mfeat)
    mfeat.set_defaults(func=_mfeat_command)
