"""The benchmark suite under pytest-benchmark: every op × provider × batch size of `mkefast.bench`.

    pytest benchmarks/ --benchmark-only -m smoke        # one small point per op and provider family (< 1 min)
    pytest benchmarks/ --benchmark-only                 # every point (minutes: the references are B²)
    pytest benchmarks/ --benchmark-only --benchmark-autosave            # keep a run under .benchmarks/
    pytest benchmarks/ --benchmark-only --benchmark-compare --benchmark-compare-fail=median:25%

pytest-benchmark times the calls (in this process, after a warm-up round that compiles what needs it);
`extra_info` adds what it cannot measure: the peak memory of one call above the inputs, measured by the
shared runner in a fresh subprocess (`mkefast.bench.runner.measure_in_subprocess`), and the TFLOP/s and
GB/s of the median time (the same counts as the CSV rows of `mkefast bench`).
"""

from __future__ import annotations

import math
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


@pytest.mark.parametrize("op,provider,B,d,M,rounds", _params())
def test_benchmark(benchmark: Any, bench_device: str, bench_mem_limit_gb: float, op: str, provider: str, B: int,
                   d: int, M: int, rounds: int) -> None:
    spec, module = SPECS[op]
    if provider not in spec.providers(bench_device):
        pytest.skip(f"{provider} does not run {op} on {bench_device} here")
    case = Case(op=op, provider=provider, device=bench_device, dtype="float32", B=B, d=d, M=M, mode="fwd+bwd",
                repeats=0, warmup=1)
    predicted = spec.predicted_bytes(case)
    if predicted > bench_mem_limit_gb * 2**30:
        pytest.skip(f"{provider} is predicted to need {predicted / 2**30:.1f} GiB > --bench-mem-limit-gb")
    benchmark.group = f"{op} B={B} d={d} M={M}"
    if bench_device == "cpu":
        memory = measure_in_subprocess(module, case, bench_mem_limit_gb)
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
