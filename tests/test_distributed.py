"""mkefast.distributed against one process holding the concatenated batch.

The multi-process test spawns 2 gloo ranks on 127.0.0.1 once and runs every case inside them (starting
processes costs more than the cases); a failed assertion in a rank fails the test with its traceback.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import mkefast
import mkefast.distributed
from mkefast.backends import get_backend
from mkefast.ops.soft_pu import SoftPUConfig, direction_terms, prepare_soft_pu, targets_of
from tests.conftest import backend_params, device_for

WORLD = 2
M, D = 2, 6


def _batch(pattern: str, n: int, seed: int) -> tuple[torch.Tensor, ...]:
    """A global batch in float64: fused `[n, D]`, unimodal `[M, n, D]`, labels, labeled, pseudo labels."""
    gen = torch.Generator().manual_seed(seed)
    fused = torch.randn(n, D, generator=gen, dtype=torch.float64)
    unimodal = torch.randn(M, n, D, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 3, (n,), generator=gen)
    pseudo = torch.randint(-1, 3, (n,), generator=gen)
    if pattern == "mixed":
        labeled = torch.rand(n, generator=gen) < 0.5
    elif pattern == "all_labeled":
        labeled = torch.ones(n, dtype=torch.bool)
    elif pattern == "none_labeled":
        labeled = torch.zeros(n, dtype=torch.bool)
    elif pattern == "one_class":
        labels = torch.zeros(n, dtype=torch.int64)
        labeled = torch.arange(n) % 3 == 0
        pseudo = torch.zeros(n, dtype=torch.int64)
    else:
        raise ValueError(pattern)
    return fused, unimodal, labels, labeled, pseudo


# (label pattern, per-rank sizes, reduction, with pseudo labels, rbf_space, extra options)
CASES = [
    ("mixed", (5, 3), "sum", True, "logit", {}),
    ("mixed", (4, 4), "mean", True, "phi", {}),
    ("mixed", (2, 6), "none", False, "logit", {}),
    ("all_labeled", (3, 4), "sum", False, "logit", {}),
    ("none_labeled", (4, 1), "mean", True, "logit", {}),
    ("one_class", (6, 3), "none", True, "phi", {}),
    ("mixed", (3, 5), "mean", True, "logit", {"symmetric": True, "exclude_diagonal": True}),
    ("none_labeled", (4, 2), "none", False, "phi", {"symmetric": True}),
]


def _single(batch: tuple[torch.Tensor, ...], reduction: str, pseudo: bool, space: str, upstream: torch.Tensor,
            extra: dict):
    fused, unimodal, labels, labeled, pseudo_labels = (t.clone() for t in batch)
    fused.requires_grad_(True)
    unimodal.requires_grad_(True)
    loss = mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo_labels if pseudo else None,
                                rbf_space=space, reduction=reduction, backend="reference", **extra)
    objective = (loss * upstream).sum() if reduction == "none" else loss
    objective.backward()
    return loss.detach(), fused.grad, unimodal.grad


def _check_cases(rank: int) -> None:
    for i, (pattern, sizes, reduction, pseudo, space, extra) in enumerate(CASES):
        n = sum(sizes)
        batch = _batch(pattern, n, seed=i)
        upstream = torch.randn(M, n, generator=torch.Generator().manual_seed(100 + i), dtype=torch.float64)
        want_loss, want_gf, want_gu = _single(batch, reduction, pseudo, space, upstream, extra)
        lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
        fused, unimodal, labels, labeled, pseudo_labels = (t[..., lo:hi, :] if t.dim() > 1 else t[lo:hi]
                                                           for t in batch)
        fused = fused.clone().requires_grad_(True)
        unimodal = unimodal.clone().requires_grad_(True)
        loss = mkefast.distributed.soft_pu_loss(fused, unimodal, labels, labeled,
                                                pseudo_labels if pseudo else None, rbf_space=space,
                                                reduction=reduction, backend="reference", **extra)
        scale = 1.0
        if reduction == "none":
            torch.testing.assert_close(loss, want_loss[:, lo:hi], rtol=1e-12, atol=1e-12)
            (loss * upstream[:, lo:hi]).sum().backward()
        else:
            total = loss.detach().clone()
            dist.all_reduce(total)
            if reduction == "mean":
                total /= WORLD
                scale = WORLD  # the per-rank "mean" carries the factor W that DDP's averaging removes
            torch.testing.assert_close(total, want_loss, rtol=1e-12, atol=1e-12)
            loss.backward()
        msg = f"case {i} ({pattern}, sizes {sizes}, {reduction}) on rank {rank}"
        torch.testing.assert_close(fused.grad, scale * want_gf[lo:hi], rtol=1e-10, atol=1e-12, msg=msg)
        torch.testing.assert_close(unimodal.grad, scale * want_gu[:, lo:hi], rtol=1e-10, atol=1e-12, msg=msg)


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fuse = nn.Linear(2 * D, D, dtype=torch.float64)
        self.enc = nn.Linear(D, D, dtype=torch.float64)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # x [M, B, D]
        unimodal = self.enc(x)
        return self.fuse(torch.cat(list(x), dim=-1)), unimodal


def _check_ddp_mean(rank: int) -> None:
    """DDP with reduction="mean" reproduces the single-process gradient of the global batch (uneven sizes)."""
    sizes = (5, 2)
    _, x, labels, labeled, pseudo = _batch("mixed", sum(sizes), seed=7)
    torch.manual_seed(0)
    model = _Encoder()
    fused, unimodal = model(x)
    mkefast.soft_pu_loss(fused, unimodal, labels, labeled, pseudo, backend="reference").backward()
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    ddp = nn.parallel.DistributedDataParallel(model)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    fused, unimodal = ddp(x[:, lo:hi])
    mkefast.distributed.soft_pu_loss(fused, unimodal, labels[lo:hi], labeled[lo:hi], pseudo[lo:hi],
                                     backend="reference").backward()
    for p, g in zip(model.parameters(), want, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)


def _check_mismatch_raises(rank: int) -> None:
    """Ranks that disagree on M raise a ValueError on every rank instead of hanging in a collective."""
    m = 1 if rank == 0 else 2
    with pytest.raises(ValueError, match="number of modalities M must be the same on every rank"):
        mkefast.distributed.soft_pu_loss(torch.randn(3, D), torch.randn(m, 3, D), torch.zeros(3, dtype=torch.int64),
                                         torch.ones(3, dtype=torch.bool))


def _gathered_loss_matches(rank: int, sizes: tuple[int, ...], single, distributed, inputs, reduction: str) -> None:
    """A distributed form equals the single-process loss on the concatenated batch, loss and gradients."""
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    full = [t.clone().requires_grad_(t.is_floating_point()) for t in inputs]
    want = single(*full, reduction=reduction)
    want.backward()
    local = [t[lo:hi].clone().requires_grad_(t.is_floating_point()) for t in inputs]
    loss = distributed(*local, reduction=reduction)
    total = loss.detach().clone()
    dist.all_reduce(total)
    scale = 1.0
    if reduction == "mean":
        total /= WORLD
        scale = WORLD
    torch.testing.assert_close(total, want.detach(), rtol=1e-12, atol=1e-12)
    loss.backward()
    for f, lo_t in zip(full, local, strict=True):
        if f.is_floating_point():
            torch.testing.assert_close(lo_t.grad, scale * f.grad[lo:hi], rtol=1e-10, atol=1e-12)


def _check_supcon_and_clip(rank: int) -> None:
    gen = torch.Generator().manual_seed(42)
    sizes = (5, 3)
    n = sum(sizes)
    emb, other = (torch.randn(n, D, generator=gen, dtype=torch.float64) for _ in range(2))
    labels = torch.randint(-2, 2, (n,), generator=gen)
    for reduction in ("mean", "sum"):
        _gathered_loss_matches(
            rank, sizes, lambda e, y, reduction: mkefast.supcon_loss(e, y, reduction=reduction, backend="reference"),
            lambda e, y, reduction: mkefast.distributed.supcon_loss(e, y, reduction=reduction, backend="reference"),
            (emb, labels), reduction)
        _gathered_loss_matches(
            rank, sizes,
            lambda e, y, r, ry, reduction: mkefast.supcon_loss(e, y, r, ry, reduction=reduction, backend="reference"),
            lambda e, y, r, ry, reduction: mkefast.distributed.supcon_loss(e, y, r, ry, reduction=reduction,
                                                                           backend="reference"),
            (emb, labels, other, labels.flip(0)), reduction)
        _gathered_loss_matches(
            rank, sizes, lambda i, t, reduction: mkefast.clip_loss(i, t, 7.0, reduction=reduction, backend="reference"),
            lambda i, t, reduction: mkefast.distributed.clip_loss(i, t, 7.0, reduction=reduction, backend="reference"),
            (emb, other), reduction)


def _worker(rank: int, port: int) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        _check_cases(rank)
        _check_supcon_and_clip(rank)
        _check_ddp_mean(rank)
        _check_mismatch_raises(rank)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_ranks_match_one_process() -> None:
    mp.spawn(_worker, args=(_free_port(),), nprocs=WORLD, join=True)


def test_requires_initialized_process_group() -> None:
    with pytest.raises(RuntimeError, match=r"torch\.distributed is not initialized"):
        mkefast.distributed.soft_pu_loss(torch.randn(3, D), torch.randn(3, D), torch.zeros(3, dtype=torch.int64),
                                         torch.ones(3, dtype=torch.bool))


@pytest.mark.parametrize("backend", backend_params(include_reference=True))
@pytest.mark.parametrize("pattern", ["mixed", "all_labeled", "none_labeled"])
@pytest.mark.parametrize("exclude", [False, True], ids=["keep_diag", "exclude_diag"])
def test_diag_offset_rows_match_full_batch(backend: str, pattern: str, exclude: bool) -> None:
    """Anchors given as a row slice of the candidates (what every rank computes) equal the full batch's rows.

    This is the contract `SoftPUTargets.diag_offset` puts on every backend; one process suffices.
    """
    device = device_for(backend)
    dtype = torch.float32 if backend in ("cuda", "triton") else torch.float64
    reason = get_backend(backend).unsupported_reason("soft_pu", device, dtype)
    if reason is not None:
        pytest.skip(reason)
    fused, unimodal, labels, labeled, pseudo = (t.to(device) for t in _batch(pattern, 11, seed=3))
    fused, unimodal = fused.to(dtype), unimodal.to(dtype)
    config = SoftPUConfig(rbf_sigma=1.5, exclude_diagonal=exclude, backend=backend)
    upstream = torch.randn(2, M, 11, dtype=torch.float64, device=device)

    def grads(rows: slice) -> tuple[torch.Tensor, ...]:
        f = fused[rows].clone().requires_grad_(True)
        u = unimodal.clone().requires_grad_(True)
        problem = prepare_soft_pu(
            f, u, labels, labeled, pseudo, temperature=0.5, rbf_sigma=1.5, rbf_space="logit", normalize=True,
            reduction="none", return_parts=False, symmetric=False, exclude_diagonal=exclude, backend=backend)
        rows_arrays = tuple(t[rows] if t is not None else None for t in (labels, labeled, pseudo))
        problem = problem._replace(anchor_labels=rows_arrays[0], anchor_labeled=rows_arrays[1],
                                   anchor_pseudo=rows_arrays[2], config=config)
        lb, ulb = direction_terms(problem.anchors, problem.candidates, targets_of(problem, rows.start),
                                  problem.temperature, rows.start, config)
        ((lb * upstream[0, :, rows]).sum() + (ulb * upstream[1, :, rows]).sum()).backward()
        return lb.detach(), ulb.detach(), f.grad, u.grad

    full = grads(slice(0, 11))
    head, tail = grads(slice(0, 4)), grads(slice(4, 11))
    tol = {"rtol": 1e-9, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(torch.cat([head[0], tail[0]], 1), full[0], **tol)
    torch.testing.assert_close(torch.cat([head[1], tail[1]], 1), full[1], **tol)
    torch.testing.assert_close(torch.cat([head[2], tail[2]], 0), full[2], **tol)
    torch.testing.assert_close(head[3] + tail[3], full[3], **tol)
