"""Independent float64 oracles written straight from SPEC.md with Python loops (tiny sizes only).

They share no code with mkefast: masks, references, weights and reductions are spelled out pair by pair.
Autograd through these loops gives the spec's gradients, with w and r detached as the spec requires.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def soft_pu_naive(
    fused: Tensor,
    unimodal: Tensor,
    labels: Tensor,
    labeled: Tensor,
    pseudo_labels: Tensor | None,
    *,
    temperature: float = 0.1,
    rbf_sigma: float = 1.0,
    rbf_space: str = "logit",
    normalize: bool = True,
) -> tuple[Tensor, Tensor]:
    """Per-anchor (lb, ulb), each `[M, B]` float64."""
    s = fused.double()
    z = unimodal.double()
    if z.dim() == 2:
        z = z.unsqueeze(0)
    if normalize:
        s = s / s.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        z = z / z.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    m, b, _ = z.shape
    lab = [bool(x) for x in labeled]
    y = [int(x) for x in labels]
    c = [y[k] if lab[k] else (int(pseudo_labels[k]) if pseudo_labels is not None else -1) for k in range(b)]
    lb_rows, ulb_rows = [], []
    for i in range(m):
        lb_i, ulb_i = [], []
        for j in range(b):
            logits = torch.stack([s[j] @ z[i, k] / temperature for k in range(b)])
            lse = torch.logsumexp(logits, 0)
            p11 = [k for k in range(b) if lab[j] and lab[k] and y[j] == y[k]]
            p10 = [k for k in range(b) if not (lab[j] and lab[k]) and (k == j or (c[j] >= 0 and c[k] == c[j]))]
            x = logits.detach() if rbf_space == "logit" else logits.detach().exp()
            r = sum(x[k] for k in p11) / len(p11) if p11 else x[j]
            lb = sum((lse - logits[k] for k in p11), torch.zeros((), dtype=torch.float64))
            lb = lb / len(p11) if p11 else lb
            ulb = torch.zeros((), dtype=torch.float64)
            for k in p10:
                w = 1.0 if math.isinf(rbf_sigma) else torch.exp(-((x[k] - r) ** 2) / (2 * rbf_sigma**2))
                ulb = ulb + w * (lse - logits[k])
            ulb = ulb / len(p10) if p10 else ulb
            lb_i.append(lb)
            ulb_i.append(ulb)
        lb_rows.append(torch.stack(lb_i))
        ulb_rows.append(torch.stack(ulb_i))
    return torch.stack(lb_rows), torch.stack(ulb_rows)


def cosine_naive(a: Tensor, b: Tensor) -> Tensor:
    """Per-row 1 - cos² in float64, `[..., B]`."""
    a, b = a.double(), b.double()
    den = (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-8)
    return 1 - ((a * b).sum(-1) / den) ** 2
