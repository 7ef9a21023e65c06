"""Checks of the row-chunked backends (`cpu`, `cuda`) below the functional layer, shared by their test files.

A backend's `soft_pu_fwd` / `soft_pu_bwd` are compared with the float64 truth of `tests.backends._harness`
(the reference backend in float64, differentiated by torch's autograd): every statistic, the gradients of
the anchors and the candidates, and ∂L/∂τ. In float32 the rule of docs/math.md ("How the backends are
checked") applies: the backend's error against that truth must be no worse than the reference backend's
own float32 error plus a small margin.
The cosine reconstruction checks compare `cosine_rec_fwd` / `cosine_rec_bwd` with the reference backend's
`cosine_rec_rows` differentiated by autograd. Each `check_*` takes the backend's name and device; the test
files parametrize them.
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import pytest
import torch
from torch import Tensor

from mkefast.backends import get_backend, reference
from mkefast.ops._common import SoftPUGrads, SoftPUOptions, SoftPUStats
from tests.backends._harness import LABEL_PATTERNS, Problem, make_problem, reference_fwd_bwd

# Relative to the largest magnitude of each compared output, added to the reference's own float32 error.
# float32 keeps ~7 digits; 2e-6 of the scale is ~16 units in the last place of the largest value.
F32_MARGIN = 2e-6


class Shape(NamedTuple):
    b_a: int
    b_c: int
    m: int
    d: int
    diag_offset: int = 0

    def __str__(self) -> str:
        off = f"-off{self.diag_offset}" if self.diag_offset else ""
        return f"Ba{self.b_a}-Bc{self.b_c}-M{self.m}-d{self.d}{off}"


# Odd sizes (B = 1, 7, 257; d = 3, 130), a queue (B_c > B_a), anchors past the candidates (B_a > B_c), and
# partners shifted by diag_offset (a rank's anchors in a gathered batch).
SHAPES = [
    Shape(1, 1, 1, 3),
    Shape(7, 7, 2, 130),
    Shape(257, 257, 1, 3),
    Shape(5, 12, 2, 4),
    Shape(9, 4, 2, 3),
    Shape(6, 15, 2, 5, diag_offset=4),
    Shape(8, 10, 1, 3, diag_offset=5),
]
OPTIONS = {
    "logit-s1": SoftPUOptions(temperature=0.3, rbf_sigma=1.0, rbf_space="logit"),
    "logit-inf": SoftPUOptions(temperature=0.5, rbf_sigma=math.inf, rbf_space="logit"),
    "phi-s2": SoftPUOptions(temperature=0.4, rbf_sigma=2.0, rbf_space="phi"),
    "phi-s1e-20": SoftPUOptions(temperature=0.2, rbf_sigma=1e-20, rbf_space="phi"),
    "logit-s1e-20": SoftPUOptions(temperature=0.2, rbf_sigma=1e-20, rbf_space="logit"),
}
FIELDS = (*SoftPUStats._fields, "grad_anchors", "grad_candidates", "grad_temperature")


def float64_matrix() -> list[object]:
    """(shape, label pattern, options) for shape × label pattern × exclude_diagonal × OPTIONS, readable ids."""
    params = []
    for shape in SHAPES:
        for labels in LABEL_PATTERNS:
            for exclude in (False, True):
                for name, options in OPTIONS.items():
                    case_id = f"{shape}-{labels}-{'excl' if exclude else 'keep'}-{name}"
                    options = dataclasses.replace(options, exclude_diagonal=exclude)
                    params.append(pytest.param(shape, labels, options, id=case_id))
    return params


def upstream(problem: Problem, seed: int = 5) -> tuple[Tensor, Tensor]:
    """Random upstream gradients of lb and ulb, `[M, B_a]` float64 on the CPU (never only `.sum()`)."""
    g = torch.Generator().manual_seed(seed)
    shape = (problem.candidates.shape[0], problem.anchors.shape[0])
    return torch.randn(shape, generator=g, dtype=torch.float64), torch.randn(shape, generator=g, dtype=torch.float64)


def problem_for(shape: Shape, labels: str, options: SoftPUOptions, *, dtype: torch.dtype = torch.float64,
                device: str | torch.device = "cpu", close: float = 0.0, seed: int = 0) -> Problem:
    return make_problem(shape.b_a, shape.b_c, shape.m, shape.d, dtype=dtype, device=device, labels=labels,
                        exclude_diagonal=options.exclude_diagonal, diag_offset=shape.diag_offset, close=close,
                        seed=seed)


def run(
    name: str, problem: Problem, options: SoftPUOptions, grad_lb: Tensor, grad_ulb: Tensor,
    needs: tuple[bool, bool, bool] = (True, True, True),
) -> tuple[SoftPUStats, SoftPUGrads]:
    """A backend's forward then backward on `problem`; the upstream gradients go to its accumulation dtype
    and device."""
    impl = get_backend(name)
    s, z = problem.anchors, problem.candidates
    acc = torch.float64 if s.dtype == torch.float64 else torch.float32
    stats = impl.soft_pu_fwd(s, z, problem.targets, options)
    grads = impl.soft_pu_bwd(s, z, problem.targets, options, stats, grad_lb.to(s.device, acc),
                             grad_ulb.to(s.device, acc), *needs)
    return stats, grads


def outputs(stats: SoftPUStats, grads: SoftPUGrads) -> list[Tensor]:
    """Every compared output on the CPU in float64, ∂L/∂τ summed (backends return per-row shares)."""
    tau = None if grads.temperature is None else grads.temperature.sum()
    return [t.detach().double().cpu() for t in (*stats, grads.anchors, grads.candidates, tau) if t is not None]


def truth(problem: Problem, options: SoftPUOptions, grad_lb: Tensor, grad_ulb: Tensor) -> list[Tensor]:
    """The float64 truth of `problem` (its inputs as rounded to their dtype)."""
    as64 = problem._replace(anchors=problem.anchors.double(), candidates=problem.candidates.double())
    return outputs(*reference_fwd_bwd(as64, options, grad_lb, grad_ulb))


def reference_in_dtype(problem: Problem, options: SoftPUOptions, grad_lb: Tensor, grad_ulb: Tensor) -> list[Tensor]:
    """The reference backend in the problem's own dtype (float32), on the CPU: the bar of the float32 rule."""
    s = problem.anchors.detach().cpu().requires_grad_(True)
    z = problem.candidates.detach().cpu().requires_grad_(True)
    tau = torch.tensor(options.temperature, dtype=s.dtype, requires_grad=True)
    targets = type(problem.targets)(*(t.cpu() if isinstance(t, Tensor) else t for t in problem.targets))
    stats = reference.soft_pu_terms(s, z, targets, options, tau)
    objective = (stats.lb * grad_lb.to(stats.lb.dtype)).sum() + (stats.ulb * grad_ulb.to(stats.ulb.dtype)).sum()
    grads = torch.autograd.grad(objective, (s, z, tau))
    return outputs(SoftPUStats(*(t.detach() for t in stats)), SoftPUGrads(*grads))


