"""The `cpu` backend's host functions against the float64 truth, and what is specific to it: chunking, threads,
its environment variable, its keyword-only bindings.

Soft-PU: every statistic and every gradient (anchors, candidates, τ) is compared with
`tests.backends._harness.reference_fwd_bwd`, with random upstream gradients, under chunk budgets that cut
the anchors into several chunks (the last one short). Cosine reconstruction: against the reference backend
differentiated by autograd, in float64, in float32 (no worse than the reference), and at extreme scales.
The checks themselves are in `tests.backends._chunked_checks`, shared with the `cuda` backend's tests.
"""

from __future__ import annotations

import math

import pytest
import torch

from mkefast._build import backend_unavailable_reason, cpu_module
from mkefast.backends import cpu, resolve_backend
from mkefast.backends._chunked import chunk_rows_for, kernel_targets, soft_pu_params
from mkefast.ops._common import SoftPUOptions
from tests.backends import _chunked_checks as checks
from tests.backends._chunked_checks import FIELDS, OPTIONS, Shape, outputs, problem_for, run, upstream

pytestmark = pytest.mark.skipif(backend_unavailable_reason("cpu") is not None,
                                reason=str(backend_unavailable_reason("cpu")))


def _chunk_of(monkeypatch: pytest.MonkeyPatch, rows: int, b_c: int, dtype: torch.dtype) -> None:
    """A chunk budget of `rows` anchor rows of `b_c` candidates."""
    monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", repr(rows * b_c * torch.empty((), dtype=dtype).element_size() / 2**20))


# ---------------------------------------------------------------- soft-PU


@pytest.mark.parametrize("shape,labels,options", checks.float64_matrix())
def test_float64_matches_truth(monkeypatch, shape, labels, options):
    # 3-row chunks; 100-row ones for B_a = 257 (3 chunks, the last one short: every chunk costs a few small
    # GEMMs, slow on a busy machine).
    _chunk_of(monkeypatch, 3 if shape.b_a < 100 else 100, shape.b_c, torch.float64)
    checks.check_float64("cpu", "cpu", shape, labels, options)


@pytest.mark.parametrize("shape,labels,options,close", checks.F32_CASES)
def test_float32_no_worse_than_reference(shape, labels, options, close):
    checks.check_float32("cpu", "cpu", shape, labels, options, close)


@pytest.mark.parametrize("labels", ["pseudo", "none"])
def test_float32_backward_of_huge_logits_no_worse_than_reference(labels):
    """The backward with random upstream gradients (it recomputes each row's softmax from the stored lse) at
    logits up to ~10⁴, where one unit in the last place of ℓ is 10⁻³: its softmax must come from ℓ rounded as
    the forward rounded it (a product contracted into ℓ − lse gives p ≈ 1.001 for a row's dominant pair)."""
    options = SoftPUOptions(temperature=5e-5, rbf_sigma=2.0, rbf_space="phi")
    problem = problem_for(Shape(65, 80, 2, 33), labels, options, dtype=torch.float32, seed=7)
    grads = upstream(problem)
    want = checks.truth(problem, options, *grads)
    assert float(want[FIELDS.index("lse")].abs().max()) > 5e3  # the logits are as large as intended
    checks.assert_no_worse_than_reference(outputs(*run("cpu", problem, options, *grads)),
                                          checks.reference_in_dtype(problem, options, *grads), want)


@pytest.mark.parametrize("tau", [0.05, 0.03])
def test_phi_gradient_of_close_anchors_is_exact(tau):
    checks.check_phi_gradient_of_close_anchors("cpu", "cpu", tau)


@pytest.mark.parametrize("needs", checks.NEEDS)
def test_only_the_gradients_asked_for(needs):
    checks.check_needs("cpu", "cpu", needs)


def test_empty_denominator_rows():
    checks.check_empty_denominator("cpu", "cpu")


def test_nan_in_gives_nan_out():
    checks.check_nan_in_gives_nan_out("cpu", "cpu")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_inputs_are_computed_in_float32(dtype):
    checks.check_low_precision("cpu", "cpu", dtype, rtol=0.0)


