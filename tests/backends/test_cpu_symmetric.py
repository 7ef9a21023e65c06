"""The `cpu` backend's one-pass symmetric InfoNCE (docs/math.md, "Symmetric InfoNCE in one pass").

`clip_loss` and `soft_pu_loss(symmetric=True)` with nothing labeled and no pseudo labels take
`cpu.soft_pu_sym_fwd` / `cpu.soft_pu_sym_bwd`: both directions from one forward and one backward pass over the
pairs. Both of its exp schemes are checked: one shift for the whole batch (|ℓ| ≤ R with 2R in the exp's
range) and a running column max (larger logits). The truth is open_clip's formula in float64 (one modality)
or the reference backend in float64 (M modalities), differentiated by autograd; in float32 the rule of
docs/math.md ("How the backends are checked") applies: no worse than the reference backend's own float32
error, plus `F32_MARGIN` of the largest magnitude.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import mkefast
from mkefast._build import backend_unavailable_reason
from mkefast.backends import _chunked, cpu
from tests.backends._chunked_checks import F32_MARGIN

pytestmark = pytest.mark.skipif(backend_unavailable_reason("cpu") is not None,
                                reason=str(backend_unavailable_reason("cpu")))


def _features(b: int, d: int, m: int, norm: float, seed: int, dtype: torch.dtype = torch.float64,
              ) -> tuple[Tensor, Tensor]:
    """Anchors `[B, d]` and candidates `[M, B, d]` of norm `norm`, candidates near their partners (so that the
    diagonal matters) and columns with very different maxima from chunk to chunk."""
    g = torch.Generator().manual_seed(seed)
    s = F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=-1)
    z = F.normalize(s + 0.7 * torch.randn(m, b, d, generator=g, dtype=torch.float64), dim=-1)
    return (norm * s).to(dtype), (norm * z).to(dtype)


def _per_sample_truth(s: Tensor, z: Tensor, tau: Tensor) -> Tensor:
    """`[M, B]`: ½ (CE(ℓ_m, arange) + CE(ℓ_mᵀ, arange)) per modality, ℓ_m = s z_mᵀ / τ: open_clip's formula
    per sample, written with torch alone."""
    target = torch.arange(s.shape[0])
    rows = []
    for zm in z:
        logits = s @ zm.T / tau
        rows.append(0.5 * (F.cross_entropy(logits, target, reduction="none")
                           + F.cross_entropy(logits.T, target, reduction="none")))
    return torch.stack(rows)


def _loss_and_grads(backend: str, s: Tensor, z: Tensor, tau: Tensor, reduction: str, weights: Tensor | None,
                    ) -> list[Tensor]:
    s, z, tau = (t.detach().clone().requires_grad_() for t in (s, z, tau))
    if backend == "oracle":
        per = _per_sample_truth(s, z, tau)
        out = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    else:
        out = mkefast.soft_pu_loss(s, z, temperature=tau, symmetric=True, reduction=reduction, rbf_sigma=math.inf,
                                   normalize=False,
                                   backend=backend)
    loss = (out * weights).sum() if weights is not None else out
    return [loss.detach(), *torch.autograd.grad(loss, (s, z, tau))]


def _truth(s: Tensor, z: Tensor, tau: float, reduction: str, weights: Tensor | None) -> list[Tensor]:
    return _loss_and_grads("oracle", s.double(), z.double(), torch.tensor(tau, dtype=torch.float64), reduction,
                           None if weights is None else weights.double())


def _run(backend: str, s: Tensor, z: Tensor, tau: float, reduction: str, weights: Tensor | None) -> list[Tensor]:
    return _loss_and_grads(backend, s, z, torch.tensor(tau, dtype=torch.float64), reduction,
                           None if weights is None else weights.to(s.dtype))


def _weights(reduction: str, m: int, b: int) -> Tensor | None:
    """Per-sample upstream weights for reduction="none": the backward then sees unequal gradients."""
    if reduction != "none":
        return None
    return torch.rand(m, b, generator=torch.Generator().manual_seed(b), dtype=torch.float64) + 0.5


def _spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    calls = {"sym_fwd": 0, "sym_bwd": 0, "fwd": 0, "fwd_grad": 0}
    for name, key in (("soft_pu_sym_fwd", "sym_fwd"), ("soft_pu_sym_bwd", "sym_bwd"), ("soft_pu_fwd", "fwd"),
                      ("soft_pu_fwd_grad", "fwd_grad")):
        original = getattr(cpu, name)

        def counted(*args: object, _original: object = original, _key: str = key) -> object:
            calls[_key] += 1
            return _original(*args)  # type: ignore[operator]

        monkeypatch.setattr(cpu, name, counted)
    return calls


# (name, B, d, M, τ, norm): "bounded" has |ℓ| ≤ 1/τ·norm² with 2R inside float32's and float64's exp range (one
# exp per pair); "running" has logits too wide for one shift in float32 (R = 250) and, at τ = 1e-3 with
# norm 1, in float64 (R = 1000 > 700).
CASES = [
    ("bounded-M1", 37, 24, 1, 0.1, 1.0),
    ("bounded-M2", 41, 19, 2, 0.07, 1.0),
    ("running-M1", 37, 24, 1, 0.1, 5.0),
    ("running-M2-tiny-tau", 33, 16, 2, 1e-3, 1.0),
]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name,b,d,m,tau,norm", CASES, ids=[c[0] for c in CASES])
def test_float64_matches_truth(monkeypatch, name, b, d, m, tau, norm, reduction):
    """Loss and every gradient (anchors, candidates, τ) in float64, under 5-row chunks (the column statistics
    run across 8 chunks)."""
    monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", repr(5 * m * b * 8 / 2**20))
    calls = _spy(monkeypatch)
    s, z = _features(b, d, m, norm, seed=b)
    weights = _weights(reduction, m, b)
    want = _truth(s, z, tau, reduction, weights)
    got = _run("cpu", s, z, tau, reduction, weights)
    assert calls == {"sym_fwd": 1, "sym_bwd": 1, "fwd": 0, "fwd_grad": 0}
    for what, a, w in zip(("loss", "anchors", "candidates", "tau"), got, want, strict=True):
        scale = float(w.abs().max())
        torch.testing.assert_close(a, w, rtol=1e-11, atol=1e-11 * scale, msg=lambda msg, n=what: f"{n}: {msg}")


def test_the_two_exp_schemes_are_both_exercised():
    s, z = _features(37, 24, 1, 1.0, seed=0)
    assert _chunked.logit_bound(s.float(), z.float(), 0.1) is not None
    assert _chunked.logit_bound(s.float(), (5 * z).float(), 0.02) is None
    assert _chunked.logit_bound(s, z, 1e-3) is None
    assert _chunked.logit_bound(s, z, 1e-2) is not None
    s[3, 2] = math.nan
    assert _chunked.logit_bound(s, z, 0.1) is None


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("name,b,d,m,tau,norm", CASES, ids=[c[0] for c in CASES])
def test_float32_no_worse_than_reference(monkeypatch, name, b, d, m, tau, norm, reduction):
    monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", repr(5 * m * b * 4 / 2**20))
    s, z = _features(b, d, m, norm, seed=b + 1)
    weights = _weights(reduction, m, b)
    want = _truth(s, z, tau, reduction, weights)
    got = _run("cpu", s.float(), z.float(), tau, reduction, weights)
    ref = _run("reference", s.float(), z.float(), tau, reduction, weights)
    for what, a, r, w in zip(("loss", "anchors", "candidates", "tau"), got, ref, want, strict=True):
        scale = float(w.abs().max())
        err, ref_err = float((a.double() - w).abs().max()), float((r.double() - w).abs().max())
        assert err <= ref_err + F32_MARGIN * scale, f"{what}: error {err:.3g} vs the reference's {ref_err:.3g}"


def test_only_partner_only_symmetric_calls_take_it(monkeypatch):
    calls = _spy(monkeypatch)
    s, z = _features(12, 8, 1, 1.0, seed=3, dtype=torch.float32)
    mkefast.clip_loss(s, z[0], 10.0, backend="cpu")
    assert calls["sym_fwd"] == 1
    labels = torch.arange(12) % 3
    for kwargs in ({"labels": labels}, {"exclude_diagonal": True}, {"symmetric": False},
                   {"pseudo_labels": labels}):
        before = dict(calls)
        mkefast.soft_pu_loss(s, z, **{"symmetric": True, "backend": "cpu", **kwargs})
        assert calls["sym_fwd"] == before["sym_fwd"], kwargs


@pytest.mark.parametrize("norm", [1.0, 5.0], ids=["bounded", "running"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_results_do_not_depend_on_threads_or_runs(monkeypatch, dtype, norm):
    """Bitwise: one thread, two threads, a repeated run; B = 600 over 3 chunks gives both passes work for two
    threads."""
    monkeypatch.setenv("MKEFAST_CPU_CHUNK_MB", repr(200 * 2 * 600 * 8 / 2**20))
    s, z = _features(600, 64, 2, norm, seed=7, dtype=dtype)
    weights = _weights("none", 2, 600)

    def go(threads: int) -> list[Tensor]:
        saved = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return _run("cpu", s, z, 0.1, "none", weights)
        finally:
            torch.set_num_threads(saved)

    one, two, again = go(1), go(2), go(2)
    for what, a, b, c in zip(("loss", "anchors", "candidates", "tau"), one, two, again, strict=True):
        assert torch.equal(a, b), f"{what} differs between 1 and 2 threads"
        assert torch.equal(b, c), f"{what} differs between two runs"


def test_huge_logits_stay_finite_and_exact():
    """Logits up to 2·10⁴ in float32 (far past exp's range): finite, and as close to the float64 truth as the
    reference's float32."""
    s, z = _features(29, 12, 1, 1.0, seed=11)
    want = _truth(s, z, 5e-5, "mean", None)
    got = _run("cpu", s.float(), z.float(), 5e-5, "mean", None)
    ref = _run("reference", s.float(), z.float(), 5e-5, "mean", None)
    for what, a, r, w in zip(("loss", "anchors", "candidates", "tau"), got, ref, want, strict=True):
        assert bool(torch.isfinite(a).all()), what
        scale = float(w.abs().max())
        err, ref_err = float((a.double() - w).abs().max()), float((r.double() - w).abs().max())
        assert err <= ref_err + F32_MARGIN * scale, f"{what}: error {err:.3g} vs the reference's {ref_err:.3g}"


def test_nan_in_gives_nan_out():
    s, z = _features(9, 5, 1, 1.0, seed=5, dtype=torch.float32)
    s[4, 1] = math.nan
    per = mkefast.clip_loss(s, z[0], 10.0, reduction="none", backend="cpu")
    want = mkefast.clip_loss(s, z[0], 10.0, reduction="none", backend="reference")
    assert torch.equal(per.isnan(), want.isnan())
    assert bool(per.isnan().any())


# Computes `variant_outputs` with the variant MKEFAST_CPU_ISA names and saves them (argv[1]).
_RUN_VARIANT = """
import sys
import torch
from mkefast._build import cpu_module
from tests.backends import test_cpu_symmetric as t
torch.save({"isa": cpu_module().build_info()["isa"], "outputs": t.variant_outputs()}, sys.argv[1])
"""
# B = 300 rows of 130 features: long rows for every vector width and its remainder loop; both exp schemes.
_VARIANT_NORMS = (1.0, 5.0)


def variant_outputs() -> list[list[Tensor]]:
    """[norm] float32 loss and gradients of the backend as imported (the variant of this interpreter)."""
    out = []
    for norm in _VARIANT_NORMS:
        s, z = _features(300, 130, 2, norm, seed=13)
        out.append(_run("cpu", s.float(), z.float(), 0.1, "none", _weights("none", 2, 300)))
    return out


def test_every_supported_variant_matches_the_truth_and_the_others(tmp_path):
    from tests.backends.test_cpu_isa import _in_fresh_interpreter, _info

    got = {}
    for isa in _info()["isas_supported"]:
        path = tmp_path / f"{isa}.pt"
        proc = _in_fresh_interpreter(isa, _RUN_VARIANT, str(path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        saved = torch.load(path)
        assert saved["isa"] == isa
        got[isa] = saved["outputs"]
    first = next(iter(got.values()))
    for i, norm in enumerate(_VARIANT_NORMS):
        s, z = _features(300, 130, 2, norm, seed=13)
        weights = _weights("none", 2, 300)
        want = _truth(s, z, 0.1, "none", weights)
        ref = _run("reference", s.float(), z.float(), 0.1, "none", weights)
        for isa, outs in got.items():
            for what, a, r, w, f in zip(("loss", "anchors", "candidates", "tau"), outs[i], ref, want, first[i],
                                        strict=True):
                scale = float(w.abs().max())
                err, ref_err = float((a.double() - w).abs().max()), float((r.double() - w).abs().max())
                assert err <= ref_err + F32_MARGIN * scale, f"{isa}, norm {norm}, {what}: {err:.3g} vs {ref_err:.3g}"
                torch.testing.assert_close(a, f, rtol=1e-5, atol=1e-6 * scale)