def error(got: Tensor, want: Tensor, name: str) -> float:
    """max |got − want| over the finite entries, after checking that the non-finite ones agree exactly
    (lse = −inf for an empty denominator; NaN nowhere)."""
    assert not torch.isnan(got).any(), f"{name}: NaN where the float64 truth is {want[torch.isnan(got)]}"
    finite = torch.isfinite(want)
    assert torch.equal(torch.isfinite(got), finite), f"{name}: non-finite entries differ"
    assert torch.equal(got[~finite], want[~finite]), f"{name}: infinities differ"
    return (got[finite] - want[finite]).abs().max().item() if finite.any() else 0.0


def assert_matches_float64(got: list[Tensor], want: list[Tensor]) -> None:
    for name, g, w in zip(FIELDS, got, want, strict=True):
        error(g, w, name)
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


def assert_no_worse_than_reference(got: list[Tensor], ref: list[Tensor], want: list[Tensor]) -> None:
    for name, g, r, w in zip(FIELDS, got, ref, want, strict=True):
        scale = max(1.0, w[torch.isfinite(w)].abs().max().item() if torch.isfinite(w).any() else 0.0)
        err, allowed = error(g, w, name), error(r, w, f"reference {name}") + F32_MARGIN * scale
        assert err <= allowed, f"{name}: error {err:.3g} > reference's {allowed - F32_MARGIN * scale:.3g} + margin"


