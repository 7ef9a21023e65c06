"""The fused backends' host functions as `torch.library` custom ops, so that `torch.compile` sees each as one node.

Every op takes tensors and scalars only (the `SoftPUTargets` / `SoftPUOptions` structures are packed by
`pack_targets` / the scalar arguments and rebuilt inside), runs eagerly on the backend named by its
`backend` argument, and has a fake implementation that gives the output shapes and dtypes without touching
data. Everything data-dependent happens inside an op:

- `mkefast::soft_pu_targets` checks the labels (and a tensor temperature) and builds the dense class ids
  and the mask sizes (`torch.unique`, `bincount`); the number of classes comes back as a 0-d int64 tensor
  on the CPU, so that no output shape depends on data.
- `mkefast::soft_pu_fwd` / `mkefast::soft_pu_bwd` and `mkefast::cosine_rec_fwd` / `mkefast::cosine_rec_bwd`
  call the backend module's host functions (one direction of the op each).

The autograd formulas are the `torch.autograd.Function`s of `mkefast.ops.soft_pu` / `mkefast.ops.cosine_rec`,
which call these ops; the `reference` backend is plain differentiable PyTorch and never goes through them.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import torch
from torch import Tensor

from mkefast.backends import CHUNKED_MIN_DIM, get_backend, resolve_backend
from mkefast.ops._common import SoftPUGrads, SoftPUOptions, SoftPUStats, SoftPUTargets, acc_dtype, make_targets

_F = TypeVar("_F", bound=Callable[..., Any])


def constant_result(fn: _F) -> _F:
    """`torch.compiler.assume_constant_result`, without importing torch._dynamo at `import mkefast`.

    The public decorator imports torch._dynamo (about 2.6 s of CPU, paid by every `mkefast` command and every
    benchmark subprocess) only to set the attribute below, which torch.compile reads when it meets the
    function. Once torch._dynamo is loaded the public decorator is used as is; tests/test_compile.py checks
    that it still sets exactly this attribute, and that the compiled graphs do not break at these functions.
    """
    if "torch._dynamo" in sys.modules:
        return torch.compiler.assume_constant_result(fn)
    fn._dynamo_marked_constant = True  # type: ignore[attr-defined]
    return fn


__all__ = ["CHUNKED_MIN_DIM", "constant_result", "cosine_rec_bwd", "cosine_rec_fwd", "forms_grad_in_forward",
           "has_symmetric_pass", "pack_targets", "resolve", "soft_pu_bwd", "soft_pu_fwd", "soft_pu_sym_bwd",
           "soft_pu_sym_fwd", "soft_pu_targets", "unpack_targets"]


@constant_result
def resolve(name: str, op: str, device: torch.device, dtype: torch.dtype, wide: bool) -> str:
    """`mkefast.backends.resolve_backend`, which `torch.compile` evaluates once while tracing.

    Its result depends only on constants of the trace (the arguments) and on the build and the environment,
    so the compiled graph keeps the backend chosen at trace time (a later change of `MKEFAST_BACKEND` needs
    `torch.compiler.reset()`). Tracing through it instead would break the graph at its imports. Callers
    pass `wide` (d >= CHUNKED_MIN_DIM) from a Python comparison, which `torch.compile` turns into a guard on
    a symbolic d, so that the arguments stay constants.
    """
    return resolve_backend(name, op, device, dtype, wide)


@constant_result
def forms_grad_in_forward(backend: str) -> bool:
    """Whether the backend implements `soft_pu_fwd_grad` (constant while torch.compile traces, like `resolve`)."""
    return hasattr(get_backend(backend), "soft_pu_fwd_grad")


@constant_result
def has_symmetric_pass(backend: str) -> bool:
    """Whether the backend implements `soft_pu_sym_fwd` / `soft_pu_sym_bwd` (constant while torch.compile traces)."""
    return hasattr(get_backend(backend), "soft_pu_sym_fwd")


def pack_targets(targets: SoftPUTargets) -> list[Tensor]:
    """The tensors of `targets` as the ops take them: `[cls, labeled, anchor_cls, anchor_labeled, n11, n10, C]`,
    C a 0-d int64 CPU tensor (`diag_offset` travels as an int argument)."""
    return [targets.cls, targets.labeled, targets.anchor_cls, targets.anchor_labeled, targets.n11, targets.n10,
            torch.tensor(targets.num_classes, dtype=torch.int64)]


def unpack_targets(packed: list[Tensor], diag_offset: int) -> SoftPUTargets:
    cls, labeled, anchor_cls, anchor_labeled, n11, n10, num_classes = (t.contiguous() for t in packed)
    return SoftPUTargets(cls, labeled, anchor_cls, anchor_labeled, n11, n10, int(num_classes), diag_offset)


@torch.library.custom_op("mkefast::soft_pu_targets", mutates_args=())
def soft_pu_targets(
    labels: Tensor,  # [B_c] int
    labeled: Tensor,  # [B_c] bool
    pseudo_labels: Tensor | None,  # [B_c] int
    anchor_labels: Tensor,  # [B_a] int
    anchor_labeled: Tensor,  # [B_a] bool
    anchor_pseudo: Tensor | None,  # [B_a] int
    temperature: Tensor | None,  # 0-d: a tensor temperature to check, or None
    diag_offset: int,
    exclude_diagonal: bool,
) -> list[Tensor]:
    """`make_targets` as an op, after the data-dependent checks; returns `pack_targets` of the result.

    Raises:
        ValueError: a labeled sample has a negative class id, or a tensor temperature is not a finite
            number >= 2⁻¹²⁶ (docs/math.md, "Numerics").
    """
    for name, lab, lbl in (("labels", labeled, labels), ("labels", anchor_labeled, anchor_labels)):
        if bool((lab & (lbl < 0)).any()):
            raise ValueError(f"{name}: expected class ids >= 0 for every labeled sample")
    if temperature is not None:
        tau = float(temperature.detach())
        if not 2.0**-126 <= tau < float("inf"):
            raise ValueError(f"temperature: expected a finite value >= {2.0**-126:.3g}, got {tau!r}")
    targets = make_targets(labels, labeled, pseudo_labels, anchor_labels, anchor_labeled, anchor_pseudo,
                           diag_offset=diag_offset, exclude_diagonal=exclude_diagonal)
    # Outputs may not alias inputs (a bool `labeled` comes back from make_targets as itself).
    return [t.clone() if t is labeled or t is anchor_labeled else t for t in pack_targets(targets)]


@soft_pu_targets.register_fake
def _(labels: Tensor, labeled: Tensor, pseudo_labels: Tensor | None, anchor_labels: Tensor, anchor_labeled: Tensor,
      anchor_pseudo: Tensor | None, temperature: Tensor | None, diag_offset: int, exclude_diagonal: bool,
      ) -> list[Tensor]:
    b_c, b_a = labels.shape[0], anchor_labels.shape[0]
    return [labels.new_empty(b_c, dtype=torch.int32), labels.new_empty(b_c, dtype=torch.bool),
            labels.new_empty(b_a, dtype=torch.int32), labels.new_empty(b_a, dtype=torch.bool),
            labels.new_empty(b_a, dtype=torch.float32), labels.new_empty(b_a, dtype=torch.float32),
            torch.empty((), dtype=torch.int64, device="cpu")]


def _options(temperature: Tensor, rbf_sigma: float, rbf_space: str, exclude_diagonal: bool) -> SoftPUOptions:
    return SoftPUOptions(float(temperature.detach()), float(rbf_sigma), rbf_space, exclude_diagonal)


@torch.library.custom_op("mkefast::soft_pu_fwd", mutates_args=())
def soft_pu_fwd(
    anchors: Tensor,  # [B_a, d]
    candidates: Tensor,  # [M, B_c, d]
    targets: list[Tensor],  # pack_targets
    temperature: Tensor,  # 0-d
    diag_offset: int,
    rbf_sigma: float,
    rbf_space: str,
    exclude_diagonal: bool,
    backend: str,
    precompute: list[bool],  # anchors, candidates, temperature: gradients to form in the forward pass
) -> list[Tensor]:
    """The backend's forward: the `SoftPUStats` fields `(lb, ulb, lse, ref, a_ulb)`, each `[M, B_a]`, then the
    gradients asked for by `precompute` of Σ_ij (lb + ulb) (unit upstream gradients), in the inputs' dtypes.

    Forming the gradient while the forward pass holds each block of logits (as Liger-Kernel's fused linear
    cross-entropy does) saves recomputing them in the backward pass: a scalar loss reduced with the same
    weight for every term needs nothing else (`SoftPULossFunction` asks only then, and only of a backend with
    `soft_pu_fwd_grad`).
    """
    impl = get_backend(backend)
    args = (anchors.contiguous(), candidates.contiguous(), unpack_targets(targets, diag_offset),
            _options(temperature, rbf_sigma, rbf_space, exclude_diagonal))
    if not any(precompute):
        return list(impl.soft_pu_fwd(*args))
    stats, grads = impl.soft_pu_fwd_grad(*args, *precompute)
    return [*stats, *_grads_asked(grads, (anchors, candidates, temperature), precompute, backend)]


@soft_pu_fwd.register_fake
def _(anchors: Tensor, candidates: Tensor, targets: list[Tensor], temperature: Tensor, diag_offset: int,
      rbf_sigma: float, rbf_space: str, exclude_diagonal: bool, backend: str, precompute: list[bool],
      ) -> list[Tensor]:
    shape = (candidates.shape[0], anchors.shape[0])
    acc = acc_dtype(anchors.dtype)
    dtypes = {"ref": torch.float64}
    stats = [anchors.new_empty(shape, dtype=dtypes.get(f, acc)) for f in SoftPUStats._fields]
    grads = [t.new_empty(t.shape) for t, need in zip((anchors, candidates, temperature), precompute, strict=True)
             if need]
    return [*stats, *grads]


def _grads_asked(grads: SoftPUGrads, inputs: tuple[Tensor, Tensor, Tensor], needs: list[bool], backend: str,
                 ) -> list[Tensor]:
    """The gradients asked for, in order, each cast to its input's dtype (∂τ summed from its partial sums)."""
    out = []
    for grad, like, need, name in zip(grads, inputs, needs, SoftPUGrads._fields, strict=True):
        if not need:
            continue
        if grad is None:
            raise RuntimeError(f"mkefast: backend {backend!r} returned no gradient for {name}")
        grad = grad.sum().reshape(()) if name == "temperature" else grad
        out.append(grad.to(like.dtype).contiguous())
    return out


