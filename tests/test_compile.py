"""torch.compile: the losses trace into one graph (custom ops, fake kernels, registered autograd)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch._dynamo
from torch import nn

import mkefast
from mkefast.ops._common import make_targets
from mkefast.ops._library import pack_targets

B, D, M = 10, 6, 2


class _Robultish(nn.Module):
    """Two encoders, a fusion layer and a reconstruction head trained with both mkefast losses."""

    def __init__(self, reduction: str, return_parts: bool) -> None:
        super().__init__()
        self.enc = nn.ModuleList(nn.Linear(D, 8) for _ in range(M))
        self.fuse = nn.Linear(8 * M, 8)
        self.rec = nn.Linear(8, 8)
        self.pu = mkefast.SoftPULoss(reduction=reduction, return_parts=return_parts)
        self.cos = mkefast.CosineReconstructionLoss(reduction=reduction)

    def forward(self, x: torch.Tensor, labels: torch.Tensor, labeled: torch.Tensor,
                pseudo: torch.Tensor) -> torch.Tensor:
        h = torch.stack([enc(xi) for enc, xi in zip(self.enc, x, strict=True)])  # [M, B, 8]
        fused = self.fuse(torch.cat(list(h), dim=-1))
        pu = self.pu(fused, h, labels, labeled, pseudo)
        if isinstance(pu, mkefast.SoftPUParts):
            pu = pu.loss + 0.5 * pu.unlabeled
        return pu.sum() + self.cos(self.rec(h), h.detach()).sum()


def _inputs() -> tuple[torch.Tensor, ...]:
    return (torch.randn(M, B, D), torch.randint(0, 3, (B,)), torch.rand(B) < 0.5, torch.randint(-1, 3, (B,)))


def _loss_and_grads(model: nn.Module, fn: object, inputs: tuple[torch.Tensor, ...]) -> list[torch.Tensor]:
    model.zero_grad()
    loss = fn(*inputs)  # type: ignore[operator]
    loss.backward()
    return [loss.detach(), *(p.grad.clone() for p in model.parameters())]


@pytest.mark.parametrize("compiler", ["eager", "aot_eager"])
@pytest.mark.parametrize(("reduction", "return_parts"), [("mean", False), ("none", True), ("sum", False)])
def test_fullgraph_matches_eager(compiler: str, reduction: str, return_parts: bool) -> None:
    torch._dynamo.reset()
    model = _Robultish(reduction, return_parts)
    inputs = _inputs()
    want = _loss_and_grads(model, model, inputs)
    torch._dynamo.utils.counters.clear()
    got = _loss_and_grads(model, torch.compile(model, fullgraph=True, backend=compiler), inputs)
    assert not torch._dynamo.utils.counters["graph_break"]
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)


def test_explain_reports_one_graph() -> None:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(_Robultish("mean", False))(*_inputs())
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons


def test_inductor_matches_eager() -> None:
    torch._dynamo.reset()
    model = _Robultish("mean", False)
    inputs = _inputs()
    want = _loss_and_grads(model, model, inputs)
    got = _loss_and_grads(model, torch.compile(model, fullgraph=True), inputs)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_compiled_label_check_still_raises() -> None:
    """The data-dependent label check runs inside `mkefast::soft_pu_targets`, so compiled code keeps it."""
    torch._dynamo.reset()
    fn = torch.compile(mkefast.soft_pu_loss, fullgraph=True, backend="aot_eager")
    bad = torch.full((B,), -1, dtype=torch.int64)
    with pytest.raises(ValueError, match="labels: expected class ids >= 0"):
        fn(torch.randn(B, D), torch.randn(M, B, D), bad, torch.ones(B, dtype=torch.bool))


def _fused_backend() -> str:
    from mkefast._build import backend_unavailable_reason

    if backend_unavailable_reason("cpu") is not None:
        pytest.skip("the cpu backend is not built")
    return "cpu"


def _op_cases() -> list[tuple[str, tuple[object, ...]]]:
    torch.manual_seed(0)
    fused = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    unimodal = torch.randn(M, B + 3, D, dtype=torch.float64, requires_grad=True)
    labels, labeled, pseudo = torch.randint(0, 3, (B + 3,)), torch.rand(B + 3) < 0.5, torch.randint(-1, 3, (B + 3,))
    t = make_targets(labels, labeled, pseudo, labels[:B], labeled[:B], pseudo[:B], diag_offset=0,
                     exclude_diagonal=True)
    packed = pack_targets(t)
    tau = torch.tensor(0.2, dtype=torch.float64)
    rec, tgt = torch.randn(B, D, requires_grad=True), torch.randn(B, D, requires_grad=True)
    nothing = torch.zeros(B, dtype=torch.int64), torch.zeros(B, dtype=torch.bool)
    partner_only = pack_targets(make_targets(*nothing, None, *nothing, None, diag_offset=0, exclude_diagonal=False))
    sym = unimodal[:, :B].detach()
    lse = torch.randn(M, B, dtype=torch.float64)
    return [
        ("soft_pu_targets", (labels, labeled, pseudo, labels[:B], labeled[:B], pseudo[:B], tau, 0, True)),
        ("soft_pu_fwd", (fused, unimodal, packed, tau, 0, 1.0, "logit", True, "cpu", [False, False, False])),
        ("soft_pu_fwd", (fused[3:], unimodal, packed, tau, 3, math.inf, "phi", False, "cpu", [False, False, False])),
        ("cosine_rec_fwd", (rec, tgt, "cpu")),
        ("soft_pu_sym_fwd", (fused, sym, partner_only, tau, "cpu")),
        ("soft_pu_sym_bwd", (fused, sym, partner_only, tau, "cpu", lse, lse + 0.5,
                             *torch.rand(2, M, B, dtype=torch.float64), [True, True, True])),
    ]


@pytest.mark.parametrize(("op", "index"), [("soft_pu_targets", 0), ("soft_pu_fwd", 1), ("soft_pu_fwd", 2),
                                           ("cosine_rec_fwd", 3), ("soft_pu_sym_fwd", 4), ("soft_pu_sym_bwd", 5)],
                         ids=["targets", "soft_pu", "soft_pu_offset", "cosine", "symmetric", "symmetric_bwd"])
def test_opcheck(op: str, index: int) -> None:
    """Schema, fake kernel and AOT dispatch of each custom op (torch.library.opcheck). The ops carry no
    autograd formula of their own (the autograd Functions of mkefast.ops call them), so they are checked on
    inputs that do not require gradients."""
    _fused_backend()
    args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in _op_cases()[index][1])
    torch.library.opcheck(getattr(torch.ops.mkefast, op).default, args)


CALLS = {
    "soft_pu": lambda b, x, tau: mkefast.soft_pu_loss(x[0], x[1:], torch.arange(x.shape[1]) % 3,
                                                      torch.arange(x.shape[1]) % 2 == 0, temperature=tau,
                                                      backend=b),
    "soft_pu_symmetric": lambda b, x, tau: mkefast.soft_pu_loss(x[0], x[1:], temperature=tau, symmetric=True,
                                                                exclude_diagonal=True, rbf_space="phi", backend=b),
    "supcon": lambda b, x, tau: mkefast.supcon_loss(x[0], torch.arange(x.shape[1]) % 3, temperature=tau,
                                                    backend=b),
    "clip": lambda b, x, tau: mkefast.clip_loss(x[0], x[1], 1.0 / tau, backend=b),
    "cosine": lambda b, x, tau: mkefast.cosine_reconstruction_loss(x[0] * tau, x[1], backend=b),
}


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("call", list(CALLS))
def test_dynamic_shapes_and_tensor_temperature(backend: str, call: str) -> None:
    """`torch.compile(fullgraph=True, dynamic=True)` with a learnable temperature and changing batch sizes
    matches eager mode, loss and every gradient."""
    if backend == "cpu":
        _fused_backend()
    torch._dynamo.reset()
    fn = CALLS[call]
    compiled = torch.compile(fn, fullgraph=True, dynamic=True, backend="aot_eager")
    for n in (5, 8):
        x = torch.randn(3, n, D)
        got, want = [], []
        for f, out in ((compiled, got), (fn, want)):
            xs = x.clone().requires_grad_()
            tau = torch.tensor(0.3, requires_grad=True)
            loss = f(backend, xs, tau)
            loss.backward()
            out.extend([loss.detach(), xs.grad, tau.grad])
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def test_fused_backward_is_not_differentiable_twice() -> None:
    backend = _fused_backend()
    x = torch.randn(6, D, requires_grad=True)
    loss = mkefast.soft_pu_loss(x, torch.randn(M, 6, D), backend=backend)
    with pytest.raises(NotImplementedError, match="backend='reference'"):
        torch.autograd.grad(loss, x, create_graph=True)
    with pytest.raises(NotImplementedError, match=r"torch\.func"):
        torch.func.grad(lambda t: mkefast.soft_pu_loss(t, torch.randn(M, 6, D), backend=backend))(x.detach())


def test_constant_result_marks_as_torch_does() -> None:
    """`constant_result` sets what `torch.compiler.assume_constant_result` sets, and nothing else (it avoids
    importing torch._dynamo at `import mkefast`; a torch that marks functions differently fails here)."""
    from mkefast.ops import _library

    def ours() -> None: ...

    def theirs() -> None: ...

    saved = sys.modules.pop("torch._dynamo")  # the path taken while torch._dynamo is not imported
    try:
        _library.constant_result(ours)
    finally:
        sys.modules["torch._dynamo"] = saved
    torch.compiler.assume_constant_result(theirs)
    assert vars(ours) == vars(theirs) == {"_dynamo_marked_constant": True}


def test_import_does_not_load_dynamo() -> None:
    code = "import sys, mkefast, mkefast.nn; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
