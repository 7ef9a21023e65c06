"""Independent float64 oracles written straight from docs/math.md with Python loops (tiny sizes only).

They share no code with mkefast: partners, masks, references, weights and reductions are spelled out pair
by pair in float64 with the textbook formulas (e^ℓ and 1/(2σ²) as written: float64 has the range for the
sizes the tests use). Autograd through these loops gives the exact gradients, with w and r detached.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _direction(
    s: Tensor, z: Tensor, y: list[int], lab: list[bool], cls: list[int], tau: Tensor | float, rbf_sigma: float,
    rbf_space: str, exclude_diagonal: bool,
) -> tuple[Tensor, Tensor]:
    """(lb, ulb) `[M, B_a]` of anchors s `[B_a, d]` against candidates z `[M, B_c, d]`; the per-sample arrays
    y, lab, cls are over the candidates and anchor j reads index j (none past B_c)."""
    m, b_c, _ = z.shape
    b_a = s.shape[0]
    zero = torch.zeros((), dtype=torch.float64)
    lb_rows, ulb_rows = [], []
    for i in range(m):
        lb_i, ulb_i = [], []
        for j in range(b_a):
            has_partner = j < b_c
            lab_j = lab[j] if has_partner else False
            c_j = cls[j] if has_partner else -1
            logits = [s[j] @ z[i, k] / tau for k in range(b_c)]
            den = [k for k in range(b_c) if not (exclude_diagonal and k == j)]
            if not den:
                lb_i.append(zero)
                ulb_i.append(zero)
                continue
            lse = torch.logsumexp(torch.stack([logits[k] for k in den]), 0)
            p11 = [k for k in den if lab_j and lab[k] and c_j == cls[k]]
            p10 = [k for k in den if not (lab_j and lab[k]) and (k == j or (c_j >= 0 and cls[k] == c_j))]
            x = [float(v.detach()) if rbf_space == "logit" else math.exp(float(v.detach())) for v in logits]
            fallback = x[j] if has_partner else 0.0
            r = sum(x[k] for k in p11) / len(p11) if p11 else fallback
            lb = sum((lse - logits[k] for k in p11), zero)
            lb = lb / len(p11) if p11 else lb
            ulb = zero
            for k in p10:
                w = 1.0 if math.isinf(rbf_sigma) else math.exp(-((x[k] - r) ** 2) / (2 * rbf_sigma**2))
                ulb = ulb + w * (lse - logits[k])
            ulb = ulb / len(p10) if p10 else ulb
            lb_i.append(lb)
            ulb_i.append(ulb)
        lb_rows.append(torch.stack(lb_i))
        ulb_rows.append(torch.stack(ulb_i))
    return torch.stack(lb_rows), torch.stack(ulb_rows)


def soft_pu_naive(
    fused: Tensor,
    unimodal: Tensor,
    labels: Tensor | None,
    labeled: Tensor | None,
    pseudo_labels: Tensor | None,
    *,
    temperature: float | Tensor = 0.1,
    rbf_sigma: float = 1.0,
    rbf_space: str = "logit",
    normalize: bool = True,
    exclude_diagonal: bool = False,
    symmetric: bool = False,
) -> tuple[Tensor, Tensor]:
    """Per-anchor (lb, ulb), each `[M, B_a]` float64 (the two halves summed when symmetric)."""
    s = fused.double()
    z = unimodal.double()
    if z.dim() == 2:
        z = z.unsqueeze(0)
    if normalize:
        s = s / s.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        z = z / z.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    tau = temperature.double() if isinstance(temperature, Tensor) else temperature
    b_c = z.shape[1]
    lab = [False] * b_c if labels is None else [True] * b_c if labeled is None else [bool(v) for v in labeled]
    y = [-1] * b_c if labels is None else [int(v) for v in labels]
    cls = [y[k] if lab[k] else (int(pseudo_labels[k]) if pseudo_labels is not None else -1) for k in range(b_c)]
    args = (y, lab, cls, tau, rbf_sigma, rbf_space, exclude_diagonal)
    lb, ulb = _direction(s, z, *args)
    if not symmetric:
        return lb, ulb
    rev = [_direction(z[i], s.unsqueeze(0), *args) for i in range(z.shape[0])]
    lb_rev = torch.cat([r[0] for r in rev])
    ulb_rev = torch.cat([r[1] for r in rev])
    return 0.5 * (lb + lb_rev), 0.5 * (ulb + ulb_rev)


def supcon_pml_formula(embeddings: Tensor, labels: Tensor, ref: Tensor | None = None,
                       ref_labels: Tensor | None = None, temperature: float = 0.1) -> Tensor:
    """pytorch-metric-learning's SupConLoss written out in float64 (cosine similarity, self pairs excluded
    without `ref`, mean over the anchors with a positive)."""
    e = embeddings.double()
    e = e / e.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    single = ref is None
    r = e if single else ref.double() / ref.double().norm(dim=-1, keepdim=True).clamp(min=1e-12)
    rl = labels if single else ref_labels
    losses = []
    for j in range(e.shape[0]):
        keep = [k for k in range(r.shape[0]) if not (single and k == j)]
        pos = [k for k in keep if int(rl[k]) == int(labels[j])]
        if not pos:
            continue
        logits = torch.stack([e[j] @ r[k] / temperature for k in keep])
        lse = torch.logsumexp(logits, 0)
        loss = sum(lse - e[j] @ r[k] / temperature for k in pos) / len(pos)
        losses.append(loss)
    return torch.stack(losses).mean() if losses else torch.zeros((), dtype=torch.float64)


def clip_formula(image: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """open_clip's ClipLoss: ½(CE(s·I·Tᵀ, arange) + CE(s·T·Iᵀ, arange)), in float64."""
    i, t, s = image.double(), text.double(), logit_scale.double()
    logits = s * i @ t.T
    target = torch.arange(i.shape[0])
    return 0.5 * (torch.nn.functional.cross_entropy(logits, target)
                  + torch.nn.functional.cross_entropy(logits.T, target))


def cosine_naive(a: Tensor, b: Tensor) -> Tensor:
    """Per-row 1 - cos² in float64, `[..., B]`."""
    a, b = a.double(), b.double()
    den = (a.norm(dim=-1) * b.norm(dim=-1)).clamp(min=1e-8)
    return 1 - ((a * b).sum(-1) / den) ** 2
