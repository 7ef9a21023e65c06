"""Triton-specific checks (the cross-backend parity matrix is in test_parity.py).

Here the host functions are called directly, so that every saved statistic (lse, r, a_ulb) is compared, the
anchors can be a slice of the candidates (row_offset), and both backward variants (deterministic and
atomic) run on the same forward. Errors follow the STYLE.md rule: against a float64 ground truth, no worse
than the reference backend's own error in the same dtype, plus a small margin. Without a GPU this runs under
the Triton interpreter, so the sizes are small; on a GPU some larger cases are added.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F

from mkefast._build import backend_unavailable_reason
from mkefast.backends import get_backend
from mkefast.ops._common import SoftPUOptions, SoftPUStats, make_targets
from tests.conftest import device_for, requires_gpu
from tests.ops.test_soft_pu import make_batch

pytestmark = pytest.mark.skipif(backend_unavailable_reason("triton") is not None,
                                reason=str(backend_unavailable_reason("triton")))

DEV = device_for("triton")
MARGIN = {torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


class Case(NamedTuple):
    b: int
    d: int
    m: int
    pattern: str
    space: str = "logit"
    sigma: float = 1.0
    row_offset: int = 0
    anchors: int | None = None  # B_a; None: all B samples

    def id(self) -> str:
        sliced = f"-rows{self.row_offset}+{self.anchors}" if self.anchors is not None else ""
        return f"B{self.b}-d{self.d}-M{self.m}-{self.pattern}-{self.space}-s{self.sigma}{sliced}"


CASES = [
    Case(1, 3, 1, "none", sigma=math.inf),
    Case(7, 130, 2, "pseudo_neg"),
    Case(33, 5, 3, "some", "phi", 2.0),
    Case(40, 3, 2, "all", sigma=0.5, row_offset=10, anchors=20),
    Case(24, 6, 1, "one_class", "phi", math.inf, row_offset=5, anchors=13),
    Case(20, 300, 2, "pseudo", "phi", 3.0),  # d above one feature block: the chunked loops
    Case(257, 3, 1, "pseudo_neg", sigma=0.7),
    pytest.param(Case(1031, 256, 2, "pseudo_neg"), marks=requires_gpu),
    pytest.param(Case(2048, 96, 3, "some", "phi", 2.0, row_offset=512, anchors=1024), marks=requires_gpu),
    pytest.param(Case(700, 1100, 1, "pseudo", "logit", 1.0), marks=requires_gpu),
]


def _inputs(case: Case, dtype: torch.dtype):
    fused, unimodal, labels, labeled, pseudo = make_batch(case.b, case.d, case.m, case.pattern, dtype=torch.float64,
                                                          seed=case.b * 7 + case.d)
    # Normalized in float64, then rounded: every dtype then sees the same (representable) inputs.
    fused = F.normalize(fused, dim=-1).to(dtype).to(DEV)
    unimodal = F.normalize(unimodal, dim=-1).to(dtype).to(DEV)
    targets = make_targets(labels.to(DEV), labeled.to(DEV), None if pseudo is None else pseudo.to(DEV))
    b_a = case.b if case.anchors is None else case.anchors
    targets = targets._replace(row_offset=case.row_offset)
    return fused[case.row_offset:case.row_offset + b_a].contiguous(), unimodal, targets


def _run(backend: str, fused, unimodal, targets, options, grad_lb, grad_ulb, *, atomic: bool = False):
    impl = get_backend(backend)
    stats = impl.soft_pu_fwd(fused, unimodal, targets, options)
    if backend == "triton":
        import mkefast.backends.triton as triton_backend

        previous, triton_backend.ATOMIC_BACKWARD = triton_backend.ATOMIC_BACKWARD, atomic
        try:
            grads = impl.soft_pu_bwd(fused, unimodal, targets, options, stats, grad_lb, grad_ulb, True, True)
        finally:
            triton_backend.ATOMIC_BACKWARD = previous
    else:
        grads = impl.soft_pu_bwd(fused, unimodal, targets, options, stats, grad_lb, grad_ulb, True, True)
    return stats, grads


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _scale(t: torch.Tensor) -> float:
    return max(1.0, t.double().abs().max().item())


def _assert_no_worse(name: str, got: torch.Tensor, ref: torch.Tensor, truth: torch.Tensor, dtype: torch.dtype) -> None:
    assert got.shape == truth.shape, name
    assert torch.isfinite(got).all(), name
    allowed = _err(ref, truth) + MARGIN[dtype] * _scale(truth)
    assert _err(got, truth) <= allowed, f"{name}: error {_err(got, truth):.3g} > allowed {allowed:.3g}"


def _check(case: Case, dtype: torch.dtype, atomic_too: bool) -> None:
    fused, unimodal, targets = _inputs(case, dtype)
    options = SoftPUOptions(temperature=0.2, rbf_sigma=case.sigma, rbf_space=case.space)
    shape = (case.m, fused.shape[0])
    grad_lb = torch.randn(shape, device=DEV)
    grad_ulb = torch.randn(shape, device=DEV)
    stats, grads = _run("triton", fused, unimodal, targets, options, grad_lb, grad_ulb)
    ref_stats, ref_grads = _run("reference", fused, unimodal, targets, options, grad_lb, grad_ulb)
    true_stats, true_grads = _run("reference", fused.double(), unimodal.double(), targets, options, grad_lb.double(),
                                  grad_ulb.double())
    for name in SoftPUStats._fields:
        got = getattr(stats, name)
        assert got.dtype == torch.float32, name
        _assert_no_worse(name, got, getattr(ref_stats, name), getattr(true_stats, name), dtype)
    for name, got, ref, truth in zip(("grad_fused", "grad_unimodal"), grads, ref_grads, true_grads, strict=True):
        _assert_no_worse(name, got, ref, truth, dtype)
    if atomic_too:
        _, atomic_grads = _run("triton", fused, unimodal, targets, options, grad_lb, grad_ulb, atomic=True)
        for name, got, ref, truth in zip(("grad_fused", "grad_unimodal"), atomic_grads, ref_grads, true_grads,
                                         strict=True):
            _assert_no_worse(f"atomic {name}", got, ref, truth, dtype)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id())
def test_soft_pu_fp32_stats_and_both_backwards(case):
    _check(case, torch.float32, atomic_too=True)


LOW_PRECISION_CASES = [
    Case(33, 20, 2, "pseudo_neg"),
    Case(16, 130, 1, "some", "phi", 3.0, row_offset=3, anchors=9),
    pytest.param(Case(1500, 256, 2, "pseudo_neg", sigma=math.inf), marks=requires_gpu),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", LOW_PRECISION_CASES, ids=lambda c: c.id())
def test_soft_pu_low_precision_no_worse_than_reference(case, dtype):
    _check(case, dtype, atomic_too=dtype == torch.bfloat16)


@pytest.mark.parametrize("needs", [(True, False), (False, True)], ids=["fused-only", "unimodal-only"])
@pytest.mark.parametrize("atomic", [False, True], ids=["deterministic", "atomic"])
def test_soft_pu_backward_skips_unrequested_gradient(needs, atomic, monkeypatch):
    import mkefast.backends.triton as triton_backend

    monkeypatch.setattr(triton_backend, "ATOMIC_BACKWARD", atomic)
    fused, unimodal, targets = _inputs(Case(9, 4, 2, "pseudo"), torch.float32)
    options = SoftPUOptions(temperature=0.5)
    grad_lb, grad_ulb = torch.randn(2, 9, device=DEV), torch.randn(2, 9, device=DEV)
    stats = triton_backend.soft_pu_fwd(fused, unimodal, targets, options)
    grads = triton_backend.soft_pu_bwd(fused, unimodal, targets, options, stats, grad_lb, grad_ulb, *needs)
    ref_stats = get_backend("reference").soft_pu_fwd(fused, unimodal, targets, options)
    want = get_backend("reference").soft_pu_bwd(fused, unimodal, targets, options, ref_stats, grad_lb, grad_ulb,
                                                True, True)
    for got, expected, need in zip(grads, want, needs, strict=True):
        if need:
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
        else:
            assert got is None


def test_unsupported_reason(monkeypatch):
    import mkefast.backends.triton as triton_backend

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        assert triton_backend.unsupported_reason("soft_pu", cuda, dtype) is None
        assert triton_backend.unsupported_reason("cosine_rec", cuda, dtype) is None
    assert "float64" in triton_backend.unsupported_reason("soft_pu", cuda, torch.float64)
    assert "op" in triton_backend.unsupported_reason("matmul", cuda, torch.float32)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_backend.unsupported_reason("soft_pu", cpu, torch.float32) is None
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET" in triton_backend.unsupported_reason("soft_pu", cpu, torch.float32)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (2, 33, 130), (3, 5000)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_cosine_fwd_bwd(shape, dtype):
    """Per-row loss and both gradients; one row is zero (clamped denominator); d = 5000 takes the chunked path."""
    triton_backend, reference = get_backend("triton"), get_backend("reference")
    a = torch.randn(shape, dtype=dtype).reshape(-1, shape[-1])
    b = torch.randn(shape, dtype=dtype).reshape(-1, shape[-1])
    a[0] = 0
    a, b = a.to(DEV), b.to(DEV)
    upstream = torch.randn(a.shape[0], device=DEV)
    rows = triton_backend.cosine_rec_fwd(a, b)
    assert rows.dtype == torch.float32
    grads = triton_backend.cosine_rec_bwd(a, b, upstream, True, True)
    for name, got, ref, truth in zip(
        ("rows", "grad_reconstruction", "grad_target"),
        (rows, *grads),
        (reference.cosine_rec_fwd(a, b), *reference.cosine_rec_bwd(a, b, upstream, True, True)),
        (reference.cosine_rec_fwd(a.double(), b.double()),
         *reference.cosine_rec_bwd(a.double(), b.double(), upstream.double(), True, True)),
        strict=True,
    ):
        _assert_no_worse(name, got, ref, truth, dtype)
    only_a = triton_backend.cosine_rec_bwd(a, b, upstream, True, False)
    only_b = triton_backend.cosine_rec_bwd(a, b, upstream, False, True)
    assert only_a[1] is None and only_b[0] is None
    torch.testing.assert_close(only_a[0], grads[0], rtol=0, atol=0)
    torch.testing.assert_close(only_b[1], grads[1], rtol=0, atol=0)


@requires_gpu
def test_cosine_large_rows_on_gpu():
    triton_backend, reference = get_backend("triton"), get_backend("reference")
    a = torch.randn(4099, 1024, device=DEV, dtype=torch.bfloat16)
    b = torch.randn_like(a)
    upstream = torch.randn(4099, device=DEV)
    got = (triton_backend.cosine_rec_fwd(a, b), *triton_backend.cosine_rec_bwd(a, b, upstream, True, True))
    ref = (reference.cosine_rec_fwd(a, b), *reference.cosine_rec_bwd(a, b, upstream, True, True))
    truth = (reference.cosine_rec_fwd(a.double(), b.double()),
             *reference.cosine_rec_bwd(a.double(), b.double(), upstream.double(), True, True))
    for name, g, r, t in zip(("rows", "grad_reconstruction", "grad_target"), got, ref, truth, strict=True):
        _assert_no_worse(name, g, r, t, torch.bfloat16)
