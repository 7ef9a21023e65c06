"""`supcon_loss` / `nn.SupConLoss` against pytorch-metric-learning's SupConLoss, on every backend."""

from __future__ import annotations

import pytest
import torch
from pytorch_metric_learning.losses import SupConLoss as PMLSupConLoss

import mkefast
from tests._oracle import supcon_pml_formula
from tests.conftest import backend_params, device_for

BACKENDS = backend_params(include_reference=True)

LABELS = {
    "three_classes": lambda g, n: torch.randint(0, 3, (n,), generator=g),
    "many_classes": lambda g, n: torch.randint(0, n, (n,), generator=g),  # rows without positives
    "negative_ids": lambda g, n: torch.randint(-5, -2, (n,), generator=g),
    "instance_pairs": lambda g, n: torch.arange(n) // 2,
}


def _grads(loss_fn, *inputs):
    xs = [x.clone().requires_grad_() for x in inputs]
    loss = loss_fn(*xs)
    return loss, torch.autograd.grad(loss, xs)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("labels", list(LABELS))
@pytest.mark.parametrize("n,d", [(9, 5), (16, 130)], ids=lambda v: str(v))
def test_single_view_matches_pml(backend, labels, n, d):
    g = torch.Generator().manual_seed(n + d)
    emb = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = LABELS[labels](g, n)
    dev = device_for(backend)
    dtype = torch.float64 if backend != "triton" else torch.float32
    want, want_g = _grads(lambda e: PMLSupConLoss(temperature=0.1)(e, y), emb)
    got, got_g = _grads(lambda e: mkefast.supcon_loss(e.to(dev, dtype), y.to(dev), backend=backend), emb)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol)
    torch.testing.assert_close(got_g[0].cpu(), want_g[0], rtol=tol, atol=tol)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("labels", ["three_classes", "many_classes"])
def test_ref_emb_matches_pml(backend, labels):
    g = torch.Generator().manual_seed(5)
    emb, ref = torch.randn(7, 6, generator=g, dtype=torch.float64), torch.randn(12, 6, generator=g, dtype=torch.float64)
    y, ry = LABELS[labels](g, 7), LABELS[labels](g, 12)
    dev = device_for(backend)
    dtype = torch.float64 if backend != "triton" else torch.float32
    want, want_g = _grads(lambda e, r: PMLSupConLoss(temperature=0.2)(e, y, ref_emb=r, ref_labels=ry), emb, ref)
    got, got_g = _grads(lambda e, r: mkefast.nn.SupConLoss(temperature=0.2, backend=backend)(
        e.to(dev, dtype), y.to(dev), ref_emb=r.to(dev, dtype), ref_labels=ry.to(dev)), emb, ref)
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol)
    for a, b in zip(got_g, want_g, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=tol, atol=tol)


def test_matches_the_written_out_formula_and_pml_quirks():
    g = torch.Generator().manual_seed(2)
    emb = torch.randn(10, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (10,), generator=g)
    torch.testing.assert_close(mkefast.supcon_loss(emb, y, backend="reference"), supcon_pml_formula(emb, y))
    # No negative pair (one class), no positive pair, or at most one of each: pytorch-metric-learning gives 0.
    for labels in (torch.zeros(10, dtype=torch.int64), torch.arange(10)):
        assert float(PMLSupConLoss()(emb, labels)) == 0.0
        assert float(mkefast.supcon_loss(emb, labels, backend="reference")) == 0.0
    one_each = mkefast.supcon_loss(emb[:1], torch.tensor([0]), emb[1:3], torch.tensor([0, 1]), backend="reference")
    assert float(PMLSupConLoss()(emb[:1], torch.tensor([0]), ref_emb=emb[1:3], ref_labels=torch.tensor([0, 1]))) == 0
    assert float(one_each) == 0.0


def test_nt_xent_is_supcon_with_instance_labels():
    """SimCLR's NT-Xent on 2N views: each view's positive is the other view of its sample."""
    g = torch.Generator().manual_seed(3)
    n, tau = 6, 0.5
    a, b = torch.randn(n, 8, generator=g, dtype=torch.float64), torch.randn(n, 8, generator=g, dtype=torch.float64)
    views = torch.nn.functional.normalize(torch.cat([a, b]), dim=-1)
    sim = views @ views.T / tau
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    want = torch.nn.functional.cross_entropy(sim, target)
    got = mkefast.supcon_loss(torch.cat([a, b]), torch.arange(n).repeat(2), temperature=tau, backend="reference")
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_reductions():
    g = torch.Generator().manual_seed(4)
    emb = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 3, 4, 5, 5])
    per = mkefast.supcon_loss(emb, y, reduction="none", backend="reference")
    assert per.shape == (9,)
    has_pos = torch.tensor([1, 1, 1, 1, 0, 0, 0, 1, 1], dtype=torch.bool)
    assert (per[~has_pos] == 0).all() and (per[has_pos] > 0).all()
    torch.testing.assert_close(mkefast.supcon_loss(emb, y, reduction="sum", backend="reference"), per.sum())
    torch.testing.assert_close(mkefast.supcon_loss(emb, y, backend="reference"), per.sum() / has_pos.sum())


def test_module_signature_and_errors():
    emb, y = torch.randn(6, 4), torch.randint(0, 2, (6,))
    criterion = mkefast.nn.SupConLoss(temperature=0.07)
    assert "temperature=0.07" in repr(criterion)
    with pytest.raises(ValueError, match="indices_tuple"):
        criterion(emb, y, indices_tuple=(torch.tensor([0]), torch.tensor([1]), torch.tensor([0]), torch.tensor([2])))
    with pytest.raises(ValueError, match="labels"):
        criterion(emb)
    with pytest.raises(ValueError, match="ref_labels"):
        mkefast.supcon_loss(emb, y, emb)
    with pytest.raises(ValueError, match="ref_embeddings"):
        mkefast.supcon_loss(emb, y, torch.randn(5, 3), torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="backend"):
        mkefast.nn.SupConLoss(backend="gpu")
    with pytest.raises(ValueError, match="temperature"):
        mkefast.nn.SupConLoss(temperature=0.0)


def test_module_reproduces_pml_identity_rule_for_ref_labels():
    """pytorch-metric-learning drops (j, j) when ref_labels IS labels (or is omitted), keeps it otherwise."""
    g = torch.Generator().manual_seed(9)
    emb, ref = torch.randn(8, 5, generator=g, dtype=torch.float64), torch.randn(8, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (8,), generator=g)
    pml, ours = PMLSupConLoss(), mkefast.nn.SupConLoss(backend="reference")
    for ref_labels in (y, y.clone(), None):
        torch.testing.assert_close(ours(emb, y, ref_emb=ref, ref_labels=ref_labels),
                                   pml(emb, y, ref_emb=ref, ref_labels=ref_labels), rtol=1e-12, atol=1e-12)