def _uniform(grad_lb: Tensor, grad_ulb: Tensor, n11: Tensor, n10: Tensor) -> Tensor | None:
    """The one value of every upstream gradient that acts, or None when they differ.

    The gradient of lb_j acts only where P11(j) ≠ ∅, that of ulb_j only where P10(j) ≠ ∅ (docs/math.md,
    "Gradients": A11, A10 and the masked terms vanish with their set), so the others may hold anything; SupCon
    (everything labeled: P10 = ∅) leaves grad_ulb at 0.
    """
    acting = torch.cat([grad_lb[:, n11 > 0].reshape(-1), grad_ulb[:, n10 > 0].reshape(-1)])
    value = acting[:1] if acting.numel() else grad_lb.reshape(-1)[:1]
    return value.reshape(()) if bool((acting == value).all()) else None


@torch.library.custom_op("mkefast::soft_pu_bwd", mutates_args=())
def soft_pu_bwd(
    anchors: Tensor,  # [B_a, d]
    candidates: Tensor,  # [M, B_c, d]
    targets: list[Tensor],  # pack_targets
    temperature: Tensor,  # 0-d
    diag_offset: int,
    rbf_sigma: float,
    rbf_space: str,
    exclude_diagonal: bool,
    backend: str,
    stats: list[Tensor],  # the five [M, B_a] statistics of soft_pu_fwd
    grad_lb: Tensor,  # [M, B_a]
    grad_ulb: Tensor,  # [M, B_a]
    needs: list[bool],  # anchors, candidates, temperature
    precomputed: list[Tensor],  # the gradients soft_pu_fwd formed for `needs`, or []
) -> list[Tensor]:
    """The gradients asked for by `needs`, in that order, in their inputs' dtypes.

    With `precomputed` gradients (of unit upstream gradients) and upstream gradients that are all one value
    c, the result is c times them; otherwise the backend's `soft_pu_bwd` recomputes the pairs.
    """
    if precomputed:
        value = _uniform(grad_lb, grad_ulb, targets[4], targets[5])
        if value is not None:
            return [(g * value.to(g.dtype)).contiguous() for g in precomputed]
    grads = get_backend(backend).soft_pu_bwd(
        anchors.contiguous(), candidates.contiguous(), unpack_targets(targets, diag_offset),
        _options(temperature, rbf_sigma, rbf_space, exclude_diagonal), SoftPUStats(*(t.contiguous() for t in stats)),
        grad_lb.contiguous(), grad_ulb.contiguous(), *needs,
    )
    return _grads_asked(grads, (anchors, candidates, temperature), needs, backend)


