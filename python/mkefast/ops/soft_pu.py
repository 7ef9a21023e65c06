"""The general contrastive op (docs/math.md, "The general op"): autograd Function and functional API.

Every call takes the same path: `prepare_soft_pu` (validate, normalize, build the per-sample arrays) →
`soft_pu_terms` (the per-anchor terms of each direction: `SoftPULossFunction` over a fused backend's custom
ops, or the differentiable `reference` backend) → `reduce_terms`. `supcon_loss`, `clip_loss` and
`mkefast.distributed` are thin layers over the same three steps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from mkefast.backends import reference
from mkefast.ops._common import SoftPUOptions, SoftPUTargets
from mkefast.ops._library import CHUNKED_MIN_DIM, forms_grad_in_forward, has_symmetric_pass, resolve
from mkefast.ops._validate import (
    RBF_SPACES,
    REDUCTIONS,
    check_backend,
    check_bool,
    check_bool_tensor,
    check_choice,
    check_float_tensor,
    check_integer_tensor,
    check_positive_float,
    check_same_device,
    check_scalar,
)

__all__ = [
    "SoftPUConfig",
    "SoftPULossFunction",
    "SoftPUParts",
    "SoftPUProblem",
    "SymmetricInfoNCEFunction",
    "direction_terms",
    "prepare_soft_pu",
    "reduce_terms",
    "soft_pu_loss",
    "soft_pu_terms",
    "targets_of",
]


class SoftPUParts(NamedTuple):
    """`soft_pu_loss(..., return_parts=True)`: the loss and its labeled / unlabeled terms, same reduction."""

    loss: Tensor
    labeled: Tensor
    unlabeled: Tensor


@dataclass(frozen=True)
class SoftPUConfig:
    """Everything a call chose besides its tensors and its temperature (which may be learnable)."""

    rbf_sigma: float = 1.0
    rbf_space: str = "logit"
    exclude_diagonal: bool = False
    symmetric: bool = False
    # Nothing labeled and no pseudo labels: an anchor's only positive is its partner (InfoNCE).
    partner_only: bool = False
    reduction: str = "mean"
    return_parts: bool = False
    backend: str = "reference"  # resolved: never "auto"

    def options(self, temperature: float = math.nan) -> SoftPUOptions:
        """The backend-level options; `temperature` is NaN where a tensor carries it."""
        return SoftPUOptions(temperature, self.rbf_sigma, self.rbf_space, self.exclude_diagonal)


class SoftPUProblem(NamedTuple):
    """A validated call: anchors `[B_a, d]`, candidates `[M, B_c, d]` (normalized when asked), the per-sample
    arrays over the candidates and over the anchors, the temperature and the configuration."""

    anchors: Tensor
    candidates: Tensor
    labels: Tensor  # [B_c] int64
    labeled: Tensor  # [B_c] bool
    pseudo_labels: Tensor | None  # [B_c] int64
    anchor_labels: Tensor  # [B_a] int64
    anchor_labeled: Tensor  # [B_a] bool
    anchor_pseudo: Tensor | None  # [B_a] int64
    temperature: float | Tensor
    config: SoftPUConfig


def _refuse_double_backward(backend: str) -> None:
    """The fused backends' backward is not itself differentiable: say so where autograd would record it."""
    if torch.is_grad_enabled():
        raise NotImplementedError(
            f"mkefast: the {backend!r} backend's backward is not itself differentiable: double backward "
            "(create_graph=True) and torch.func transforms need backend='reference' (docs/math.md, Gradients)")


def _tensor_temperature(temperature: float | Tensor) -> Tensor:
    """τ as the custom ops take it: a tensor (a float becomes a 0-d float64 one)."""
    return temperature if isinstance(temperature, Tensor) else torch.scalar_tensor(temperature, dtype=torch.float64)


