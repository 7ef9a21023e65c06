"""MKE's published TwoMoon numbers, reproduced: the official notebook's protocol in our own code.

`mkefast mke twomoon --protocol paper` follows the protocol of the paper's notebook (github zihuixue/MKE,
`TwoMoon/mke.ipynb`, first commit 2e56f49) with the settings that give its Table 2; with v0 = 2 it gives
the published column exactly: UM teacher 68.00, UM student 72.80, MM student 83.15, MM student (sup) 86.95.
It differs from our own protocol (`mkefast.experiments.mke_paper.run_mke`, the method's honest figure) in
the switches of `Protocol`, one field per difference, so that each one's effect can be measured alone
(`differences`):

- `teacher_seed`: one teacher, trained with seed 39, labels the unlabeled points for every run; ours trains
  one teacher per run seed.
- `notebook_seeds`: the run seeds are `random.seed(42)` then `random.randint(0, 100)` per run (81, 14, 3,
  94, 35, 31, 28, 17, 94, 13: 94 twice); ours are `twomoon_seeds` (ten distinct draws in [0, 1000)).
  Either way torch is seeded right before each network is built, and its training draws continue from there.
- `double_softmax`: the network ends in a softmax that `CrossEntropyLoss` normalizes again (2e56f49; the
  notebook's later commit removed it); ours is the cross-entropy of the logits.
- `joint_input_noise`: T1 adds `v0 * mean(|x|) * eps` with ONE mean over the whole 2-column input of the MM
  student (and one `[N, 2]` draw); ours scales each view by its own mean.
- `paper_rows`: the paper's "UM student" is trained with the MM student's perturbation (our "Noisy
  student") and its "MM student (sup)" on the 270 unlabeled points with their true labels and the same
  perturbation; ours are the unperturbed UM student and an unperturbed MM student on all 300 points.
- `zero_noise_draws`: the notebook draws the input and hidden-layer noise even where its strength is 0
  (which moves the later draws); the published numbers come without those draws, as ours.

The notebook's code sets the T1 strength `alpha = 1`; the paper's v0 = 2 column is `alpha = 2`.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mkefast.data.labels import pseudo_labels
from mkefast.data.mfeat import MultiViewSplit, MultiViewTensors
from mkefast.experiments.common import write_json
from mkefast.experiments.mke_paper import TABLE2_GRID
from mkefast.models.mke_classifier import MKEClassifier, Perturbation
from mkefast.train.common import accuracy, seed_everything
from mkefast.train.mke_trainer import TrainConfig, train_classifier

__all__ = [
    "OURS",
    "PAPER",
    "PAPER_MODELS",
    "PUBLISHED_V0_2",
    "Protocol",
    "differences",
    "format_rows",
    "notebook_seeds",
    "paper_command",
    "protocol_table2",
    "run_protocol",
]

PAPER_MODELS: tuple[str, ...] = ("um_teacher", "um_student", "mm_student", "mm_student_sup")
"""The rows of the paper's Table 2, in order (what each means depends on `Protocol.paper_rows`)."""

PUBLISHED_V0_2: dict[str, float] = {"um_teacher": 68.00, "um_student": 72.80, "mm_student": 83.15,
                                    "mm_student_sup": 86.95}
"""The paper's Table 2, column T1 v0 = 2 (test accuracy, %)."""

_JOINT = "xa+xb"  # the MM students' single two-column view when T1 takes one mean over the whole input


