"""`mkefast kernels`: what ptxas makes of every GPU kernel, for Hopper (sm_90a) and Ampere (sm_80), without a GPU.

Each Triton kernel variant (`mkefast.kernels.triton.aot.variants`: both ops, RBF off / logit / phi weights,
exclude_diagonal, each choice of gradients, the atomic backward) is compiled ahead of time for every tile
configuration of its autotuner, at each d and dtype asked for, and reported with its registers per thread,
spilled bytes, shared memory, whether it runs its products on the tensor cores (HGMMA = wgmma on sm_90a, HMMA =
mma.sync), its exponentials per tile (MUFU.EX2: the unit that bounds this loss at d <= 128, with one exp per
pair in the forward plus the RBF weight's), and whether the autotuner may pick that configuration
(`in_autotune_space`: the kernels prune the configurations that spill). `--check` fails when a configuration
the autotuner may pick spills, or when a kernel keeps fewer than two spill-free ones.

`--cuda` reports the compiled CUDA module (`mkefast._C_cuda`) instead, from `cuobjdump -res-usage -sass` of the
built extension (registers, stack = spills, static shared memory, tensor-core and MUFU.EX2 instructions per
function), for every target it was built for.

    mkefast kernels --arch 90a --d 128 --dtype bf16 --json sm90a.json
    mkefast kernels --arch 80 --space autotune --check
    mkefast kernels --cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "check", "cuda_records", "summary", "triton_records"]

MIN_SPILL_FREE = 2


def _csv(kind: Callable[[str], Any], allowed: Iterable[str] | None = None) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError("expected a comma-separated list")
        if allowed is not None and (bad := [t for t in items if t not in allowed]):
            raise argparse.ArgumentTypeError(f"expected some of {', '.join(allowed)}; got {', '.join(bad)}")
        try:
            return [kind(t) for t in items]
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def _require_compiled() -> None:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        raise ValueError("TRITON_INTERPRET is set: the kernels must be compiled, not interpreted; unset it")


def triton_records(archs: list[str], dtypes: list[str], ds: list[int], *, kernels: list[str] | None = None,
                   labels: list[str] | None = None, autotune_only: bool = False,
                   progress: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """One record per (variant, configuration, arch, dtype, d), compiled sequentially in this process (Triton
    caches every compiled kernel, so a second run only reads the cache). `autotune_only` compiles only the
    configurations the autotuner may pick."""
    _require_compiled()
    from mkefast.kernels.triton import aot

    records = []
    for d in ds:
        for dtype in dtypes:
            for variant in aot.variants(d, dtype, kernels=kernels, labels=labels):
                space = aot.autotune_space(variant, d)
                configs = space if autotune_only else aot.candidate_configs(variant.kernel)
                for arch in archs:
                    for config in configs:
                        record = dataclasses.asdict(aot.compile_variant(variant, config, arch, dtype, d, space))
                        records.append(record)
                        if progress is not None:
                            progress(record)
    if kernels and not records:
        raise ValueError(f"--kernels: no kernel named {', '.join(kernels)}")
    return records


def _cuobjdump() -> Path | None:
    found = shutil.which("cuobjdump")
    if found:
        return Path(found)
    try:
        from mkefast.kernels.triton.aot import cuobjdump
    except ImportError:
        return None
    tool = cuobjdump()
    return tool if tool.exists() else None


def _demangle(names: list[str]) -> list[str]:
    tool = shutil.which("c++filt")
    if tool is None:
        return names
    return subprocess.run([tool], input="\n".join(names), capture_output=True, text=True,
                          check=True).stdout.splitlines()


def _split_name(name: str) -> tuple[str, str]:
    """("soft_pu_fwd_kernel", "float") of "void ns::(anonymous namespace)::soft_pu_fwd_kernel<float>(float*, int)"."""
    if name.endswith(")"):  # drop the parameter list: from its matching "(" on
        depth = 0
        for i in range(len(name) - 1, -1, -1):
            depth += {")": 1, "(": -1}.get(name[i], 0)
            if depth == 0:
                name = name[:i]
                break
    template = ""
    if name.endswith(">"):
        template = name[name.index("<") + 1:-1]
        name = name[:name.index("<")]
    return name.split("::")[-1], template


_CUDA_DTYPES = {"__nv_bfloat16": "bf16", "__half": "fp16", "float": "fp32", "double": "fp64"}


def cuda_records() -> tuple[list[dict[str, Any]], str | None]:
    """(records, None), or ([], why not) when the CUDA module was not built or no cuobjdump is found.

    The CUDA kernels are not tiled (one block per row, d looped over), so a record is one function per target:
    d is 0 (any), config is empty, `exp_per_tile` is the function's static MUFU.EX2 count, and every record is
    `in_autotune_space` (there is nothing to choose).
    """
    spec = importlib.util.find_spec("mkefast._C_cuda")
    if spec is None or spec.origin is None:
        return [], "the CUDA module mkefast._C_cuda was not built (install with MKEFAST_WITH_CUDA=1 where nvcc is)"
    tool = _cuobjdump()
    if tool is None:
        return [], "no cuobjdump found (the CUDA toolkit's, or the one in Triton's wheel)"
    from mkefast.kernels.triton.aot import sass_stats

    stats = sass_stats(Path(spec.origin), tool)
    keys = sorted(stats)
    names = _demangle([name for _, name in keys])
    records = []
    for key, name in zip(keys, names, strict=True):
        entry = stats[key]
        kernel, template = _split_name(name)
        tc = [op for op in ("HGMMA", "HMMA") if entry.count(op)]
        records.append({
            "kernel": kernel, "variant": template, "arch": key[0].removeprefix("sm_"),
            "dtype": _CUDA_DTYPES.get(template.split(",")[0].strip(), template),
            "d": 0, "config": {}, "registers": entry.registers, "spill_bytes": entry.stack,
            "shared_bytes": entry.shared, "tensor_cores": bool(tc), "tensor_core_op": tc[0] if tc else "",
            "exp_per_tile": entry.count("MUFU.EX2"), "exp_per_pair": 0.0, "in_autotune_space": True,
            "triton": "", "seconds": 0.0,
        })
    return records, None


def _config_text(config: dict[str, int]) -> str:
    if "BLOCK_M" in config:
        text = f"{config['BLOCK_M']}x{config['BLOCK_N']}"
    elif "BLOCK_R" in config:
        text = f"r{config['BLOCK_R']}"
    else:
        return "-"
    extra = "".join(f" {k.lower()}={v}" for k, v in config.items()
                    if k not in ("BLOCK_M", "BLOCK_N", "BLOCK_R", "num_warps", "num_stages"))
    return f"{text}/w{config['num_warps']}/s{config['num_stages']}{extra}"


_COLUMNS = ("kernel", "variant", "arch", "dtype", "d", "config", "regs", "spill", "smem_KiB", "tc", "exp/tile",
            "exp/pair", "space")


def _row(r: dict[str, Any]) -> tuple[str, ...]:
    return (r["kernel"].removeprefix("_").removesuffix("_kernel"), r["variant"] or "-", r["arch"], r["dtype"],
            str(r["d"] or "any"), _config_text(r["config"]), str(r["registers"]), str(r["spill_bytes"]),
            f"{r['shared_bytes'] / 1024:.1f}", r["tensor_core_op"] or "-", str(r["exp_per_tile"]),
            f"{r['exp_per_pair']:.2f}" if r["exp_per_pair"] else "-", "yes" if r["in_autotune_space"] else "no")


def table(records: list[dict[str, Any]]) -> str:
    """The records as an aligned text table, one line each."""
    rows = [_COLUMNS, *(_row(r) for r in records)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def summary(records: list[dict[str, Any]]) -> dict[tuple[str, str, str, str, int, str], tuple[int, int, int]]:
    """{(kernel, variant, arch, dtype, d, triton): (configurations in the autotuning space, spill-free ones among
    them, spilling ones among all compiled)}."""
    out: dict[tuple[str, str, str, str, int, str], tuple[int, int, int]] = {}
    for r in records:
        key = (r["kernel"], r["variant"], r["arch"], r["dtype"], r["d"], r.get("triton", ""))
        space, free, spilling = out.get(key, (0, 0, 0))
        in_space = bool(r["in_autotune_space"])
        out[key] = (space + in_space, free + (in_space and r["spill_bytes"] == 0), spilling + (r["spill_bytes"] > 0))
    return out


def markdown(records: list[dict[str, Any]]) -> str:
    """A Markdown table with one row per (kernel, variant, arch, dtype, d, Triton version): the configurations in
    the autotuning space, how many of them are spill-free, their range of registers and shared memory, the
    tensor-core instruction and the exps per pair."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        key = (r["kernel"].removeprefix("_").removesuffix("_kernel"), r["variant"] or "-", r["arch"], r["dtype"],
               r["d"] or "any", r["triton"] or "cuda")
        groups.setdefault(key, []).append(r)
    lines = ["| kernel | variant | arch | dtype | d | triton | in space | spill-free | registers | spilled B (pruned) "
             "| shared KiB | tensor cores | exp/pair |", "|" + " --- |" * 13]
    for key, rs in groups.items():
        space = [r for r in rs if r["in_autotune_space"]] or rs
        pruned = [r["spill_bytes"] for r in rs if not r["in_autotune_space"]]
        regs = sorted({r["registers"] for r in space})
        smem = [r["shared_bytes"] / 1024 for r in space]
        ops = sorted({r["tensor_core_op"] or "none" for r in space})
        exps = sorted({round(r["exp_per_pair"], 2) for r in space if r["exp_per_pair"]})
        lines.append("| " + " | ".join([
            *map(str, key), str(len(space)), str(sum(r["spill_bytes"] == 0 for r in space)),
            f"{regs[0]}-{regs[-1]}" if len(regs) > 1 else str(regs[0]),
            f"{min(pruned)}-{max(pruned)}" if pruned else "-", f"{min(smem):.0f}-{max(smem):.0f}",
            "/".join(ops), "/".join(f"{e:g}" for e in exps) or "-"]) + " |")
    return "\n".join(lines) + "\n"


