"""The soft-PU loss over a `torch.distributed` process group (data parallel training, DDP).

Each rank keeps its B_r anchors (`fused`); the candidates (`unimodal`) and the label arrays are gathered
from every rank, so that every anchor is contrasted with the N = Σ_r B_r candidates of the global batch,
exactly as in one process holding the concatenated batch (ranks in order). Rank r's anchors are the rows
`offset_r .. offset_r + B_r - 1` of that global problem (offset_r = Σ_{q<r} B_q): the diagonal pair of its
anchor j is global candidate offset_r + j, and the masks, counts and references of SPEC §1 are computed
over the global labels. The backends receive offset_r as `SoftPUTargets.row_offset`.

The gathered candidates stay differentiable: since every rank's anchors reach every rank's candidates,
the backward of the gather sums the candidates' gradients over the ranks (a reduce-scatter) and hands each
rank the sum for its own rows. Per-rank batch sizes may differ (they are gathered first).

Reductions (N = global batch, W = world size, terms of the local anchors only):

```
"sum":  loss_r = Σ_{i, j local} (lb + ulb)            Σ_r loss_r = single-process "sum" loss;
        the gradients of rank r's inputs = the single-process gradients of its rows.
"mean": loss_r = W / (M·N) · Σ_{i, j local} (lb + ulb) (1/W) Σ_r loss_r = single-process "mean" loss;
        with equal per-rank batches this is the mean over the local M·B_r terms.
"none": the [M, B_r] terms of the local anchors.
```

"mean" is scaled for DistributedDataParallel, which averages the parameter gradients over the W ranks:
the gradient of a parameter on rank r reaches it only through rank r's inputs, and the sum over ranks of
those contributions is the single-process gradient, so the factor W in loss_r makes DDP's average equal
the single-process gradient of the "mean" loss on the global batch, whatever the per-rank sizes. With
"sum", DDP's average is 1/W of the single-process gradient of the "sum" loss.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from mkefast.ops.soft_pu import SoftPUParts, prepare_soft_pu_inputs, reduce_terms, soft_pu_terms

__all__ = ["soft_pu_loss"]


def _gather_shapes(local: list[int], device: torch.device, group: Any) -> list[list[int]]:
    """Every rank's small integer vector `local` (the same length everywhere)."""
    mine = torch.tensor(local, dtype=torch.int64, device=device)
    bufs = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(bufs, mine, group=group)
    return [b.tolist() for b in bufs]


def _gather_rows(x: Tensor, sizes: list[int], group: Any) -> Tensor:
    """All-gathers `[..., B_r, *]` along dim `-2` for 3-D or dim 0 for 1-D tensors; B_r may differ per rank."""
    dim = 0 if x.dim() == 1 else 1
    pad = max(sizes) - x.shape[dim]
    if pad:
        shape = list(x.shape)
        shape[dim] = pad
        x = torch.cat([x, x.new_zeros(shape)], dim=dim)
    bufs = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(bufs, x.contiguous(), group=group)
    return torch.cat([b.narrow(dim, 0, n) for b, n in zip(bufs, sizes, strict=True)], dim=dim)


class _GatherCandidates(torch.autograd.Function):
    """`[M, B_r, d]` on every rank → `[M, N, d]` in rank order; backward: sum over ranks, keep own rows."""

    @staticmethod
    def forward(ctx: Any, unimodal: Tensor, sizes: list[int], rank: int, group: Any) -> Tensor:
        ctx.sizes, ctx.rank, ctx.group = sizes, rank, group
        return _gather_rows(unimodal, sizes, group)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        sizes: list[int] = ctx.sizes
        width = max(sizes)
        chunks = []
        for part in grad.split(sizes, dim=1):  # rank q's rows of this rank's gradient, padded to one width
            pad = width - part.shape[1]
            chunks.append(torch.cat([part, part.new_zeros(part.shape[0], pad, part.shape[2])], dim=1)
                          if pad else part.contiguous())
        out = torch.empty_like(chunks[0])
        dist.reduce_scatter(out, chunks, op=dist.ReduceOp.SUM, group=ctx.group)
        return out[:, : sizes[ctx.rank]], None, None, None


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
    group: Any = None,
) -> Tensor | SoftPUParts:
    """`mkefast.soft_pu_loss` over the global batch of a process group; see the module docstring.

    Every rank of `group` must call it (it runs collectives), with its own rows of the global batch.

    Args:
        fused: `[B_r, d]` this rank's anchors.
        unimodal: `[M, B_r, d]` (or `[B_r, d]`) this rank's candidates; gathered, gradients flow back.
        labels, labeled, pseudo_labels: `[B_r]` this rank's label arrays, as in `mkefast.soft_pu_loss`;
            `pseudo_labels` must be given on every rank or on none.
        temperature, rbf_sigma, rbf_space, normalize, return_parts, backend: as in `mkefast.soft_pu_loss`.
        reduction: `"mean"` (W/(M·N) times the local sum, for DDP), `"sum"` (the local sum) or `"none"`
            (`[M, B_r]`).
        group: the process group (default: the world).

    Returns:
        This rank's loss (or `SoftPUParts`), in the inputs' dtype.

    Raises:
        RuntimeError: torch.distributed is not initialized.
        TypeError, ValueError: a malformed argument (the message names it), or M, d or the presence of
            `pseudo_labels` differ between ranks (raised on every rank).
    """
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("mkefast.distributed.soft_pu_loss: torch.distributed is not initialized "
                           "(call torch.distributed.init_process_group first)")
    args = prepare_soft_pu_inputs(
        fused, unimodal, labels, labeled, pseudo_labels, temperature=temperature, rbf_sigma=rbf_sigma,
        rbf_space=rbf_space, normalize=normalize, reduction=reduction, return_parts=return_parts,
        backend=backend,
    )
    m, b, d = args.unimodal.shape
    pseudo = args.pseudo_labels
    has_pseudo = pseudo is not None
    shapes = _gather_shapes([b, m, d, int(has_pseudo)], args.fused.device, group)
    for name, col, mine in (("unimodal: number of modalities M", 1, m), ("fused: feature size d", 2, d),
                            ("pseudo_labels: given (1) or None (0)", 3, int(has_pseudo))):
        seen = [s[col] for s in shapes]
        if any(v != mine for v in seen):
            raise ValueError(f"{name} must be the same on every rank, got {seen} over the ranks")
    sizes = [s[0] for s in shapes]
    rank = dist.get_rank(group)
    candidates = _GatherCandidates.apply(args.unimodal, sizes, rank, group)
    all_labels = _gather_rows(args.labels.to(torch.int64), sizes, group)
    all_labeled = _gather_rows(args.labeled, sizes, group)
    all_pseudo = None if pseudo is None else _gather_rows(pseudo.to(torch.int64), sizes, group)
    lb, ulb = soft_pu_terms(args.fused, candidates, all_labels, all_labeled, all_pseudo, args.options,
                            args.backend, row_offset=sum(sizes[:rank]))
    world = len(sizes)
    return reduce_terms(lb, ulb, reduction, return_parts, args.fused.dtype, mean_scale=world / (m * sum(sizes)))