class SoftPULossFunction(torch.autograd.Function):
    """One direction of the op on a fused backend: `(lb, ulb, lse, ref, a_ulb)`, each `[M, B_a]`.

    Forward and backward are the custom ops `mkefast::soft_pu_fwd` / `mkefast::soft_pu_bwd`
    (`mkefast.ops._library`), so `torch.compile` sees two opaque nodes. Only the per-row statistics are
    saved and the backend's backward recomputes the pairs, unless `precompute` names gradients that the
    forward pass forms while it holds the logits (for a loss reduced with one weight per term, docs/math.md
    "Gradients"); the backward then only scales them. Gradients flow to the anchors, the candidates and a
    tensor temperature; lse, ref and a_ulb are not differentiable.
    """

    @staticmethod
    def forward(
        anchors: Tensor,  # [B_a, d]
        candidates: Tensor,  # [M, B_c, d]
        temperature: Tensor,  # 0-d
        targets: list[Tensor],  # pack_targets
        diag_offset: int,
        config: SoftPUConfig,
        precompute: list[bool],  # anchors, candidates, temperature
    ) -> tuple[Tensor, ...]:
        return tuple(torch.ops.mkefast.soft_pu_fwd(anchors, candidates, targets, temperature, diag_offset,
                                                   config.rbf_sigma, config.rbf_space, config.exclude_diagonal,
                                                   config.backend, precompute))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        anchors, candidates, temperature, targets, diag_offset, config, precompute = inputs
        ctx.save_for_backward(anchors, candidates, temperature, *targets, *output)
        ctx.num_targets, ctx.diag_offset, ctx.config, ctx.precompute = len(targets), diag_offset, config, precompute
        ctx.mark_non_differentiable(*output[2:])

    @staticmethod
    def backward(ctx: Any, grad_lb: Tensor | None, grad_ulb: Tensor | None, *_: Any) -> tuple[Tensor | None, ...]:
        anchors, candidates, temperature, *rest = ctx.saved_tensors
        targets, stats, precomputed = rest[: ctx.num_targets], rest[ctx.num_targets: ctx.num_targets + 5], rest[
            ctx.num_targets + 5:]
        needs = [bool(n) for n in ctx.needs_input_grad[:3]]
        none = (None, None, None, None)
        if not any(needs):
            return (None, None, None, *none)
        _refuse_double_backward(ctx.config.backend)
        lb = stats[0]
        grad_lb = torch.zeros_like(lb) if grad_lb is None else grad_lb.to(lb.dtype)
        grad_ulb = torch.zeros_like(lb) if grad_ulb is None else grad_ulb.to(lb.dtype)
        config: SoftPUConfig = ctx.config
        if needs != list(ctx.precompute):
            precomputed = []  # the forward formed other gradients than the ones asked for now
        grads = iter(torch.ops.mkefast.soft_pu_bwd(
            anchors, candidates, list(targets), temperature, ctx.diag_offset, config.rbf_sigma, config.rbf_space,
            config.exclude_diagonal, config.backend, list(stats), grad_lb, grad_ulb, needs, list(precomputed),
        ))
        return (*(next(grads) if need else None for need in needs), *none)


class SymmetricInfoNCEFunction(torch.autograd.Function):
    """Both directions of symmetric InfoNCE (nothing labeled, no pseudo labels, B_a = B_c, the diagonal kept) on
    a backend with the one-pass hooks: `(ulb, ulb_rev, lse, lse_rev)`, each `[M, B]` (lb is 0 both ways).

    The reverse direction's logits are the transpose of the forward's, so one pass over the pairs gives both
    directions' terms (the column log-sum-exp accumulated chunk by chunk) and one backward pass both
    directions' gradients: 4 GEMM-equivalents for forward and backward, where two directions of
    `SoftPULossFunction` take 6 (docs/math.md, "Symmetric InfoNCE in one pass"). Any upstream gradients.
    """

    @staticmethod
    def forward(anchors: Tensor, candidates: Tensor, temperature: Tensor, targets: list[Tensor],
                config: SoftPUConfig) -> tuple[Tensor, ...]:
        return tuple(torch.ops.mkefast.soft_pu_sym_fwd(anchors, candidates, targets, temperature, config.backend))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
        anchors, candidates, temperature, targets, config = inputs
        ctx.save_for_backward(anchors, candidates, temperature, output[2], output[3], *targets)
        ctx.config = config
        ctx.mark_non_differentiable(*output[2:])

    @staticmethod
    def backward(ctx: Any, grad_ulb: Tensor | None, grad_ulb_rev: Tensor | None, *_: Any,
                 ) -> tuple[Tensor | None, ...]:
        anchors, candidates, temperature, lse, lse_rev, *targets = ctx.saved_tensors
        needs = [bool(n) for n in ctx.needs_input_grad[:3]]
        if not any(needs):
            return (None, None, None, None, None)
        _refuse_double_backward(ctx.config.backend)
        grad_ulb = torch.zeros_like(lse) if grad_ulb is None else grad_ulb
        grad_ulb_rev = torch.zeros_like(lse) if grad_ulb_rev is None else grad_ulb_rev
        grads = iter(torch.ops.mkefast.soft_pu_sym_bwd(anchors, candidates, list(targets), temperature,
                                                       ctx.config.backend, lse, lse_rev, grad_ulb, grad_ulb_rev,
                                                       needs))
        return (*(next(grads) if need else None for need in needs), None, None)