@dataclass(frozen=True)
class Protocol:
    """How the TwoMoon runs are made; each field is one difference between the paper's notebook and ours.

    Attributes:
        teacher_seed: seed of the one teacher shared by every run, or None for a teacher per run seed.
        notebook_seeds: run seeds from `notebook_seeds` (else `mkefast.data.twomoon.twomoon_seeds`).
        double_softmax: train every network on `CrossEntropyLoss(softmax(logits))`.
        joint_input_noise: T1 scales the MM student's noise by one mean over its whole input.
        paper_rows: the paper's rows (perturbed UM student; MM student (sup) on the unlabeled points,
            perturbed) instead of ours (unperturbed UM student; MM student (sup) on all training points,
            unperturbed).
        zero_noise_draws: draw the input and first-hidden-layer noise even at strength 0 (the notebook's).
    """

    teacher_seed: int | None = 39
    notebook_seeds: bool = True
    double_softmax: bool = True
    joint_input_noise: bool = True
    paper_rows: bool = True
    zero_noise_draws: bool = False

    def seeds(self, n: int) -> list[int]:
        """The seeds of `n` runs."""
        from mkefast.data.twomoon import twomoon_seeds

        return notebook_seeds(n) if self.notebook_seeds else twomoon_seeds(n)


PAPER = Protocol()
"""The notebook's protocol with the settings of the published numbers."""

OURS = Protocol(teacher_seed=None, notebook_seeds=False, double_softmax=False, joint_input_noise=False,
                paper_rows=False)
"""Our protocol (`mke_paper.run_mke` with `twomoon_config`), as a `Protocol`: it gives the same numbers."""


def notebook_seeds(n: int = 10, *, base_seed: int = 42) -> list[int]:
    """The notebook's run seeds: `random.seed(base_seed)`, then `random.randint(0, 100)` for each of `n` runs."""
    if n < 1:
        raise ValueError(f"n: expected a number of runs >= 1, got {n}")
    draw = random.Random(base_seed)
    return [draw.randint(0, 100) for _ in range(n)]


def _draw_zero_strength_noise(model: MKEClassifier) -> None:
    """Makes `model` draw (and discard) the T1 and T2 noise where their strength is 0, as the notebook does.

    The notebook adds `0 * mean(|x|) * randn(...)`, which leaves the values and gradients as they are but
    moves torch's RNG; hooks at the same places (before the input noise, after the first hidden block)
    draw the same tensors.
    """
    if model.perturbation.input_noise == 0:
        def draw_input(module: nn.Module, args: tuple[Any, ...]) -> None:
            if module.training:
                views = args[0]
                torch.randn(len(next(iter(views.values()))), sum(views[v].shape[1] for v in model.views))
        model.register_forward_pre_hook(draw_input)
    if model.perturbation.hidden_noise == 0:
        def draw_hidden(module: nn.Module, args: tuple[Any, ...], output: Tensor) -> None:
            if module.training:
                torch.randn(output.shape)
        model.mlp.hidden_layers[0].register_forward_hook(draw_hidden)


def _with_joint_view(part: MultiViewTensors) -> MultiViewTensors:
    return MultiViewTensors({**part.views, _JOINT: torch.cat([part.views["xa"], part.views["xb"]], dim=1)},
                            part.labels)


@dataclass(frozen=True)
class _Training:
    """What every network of a protocol run shares: epochs, sizes, loss, device."""

    protocol: Protocol
    teacher_epochs: int = 1000
    student_epochs: int = 2000
    device: str | None = None

    def fit(self, seed: int, views: tuple[str, ...], hidden: tuple[int, ...], perturbation: Perturbation,
            data: MultiViewTensors, targets: Tensor, epochs: int) -> MKEClassifier:
        """Builds a network right after seeding with `seed` and trains it full-batch (SGD, lr 0.01)."""
        seed_everything(seed)
        model = MKEClassifier({v: data.views[v].shape[1] for v in views}, hidden, 2, perturbation=perturbation)
        if self.protocol.zero_noise_draws:
            _draw_zero_strength_noise(model)
        train = TrainConfig(epochs=epochs, double_softmax=self.protocol.double_softmax, device=self.device)
        train_classifier(model, {v: data.views[v] for v in views}, targets, config=train, show_progress=False)
        return model

    def teacher(self, split: MultiViewSplit, seed: int) -> MKEClassifier:
        return self.fit(seed, ("xa",), (32, 32), Perturbation(), split.labeled, split.labeled.labels,
                        self.teacher_epochs)

    def students(self, split: MultiViewSplit, teacher: MKEClassifier, seed: int,
                 perturbation: Perturbation) -> dict[str, float]:
        """Test accuracies (%) of the UM, MM and MM (sup) students of one run."""
        unlabeled = split.unlabeled
        labels = pseudo_labels(teacher, {"xa": unlabeled.views["xa"]}).targets
        mm_views = (_JOINT,) if self.protocol.joint_input_noise else ("xa", "xb")
        if self.protocol.paper_rows:
            um_perturbation, sup_data, sup_perturbation = perturbation, unlabeled, perturbation
        else:
            sup_data = MultiViewTensors({v: torch.cat([split.labeled.views[v], unlabeled.views[v]])
                                         for v in unlabeled.views},
                                        torch.cat([split.labeled.labels, unlabeled.labels]))
            um_perturbation = sup_perturbation = Perturbation()
        epochs = self.student_epochs
        models = {
            "um_student": self.fit(seed, ("xa",), (32, 32), um_perturbation, unlabeled, labels, epochs),
            "mm_student": self.fit(seed, mm_views, (16, 16), perturbation, unlabeled, labels, epochs),
            "mm_student_sup": self.fit(seed, mm_views, (16, 16), sup_perturbation, sup_data, sup_data.labels,
                                       epochs),
        }
        return {name: accuracy(model, split.test) for name, model in models.items()}


