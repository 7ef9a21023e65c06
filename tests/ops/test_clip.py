"""`clip_loss` / `nn.ClipLoss` against open_clip's ClipLoss formula, with a learnable logit scale."""

from __future__ import annotations

import pytest
import torch

import mkefast
from tests._oracle import clip_formula
from tests.conftest import backend_params, device_for

BACKENDS = backend_params(include_reference=True)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n,d", [(1, 3), (9, 5), (33, 130)], ids=lambda v: str(v))
@pytest.mark.parametrize("normalize", [False, True])
def test_matches_open_clip_with_learnable_scale(backend, n, d, normalize):
    g = torch.Generator().manual_seed(n * d)
    image = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    text = torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=-1)
    if normalize:  # unnormalized features: the option must normalize them first
        image, text = image * 3.0, text * 0.5
    log_scale = torch.tensor(2.3, dtype=torch.float64)
    dev = device_for(backend)
    dtype = torch.float64 if backend != "triton" else torch.float32

    def grads(fn):
        i, t, ls = (x.clone().requires_grad_() for x in (image, text, log_scale))
        loss = fn(i, t, ls.exp())
        return loss, torch.autograd.grad(loss, (i, t, ls))

    def open_clip(i, t, s):
        if normalize:
            i, t = torch.nn.functional.normalize(i, dim=-1), torch.nn.functional.normalize(t, dim=-1)
        return clip_formula(i, t, s)

    want, want_g = grads(open_clip)
    got, got_g = grads(lambda i, t, s: mkefast.nn.ClipLoss(normalize=normalize, backend=backend)(
        i.to(dev, dtype), t.to(dev, dtype), s.to(dev)))
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    torch.testing.assert_close(got.double().cpu(), want, rtol=tol, atol=tol)
    for a, b in zip(got_g, want_g, strict=True):
        torch.testing.assert_close(a.cpu(), b, rtol=tol, atol=tol)


def test_output_dict_reductions_and_float_scale():
    g = torch.Generator().manual_seed(1)
    image, text = (torch.randn(5, 4, generator=g, dtype=torch.float64) for _ in range(2))
    out = mkefast.nn.ClipLoss(backend="reference")(image, text, 10.0, output_dict=True)
    assert set(out) == {"contrastive_loss"}
    torch.testing.assert_close(out["contrastive_loss"], clip_formula(image, text, torch.tensor(10.0)))
    per = mkefast.clip_loss(image, text, 10.0, reduction="none", backend="reference")
    assert per.shape == (5,)
    torch.testing.assert_close(per.mean(), out["contrastive_loss"])
    torch.testing.assert_close(mkefast.clip_loss(image, text, 10.0, reduction="sum", backend="reference"), per.sum())


def test_errors_name_the_argument():
    image = torch.randn(4, 3)
    with pytest.raises(ValueError, match="text_features"):
        mkefast.clip_loss(image, torch.randn(5, 3), 1.0)
    with pytest.raises(ValueError, match="logit_scale"):
        mkefast.clip_loss(image, image, 0.0)
    with pytest.raises(TypeError, match="logit_scale"):
        mkefast.clip_loss(image, image, torch.ones(2))
    with pytest.raises(ValueError, match="backend"):
        mkefast.nn.ClipLoss(backend="gpu")