@soft_pu_bwd.register_fake
def _(anchors: Tensor, candidates: Tensor, targets: list[Tensor], temperature: Tensor, diag_offset: int,
      rbf_sigma: float, rbf_space: str, exclude_diagonal: bool, backend: str, stats: list[Tensor], grad_lb: Tensor,
      grad_ulb: Tensor, needs: list[bool], precomputed: list[Tensor]) -> list[Tensor]:
    return [t.new_empty(t.shape) for t, need in zip((anchors, candidates, temperature), needs, strict=True) if need]


@torch.library.custom_op("mkefast::soft_pu_sym_fwd", mutates_args=())
def soft_pu_sym_fwd(
    anchors: Tensor,  # [B, d]
    candidates: Tensor,  # [M, B, d]
    targets: list[Tensor],  # pack_targets
    temperature: Tensor,  # 0-d
    backend: str,
) -> list[Tensor]:
    """Symmetric InfoNCE on the backend's one-pass hook: `[ulb, ulb_rev, lse, lse_rev]`, each `[M, B]`: the two
    directions' terms in the accumulation dtype (their lb are 0) and log-sum-exps in float64."""
    stats, lse, lse_col = get_backend(backend).soft_pu_sym_fwd(
        anchors.contiguous(), candidates.contiguous(), unpack_targets(targets, 0),
        _options(temperature, math.inf, "logit", False))
    # The reverse direction's anchor k has the same partner logit ℓ_kk as the forward's row k (ref).
    ulb_rev = (lse_col - stats.ref).to(stats.ulb.dtype)
    return [stats.ulb, ulb_rev, lse, lse_col]


