"""The two GPU measurements of benchmarks/gpu_check.sh that a plain `mkefast bench` sweep does not make.

- `crossover`: soft-PU forward + backward time of the fused Triton tiles (`triton`) against the chunked
  cuBLAS + CUDA-epilogue path (`cuda`) over the feature size d at a fixed batch, and the value of
  `mkefast.backends.CHUNKED_MIN_DIM` (the d from which `auto` prefers `cuda`) that the timings support
  (`--providers TILES,CHUNKED` names the two; `--device cpu --providers cpu,reference` is the dry run of
  benchmarks/gpu_check.sh).
- `max-batch`: the largest batch B, doubling from --start-B up to --max-B, at which each backend still runs a
  soft-PU forward + backward for the given d and M. A backend stops at its first out-of-memory error, or when
  the next size (time grows as B²) would not fit in what is left of the time budget.

Both measure with the shared runner (`mkefast.bench.runner`, `mkefast.bench.soft_pu`): the same timing,
peak-memory and CSV rows as `mkefast bench`, which they append to --csv.

Usage (on a GPU machine, with mkefast installed):

    python benchmarks/gpu_check.py crossover --B 16384 --M 2 --dtype bfloat16 --csv out.csv
    python benchmarks/gpu_check.py max-batch --d 256 --M 2 --backends reference,triton --max-B 1048576
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any

import torch

from mkefast.backends import CHUNKED_MIN_DIM
from mkefast.bench.runner import Case, run_sweep
from mkefast.bench.soft_pu import SPEC

_MODULE = "mkefast.bench.soft_pu"


def _case(args: argparse.Namespace, provider: str, b: int, d: int, repeats: int) -> Case:
    return Case(op="soft_pu", provider=provider, device=args.device, dtype=args.dtype, B=b, d=d, M=args.M,
                mode="fwd+bwd", repeats=repeats, warmup=1)


def _measure(case: Case, csv_path: str | None) -> tuple[float, str]:
    """(median ms, note) of one case; NaN and the reason when it ran out of memory or failed."""
    try:
        row: dict[str, Any] = run_sweep(SPEC, _MODULE, [case], csv_path=csv_path, log=lambda _line: None)[0]
    except RuntimeError as exc:  # a launch error or a Triton limit: report it, keep going
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return math.nan, f"error: {exc}"[:200]
    ms = float(row["ms_median"])
    return ms, "" if ms == ms else "out of memory"


def recommend(times: dict[int, dict[str, float]], tiles: str = "triton", chunked: str = "cuda") -> int | None:
    """The smallest d from which `chunked` is faster than `tiles` at every larger d where both ran."""
    both_ran = [d for d, t in times.items() if not math.isnan(t.get(chunked, math.nan) + t.get(tiles, math.nan))]
    best = None
    for d in sorted(both_ran, reverse=True):
        t = times[d]
        if t[chunked] < t[tiles]:
            best = d
        else:
            break
    return best


def crossover(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.budget_s
    times: dict[int, dict[str, float]] = {}
    tiles, chunked = args.providers
    print(f"soft-PU fwd+bwd, B={args.B} M={args.M} {args.dtype} on {args.device}: {tiles} (fused tiles) vs "
          f"{chunked} (chunked)")
    print(f"{'d':>6} {tiles + ' ms':>12} {chunked + ' ms':>12}  faster")
    for d in (int(x) for x in args.dims.split(",")):
        if time.monotonic() > deadline:
            print(f"time budget of {args.budget_s:g} s spent; stopped before d = {d}")
            break
        times[d] = {}
        notes = []
        for provider in (tiles, chunked):
            ms, note = _measure(_case(args, provider, args.B, d, args.repeats), args.csv)
            times[d][provider] = ms
            if note:
                notes.append(f"{provider}: {note}")
        t = times[d]
        faster = chunked if t[chunked] < t[tiles] else tiles if t[tiles] <= t[chunked] else "-"
        print(f"{d:>6} {t[tiles]:>12.2f} {t[chunked]:>12.2f}  {faster}  {'; '.join(notes)}")
    best = recommend(times, tiles, chunked)
    if best is None:
        print(f"recommended CHUNKED_MIN_DIM: none ({chunked} was not faster at the largest d where both ran); "
              f"keep it above the largest d measured (now {CHUNKED_MIN_DIM})")
    else:
        print(f"recommended CHUNKED_MIN_DIM = {best} (now {CHUNKED_MIN_DIM})")
    return 0


def max_batch(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.budget_s
    print(f"largest B for soft-PU fwd+bwd, d={args.d} M={args.M} {args.dtype}, B up to {args.max_B}")
    for provider in args.backends.split(","):
        b, largest, last_s, stop = args.start_B, None, 0.0, f"reached --max-B {args.max_B}"
        while b <= args.max_B:
            if 4 * last_s > deadline - time.monotonic():
                stop = f"time budget (B = {b} would take ~{4 * last_s:.0f} s)"
                break
            start = time.monotonic()
            ms, note = _measure(_case(args, provider, b, args.d, 1), args.csv)
            last_s = time.monotonic() - start
            if note:
                stop = f"{note} at B = {b}"
                break
            tflops = SPEC.flops(_case(args, provider, b, args.d, 1)) / (ms * 1e-3) / 1e12
            print(f"  {provider:<20} B={b:>8} {ms:>10.1f} ms {tflops:>7.1f} TFLOP/s")
            largest = b
            b *= 2
        print(f"{provider}: largest B that ran: {largest} (stopped: {stop})")
    return 0


def _two(text: str) -> tuple[str, str]:
    names = [p.strip() for p in text.split(",") if p.strip()]
    if len(names) != 2:
        raise argparse.ArgumentTypeError(f"expected two comma-separated providers, got {text!r}")
    return names[0], names[1]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--M", type=int, default=2, help="number of modalities")
    common.add_argument("--device", default="cuda", help="cuda[:i], or cpu for a dry run")
    common.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    common.add_argument("--csv", default=None, help="append the rows to this CSV file")
    common.add_argument("--budget-s", type=float, default=120.0, help="start no new case after this many seconds")
    cross = sub.add_parser("crossover", parents=[common], help="triton vs cuda over d")
    cross.add_argument("--B", type=int, default=16384)
    cross.add_argument("--dims", default="64,128,256,512,1024,2048,4096")
    cross.add_argument("--repeats", type=int, default=3)
    cross.add_argument("--providers", default="triton,cuda", type=_two,
                       help="TILES,CHUNKED: the fused-tile and the chunked provider to compare")
    cross.set_defaults(func=crossover)
    big = sub.add_parser("max-batch", parents=[common], help="the largest B each backend runs")
    big.add_argument("--d", type=int, default=256)
    big.add_argument("--backends", default="reference,triton")
    big.add_argument("--start-B", type=int, default=16384)
    big.add_argument("--max-B", type=int, default=1 << 20)
    big.set_defaults(func=max_batch)
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check.py: no CUDA device is visible (--device cpu for a dry run)", file=sys.stderr)
        return 1
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
