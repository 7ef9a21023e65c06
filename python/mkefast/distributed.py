"""The contrastive ops over a `torch.distributed` process group (data parallel training, DDP).

Each rank keeps its B_r anchors; the candidates and the label arrays are gathered from every rank, so that
every anchor is contrasted with the N = Σ_r B_r candidates of the global batch, exactly as in one process
holding the concatenated batch (ranks in order). Rank r's anchors are the rows `offset_r .. offset_r + B_r
- 1` of that global problem (offset_r = Σ_{q<r} B_q): the partner of its anchor j is global candidate
offset_r + j, and the masks, counts and references (docs/math.md, "Across processes") are computed over the
global labels. The backends receive offset_r as `SoftPUTargets.diag_offset`.

The gathered candidates stay differentiable (as open_clip's `gather_with_grad`): since every rank's anchors
reach every rank's candidates, the backward of the gather sums the candidates' gradients over the ranks (a
reduce-scatter) and hands each rank the sum for its own rows. Per-rank batch sizes may differ.

Reductions (N = global batch, W = world size, terms of the local anchors only):

```
"sum":  loss_r = Σ_{local terms}                   Σ_r loss_r = the single-process "sum" loss;
        the gradients of rank r's inputs = the single-process gradients of its rows.
"mean": loss_r = W · Σ_{local terms} / (global count)   (1/W) Σ_r loss_r = the single-process "mean" loss
"none": the terms of the local anchors.
```

"mean" is scaled for DistributedDataParallel, which averages the parameter gradients over the W ranks: the
gradient of a parameter on rank r reaches it only through rank r's inputs, and the sum over ranks of those
contributions is the single-process gradient, so the factor W makes DDP's average equal the single-process
gradient of the "mean" loss on the global batch, whatever the per-rank sizes. (open_clip with
`gather_with_grad=True, local_loss=False` instead computes the whole global loss on every rank; the
parameter gradients after DDP's averaging are the same.) With "sum", DDP's average is 1/W of the
single-process gradient of the "sum" loss.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from mkefast.ops.clip import prepare_clip
from mkefast.ops.soft_pu import SoftPUParts, SoftPUProblem, direction_terms, prepare_soft_pu, reduce_terms, targets_of
from mkefast.ops.supcon import prepare_supcon, reduce_supcon, supcon_terms

__all__ = ["clip_loss", "soft_pu_loss", "supcon_loss"]


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


def _require_initialized(name: str) -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(f"mkefast.distributed.{name}: torch.distributed is not initialized "
                           "(call torch.distributed.init_process_group first)")


def _check_same(shapes: list[list[int]], checks: tuple[tuple[str, int], ...]) -> None:
    """Raises on every rank when a column of the gathered integer vectors differs between ranks."""
    for name, col in checks:
        seen = [s[col] for s in shapes]
        if any(v != seen[0] for v in seen):
            raise ValueError(f"{name} must be the same on every rank, got {seen} over the ranks")


class _Global(NamedTuple):
    """A rank's view of the gathered problem: the global per-sample arrays, sizes, rank and offset."""

    problem: SoftPUProblem  # candidates and per-candidate arrays gathered; anchors and their arrays local
    sizes: list[int]
    rank: int
    offset: int


def _globalize(problem: SoftPUProblem, group: Any) -> _Global:
    """Gathers the candidates (with gradients) and the per-candidate arrays of a prepared local problem."""
    m, b_c, d = problem.candidates.shape
    b_a = problem.anchors.shape[0]
    if b_c != b_a:
        raise ValueError(f"unimodal: the distributed form needs as many candidates as anchors on each rank, got "
                         f"{b_c} candidates for {b_a} anchors")
    has_pseudo = problem.pseudo_labels is not None
    shapes = _gather_shapes([b_a, m, d, int(has_pseudo)], problem.anchors.device, group)
    _check_same(shapes, (("unimodal: number of modalities M", 1), ("fused: feature size d", 2),
                         ("pseudo_labels: given (1) or None (0)", 3)))
    sizes = [s[0] for s in shapes]
    rank = dist.get_rank(group)
    pseudo = problem.pseudo_labels
    gathered = problem._replace(
        candidates=_GatherCandidates.apply(problem.candidates, sizes, rank, group),
        labels=_gather_rows(problem.labels, sizes, group),
        labeled=_gather_rows(problem.labeled, sizes, group),
        pseudo_labels=None if pseudo is None else _gather_rows(pseudo, sizes, group),
    )
    return _Global(gathered, sizes, rank, sum(sizes[:rank]))