def _options(tau: float, sigma: float, space: str, exclude: bool = False) -> SoftPUOptions:
    return SoftPUOptions(temperature=tau, rbf_sigma=sigma, rbf_space=space, exclude_diagonal=exclude)


def check_float64(name: str, device: str, shape: Shape, labels: str, options: SoftPUOptions) -> None:
    problem = problem_for(shape, labels, options, device=device, seed=shape.b_a + shape.d)
    grad_lb, grad_ulb = upstream(problem)
    got = outputs(*run(name, problem, options, grad_lb, grad_ulb))
    assert_matches_float64(got, truth(problem, options, grad_lb, grad_ulb))


BIG = Shape(257, 257, 2, 130)
# (shape, label pattern, options, close)
F32_CASES = [
    pytest.param(BIG, "some", _options(0.3, 1.0, "logit"), 0.0, id="logit-some"),
    pytest.param(BIG, "pseudo", _options(0.1, 1.0, "logit"), 0.0, id="logit-pseudo"),
    pytest.param(BIG, "pseudo", _options(0.4, 2.0, "phi"), 0.0, id="phi-pseudo"),
    pytest.param(BIG, "all", _options(0.1, math.inf, "logit", True), 0.0, id="supcon-excl"),
    pytest.param(Shape(100, 300, 2, 64), "some", _options(0.2, 1.0, "phi", True), 0.0, id="queue-phi-excl"),
    pytest.param(Shape(60, 20, 2, 33, diag_offset=3), "one_class", _options(0.2, 1.0, "logit"), 0.0,
                 id="ba-gt-bc-offset"),
    # docs/math.md "Numerics" and issue 10: anchors close to their partners in "phi" space (the fallback pair
    # has w = 1 by definition), τ down to 0.01 (e^100 overflows float32), σ = 1e-20.
    pytest.param(BIG, "some", _options(0.05, 1.0, "phi"), 0.05, id="phi-tau0.05-close"),
    pytest.param(BIG, "none", _options(0.05, 1.0, "phi"), 0.05, id="phi-tau0.05-close-unlabeled"),
    pytest.param(BIG, "some", _options(0.03, 1.0, "phi"), 0.05, id="phi-tau0.03-close"),
    pytest.param(BIG, "pseudo", _options(0.01, 1.0, "phi"), 0.0, id="phi-tau0.01"),
    pytest.param(BIG, "some", _options(0.2, 1e-20, "logit"), 0.0, id="logit-sigma1e-20"),
    pytest.param(BIG, "some", _options(0.2, 1e-20, "phi"), 0.05, id="phi-sigma1e-20-close"),
]


def check_float32(name: str, device: str, shape: Shape, labels: str, options: SoftPUOptions, close: float) -> None:
    problem = problem_for(shape, labels, options, dtype=torch.float32, device=device, close=close, seed=1)
    grad_lb, grad_ulb = upstream(problem)
    got = outputs(*run(name, problem, options, grad_lb, grad_ulb))
    ref = reference_in_dtype(problem, options, grad_lb.float(), grad_ulb.float())
    assert_no_worse_than_reference(got, ref, truth(problem, options, grad_lb, grad_ulb))


def check_phi_gradient_of_close_anchors(name: str, device: str, tau: float) -> None:
    """Issue 10: float32 anchors close to their partners, "phi" space; the cpu gradient was 3.7e-2 (τ = 0.05)
    and 1.1e-1 (τ = 0.03) off when the forward stored the reference rounded to float32."""
    options = _options(tau, 1.0, "phi")
    problem = problem_for(BIG, "some", options, dtype=torch.float32, device=device, close=0.05, seed=1)
    grad_lb, grad_ulb = upstream(problem)
    got = outputs(*run(name, problem, options, grad_lb, grad_ulb))
    want = truth(problem, options, grad_lb, grad_ulb)
    for field in ("grad_anchors", "grad_candidates"):
        g, w = got[FIELDS.index(field)], want[FIELDS.index(field)]
        assert (g - w).abs().max() <= 1e-5 * w.abs().max(), field


