"""The backends' host functions as `torch.library` custom ops, so that `torch.compile` sees each as one node.

Every op takes tensors and scalars only (the `SoftPUTargets` / `SoftPUOptions` structures are rebuilt
inside), runs eagerly on the backend named by its `backend` argument, and has a fake implementation that
gives the output shapes and dtypes without touching data. Everything data-dependent happens inside an op:

- `mkefast::soft_pu_targets` checks the labels and builds the dense class ids and mask sizes
  (`torch.unique`, `bincount`); the number of classes C comes back as a 0-d int64 tensor on the CPU, so
  that no output shape depends on data and no GPU synchronization is needed to read it later.
- `mkefast::soft_pu_fwd` / `mkefast::soft_pu_bwd`, `mkefast::cosine_rec_fwd` / `mkefast::cosine_rec_bwd`
  call `soft_pu_fwd` ... `cosine_rec_bwd` of the backend module. The backward ops return only the
  gradients asked for (a list), in the inputs' dtypes.

The autograd formulas are registered beside the functional API (`SoftPULossFunction`,
`CosineReconstructionFunction`), which is the only caller of these ops.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

from mkefast.backends import get_backend, resolve_backend
from mkefast.ops._common import SoftPUOptions, SoftPUStats, SoftPUTargets, make_targets

__all__ = ["cosine_rec_bwd", "cosine_rec_fwd", "resolve", "soft_pu_bwd", "soft_pu_fwd", "soft_pu_targets"]


@torch.compiler.assume_constant_result
def resolve(name: str, op: str, device: torch.device, dtype: torch.dtype, dim: int) -> str:
    """`mkefast.backends.resolve_backend`, which `torch.compile` evaluates once while tracing.

    Its result depends only on constants of the trace (the arguments) and on the build and the environment,
    so the compiled graph keeps the backend chosen at trace time (a later change of `MKEFAST_BACKEND` needs
    `torch.compiler.reset()`). Tracing through it instead would break the graph at its imports.
    """
    return resolve_backend(name, op, device, dtype, dim)


def _acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


@contextlib.contextmanager
def _autograd_dispatch() -> Iterator[None]:
    """Undoes, inside a kernel, the exclusion of autograd that the dispatcher applies below autograd.

    A custom op's kernel runs with the autograd dispatch keys excluded, but a backend's backward may
    differentiate a recomputed forward with `torch.autograd` (the `reference` backend does, as an
    independent check of the analytic gradients of the others).
    """
    keys = (torch._C.DispatchKey.AutogradFunctionality, torch._C.DispatchKey.AutogradOther,
            torch._C.DispatchKey.AutogradNestedTensor)
    with contextlib.ExitStack() as stack:
        for key in keys:
            stack.enter_context(torch._C._SetExcludeDispatchKeyGuard(key, False))
        yield


def _dense(*tensors: Tensor) -> list[Tensor]:
    """Contiguous copies where needed: the backends take dense rows, and a compiler may hand a custom op
    other strides than eager mode would (Inductor picks the layout of the buffers it creates)."""
    return [t.contiguous() for t in tensors]


def _empty(t: Tensor) -> Tensor:
    """A contiguous tensor like `t`, whatever the strides of `t` (what the backends return)."""
    return t.new_empty(t.shape)


def _grads_asked(
    grads: tuple[Tensor | None, Tensor | None], inputs: tuple[Tensor, Tensor], needs: tuple[bool, bool],
    names: tuple[str, str], backend: str,
) -> list[Tensor]:
    """The requested gradients cast to their inputs' dtypes; a backend that skipped one is an error."""
    out = []
    for grad, inp, need, name in zip(grads, inputs, needs, names, strict=True):
        if not need:
            continue
        if grad is None:
            raise RuntimeError(f"mkefast: backend {backend!r} returned no gradient for {name}")
        out.append(grad.to(inp.dtype).contiguous())
    return out


