"""The soft Positive-Unlabeled contrastive loss (SPEC §1): autograd Function and functional API."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mkefast.backends import get_backend, resolve_backend
from mkefast.ops._common import SoftPUOptions, SoftPUStats, SoftPUTargets, make_targets
from mkefast.ops._validate import (
    REDUCTIONS,
    RBF_SPACES,
    check_bool,
    check_choice,
    check_float_tensor,
    check_integer_tensor,
    check_positive_float,
    check_same_device,
    check_tensor,
)

__all__ = ["SoftPULossFunction", "SoftPUParts", "soft_pu_loss"]


class SoftPUParts(NamedTuple):
    """`soft_pu_loss(..., return_parts=True)`: the loss and its labeled / unlabeled terms, same reduction."""

    loss: Tensor
    labeled: Tensor
    unlabeled: Tensor


class SoftPULossFunction(torch.autograd.Function):
    """Per-anchor soft-PU terms `(lb, ulb)`, each `[M, B]` in the accumulation dtype, on one backend.

    Inputs are already normalized (if asked) and validated by `soft_pu_loss`. Only per-row statistics are
    saved; the backward of every backend recomputes the pairs it needs.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        fused: Tensor,  # [B, d]
        unimodal: Tensor,  # [M, B, d]
        targets: SoftPUTargets,
        options: SoftPUOptions,
        backend: str,
    ) -> tuple[Tensor, Tensor]:
        impl = get_backend(backend)
        stats: SoftPUStats = impl.soft_pu_fwd(fused, unimodal, targets, options)
        ctx.save_for_backward(fused, unimodal, targets.cls, targets.labeled, targets.n11, targets.n10,
                              stats.lb, stats.ulb, stats.lse, stats.ref, stats.a_ulb)
        ctx.num_classes = targets.num_classes  # type: ignore[attr-defined]
        ctx.options = options  # type: ignore[attr-defined]
        ctx.backend = backend  # type: ignore[attr-defined]
        return stats.lb, stats.ulb

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_lb: Tensor | None, grad_ulb: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        fused, unimodal, cls, labeled, n11, n10, lb, ulb, lse, ref, a_ulb = ctx.saved_tensors  # type: ignore[attr-defined]
        needs_fused, needs_unimodal = ctx.needs_input_grad[0], ctx.needs_input_grad[1]  # type: ignore[attr-defined]
        if not (needs_fused or needs_unimodal):
            return None, None, None, None, None
        zeros = lb.new_zeros(lb.shape)
        grad_lb = zeros if grad_lb is None else grad_lb.to(lb.dtype).contiguous()
        grad_ulb = zeros if grad_ulb is None else grad_ulb.to(lb.dtype).contiguous()
        targets = SoftPUTargets(cls, labeled, n11, n10, ctx.num_classes)  # type: ignore[attr-defined]
        stats = SoftPUStats(lb, ulb, lse, ref, a_ulb)
        impl = get_backend(ctx.backend)  # type: ignore[attr-defined]
        grad_fused, grad_unimodal = impl.soft_pu_bwd(
            fused, unimodal, targets, ctx.options, stats, grad_lb, grad_ulb,  # type: ignore[attr-defined]
            needs_fused, needs_unimodal,
        )
        if needs_fused:
            if grad_fused is None:
                raise RuntimeError(f"mkefast: backend {ctx.backend!r} returned no gradient for fused")  # type: ignore[attr-defined]
            grad_fused = grad_fused.to(fused.dtype)
        if needs_unimodal:
            if grad_unimodal is None:
                raise RuntimeError(f"mkefast: backend {ctx.backend!r} returned no gradient for unimodal")  # type: ignore[attr-defined]
            grad_unimodal = grad_unimodal.to(unimodal.dtype)
        return (grad_fused if needs_fused else None, grad_unimodal if needs_unimodal else None,
                None, None, None)


