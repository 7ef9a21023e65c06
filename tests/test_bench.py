"""The benchmark runner and CLI on tiny cases (correctness of the plumbing, never timings)."""

from __future__ import annotations

import csv
import importlib.util
import math
import re
import subprocess
from pathlib import Path

import pytest
import torch

from mkefast.bench import clip, cosine_rec, memory, soft_pu, supcon
from mkefast.bench.runner import (
    COLUMNS,
    Case,
    OpSpec,
    append_csv,
    measure,
    measure_in_subprocess,
    mode_callables,
    run_sweep,
)
from mkefast.cli import main

SPECS = {spec.name: spec for spec in (soft_pu.SPEC, supcon.SPEC, clip.SPEC, cosine_rec.SPEC)}


def _case(spec: OpSpec, provider: str, mode: str = "fwd+bwd", **kw) -> Case:
    fields = dict(op=spec.name, provider=provider, device="cpu", dtype="float32", B=16, d=8,
                  M=2 if spec.has_modalities else 1, mode=mode, repeats=3, warmup=1)
    return Case(**{**fields, **kw})


@pytest.mark.parametrize("spec,provider,mode", [
    (soft_pu.SPEC, "reference", "fwd"), (soft_pu.SPEC, "cpu", "bwd"), (cosine_rec.SPEC, "reference", "fwd+bwd"),
    (supcon.SPEC, supcon.PML, "fwd+bwd"), (supcon.SPEC, "cpu", "bwd"), (clip.SPEC, clip.DENSE, "fwd+bwd"),
    (clip.SPEC, "cpu", "fwd"),
], ids=lambda v: v if isinstance(v, str) else v.name)
def test_measure_in_process(spec, provider, mode):
    result = measure(spec, _case(spec, provider, mode))
    assert result["ms_p20"] <= result["ms_median"] <= result["ms_p80"]
    assert result["peak_mem_mb"] >= 0


def _loss_and_grads(spec: OpSpec, case: Case) -> list[torch.Tensor]:
    state = spec.prepare(case)
    value = spec.loss(case, state)()
    leaves = spec.leaves(state)
    grads = torch.autograd.grad(value, leaves, torch.tensor(0.7))
    return [value.detach(), *grads]


@pytest.mark.parametrize("op", sorted(SPECS))
def test_every_provider_computes_the_same_loss(op):
    """What a benchmark times is the same math for every provider (peers included): loss and gradients of
    every leaf (the clip benchmark's learnable log-scale too) equal the reference backend's."""
    spec = SPECS[op]
    want = _loss_and_grads(spec, _case(spec, "reference", B=24))
    # The compiled reference has its own test (compilation takes long); the Triton interpreter is tested in
    # tests/backends.
    providers = [p for p in spec.providers("cpu") if p not in ("reference", "reference_compiled", "triton")]
    assert "cpu" in providers and (op not in ("supcon", "clip") or providers[-1] in (supcon.PML, clip.DENSE))
    for provider in providers:
        got = _loss_and_grads(spec, _case(spec, provider, B=24))
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6, msg=lambda m, p=provider: f"{p}: {m}")


def test_compiled_reference_is_the_reference():
    spec = supcon.SPEC
    want = _loss_and_grads(spec, _case(spec, "reference", B=24))
    got = _loss_and_grads(spec, _case(spec, "reference_compiled", B=24))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-5, atol=2e-6)


def test_mode_callables_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode: expected one of"):
        mode_callables("sideways", lambda: torch.zeros(()), ())


@pytest.mark.skipif(not memory.supported(), reason="needs Linux's /proc/self/clear_refs")
def test_memory_of_a_subprocess_point_alone():
    """repeats=0: no times, only the peak of one call (after the warm-up) above the inputs, in a fresh process;
    supcon's reference holds a few B×B float32 matrices, so its peak is several MiB at B = 1024."""
    case = _case(supcon.SPEC, "reference", B=1024, d=16, repeats=0)
    result = measure_in_subprocess("mkefast.bench.supcon", case, mem_limit_gb=4.0, timeout_s=300)
    assert result["note"] == "" and math.isnan(result["ms_median"])
    assert 3 * 4 <= result["peak_mem_mb"] <= 64 * 4, result


@pytest.mark.skipif(not memory.supported(), reason="needs Linux's /proc/self/clear_refs")
def test_peak_extra_bytes_sees_one_allocation():
    memory.fix_malloc_thresholds()
    memory.peak_extra_bytes(lambda: torch.ones(2**20))  # warm the allocator up
    peak = memory.peak_extra_bytes(lambda: torch.ones(16 * 2**20))  # 64 MiB, freed at once
    assert 60 * 2**20 <= peak <= 72 * 2**20, peak / 2**20


def test_flops_count_gemm_equivalents():
    case = Case(op="soft_pu", provider="cpu", device="cpu", dtype="float32", B=10, d=4, M=3, mode="fwd+bwd")
    assert soft_pu.flops(case) == 4 * 2 * 10**2 * 4 * 3


