"""`mkefast bench <op>`: sweep providers × B × modes for one op and append the rows to a CSV.

Ops: soft_pu, supcon (single view, against pytorch-metric-learning's SupConLoss as `pml`), clip (against
open_clip's dense formula as `dense_clip`), cosine_rec. Example (the CPU goal point of benchmarks/README.md):

    mkefast bench soft_pu --backends cpu,reference --B 8192 --d 128 --M 2 --modes fwd+bwd \\
        --csv benchmarks/results/cpu.csv
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import torch

from mkefast._build import BACKEND_NAMES
from mkefast.backends import resolve_backend
from mkefast.bench.runner import DTYPES, MODES, Case, run_sweep
from mkefast.cli import HelpFormatter

OPS = {name: f"mkefast.bench.{name}" for name in ("soft_pu", "supcon", "clip", "cosine_rec")}


def _ints(text: str) -> list[int]:
    """argparse type of --B: a comma list of positive sizes, `k` meaning ×1024 (`1k,2048,64k`)."""
    values = []
    for part in text.split(","):
        part = part.strip().lower()
        scale = 1024 if part.endswith("k") else 1
        try:
            value = int(part.removesuffix("k")) * scale
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma list of sizes like 1k,2048,64k, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected positive sizes, got {text!r}")
        values.append(value)
    return values


def _names(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _device(text: str) -> str:
    """Checks --device: `cpu`, or `cuda[:i]` naming a device that is visible here."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise ValueError(f"--device: expected cpu or cuda[:i], got {text!r}") from None
    if device.type == "cpu":
        return text
    if device.type != "cuda":
        raise ValueError(f"--device: expected cpu or cuda[:i], got {text!r}")
    if not torch.cuda.is_available():
        raise ValueError(f"--device {text}: no CUDA device is visible here (torch.cuda.is_available() is False); "
                         "use --device cpu")
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {text}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    return text


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bench", help="benchmark an op over backends and batch sizes (CSV rows + table)",
                              description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("op", choices=sorted(OPS), help="the op to benchmark")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--backends", default="all",
                   help="comma list of providers (backends and reference_compiled), or 'all'")
    p.add_argument("--dtype", default="float32", choices=sorted(DTYPES), help="input dtype")
    p.add_argument("--B", default="1024,2048,4096,8192", type=_ints, help="batch sizes, e.g. 1k,2k,64k")
    p.add_argument("--d", default=128, type=int, help="feature size")
    p.add_argument("--M", default=None, type=int,
                   help="modalities of soft_pu and cosine_rec (default 2); supcon and clip have none (M = 1)")
    p.add_argument("--modes", default="fwd+bwd", type=_names, help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--repeats", default=5, type=int,
                   help="timed repetitions per point (0: peak memory only, NaN times)")
    p.add_argument("--warmup", default=1, type=int, help="untimed calls first (the first one measures memory)")
    p.add_argument("--labeled-frac", default=0.05, type=float, help="soft_pu: fraction of labeled samples")
    p.add_argument("--classes", default=10, type=int, help="soft_pu, supcon: number of classes")
    p.add_argument("--no-pseudo", action="store_true", help="soft_pu: no pseudo labels for the unlabeled")
    p.add_argument("--threads", default=0, type=int,
                   help="CPU: torch.set_num_threads in each worker (0: torch's default)")
    p.add_argument("--mem-limit-gb", default=16.0, type=float,
                   help="CPU: skip a provider predicted to need more, and cap each worker's memory")
    p.add_argument("--timeout", default=600.0, type=float, help="CPU: seconds per point before giving up")
    p.add_argument("--csv", default=None, help="append rows to this CSV (none: table only)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    module_name = OPS[args.op]
    spec = importlib.import_module(module_name).SPEC
    device = _device(args.device)
    if not args.modes:
        raise ValueError(f"--modes: expected some of {MODES}, got none")
    for mode in args.modes:
        if mode not in MODES:
            raise ValueError(f"--modes: expected some of {MODES}, got {mode!r}")
    for name, value in (("--d", args.d), ("--M", args.M), ("--classes", args.classes)):
        if value is not None and value < 1:
            raise ValueError(f"{name}: expected a positive integer, got {value}")
    if args.repeats < 0:
        raise ValueError(f"--repeats: expected a count >= 0 (0: peak memory only), got {args.repeats}")
    if not spec.has_modalities and args.M not in (None, 1):
        raise ValueError(f"--M: {args.op} has no modalities (M = 1), got {args.M}")
    modalities = args.M or (2 if spec.has_modalities else 1)
    if args.warmup < 0:
        raise ValueError(f"--warmup: expected a count >= 0, got {args.warmup}")
    if not 0.0 <= args.labeled_frac <= 1.0:
        raise ValueError(f"--labeled-frac: expected a fraction in [0, 1], got {args.labeled_frac}")
    for name, value in (("--mem-limit-gb", args.mem_limit_gb), ("--timeout", args.timeout)):
        if not 0.0 < value < float("inf"):
            raise ValueError(f"{name}: expected a positive finite number, got {value}")
    available = spec.providers(device)
    providers = available if args.backends == "all" else _names(args.backends)
    if not providers:
        raise ValueError(f"--backends: expected a comma list of providers or 'all', got {args.backends!r}")
    unknown = [p for p in providers if p not in available]
    for name in unknown:
        if name in BACKEND_NAMES:  # a backend that is not built or cannot run here: its error says why
            resolve_backend(name, args.op, torch.device(device), DTYPES[args.dtype])
    if unknown:
        raise ValueError(f"--backends: {unknown} cannot run on {device} here; available: {available}")
    if args.threads < 0:
        raise ValueError(f"--threads: expected a count >= 0, got {args.threads}")
    extra: tuple[tuple[str, Any], ...] = (("threads", args.threads),) if args.threads else ()
    if args.op == "soft_pu":
        extra += (("labeled_frac", args.labeled_frac), ("classes", args.classes), ("pseudo", not args.no_pseudo))
    if args.op == "supcon":
        extra += (("classes", args.classes),)
    cases = [
        Case(op=args.op, provider=provider, device=device, dtype=args.dtype, B=b, d=args.d, M=modalities,
             mode=mode, repeats=args.repeats, warmup=max(args.warmup, 1), extra=extra)
        for b in args.B for mode in args.modes for provider in providers
    ]
    run_sweep(spec, module_name, cases, csv_path=args.csv, mem_limit_gb=args.mem_limit_gb, timeout_s=args.timeout)
    return 0


def script_main(op: str, results: Path, argv: list[str] | None = None) -> int:
    """What `python benchmarks/<op>.py [options]` runs: `mkefast bench <op> [options]`, its rows appended to
    `results/<op>.csv` unless `--csv` is given."""
    from mkefast.cli import main

    args = list(sys.argv[1:] if argv is None else argv)
    if "--csv" not in args:
        args += ["--csv", str(results / f"{op}.csv")]
    return main(["bench", op, *args])
