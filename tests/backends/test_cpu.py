"""The `cpu` backend beyond the cross-backend parity tests: its chunking, threads, row_offset, determinism.

The shared matrix (every label pattern, shape and dtype through the public API) is in test_parity.py. Here
the backend's host functions are called directly, with separate random upstream gradients for the labeled
and unlabeled parts, under chunk budgets that force one-row chunks and chunk counts that do not divide B.
"""

from __future__ import annotations

import math

import pytest
import torch

import mkefast
from mkefast._build import backend_unavailable_reason
from mkefast.backends import cpu, get_backend
from mkefast.backends._chunked import chunk_rows_for
from mkefast.ops._common import SoftPUOptions, SoftPUStats, make_targets
from tests.ops.test_soft_pu import make_batch

pytestmark = pytest.mark.skipif(backend_unavailable_reason("cpu") is not None,
                                reason=str(backend_unavailable_reason("cpu")))

reference = get_backend("reference")

# MiB budgets: one row per chunk; 7 rows of B = 257 in float64 (257 = 36·7 + 5 leaves a partial chunk).
# The default budget is exercised by test_parity.py.
ONE_ROW = 1e-6
FEW_ROWS = 7 * 257 * 8 / 2**20
OPTIONS = [
    SoftPUOptions(temperature=0.5, rbf_sigma=1.0, rbf_space="logit"),
    SoftPUOptions(temperature=0.5, rbf_sigma=math.inf, rbf_space="logit"),
    SoftPUOptions(temperature=1.0, rbf_sigma=2.0, rbf_space="phi"),
    SoftPUOptions(temperature=0.2, rbf_sigma=math.inf, rbf_space="phi"),
]
OPTION_IDS = ["logit-s1", "logit-inf", "phi-s2", "phi-inf"]


def _problem(b: int, d: int, m: int, pattern: str, dtype: torch.dtype, row_offset: int = 0, rows: int | None = None):
    fused, unimodal, labels, labeled, pseudo = make_batch(b, d, m, pattern, dtype=dtype, seed=b + 7 * d)
    fused = torch.nn.functional.normalize(fused, dim=-1)
    unimodal = torch.nn.functional.normalize(unimodal, dim=-1)
    targets = make_targets(labels, labeled, pseudo)._replace(row_offset=row_offset)
    rows = b - row_offset if rows is None else rows
    anchors = fused[row_offset:row_offset + rows].contiguous()
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    g = torch.Generator().manual_seed(5)
    grad_lb = torch.randn(m, rows, generator=g, dtype=torch.float64).to(acc)
    grad_ulb = torch.randn(m, rows, generator=g, dtype=torch.float64).to(acc)
    return anchors, unimodal, targets, grad_lb, grad_ulb


def _run(name: str, anchors, unimodal, targets, options, grad_lb, grad_ulb):
    impl = get_backend(name)
    stats = impl.soft_pu_fwd(anchors, unimodal, targets, options)
    grads = impl.soft_pu_bwd(anchors, unimodal, targets, options, stats, grad_lb, grad_ulb, True, True)
    return (*stats, *grads)


NAMES = (*SoftPUStats._fields, "grad_fused", "grad_unimodal")


def _assert_all_close(got, want, rtol: float, atol: float) -> None:
    for name, g, w in zip(NAMES, got, want, strict=True):
        torch.testing.assert_close(g.double(), w.double(), rtol=rtol, atol=atol, msg=lambda m, n=name: f"{n}: {m}")


def _matrix() -> list[object]:
    """shape × pattern × chunk budget (one-row chunks only where B is small: 257 of them cost seconds)."""
    params = []
    for shape in [(1, 3, 1), (7, 130, 3), (257, 3, 2)]:
        for pattern in ["all", "none", "some", "one_class", "pseudo", "pseudo_neg"]:
            for budget, name in ((ONE_ROW, "chunk1"), (FEW_ROWS, "chunk7")):
                if budget == ONE_ROW and shape[0] > 64:
                    continue
                case = "B{}-d{}-M{}".format(*shape)
                params.append(pytest.param(shape, pattern, budget, id=f"{case}-{pattern}-{name}"))
    return params