def _with_threads(n: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_results_do_not_depend_on_threads_or_runs(dtype):
    """Bitwise: one thread, two threads, and a repeated run. B = 600 gives the kernels work for 2 threads."""
    options = SoftPUOptions(temperature=0.4, rbf_sigma=2.0, rbf_space="phi", exclude_diagonal=True)
    problem = problem_for(Shape(600, 700, 2, 64), "pseudo", options, dtype=dtype)
    grad_lb, grad_ulb = upstream(problem)

    def go():
        return outputs(*run("cpu", problem, options, grad_lb, grad_ulb))

    one, two, again = _with_threads(1, go), _with_threads(2, go), _with_threads(2, go)
    for name, a, b, c in zip(FIELDS, one, two, again, strict=True):
        assert torch.equal(a, b), f"{name} differs between 1 and 2 threads"
        assert torch.equal(b, c), f"{name} differs between two runs"


def test_chunking_changes_nothing_but_rounding(monkeypatch):
    """1-row chunks against one chunk of all rows (float32)."""
    options = SoftPUOptions(temperature=0.4, rbf_sigma=2.0, rbf_space="phi", exclude_diagonal=True)
    problem = problem_for(Shape(97, 120, 2, 32), "pseudo", options, dtype=torch.float32)
    grad_lb, grad_ulb = upstream(problem)
    _chunk_of(monkeypatch, 1, 120, torch.float32)
    small = outputs(*run("cpu", problem, options, grad_lb, grad_ulb))
    monkeypatch.delenv("MKEFAST_CPU_CHUNK_MB")
    whole = outputs(*run("cpu", problem, options, grad_lb, grad_ulb))
    for name, a, b in zip(FIELDS, small, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")


def test_chunk_rows_budget(monkeypatch):
    assert chunk_rows_for(1000, 1024, torch.float32, 1.0) == 256
    assert chunk_rows_for(10, 1024, torch.float32, 1.0) == 10
    assert chunk_rows_for(1000, 1024, torch.float64, 1e-6) == 1
    monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", "2")
    assert cpu.chunk_rows(10_000, 1024, torch.bfloat16) == 512  # bfloat16 runs in float32
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="budget_mb"):
            chunk_rows_for(10, 10, torch.float32, bad)


@pytest.mark.parametrize("bad", ["inf", "nan", "0", "-1", "abc", "-inf", "1e400"])
def test_chunk_budget_variable_must_be_a_positive_finite_number(monkeypatch, bad):
    monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", bad)
    with pytest.raises(ValueError, match=r"MKEFAST_CPU_CHUNK_MB: expected a positive finite number"):
        cpu.chunk_rows(10, 10, torch.float32)


def test_bindings_take_keywords_only_and_one_params_object():
    lib = cpu_module()
    options = SoftPUOptions(temperature=0.25, rbf_sigma=4.0, rbf_space="phi", exclude_diagonal=True)
    targets = kernel_targets(problem_for(Shape(4, 5, 1, 3), "some", options).targets)
    params = soft_pu_params(lib, targets, options)
    assert params.inv_tau == 4.0 and params.inv_sigma == 0.25 and params.log_sigma == math.log(4.0)
    assert params.rbf and params.phi and params.exclude_diagonal and params.diag_offset == 0
    assert not soft_pu_params(lib, targets, OPTIONS["logit-inf"]).rbf
    with pytest.raises(TypeError):
        lib.cosine_rec_fwd_f32(0, 0, 0, 0, 1, 1, 1, 1)  # positional: refused before any pointer is read
    with pytest.raises(TypeError):
        lib.SoftPUParams(0, 0, 0, 0, 0, 0, 0, False, 1.0, 1.0, 0.0, True, False)
    with pytest.raises(ValueError, match="inv_tau"):
        soft_pu_params(lib, targets, SoftPUOptions(temperature=math.inf))


def test_auto_picks_cpu_for_soft_pu():
    assert resolve_backend("auto", "soft_pu", torch.device("cpu"), torch.float32) == "cpu"


# ---------------------------------------------------------------- cosine reconstruction


@pytest.mark.parametrize("shape", [(1, 1), (7, 130), (257, 3), (64, 1024), (2, 5, 9)], ids=str)
def test_cosine_float64_matches_reference(shape):
    checks.check_cosine_float64("cpu", "cpu", shape)


def test_cosine_float32_no_worse_than_reference():
    checks.check_cosine_no_worse_than_reference("cpu", "cpu", (512, 1024), torch.float32, checks.F32_MARGIN)


@pytest.mark.parametrize("dtype,scale", checks.COSINE_SCALES)
def test_cosine_is_scale_free(dtype, scale):
    checks.check_cosine_scale_free("cpu", "cpu", dtype, scale)


def test_cosine_threads_and_nan():
    a, b, grad = checks.cosine_case((3000, 40), torch.float32)
    one = _with_threads(1, lambda: checks.cosine_run("cpu", a, b, grad))
    two = _with_threads(2, lambda: checks.cosine_run("cpu", a, b, grad))
    for x, y in zip(one, two, strict=True):
        assert torch.equal(x, y)
    a[5, 2] = math.nan
    rows, grad_a, grad_b = checks.cosine_run("cpu", a, b, grad)
    assert torch.isnan(rows[5]) and torch.isnan(grad_a[5]).all() and torch.isnan(grad_b[5]).all()
    assert torch.isfinite(rows[6:]).all() and torch.isfinite(grad_a[6:]).all()