NEEDS = [pytest.param(n, id=i) for n, i in (((True, False, False), "anchors"), ((False, True, False), "candidates"),
                                            ((False, False, True), "temperature"), ((True, True, False), "inputs"),
                                            ((False, False, False), "nothing"))]


def check_needs(name: str, device: str, needs: tuple[bool, bool, bool]) -> None:
    """Only the gradients asked for, each equal to its value when all are asked for."""
    options = _options(0.4, 2.0, "phi", True)
    problem = problem_for(Shape(20, 30, 2, 8), "pseudo", options, device=device, seed=3)
    grad_lb, grad_ulb = upstream(problem)
    _, everything = run(name, problem, options, grad_lb, grad_ulb)
    _, some = run(name, problem, options, grad_lb, grad_ulb, needs)
    for need, got, want in zip(needs, some, everything, strict=True):
        assert (got is None) == (not need)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def check_empty_denominator(name: str, device: str) -> None:
    """One candidate, excluded: anchor 0's denominator is empty (lse = -inf, terms 0, no gradient, no NaN);
    anchors 1 and 2 have no partner and only candidate 0 in theirs."""
    options = _options(0.3, 1.0, "logit", True)
    problem = problem_for(Shape(3, 1, 2, 4), "some", options, device=device, seed=2)
    grad_lb, grad_ulb = upstream(problem)
    stats, grads = run(name, problem, options, grad_lb, grad_ulb)
    assert torch.equal(stats.lse[:, 0].cpu(), torch.full((2,), -math.inf, dtype=torch.float64))
    assert torch.isfinite(stats.lse[:, 1:]).all()
    assert (stats.lb == 0).all() and (stats.ulb == 0).all() and (stats.a_ulb == 0).all()
    assert grads.anchors is not None and grads.candidates is not None and grads.temperature is not None
    assert (grads.anchors == 0).all()
    assert torch.isfinite(grads.candidates).all() and torch.isfinite(grads.temperature).all()
    assert_matches_float64(outputs(stats, grads), truth(problem, options, grad_lb, grad_ulb))


def check_nan_in_gives_nan_out(name: str, device: str) -> None:
    options = OPTIONS["logit-s1"]
    problem = problem_for(Shape(9, 9, 2, 4), "pseudo", options, dtype=torch.float32, device=device)
    problem.anchors[3, 0] = math.nan
    grad_lb, grad_ulb = upstream(problem)
    stats, grads = run(name, problem, options, grad_lb, grad_ulb)
    assert torch.isnan(stats.lse[:, 3]).all() and torch.isnan(stats.lb[:, 3] + stats.ulb[:, 3]).all()
    assert torch.isfinite(stats.lse[:, :3]).all() and torch.isfinite(stats.lse[:, 4:]).all()
    assert grads.anchors is not None and grads.candidates is not None and grads.temperature is not None
    assert torch.isnan(grads.anchors[3]).all() and torch.isnan(grads.candidates).any()
    assert torch.isnan(grads.temperature.sum())


def check_low_precision(name: str, device: str, dtype: torch.dtype, rtol: float) -> None:
    """bfloat16 / float16 inputs give the float32 results of the same (rounded) values, within `rtol`
    (0: bitwise)."""
    options = _options(0.4, 2.0, "phi", True)
    problem = problem_for(Shape(33, 40, 2, 16), "pseudo", options, dtype=dtype, device=device)
    as32 = problem._replace(anchors=problem.anchors.float(), candidates=problem.candidates.float())
    grad_lb, grad_ulb = upstream(problem)
    for got, want in zip(outputs(*run(name, problem, options, grad_lb, grad_ulb)),
                         outputs(*run(name, as32, options, grad_lb, grad_ulb)), strict=True):
        torch.testing.assert_close(got, want, rtol=rtol, atol=rtol)


# ---------------------------------------------------------------- cosine reconstruction


