"""The shared benchmark runner: timing, peak memory, guards against running out of memory, CSV rows.

A benchmark module (`mkefast.bench.soft_pu`, `.supcon`, `.clip`, `.cosine_rec`) describes its op with an
`OpSpec`: how to build inputs for a case, the loss one provider computes, how many flops and bytes a case
moves, and how much memory a provider is predicted to need. The runner sweeps providers × cases × modes.
Every case first runs `warmup` (at least one) untimed calls, so that compilation (`torch.compile`, Triton
autotuning) and first-call allocations stay out of both figures, then `repeats` timed calls, then one more
call whose peak memory it measures:

- CUDA: in-process; time with CUDA events, peak memory = `torch.cuda.max_memory_allocated()` minus what was
  allocated before the measured call (so: above the inputs).
- CPU: every (provider, case, mode) runs in a fresh subprocess, so that no earlier, larger run hides in the
  allocator: peak memory = the peak resident size during the measured call minus the resident size just
  before it (`mkefast.bench.memory`: the high-water mark reset through /proc, glibc told to hand large
  blocks back), so again above the inputs, including the allocator's overhead. The subprocess also gets an
  address-space limit (`RLIMIT_AS`), so that a provider that would need more than the memory limit fails with
  an allocation error instead of pushing the machine into swap or the OOM killer.

Modes: `fwd` (forward under `torch.no_grad`), `bwd` (backward only: the forward runs untimed before each
repetition), `fwd+bwd`. Times are the median and the 20th/80th percentiles over the repetitions, in ms
(NaN with `repeats=0`: a memory-only measurement). A provider that runs out of memory (or is predicted to)
gets a row with NaN times, and the sweep goes on.
"""

from __future__ import annotations

import csv
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from mkefast._build import provenance
from mkefast.bench import memory
from mkefast.train.common import progress

__all__ = ["COLUMNS", "MODES", "Case", "OpSpec", "append_csv", "measure", "measure_in_subprocess", "mode_callables",
           "run_sweep"]

# The last five are `mkefast._build.provenance()`: what produced the row.
COLUMNS = ("op", "backend", "device", "dtype", "B", "d", "M", "mode", "ms_median", "ms_p20", "ms_p80", "peak_mem_mb",
           "tflops", "gbps", "torch", "triton", "git_sha", "date", "mkefast")
MODES = ("fwd", "bwd", "fwd+bwd")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Case:
    """One benchmark point. `extra` carries op-specific settings (label fractions, classes) as JSON values."""

    op: str
    provider: str
    device: str
    dtype: str
    B: int
    d: int
    M: int
    mode: str
    repeats: int = 10
    warmup: int = 2
    extra: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class OpSpec:
    """What the runner needs to know about one op.

    prepare(case) -> state: builds the inputs on the case's device (the "inputs" baseline of peak memory).
    loss(case, state) -> Callable[[], Tensor]: the provider's loss on those inputs, ready to call (a compiled
        provider is compiled here, and on its first call).
    leaves(state) -> tuple[Tensor, ...]: the tensors that receive gradients (cleared before every call).
    flops(case) -> float, io_bytes(case) -> float: the work of one measured call (for tflops and gbps).
    predicted_bytes(case) -> float: memory a provider is expected to need above the inputs (0 if unknown).
    providers(device) -> list[str]: every provider that can run on `device`.
    has_modalities: whether the op's inputs have an M axis (supcon and clip do not: M is 1).
    """

    name: str
    prepare: Callable[[Case], Any]
    loss: Callable[[Case, Any], Callable[[], torch.Tensor]]
    leaves: Callable[[Any], tuple[torch.Tensor, ...]]
    flops: Callable[[Case], float]
    io_bytes: Callable[[Case], float]
    predicted_bytes: Callable[[Case], float]
    providers: Callable[[str], list[str]]
    has_modalities: bool = True