def _per_sample(
    n: int, b_c: int, labels: Tensor, labeled: Tensor, pseudo: Tensor | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    """The arrays of anchors 0..n-1 (their partners' rows); anchors past B_c: unlabeled, no class."""
    k = min(n, b_c)
    pad = n - k

    def cut(t: Tensor, fill: int | bool) -> Tensor:
        return torch.cat([t[:k], t.new_full((pad,), fill)]) if pad else t[:k]

    return cut(labels, -1), cut(labeled, False), None if pseudo is None else cut(pseudo, -1)


def prepare_soft_pu(
    fused: object, unimodal: object, labels: object, labeled: object, pseudo_labels: object, *,
    temperature: object, rbf_sigma: object, rbf_space: object, normalize: object, reduction: object,
    return_parts: object, symmetric: object, exclude_diagonal: object, backend: object,
) -> SoftPUProblem:
    """The checks of `soft_pu_loss` (see there), with messages that name the argument, then the normalization.

    The data-dependent checks (a labeled sample with a negative class id, a tensor temperature's value) run
    in `mkefast::soft_pu_targets`, so that `torch.compile` traces this function without a graph break.
    """
    fused = check_float_tensor("fused", fused)
    unimodal = check_float_tensor("unimodal", unimodal)
    if fused.dim() != 2:
        raise ValueError(f"fused: expected a [B, d] tensor, got shape {list(fused.shape)}")
    if unimodal.dim() == 2:
        unimodal = unimodal.unsqueeze(0)
    if unimodal.dim() != 3:
        raise ValueError(f"unimodal: expected a [M, B, d] or [B, d] tensor, got shape {list(unimodal.shape)}")
    b_a, d = fused.shape
    m, b_c = unimodal.shape[0], unimodal.shape[1]
    if b_a == 0:
        raise ValueError("fused: expected a non-empty batch (B >= 1), got B = 0")
    if d == 0:
        raise ValueError("fused: expected a feature size d >= 1, got d = 0")
    if m == 0:
        raise ValueError("unimodal: expected at least one modality (M >= 1), got M = 0")
    if b_c == 0:
        raise ValueError("unimodal: expected at least one candidate (B_c >= 1), got B_c = 0")
    if unimodal.shape[2] != d:
        raise ValueError(f"unimodal: expected feature size {d} (that of fused), got shape {list(unimodal.shape)}")
    if unimodal.dtype != fused.dtype:
        raise TypeError(f"unimodal: expected dtype {fused.dtype} (the dtype of fused), got {unimodal.dtype}")
    if labels is None:
        if labeled is not None:
            raise ValueError("labeled: expected None when labels is None (nothing is labeled then)")
        labels_t = torch.zeros(b_c, dtype=torch.int64, device=fused.device)
        labeled_t = torch.zeros(b_c, dtype=torch.bool, device=fused.device)
    else:
        labels_t = check_integer_tensor("labels", labels, (b_c,))
        labeled_t = (torch.ones(b_c, dtype=torch.bool, device=labels_t.device) if labeled is None
                     else check_bool_tensor("labeled", labeled, (b_c,)))
    pseudo = None if pseudo_labels is None else check_integer_tensor("pseudo_labels", pseudo_labels, (b_c,))
    device = check_same_device(fused=fused, unimodal=unimodal, labels=labels_t, labeled=labeled_t,
                               pseudo_labels=pseudo)
    tau = check_scalar("temperature", temperature)
    if isinstance(tau, Tensor) and tau.device != device and tau.device.type != "cpu":
        raise ValueError(f"temperature: expected a tensor on {device} or the CPU, got {tau.device}")
    symmetric = check_bool("symmetric", symmetric)
    if symmetric and b_c != b_a:
        raise ValueError(f"symmetric: needs as many candidates as anchors (B_c == B_a), got B_c = {b_c}, "
                         f"B_a = {b_a}")
    # A Python branch, so that torch.compile guards on a symbolic d and `resolve` sees a constant.
    wide = True if d >= CHUNKED_MIN_DIM else False  # noqa: SIM210
    config = SoftPUConfig(
        rbf_sigma=check_positive_float("rbf_sigma", rbf_sigma, allow_inf=True),
        rbf_space=check_choice("rbf_space", rbf_space, RBF_SPACES),
        exclude_diagonal=check_bool("exclude_diagonal", exclude_diagonal),
        symmetric=symmetric,
        partner_only=labels is None and pseudo is None,
        reduction=check_choice("reduction", reduction, REDUCTIONS),
        return_parts=check_bool("return_parts", return_parts),
        backend=resolve(check_backend(backend), "soft_pu", device, fused.dtype, wide),
    )
    if check_bool("normalize", normalize):
        fused = F.normalize(fused, dim=-1, eps=1e-12)
        unimodal = F.normalize(unimodal, dim=-1, eps=1e-12)
    anchor_arrays = _per_sample(b_a, b_c, labels_t.to(torch.int64), labeled_t, pseudo)
    return SoftPUProblem(fused, unimodal, labels_t.to(torch.int64), labeled_t, pseudo, *anchor_arrays, tau, config)


def targets_of(problem: SoftPUProblem, diag_offset: int = 0) -> list[Tensor]:
    """The packed targets (`mkefast.ops._library.pack_targets`) of a prepared call, by the custom op."""
    tau = problem.temperature.detach() if isinstance(problem.temperature, Tensor) else None
    return torch.ops.mkefast.soft_pu_targets(
        problem.labels, problem.labeled, problem.pseudo_labels, problem.anchor_labels, problem.anchor_labeled,
        problem.anchor_pseudo, tau, diag_offset, problem.config.exclude_diagonal,
    )


def direction_terms(
    anchors: Tensor, candidates: Tensor, targets: list[Tensor], temperature: float | Tensor, diag_offset: int,
    config: SoftPUConfig,
) -> tuple[Tensor, Tensor]:
    """`(lb, ulb)`, each `[M, B_a]` in the accumulation dtype, of one direction on the configured backend."""
    if config.backend == "reference":
        # The reference backend never reads num_classes (it is unknown while torch.compile traces).
        cls, labeled, anchor_cls, anchor_labeled, n11, n10 = targets[:6]
        unpacked = SoftPUTargets(cls, labeled, anchor_cls, anchor_labeled, n11, n10, -1, diag_offset)
        tensor_tau = temperature if isinstance(temperature, Tensor) else None
        options = config.options(math.nan if tensor_tau is not None else temperature)  # type: ignore[arg-type]
        stats = reference.soft_pu_terms(anchors, candidates, unpacked, options, tensor_tau)
        return stats.lb, stats.ulb
    tau = _tensor_temperature(temperature)
    lb, ulb, *_ = SoftPULossFunction.apply(anchors.contiguous(), candidates.contiguous(), tau, targets, diag_offset,
                                          config, _precompute(config, anchors, candidates, tau))
    return lb, ulb


def _precompute(config: SoftPUConfig, anchors: Tensor, candidates: Tensor, temperature: Tensor) -> list[bool]:
    """The gradients to form in the forward pass: those autograd will ask for, when the backend can form them
    there and the call's reduction gives every term the same upstream gradient ("mean" or "sum" without
    parts; the backward checks it, and recomputes otherwise)."""
    needs = [torch.is_grad_enabled() and t.requires_grad for t in (anchors, candidates, temperature)]
    uniform = config.reduction != "none" and not config.return_parts
    if not (uniform and any(needs) and forms_grad_in_forward(config.backend)):
        return [False, False, False]
    return needs


def soft_pu_terms(problem: SoftPUProblem, diag_offset: int = 0) -> tuple[Tensor, Tensor]:
    """Per-anchor `(lb, ulb)` `[M, B_a]` of a prepared call, both directions averaged when symmetric."""
    targets = targets_of(problem, diag_offset)
    config = problem.config
    if (config.symmetric and config.partner_only and not config.exclude_diagonal and diag_offset == 0
            and has_symmetric_pass(config.backend)):
        ulb, ulb_rev, *_ = SymmetricInfoNCEFunction.apply(problem.anchors.contiguous(),
                                                          problem.candidates.contiguous(),
                                                          _tensor_temperature(problem.temperature), targets, config)
        return torch.zeros_like(ulb), 0.5 * (ulb + ulb_rev)
    args = (targets, problem.temperature, diag_offset, config)
    lb, ulb = direction_terms(problem.anchors, problem.candidates, *args)
    if not config.symmetric:
        return lb, ulb
    reverse = [direction_terms(z, problem.anchors.unsqueeze(0), *args) for z in problem.candidates.unbind(0)]
    lb_rev = torch.cat([r[0] for r in reverse])
    ulb_rev = torch.cat([r[1] for r in reverse])
    return 0.5 * (lb + lb_rev), 0.5 * (ulb + ulb_rev)


def _reduce(per_anchor: Tensor, reduction: str, mean_scale: float | Tensor | None) -> Tensor:
    if reduction == "mean":
        return per_anchor.mean() if mean_scale is None else per_anchor.sum() * mean_scale
    if reduction == "sum":
        return per_anchor.sum()
    return per_anchor


def reduce_terms(
    lb: Tensor, ulb: Tensor, reduction: str, return_parts: bool, dtype: torch.dtype,
    mean_scale: float | Tensor | None = None,
) -> Tensor | SoftPUParts:
    """The user-facing result from the per-anchor terms; `mean_scale` replaces 1/numel of "mean"."""
    if not return_parts:
        return _reduce(lb + ulb, reduction, mean_scale).to(dtype)
    lb_r, ulb_r = _reduce(lb, reduction, mean_scale), _reduce(ulb, reduction, mean_scale)
    return SoftPUParts((lb_r + ulb_r).to(dtype), lb_r.to(dtype), ulb_r.to(dtype))


def soft_pu_loss(
    fused: Tensor,
    unimodal: Tensor,
    labels: Tensor | None = None,
    labeled: Tensor | None = None,
    pseudo_labels: Tensor | None = None,
    *,
    temperature: float | Tensor = 0.1,
    rbf_sigma: float = 1.0,
    rbf_space: str = "logit",
    normalize: bool = True,
    reduction: str = "mean",
    return_parts: bool = False,
    symmetric: bool = False,
    exclude_diagonal: bool = False,
    backend: str = "auto",
) -> Tensor | SoftPUParts:
    """Soft Positive-Unlabeled contrastive loss; with its options, also SupCon, NT-Xent, InfoNCE, CLIP and queues.

    For every modality i, anchor j and candidate k (docs/math.md, "The general op"; the exact unfused
    computation):

    ```
    ℓ_jk  = <s_j, z^i_k> / τ                       (s, z L2-normalized when normalize=True)
    partner(j) = candidate j (when j < B_c)         D(j) = all candidates, minus the partner if exclude_diagonal
    c_k   = labels[k] if labeled[k] else (pseudo_labels[k] if given else -1)
    lse_j = log Σ_{k∈D(j)} exp(ℓ_jk)
    P11(j) = {k ∈ D(j) : labeled[j] and labeled[k] and c_j == c_k}
    P10(j) = {k ∈ D(j) : not (labeled[j] and labeled[k]) and (k == partner(j) or (c_j >= 0 and c_k == c_j))}
    x_jk  = ℓ_jk ("logit") or exp(ℓ_jk) ("phi");   r_j = mean_{k∈P11(j)} x_jk, or x of the partner pair
    w_jk  = exp(-½ ((x_jk - r_j) / σ)²)             (constant: no gradient through w or r; 1 on the fallback pair)
    lb_j  = mean_{k∈P11(j)} (lse_j - ℓ_jk)          (0 if P11(j) is empty)
    ulb_j = (1/|P10(j)|) Σ_{k∈P10(j)} w_jk (lse_j - ℓ_jk)   (0 if P10(j) is empty)
    ```

    Special cases (exact): everything labeled is SupCon; nothing labeled with σ = inf is InfoNCE,
    `F.cross_entropy(ℓ, arange(B))` per modality; `symmetric=True` averages it with the reverse direction
    (CLIP); candidates past B_a are a queue (MoCo). See `mkefast.supcon_loss` and `mkefast.clip_loss`.
    Fused backends never build the B_a×B_c matrix. `torch.compile(fullgraph=True, dynamic=True)` traces
    it without a graph break. Across processes, see `mkefast.distributed.soft_pu_loss`.

    Args:
        fused: `[B_a, d]` anchors, float16/bfloat16/float32/float64.
        unimodal: `[M, B_c, d]` candidates (or `[B_c, d]` for M = 1), same dtype and device as `fused`; the
            first min(B_a, B_c) are the anchors' own samples, the rest a queue.
        labels: `[B_c]` integer class ids (>= 0 where labeled; ignored elsewhere), or None: nothing labeled.
        labeled: `[B_c]` bool, which samples carry a ground-truth label; None with labels given: all of them.
        pseudo_labels: `[B_c]` integer guesses (negative: no guess), or None (no guesses).
        temperature: τ, a float >= 2⁻¹²⁶ or a 0-d floating tensor (learnable: ∂L/∂τ is returned).
        rbf_sigma: σ >= 2⁻¹²⁶, or `math.inf` for unit weights.
        rbf_space: `"logit"` (σ in logit units) or `"phi"` (the paper's φ = exp(ℓ)).
        normalize: L2-normalize `fused` and `unimodal` first (eps 1e-12); gradients flow through it.
        reduction: `"mean"` over the M·B_a terms, `"sum"`, or `"none"` for the `[M, B_a]` terms.
        return_parts: also return the labeled and unlabeled terms, as `SoftPUParts`.
        symmetric: average with the reverse direction (z^i as anchors, `fused` as candidates); needs
            B_c == B_a; "none" then gives the per-sample sum of the two halves.
        exclude_diagonal: remove each anchor's own candidate from its denominator and positive sets (the
            single-view convention, when anchors and candidates are the same embeddings).
        backend: `"auto"`, `"reference"`, `"cpu"`, `"cuda"` or `"triton"`.

    Returns:
        The loss in the inputs' dtype (a scalar, or `[M, B_a]` for `reduction="none"`), or `SoftPUParts`.

    Raises:
        TypeError, ValueError: a malformed argument; the message names it.
        BackendUnavailableError: a backend asked for by name cannot run here.
        NotImplementedError: double backward or `torch.func` through a fused backend (use "reference").
    """
    problem = prepare_soft_pu(
        fused, unimodal, labels, labeled, pseudo_labels, temperature=temperature, rbf_sigma=rbf_sigma,
        rbf_space=rbf_space, normalize=normalize, reduction=reduction, return_parts=return_parts,
        symmetric=symmetric, exclude_diagonal=exclude_diagonal, backend=backend,
    )
    lb, ulb = soft_pu_terms(problem)
    return reduce_terms(lb, ulb, problem.config.reduction, problem.config.return_parts, problem.anchors.dtype)
