"""The `reference` backend: plain, differentiable PyTorch on any device, materializing the `[M, B_a, B_c]` logits.

It is the oracle of every other backend, the baseline of every benchmark and the fallback of `auto` on a
device without a fused backend. Unlike the fused backends it is not a custom op: the functional layer calls
`soft_pu_terms` / `cosine_rec_rows` directly and torch's autograd differentiates them, which checks the
fused backends' hand-derived gradients against an independent derivation and also gives double backward and
`torch.func` transforms for free. Low-precision inputs are computed in float32.

Numerics (docs/math.md, "Numerics"): the RBF reference is kept in logit units in both spaces (ρ = log r in
"phi" space), the "phi" weights are formed in log form so that e^ℓ never overflows, weights use 1/σ rather
than 1/(2σ²), the diagonal fallback pair has w = 1 by definition, and the cosine loss scales each row by
its largest entry before any product, so that every result is finite wherever the float64 truth is.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mkefast.ops._common import SoftPUOptions, SoftPUStats, SoftPUTargets, acc_dtype

__all__ = ["cosine_rec_rows", "pair_masks", "soft_pu_terms", "unsupported_reason"]


def unsupported_reason(op: str, device: torch.device, dtype: torch.dtype) -> str | None:
    return None


def pair_masks(targets: SoftPUTargets, exclude_diagonal: bool) -> tuple[Tensor, Tensor, Tensor]:
    """`(P11, P10, diag)`, each `[B_a, B_c]` bool: the dense form of the masks of `SoftPUTargets`."""
    b_a, b_c = targets.anchor_cls.shape[0], targets.cls.shape[0]
    device = targets.cls.device
    partner = torch.arange(b_a, device=device) + targets.diag_offset
    diag = partner[:, None] == torch.arange(b_c, device=device)[None, :]
    a_cls, cls = targets.anchor_cls.to(torch.int64), targets.cls.to(torch.int64)
    both = targets.anchor_labeled[:, None] & targets.labeled[None, :]
    same = a_cls[:, None] == cls[None, :]
    p11 = both & same
    p10 = ~both & (diag | ((a_cls[:, None] >= 0) & same))
    if exclude_diagonal:
        p11 = p11 & ~diag
        p10 = p10 & ~diag
    return p11, p10, diag


def rbf_weights(x: Tensor, ref: Tensor, fallback_pair: Tensor, options: SoftPUOptions) -> Tensor:
    """w = exp(-½((x − r)/σ)²) of logits `x` `[..., B_c]` against references ρ `[..., 1]` (logit units).

    "phi" compares e^x with r = e^ρ in log form: with a = max(x, ρ) and δ = |x − ρ|,
    |e^x − e^ρ| / σ = exp(a − log σ + log(1 − e^{−δ})), which never overflows before it is squared and
    gives w = 1 exactly at δ = 0. The fallback pair (P11 empty, r = x of the instance pair) has w = 1 by
    definition.
    """
    if not options.rbf_enabled:
        return torch.ones_like(x)
    if options.phi:
        log_dist = torch.maximum(x, ref) - options.log_sigma + torch.log(-torch.expm1(-(x - ref).abs()))
        w = torch.exp(-0.5 * torch.exp(2.0 * log_dist))
    else:
        w = torch.exp(-0.5 * ((x - ref) * options.inv_sigma) ** 2)
    return torch.where(fallback_pair, torch.ones_like(w), w)


def soft_pu_terms(
    anchors: Tensor,  # [B_a, d]
    candidates: Tensor,  # [M, B_c, d]
    targets: SoftPUTargets,
    options: SoftPUOptions,
    temperature: Tensor | None = None,
) -> SoftPUStats:
    """One direction of the op, densely; `lb` and `ulb` are differentiable in the inputs and `temperature`.

    ```
    ℓ = s zᵀ / τ                                   [M, B_a, B_c]
    lse_j = logsumexp over the denominator (the instance pair removed when exclude_diagonal)
    lb_j  = lse_j − Σ_{P11} ℓ_jk / |P11|           (0 when P11 is empty)
    ulb_j = (W_j lse_j − Σ_{P10} w_jk ℓ_jk) / |P10|, W_j = Σ_{P10} w_jk   (0 when P10 is empty)
    ```
    w and ρ are constants (computed from detached logits).

    Args:
        temperature: a 0-d tensor τ that replaces `options.temperature` (∂/∂τ then flows through ℓ); a
            tensor temperature is never turned into a Python float, which would break a torch.compile trace.

    Returns:
        `SoftPUStats`, each `[M, B_a]` (ref float64, the others in the accumulation dtype).
    """
    acc = acc_dtype(anchors.dtype)
    s, z = anchors.to(acc), candidates.to(acc)
    tau = options.temperature if temperature is None else temperature.to(acc)
    logits = torch.einsum("jd,mkd->mjk", s, z) / tau
    b_a, b_c = s.shape[0], z.shape[1]
    p11, p10, diag = pair_masks(targets, options.exclude_diagonal)
    p_ok = targets.partner_ok(b_a)
    n11, n10 = targets.n11.to(acc), targets.n10.to(acc)

    # A row whose only candidate is its excluded partner has an empty denominator (lse = -inf); it keeps
    # its partner in the logsumexp below only so that no -inf - -inf reaches the backward, and its terms
    # are 0 because both sets are empty.
    has_denominator = ~p_ok if options.exclude_diagonal and b_c == 1 else torch.ones_like(p_ok)
    if options.exclude_diagonal:
        logits_den = logits.masked_fill(diag & has_denominator[:, None], float("-inf"))
    else:
        logits_den = logits
    lse = torch.logsumexp(logits_den, dim=-1)

    x = logits.detach()
    partner = (torch.arange(b_a, device=s.device) + targets.diag_offset).clamp(max=b_c - 1)
    x_pair = torch.where(p_ok, x[:, torch.arange(b_a, device=s.device), partner], 0.0)
    if options.phi:
        masked = x.masked_fill(~p11, float("-inf"))
        mean_x = torch.logsumexp(masked, dim=-1) - torch.log(n11.clamp(min=1))
    else:
        mean_x = torch.where(p11, x, 0.0).sum(-1) / n11.clamp(min=1)
    fallback = n11 == 0
    ref = torch.where(fallback, x_pair, mean_x)
    w = rbf_weights(x, ref.unsqueeze(-1), fallback[:, None] & diag, options).masked_fill(~p10, 0.0)

    w_sum = w.sum(-1)
    lb = torch.where(n11 > 0, lse - torch.where(p11, logits, 0.0).sum(-1) / n11.clamp(min=1), 0.0)
    ulb = torch.where(n10 > 0, (w_sum * lse - (w * logits).sum(-1)) / n10.clamp(min=1), 0.0)
    stored_lse = torch.where(has_denominator, lse.detach(), float("-inf"))
    return SoftPUStats(lb, ulb, stored_lse, ref.double(), w_sum / n10.clamp(min=1))


def cosine_rec_rows(reconstruction: Tensor, target: Tensor) -> Tensor:
    """Per-row `1 − cos²` of `[..., d]` inputs, differentiable, in the accumulation dtype.

    Each row is divided by its largest magnitude first (a detached scale: the expression is exactly
    invariant to it, the 1e-8 floor rescaled with the rows), so that no norm overflows or underflows.
    """
    acc = acc_dtype(reconstruction.dtype)
    a, b = reconstruction.to(acc), target.to(acc)
    sa = a.detach().abs().amax(-1, keepdim=True)
    sb = b.detach().abs().amax(-1, keepdim=True)
    sa = torch.where(sa > 0, sa, torch.ones_like(sa))
    sb = torch.where(sb > 0, sb, torch.ones_like(sb))
    a, b = a / sa, b / sb
    norms = torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1)
    # The floor may underflow (a zero row against a row near the format's maximum); the smallest normal number
    # then stands in for it, which changes nothing: the numerator is 0 wherever that happens.
    floor = (1e-8 / (sa.squeeze(-1) * sb.squeeze(-1))).clamp(min=torch.finfo(acc).tiny)
    return 1.0 - ((a * b).sum(-1) / torch.maximum(norms, floor)) ** 2