def _reduce(per_anchor: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return per_anchor.mean()
    if reduction == "sum":
        return per_anchor.sum()
    return per_anchor


def soft_pu_loss(
    fused: Tensor,
    unimodal: Tensor,
    labels: Tensor,
    labeled: Tensor,
    pseudo_labels: Tensor | None = None,
    *,
    temperature: float = 0.1,
    rbf_sigma: float = 1.0,
    rbf_space: str = "logit",
    normalize: bool = True,
    reduction: str = "mean",
    return_parts: bool = False,
    backend: str = "auto",
) -> Tensor | SoftPUParts:
    """Soft Positive-Unlabeled contrastive loss between fused anchors and per-modality candidates.

    For every modality i, anchor j and candidate k (the exact unfused computation):

    ```
    ℓ_jk  = <s_j, z^i_k> / τ                              (s, z L2-normalized when normalize=True)
    lse_j = logsumexp_k ℓ_jk
    c_k   = labels[k] if labeled[k] else (pseudo_labels[k] if given else -1)
    P11(j) = {k : labeled[j] and labeled[k] and labels[j] == labels[k]}
    P10(j) = {k : not (labeled[j] and labeled[k]) and (k == j or (c_j >= 0 and c_k == c_j))}
    x_jk  = ℓ_jk ("logit") or exp(ℓ_jk) ("phi");  r_j = mean_{k∈P11(j)} x_jk, or x_jj if P11(j) is empty
    w_jk  = exp(-(x_jk - r_j)² / (2σ²))                   (constant: no gradient through w or r)
    lb_j  = mean_{k∈P11(j)} (lse_j - ℓ_jk)                (0 if P11(j) is empty)
    ulb_j = (1/|P10(j)|) Σ_{k∈P10(j)} w_jk (lse_j - ℓ_jk) (0 if P10(j) is empty)
    ```

    All labeled gives supervised contrastive (SupCon) loss; nothing labeled with σ = inf gives InfoNCE,
    `F.cross_entropy(ℓ, arange(B))` per modality. Fused backends never build the B×B matrix.

    Args:
        fused: `[B, d]` anchors, float16/bfloat16/float32/float64.
        unimodal: `[M, B, d]` candidates (or `[B, d]` for M = 1), same dtype and device as `fused`.
        labels: `[B]` integer class ids (>= 0 where labeled; ignored elsewhere).
        labeled: `[B]` bool, which samples carry a ground-truth label.
        pseudo_labels: `[B]` integer guesses for the samples (negative: no guess), or None (no guesses).
        temperature: τ > 0.
        rbf_sigma: σ > 0, or `math.inf` for unit weights.
        rbf_space: `"logit"` (σ in logit units) or `"phi"` (the paper's φ = exp(ℓ)).
        normalize: L2-normalize `fused` and `unimodal` first (eps 1e-12); gradients flow through it.
        reduction: `"mean"` over the M·B terms, `"sum"`, or `"none"` for the `[M, B]` terms.
        return_parts: also return the labeled and unlabeled terms, as `SoftPUParts`.
        backend: `"auto"`, `"reference"`, `"cpu"`, `"cuda"` or `"triton"`.

    Returns:
        The loss in the inputs' dtype (a scalar, or `[M, B]` for `reduction="none"`), or `SoftPUParts`.

    Raises:
        TypeError, ValueError: a malformed argument; the message names it.
        BackendUnavailableError: a backend asked for by name cannot run here.
    """
    fused = check_float_tensor("fused", fused)
    unimodal = check_float_tensor("unimodal", unimodal)
    if fused.dim() != 2:
        raise ValueError(f"fused: expected a [B, d] tensor, got shape {list(fused.shape)}")
    if unimodal.dim() == 2:
        unimodal = unimodal.unsqueeze(0)
    if unimodal.dim() != 3:
        raise ValueError(f"unimodal: expected a [M, B, d] or [B, d] tensor, got shape {list(unimodal.shape)}")
    b, d = fused.shape
    if b == 0:
        raise ValueError("fused: expected a non-empty batch (B >= 1), got B = 0")
    if d == 0:
        raise ValueError("fused: expected a feature size d >= 1, got d = 0")
    if unimodal.shape[0] == 0:
        raise ValueError("unimodal: expected at least one modality (M >= 1), got M = 0")
    if tuple(unimodal.shape[1:]) != (b, d):
        raise ValueError(f"unimodal: expected shape [M, {b}, {d}] to match fused [B, d], got {list(unimodal.shape)}")
    if unimodal.dtype != fused.dtype:
        raise TypeError(f"unimodal: expected dtype {fused.dtype} (the dtype of fused), got {unimodal.dtype}")
    labels = check_integer_tensor("labels", labels, (b,))
    labeled = check_tensor("labeled", labeled)
    if labeled.dtype != torch.bool:
        raise TypeError(f"labeled: expected a bool tensor, got {labeled.dtype}")
    if tuple(labeled.shape) != (b,):
        raise ValueError(f"labeled: expected shape [{b}], got {list(labeled.shape)}")
    if pseudo_labels is not None:
        pseudo_labels = check_integer_tensor("pseudo_labels", pseudo_labels, (b,))
    device = check_same_device(fused=fused, unimodal=unimodal, labels=labels, labeled=labeled,
                               pseudo_labels=pseudo_labels)
    options = SoftPUOptions(
        temperature=check_positive_float("temperature", temperature, allow_inf=False),
        rbf_sigma=check_positive_float("rbf_sigma", rbf_sigma, allow_inf=True),
        rbf_space=check_choice("rbf_space", rbf_space, RBF_SPACES),
    )
    check_bool("normalize", normalize)
    check_bool("return_parts", return_parts)
    check_choice("reduction", reduction, REDUCTIONS)
    name = resolve_backend(backend, "soft_pu", device, fused.dtype, d)
    if bool((labeled & (labels < 0)).any()):
        raise ValueError("labels: expected class ids >= 0 for every labeled sample")

    if normalize:
        fused = F.normalize(fused, dim=-1, eps=1e-12)
        unimodal = F.normalize(unimodal, dim=-1, eps=1e-12)
    targets = make_targets(labels, labeled, pseudo_labels)
    lb, ulb = SoftPULossFunction.apply(fused.contiguous(), unimodal.contiguous(), targets, options, name)
    dtype = fused.dtype
    if not return_parts:
        return _reduce(lb + ulb, reduction).to(dtype)
    lb_r, ulb_r = _reduce(lb, reduction), _reduce(ulb, reduction)
    return SoftPUParts((lb_r + ulb_r).to(dtype), lb_r.to(dtype), ulb_r.to(dtype))
