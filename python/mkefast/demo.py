"""`mkefast demo`: a short run (about a minute on a 2-core CPU) that shows what the library is for.

The demo is a list of sections (`SECTIONS`). Each section trains something small, adds rows to the
summary table and panels to the figure; to extend the demo, write a function `section(ctx) -> None` and
append it to `SECTIONS`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

__all__ = ["SECTIONS", "DemoContext", "add_parser", "kernels_section", "main", "mfeat_section", "robult_section",
           "twomoon_section"]


@dataclass
class DemoContext:
    """What the sections share.

    Attributes:
        rows: summary rows `(experiment, model, test accuracy %)`.
        kernels: rows of the loss table `(loss and backend, seconds, peak MiB above the inputs)`.
        panels: figure panels, each a title and a function drawing on a matplotlib Axes.
        seconds: wall time of each section.
    """

    rows: list[tuple[str, str, float]] = field(default_factory=list)
    kernels: list[tuple[str, float, float]] = field(default_factory=list)
    panels: list[tuple[str, Callable[[Any], None]]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)


def twomoon_section(ctx: DemoContext) -> None:
    """TwoMoon (the MKE paper's Figure 3): a teacher seeing one coordinate, a student seeing both."""
    from mkefast.data.twomoon import split_twomoon, twomoon_seeds
    from mkefast.experiments.mke_paper import draw_decision_regions, run_mke, twomoon_config
    from mkefast.models.mke_classifier import MKEClassifier

    split = split_twomoon()
    config = twomoon_config(models=("um_student", "mm_student"))
    results = [run_mke(split, config, seed=seed, show_progress=False) for seed in twomoon_seeds(3)]
    for model, title in (("um_teacher", "UM teacher (xa)"), ("um_student", "UM student (xa)"),
                         ("mm_student", "MM student (xa+xb, v0=2)")):
        ctx.rows.append(("TwoMoon, 30 labels, 3 seeds", title,
                         sum(r.accuracy[model] for r in results) / len(results)))
    first = results[0]
    assert first.teacher is not None
    def panel(model: MKEClassifier) -> Callable[[Any], None]:
        return lambda ax: draw_decision_regions(ax, model, split, resolution=200)

    for title, key, trained in (("UM teacher", "um_teacher", first.teacher),
                                ("MM student", "mm_student", first.students["mm_student"])):
        ctx.panels.append((f"TwoMoon {title} {first.accuracy[key]:.1f}%", panel(trained)))


def mfeat_section(ctx: DemoContext) -> None:
    """UCI mfeat digits, 5% labels: a teacher on Fourier coefficients, a student adding Karhunen-Loeve."""
    from mkefast.data.mfeat import load_mfeat, split_multiview
    from mkefast.experiments.mke_paper import mfeat_config, run_mke

    data = load_mfeat(("fou", "kar"))
    config = mfeat_config("fou", ("fou", "kar"), models=("mm_student",))
    seeds = (0, 1)
    results = [run_mke(split_multiview(data, labeled_fraction=0.05, seed=seed), config, seed=seed,
                       show_progress=False) for seed in seeds]
    for model, title in (("um_teacher", "UM teacher (fou)"), ("mm_student", "MM student (fou+kar)")):
        ctx.rows.append((f"mfeat, 5% labels, {len(seeds)} seeds", title,
                         sum(r.accuracy[model] for r in results) / len(results)))
    accuracies = {title: acc for experiment, title, acc in ctx.rows if experiment.startswith("mfeat")}

    def draw(ax: Any) -> None:
        ax.bar(range(len(accuracies)), list(accuracies.values()), color=["#999999", "#3366cc"])
        ax.set_xticks(range(len(accuracies)), [t.split(" (")[0] for t in accuracies], fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("test accuracy %")

    ctx.panels.append(("mfeat digits, 5% labels", draw))


def robult_section(ctx: DemoContext) -> None:
    """Robult on mfeat fou + kar, 5% labels, one seed: both views, and each view alone (a modality missing)."""
    from mkefast.data.mfeat import load_mfeat
    from mkefast.experiments.robult_paper import run_experiment
    from mkefast.train.robult_trainer import RobultConfig

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


def kernels_section(ctx: DemoContext, batch: int = 4096) -> None:
    """The loss Robult trains with, fused (the compiled `cpu` backend) against the dense `reference`: one
    soft-PU forward + backward at B = `batch`, d = 128, M = 2 (float32, 5% labeled): time and peak memory above
    the inputs (`mkefast.bench.memory`; NaN off Linux). Last in `SECTIONS`: it fixes glibc's thresholds."""
    from mkefast import available_backends, soft_pu_loss
    from mkefast.bench import memory

    backends = [b for b in ("cpu", "reference") if b in available_backends()]
    g = torch.Generator().manual_seed(0)

    def inputs(b: int) -> tuple[torch.Tensor, ...]:
        fused = torch.randn(b, 128, generator=g).requires_grad_()
        unimodal = torch.randn(2, b, 128, generator=g).requires_grad_()
        return fused, unimodal, torch.randint(0, 10, (b,), generator=g), torch.rand(b, generator=g) < 0.05

    def step(args: tuple[torch.Tensor, ...], backend: str) -> None:
        cast(torch.Tensor, soft_pu_loss(*args, backend=backend)).backward()

    for backend in backends:  # load the libraries and thread pools before anything is measured
        step(inputs(64), backend)
    if memory.supported():
        memory.fix_malloc_thresholds()
    results: dict[str, tuple[float, float]] = {}
    for backend in backends:
        args = inputs(batch)
        start = time.perf_counter()
        if memory.supported():
            peak = float(memory.peak_extra_bytes(lambda a=args, b=backend: step(a, b)))  # type: ignore[misc]
        else:
            step(args, backend)
            peak = float("nan")
        results[backend] = (time.perf_counter() - start, peak / 2**20)
        ctx.kernels.append((f"soft-PU fwd+bwd, {backend}", *results[backend]))

    def draw(ax: Any) -> None:
        x = np.arange(len(results))
        colors = ["#3366cc" if b == "cpu" else "#999999" for b in results]
        ax.bar(x - 0.2, [t for t, _ in results.values()], 0.4, color=colors, label="time (s)")
        ax.set_ylabel("seconds per call")
        mem_ax = ax.twinx()
        mem_ax.bar(x + 0.2, [m for _, m in results.values()], 0.4, color=colors, hatch="//", alpha=0.6,
                   label="peak memory (MiB)")
        mem_ax.set_ylabel("peak MiB above the inputs (hatched)")
        ax.set_xticks(x, [f"{'fused ' if b == 'cpu' else ''}{b}" for b in results], fontsize=8)

    ctx.panels.append((f"soft-PU loss fwd+bwd, B = {batch}", draw))


SECTIONS: list[Callable[[DemoContext], None]] = [twomoon_section, mfeat_section, robult_section, kernels_section]
"""The demo's sections, run in order."""


def _save_figure(ctx: DemoContext, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ctx.panels), figsize=(3.6 * len(ctx.panels), 3.4), squeeze=False)
    for ax, (title, draw) in zip(axes[0], ctx.panels, strict=True):
        draw(ax)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(args: argparse.Namespace) -> int:
    """Runs every section, prints the table and saves the figure to `args.out`."""
    from mkefast.experiments.common import require_modules

    require_modules("sklearn", "matplotlib")
    # The demo's models are tiny: one thread avoids inter-thread overhead that dwarfs the math.
    torch.set_num_threads(1)
    ctx = DemoContext()
    for section in SECTIONS:
        start = time.perf_counter()
        section(ctx)
        ctx.seconds[section.__name__] = time.perf_counter() - start
    width = max(len(e) for e, _, _ in ctx.rows)
    print(f"{'experiment':<{width}}  {'model':<26}{'test acc %':>10}")
    for experiment, model, acc in ctx.rows:
        print(f"{experiment:<{width}}  {model:<26}{acc:>10.2f}")
    if ctx.kernels:
        print(f"\n{'loss (one thread)':<{width}}  {'seconds':>10}{'peak MiB':>26}")
        for name, seconds, mib in ctx.kernels:
            print(f"{name:<{width}}  {seconds:>10.2f}{mib:>26.1f}")
    out = Path(args.out)
    if ctx.panels:
        _save_figure(ctx, out)
        print(f"figure: {out}")
    print("time: " + ", ".join(f"{name} {s:.1f} s" for name, s in ctx.seconds.items()))
    return 0


def add_parser(subparsers: Any) -> None:
    """Registers `mkefast demo`."""
    from mkefast.experiments.common import output_file

    demo = subparsers.add_parser("demo", help="a one-minute tour: knowledge expansion on TwoMoon and mfeat",
                                 description="A one-minute tour: knowledge expansion on TwoMoon and mfeat, then "
                                             "Robult with views missing at test time.")
    demo.add_argument("--out", type=output_file, default="mkefast-demo.png", help="where to save the figure (PNG)")
    demo.set_defaults(func=main)

