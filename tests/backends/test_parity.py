"""Every fast backend against the reference oracle, on the full matrix of cases (docs/math.md).

Float64 is compared tightly. For lower precisions the rule of docs/math.md ("How the backends are checked")
applies: the backend's error against a
float64 ground truth (computed from the same rounded inputs) must be no worse than the reference backend's
own error in that dtype, plus a small margin.
"""

from __future__ import annotations

import math

import pytest
import torch

import mkefast
from mkefast.backends import get_backend
from tests.conftest import backend_params, device_for
from tests.ops.test_soft_pu import make_batch

PATTERNS = ["all", "none", "some", "one_class", "pseudo", "pseudo_neg"]
# (B, d, M): odd sizes, sizes no block divides, one modality and three; the last spans many tiles. Under the
# Triton interpreter (16 × 32 tiles, each run in Python) 65 rows already span 5 × 3 tiles, the last of each
# ragged, at a tenth of the time of 257 (17 × 9 tiles); tests/backends/test_triton.py has 257 rows and 257
# candidates.
SHAPES = [(1, 3, 1), (7, 130, 2), (33, 5, 3), (257, 3, 1)]
INTERPRETED_MANY_TILES = (65, 3, 1)
MARGIN = {torch.float64: 1e-9, torch.float32: 2e-5, torch.bfloat16: 2e-2, torch.float16: 3e-3}


def _dtypes_for(backend: str) -> list[torch.dtype]:
    impl = get_backend(backend)
    dev = device_for(backend)
    return [dt for dt in MARGIN if impl.unsupported_reason("soft_pu", dev, dt) is None]


def _run(backend, fused, unimodal, labels, labeled, pseudo, upstream, **kwargs):
    s = fused.clone().requires_grad_()
    z = unimodal.clone().requires_grad_()
    parts = mkefast.soft_pu_loss(s, z, labels, labeled, pseudo, reduction="none", return_parts=True,
                                 backend=backend, **kwargs)
    (parts.loss.float() * upstream).sum().backward()
    return parts.labeled, parts.unlabeled, s.grad, z.grad


def _err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


def _scale(t: torch.Tensor) -> float:
    return max(1.0, t.double().abs().max().item())


def check_against_reference(backend, dtype, shape, pattern, **kwargs):
    b, d, m = shape
    dev = device_for(backend)
    fused, unimodal, labels, labeled, pseudo = make_batch(b, d, m, pattern, dtype=dtype, seed=b * 31 + d)
    fused, unimodal, labels, labeled = fused.to(dev), unimodal.to(dev), labels.to(dev), labeled.to(dev)
    pseudo = pseudo.to(dev) if pseudo is not None else None
    upstream = torch.randn(m, b, device=dev)
    got = _run(backend, fused, unimodal, labels, labeled, pseudo, upstream, **kwargs)
    ref = _run("reference", fused, unimodal, labels, labeled, pseudo, upstream, **kwargs)
    if dtype == torch.float64:
        for g, r in zip(got, ref, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10)
        return
    truth = _run("reference", fused.double(), unimodal.double(), labels, labeled, pseudo, upstream.double(),
                 **kwargs)
    for name, g, r, t in zip(("lb", "ulb", "grad_fused", "grad_unimodal"), got, ref, truth, strict=True):
        assert g.dtype == r.dtype, name
        allowed = _err(r, t) + MARGIN[dtype] * _scale(t)
        assert _err(g, t) <= allowed, f"{name}: error {_err(g, t):.3g} > allowed {allowed:.3g}"


def _backend_shapes() -> list[object]:
    """(backend, shape) params: every backend on SHAPES, the interpreted Triton backend on its many-tile shape."""
    params = []
    for param in backend_params():
        (backend,) = param.values
        interpreted = backend == "triton" and device_for(backend).type == "cpu"
        for shape in SHAPES:
            if interpreted and shape == SHAPES[-1]:
                shape = INTERPRETED_MANY_TILES
            params.append(pytest.param(backend, shape, marks=param.marks, id="B{}-d{}-M{}-{}".format(*shape, backend)))
    return params


@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize(("backend", "shape"), _backend_shapes())
def test_soft_pu_matches_reference(backend, shape, pattern):
    for dtype in _dtypes_for(backend):
        if dtype in (torch.bfloat16, torch.float16) and shape[0] > 64 and device_for(backend).type == "cpu":
            continue  # low precision is checked on the smaller shapes; keeps the interpreter fast
        check_against_reference(backend, dtype, shape, pattern, temperature=0.2)


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize(
    "rbf_space,rbf_sigma,temperature",
    [("logit", 0.5, 0.1), ("logit", math.inf, 0.1), ("phi", 2.0, 0.5), ("phi", math.inf, 1.0)],
)
def test_soft_pu_options_match_reference(backend, rbf_space, rbf_sigma, temperature):
    dtype = torch.float64 if torch.float64 in _dtypes_for(backend) else torch.float32
    check_against_reference(backend, dtype, (19, 6, 2), "pseudo_neg", rbf_space=rbf_space, rbf_sigma=rbf_sigma,
                            temperature=temperature)


