"""The `triton` backend's host functions against the float64 truth of docs/math.md.

`soft_pu_fwd` / `soft_pu_bwd` are called directly (below the functional layer), so that every saved statistic
(lb, ulb, lse, ref, a_ulb), both backward variants (deterministic and atomic) and ∂L/∂τ are compared on the
same forward. Errors follow the rule of docs/math.md ("How the backends are checked"), with the comparison
helpers shared with the chunked backends'
tests (`tests.backends._chunked_checks`): against the float64 truth, no worse than the reference backend's own
float32 error plus a margin relative to max(1, |truth|): fp32: theirs (2e-6); fp16 / bf16 inputs (the reference
computes them in float32): the backward rounds ∂L/∂ℓ to the input dtype before its second product (as any
low-precision attention backward does), hence 4 of that rounding's unit (MARGIN). Without a GPU this runs under
the Triton interpreter with 16×32 tiles, so small sizes still span several tiles; on a GPU a few larger cases
are added. The ahead-of-time compile checks (sm_90a / sm_80, no GPU needed) are in tests/test_kernels_report.py.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import pytest
import torch

from mkefast._build import backend_unavailable_reason
from mkefast.ops._common import SoftPUGrads, SoftPUOptions, SoftPUStats
from tests.backends._chunked_checks import (
    F32_MARGIN,
    FIELDS,
    check_cosine_no_worse_than_reference,
    cosine_reference,
    error,
    outputs,
    reference_in_dtype,
    truth,
)
from tests.backends._harness import LABEL_PATTERNS, Problem, make_problem, reference_fwd_bwd
from tests.conftest import device_for, requires_gpu

pytestmark = [
    pytest.mark.skipif(backend_unavailable_reason("triton") is not None,
                       reason=str(backend_unavailable_reason("triton"))),
    # The interpreter evaluates log2(0) = -inf and exp2 overflows on purpose (w = 1 at δ = 0, w = 0 far away).
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

DEV = device_for("triton")
# fp16 / bf16: the backward rounds ∂L/∂ℓ to the input dtype (unit roundoff 2^-12 / 2^-9, relative) before its
# second product; the measured excess over the reference is up to ≈ 1.4 units, 4 are allowed.
MARGIN = {torch.float32: F32_MARGIN, torch.float16: 4 * 2**-12, torch.bfloat16: 4 * 2**-9}


def _backend():
    import mkefast.backends.triton as triton_backend

    return triton_backend


class Case(NamedTuple):
    b_a: int
    b_c: int
    m: int
    d: int
    labels: str = "some"
    space: str = "logit"
    sigma: float = 1.0
    tau: float = 0.2
    exclude: bool = False
    offset: int = 0
    close: float = 0.0

    def id(self) -> str:
        parts = [f"Ba{self.b_a}-Bc{self.b_c}-M{self.m}-d{self.d}-{self.labels}-{self.space}-s{self.sigma:g}",
                 f"t{self.tau:g}"]
        parts += ["excl"] * self.exclude + [f"off{self.offset}"] * bool(self.offset)
        parts += [f"close{self.close:g}"] * bool(self.close)
        return "-".join(parts)

    def options(self) -> SoftPUOptions:
        return SoftPUOptions(temperature=self.tau, rbf_sigma=self.sigma, rbf_space=self.space,
                             exclude_diagonal=self.exclude)

    def problem(self, dtype: torch.dtype, seed: int = 0) -> Problem:
        return make_problem(self.b_a, self.b_c, self.m, self.d, dtype=dtype, device=DEV, labels=self.labels,
                            exclude_diagonal=self.exclude, diag_offset=self.offset, close=self.close, seed=seed)


def _upstream(case: Case, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(case.m, case.b_a, generator=g).to(DEV), torch.randn(case.m, case.b_a, generator=g).to(DEV))


def _run(problem: Problem, options: SoftPUOptions, grad_lb: torch.Tensor, grad_ulb: torch.Tensor, *,
         atomic: bool = False, needs: tuple[bool, bool, bool] = (True, True, True)) -> tuple[SoftPUStats, SoftPUGrads]:
    backend = _backend()
    stats = backend.soft_pu_fwd(problem.anchors, problem.candidates, problem.targets, options)
    previous, backend.ATOMIC_BACKWARD = backend.ATOMIC_BACKWARD, atomic
    try:
        grads = backend.soft_pu_bwd(problem.anchors, problem.candidates, problem.targets, options, stats, grad_lb,
                                    grad_ulb, *needs)
    finally:
        backend.ATOMIC_BACKWARD = previous
    return stats, grads


def _check(case: Case, dtype: torch.dtype, *, atomic_too: bool = True) -> None:
    problem, options = case.problem(dtype), case.options()
    grad_lb, grad_ulb = _upstream(case)
    # The reference computes float16 / bfloat16 inputs in float32: its error is that of the rounded inputs.
    as32 = problem._replace(anchors=problem.anchors.float(), candidates=problem.candidates.float())
    ref = reference_in_dtype(as32, options, grad_lb.cpu(), grad_ulb.cpu())
    want = truth(problem, options, grad_lb.double().cpu(), grad_ulb.double().cpu())
    for variant in ("deterministic", "atomic")[: 1 + atomic_too]:
        stats, grads = _run(problem, options, grad_lb, grad_ulb, atomic=variant == "atomic")
        assert [t.dtype for t in stats] == [torch.float32] * 3 + [torch.float64, torch.float32]
        assert grads.anchors is not None and grads.candidates is not None and grads.temperature is not None
        assert grads.anchors.dtype == dtype and grads.candidates.dtype == dtype
        for name, got, r, w in zip(FIELDS, outputs(stats, grads), ref, want, strict=True):
            finite = w[torch.isfinite(w)]
            scale = max(1.0, finite.abs().max().item()) if finite.numel() else 1.0
            err, allowed = error(got, w, f"{variant} {name}"), error(r, w, f"reference {name}") + MARGIN[dtype] * scale
            assert err <= allowed, f"{variant} {name}: error {err:.3g} > allowed {allowed:.3g}"


CASES = [
    Case(1, 1, 1, 3, "none", sigma=math.inf),
    Case(9, 9, 1, 4, "some", "phi", math.inf),  # unit weights; ρ is still stored
    Case(7, 7, 2, 130, "pseudo"),
    Case(33, 33, 3, 5, "some", "phi", 2.0),
    Case(20, 45, 2, 8, "all", sigma=0.5),  # a queue: B_c > B_a
    Case(30, 17, 1, 6, "one_class", "phi"),  # B_a > B_c: anchors past B_c have no partner
    Case(13, 40, 2, 8, "pseudo", offset=20),  # a rank's anchors in a gathered batch
    Case(20, 30, 1, 8, "some", "phi", offset=15),  # ... whose last rows have no partner
    Case(19, 19, 2, 8, "some", "phi", exclude=True),
    Case(18, 40, 2, 8, "all", sigma=math.inf, exclude=True, offset=5),  # SupCon with a queue
    Case(3, 1, 1, 4, "all", exclude=True),  # anchor 0's denominator is empty
    Case(257, 7, 1, 3, "pseudo", sigma=0.7),  # 17 anchor tiles, the last one ragged
    Case(7, 257, 1, 3, "pseudo", "phi", 0.7),  # 9 candidate tiles, the last one ragged
    Case(20, 20, 2, 300, "pseudo", "phi", 3.0),  # d above one feature block: the chunked loops
    Case(20, 20, 1, 16, "some", "logit", 1e-20),
    Case(20, 20, 1, 16, "some", "phi", 1e-20),
    Case(33, 33, 1, 64, "all", "phi", tau=0.01),  # e^100 overflows float32
    pytest.param(Case(1031, 1500, 2, 256, "pseudo", exclude=True), marks=requires_gpu),
    pytest.param(Case(2048, 2048, 3, 96, "some", "phi", 2.0, offset=512), marks=requires_gpu),
    pytest.param(Case(700, 700, 1, 1100, "pseudo", "logit", 1.0), marks=requires_gpu),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id())
def test_soft_pu_fp32(case):
    _check(case, torch.float32)


@pytest.mark.parametrize("exclude", [False, True], ids=["keep-diag", "excl"])
@pytest.mark.parametrize("labels", LABEL_PATTERNS)
def test_soft_pu_label_patterns(labels, exclude):
    space = "phi" if labels in ("some", "pseudo") else "logit"
    _check(Case(12, 21, 1, 6, labels, space, 0.8, exclude=exclude), torch.float32, atomic_too=False)


@pytest.mark.parametrize("tau", [0.05, 0.03])
@pytest.mark.parametrize("labels", ["none", "some", "pseudo"])
def test_soft_pu_phi_close_to_partners(labels, tau):
    """Issue 10: anchors near their partners (as after training), "phi", float32. The fallback pair's w = 1
    by definition, every other weight comes from the one stored float64 reference, and the partner's
    p ≈ 1 is formed exactly as the forward's lse was (G = g (p - 1) there cancels)."""
    _check(Case(24, 24, 1, 32, labels, "phi", 1.0, tau=tau, close=0.02), torch.float32, atomic_too=False)


