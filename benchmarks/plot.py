"""Plots time and peak memory against B from benchmark CSV rows (one line per backend and mode).

    python benchmarks/plot.py results/soft_pu_cpu.csv --op soft_pu --dtype float32 --out results/soft_pu_cpu.png

Rows with NaN times (out of memory, or skipped as predicted to exceed the limit) are left out, so a
backend's line stops where it stopped fitting. For repeated points the latest row wins.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections import defaultdict
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("csv", type=Path)
    parser.add_argument("--op", default="soft_pu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default=None, help="keep rows whose device starts with this (default: all)")
    parser.add_argument("--out", type=Path, default=None, help="PNG path (default: the CSV path with .png)")
    args = parser.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[tuple[str, str, str], dict[int, tuple[float, float]]] = defaultdict(dict)
    with args.csv.open() as f:
        for row in csv.DictReader(f):
            if row["op"] != args.op or row["dtype"] != args.dtype:
                continue
            if args.device and not row["device"].startswith(args.device):
                continue
            ms, mem = float(row["ms_median"]), float(row["peak_mem_mb"])
            if math.isnan(ms):
                continue
            series[(row["backend"], row["mode"], row["device"])][int(row["B"])] = (ms, mem)
    if not series:
        print(f"no rows for op={args.op} dtype={args.dtype} in {args.csv}", file=sys.stderr)
        return 1
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4.2))
    for (backend, mode, device), points in sorted(series.items()):
        bs = sorted(points)
        label = f"{backend} {mode} [{device}]"
        ax_t.plot(bs, [points[b][0] / 1e3 for b in bs], marker="o", label=label)
        ax_m.plot(bs, [max(points[b][1], 1e-1) for b in bs], marker="o", label=label)
    for ax, ylabel in ((ax_t, "time per call (s)"), (ax_m, "peak memory above inputs (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size B")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
    ax_t.legend(fontsize=7)
    fig.suptitle(f"{args.op} ({args.dtype})")
    fig.tight_layout()
    out = args.out or args.csv.with_suffix(".png")
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
