"""The public soft-PU op on the reference backend: the math of docs/math.md, its special cases, gradients, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import mkefast
from mkefast.backends import BackendUnavailableError
from tests._oracle import soft_pu_naive

LABEL_PATTERNS = ["all", "none", "some", "one_class", "pseudo", "pseudo_neg"]


def make_batch(b: int, d: int, m: int, pattern: str, *, classes: int = 3, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    fused = torch.randn(b, d, generator=g, dtype=dtype)
    unimodal = torch.randn(m, b, d, generator=g, dtype=dtype)
    labels = torch.randint(0, classes, (b,), generator=g)
    pseudo = None
    if pattern == "all":
        labeled = torch.ones(b, dtype=torch.bool)
    elif pattern == "none":
        labeled = torch.zeros(b, dtype=torch.bool)
    elif pattern == "one_class":
        labels = torch.zeros(b, dtype=torch.int64)
        labeled = torch.rand(b, generator=g) < 0.5
        pseudo = torch.zeros(b, dtype=torch.int64)
    else:
        labeled = torch.rand(b, generator=g) < 0.4
        if pattern in ("pseudo", "pseudo_neg"):
            pseudo = torch.randint(0, classes, (b,), generator=g)
        if pattern == "pseudo_neg":
            pseudo[torch.rand(b, generator=g) < 0.5] = -1
    # Labels of unlabeled samples must be ignored: scramble them.
    labels = torch.where(labeled, labels, torch.full_like(labels, 7 + classes))
    return fused, unimodal, labels, labeled, pseudo


@pytest.mark.parametrize("pattern", LABEL_PATTERNS)
@pytest.mark.parametrize("rbf_space,rbf_sigma", [("logit", 1.0), ("phi", 3.0), ("logit", math.inf)])
@pytest.mark.parametrize("shape", [(1, 3, 1), (7, 5, 2), (9, 4, 3)], ids=lambda s: "B{}d{}M{}".format(*s))
def test_reference_matches_naive_oracle(pattern, rbf_space, rbf_sigma, shape):
    b, d, m = shape
    fused, unimodal, labels, labeled, pseudo = make_batch(b, d, m, pattern)
    kwargs = dict(temperature=0.5, rbf_sigma=rbf_sigma, rbf_space=rbf_space)
    parts = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, reduction="none", return_parts=True,
                                 backend="reference", **kwargs)
    lb, ulb = soft_pu_naive(fused, unimodal, labels, labeled, pseudo, **kwargs)
    torch.testing.assert_close(parts.labeled, lb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts.unlabeled, ulb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts.loss, lb + ulb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("pattern", ["some", "pseudo_neg", "all"])
def test_reference_gradients_match_naive_oracle(pattern):
    fused, unimodal, labels, labeled, pseudo = make_batch(6, 4, 2, pattern, seed=3)
    upstream = torch.randn(2, 6, dtype=torch.float64)
    grads = []
    for fn in ("mkefast", "naive"):
        s = fused.clone().requires_grad_()
        z = unimodal.clone().requires_grad_()
        if fn == "mkefast":
            per = mkefast.soft_pu_loss(s, z, labels, labeled, pseudo, reduction="none", temperature=0.3,
                                       backend="reference")
        else:
            lb, ulb = soft_pu_naive(s, z, labels, labeled, pseudo, temperature=0.3)
            per = lb + ulb
        grads.append(torch.autograd.grad((per * upstream).sum(), (s, z)))
    for got, want in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("m", [1, 3])
def test_all_labeled_is_supcon(m):
    """Every sample labeled: ulb = 0 and the loss is SupCon between fused anchors and unimodal candidates."""
    b, d, tau = 12, 8, 0.2
    fused, unimodal, labels, labeled, _ = make_batch(b, d, m, "all", classes=3)
    parts = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, temperature=tau, return_parts=True,
                                 backend="reference")
    assert parts.unlabeled.item() == 0.0
    s = F.normalize(fused, dim=-1)
    z = F.normalize(unimodal, dim=-1)
    pos = (labels[:, None] == labels[None, :]).double()
    total = 0.0
    for i in range(m):
        log_prob = F.log_softmax(s @ z[i].T / tau, dim=-1)
        total += (-(log_prob * pos).sum(-1) / pos.sum(-1)).mean()
    torch.testing.assert_close(parts.loss, total / m, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("m", [1, 2])
def test_nothing_labeled_is_infonce(m):
    """Nothing labeled, no pseudo labels, σ = inf: InfoNCE with the diagonal as the only positive."""
    b, d, tau = 10, 6, 0.1
    fused, unimodal, labels, labeled, _ = make_batch(b, d, m, "none")
    loss = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, temperature=tau, rbf_sigma=math.inf,
                                backend="reference")
    s, z = F.normalize(fused, dim=-1), F.normalize(unimodal, dim=-1)
    want = torch.stack([F.cross_entropy(s @ z[i].T / tau, torch.arange(b)) for i in range(m)]).mean()
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-12)


def test_unlabeled_rows_without_guesses_ignore_sigma():
    """With P10 = {j} the weight compares ℓ_jj with itself: w = 1 for any σ, so InfoNCE holds for any σ."""
    fused, unimodal, labels, labeled, _ = make_batch(8, 4, 1, "none")
    a = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, rbf_sigma=0.01, backend="reference")
    b = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, rbf_sigma=math.inf, backend="reference")
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gradcheck_float64():
    fused, unimodal, labels, labeled, pseudo = make_batch(5, 3, 2, "pseudo_neg", seed=1)
    fused.requires_grad_()
    unimodal.requires_grad_()

    def fn(s, z):
        return mkefast.soft_pu_loss(s, z, labels, labeled, pseudo, temperature=0.7, reduction="none",
                                    rbf_sigma=2.0, backend="reference")

    assert torch.autograd.gradcheck(fn, (fused, unimodal), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_reductions_and_parts(reduction):
    fused, unimodal, labels, labeled, pseudo = make_batch(7, 5, 3, "pseudo")
    per = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, reduction="none", backend="reference")
    assert per.shape == (3, 7)
    out = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, reduction=reduction,
                               return_parts=True, backend="reference")
    assert isinstance(out, mkefast.SoftPUParts)
    want = {"mean": per.mean(), "sum": per.sum(), "none": per}[reduction]
    torch.testing.assert_close(out.loss, want)
    torch.testing.assert_close(out.labeled + out.unlabeled, out.loss)


def test_two_dimensional_unimodal_is_one_modality():
    fused, unimodal, labels, labeled, pseudo = make_batch(7, 5, 1, "some")
    a = mkefast.soft_pu_loss(fused, unimodal[0], labels, labeled, pseudo, reduction="none", backend="reference")
    b = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, reduction="none", backend="reference")
    assert a.shape == (1, 7)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_non_contiguous_inputs():
    fused, unimodal, labels, labeled, pseudo = make_batch(7, 6, 2, "pseudo")
    fused_t = fused.T.contiguous().T  # same values, column-major
    unimodal_nc = unimodal.transpose(0, 1).contiguous().transpose(0, 1)
    assert not fused_t.is_contiguous() and not unimodal_nc.is_contiguous()
    a = mkefast.soft_pu_loss(fused_t, unimodal_nc, labels, labeled, pseudo, backend="reference")
    b = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, backend="reference")
    torch.testing.assert_close(a, b)


def test_normalize_false_uses_raw_dot_products():
    fused, unimodal, labels, labeled, _ = make_batch(6, 4, 1, "none")
    loss = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, normalize=False, temperature=1.0,
                                rbf_sigma=math.inf, backend="reference")
    torch.testing.assert_close(loss, F.cross_entropy(fused @ unimodal[0].T, torch.arange(6)))


def test_normalization_gradient_flows():
    fused, unimodal, labels, labeled, _ = make_batch(6, 4, 1, "some")
    s = fused.clone().requires_grad_()
    mkefast.soft_pu_loss(s, unimodal, labels, labeled, backend="reference").backward()
    # The loss is invariant to the anchors' scale, so the gradient is orthogonal to each anchor.
    torch.testing.assert_close((s.grad * fused).sum(-1), torch.zeros(6, dtype=torch.float64), atol=1e-12, rtol=0)


def test_pseudo_labels_of_minus_one_equal_no_pseudo_labels():
    fused, unimodal, labels, labeled, _ = make_batch(8, 4, 2, "some")
    a = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, torch.full((8,), -1), backend="reference")
    b = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, None, backend="reference")
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_class_ids_are_arbitrary():
    """Only equality of class ids matters: relabeling classes by a bijection leaves the loss unchanged."""
    fused, unimodal, labels, labeled, pseudo = make_batch(9, 4, 2, "pseudo_neg")
    remap = {0: 1000, 1: 3, 2: 123456789}
    labels2 = torch.tensor([remap.get(int(v), int(v)) for v in labels])
    pseudo2 = torch.tensor([remap.get(int(v), int(v)) for v in pseudo])
    a = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, backend="reference")
    b = mkefast.soft_pu_loss(fused, unimodal, labels2, labeled, pseudo2, backend="reference")
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_low_precision_dtype_round_trip(dtype):
    fused, unimodal, labels, labeled, pseudo = make_batch(16, 8, 2, "pseudo", dtype=dtype)
    s = fused.clone().requires_grad_()
    z = unimodal.clone().requires_grad_()
    loss = mkefast.soft_pu_loss(s, z, labels, labeled, pseudo, backend="reference")
    assert loss.dtype == dtype
    loss.backward()
    assert s.grad.dtype == dtype and z.grad.dtype == dtype
    exact = mkefast.soft_pu_loss(fused.double(), unimodal.double(), labels, labeled, pseudo, backend="reference")
    tol = {torch.float32: 1e-5, torch.bfloat16: 3e-2, torch.float16: 5e-3}[dtype]
    assert abs(loss.double().item() - exact.item()) <= tol * abs(exact.item()) + tol


def test_nan_in_gives_nan_out():
    fused, unimodal, labels, labeled, _ = make_batch(6, 4, 2, "some")
    fused[2, 1] = float("nan")
    per = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, reduction="none", backend="reference")
    assert torch.isnan(per[:, 2]).all()
    assert torch.isnan(mkefast.soft_pu_loss(fused, unimodal, labels, labeled, backend="reference"))


def test_module_matches_function():
    fused, unimodal, labels, labeled, pseudo = make_batch(7, 5, 2, "pseudo")
    criterion = mkefast.SoftPULoss(temperature=0.2, rbf_sigma=0.5, reduction="sum", backend="reference")
    assert "temperature=0.2" in repr(criterion)
    torch.testing.assert_close(
        criterion(fused, unimodal, labels, labeled, pseudo),
        mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, temperature=0.2, rbf_sigma=0.5,
                             reduction="sum", backend="reference"),
    )


def _call(**overrides):
    fused, unimodal, labels, labeled, pseudo = make_batch(4, 3, 2, "pseudo", dtype=torch.float32)
    args = dict(fused=fused, unimodal=unimodal, labels=labels, labeled=labeled, pseudo_labels=pseudo)
    args.update(overrides)
    return mkefast.soft_pu_loss(**args)


BAD_CALLS = [
    ("fused", TypeError, dict(fused=[[1.0]])),
    ("fused", TypeError, dict(fused=torch.ones(4, 3, dtype=torch.int64))),
    ("fused", ValueError, dict(fused=torch.ones(4))),
    ("fused", ValueError, dict(fused=torch.ones(0, 3), unimodal=torch.ones(2, 0, 3),
                               labels=torch.ones(0, dtype=torch.int64), labeled=torch.ones(0, dtype=torch.bool),
                               pseudo_labels=None)),
    ("unimodal", ValueError, dict(unimodal=torch.ones(2, 4, 5))),
    ("unimodal", ValueError, dict(unimodal=torch.ones(2, 4, 3, 1))),
    ("unimodal", TypeError, dict(unimodal=torch.ones(2, 4, 3, dtype=torch.float64))),
    ("labels", TypeError, dict(labels=torch.ones(4))),
    ("labels", ValueError, dict(labels=torch.ones(5, dtype=torch.int64))),
    ("labels", ValueError, dict(labels=torch.full((4,), -2), labeled=torch.ones(4, dtype=torch.bool))),
    ("labeled", TypeError, dict(labeled=torch.ones(4, dtype=torch.int64))),
    ("labeled", ValueError, dict(labeled=torch.ones(3, dtype=torch.bool))),
    ("pseudo_labels", TypeError, dict(pseudo_labels=torch.ones(4))),
    ("pseudo_labels", ValueError, dict(pseudo_labels=torch.ones(2, dtype=torch.int64))),
    ("temperature", ValueError, dict(temperature=0.0)),
    ("temperature", ValueError, dict(temperature=-1.0)),
    ("temperature", ValueError, dict(temperature=math.inf)),
    ("temperature", ValueError, dict(temperature=math.nan)),
    ("temperature", TypeError, dict(temperature="0.1")),
    ("rbf_sigma", ValueError, dict(rbf_sigma=0.0)),
    ("rbf_sigma", ValueError, dict(rbf_sigma=math.nan)),
    ("rbf_sigma", TypeError, dict(rbf_sigma=None)),
    ("rbf_sigma", ValueError, dict(rbf_sigma=1e-200)),
    ("temperature", ValueError, dict(temperature=5e-324)),
    ("temperature", TypeError, dict(temperature=torch.ones(2))),
    ("temperature", TypeError, dict(temperature=torch.tensor(1))),
    ("temperature", ValueError, dict(temperature=torch.tensor(0.0))),
    ("temperature", ValueError, dict(temperature=torch.tensor(float("nan")))),
    ("labeled", ValueError, dict(labels=None)),
    ("symmetric", ValueError, dict(symmetric=True, unimodal=torch.ones(2, 5, 3), labels=None, labeled=None,
                                   pseudo_labels=None)),
    ("symmetric", TypeError, dict(symmetric=1)),
    ("exclude_diagonal", TypeError, dict(exclude_diagonal="yes")),
    ("rbf_space", ValueError, dict(rbf_space="exp")),
    ("reduction", ValueError, dict(reduction="avg")),
    ("normalize", TypeError, dict(normalize=1)),
    ("backend", ValueError, dict(backend="gpu")),
    ("backend", TypeError, dict(backend=None)),
]


@pytest.mark.parametrize(
    "argument,error,overrides", BAD_CALLS, ids=[f"{a}-{e.__name__}-{i}" for i, (a, e, _) in enumerate(BAD_CALLS)]
)
def test_bad_input_names_the_argument(argument, error, overrides):
    with pytest.raises(error, match=argument):
        _call(**overrides)


def test_environment_variable_selects_backend(monkeypatch):
    monkeypatch.setenv("MKEFAST_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="MKEFAST_BACKEND"):
        _call()
    monkeypatch.setenv("MKEFAST_BACKEND", "reference")
    _call()  # explicit and valid


def test_named_backend_that_cannot_run_raises():
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: the cuda backend may run")
    with pytest.raises(BackendUnavailableError, match="cuda"):
        _call(backend="cuda")


# ---------------------------------------------------------------- the general op (docs/math.md, Options)

def _oracle_parts(fused, unimodal, labels, labeled, pseudo, **kwargs):
    lb, ulb = soft_pu_naive(fused, unimodal, labels, labeled, pseudo, **kwargs)
    return lb, ulb


GENERAL_CASES = {
    "queue": dict(b_a=5, b_c=9),
    "more_anchors": dict(b_a=8, b_c=5),
    "exclude": dict(b_a=7, b_c=7, exclude_diagonal=True),
    "exclude_queue": dict(b_a=4, b_c=9, exclude_diagonal=True),
    "symmetric": dict(b_a=6, b_c=6, symmetric=True),
    "symmetric_exclude": dict(b_a=6, b_c=6, symmetric=True, exclude_diagonal=True),
    "single": dict(b_a=1, b_c=1),
    "single_excluded": dict(b_a=1, b_c=1, exclude_diagonal=True),
}


@pytest.mark.parametrize("case", list(GENERAL_CASES))
@pytest.mark.parametrize("pattern", ["all", "none", "pseudo_neg", "one_class"])
@pytest.mark.parametrize("rbf_space,rbf_sigma", [("logit", 1.0), ("phi", 3.0), ("logit", math.inf)])
def test_general_options_match_oracle(case, pattern, rbf_space, rbf_sigma):
    opts = dict(GENERAL_CASES[case])
    b_a, b_c = opts.pop("b_a"), opts.pop("b_c")
    _, unimodal, labels, labeled, pseudo = make_batch(b_c, 4, 2, pattern, seed=b_a + 10 * b_c)
    fused = torch.randn(b_a, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(b_a))
    kwargs = dict(temperature=0.4, rbf_sigma=rbf_sigma, rbf_space=rbf_space, **opts)
    s, z = fused.clone().requires_grad_(), unimodal.clone().requires_grad_()
    parts = mkefast.soft_pu_loss(s, z, labels, labeled, pseudo, reduction="none", return_parts=True,
                                 backend="reference", **kwargs)
    s2, z2 = fused.clone().requires_grad_(), unimodal.clone().requires_grad_()
    lb, ulb = soft_pu_naive(s2, z2, labels, labeled, pseudo, **kwargs)
    torch.testing.assert_close(parts.labeled, lb, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(parts.unlabeled, ulb, rtol=1e-12, atol=1e-12)
    upstream = torch.randn(lb.shape, dtype=torch.float64)
    if (lb + ulb).requires_grad:
        got = torch.autograd.grad((parts.loss * upstream).sum(), (s, z))
        want = torch.autograd.grad(((lb + ulb) * upstream).sum(), (s2, z2))
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-12)
    else:
        assert float(parts.loss.detach().abs().sum()) == 0.0


def test_labels_none_is_nothing_labeled_and_labeled_none_is_all_labeled():
    fused, unimodal, labels, _, _ = make_batch(7, 4, 2, "all")
    none = torch.zeros(7, dtype=torch.bool)
    everything = torch.ones(7, dtype=torch.bool)
    a = mkefast.soft_pu_loss(fused, unimodal, backend="reference", reduction="none")
    b = mkefast.soft_pu_loss(fused, unimodal, labels, none, backend="reference", reduction="none")
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = mkefast.soft_pu_loss(fused, unimodal, labels, backend="reference", reduction="none")
    d = mkefast.soft_pu_loss(fused, unimodal, labels, everything, backend="reference", reduction="none")
    torch.testing.assert_close(c, d, rtol=0, atol=0)


def test_symmetric_none_is_the_sum_of_halves():
    fused, unimodal, labels, labeled, pseudo = make_batch(6, 4, 2, "pseudo")
    sym = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, symmetric=True, reduction="none",
                               backend="reference")
    fwd = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, reduction="none", backend="reference")
    rev = torch.cat([mkefast.soft_pu_loss(unimodal[i], fused, labels, labeled, pseudo, reduction="none",
                                          backend="reference") for i in range(2)])
    torch.testing.assert_close(sym, 0.5 * (fwd + rev), rtol=1e-12, atol=1e-12)
    mean = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, symmetric=True, backend="reference")
    torch.testing.assert_close(mean, sym.mean())


def test_queue_candidates_are_in_every_denominator():
    """InfoNCE with a queue (MoCo): cross-entropy over [own candidate, queue] with the own one as target."""
    b, q, d, tau = 5, 11, 6, 0.2
    g = torch.Generator().manual_seed(3)
    fused, keys, queue = (torch.randn(n, d, generator=g, dtype=torch.float64) for n in (b, b, q))
    loss = mkefast.soft_pu_loss(fused, torch.cat([keys, queue]), temperature=tau, rbf_sigma=math.inf,
                                backend="reference")
    s, k, qn = (F.normalize(t, dim=-1) for t in (fused, keys, queue))
    logits = torch.cat([s @ k.T, s @ qn.T], dim=1) / tau
    torch.testing.assert_close(loss, F.cross_entropy(logits, torch.arange(b)), rtol=1e-12, atol=1e-12)


def test_tensor_temperature_gradient_matches_oracle():
    fused, unimodal, labels, labeled, pseudo = make_batch(6, 4, 2, "pseudo_neg", seed=4)
    tau = torch.tensor(0.35, dtype=torch.float64, requires_grad=True)
    loss = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, temperature=tau, rbf_space="phi",
                                rbf_sigma=2.0, backend="reference")
    (got,) = torch.autograd.grad(loss, tau)
    tau2 = torch.tensor(0.35, dtype=torch.float64, requires_grad=True)
    lb, ulb = soft_pu_naive(fused, unimodal, labels, labeled, pseudo, temperature=tau2, rbf_space="phi",
                            rbf_sigma=2.0)
    (want,) = torch.autograd.grad((lb + ulb).mean(), tau2)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # A float temperature gives the same loss as the tensor.
    torch.testing.assert_close(loss, mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, temperature=0.35,
                                                          rbf_space="phi", rbf_sigma=2.0, backend="reference"))


def test_gradcheck_every_input_float64():
    fused, unimodal, labels, labeled, pseudo = make_batch(5, 3, 2, "pseudo_neg", seed=1)
    tau = torch.tensor(0.6, dtype=torch.float64, requires_grad=True)
    fused.requires_grad_()
    unimodal.requires_grad_()

    def fn(s, z, t):
        return mkefast.soft_pu_loss(s, z, labels, labeled, pseudo, temperature=t, reduction="none", rbf_sigma=2.0,
                                    symmetric=True, exclude_diagonal=True, backend="reference")

    assert torch.autograd.gradcheck(fn, (fused, unimodal, tau), eps=1e-6, atol=1e-7)


def test_reference_supports_double_backward_and_torch_func():
    fused, unimodal, labels, labeled, pseudo = make_batch(5, 3, 2, "pseudo", seed=2)
    s = fused.clone().requires_grad_()

    def fn(x):
        return mkefast.soft_pu_loss(x, unimodal, labels, labeled, pseudo, backend="reference")

    assert torch.autograd.gradgradcheck(fn, (s,), eps=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.func.grad(fn)(fused), torch.autograd.grad(fn(s), s)[0])


# ---------------------------------------------------------------- numerics (docs/math.md, Numerics)

def _truth_and_reference(fused, unimodal, labels, labeled, pseudo, **kwargs):
    """The float64 oracle of the float32 inputs, and the reference backend on the float32 inputs."""
    lb, ulb = soft_pu_naive(fused.double(), unimodal.double(), labels, labeled, pseudo, **kwargs)
    s, z = fused.clone().requires_grad_(), unimodal.clone().requires_grad_()
    got = mkefast.soft_pu_loss(s, z, labels, labeled, pseudo, reduction="none", backend="reference", **kwargs)
    return lb + ulb, got, s, z


@pytest.mark.parametrize("case", ["phi_tau_0.01", "sigma_1e-20", "phi_sigma_1e-20"])
def test_reference_is_finite_where_the_truth_is(case):
    kwargs = {"phi_tau_0.01": dict(rbf_space="phi", temperature=0.01, rbf_sigma=1.0),
              "sigma_1e-20": dict(rbf_sigma=1e-20),
              "phi_sigma_1e-20": dict(rbf_space="phi", rbf_sigma=1e-20, temperature=0.5)}[case]
    fused, unimodal, labels, labeled, pseudo = make_batch(9, 5, 2, "pseudo_neg", dtype=torch.float32, seed=7)
    truth, got, s, z = _truth_and_reference(fused, unimodal, labels, labeled, pseudo, **kwargs)
    assert torch.isfinite(truth).all()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), truth, rtol=1e-4, atol=1e-4 * truth.abs().max().item())
    got.sum().backward()
    assert torch.isfinite(s.grad).all() and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("tau", [0.05, 0.03])
def test_phi_fallback_pair_has_unit_weight_close_to_partner(tau):
    """Anchors close to their partners (as after training), phi space, float32: the fallback pair's weight is 1
    by definition, so the gradient matches the float64 truth (the bug of the first version: 3.7e-2 off)."""
    g = torch.Generator().manual_seed(11)
    b, d = 12, 8
    unimodal = torch.randn(2, b, d, generator=g)
    fused = unimodal[0] + 0.01 * torch.randn(b, d, generator=g)
    labeled = torch.zeros(b, dtype=torch.bool)
    labels = torch.zeros(b, dtype=torch.int64)
    kwargs = dict(rbf_space="phi", temperature=tau, rbf_sigma=1.0)
    upstream = torch.randn(2, b)
    s64, z64 = fused.double().requires_grad_(), unimodal.double().requires_grad_()
    lb, ulb = soft_pu_naive(s64, z64, labels, labeled, None, **kwargs)
    want = torch.autograd.grad(((lb + ulb) * upstream.double()).sum(), (s64, z64))
    s, z = fused.clone().requires_grad_(), unimodal.clone().requires_grad_()
    per = mkefast.soft_pu_loss(s, z, labels, labeled, reduction="none", backend="reference", **kwargs)
    got = torch.autograd.grad((per * upstream).sum(), (s, z))
    for gt, w in zip(got, want, strict=True):
        assert (gt.double() - w).abs().max() <= 1e-4 * w.abs().max()
