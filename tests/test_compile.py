"""torch.compile: the losses trace into one graph (custom ops, fake kernels, registered autograd)."""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo
from torch import nn

import mkefast
from mkefast.ops._common import make_targets

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


def _op_cases() -> list[tuple[str, tuple[object, ...]]]:
    torch.manual_seed(0)
    fused = torch.randn(B, D, dtype=torch.float64, requires_grad=True)
    unimodal = torch.randn(M, B, D, dtype=torch.float64, requires_grad=True)
    labels, labeled, pseudo = torch.randint(0, 3, (B,)), torch.rand(B) < 0.5, torch.randint(-1, 3, (B,))
    t = make_targets(labels, labeled, pseudo)
    num_classes = torch.tensor(t.num_classes)
    target_args = (t.cls, labeled, t.n11, t.n10, num_classes)
    rec, tgt = torch.randn(B, D, requires_grad=True), torch.randn(B, D, requires_grad=True)
    return [
        ("soft_pu_targets", (labels, labeled, pseudo)),
        ("soft_pu_fwd", (fused, unimodal, *target_args, 0, 0.1, 1.0, "logit", "reference")),
        ("soft_pu_fwd", (fused[3:], unimodal, *target_args, 3, 0.2, math.inf, "phi", "reference")),
        ("cosine_rec_fwd", (rec, tgt, "reference")),
    ]


@pytest.mark.parametrize(("op", "args"), _op_cases(), ids=["targets", "soft_pu", "soft_pu_row_offset", "cosine"])
def test_opcheck(op: str, args: tuple[object, ...]) -> None:
    """Schema, fake kernel, autograd registration and AOT dispatch of each custom op (torch.library.opcheck)."""
    torch.library.opcheck(getattr(torch.ops.mkefast, op).default, args)
