"""`mkefast kernels`: the ahead-of-time report of the GPU kernels (sm_90a / sm_80, no GPU needed).

The report compiles kernels for real, so it runs in a subprocess without `TRITON_INTERPRET` (the test session
imports the kernels interpreted). A cold Triton cache costs a few seconds per compiled configuration on two
cores; the cases here are the smallest that still show each property.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mkefast.kernels_report import MIN_SPILL_FREE, _split_name, check

pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

KEYS = {"kernel": str, "variant": str, "arch": str, "dtype": str, "d": int, "config": dict, "registers": int,
        "spill_bytes": int, "shared_bytes": int, "tensor_cores": bool, "tensor_core_op": str, "exp_per_tile": int,
        "exp_per_pair": float, "in_autotune_space": bool, "triton": str, "seconds": float}


def _kernels(args: list[str], *, interpret: bool = False) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, "-m", "mkefast.cli", "kernels", *args], env=env, capture_output=True,
                          text=True, timeout=1800)


def _records(args: list[str], tmp_path: Path) -> list[dict]:
    out = tmp_path / "report.json"
    done = _kernels([*args, "--json", str(out)])
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


def test_report_records(tmp_path):
    """One small case (the cosine forward at d = 64 for sm_90a, every configuration of its autotuner): each
    record has the documented keys and types, and the row kernel uses no tensor cores and no exp."""
    records = _records(["--arch", "90a", "--d", "64", "--dtype", "bf16", "--kernels", "_cosine_rec_fwd_kernel"],
                       tmp_path)
    assert len(records) == 10
    for r in records:
        assert {k: type(r[k]) for k in KEYS} == KEYS, r
        assert r["arch"] == "90a" and r["d"] == 64 and set(r["config"]) == {"BLOCK_R", "num_warps", "num_stages"}
        assert r["registers"] > 0 and r["shared_bytes"] >= 0
        assert not r["tensor_cores"] and r["exp_per_tile"] == 0
    assert any(r["in_autotune_space"] for r in records)


@pytest.mark.parametrize(("arch", "d", "kernel", "variant"), [
    ("90a", 256, "_soft_pu_bwd_rows_kernel", "phi+excl+grad_s+grad_t"),  # spilled at every tile before
    ("80", 64, "_soft_pu_bwd_atomic_kernel", "phi+excl+grad_t"),
], ids=lambda v: str(v))
def test_autotune_space_is_spill_free(tmp_path, arch, d, kernel, variant):
    """Every configuration the autotuner may pick compiles without spills, at least two of them, on the tensor
    cores; the pair kernels spend 4 exps per pair with phi weights (the denominator's, and the weight's three)."""
    records = _records(["--arch", arch, "--d", str(d), "--dtype", "bf16", "--kernels", kernel, "--variants", variant,
                        "--space", "autotune", "--check"], tmp_path)
    assert len(records) >= 2 and all(r["in_autotune_space"] for r in records)
    assert [r["spill_bytes"] for r in records] == [0] * len(records)
    assert all(r["tensor_cores"] for r in records)
    assert all(r["exp_per_pair"] == pytest.approx(4.0, abs=0.2) for r in records), records


@pytest.mark.parametrize(("kernel", "variant", "dtype", "arch", "d"), [
    ("_soft_pu_phi_ref_kernel", "excl", "fp32", "90a", 128),  # spilled under ptxas's own register cap
    ("_soft_pu_fwd_kernel", "none", "fp32", "90a", 128),  # the fp32 forward that needs the most registers
    ("_soft_pu_fwd_kernel", "none", "bf16", "80", 64),  # RBF off: spilled 128-144 B when it summed W
], ids=lambda v: str(v))
def test_lighter_variants_and_fp32_are_spill_free(tmp_path, kernel, variant, dtype, arch, d):
    """fp32 operands multiply on the FMA units, in configurations of their own that let ptxas use every register
    (maxnreg 255), and the RBF-off forward keeps no weight sums: spill-free, at least two configurations."""
    records = _records(["--arch", arch, "--d", str(d), "--dtype", dtype, "--kernels", kernel, "--variants", variant,
                        "--space", "autotune", "--check"], tmp_path)
    assert len(records) >= 2 and all(r["in_autotune_space"] for r in records)
    assert [r["spill_bytes"] for r in records] == [0] * len(records)
    fp32 = dtype == "fp32"
    assert all(r["tensor_cores"] != fp32 for r in records)
    assert all((r["config"].get("maxnreg") == 255) == fp32 for r in records)


@pytest.mark.parametrize("kernel", ["_soft_pu_phi_ref_kernel", "_soft_pu_fwd_kernel", "_soft_pu_bwd_rows_kernel",
                                    "_soft_pu_bwd_cols_kernel", "_soft_pu_bwd_atomic_kernel"])
def test_pruning_keeps_each_dtype_to_its_configurations(kernel):
    """On a GPU the autotuner times at least MIN_SPILL_FREE configurations at every d, the tensor-core ones for
    bf16/fp16 (tf32 precision) and the maxnreg ones for fp32 (ieee); under the interpreter (this session) it runs
    its one configuration whatever the dtype."""
    from mkefast.kernels.triton import soft_pu

    tuner = getattr(soft_pu, kernel)
    compiled = soft_pu._compiled_configs("atomic" if "atomic" in kernel else "bwd" if "bwd" in kernel else "fwd")
    for d in (16, 64, 128, 256, 1024):
        for precision, maxnreg in (("tf32", None), ("ieee", 255)):
            space = tuner.early_config_prune(compiled, {"D": d}, DOT_PRECISION=precision)
            assert len(space) >= MIN_SPILL_FREE, (d, precision)
            assert {c.maxnreg for c in space} == {maxnreg}, (d, precision)
            assert tuner.early_config_prune(tuner.configs, {"D": d}, DOT_PRECISION=precision) == tuner.configs


def test_check_flags_spills_and_thin_spaces():
    base = {"kernel": "k", "variant": "v", "arch": "90a", "dtype": "bf16", "d": 128,
            "config": {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 3}}
    spilling = {**base, "spill_bytes": 8, "in_autotune_space": True}
    free = {**base, "spill_bytes": 0, "in_autotune_space": True}
    pruned = {**base, "spill_bytes": 64, "in_autotune_space": False}
    assert check([free, free, pruned]) == []
    problems = check([free, spilling])
    assert len(problems) == 2 and "spills 8 B" in problems[0] and "1 spill-free" in problems[1]


def test_cuda_names_are_split():
    assert _split_name("void mkefast::cuda::(anonymous namespace)::soft_pu_fwd_kernel<float>(float const*, int)") \
        == ("soft_pu_fwd_kernel", "float")
    assert _split_name("void ns::cosine_rec_bwd_kernel<__half, true>(__half const*)") == \
        ("cosine_rec_bwd_kernel", "__half, true")


def test_cuda_report():
    """The built CUDA module's kernels, per target: no spills; a clear skip message without the module."""
    done = _kernels(["--cuda"])
    assert done.returncode == 0, done.stdout + done.stderr
    if "CUDA module skipped" in done.stdout:
        assert importlib.util.find_spec("mkefast._C_cuda") is None or "cuobjdump" in done.stdout
        pytest.skip(done.stdout.strip())
    assert "soft_pu_fwd " in done.stdout and "soft_pu_bwd " in done.stdout
    assert "spills" not in done.stdout, done.stdout


def test_interpreted_kernels_are_a_user_error():
    done = _kernels(["--d", "64", "--kernels", "_cosine_rec_fwd_kernel"], interpret=True)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "mkefast kernels: error: TRITON_INTERPRET is set: the kernels must be compiled, not interpreted; unset it"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["90a", "80"])
def test_every_kernel_variant_compiles(tmp_path, arch):
    """Every variant (RBF off / logit / phi, exclude_diagonal, each gradient choice, atomic) compiles for `arch`
    in every configuration of its autotuning space, bf16 with SINGLE_D on (d = 64) and off (d = 512). Tens of
    minutes per arch on two cores with a cold Triton cache."""
    from mkefast.kernels.triton import aot

    records = _records(["--arch", arch, "--d", "64,512", "--dtype", "bf16", "--space", "autotune"], tmp_path)
    assert {(r["kernel"], r["variant"], r["d"]) for r in records} == {
        (v.kernel, v.label, d) for d in (64, 512) for v in aot.variants(d, "bf16")}