def _summary(per_seed: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    models = [m for m in PAPER_MODELS if m in per_seed[0]]
    table = np.array([[run[m] for m in models] for run in per_seed])
    return (dict(zip(models, table.mean(axis=0).round(2).tolist(), strict=True)),
            dict(zip(models, table.std(axis=0).round(2).tolist(), strict=True)))


def _runs(split: MultiViewSplit, training: _Training, seeds: Sequence[int], perturbations: Sequence[Perturbation],
          ) -> dict[Perturbation, list[dict[str, float]]]:
    """Trains each teacher once and the students of every run for every perturbation.

    Returns:
        Per perturbation, one dict of test accuracies per run (its teacher's included), in the order of `seeds`.
    """
    split = MultiViewSplit(labeled=_with_joint_view(split.labeled), unlabeled=_with_joint_view(split.unlabeled),
                           test=_with_joint_view(split.test))
    shared = training.protocol.teacher_seed
    teacher_seeds = [seed if shared is None else shared for seed in seeds]
    teachers = {s: training.teacher(split, s) for s in dict.fromkeys(teacher_seeds)}
    teacher_acc = {s: accuracy(t, split.test) for s, t in teachers.items()}
    return {p: [{"um_teacher": teacher_acc[t], **training.students(split, teachers[t], seed, p)}
                for seed, t in zip(seeds, teacher_seeds, strict=True)]
            for p in dict.fromkeys(perturbations)}


def run_protocol(split: MultiViewSplit, protocol: Protocol = PAPER, *, perturbation: Perturbation | None = None,
                 runs: int = 10, teacher_epochs: int = 1000, student_epochs: int = 2000,
                 device: str | None = None) -> dict[str, Any]:
    """The paper's Table 2 rows for one perturbation, averaged over `runs` runs.

    Args:
        split: the TwoMoon split (`split_twomoon()`), views "xa" and "xb".
        protocol: the protocol (default: the paper's).
        perturbation: the students' perturbation (default: T1 with v0 = 2, the published column).
        runs: number of runs (seeds from `protocol.seeds`).
        teacher_epochs, student_epochs: full-batch SGD steps of the teacher and of every student.
        device: where to train (default: the CPU, where the published numbers are reproduced).

    Returns:
        `{"accuracy": {row: mean %}, "std": {row: std %}, "per_seed": [{"seed": s, row: %}, ...],
        "seeds": [...]}` with the rows of `PAPER_MODELS`; a list per run, since the notebook's seeds repeat.
    """
    perturbation = Perturbation(input_noise=2.0) if perturbation is None else perturbation
    seeds = protocol.seeds(runs)
    training = _Training(protocol, teacher_epochs, student_epochs, device)
    per_seed = _runs(split, training, seeds, [perturbation])[perturbation]
    mean, std = _summary(per_seed)
    return {"accuracy": mean, "std": std, "seeds": seeds,
            "per_seed": [{"seed": s, **run} for s, run in zip(seeds, per_seed, strict=True)]}


def protocol_table2(split: MultiViewSplit, protocol: Protocol = PAPER, *, runs: int = 10,
                    teacher_epochs: int = 1000, student_epochs: int = 2000,
                    device: str | None = None) -> dict[str, Any]:
    """Every cell of the paper's Table 2 (`TABLE2_GRID`) under `protocol`, each with the students' rows.

    The teachers are trained once and shared by all cells; the three zero-strength cells are one run.

    Returns:
        `{"teacher": mean %, "grid": {kind: {strength: {"um_student": %, "mm_student": %,
        "mm_student_sup": %}}}}` (means over the runs).
    """
    seeds = protocol.seeds(runs)
    training = _Training(protocol, teacher_epochs, student_epochs, device)
    cells = {(kind, strength): Perturbation.of(kind, strength)
             for kind, strengths in TABLE2_GRID.items() for strength in strengths}
    by_perturbation = _runs(split, training, seeds, list(cells.values()))
    teacher_mean = float(np.mean([run["um_teacher"] for run in next(iter(by_perturbation.values()))]))
    grid: dict[str, dict[str, dict[str, float]]] = {kind: {} for kind in TABLE2_GRID}
    for (kind, strength), perturbation in cells.items():
        mean, _ = _summary(by_perturbation[perturbation])
        grid[kind][f"{strength:g}"] = {m: v for m, v in mean.items() if m != "um_teacher"}
    return {"teacher": round(teacher_mean, 2), "grid": grid}


def differences(split: MultiViewSplit, *, perturbation: Perturbation | None = None, runs: int = 10,
                teacher_epochs: int = 1000, student_epochs: int = 2000,
                device: str | None = None) -> dict[str, Any]:
    """Measures each difference of `Protocol` alone, from both ends.

    For each field: the paper's protocol with that field changed (to ours, or for `zero_noise_draws`,
    which both protocols leave off, to the notebook's draws), and our protocol with that field changed
    (to the paper's, or to the draws).

    Returns:
        `{"paper": rows, "ours": rows, "fields": {field: {"paper_protocol_without": rows,
        "our_protocol_with": rows, "values": [paper's value, other value]}}}`, rows being
        `run_protocol(...)["accuracy"]`.
    """
    kwargs: dict[str, Any] = {"perturbation": perturbation, "runs": runs, "teacher_epochs": teacher_epochs,
              "student_epochs": student_epochs, "device": device}
    out: dict[str, Any] = {"paper": run_protocol(split, PAPER, **kwargs)["accuracy"],
                           "ours": run_protocol(split, OURS, **kwargs)["accuracy"], "fields": {}}
    for f in fields(Protocol):
        paper_value, our_value = getattr(PAPER, f.name), getattr(OURS, f.name)
        other = our_value if our_value != paper_value else not paper_value
        ours_with = paper_value if our_value != paper_value else other
        out["fields"][f.name] = {
            "values": [paper_value, other],
            "paper_protocol_without": run_protocol(split, replace(PAPER, **{f.name: other}), **kwargs)["accuracy"],
            "our_protocol_with": run_protocol(split, replace(OURS, **{f.name: ours_with}), **kwargs)["accuracy"],
        }
    return out


_TITLES = {"um_teacher": "UM teacher", "um_student": "UM student", "mm_student": "MM student",
           "mm_student_sup": "MM student (sup)"}


def format_rows(accuracy_by_row: Mapping[str, float], std: Mapping[str, float] | None = None,
                published: Mapping[str, float] | None = None) -> str:
    """A text table of the paper's rows (test accuracy, %, ± std), beside the published figures if given."""
    lines = [f"{'model':<20}{'test acc %':>16}" + (f"{'published':>12}" if published else "")]
    for row in PAPER_MODELS:
        if row in accuracy_by_row:
            spread = f" ± {std[row]:.2f}" if std and row in std else ""
            lines.append(f"{_TITLES[row]:<20}{f'{accuracy_by_row[row]:.2f}{spread}':>16}"
                         + (f"{published[row]:>12.2f}" if published else ""))
    return "\n".join(lines)


def _check_paper_args(args: argparse.Namespace) -> None:
    """Refuses the options of `mkefast mke twomoon` that the paper's protocol fixes or does not have."""
    fixed = {"--soft": args.soft, "--threshold": args.threshold != 0.0, "--rounds": args.rounds != 1,
             "--double-softmax": args.double_softmax, "--batch-size": args.batch_size is not None,
             "--checkpoint-dir": args.checkpoint_dir is not None, "--plot": args.plot is not None}
    given = [name for name, on in fixed.items() if on]
    if given:
        raise ValueError(f"{', '.join(given)}: not part of --protocol paper (full-batch SGD on hard pseudo "
                         f"labels of one teacher, double softmax, one round)")
    if args.differences and args.protocol != "paper":
        raise ValueError("--differences: only with --protocol paper")


def paper_command(args: argparse.Namespace) -> int:
    """`mkefast mke twomoon --protocol paper [--table2] [--differences]`: prints and writes the paper's rows."""
    from mkefast.data.twomoon import split_twomoon

    _check_paper_args(args)
    # Tiny full-batch models: one thread avoids inter-thread overhead that dwarfs the math.
    torch.set_num_threads(1)
    perturbation = Perturbation(input_noise=2.0)
    if args.perturbation is not None:
        if args.strength is None and args.perturbation != "none":
            raise ValueError("--strength: required with --perturbation")
        perturbation = Perturbation.of(args.perturbation, args.strength or 0.0)
    kwargs: dict[str, Any] = {"runs": args.seeds, "device": args.device}
    if args.teacher_epochs is not None:
        kwargs["teacher_epochs"] = args.teacher_epochs
    if args.student_epochs is not None:
        kwargs["student_epochs"] = args.student_epochs
    start = time.perf_counter()
    split = split_twomoon()
    out = run_protocol(split, PAPER, perturbation=perturbation, **kwargs)
    print(f"TwoMoon, the paper's protocol, {args.seeds} runs (seeds {out['seeds']}), teacher seed "
          f"{PAPER.teacher_seed}, perturbation {perturbation.describe()}")
    published = PUBLISHED_V0_2 if perturbation == Perturbation(input_noise=2.0) else None
    print(format_rows(out["accuracy"], out["std"], published))
    if published is not None:
        out["published"] = published
    if args.table2:
        out["table2"] = protocol_table2(split, PAPER, **kwargs)
        print(f"\nTable 2 (UM teacher {out['table2']['teacher']:.2f}): UM student / MM student / MM student (sup)")
        for kind, cells in out["table2"]["grid"].items():
            print(f"  {kind:<8}" + "  ".join(
                f"{s}: {c['um_student']:.2f} / {c['mm_student']:.2f} / {c['mm_student_sup']:.2f}"
                for s, c in cells.items()))
    if args.differences:
        out["differences"] = differences(split, perturbation=perturbation, **kwargs)
        print("\nEach difference alone (UM teacher / UM student / MM student / MM student (sup)):")
        rows = lambda acc: " / ".join(f"{acc[m]:.2f}" for m in PAPER_MODELS)
        print(f"  {'paper':<20}{rows(out['differences']['paper'])}")
        print(f"  {'ours':<20}{rows(out['differences']['ours'])}")
        for name, d in out["differences"]["fields"].items():
            print(f"  {name:<20}paper without: {rows(d['paper_protocol_without'])}   "
                  f"ours with: {rows(d['our_protocol_with'])}")
    out["config"] = {"data": "twomoon", "protocol": asdict(PAPER), "perturbation": asdict(perturbation),
                     **{k: v for k, v in kwargs.items() if k != "runs"}, "runs": args.seeds,
                     "seconds": round(time.perf_counter() - start, 1)}
    write_json(args.json, out)
    return 0