def check(records: list[dict[str, Any]]) -> list[str]:
    """The problems `--check` fails on: a configuration the autotuner may pick spills, or a (variant, arch,
    dtype, d) keeps fewer than MIN_SPILL_FREE spill-free configurations (when it has that many candidates)."""
    problems = [f"{r['kernel']} {r['variant']} sm_{r['arch']} {r['dtype']} d={r['d']} {_config_text(r['config'])}: "
                f"spills {r['spill_bytes']} B but is in the autotuning space"
                for r in records if r["in_autotune_space"] and r["spill_bytes"] > 0]
    for (kernel, variant, arch, dtype, d, _), (space, free, _) in summary(records).items():
        if free < min(MIN_SPILL_FREE, space):
            problems.append(f"{kernel} {variant} sm_{arch} {dtype} d={d}: {free} spill-free configurations in the "
                            f"autotuning space (at least {MIN_SPILL_FREE} wanted)")
    return problems


def _write_json(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, indent=1) + "\n")


def _run(args: argparse.Namespace) -> int:
    if args.from_json:
        records = [r for path in args.from_json for r in json.loads(path.read_text())]
    elif args.cuda:
        records, why_not = cuda_records()
        if why_not is not None:
            print(f"mkefast kernels: CUDA module skipped: {why_not}")
            return 0
    else:
        _require_compiled()
        import triton

        print(f"Triton {triton.__version__}: compiling for sm_{', sm_'.join(args.arch)} (no GPU needed)",
              file=sys.stderr)

        done: list[dict[str, Any]] = []

        def progress(r: dict[str, Any]) -> None:
            done.append(r)
            if args.json is not None:  # as it goes: a long run that is stopped keeps what it compiled
                _write_json(args.json, done)
            if args.verbose:
                print(f"  {r['kernel']} {r['variant']} sm_{r['arch']} {r['dtype']} d={r['d']} "
                      f"{_config_text(r['config'])}: {r['registers']} registers, {r['spill_bytes']} B spilled, "
                      f"{r['seconds']:.1f} s", file=sys.stderr, flush=True)

        records = triton_records(args.arch, args.dtype, args.d, kernels=args.kernels, labels=args.variants,
                                 autotune_only=args.space == "autotune", progress=progress)
    print(table(records))
    if args.markdown is not None:
        args.markdown.write_text(markdown(records))
        print(f"wrote the summary table to {args.markdown}")
    if args.json is not None:
        _write_json(args.json, records)
        print(f"wrote {len(records)} records to {args.json}")
    problems = check(records)
    for problem in problems:
        print(f"spill check: {problem}")
    if not problems:
        print(f"spill check: every configuration in the autotuning space is spill-free, and each of the "
              f"{len(summary(records))} kernel variants keeps at least {MIN_SPILL_FREE} (or all it has)")
    return 1 if args.check and problems else 0