LOW_PRECISION_CASES = [
    Case(33, 33, 2, 20, "pseudo"),
    Case(16, 24, 1, 130, "some", "phi", 3.0, exclude=True, offset=3),
    pytest.param(Case(1500, 1500, 2, 256, "pseudo", sigma=math.inf), marks=requires_gpu),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("case", LOW_PRECISION_CASES, ids=lambda c: c.id())
def test_soft_pu_low_precision(case, dtype):
    _check(case, dtype, atomic_too=dtype == torch.bfloat16)


def test_soft_pu_empty_denominator_gives_exactly_zero():
    """B_c = 1 and the partner excluded: anchor 0 has no candidate at all (lse = -inf, terms 0, gradient 0)."""
    case = Case(3, 1, 2, 4, "all", exclude=True)
    for atomic in (False, True):
        stats, grads = _run(case.problem(torch.float32), case.options(), *_upstream(case), atomic=atomic)
        assert (stats.lse[:, 0] == -math.inf).all()
        assert (stats.lb[:, 0] == 0).all() and (stats.ulb[:, 0] == 0).all()
        assert grads.anchors is not None and grads.temperature is not None
        assert (grads.anchors[0] == 0).all() and grads.temperature[0] == 0
        assert torch.isfinite(grads.anchors).all() and torch.isfinite(grads.candidates).all()


@pytest.mark.parametrize("where", ["anchors", "candidates"])
def test_soft_pu_nan_in_nan_out(where):
    """A NaN input makes exactly the outputs NaN that the float64 truth has NaN (and no others)."""
    case = Case(9, 14, 2, 5, "some", "phi", 1.0)
    problem = case.problem(torch.float32)
    getattr(problem, where).view(-1)[7] = math.nan
    grad_lb, grad_ulb = _upstream(case)
    true_stats, true_grads = reference_fwd_bwd(problem, case.options(), grad_lb, grad_ulb)
    for atomic in (False, True):
        stats, grads = _run(problem, case.options(), grad_lb, grad_ulb, atomic=atomic)
        for name in ("lb", "ulb", "lse", "ref"):
            torch.testing.assert_close(getattr(stats, name).isnan().cpu(), getattr(true_stats, name).isnan())
        for name in ("anchors", "candidates"):
            torch.testing.assert_close(getattr(grads, name).isnan().cpu(), getattr(true_grads, name).isnan())
        assert grads.temperature is not None and grads.temperature.sum().isnan() == true_grads.temperature.isnan()


NEEDS = [(a, c, t) for a in (False, True) for c in (False, True) for t in (False, True)]


def _needs_id(needs: tuple[bool, bool, bool]) -> str:
    return "+".join(name for name, need in zip(("anchors", "candidates", "tau"), needs, strict=True) if need) or "none"


@pytest.mark.parametrize("atomic", [False, True], ids=["deterministic", "atomic"])
@pytest.mark.parametrize("needs", NEEDS, ids=_needs_id)
def test_soft_pu_backward_computes_what_is_asked(needs, atomic):
    """Each subset of (anchors, candidates, τ) gives None for the rest and the full call's values (bitwise for
    the deterministic kernels, which form and reduce G in the same order whatever else they write)."""
    case = Case(9, 13, 2, 4, "pseudo", "phi", 0.7, exclude=True)
    problem, options = case.problem(torch.float32), case.options()
    grad_lb, grad_ulb = _upstream(case)
    _, full = _run(problem, options, grad_lb, grad_ulb)
    _, grads = _run(problem, options, grad_lb, grad_ulb, atomic=atomic, needs=needs)
    for name, need in zip(SoftPUGrads._fields, needs, strict=True):
        got, want = getattr(grads, name), getattr(full, name)
        if not need:
            assert got is None, name
        elif atomic and all(needs[:2]):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
        else:
            assert torch.equal(got, want), name


def test_kernel_reference_round_trip():
    """The "phi" pre-pass returns float32 ρ_u; the stored float64 ρ = ρ_u ln 2 maps back to exactly ρ_u, so the
    forward and the backward weigh every pair with the same reference."""
    backend = _backend()
    g = torch.Generator().manual_seed(0)
    ref_u = torch.cat([torch.randn(4096, generator=g) * 10.0 ** torch.randint(-30, 30, (4096,), generator=g),
                       torch.tensor([0.0, 1e-45, -3e38, 144.26950408889634, 1.0])]).float()
    assert torch.equal(backend._kernel_ref(ref_u.double() * math.log(2.0)), ref_u)


def test_unsupported_reason(monkeypatch):
    backend = _backend()
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        assert backend.unsupported_reason("soft_pu", cuda, dtype) is None
        assert backend.unsupported_reason("cosine_rec", cuda, dtype) is None
    assert "float64" in backend.unsupported_reason("soft_pu", cuda, torch.float64)
    assert "op" in backend.unsupported_reason("matmul", cuda, torch.float32)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend.unsupported_reason("soft_pu", cpu, torch.float32) is None
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert "TRITON_INTERPRET" in backend.unsupported_reason("soft_pu", cpu, torch.float32)


@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (66, 130), (3, 5000)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_cosine_fwd_bwd(shape, dtype):
    """Per-row loss and both gradients; row 0 is zero (clamped denominator); d = 5000 takes the chunked path.
    Low-precision inputs: the gradients are rounded to the input dtype, as the reference's are; a last
    rounding may fall the other way, hence a margin of half that dtype's epsilon."""
    margin = {torch.float32: F32_MARGIN, torch.bfloat16: 2 ** -9, torch.float16: 2 ** -12}[dtype]
    check_cosine_no_worse_than_reference("triton", DEV, shape, dtype, margin)


@pytest.mark.parametrize("d", [3, 5000])
def test_cosine_scale_free(d):
    """docs/math.md: rows scaled by 1e20 (norms beyond float32) give the unscaled loss and gradients scaled by
    1e-20; at 1e-15 the 1e-8 floor is active and the gradients (~1e-29, still normal) must not underflow on the
    way; no NaN or inf anywhere. Row 1 starts with a zero block on the chunked path (d = 5000), whose running
    maximum must not keep the 1 of a zero row. Each gradient alone equals the one of both."""
    backend = _backend()
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(4, d, generator=g, dtype=torch.float64), torch.randn(4, d, generator=g, dtype=torch.float64)
    a[1, : d // 2] = 0
    grad = torch.randn(4, generator=g, dtype=torch.float64)
    for scale in (1.0, 1e20, 1e-15, 1e-20):
        xa, xb = (a * scale).float().to(DEV), (b * scale).float().to(DEV)
        rows = backend.cosine_rec_fwd(xa, xb)
        grads = backend.cosine_rec_bwd(xa, xb, grad.float().to(DEV), True, True)
        for name, got, want in zip(("rows", "grad_a", "grad_b"), (rows, *grads),
                                   cosine_reference(xa.double().cpu(), xb.double().cpu(), grad), strict=True):
            assert torch.isfinite(got).all(), name
            # At 1e-20 the gradients (~1e-44) are float32 subnormals: a few of the smallest steps more.
            atol = 1e-5 * want.abs().max().item() + 4 * torch.finfo(torch.float32).smallest_normal * 2 ** -23
            torch.testing.assert_close(got.double().cpu(), want, rtol=1e-5, atol=atol)
        only_a = backend.cosine_rec_bwd(xa, xb, grad.float().to(DEV), True, False)
        only_b = backend.cosine_rec_bwd(xa, xb, grad.float().to(DEV), False, True)
        assert only_a[1] is None and only_b[0] is None
        assert torch.equal(only_a[0], grads[0]) and torch.equal(only_b[1], grads[1])


def test_cosine_zero_row_against_a_huge_row():
    """The 1e-8 floor divided by the rows' scales underflows for a zero row against one near float32's maximum:
    the loss is still 1, the gradients 0, nothing NaN (as in the reference)."""
    a = torch.tensor([[0.0, 0.0, 0.0], [1.0, 2.0, 3.0]])
    b = torch.tensor([[3e38, -1.0, 2e38], [3e38, -1.0, 2e38]])
    grad = torch.tensor([1.0, -2.0], dtype=torch.float64)
    rows = _backend().cosine_rec_fwd(a.to(DEV), b.to(DEV))
    grads = _backend().cosine_rec_bwd(a.to(DEV), b.to(DEV), grad.float().to(DEV), True, True)
    for name, got, want in zip(("rows", "grad_a", "grad_b"), (rows, *grads), cosine_reference(a, b, grad), strict=True):
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got.double().cpu(), want.double(), rtol=1e-5, atol=1e-30)
    assert rows[0] == 1 and (grads[0][0] == 0).all() and (grads[1][0] == 0).all()


def test_cosine_nan_in_nan_out():
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    a[2, 3] = math.nan
    rows = _backend().cosine_rec_fwd(a.to(DEV), b.to(DEV)).cpu()
    grad_a, grad_b = _backend().cosine_rec_bwd(a.to(DEV), b.to(DEV), torch.ones(5, device=DEV), True, True)
    assert rows.isnan().tolist() == [False, False, True, False, False]
    assert grad_a.cpu()[2].isnan().all() and grad_b.cpu()[2].isnan().all()
    assert torch.isfinite(grad_a.cpu()[[0, 1, 3, 4]]).all()


@requires_gpu
def test_cosine_large_rows_on_gpu():
    check_cosine_no_worse_than_reference("triton", DEV, (4099, 1024), torch.bfloat16, 2 ** -9)
