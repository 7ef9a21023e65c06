"""Backend-level problems and the float64 reference of one direction, for the fused backends' tests.

A fused backend's `soft_pu_fwd` / `soft_pu_bwd` are checked here directly (below the functional layer)
against `mkefast.backends.reference.soft_pu_terms` in float64, differentiated by torch's autograd.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from mkefast.backends import reference
from mkefast.ops._common import SoftPUGrads, SoftPUOptions, SoftPUStats, SoftPUTargets, make_targets

LABEL_PATTERNS = ("all", "none", "some", "one_class", "pseudo")


class Problem(NamedTuple):
    anchors: Tensor  # [B_a, d], normalized
    candidates: Tensor  # [M, B_c, d], normalized
    targets: SoftPUTargets


def make_problem(
    b_a: int, b_c: int, m: int, d: int, *, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
    labels: str = "some", exclude_diagonal: bool = False, num_classes: int = 3, diag_offset: int = 0,
    close: float = 0.0, seed: int = 0,
) -> Problem:
    """A random problem; `close` > 0 puts each anchor near its partner's candidates (as after training).

    The per-sample arrays are over the candidates; the anchors read rows diag_offset.. of them (what
    `mkefast.soft_pu_loss` and `mkefast.distributed` build), padded with "unlabeled, no class" past B_c.
    """
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(m, b_c, d, generator=g, dtype=torch.float64)
    s = torch.randn(b_a, d, generator=g, dtype=torch.float64)
    if close > 0:
        rows = torch.arange(b_a) + diag_offset
        ok = rows < b_c
        s[ok] = z[0, rows[ok]] + close * s[ok]
    y = torch.randint(0, num_classes, (b_c,), generator=g)
    if labels == "one_class":
        y = torch.zeros(b_c, dtype=torch.int64)
    lab = {"all": torch.ones(b_c, dtype=torch.bool), "none": torch.zeros(b_c, dtype=torch.bool),
           "some": torch.rand(b_c, generator=g) < 0.4, "one_class": torch.rand(b_c, generator=g) < 0.5,
           "pseudo": torch.rand(b_c, generator=g) < 0.3}[labels]
    pseudo = torch.randint(-1, num_classes, (b_c,), generator=g) if labels == "pseudo" else None
    rows = torch.arange(b_a) + diag_offset
    ok = rows < b_c
    idx = rows.clamp(max=b_c - 1)
    a_y = torch.where(ok, y[idx], -1)
    a_lab = ok & lab[idx]
    a_pseudo = None if pseudo is None else torch.where(ok, pseudo[idx], -1)
    targets = make_targets(y, lab, pseudo, a_y, a_lab, a_pseudo, diag_offset=diag_offset,
                           exclude_diagonal=exclude_diagonal)
    s = torch.nn.functional.normalize(s, dim=-1).to(dtype)
    z = torch.nn.functional.normalize(z, dim=-1).to(dtype)
    targets = SoftPUTargets(*(t.to(device) if isinstance(t, Tensor) else t for t in targets))
    return Problem(s.to(device), z.to(device), targets)


def reference_fwd_bwd(
    problem: Problem, options: SoftPUOptions, grad_lb: Tensor, grad_ulb: Tensor
) -> tuple[SoftPUStats, SoftPUGrads]:
    """The float64 truth of one direction: the statistics and the gradients of Σ grad_lb·lb + grad_ulb·ulb
    with respect to the anchors, the candidates and τ (all float64, on the CPU)."""
    s = problem.anchors.detach().double().cpu().requires_grad_(True)
    z = problem.candidates.detach().double().cpu().requires_grad_(True)
    tau = torch.tensor(options.temperature, dtype=torch.float64, requires_grad=True)
    targets = SoftPUTargets(*(t.cpu() if isinstance(t, Tensor) else t for t in problem.targets))
    stats = reference.soft_pu_terms(s, z, targets, options, tau)
    objective = (stats.lb * grad_lb.double().cpu()).sum() + (stats.ulb * grad_ulb.double().cpu()).sum()
    grads = torch.autograd.grad(objective, (s, z, tau), allow_unused=True)
    grads = tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, (s, z, tau), strict=True))
    detached = SoftPUStats(*(t.detach() for t in stats))
    return detached, SoftPUGrads(*grads)