def _terms(glob: _Global, group: Any) -> tuple[Tensor, Tensor]:
    """Per-anchor `(lb, ulb)` `[M, B_r]` of the local anchors against the global candidates; with
    `symmetric`, averaged with the reverse direction (local z^i against the gathered anchors)."""
    problem, offset = glob.problem, glob.offset
    targets = targets_of(problem, offset)
    args = (targets, problem.temperature, offset, problem.config)
    lb, ulb = direction_terms(problem.anchors, problem.candidates, *args)
    if not problem.config.symmetric:
        return lb, ulb
    all_anchors = _GatherCandidates.apply(problem.anchors.unsqueeze(0), glob.sizes, glob.rank, group)
    local = problem.candidates[:, offset: offset + glob.sizes[glob.rank]]
    reverse = [direction_terms(z, all_anchors, *args) for z in local.unbind(0)]
    return 0.5 * (lb + torch.cat([r[0] for r in reverse])), 0.5 * (ulb + torch.cat([r[1] for r in reverse]))


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
    group: Any = None,
) -> Tensor | SoftPUParts:
    """`mkefast.soft_pu_loss` over the global batch of a process group; see the module docstring.

    Every rank of `group` must call it (it runs collectives), with its own rows of the global batch.

    Args:
        fused: `[B_r, d]` this rank's anchors.
        unimodal: `[M, B_r, d]` (or `[B_r, d]`) this rank's candidates (no queue); gathered, gradients flow back.
        labels, labeled, pseudo_labels: `[B_r]` this rank's label arrays, as in `mkefast.soft_pu_loss`;
            `pseudo_labels` must be given on every rank or on none.
        temperature, rbf_sigma, rbf_space, normalize, return_parts, symmetric, exclude_diagonal, backend: as
            in `mkefast.soft_pu_loss`.
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
    _require_initialized("soft_pu_loss")
    problem = prepare_soft_pu(
        fused, unimodal, labels, labeled, pseudo_labels, temperature=temperature, rbf_sigma=rbf_sigma,
        rbf_space=rbf_space, normalize=normalize, reduction=reduction, return_parts=return_parts,
        symmetric=symmetric, exclude_diagonal=exclude_diagonal, backend=backend,
    )
    glob = _globalize(problem, group)
    lb, ulb = _terms(glob, group)
    m, n = problem.candidates.shape[0], sum(glob.sizes)
    return reduce_terms(lb, ulb, problem.config.reduction, problem.config.return_parts, problem.anchors.dtype,
                        mean_scale=len(glob.sizes) / (m * n))


def clip_loss(
    image_features: Tensor,
    text_features: Tensor,
    logit_scale: float | Tensor,
    *,
    normalize: bool = False,
    reduction: str = "mean",
    backend: str = "auto",
    group: Any = None,
) -> Tensor:
    """`mkefast.clip_loss` over the global batch: local images against every rank's texts and local texts
    against every rank's images, features gathered with gradients (open_clip's `gather_with_grad`).

    Args:
        image_features, text_features: `[B_r, d]` this rank's features.
        logit_scale, normalize, backend: as in `mkefast.clip_loss` (the same scale on every rank).
        reduction: "mean" (W/N times the local sum, for DDP), "sum" (the local sum) or "none" (`[B_r]`).
        group: the process group (default: the world).
    """
    _require_initialized("clip_loss")
    problem = prepare_clip(image_features, text_features, logit_scale, normalize=normalize, reduction=reduction,
                           backend=backend)
    glob = _globalize(problem, group)
    lb, ulb = _terms(glob, group)
    return reduce_terms(lb[0], ulb[0], problem.config.reduction, False, problem.anchors.dtype,  # type: ignore[return-value]
                        mean_scale=len(glob.sizes) / sum(glob.sizes))


def supcon_loss(
    embeddings: Tensor,
    labels: Tensor,
    ref_embeddings: Tensor | None = None,
    ref_labels: Tensor | None = None,
    *,
    temperature: float | Tensor = 0.1,
    normalize: bool = True,
    reduction: str = "mean",
    exclude_diagonal: bool | None = None,
    backend: str = "auto",
    group: Any = None,
) -> Tensor:
    """`mkefast.supcon_loss` over the global batch: local anchors against every rank's embeddings (or
    reference embeddings), gathered with gradients.

    Args:
        embeddings, labels: `[B_r, d]`, `[B_r]` this rank's rows.
        ref_embeddings, ref_labels: this rank's reference rows (gathered too), or None.
        temperature, normalize, exclude_diagonal, backend: as in `mkefast.supcon_loss`.
        reduction: "mean" (W times the local sum over the global number of anchors with a positive, for
            DDP), "sum" (the local sum) or "none" (`[B_r]`).
        group: the process group (default: the world).
    """
    _require_initialized("supcon_loss")
    floor = _label_floor(labels, ref_labels, group)
    problem = prepare_supcon(embeddings, labels, ref_embeddings, ref_labels, temperature=temperature,
                             normalize=normalize, reduction=reduction, backend=backend,
                             exclude_diagonal=exclude_diagonal, label_floor=floor)
    _, b_c, d = problem.candidates.shape
    shapes = _gather_shapes([b_c, d], problem.anchors.device, group)
    _check_same(shapes, (("embeddings: feature size d", 1),))
    sizes = [s[0] for s in shapes]
    rank = dist.get_rank(group)
    gathered = problem._replace(
        candidates=_GatherCandidates.apply(problem.candidates, sizes, rank, group),
        labels=_gather_rows(problem.labels, sizes, group),
        labeled=_gather_rows(problem.labeled, sizes, group),
    )
    # Rank r's rows are rows offset_r.. of the gathered candidates (the partners that exclude_diagonal drops).
    terms = supcon_terms(gathered, sum(sizes[:rank]))
    counts = torch.stack([terms.has_positive.sum(), terms.pos_pairs.to(torch.int64), terms.neg_pairs.to(torch.int64)])
    dist.all_reduce(counts, group=group)
    terms = terms._replace(pos_pairs=counts[1], neg_pairs=counts[2])
    return reduce_supcon(terms, problem.config.reduction, problem.anchors.dtype, count=counts[0],
                         mean_scale=float(len(sizes)))


def _label_floor(labels: object, ref_labels: object, group: Any) -> Tensor | None:
    """The global minimum label (the shift that makes every rank's labels non-negative the same way)."""
    if not isinstance(labels, Tensor) or labels.numel() == 0:
        return None
    low = labels.min().to(torch.int64)
    if isinstance(ref_labels, Tensor) and ref_labels.numel() > 0:
        low = torch.minimum(low, ref_labels.min().to(torch.int64))
    low = low.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN, group=group)
    return low
