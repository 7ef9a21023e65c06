"""Data-parallel training with `mkefast.distributed.soft_pu_loss` and DistributedDataParallel (gloo, CPU).

    python examples/ddp_train.py --world-size 2 --steps 20
    python examples/ddp_train.py --world-size 2 --steps 20 --check   # float64, compared with one process

Each rank encodes its own slice of the global batch (two views, a fusion layer); the loss contrasts the
rank's fused anchors with the candidates of every rank. With `reduction="mean"` (the default) the loss of
each rank is scaled so that DDP's gradient averaging reproduces single-process training on the global
batch exactly (see `mkefast.distributed`); `--check` trains the same model in one process on the
concatenated batches and reports the largest parameter difference.
"""

from __future__ import annotations

import argparse
import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import Tensor, nn

import mkefast
import mkefast.distributed

DIMS = (20, 12)
CLASSES = 6


class TwoViewEncoder(nn.Module):
    """One encoder per view and a fusion layer: fused `[B, h]` and unimodal `[M, B, h]` embeddings."""

    def __init__(self, hidden: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(nn.Linear(d, hidden, dtype=dtype) for d in DIMS)
        self.fusion = nn.Linear(hidden * len(DIMS), hidden, dtype=dtype)

    def forward(self, *views: Tensor) -> tuple[Tensor, Tensor]:
        h = [torch.tanh(enc(x)) for enc, x in zip(self.encoders, views, strict=True)]
        return self.fusion(torch.cat(h, dim=-1)), torch.stack(h)


def global_batch(step: int, size: int, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Step `step`'s global batch: two views, labels, a 30% labeled mask and a teacher's noisy guesses."""
    gen = torch.Generator().manual_seed(1000 + step)
    labels = torch.randint(0, CLASSES, (size,), generator=gen)
    views = [torch.randn(CLASSES, d, generator=gen, dtype=dtype)[labels] + torch.randn(size, d, generator=gen,
                                                                                       dtype=dtype)
             for d in DIMS]
    labeled = torch.rand(size, generator=gen) < 0.3
    wrong = torch.rand(size, generator=gen) < 0.2
    pseudo = torch.where(wrong, torch.randint(0, CLASSES, (size,), generator=gen), labels)
    return views[0], views[1], labels, labeled, pseudo


def rank_rows(rank: int, sizes: list[int]) -> slice:
    start = sum(sizes[:rank])
    return slice(start, start + sizes[rank])


def train(rank: int, sizes: list[int], steps: int, dtype: torch.dtype, distributed: bool) -> nn.Module:
    """The training loop; in one process (`distributed=False`) it sees the whole global batch."""
    torch.manual_seed(0)
    model = TwoViewEncoder(32, dtype)
    net: nn.Module = nn.parallel.DistributedDataParallel(model) if distributed else model
    opt = torch.optim.SGD(net.parameters(), lr=0.3)
    loss_fn = mkefast.distributed.soft_pu_loss if distributed else mkefast.soft_pu_loss
    rows = rank_rows(rank, sizes) if distributed else slice(None)
    for step in range(steps):
        x1, x2, labels, labeled, pseudo = (t[rows] for t in global_batch(step, sum(sizes), dtype))
        fused, unimodal = net(x1, x2)
        loss = loss_fn(fused, unimodal, labels, labeled, pseudo)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if distributed and step % 5 == 0:
            mean_loss = loss.detach().clone()
            dist.all_reduce(mean_loss)
            if rank == 0:  # the average of the ranks' losses is the global batch's "mean" loss
                print(f"step {step:>3}  loss {mean_loss.item() / len(sizes):.6f}")
    return model


def worker(rank: int, port: int, sizes: list[int], steps: int, check: bool) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=len(sizes))
    try:
        dtype = torch.float64 if check else torch.float32
        model = train(rank, sizes, steps, dtype, distributed=True)
        if check and rank == 0:
            single = train(0, sizes, steps, dtype, distributed=False)
            diff = max((p - q).abs().max().item() for p, q in zip(model.parameters(), single.parameters(),
                                                                    strict=True))
            print(f"largest parameter difference DDP vs one process after {steps} steps: {diff:.2e}")
            if diff > 1e-9:
                raise RuntimeError("DDP training diverged from single-process training")
    finally:
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64, help="samples per rank (rank r gets batch + r)")
    parser.add_argument("--check", action="store_true", help="float64, compare with one process")
    args = parser.parse_args(argv)
    sizes = [args.batch + r for r in range(args.world_size)]  # uneven on purpose
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, sizes, args.steps, args.check), nprocs=args.world_size, join=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