@pytest.mark.parametrize("backend", backend_params())
def test_soft_pu_non_contiguous_and_unnormalized(backend):
    dev = device_for(backend)
    fused, unimodal, labels, labeled, pseudo = make_batch(9, 6, 2, "pseudo", dtype=torch.float32)
    fused_nc = fused.T.contiguous().T.to(dev)
    unimodal_nc = unimodal.transpose(0, 1).contiguous().transpose(0, 1).to(dev)
    labels, labeled, pseudo = labels.to(dev), labeled.to(dev), pseudo.to(dev)
    for normalize in (True, False):
        kwargs = dict(normalize=normalize, temperature=2.0, reduction="sum")
        got = mkefast.soft_pu_loss(fused_nc * 0.3, unimodal_nc * 0.3, labels, labeled, pseudo, backend=backend,
                                   **kwargs)
        want = mkefast.soft_pu_loss(fused_nc * 0.3, unimodal_nc * 0.3, labels, labeled, pseudo,
                                    backend="reference", **kwargs)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


GENERAL = {
    "queue": (5, 21, {}),
    "more_anchors": (19, 6, {}),
    "exclude": (13, 13, {"exclude_diagonal": True}),
    "exclude_queue": (6, 17, {"exclude_diagonal": True}),
    "symmetric": (11, 11, {"symmetric": True}),
    "symmetric_exclude": (11, 11, {"symmetric": True, "exclude_diagonal": True}),
    "one_excluded": (1, 1, {"exclude_diagonal": True}),
}


def _general_run(backend, fused, unimodal, labels, labeled, pseudo, tau, upstream, **kwargs):
    s, z = fused.clone().requires_grad_(), unimodal.clone().requires_grad_()
    t = tau.clone().requires_grad_()
    parts = mkefast.soft_pu_loss(s, z, labels, labeled, pseudo, temperature=t, reduction="none", return_parts=True,
                                 backend=backend, **kwargs)
    (parts.loss.double() * upstream).sum().backward()
    return parts.labeled, parts.unlabeled, s.grad, z.grad, t.grad


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("case", list(GENERAL))
@pytest.mark.parametrize("pattern", ["all", "none", "pseudo_neg"])
@pytest.mark.parametrize("rbf_space,rbf_sigma", [("logit", 1.0), ("phi", 2.0), ("logit", math.inf)])
def test_general_options_match_reference(backend, case, pattern, rbf_space, rbf_sigma):
    """Queues, anchors past the candidates, exclude_diagonal, symmetric and a learnable temperature: every
    output and every gradient (τ's included) against the float64 truth."""
    b_a, b_c, opts = GENERAL[case]
    dev = device_for(backend)
    dtype = torch.float64 if torch.float64 in _dtypes_for(backend) else torch.float32
    _, unimodal, labels, labeled, pseudo = make_batch(b_c, 6, 2, pattern, dtype=dtype, seed=b_a + b_c)
    fused = torch.randn(b_a, 6, dtype=dtype, generator=torch.Generator().manual_seed(b_a))
    args = [t.to(dev) if t is not None else None for t in (fused, unimodal, labels, labeled, pseudo)]
    tau = torch.tensor(0.3, dtype=torch.float64, device=dev)
    upstream = torch.randn(2, b_a, dtype=torch.float64, device=dev)
    kwargs = dict(rbf_space=rbf_space, rbf_sigma=rbf_sigma, **opts)
    got = _general_run(backend, *args, tau, upstream, **kwargs)
    ref = _general_run("reference", *args, tau, upstream, **kwargs)
    truth = _general_run("reference", args[0].double(), args[1].double(), *args[2:], tau, upstream, **kwargs)
    for name, g, r, t in zip(("lb", "ulb", "grad_fused", "grad_unimodal", "grad_tau"), got, ref, truth, strict=True):
        if dtype == torch.float64:
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-10, msg=name)
        else:
            allowed = _err(r, t) + MARGIN[dtype] * _scale(t)
            assert _err(g, t) <= allowed, f"{name}: error {_err(g, t):.3g} > allowed {allowed:.3g}"