def test_sweep_writes_rows_and_skips_predicted_oom(tmp_path):
    path = tmp_path / "r.csv"
    cases = [
        Case(op="soft_pu", provider="cpu", device="cpu", dtype="float32", B=32, d=8, M=1, mode="fwd", repeats=2),
        # Predicted ~52·B² bytes: far above the 1 GiB limit, so skipped with a NaN row, not run.
        Case(op="soft_pu", provider="reference", device="cpu", dtype="float32", B=1 << 16, d=8, M=1, mode="fwd+bwd"),
    ]
    lines: list[str] = []
    rows = run_sweep(soft_pu.SPEC, "mkefast.bench.soft_pu", cases, csv_path=path, mem_limit_gb=1.0,
                     log=lines.append)
    assert len(rows) == 2 and math.isfinite(rows[0]["ms_median"]) and math.isnan(rows[1]["ms_median"])
    assert any("skipped: predicted" in line for line in lines)
    with path.open() as f:
        read = list(csv.DictReader(f))
    assert tuple(read[0]) == COLUMNS and len(read) == 2
    assert read[0]["op"] == "soft_pu" and read[0]["backend"] == "cpu" and read[0]["B"] == "32"


def test_cli_runs_and_rejects_bad_arguments(tmp_path, capsys):
    path = tmp_path / "c.csv"
    assert main(["bench", "cosine_rec", "--backends", "cpu", "--B", "64", "--d", "4", "--M", "1", "--modes",
                 "fwd", "--repeats", "1", "--csv", str(path)]) == 0
    assert "cosine_rec" in path.read_text()
    assert main(["bench", "soft_pu", "--backends", "nope", "--B", "8"]) == 2
    assert main(["bench", "soft_pu", "--modes", "sideways", "--B", "8"]) == 2
    assert "--backends" in capsys.readouterr().err


@pytest.mark.parametrize("op,peer", [("supcon", supcon.PML), ("clip", clip.DENSE)])
def test_cli_benchmarks_the_drop_in_ops_against_their_peers(tmp_path, capsys, op, peer):
    path = tmp_path / f"{op}.csv"
    assert main(["bench", op, "--backends", f"cpu,{peer}", "--B", "32", "--d", "8", "--repeats", "1",
                 "--csv", str(path)]) == 0
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["op"], r["backend"], r["M"]) for r in rows] == [(op, "cpu", "1"), (op, peer, "1")]
    assert all(float(r["peak_mem_mb"]) >= 0 and float(r["ms_median"]) > 0 for r in rows)
    assert main(["bench", op, "--M", "2", "--B", "8"]) == 2
    assert capsys.readouterr().err.endswith(f"mkefast bench: error: --M: {op} has no modalities (M = 1), got 2\n")


@pytest.mark.parametrize("argv,message", [
    (["--labeled-frac", "1.5"], "--labeled-frac: expected a fraction in [0, 1], got 1.5"),
    (["--warmup", "-1"], "--warmup: expected a count >= 0, got -1"),
    (["--repeats", "-1"], "--repeats: expected a count >= 0 (0: peak memory only), got -1"),
    (["--classes", "0"], "--classes: expected a positive integer, got 0"),
    (["--mem-limit-gb", "inf"], "--mem-limit-gb: expected a positive finite number, got inf"),
    (["--timeout", "0"], "--timeout: expected a positive finite number, got 0.0"),
    (["--backends", ","], "--backends: expected a comma list of providers or 'all', got ','"),
    (["--device", "cuda:x"], "--device: expected cpu or cuda[:i], got 'cuda:x'"),
], ids=["labeled-frac", "warmup", "repeats", "classes", "mem-limit", "timeout", "backends", "device"])
def test_cli_validates_options(capsys, argv, message):
    assert main(["bench", "soft_pu", "--B", "8", *argv]) == 2
    assert capsys.readouterr().err == f"mkefast bench: error: {message}\n"


@pytest.mark.parametrize("value", ["0", "x", "1k,,2", "-8"])
def test_cli_rejects_bad_batch_sizes_as_argparse_does(capsys, value):
    with pytest.raises(SystemExit) as stop:
        main(["bench", "soft_pu", "--B", value])
    assert stop.value.code == 2
    assert "argument --B: expected" in capsys.readouterr().err


def test_rows_carry_the_provenance():
    import mkefast

    case = Case(op="cosine_rec", provider="reference", device="cpu", dtype="float32", B=8, d=4, M=1, mode="fwd",
                repeats=1)
    row = run_sweep(cosine_rec.SPEC, "mkefast.bench.cosine_rec", [case], log=lambda _line: None)[0]
    assert row["mkefast"] == mkefast.__version__
    assert row["git_sha"] == mkefast._build.git_sha()
    assert {"torch", "triton", "date"} <= set(row)