def cosine_case(shape: tuple[int, ...], dtype: torch.dtype, device: str | torch.device = "cpu",
                seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    """Rows a, b `[..., d]` (the first row of a zero: the 1e-8 floor) and an upstream gradient `[...]` (float64)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(shape, generator=g, dtype=torch.float64)
    b = a * 0.3 + torch.randn(shape, generator=g, dtype=torch.float64)
    a.view(-1, shape[-1])[0] = 0.0
    grad = torch.randn(shape[:-1], generator=g, dtype=torch.float64)
    return a.to(device, dtype), b.to(device, dtype), grad.to(device)


def cosine_reference(a: Tensor, b: Tensor, grad: Tensor) -> list[Tensor]:
    """Rows and both gradients of the reference backend, differentiated by autograd, in the inputs' dtype."""
    x, y = a.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
    rows = reference.cosine_rec_rows(x, y)
    return [rows.detach(), *torch.autograd.grad((rows * grad.to(rows.dtype)).sum(), (x, y))]


def cosine_run(name: str, a: Tensor, b: Tensor, grad: Tensor) -> list[Tensor]:
    """A backend's rows and both gradients (the upstream gradient in the accumulation dtype)."""
    impl = get_backend(name)
    acc = torch.float64 if a.dtype == torch.float64 else torch.float32
    grad_a, grad_b = impl.cosine_rec_bwd(a, b, grad.to(acc), True, True)
    return [impl.cosine_rec_fwd(a, b), grad_a, grad_b]


def check_cosine_float64(name: str, device: str, shape: tuple[int, ...]) -> None:
    a, b, grad = cosine_case(shape, torch.float64, device)
    for got, want in zip(cosine_run(name, a, b, grad), cosine_reference(a, b, grad), strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    impl = get_backend(name)
    for needs in ((True, False), (False, True)):
        grads = impl.cosine_rec_bwd(a, b, grad, *needs)
        assert [x is None for x in grads] == [not n for n in needs]


def check_cosine_no_worse_than_reference(name: str, device: str, shape: tuple[int, ...], dtype: torch.dtype,
                                         margin: float) -> None:
    a, b, grad = cosine_case(shape, dtype, device)
    want = cosine_reference(a.double(), b.double(), grad)
    for got, ref, t in zip(cosine_run(name, a, b, grad), cosine_reference(a, b, grad), want, strict=True):
        scale = t.abs().max().item()
        assert (got.double() - t).abs().max() <= (ref.double() - t).abs().max() + margin * scale


COSINE_SCALES = [pytest.param(dtype, scale, id=f"{str(dtype)[6:]}-x{scale:g}")
                 for dtype, scale in ((torch.float32, 1e20), (torch.float32, 1e-20), (torch.float64, 1e200),
                                      (torch.float64, 1e-200))]


def check_cosine_scale_free(name: str, device: str, dtype: torch.dtype, scale: float) -> None:
    """docs/math.md: the loss of inputs scaled by 1e20 is the loss of the unscaled ones, and the gradients
    scale by 1/1e20; scaled by 1e-20 the 1e-8 floor takes over, as in float64. No NaN, no inf."""
    a, b, grad = cosine_case((33, 70), torch.float64, device, seed=4)
    a, b, grad = a[1:], b[1:], grad[1:]  # no zero row: every row is then scale-free
    xa, xb = (a * scale).to(dtype), (b * scale).to(dtype)
    got = cosine_run(name, xa, xb, grad)
    for t in got:
        assert torch.isfinite(t).all()
    tol = 1e-5 if dtype != torch.float64 else 1e-12
    # Scaled by 1e-20 the gradients are ~1e-44, subnormal in float32: a few of its smallest steps more.
    tiny = 4 * torch.finfo(dtype).smallest_normal * torch.finfo(dtype).eps
    for g, w in zip(got, cosine_reference(xa.double(), xb.double(), grad), strict=True):
        torch.testing.assert_close(g.double(), w, rtol=tol, atol=tol * w.abs().max().item() + tiny)
    if scale > 1:
        unscaled = cosine_run(name, a, b, grad)
        torch.testing.assert_close(got[0].double(), unscaled[0], rtol=tol, atol=tol)
        for g, w in zip(got[1:], unscaled[1:], strict=True):
            torch.testing.assert_close(g.double() * scale, w, rtol=tol, atol=tol * w.abs().max().item())
