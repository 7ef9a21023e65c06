"""`mkefast bench <op>`: sweep providers × B × modes for one op and append the rows to a CSV.

Example (the CPU goal point of benchmarks/README.md):

    mkefast bench soft_pu --backends cpu,reference --B 8192 --d 128 --M 2 --modes fwd+bwd \
        --csv benchmarks/results/cpu.csv
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from mkefast.bench.runner import DTYPES, MODES, Case, run_sweep

OPS = {"soft_pu": "mkefast.bench.soft_pu", "cosine_rec": "mkefast.bench.cosine_rec"}


def _ints(text: str) -> list[int]:
    values = []
    for part in text.split(","):
        part = part.strip().lower()
        scale = 1024 if part.endswith("k") else 1
        values.append(int(part.rstrip("k")) * scale)
    return values


def _names(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="benchmark an op over backends and batch sizes (CSV rows + table)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("op", choices=sorted(OPS), help="the op to benchmark")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i] (default cpu)")
    p.add_argument("--backends", default="all",
                   help="comma list of providers (backends and reference_compiled), or 'all' (default)")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES))
    p.add_argument("--B", default="1024,2048,4096,8192", type=_ints, help="batch sizes, e.g. 1k,2k,64k")
    p.add_argument("--d", default=128, type=int, help="feature size")
    p.add_argument("--M", default=2, type=int, help="modalities")
    p.add_argument("--modes", default="fwd+bwd", type=_names, help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--repeats", default=5, type=int, help="timed repetitions per point")
    p.add_argument("--warmup", default=1, type=int, help="untimed calls first (the first one measures memory)")
    p.add_argument("--labeled-frac", default=0.05, type=float, help="soft_pu: fraction of labeled samples")
    p.add_argument("--classes", default=10, type=int, help="soft_pu: number of classes")
    p.add_argument("--no-pseudo", action="store_true", help="soft_pu: no pseudo labels for the unlabeled")
    p.add_argument("--threads", default=0, type=int,
                   help="CPU: torch.set_num_threads in each worker (default 0: torch's default)")
    p.add_argument("--mem-limit-gb", default=16.0, type=float,
                   help="CPU: skip a provider predicted to need more, and cap each worker's memory (default 16)")
    p.add_argument("--timeout", default=600.0, type=float, help="CPU: seconds per point before giving up")
    p.add_argument("--csv", default=None, help="append rows to this CSV (default: none, table only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module_name = OPS[args.op]
    spec = importlib.import_module(module_name).SPEC
    for mode in args.modes:
        if mode not in MODES:
            raise ValueError(f"--modes: expected some of {MODES}, got {mode!r}")
    for name, values in (("--B", args.B), ("--d", [args.d]), ("--M", [args.M]), ("--repeats", [args.repeats])):
        if min(values) < 1:
            raise ValueError(f"{name}: expected positive integers, got {values}")
    available = spec.providers(args.device)
    providers = available if args.backends == "all" else _names(args.backends)
    unknown = [p for p in providers if p not in available]
    if unknown:
        raise ValueError(f"--backends: {unknown} cannot run on {args.device} here; available: {available}")
    if args.threads < 0:
        raise ValueError(f"--threads: expected a count >= 0, got {args.threads}")
    extra: tuple[tuple[str, Any], ...] = (("threads", args.threads),) if args.threads else ()
    if args.op == "soft_pu":
        extra += (("labeled_frac", args.labeled_frac), ("classes", args.classes), ("pseudo", not args.no_pseudo))
    cases = [
        Case(op=args.op, provider=provider, device=args.device, dtype=args.dtype, B=b, d=args.d, M=args.M,
             mode=mode, repeats=args.repeats, warmup=max(args.warmup, 1), extra=extra)
        for b in args.B for mode in args.modes for provider in providers
    ]
    run_sweep(spec, module_name, cases, csv_path=args.csv, mem_limit_gb=args.mem_limit_gb, timeout_s=args.timeout)
    return 0