def test_append_csv_moves_an_old_file_to_the_new_columns(tmp_path):
    """A CSV written before the `mkefast` column existed keeps its rows, under a header that has it."""
    old_columns = [c for c in COLUMNS if c != "mkefast"]
    path = tmp_path / "old.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_columns)
        writer.writeheader()
        writer.writerow({c: f"old-{c}" for c in old_columns})
    append_csv(path, [{c: f"new-{c}" for c in COLUMNS}])
    with path.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == [*old_columns, "mkefast"]
    assert rows[0]["op"] == "old-op" and rows[0]["mkefast"] == ""
    assert rows[1]["op"] == "new-op" and rows[1]["mkefast"] == "new-mkefast"
    append_csv(path, [{c: "third" for c in COLUMNS}])  # the header now fits: a plain append
    with path.open() as f:
        assert [r["mkefast"] for r in csv.DictReader(f)] == ["", "new-mkefast", "third"]


def test_cli_repeats_0_measures_memory_only(tmp_path):
    path = tmp_path / "m.csv"
    assert main(["bench", "supcon", "--backends", "cpu", "--B", "64", "--d", "8", "--repeats", "0",
                 "--csv", str(path)]) == 0
    with path.open() as f:
        (row,) = list(csv.DictReader(f))
    assert math.isnan(float(row["ms_median"])) and float(row["peak_mem_mb"]) >= 0


def test_script_main_appends_to_the_op_csv_unless_told(tmp_path):
    from mkefast.bench.cli import script_main

    argv = ["--backends", "cpu", "--B", "16", "--d", "4", "--M", "1", "--modes", "fwd", "--repeats", "1"]
    assert script_main("cosine_rec", tmp_path, argv) == 0
    assert (tmp_path / "cosine_rec.csv").exists()
    other = tmp_path / "other.csv"
    assert script_main("cosine_rec", tmp_path / "unused", [*argv, "--csv", str(other)]) == 0
    assert other.exists() and not (tmp_path / "unused").exists()


def test_demo_kernels_section_puts_the_fused_loss_beside_the_reference(monkeypatch):
    """The demo's kernel section: one row per backend (time, peak MiB) and one figure panel drawing both."""
    # At a small B one default chunk (32 MiB) holds the whole [B, 2B] block, so the fused pass would hold as
    # much as the reference; a 0.25 MiB chunk (64 of the 512 rows) makes the difference structural.
    monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", "0.25")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mkefast.demo import DemoContext, kernels_section

    ctx = DemoContext()
    kernels_section(ctx, batch=512)
    assert [name for name, _, _ in ctx.kernels] == ["soft-PU fwd+bwd, cpu", "soft-PU fwd+bwd, reference"]
    assert all(seconds > 0 for _, seconds, _ in ctx.kernels)
    if memory.supported():
        # The reference holds several [2, 512, 512] float32 tensors (2 MiB each); the fused pass one 0.25 MiB
        # chunk besides the O(B·d) gradients.
        (_, _, fused), (_, _, dense) = ctx.kernels
        assert 0 <= fused < dense
    (title, draw), = ctx.panels
    assert "B = 512" in title
    fig, ax = plt.subplots()
    draw(ax)
    assert len(ax.patches) == 2
    plt.close(fig)


GPU_CHECK = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.sh"


def test_gpu_check_script_parses_and_its_budgets_fit_in_9_minutes():
    """Every part that benchmarks/gpu_check.sh runs has a budget, and the budgets, the kill grace and the
    unbudgeted steps add up to at most 540 s (the script checks this too, at its start)."""
    text = GPU_CHECK.read_text()
    subprocess.run(["bash", "-n", str(GPU_CHECK)], check=True)
    table = re.search(r"declare -A BUDGET=\((.*?)\)", text, flags=re.DOTALL)
    assert table is not None
    budget = {name: int(seconds) for name, seconds in re.findall(r"\[(\w+)\]=(\d+)", table.group(1))}
    totals = dict(re.findall(r"(TOTAL_S|KILL_S|UNBUDGETED_S)=(\d+)", text))
    total, kill, unbudgeted = (int(totals[k]) for k in ("TOTAL_S", "KILL_S", "UNBUDGETED_S"))
    assert sum(budget.values()) <= total - unbudgeted and total + kill <= 540
    parts = set(re.findall(r"run_part (\w+) ", text)) - {"NAME"}
    assert parts == set(budget), parts ^ set(budget)
    assert {"bench_supcon", "bench_clip"} <= parts


def test_gpu_check_recommends_the_crossover_from_the_largest_d_down():
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK.with_suffix(".py"))
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    times = {64: {"triton": 1.0, "cuda": 2.0}, 256: {"triton": 3.0, "cuda": 2.0}, 1024: {"triton": 9.0, "cuda": 5.0},
             4096: {"triton": math.nan, "cuda": 40.0}}
    assert gpu_check.recommend(times) == 256
    assert gpu_check.recommend({64: {"triton": 1.0, "cuda": 2.0}}) is None