@pytest.mark.parametrize("options", OPTIONS, ids=OPTION_IDS)
@pytest.mark.parametrize("shape,pattern,budget", _matrix())
def test_float64_matches_reference(monkeypatch, shape, pattern, budget, options):
    monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", str(budget))
    args = _problem(*shape, pattern, torch.float64)
    got = _run("cpu", *args[:3], options, *args[3:])
    want = _run("reference", *args[:3], options, *args[3:])
    _assert_all_close(got, want, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("options", OPTIONS[:1] + OPTIONS[2:3], ids=["logit", "phi"])
@pytest.mark.parametrize("row_offset,rows", [(0, 5), (4, 9), (12, 1), (200, 57)])
def test_row_offset_matches_reference(monkeypatch, row_offset, rows, options):
    """Anchors `row_offset:row_offset + rows` of the candidates, chunked in 3-row chunks."""
    monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", str(3 * 257 * 8 / 2**20))
    args = _problem(257, 6, 2, "pseudo_neg", torch.float64, row_offset=row_offset, rows=rows)
    got = _run("cpu", *args[:3], options, *args[3:])
    want = _run("reference", *args[:3], options, *args[3:])
    _assert_all_close(got, want, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("options", OPTIONS[:1] + OPTIONS[2:3], ids=["logit", "phi"])
@pytest.mark.parametrize("pattern", ["some", "pseudo_neg"])
def test_float32_error_no_worse_than_reference(pattern, options):
    """STYLE.md rule: the float32 error against the float64 truth is within the reference's own + margin."""
    args64 = _problem(257, 130, 2, pattern, torch.float64)
    truth = _run("reference", *args64[:3], options, *args64[3:])
    args32 = (args64[0].float(), args64[1].float(), args64[2], args64[3].float(), args64[4].float())
    got = _run("cpu", *args32[:3], options, *args32[3:])
    ref = _run("reference", *args32[:3], options, *args32[3:])
    for name, g, r, t in zip(NAMES, got, ref, truth, strict=True):
        assert g.dtype == torch.float32, name
        scale = max(1.0, t.abs().max().item())
        err, allowed = (g.double() - t).abs().max().item(), (r.double() - t).abs().max().item() + 2e-5 * scale
        assert err <= allowed, f"{name}: error {err:.3g} > allowed {allowed:.3g}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_is_computed_in_float32(dtype):
    """bfloat16 / float16 inputs give exactly the float32 results of the same (rounded) values."""
    anchors, unimodal, targets, grad_lb, grad_ulb = _problem(33, 16, 2, "pseudo", dtype)
    got = _run("cpu", anchors, unimodal, targets, OPTIONS[0], grad_lb, grad_ulb)
    want = _run("cpu", anchors.float(), unimodal.float(), targets, OPTIONS[0], grad_lb, grad_ulb)
    for name, g, w in zip(NAMES, got, want, strict=True):
        assert g.dtype == torch.float32 and torch.equal(g, w), name
    s, z = anchors.clone().requires_grad_(), unimodal.clone().requires_grad_()
    loss = mkefast.soft_pu_loss(s, z, *make_batch(33, 16, 2, "pseudo")[2:], backend="cpu")
    loss.backward()
    assert loss.dtype == dtype and s.grad.dtype == dtype and z.grad.dtype == dtype


def _with_threads(n: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_results_do_not_depend_on_threads_or_runs(dtype):
    """Bitwise: one thread, two threads, and a repeated run. B = 600 gives the kernels work for 2 threads."""
    args = _problem(600, 64, 2, "pseudo", dtype)
    options = OPTIONS[0]

    def run():
        return _run("cpu", *args[:3], options, *args[3:])

    one, two, again = _with_threads(1, run), _with_threads(2, run), _with_threads(2, run)
    for name, a, b, c in zip(NAMES, one, two, again, strict=True):
        assert torch.equal(a, b), f"{name} differs between 1 and 2 threads"
        assert torch.equal(b, c), f"{name} differs between two runs"


def test_chunking_changes_nothing_but_rounding(monkeypatch):
    """3-row chunks (86 of them, the last one of 2 rows) against one chunk of all 257 rows."""
    args = _problem(257, 32, 2, "pseudo_neg", torch.float32)
    monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", str(3 * 257 * 4 / 2**20))
    small = _run("cpu", *args[:3], OPTIONS[2], *args[3:])
    monkeypatch.delenv("MKEFAST_CPU_CHUNK_MB")
    whole = _run("cpu", *args[:3], OPTIONS[2], *args[3:])
    _assert_all_close(small, whole, rtol=1e-5, atol=1e-6)


def test_nan_in_gives_nan_out():
    anchors, unimodal, targets, grad_lb, grad_ulb = _problem(9, 4, 2, "pseudo", torch.float32)
    anchors[3, 0] = float("nan")
    lb, ulb, lse, _, _, grad_s, grad_z = _run("cpu", anchors, unimodal, targets, OPTIONS[0], grad_lb, grad_ulb)
    assert torch.isnan(lse[:, 3]).all() and torch.isnan(lb[:, 3] + ulb[:, 3]).all()
    assert torch.isfinite(lse[:, :3]).all()
    assert torch.isnan(grad_s[3]).all() and torch.isnan(grad_z).any()


def test_chunk_rows_budget(monkeypatch):
    assert chunk_rows_for(1000, 1024, torch.float32, 1.0) == 256
    assert chunk_rows_for(10, 1024, torch.float32, 1.0) == 10
    assert chunk_rows_for(1000, 1024, torch.float64, ONE_ROW) == 1
    monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", "2")
    assert cpu.chunk_rows(10_000, 1024, torch.bfloat16) == 512  # bfloat16 runs in float32
    for bad in ("0", "-1", "lots"):
        monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", bad)
        with pytest.raises(ValueError, match="MKEFAST_CPU_CHUNK_MB"):
            cpu.chunk_rows(10, 10, torch.float32)
    with pytest.raises(ValueError, match="budget_mb"):
        chunk_rows_for(10, 10, torch.float32, 0.0)


def test_auto_picks_cpu_for_soft_pu():
    from mkefast.backends import resolve_backend

    assert resolve_backend("auto", "soft_pu", torch.device("cpu"), torch.float32) in ("cpu",)


# ---------------------------------------------------------------- cosine reconstruction


def _cosine_case(n: int, d: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(n * 3 + d)
    a = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = a * 0.3 + torch.randn(n, d, generator=g, dtype=torch.float64)
    a[0] = 0.0  # a zero row: the 1e-8 clamp of the denominator
    return a.to(dtype), b.to(dtype), torch.randn(n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("n,d", [(1, 1), (7, 130), (257, 3), (64, 1024)])
def test_cosine_float64_matches_reference(n, d):
    a, b, g = _cosine_case(n, d, torch.float64)
    torch.testing.assert_close(cpu.cosine_rec_fwd(a, b), reference.cosine_rec_fwd(a, b), rtol=1e-12, atol=1e-12)
    for needs in ((True, True), (True, False), (False, True)):
        got = cpu.cosine_rec_bwd(a, b, g, *needs)
        want = reference.cosine_rec_bwd(a, b, g, *needs)
        for x, y in zip(got, want, strict=True):
            assert (x is None) == (y is None)
            if x is not None:
                torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_cosine_float32_error_no_worse_than_reference():
    a, b, g = _cosine_case(512, 1024, torch.float32)
    truth = reference.cosine_rec_fwd(a.double(), b.double())
    truth_grads = reference.cosine_rec_bwd(a.double(), b.double(), g, True, True)
    got, ref = cpu.cosine_rec_fwd(a, b), reference.cosine_rec_fwd(a, b)
    assert (got.double() - truth).abs().max() <= (ref.double() - truth).abs().max() + 1e-6
    got_grads = cpu.cosine_rec_bwd(a, b, g.float(), True, True)
    ref_grads = reference.cosine_rec_bwd(a, b, g.float(), True, True)
    for x, r, t in zip(got_grads, ref_grads, truth_grads, strict=True):
        assert (x.double() - t).abs().max() <= (r.double() - t).abs().max() + 1e-6


def test_cosine_threads_and_nan():
    a, b, g = _cosine_case(3000, 40, torch.float32)
    one = _with_threads(1, lambda: (cpu.cosine_rec_fwd(a, b), *cpu.cosine_rec_bwd(a, b, g.float(), True, True)))
    two = _with_threads(2, lambda: (cpu.cosine_rec_fwd(a, b), *cpu.cosine_rec_bwd(a, b, g.float(), True, True)))
    for x, y in zip(one, two, strict=True):
        assert torch.equal(x, y)
    a[5, 2] = float("nan")
    assert torch.isnan(cpu.cosine_rec_fwd(a, b)[5]) and not torch.isnan(cpu.cosine_rec_fwd(a, b)[4])
