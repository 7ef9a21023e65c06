"""The `cpu` backend's instruction-set dispatch and its fused forward + gradient (`soft_pu_fwd_grad`).

Dispatch: the module is built with one variant of the soft-PU kernels per instruction set and picks one at
import (MKEFAST_CPU_ISA overrides the choice), so each variant runs in a fresh interpreter: every variant this
processor supports must match the float64 truth as the default one does, and agree with the others; a bad
MKEFAST_CPU_ISA must leave the backend unavailable with a reason that names the variable and the value.

`soft_pu_fwd_grad` (the forward that also forms the gradients of Σ (lb + ulb)) against the backend's own
forward followed by its backward with unit upstream gradients, and against the truth.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mkefast._build import backend_unavailable_reason, cpu_module
from mkefast.backends import cpu
from mkefast.ops._common import SoftPUOptions
from tests.backends import _chunked_checks as checks
from tests.backends._chunked_checks import FIELDS, OPTIONS, Shape, outputs, problem_for, run

pytestmark = pytest.mark.skipif(backend_unavailable_reason("cpu") is not None,
                                reason=str(backend_unavailable_reason("cpu")))

ROOT = Path(__file__).resolve().parents[2]

# Computes the outputs of a few problems with the variant MKEFAST_CPU_ISA names and saves them (argv[1]).
_RUN_VARIANT = """
import sys
import torch
from mkefast._build import cpu_module
from tests.backends import test_cpu_isa as t
torch.save({"isa": cpu_module().build_info()["isa"], "outputs": t.variant_outputs()}, sys.argv[1])
"""

# B = 600 rows of 130 features: long enough rows for every vector width and its remainder loop.
_CASES = [
    (Shape(600, 700, 2, 130), "pseudo", dataclasses.replace(OPTIONS["phi-s2"], exclude_diagonal=True)),
    (Shape(257, 257, 1, 3), "all", OPTIONS["logit-s1"]),
    (Shape(64, 80, 2, 16, diag_offset=3), "some", OPTIONS["logit-inf"]),
]


def _info() -> dict[str, object]:
    lib = cpu_module()
    assert lib is not None
    return dict(lib.build_info())


def variant_outputs() -> list[list[list[torch.Tensor]]]:
    """[case][float64, float32] outputs of the backend as imported (the variant of this interpreter)."""
    result = []
    for shape, labels, options in _CASES:
        per_dtype = []
        for dtype in (torch.float64, torch.float32):
            problem = problem_for(shape, labels, options, dtype=dtype, seed=shape.b_a)
            per_dtype.append(outputs(*run("cpu", problem, options, *checks.upstream(problem))))
        result.append(per_dtype)
    return result


def _in_fresh_interpreter(isa: str, code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MKEFAST_CPU_ISA": isa, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=900)


def test_build_info_reports_the_choice():
    info = _info()
    built, supported = list(info["isas_built"]), list(info["isas_supported"])
    assert supported and set(supported) <= set(built)
    assert built[0] == supported[0]  # the baseline runs everywhere
    assert info["isa"] in supported
    if os.environ.get("MKEFAST_CPU_ISA", "auto") == "auto":
        assert info["isa"] == supported[-1]  # the widest


def test_every_supported_variant_matches_the_truth_and_the_others(tmp_path):
    """float64 to 1e-10 of the truth and float32 no worse than the reference, for each variant in its own
    interpreter; the variants agree with each other to the float32 rounding of their dense sums."""
    got = {}
    for isa in _info()["isas_supported"]:
        out = tmp_path / f"{isa}.pt"
        proc = _in_fresh_interpreter(isa, _RUN_VARIANT, str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        saved = torch.load(out)
        assert saved["isa"] == isa
        got[isa] = saved["outputs"]
    for i, (shape, labels, options) in enumerate(_CASES):
        p64 = problem_for(shape, labels, options, dtype=torch.float64, seed=shape.b_a)
        p32 = problem_for(shape, labels, options, dtype=torch.float32, seed=shape.b_a)
        want64 = checks.truth(p64, options, *checks.upstream(p64))
        want32 = checks.truth(p32, options, *checks.upstream(p32))
        ref32 = checks.reference_in_dtype(p32, options, *checks.upstream(p32))
        first = next(iter(got.values()))
        for isa, outs in got.items():
            checks.assert_matches_float64(outs[i][0], want64)
            checks.assert_no_worse_than_reference(outs[i][1], ref32, want32)
            for name, a, b in zip(FIELDS, outs[i][1], first[i][1], strict=True):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6,
                                           msg=lambda m, n=name, v=isa, c=i: f"case {c}, {v}, {n}: {m}")


_REASON = "from mkefast._build import backend_unavailable_reason as r; print(r('cpu'))"


@pytest.mark.parametrize("bad", ["avx9", "AVX2", "sse4"], ids=str)
def test_unknown_isa_is_a_clear_error(bad):
    proc = _in_fresh_interpreter(bad, _REASON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "MKEFAST_CPU_ISA: expected 'auto' or one of" in proc.stdout
    assert f"got '{bad}'" in proc.stdout and "no such instruction set" in proc.stdout


def test_forcing_an_unsupported_isa_is_a_clear_error():
    info = _info()
    missing = [v for v in info["isas_built"] if v not in info["isas_supported"]]
    if not missing:
        pytest.skip("this processor runs every variant of this build")
    proc = _in_fresh_interpreter(missing[-1], _REASON)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"got '{missing[-1]}': this processor does not support it" in proc.stdout


# ---------------------------------------------------------------- fused forward + gradient


def _fwd_grad(problem, options, needs=(True, True, True)):
    stats, grads = cpu.soft_pu_fwd_grad(problem.anchors, problem.candidates, problem.targets, options, *needs)
    return outputs(stats, grads)


def _unit_upstream(problem):
    shape = (problem.candidates.shape[0], problem.anchors.shape[0])
    return torch.ones(shape, dtype=torch.float64), torch.ones(shape, dtype=torch.float64)


@pytest.mark.parametrize("shape,labels,options", [
    pytest.param(shape, labels, dataclasses.replace(OPTIONS[name], exclude_diagonal=excl),
                 id=f"{shape}-{labels}-{name}-{'excl' if excl else 'keep'}")
    for shape in (Shape(1, 1, 1, 3), Shape(7, 7, 2, 130), Shape(9, 4, 2, 3), Shape(6, 15, 2, 5, diag_offset=4))
    for labels in ("all", "none", "pseudo")
    for name in ("logit-s1", "phi-s2", "logit-inf", "phi-s1e-20")
    for excl in (False, True)
])
def test_fwd_grad_equals_fwd_then_bwd_float64(monkeypatch, shape, labels, options):
    monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", repr(3 * shape.b_c * shape.m * 8 / 2**20))  # 3-row chunks
    problem = problem_for(shape, labels, options, seed=shape.b_a + shape.d)
    ones = _unit_upstream(problem)
    fused = _fwd_grad(problem, options)
    checks.assert_matches_float64(fused, outputs(*run("cpu", problem, options, *ones)))
    checks.assert_matches_float64(fused, checks.truth(problem, options, *ones))


@pytest.mark.parametrize("options", [OPTIONS["phi-s2"], OPTIONS["logit-s1"],
                                     SoftPUOptions(temperature=0.05, rbf_sigma=1.0, rbf_space="phi")],
                         ids=["phi-s2", "logit-s1", "phi-tau0.05"])
def test_fwd_grad_float32_no_worse_than_reference(options):
    problem = problem_for(Shape(257, 300, 2, 33), "pseudo", options, dtype=torch.float32, close=0.01, seed=3)
    ones = _unit_upstream(problem)
    ref = checks.reference_in_dtype(problem, options, *ones)
    checks.assert_no_worse_than_reference(_fwd_grad(problem, options), ref, checks.truth(problem, options, *ones))


@pytest.mark.parametrize("needs", checks.NEEDS)
def test_fwd_grad_forms_only_what_is_asked(needs):
    options = OPTIONS["logit-s1"]
    problem = problem_for(Shape(7, 9, 2, 5), "some", options)
    _, grads = cpu.soft_pu_fwd_grad(problem.anchors, problem.candidates, problem.targets, options, *needs)
    assert [g is not None for g in grads] == list(needs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_fwd_grad_does_not_depend_on_threads(dtype):
    options = SoftPUOptions(temperature=0.4, rbf_sigma=2.0, rbf_space="phi", exclude_diagonal=True)
    problem = problem_for(Shape(600, 700, 2, 64), "pseudo", options, dtype=dtype)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _fwd_grad(problem, options)
        torch.set_num_threads(2)
        two = _fwd_grad(problem, options)
    finally:
        torch.set_num_threads(before)
    for name, a, b in zip(FIELDS, one, two, strict=True):
        assert torch.equal(a, b), f"{name} differs between 1 and 2 threads"