NUMERICS = {
    "phi_tau_0.01": dict(rbf_space="phi", temperature=0.01, rbf_sigma=1.0),
    "sigma_1e-20": dict(rbf_space="logit", temperature=0.1, rbf_sigma=1e-20),
    "phi_sigma_1e-20": dict(rbf_space="phi", temperature=0.5, rbf_sigma=1e-20),
    "phi_close_tau_0.05": dict(rbf_space="phi", temperature=0.05, rbf_sigma=1.0, close=True),
    "phi_close_tau_0.03": dict(rbf_space="phi", temperature=0.03, rbf_sigma=1.0, close=True),
}


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("case", list(NUMERICS))
def test_numerics_match_float64_truth(backend, case):
    """docs/math.md, Numerics: float32 inputs where e^ℓ overflows, σ tiny, or anchors close to their partners
    (as after training): finite, and as close to the float64 truth as the reference backend's float32 run."""
    kwargs = dict(NUMERICS[case])
    close = kwargs.pop("close", False)
    dev = device_for(backend)
    g = torch.Generator().manual_seed(11)
    b, d = 24, 8
    unimodal = torch.randn(2, b, d, generator=g)
    fused = unimodal[0] + 0.01 * torch.randn(b, d, generator=g) if close else torch.randn(b, d, generator=g)
    labels = torch.randint(0, 3, (b,), generator=g)
    labeled = torch.rand(b, generator=g) < (0.0 if close else 0.4)
    pseudo = None if close else torch.randint(-1, 3, (b,), generator=g)
    upstream = torch.randn(2, b, dtype=torch.float64)
    args = [t.to(dev) if t is not None else None for t in (fused, unimodal, labels, labeled, pseudo)]
    tau = torch.tensor(kwargs.pop("temperature"), dtype=torch.float64)
    got = _general_run(backend, *args, tau.to(dev), upstream.to(dev), **kwargs)
    ref = _general_run("reference", *args, tau.to(dev), upstream.to(dev), **kwargs)
    truth = _general_run("reference", fused.double(), unimodal.double(), labels, labeled, pseudo, tau, upstream,
                         **kwargs)
    for name, gv, r, t in zip(("lb", "ulb", "grad_fused", "grad_unimodal", "grad_tau"), got, ref, truth, strict=True):
        assert torch.isfinite(t).all(), name
        assert torch.isfinite(gv).all(), f"{name}: {backend} is not finite where the truth is"
        allowed = _err(r, t) + MARGIN[torch.float32] * _scale(t)
        assert _err(gv, t) <= allowed, f"{name}: error {_err(gv, t):.3g} > allowed {allowed:.3g}"


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("scale", [1e20, 1e-20])
def test_cosine_is_scale_free(backend, scale):
    dev = device_for(backend)
    a, b = torch.randn(5, 7), torch.randn(5, 7)
    truth = mkefast.cosine_reconstruction_loss(a.double() * scale, b.double() * scale, reduction="none",
                                               backend="reference")
    x, y = (a * scale).to(dev).requires_grad_(), (b * scale).to(dev).requires_grad_()
    got = mkefast.cosine_reconstruction_loss(x, y, reduction="none", backend=backend)
    torch.testing.assert_close(got.double().cpu(), truth, rtol=1e-5, atol=1e-6)
    got.sum().backward()
    assert torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()


@pytest.mark.parametrize("backend", backend_params())
def test_soft_pu_nan_in_gives_nan_out(backend):
    dev = device_for(backend)
    fused, unimodal, labels, labeled, _ = make_batch(8, 4, 2, "some", dtype=torch.float32)
    fused[3, 0] = float("nan")
    per = mkefast.soft_pu_loss(fused.to(dev), unimodal.to(dev), labels.to(dev), labeled.to(dev),
                               reduction="none", backend=backend)
    assert torch.isnan(per[:, 3]).all()


@pytest.mark.parametrize("backend", backend_params())
@pytest.mark.parametrize("shape", [(1, 1), (7, 3), (2, 33, 130)], ids=lambda s: "x".join(map(str, s)))
def test_cosine_matches_reference(backend, shape):
    dev = device_for(backend)
    impl = get_backend(backend)
    for dtype in MARGIN:
        if impl.unsupported_reason("cosine_rec", dev, dtype) is not None:
            continue
        a = torch.randn(shape, dtype=dtype, device=dev)
        b = torch.randn(shape, dtype=dtype, device=dev)
        upstream = torch.randn(shape[:-1], device=dev)
        results = []
        for name, x, y in ((backend, a, b), ("reference", a, b), ("reference", a.double(), b.double())):
            x, y = x.clone().requires_grad_(), y.clone().requires_grad_()
            rows = mkefast.cosine_reconstruction_loss(x, y, reduction="none", backend=name)
            (rows.double() * upstream).sum().backward()
            results.append((rows, x.grad, y.grad))
        for got, ref, truth in zip(*results, strict=True):
            if dtype == torch.float64:
                torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
            else:
                assert _err(got, truth) <= _err(ref, truth) + MARGIN[dtype] * _scale(truth)
