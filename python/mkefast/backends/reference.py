"""The `reference` backend: plain PyTorch on any device, materializing the [M, B, B] logits.

It is the oracle of every other backend and the baseline of every benchmark. Its backward recomputes the
forward under autograd (with w and r detached), so that the analytic gradients of the fused backends are
checked against an independent derivation. Low-precision inputs are computed in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mkefast.ops._common import SoftPUOptions, SoftPUStats, SoftPUTargets

__all__ = ["cosine_rec_bwd", "cosine_rec_fwd", "soft_pu_bwd", "soft_pu_fwd", "unsupported_reason"]


def unsupported_reason(op: str, device: torch.device, dtype: torch.dtype) -> str | None:
    return None


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _soft_pu_terms(fused: Tensor, unimodal: Tensor, targets: SoftPUTargets, options: SoftPUOptions) -> SoftPUStats:
    """The dense computation of SPEC §1; differentiable in `fused` and `unimodal`."""
    acc = _acc(fused.dtype)
    s, z = fused.to(acc), unimodal.to(acc)
    b_a, b = s.shape[0], z.shape[1]
    logits = torch.einsum("jd,mkd->mjk", s, z) / options.temperature  # [M, B_a, B]
    lse = torch.logsumexp(logits, dim=-1)  # [M, B_a]
    nll = lse.unsqueeze(-1) - logits

    # Anchor j is candidate row_offset + j (a rank's slice of the gathered batch under torch.distributed).
    rows = torch.arange(b_a, device=s.device) + targets.row_offset
    cls, lab = targets.cls.to(torch.int64), targets.labeled
    both = lab[rows, None] & lab[None, :]
    same = cls[rows, None] == cls[None, :]
    eye = rows[:, None] == torch.arange(b, device=s.device)[None, :]
    p11 = both & same
    p10 = ~both & (eye | ((cls[rows, None] >= 0) & same))
    n11 = p11.sum(-1).to(acc)
    n10 = p10.sum(-1).to(acc)

    x = logits.detach()
    if options.rbf_space == "phi":
        x = x.exp()
    x_diag = x[:, torch.arange(b_a, device=s.device), rows]
    ref = torch.where(n11 > 0, torch.where(p11, x, 0).sum(-1) / n11.clamp(min=1), x_diag)
    if options.rbf_enabled:
        w = torch.exp(-((x - ref.unsqueeze(-1)) ** 2) * options.inv_two_sigma_sq)
    else:
        w = torch.ones_like(x)
    lb = torch.where(p11, nll, 0).sum(-1) / n11.clamp(min=1)
    ulb = torch.where(p10, w * nll, 0).sum(-1) / n10.clamp(min=1)
    a_ulb = torch.where(p10, w, 0).sum(-1) / n10.clamp(min=1)
    return SoftPUStats(lb, ulb, lse.detach(), ref, a_ulb)


def soft_pu_fwd(fused: Tensor, unimodal: Tensor, targets: SoftPUTargets, options: SoftPUOptions) -> SoftPUStats:
    """Forward of the soft-PU loss. fused `[B_a, d]`, unimodal `[M, B, d]`; returns `[M, B_a]` statistics."""
    with torch.no_grad():
        return _soft_pu_terms(fused, unimodal, targets, options)


def soft_pu_bwd(
    fused: Tensor,
    unimodal: Tensor,
    targets: SoftPUTargets,
    options: SoftPUOptions,
    stats: SoftPUStats,
    grad_lb: Tensor,
    grad_ulb: Tensor,
    needs_fused: bool,
    needs_unimodal: bool,
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of Σ grad_lb·lb + grad_ulb·ulb by autograd through the recomputed dense forward."""
    with torch.enable_grad():
        s = fused.detach().requires_grad_(needs_fused)
        z = unimodal.detach().requires_grad_(needs_unimodal)
        terms = _soft_pu_terms(s, z, targets, options)
        objective = (terms.lb * grad_lb).sum() + (terms.ulb * grad_ulb).sum()
        inputs = [t for t, need in ((s, needs_fused), (z, needs_unimodal)) if need]
        grads = list(torch.autograd.grad(objective, inputs, allow_unused=True))
    out: list[Tensor | None] = []
    for t, need in ((s, needs_fused), (z, needs_unimodal)):
        if not need:
            out.append(None)
            continue
        g = grads.pop(0)
        out.append(torch.zeros_like(t) if g is None else g)
    return out[0], out[1]


def _cosine_rows(a: Tensor, b: Tensor) -> Tensor:
    acc = _acc(a.dtype)
    a, b = a.to(acc), b.to(acc)
    den = torch.clamp(torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1), min=1e-8)
    return 1.0 - ((a * b).sum(-1) / den) ** 2


def cosine_rec_fwd(reconstruction: Tensor, target: Tensor) -> Tensor:
    """Per-row `1 - cos²` of `[N, d]` inputs; `[N]` in the accumulation dtype."""
    with torch.no_grad():
        return _cosine_rows(reconstruction, target)


def cosine_rec_bwd(
    reconstruction: Tensor, target: Tensor, grad_loss: Tensor, needs_reconstruction: bool, needs_target: bool
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of Σ grad_loss·rows by autograd through the recomputed forward."""
    with torch.enable_grad():
        a = reconstruction.detach().requires_grad_(needs_reconstruction)
        b = target.detach().requires_grad_(needs_target)
        rows = _cosine_rows(a, b)
        inputs = [t for t, need in ((a, needs_reconstruction), (b, needs_target)) if need]
        grads = list(torch.autograd.grad((rows * grad_loss).sum(), inputs))
    return (grads.pop(0) if needs_reconstruction else None, grads.pop(0) if needs_target else None)
