"""The benchmark runner and CLI on tiny cases (correctness of the plumbing, never timings)."""

from __future__ import annotations

import csv
import math

import pytest

from mkefast.bench import cosine_rec, soft_pu
from mkefast.bench.runner import COLUMNS, Case, measure, run_sweep
from mkefast.cli import main


@pytest.mark.parametrize("spec,mode", [(soft_pu.SPEC, "fwd"), (soft_pu.SPEC, "bwd"), (cosine_rec.SPEC, "fwd+bwd")],
                         ids=["soft_pu-fwd", "soft_pu-bwd", "cosine_rec-fwd+bwd"])
def test_measure_in_process(spec, mode):
    case = Case(op=spec.name, provider="reference", device="cpu", dtype="float32", B=16, d=8, M=2, mode=mode,
                repeats=3, warmup=1)
    result = measure(spec, case)
    assert result["ms_p20"] <= result["ms_median"] <= result["ms_p80"]
    assert result["peak_mem_mb"] >= 0


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