def mode_callables(
    mode: str, loss: Callable[[], torch.Tensor], leaves: Sequence[torch.Tensor]
) -> tuple[Callable[[], None], Callable[[], None]]:
    """`(setup, call)` for `mode`: `setup` runs untimed before each `call` (it clears the leaves' gradients,
    and for "bwd" runs the forward whose backward `call` then times)."""
    state: dict[str, torch.Tensor] = {}

    def clear() -> None:
        for t in leaves:
            t.grad = None

    def fwd() -> None:
        with torch.no_grad():
            loss()

    def fwd_bwd() -> None:
        loss().backward()

    def forward_first() -> None:
        clear()
        state["loss"] = loss()

    def bwd() -> None:
        state.pop("loss").backward()

    if mode == "fwd":
        return clear, fwd
    if mode == "fwd+bwd":
        return clear, fwd_bwd
    if mode == "bwd":
        return forward_first, bwd
    raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _is_oom(exc: BaseException) -> bool:
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    return isinstance(exc, RuntimeError) and ("allocate" in str(exc) or "out of memory" in str(exc))


def _timed_ms(fn: Callable[[], None], cuda: bool) -> float:
    if cuda:
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        return float(start.elapsed_time(stop))
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def _peak_bytes(fn: Callable[[], None], cuda: bool) -> float:
    """Peak memory of one call of `fn` above what was in use before it (NaN where it cannot be measured)."""
    if cuda:
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return float(torch.cuda.max_memory_allocated() - before)
    if not memory.supported():
        return math.nan
    # After the timed calls: fixed thresholds make every large block a fresh mmap (page faults per call).
    memory.fix_malloc_thresholds()
    return float(memory.peak_extra_bytes(fn))


def measure(spec: OpSpec, case: Case) -> dict[str, Any]:
    """Runs one case in this process; returns `ms_median`, `ms_p20`, `ms_p80`, `peak_mem_mb` (NaN on OOM)."""
    cuda = case.device.startswith("cuda")
    threads = int(dict(case.extra).get("threads", 0))
    if threads:
        torch.set_num_threads(threads)
    try:
        state = spec.prepare(case)
        setup, call = mode_callables(case.mode, spec.loss(case, state), spec.leaves(state))
        for _ in range(max(case.warmup, 1)):
            setup()
            call()
        times = []
        for _ in range(case.repeats):
            setup()
            times.append(_timed_ms(call, cuda))
        setup()
        peak = _peak_bytes(call, cuda)
    except Exception as exc:
        if not _is_oom(exc):
            raise
        return _failed(f"out of memory: {type(exc).__name__}: {str(exc)[:120]}")
    if not times:
        return {**_failed(""), "peak_mem_mb": max(peak, 0.0) / 2**20}
    return {"ms_median": statistics.median(times), "ms_p20": _percentile(times, 0.2),
            "ms_p80": _percentile(times, 0.8), "peak_mem_mb": max(peak, 0.0) / 2**20, "note": ""}