def add_parser(subparsers: Any) -> None:
    """Registers `mkefast kernels`."""
    from mkefast.cli import HelpFormatter
    from mkefast.experiments.common import existing_file, output_file, positive_int

    parser = subparsers.add_parser("kernels", help="registers, spills, shared memory, tensor cores and exps of "
                                                   "every GPU kernel, compiled ahead of time (no GPU needed)",
                                   description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--arch", type=_csv(str, ("90a", "80")), default=["90a"],
                        help="targets, comma-separated: 90a (Hopper), 80 (Ampere)")
    parser.add_argument("--dtype", type=_csv(str, ("bf16", "fp16", "fp32")), default=["bf16", "fp16", "fp32"],
                        help="input dtypes, comma-separated")
    parser.add_argument("--d", type=_csv(positive_int), default=[64, 128, 256], help="feature sizes, comma-separated")
    parser.add_argument("--kernels", type=_csv(str), default=None,
                        help="Triton kernel names, comma-separated (default: every kernel)")
    parser.add_argument("--variants", type=_csv(str), default=None,
                        help="variant labels, comma-separated, e.g. phi+excl+grad_s+grad_t (default: every variant)")
    parser.add_argument("--space", choices=("all", "autotune"), default="all",
                        help="compile every candidate configuration, or only those the autotuner may pick")
    parser.add_argument("--json", type=output_file, default=None,
                        help="also write the records to this JSON file (default: print only)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 when a configuration in the autotuning space spills, or a kernel variant keeps "
                             f"fewer than {MIN_SPILL_FREE} spill-free ones")
    parser.add_argument("--cuda", action="store_true",
                        help="report the compiled CUDA module (cuobjdump of mkefast._C_cuda) instead of the Triton "
                             "kernels")
    parser.add_argument("--markdown", type=output_file, default=None,
                        help="also write a summary table in Markdown here (default: none)")
    parser.add_argument("--from-json", type=existing_file, nargs="+", default=None,
                        help="read the records of earlier --json runs instead of compiling (to merge or summarize)")
    parser.add_argument("--verbose", action="store_true", help="print each compile and its time as it finishes")
    parser.set_defaults(func=_run)