@torch.library.custom_op("mkefast::soft_pu_targets", mutates_args=())
def soft_pu_targets(
    labels: Tensor, labeled: Tensor, pseudo_labels: Tensor | None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """`make_targets` as an op: `(cls [B] int32, n11 [B] float32, n10 [B] float32, C: 0-d int64 on CPU)`.

    Raises:
        ValueError: a labeled sample has a negative class id.
    """
    if bool((labeled & (labels < 0)).any()):
        raise ValueError("labels: expected class ids >= 0 for every labeled sample")
    targets = make_targets(labels, labeled, pseudo_labels)
    return targets.cls, targets.n11, targets.n10, torch.tensor(targets.num_classes, dtype=torch.int64)


@soft_pu_targets.register_fake
def _(labels: Tensor, labeled: Tensor, pseudo_labels: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    b = labels.shape[0]
    return (labels.new_empty(b, dtype=torch.int32), labels.new_empty(b, dtype=torch.float32),
            labels.new_empty(b, dtype=torch.float32), torch.empty((), dtype=torch.int64, device="cpu"))


@torch.library.custom_op("mkefast::soft_pu_fwd", mutates_args=())
def soft_pu_fwd(
    fused: Tensor,  # [B_a, d]
    unimodal: Tensor,  # [M, B, d]
    cls: Tensor,  # [B] int32
    labeled: Tensor,  # [B] bool
    n11: Tensor,  # [B] float32
    n10: Tensor,  # [B] float32
    num_classes: Tensor,  # 0-d int64 on CPU
    row_offset: int,
    temperature: float,
    rbf_sigma: float,
    rbf_space: str,
    backend: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The backend's `soft_pu_fwd`; returns the `SoftPUStats` fields `(lb, ulb, lse, ref, a_ulb)`, `[M, B_a]`."""
    fused, unimodal, cls, labeled, n11, n10 = _dense(fused, unimodal, cls, labeled, n11, n10)
    targets = SoftPUTargets(cls, labeled, n11, n10, int(num_classes), row_offset)
    options = SoftPUOptions(temperature, rbf_sigma, rbf_space)
    stats = get_backend(backend).soft_pu_fwd(fused, unimodal, targets, options)
    return stats.lb, stats.ulb, stats.lse, stats.ref, stats.a_ulb


@soft_pu_fwd.register_fake
def _(fused: Tensor, unimodal: Tensor, cls: Tensor, labeled: Tensor, n11: Tensor, n10: Tensor, num_classes: Tensor,
      row_offset: int, temperature: float, rbf_sigma: float, rbf_space: str, backend: str,
      ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    shape = (unimodal.shape[0], fused.shape[0])
    acc = _acc(fused.dtype)
    return tuple(fused.new_empty(shape, dtype=acc) for _ in SoftPUStats._fields)  # type: ignore[return-value]


@torch.library.custom_op("mkefast::soft_pu_bwd", mutates_args=())
def soft_pu_bwd(
    fused: Tensor,  # [B_a, d]
    unimodal: Tensor,  # [M, B, d]
    cls: Tensor,  # [B] int32
    labeled: Tensor,  # [B] bool
    n11: Tensor,  # [B] float32
    n10: Tensor,  # [B] float32
    num_classes: Tensor,  # 0-d int64 on CPU
    row_offset: int,
    temperature: float,
    rbf_sigma: float,
    rbf_space: str,
    backend: str,
    stats: list[Tensor],  # the five [M, B_a] outputs of soft_pu_fwd
    grad_lb: Tensor,  # [M, B_a]
    grad_ulb: Tensor,  # [M, B_a]
    needs_fused: bool,
    needs_unimodal: bool,
) -> list[Tensor]:
    """The backend's `soft_pu_bwd`: `[grad_fused]` if needs_fused, then `[grad_unimodal]` if needs_unimodal."""
    fused, unimodal, cls, labeled, n11, n10, grad_lb, grad_ulb, *stats = _dense(
        fused, unimodal, cls, labeled, n11, n10, grad_lb, grad_ulb, *stats
    )
    targets = SoftPUTargets(cls, labeled, n11, n10, int(num_classes), row_offset)
    options = SoftPUOptions(temperature, rbf_sigma, rbf_space)
    with _autograd_dispatch():
        grads = get_backend(backend).soft_pu_bwd(
            fused, unimodal, targets, options, SoftPUStats(*stats), grad_lb, grad_ulb, needs_fused, needs_unimodal
        )
    needs = (needs_fused, needs_unimodal)
    return _grads_asked(grads, (fused, unimodal), needs, ("fused", "unimodal"), backend)


@soft_pu_bwd.register_fake
def _(fused: Tensor, unimodal: Tensor, cls: Tensor, labeled: Tensor, n11: Tensor, n10: Tensor, num_classes: Tensor,
      row_offset: int, temperature: float, rbf_sigma: float, rbf_space: str, backend: str, stats: list[Tensor],
      grad_lb: Tensor, grad_ulb: Tensor, needs_fused: bool, needs_unimodal: bool) -> list[Tensor]:
    return [_empty(t) for t, need in ((fused, needs_fused), (unimodal, needs_unimodal)) if need]


@torch.library.custom_op("mkefast::cosine_rec_fwd", mutates_args=())
def cosine_rec_fwd(reconstruction: Tensor, target: Tensor, backend: str) -> Tensor:
    """The backend's `cosine_rec_fwd`: per-row `1 - cos²` of `[N, d]` inputs, `[N]` in the accumulation dtype."""
    return get_backend(backend).cosine_rec_fwd(*_dense(reconstruction, target))


@cosine_rec_fwd.register_fake
def _(reconstruction: Tensor, target: Tensor, backend: str) -> Tensor:
    return reconstruction.new_empty(reconstruction.shape[:-1], dtype=_acc(reconstruction.dtype))


@torch.library.custom_op("mkefast::cosine_rec_bwd", mutates_args=())
def cosine_rec_bwd(
    reconstruction: Tensor,  # [N, d]
    target: Tensor,  # [N, d]
    grad_loss: Tensor,  # [N]
    needs_reconstruction: bool,
    needs_target: bool,
    backend: str,
) -> list[Tensor]:
    """The backend's `cosine_rec_bwd`: the gradients asked for, in order, in the inputs' dtype."""
    reconstruction, target, grad_loss = _dense(reconstruction, target, grad_loss)
    with _autograd_dispatch():
        grads = get_backend(backend).cosine_rec_bwd(
            reconstruction, target, grad_loss, needs_reconstruction, needs_target
        )
    return _grads_asked(grads, (reconstruction, target), (needs_reconstruction, needs_target),
                        ("reconstruction", "target"), backend)


@cosine_rec_bwd.register_fake
def _(reconstruction: Tensor, target: Tensor, grad_loss: Tensor, needs_reconstruction: bool, needs_target: bool,
      backend: str) -> list[Tensor]:
    return [_empty(t) for t, need in ((reconstruction, needs_reconstruction), (target, needs_target))
            if need]