def measure_in_subprocess(
    spec_module: str, case: Case, mem_limit_gb: float = 16.0, timeout_s: float = 600.0
) -> dict[str, Any]:
    """`measure` in a fresh Python process importing `spec_module` (which defines `SPEC`), under an address-space
    limit of `mem_limit_gb` plus an allowance for the interpreter and libraries; NaN figures and a `note` when
    it fails or times out."""
    payload = json.dumps({"module": spec_module, "case": asdict(case), "mem_limit_gb": mem_limit_gb})
    try:
        proc = subprocess.run([sys.executable, "-m", "mkefast.bench.runner", payload], capture_output=True,
                              text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return _failed(f"timed out after {timeout_s:.0f} s")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return _failed(f"worker failed (exit {proc.returncode}): {tail[0][:160]}")
    return json.loads(lines[-1])


def _failed(note: str) -> dict[str, Any]:
    return {"ms_median": math.nan, "ms_p20": math.nan, "ms_p80": math.nan, "peak_mem_mb": math.nan, "note": note}


def append_csv(path: str | os.PathLike[str], rows: Sequence[dict[str, Any]]) -> None:
    """Appends rows (dicts with the keys of `COLUMNS`) to a CSV file, writing the header to a new file.

    A file written before a column was added to `COLUMNS` is rewritten once with the new columns at the end
    (empty in its old rows), so that every row stays under its own header.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header: list[str] = []
    if path.exists() and path.stat().st_size > 0:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
    missing = [c for c in COLUMNS if c not in header]
    if header and missing:
        with path.open(newline="") as f:
            old_rows = list(csv.DictReader(f))
        header += missing
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=header)
            writer.writeheader()
            writer.writerows(old_rows)
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header or COLUMNS, extrasaction="ignore")
        if not header:
            writer.writeheader()
        writer.writerows(rows)


def run_sweep(
    spec: OpSpec,
    spec_module: str,
    cases: Sequence[Case],
    *,
    csv_path: str | os.PathLike[str] | None = None,
    mem_limit_gb: float = 16.0,
    timeout_s: float = 600.0,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Measures every case (CPU ones in fresh subprocesses) and appends a row per case to `csv_path`.

    A case's `extra` may hold `("threads", n)`: the worker then calls `torch.set_num_threads(n)` first.

    Args:
        spec: the op; spec_module: the module defining it as `SPEC` (imported by the CPU workers).
        cases: the points to measure, in order.
        csv_path: where rows are appended (None: not written).
        mem_limit_gb: a CPU provider predicted to need more is skipped, and every CPU worker runs under an
            address-space limit of this plus a fixed allowance for the interpreter and libraries.
        timeout_s: per CPU case.
        log: where the table lines and notes go.
    """
    versions = provenance()
    rows = []
    log(f"{'backend':<20} {'dtype':<9} {'B':>7} {'d':>5} {'M':>2} {'mode':<8} {'ms':>10} {'p20':>10} {'p80':>10} "
        f"{'peak MB':>9} {'TFLOP/s':>8} {'GB/s':>7}")
    for case in progress(cases, desc=f"bench {spec.name}", total=len(cases)):
        predicted = spec.predicted_bytes(case)
        if not case.device.startswith("cuda") and predicted > mem_limit_gb * 2**30:
            result = _failed(f"skipped: predicted {predicted / 2**30:.1f} GiB above the inputs > limit "
                             f"{mem_limit_gb:g} GiB")
        elif case.device.startswith("cuda"):
            result = measure(spec, case)
            torch.cuda.empty_cache()
        else:
            result = measure_in_subprocess(spec_module, case, mem_limit_gb, timeout_s)
        ms = result["ms_median"]
        row = {
            "op": case.op, "backend": case.provider, "device": _device_name(case), "dtype": case.dtype,
            "B": case.B, "d": case.d, "M": case.M, "mode": case.mode, "ms_median": ms, "ms_p20": result["ms_p20"],
            "ms_p80": result["ms_p80"], "peak_mem_mb": result["peak_mem_mb"],
            "tflops": spec.flops(case) / (ms * 1e-3) / 1e12 if ms == ms else math.nan,
            "gbps": spec.io_bytes(case) / (ms * 1e-3) / 1e9 if ms == ms else math.nan,
            **versions,
        }
        rows.append(row)
        if csv_path is not None:
            append_csv(csv_path, [row])
        log(f"{case.provider:<20} {case.dtype:<9} {case.B:>7} {case.d:>5} {case.M:>2} {case.mode:<8} {ms:>10.2f} "
            f"{row['ms_p20']:>10.2f} {row['ms_p80']:>10.2f} {row['peak_mem_mb']:>9.1f} {row['tflops']:>8.3f} "
            f"{row['gbps']:>7.2f}" + (f"  ({result['note']})" if result.get("note") else ""))
    return rows


def _device_name(case: Case) -> str:
    if case.device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(case.device))
    threads = int(dict(case.extra).get("threads", 0)) or torch.get_num_threads()
    return f"cpu ({os.cpu_count()} cores; {threads} threads)"


# Room for the interpreter, torch, MKL and the inputs on top of the provider's own memory, in the worker's
# address-space limit (virtual memory: thread stacks and library mappings count too).
_AS_ALLOWANCE_GB = 8.0


def _worker(payload: str) -> int:
    """Subprocess entry: measure one CPU case and print the result as one JSON line."""
    import importlib

    args = json.loads(payload)
    limit = int((args["mem_limit_gb"] + _AS_ALLOWANCE_GB) * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    spec: OpSpec = importlib.import_module(args["module"]).SPEC
    case_args = args["case"]
    case_args["extra"] = tuple(tuple(kv) for kv in case_args["extra"])
    print(json.dumps(measure(spec, Case(**case_args))))
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
