"""The soft Positive-Unlabeled contrastive loss (SPEC §1): autograd formula and functional API."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mkefast.ops._common import SoftPUOptions, SoftPUTargets
from mkefast.ops._library import resolve
from mkefast.ops._validate import (
    RBF_SPACES,
    REDUCTIONS,
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


class SoftPULossFunction:
    """The autograd of the soft-PU op: per-anchor terms `(lb, ulb)`, each `[M, B_a]` in the accumulation dtype.

    The forward and backward are the custom ops `mkefast::soft_pu_fwd` / `mkefast::soft_pu_bwd` (see
    `mkefast.ops._library`), which dispatch to one backend; `setup_context` and `backward` below are
    registered as the forward op's autograd formula (`torch.library.register_autograd`), so the same code
    runs in eager mode and under `torch.compile`. Only per-row statistics are saved; every backend's
    backward recomputes the pairs it needs.
    """

    @staticmethod
    def apply(
        fused: Tensor,  # [B_a, d]
        unimodal: Tensor,  # [M, B, d]
        targets: SoftPUTargets,
        options: SoftPUOptions,
        backend: str,
    ) -> tuple[Tensor, Tensor]:
        """`(lb, ulb)` of already normalized, validated, contiguous inputs on the backend named `backend`."""
        num_classes = torch.tensor(targets.num_classes, dtype=torch.int64)
        return _per_anchor(fused, unimodal, targets.cls, targets.labeled, targets.n11, targets.n10, num_classes,
                           targets.row_offset, options, backend)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        fused, unimodal, cls, labeled, n11, n10, num_classes, *scalars = inputs
        ctx.save_for_backward(fused, unimodal, cls, labeled, n11, n10, num_classes, *output)
        ctx.scalars = tuple(scalars)  # row_offset, temperature, rbf_sigma, rbf_space, backend

    @staticmethod
    def backward(ctx: Any, grad_lb: Tensor | None, grad_ulb: Tensor | None, *_stats: Tensor | None) -> tuple[
        Tensor | None, ...
    ]:
        fused, unimodal, cls, labeled, n11, n10, num_classes, *stats = ctx.saved_tensors
        needs_fused, needs_unimodal = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        no_grad_inputs = (None,) * 10  # targets, C and the five scalars
        if not (needs_fused or needs_unimodal):
            return (None, None, *no_grad_inputs)
        lb = stats[0]
        grad_lb = lb.new_zeros(lb.shape) if grad_lb is None else grad_lb.to(lb.dtype).contiguous()
        grad_ulb = lb.new_zeros(lb.shape) if grad_ulb is None else grad_ulb.to(lb.dtype).contiguous()
        grads = iter(torch.ops.mkefast.soft_pu_bwd(
            fused, unimodal, cls, labeled, n11, n10, num_classes, *ctx.scalars, stats, grad_lb, grad_ulb,
            needs_fused, needs_unimodal,
        ))
        return (next(grads) if needs_fused else None, next(grads) if needs_unimodal else None, *no_grad_inputs)


torch.library.register_autograd(
    "mkefast::soft_pu_fwd", SoftPULossFunction.backward, setup_context=SoftPULossFunction.setup_context
)


def _per_anchor(
    fused: Tensor, unimodal: Tensor, cls: Tensor, labeled: Tensor, n11: Tensor, n10: Tensor, num_classes: Tensor,
    row_offset: int, options: SoftPUOptions, backend: str,
) -> tuple[Tensor, Tensor]:
    lb, ulb, *_ = torch.ops.mkefast.soft_pu_fwd(
        fused, unimodal, cls, labeled, n11, n10, num_classes, row_offset,
        options.temperature, options.rbf_sigma, options.rbf_space, backend,
    )
    return lb, ulb


def _reduce(per_anchor: Tensor, reduction: str, mean_scale: float | None) -> Tensor:
    if reduction == "mean":
        return per_anchor.mean() if mean_scale is None else per_anchor.sum() * mean_scale
    if reduction == "sum":
        return per_anchor.sum()
    return per_anchor


def reduce_terms(
    lb: Tensor, ulb: Tensor, reduction: str, return_parts: bool, dtype: torch.dtype, mean_scale: float | None = None
) -> Tensor | SoftPUParts:
    """The user-facing result from the per-anchor terms `[M, B_a]`; `mean_scale` replaces 1/(M·B_a) of "mean"."""
    if not return_parts:
        return _reduce(lb + ulb, reduction, mean_scale).to(dtype)
    lb_r, ulb_r = _reduce(lb, reduction, mean_scale), _reduce(ulb, reduction, mean_scale)
    return SoftPUParts((lb_r + ulb_r).to(dtype), lb_r.to(dtype), ulb_r.to(dtype))


class SoftPUInputs(NamedTuple):
    """Validated inputs of one process: fused `[B, d]`, unimodal `[M, B, d]`, the `[B]` label arrays."""

    fused: Tensor
    unimodal: Tensor
    labels: Tensor
    labeled: Tensor
    pseudo_labels: Tensor | None
    options: SoftPUOptions
    backend: str


def prepare_soft_pu_inputs(
    fused: object, unimodal: object, labels: object, labeled: object, pseudo_labels: object, *,
    temperature: object, rbf_sigma: object, rbf_space: object, normalize: object, reduction: object,
    return_parts: object, backend: object,
) -> SoftPUInputs:
    """The checks of `soft_pu_loss` (see there), with messages that name the argument, then the normalization.

    The data-dependent check (a labeled sample with a negative class id) runs in `mkefast::soft_pu_targets`,
    so that `torch.compile` traces this function without a graph break.
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
    name = resolve(backend, "soft_pu", device, fused.dtype, d)
    if normalize:
        fused = F.normalize(fused, dim=-1, eps=1e-12)
        unimodal = F.normalize(unimodal, dim=-1, eps=1e-12)
    return SoftPUInputs(fused, unimodal, labels, labeled, pseudo_labels, options, name)


def soft_pu_terms(
    fused: Tensor, unimodal: Tensor, labels: Tensor, labeled: Tensor, pseudo_labels: Tensor | None,
    options: SoftPUOptions, backend: str, row_offset: int = 0,
) -> tuple[Tensor, Tensor]:
    """Per-anchor `(lb, ulb)`, `[M, B_a]`: fused `[B_a, d]` is the row slice at `row_offset` of the `[B]` batch."""
    cls, n11, n10, num_classes = torch.ops.mkefast.soft_pu_targets(labels, labeled, pseudo_labels)
    return _per_anchor(fused.contiguous(), unimodal.contiguous(), cls, labeled, n11, n10, num_classes,
                       row_offset, options, backend)


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

    `torch.compile(..., fullgraph=True)` traces it without a graph break: the backend work, the class-id
    remapping and the label check run inside custom ops (`mkefast.ops._library`). Across processes, see
    `mkefast.distributed.soft_pu_loss`.

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
    args = prepare_soft_pu_inputs(
        fused, unimodal, labels, labeled, pseudo_labels, temperature=temperature, rbf_sigma=rbf_sigma,
        rbf_space=rbf_space, normalize=normalize, reduction=reduction, return_parts=return_parts, backend=backend,
    )
    lb, ulb = soft_pu_terms(args.fused, args.unimodal, args.labels, args.labeled, args.pseudo_labels,
                            args.options, args.backend)
    return reduce_terms(lb, ulb, reduction, return_parts, args.fused.dtype)
