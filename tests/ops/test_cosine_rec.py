"""The public cosine reconstruction op on the reference backend: math, gradients, reductions, errors."""

from __future__ import annotations

import pytest
import torch

import mkefast
from tests._oracle import cosine_naive


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (2, 7, 130)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_formula(shape, reduction):
    a, b = torch.randn(shape, dtype=torch.float64), torch.randn(shape, dtype=torch.float64)
    got = mkefast.cosine_reconstruction_loss(a, b, reduction=reduction, backend="reference")
    rows = cosine_naive(a, b)
    want = {"mean": rows.mean(), "sum": rows.sum(), "none": rows}[reduction]
    torch.testing.assert_close(got, want, rtol=1e-13, atol=1e-13)


def test_known_values():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [2.0, 0.0]])
    b = torch.tensor([[0.0, 3.0], [-2.0, -2.0], [1.0, 1.0], [5.0, 0.0]])
    got = mkefast.cosine_reconstruction_loss(a, b, reduction="none", backend="reference")
    # Orthogonal: 1; anti-parallel: 0 (sign does not matter); zero vector: 1 (clamped denominator); parallel: 0.
    torch.testing.assert_close(got, torch.tensor([1.0, 0.0, 1.0, 0.0]))


def test_gradcheck():
    a = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, y: mkefast.cosine_reconstruction_loss(x, y, reduction="none", backend="reference"), (a, b)
    )


def test_gradient_of_zero_vector_is_finite():
    a = torch.zeros(1, 3, requires_grad=True)
    b = torch.randn(1, 3, requires_grad=True)
    mkefast.cosine_reconstruction_loss(a, b, backend="reference").backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()


def test_module_and_dtype():
    a, b = torch.randn(3, 4, dtype=torch.bfloat16), torch.randn(3, 4, dtype=torch.bfloat16)
    loss = mkefast.CosineReconstructionLoss(reduction="sum", backend="reference")(a, b)
    assert loss.dtype == torch.bfloat16
    torch.testing.assert_close(loss.double(), cosine_naive(a, b).sum(), rtol=1e-2, atol=1e-2)


def test_nan_in_gives_nan_out():
    a, b = torch.randn(3, 4), torch.randn(3, 4)
    a[1, 0] = float("nan")
    rows = mkefast.cosine_reconstruction_loss(a, b, reduction="none", backend="reference")
    assert torch.isnan(rows[1]) and torch.isfinite(rows[[0, 2]]).all()


@pytest.mark.parametrize(
    "argument,error,a,b,kwargs",
    [
        ("reconstruction", TypeError, [1.0], torch.ones(2, 2), {}),
        ("reconstruction", ValueError, torch.ones(3), torch.ones(3), {}),
        ("reconstruction", ValueError, torch.ones(0, 3), torch.ones(0, 3), {}),
        ("target", ValueError, torch.ones(2, 3), torch.ones(3, 2), {}),
        ("target", TypeError, torch.ones(2, 3), torch.ones(2, 3, dtype=torch.float64), {}),
        ("target", TypeError, torch.ones(2, 3), torch.ones(2, 3, dtype=torch.int64), {}),
        ("reduction", ValueError, torch.ones(2, 3), torch.ones(2, 3), {"reduction": "max"}),
        ("backend", ValueError, torch.ones(2, 3), torch.ones(2, 3), {"backend": "fast"}),
    ],
)
def test_bad_input_names_the_argument(argument, error, a, b, kwargs):
    with pytest.raises(error, match=argument):
        mkefast.cosine_reconstruction_loss(a, b, **kwargs)


@pytest.mark.parametrize("scale", [1e20, 1e-20, 1e30])
def test_scale_free_on_float32(scale):
    """No overflow or underflow: rows scaled by 1e20 (whose norms overflow float32) give the unscaled result;
    rows scaled by 1e-20 meet the 1e-8 floor of the definition, as the float64 truth does."""
    a, b = torch.randn(4, 6), torch.randn(4, 6)
    want = cosine_naive(a.double() * scale, b.double() * scale)
    if scale > 1:
        torch.testing.assert_close(want, cosine_naive(a, b))
    x, y = (a * scale).requires_grad_(), (b * scale).requires_grad_()
    got = mkefast.cosine_reconstruction_loss(x, y, reduction="none", backend="reference")
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-6)
    got.sum().backward()
    a64, b64 = (a.double() * scale).requires_grad_(), (b.double() * scale).requires_grad_()
    cosine_naive(a64, b64).sum().backward()
    for g, w in ((x.grad, a64.grad), (y.grad, b64.grad)):
        assert torch.isfinite(g).all()
        # (at 1e-20 the true gradient, ~1e-44, is below float32's normal range: it may flush to 0)
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=max(1e-5 * w.abs().max().item(), 1e-37))


def test_zero_row_against_a_huge_row():
    a = torch.zeros(1, 4)
    b = torch.full((1, 4), 1e38)
    rows = mkefast.cosine_reconstruction_loss(a, b, reduction="none", backend="reference")
    torch.testing.assert_close(rows, torch.ones(1))