@soft_pu_sym_fwd.register_fake
def _(anchors: Tensor, candidates: Tensor, targets: list[Tensor], temperature: Tensor, backend: str) -> list[Tensor]:
    shape = (candidates.shape[0], anchors.shape[0])
    acc = acc_dtype(anchors.dtype)
    return [anchors.new_empty(shape, dtype=dtype) for dtype in (acc, acc, torch.float64, torch.float64)]


@torch.library.custom_op("mkefast::soft_pu_sym_bwd", mutates_args=())
def soft_pu_sym_bwd(
    anchors: Tensor,  # [B, d]
    candidates: Tensor,  # [M, B, d]
    targets: list[Tensor],  # pack_targets
    temperature: Tensor,  # 0-d
    backend: str,
    lse: Tensor,  # [M, B]
    lse_rev: Tensor,  # [M, B]
    grad_ulb: Tensor,  # [M, B]
    grad_ulb_rev: Tensor,  # [M, B]
    needs: list[bool],  # anchors, candidates, temperature
) -> list[Tensor]:
    """The gradients asked for by `needs` of Σ grad_ulb·ulb + grad_ulb_rev·ulb_rev, in their inputs' dtypes."""
    grads = get_backend(backend).soft_pu_sym_bwd(
        anchors.contiguous(), candidates.contiguous(), unpack_targets(targets, 0),
        _options(temperature, math.inf, "logit", False), lse, lse_rev, grad_ulb, grad_ulb_rev, *needs)
    return _grads_asked(grads, (anchors, candidates, temperature), needs, backend)


@soft_pu_sym_bwd.register_fake
def _(anchors: Tensor, candidates: Tensor, targets: list[Tensor], temperature: Tensor, backend: str, lse: Tensor,
      lse_rev: Tensor, grad_ulb: Tensor, grad_ulb_rev: Tensor, needs: list[bool]) -> list[Tensor]:
    return [t.new_empty(t.shape) for t, need in zip((anchors, candidates, temperature), needs, strict=True) if need]


@torch.library.custom_op("mkefast::cosine_rec_fwd", mutates_args=())
def cosine_rec_fwd(reconstruction: Tensor, target: Tensor, backend: str) -> Tensor:
    """The backend's `cosine_rec_fwd` on `[N, d]` inputs: `[N]` in the accumulation dtype."""
    return get_backend(backend).cosine_rec_fwd(reconstruction.contiguous(), target.contiguous())


@cosine_rec_fwd.register_fake
def _(reconstruction: Tensor, target: Tensor, backend: str) -> Tensor:
    return reconstruction.new_empty(reconstruction.shape[0], dtype=acc_dtype(reconstruction.dtype))


@torch.library.custom_op("mkefast::cosine_rec_bwd", mutates_args=())
def cosine_rec_bwd(
    reconstruction: Tensor, target: Tensor, grad_rows: Tensor, needs: list[bool], backend: str
) -> list[Tensor]:
    """The backend's `cosine_rec_bwd`: the gradients asked for by `needs`, in order, in the inputs' dtype."""
    reconstruction, target = reconstruction.contiguous(), target.contiguous()
    grads = get_backend(backend).cosine_rec_bwd(reconstruction, target, grad_rows.contiguous(), *needs)
    out = []
    for grad, like, need, name in zip(grads, (reconstruction, target), needs, ("reconstruction", "target"),
                                      strict=True):
        if not need:
            continue
        if grad is None:
            raise RuntimeError(f"mkefast: backend {backend!r} returned no gradient for {name}")
        out.append(grad.to(like.dtype).contiguous())
    return out


@cosine_rec_bwd.register_fake
def _(reconstruction: Tensor, target: Tensor, grad_rows: Tensor, needs: list[bool], backend: str) -> list[Tensor]:
    return [t.new_empty(t.shape) for t, need in zip((reconstruction, target), needs, strict=True) if need]
