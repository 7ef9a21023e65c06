"""The benchmark suite under pytest-benchmark: every op × provider × batch size of `mkefast.bench`.

    pytest benchmarks/ --benchmark-only -m smoke        # one small point per op and provider family (< 1 min)
    pytest benchmarks/ --benchmark-only                 # every point (minutes: the references are B²)
    pytest benchmarks/ --benchmark-only --benchmark-autosave            # keep a run under .benchmarks/
    pytest benchmarks/ --benchmark-only --benchmark-compare --benchmark-compare-fail=median:25%

pytest-benchmark times the calls (in this process, after a warm-up round that compiles what needs it);
`extra_info` adds what it cannot measure: the peak memory of one call above the inputs, measured by the
shared runner in a fresh subprocess per point (`mkefast.bench.runner.measure_in_subprocess`), and the
TFLOP/s and GB/s of the median time (the same counts as the CSV rows of `mkefast bench`).

On the CPU the memory subprocesses of every selected point run first, one per core at a time, before any
timing starts: each spends most of its time importing torch, and a process's peak resident size does not
depend on what runs beside it, while a timing does.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from mkefast.bench import clip, cosine_rec, soft_pu, supcon
from mkefast.bench.runner import Case, OpSpec, measure_in_subprocess, mode_callables

SPECS: dict[str, tuple[OpSpec, str]] = {spec.name: (spec, f"mkefast.bench.{module}") for spec, module in (
    (soft_pu.SPEC, "soft_pu"), (supcon.SPEC, "supcon"), (clip.SPEC, "clip"), (cosine_rec.SPEC, "cosine_rec"))}

# (op, d, M, smoke B, the providers of the smoke point, the full run's B). The smoke points leave out
# `reference_compiled` (tens of seconds of compilation on 2 cores) and run the fused `cpu` backend beside the
# baseline a user would otherwise run.
POINTS = (
    ("soft_pu", 128, 2, 512, ("cpu", "reference"), 8192),
    ("supcon", 128, 1, 512, ("cpu", supcon.PML), 4096),
    ("clip", 512, 1, 512, ("cpu", clip.DENSE), 8192),
    ("cosine_rec", 128, 2, 8192, ("cpu", "reference"), 262144),
)
ALL_PROVIDERS = ("cpu", "cuda", "triton", "reference", "reference_compiled", supcon.PML, clip.DENSE)
SMOKE_ROUNDS, ROUNDS = 2, 3


def _params() -> list[Any]:
    params = []
    for op, d, m, smoke_b, smoke_providers, full_b in POINTS:
        for provider in ALL_PROVIDERS:
            if provider in smoke_providers:
                params.append(pytest.param(op, provider, smoke_b, d, m, SMOKE_ROUNDS, marks=pytest.mark.smoke,
                                           id=f"{op}-{provider}-B{smoke_b}"))
            params.append(pytest.param(op, provider, full_b, d, m, ROUNDS, id=f"{op}-{provider}-B{full_b}"))
    return params


def _case(op: str, provider: str, B: int, d: int, M: int, device: str) -> Case:
    return Case(op=op, provider=provider, device=device, dtype="float32", B=B, d=d, M=M, mode="fwd+bwd",
                repeats=0, warmup=1)


def _skip_reason(case: Case, mem_limit_gb: float) -> str | None:
    """Why the point cannot run here (None: it can)."""
    spec = SPECS[case.op][0]
    if case.provider not in spec.providers(case.device):
        return f"{case.provider} does not run {case.op} on {case.device} here"
    predicted = spec.predicted_bytes(case)
    if predicted > mem_limit_gb * 2**30:
        return f"{case.provider} is predicted to need {predicted / 2**30:.1f} GiB > --bench-mem-limit-gb"
    return None


@pytest.fixture(scope="session")
def cpu_memory(request: pytest.FixtureRequest, bench_device: str, bench_mem_limit_gb: float) -> dict[Case, Any]:
    """The peak memory (`measure_in_subprocess`'s result) of every selected CPU point that can run, measured
    before the first timing, `os.cpu_count()` subprocesses at a time."""
    if bench_device != "cpu":
        return {}
    cases = []
    for item in request.session.items:
        params = getattr(item, "callspec", None)
        if params is None or "provider" not in params.params:
            continue
        p = params.params
        case = _case(p["op"], p["provider"], p["B"], p["d"], p["M"], bench_device)
        if _skip_reason(case, bench_mem_limit_gb) is None:
            cases.append(case)
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        results = pool.map(lambda c: measure_in_subprocess(SPECS[c.op][1], c, bench_mem_limit_gb), cases)
        return dict(zip(cases, results, strict=True))


@pytest.mark.parametrize("op,provider,B,d,M,rounds", _params())
def test_benchmark(benchmark: Any, bench_device: str, bench_mem_limit_gb: float, cpu_memory: dict[Case, Any],
                   op: str, provider: str, B: int, d: int, M: int, rounds: int) -> None:
    spec = SPECS[op][0]
    case = _case(op, provider, B, d, M, bench_device)
    reason = _skip_reason(case, bench_mem_limit_gb)
    if reason is not None:
        pytest.skip(reason)
    benchmark.group = f"{op} B={B} d={d} M={M}"
    if bench_device == "cpu":
        memory = cpu_memory[case]
    else:
        from mkefast.bench.runner import measure

        memory = measure(spec, case)
    state = spec.prepare(case)
    setup, call = mode_callables(case.mode, spec.loss(case, state), spec.leaves(state))
    sync = _synchronizer(bench_device)

    def timed() -> None:
        call()
        sync()

    benchmark.pedantic(timed, setup=setup, rounds=rounds, warmup_rounds=1, iterations=1)
    seconds = benchmark.stats.stats.median if benchmark.stats is not None else math.nan
    benchmark.extra_info.update({
        "peak_mem_mb": memory["peak_mem_mb"],
        "tflops": spec.flops(case) / seconds / 1e12,
        "gbps": spec.io_bytes(case) / seconds / 1e9,
        "memory_note": memory["note"],
    })
    assert memory["note"] == "", memory["note"]


def _synchronizer(device: str) -> Any:
    if device.startswith("cuda"):
        import torch

        return torch.cuda.synchronize
    return lambda: None
