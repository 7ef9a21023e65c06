"""A MoCo-style queue as extra candidates of the fused op: momentum-encoded keys and a memory bank of K
negatives, without the B×(B+K) logit matrix.

    python examples/moco_queue.py                    # 30 steps, queue of 4096, then memory at B = 1024, K = 65536

The loss a MoCo trainer writes densely, with the batch's keys k `[B, d]` and the queue `[K, d]`:

    candidates = torch.cat([k, queue])                           # [B + K, d]
    logits = q @ candidates.T / τ                                # [B, B + K]
    loss = F.cross_entropy(logits, torch.arange(B))              # the positive of q_j is k_j

is one fused call, since candidates past the B anchors are a queue (in every anchor's denominator, never
anchors themselves):

    loss = mkefast.soft_pu_loss(q, torch.cat([k, queue]), temperature=τ, rbf_sigma=math.inf)

With class labels for the queue (a supervised memory bank, as in cross-batch memory), the same call takes
`labels` over the B + K candidates, or `mkefast.supcon_loss(q, y, ref_embeddings=torch.cat([k, queue]),
ref_labels=torch.cat([y, queue_labels]))`.

Note: MoCo v1/v2 compute [q·k⁺, q·queue], without the other keys of the batch; here the B − 1 other keys
are negatives too (as in-batch negatives are in MoCo v3 and SimCLR), a small change for B ≪ K. The dense
formula above is the one this script checks against. Gradients reach only q: the keys come from the momentum
encoder without gradients, and the queue is a buffer.

The script trains a MoCo encoder twice (float64), once with the dense loss and once with the fused call,
prints both loss curves, then measures the time and the peak memory of one float32 forward + backward of the
loss alone at a larger batch and queue (`mkefast.bench.memory`: peak resident memory above the inputs, Linux).
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import mkefast
from mkefast.bench import memory

Criterion = Callable[[Tensor, Tensor, Tensor, float], Tensor]


def dense_moco(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """The loss as written in a MoCo trainer (with in-batch keys): a `[B, B + K]` logit matrix."""
    logits = F.normalize(q, dim=-1) @ F.normalize(torch.cat([k, queue]), dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(q.shape[0]))


def fused_moco(q: Tensor, k: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """The same loss, fused: the queue rows are candidates past the B anchors."""
    loss = mkefast.soft_pu_loss(q, torch.cat([k, queue]), temperature=temperature, rbf_sigma=math.inf)
    assert isinstance(loss, Tensor)
    return loss


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    return x + 0.2 * torch.randn(x.shape, generator=gen, dtype=x.dtype)


def train(criterion: Criterion, steps: int, batch: int, queue_size: int, temperature: float,
          momentum: float = 0.99, seed: int = 0) -> list[float]:
    """A MoCo loop: query encoder, momentum key encoder, FIFO queue of keys. Returns every step's loss."""
    gen = torch.Generator().manual_seed(seed)
    data = torch.randn(steps * batch, 16, generator=gen, dtype=torch.float64)
    torch.manual_seed(seed)
    f_q = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 32)).double()
    f_k = copy.deepcopy(f_q).requires_grad_(False)
    queue = F.normalize(torch.randn(queue_size, 32, generator=gen, dtype=torch.float64), dim=-1)
    opt = torch.optim.SGD(f_q.parameters(), lr=0.3)
    losses = []
    for step in range(steps):
        x = data[step * batch:(step + 1) * batch]
        q = f_q(augment(x, gen))
        with torch.no_grad():
            k = F.normalize(f_k(augment(x, gen)), dim=-1)
        loss = criterion(q, k, queue, temperature)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p_k, p_q in zip(f_k.parameters(), f_q.parameters(), strict=True):
                p_k.mul_(momentum).add_(p_q, alpha=1 - momentum)
            queue = torch.cat([k, queue])[:queue_size]
        losses.append(loss.item())
    return losses


def loss_step(criterion: Criterion, batch: int, queue_size: int, dim: int) -> Callable[[], None]:
    """One float32 forward + backward of `criterion` alone on fixed random inputs, ready to call."""
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(batch, dim, generator=gen, requires_grad=True)
    k, queue = torch.randn(batch, dim, generator=gen), torch.randn(queue_size, dim, generator=gen)

    def step() -> None:
        q.grad = None
        criterion(q, k, queue, 0.07).backward()

    return step


def time_and_peak(steps: dict[str, Callable[[], None]]) -> dict[str, tuple[float, float]]:
    """(ms, peak MiB above the inputs) of each step: the time of the call after a warm-up call, then (all
    timed first: fixed malloc thresholds cost page faults) the peak of one more call."""
    times = {}
    for name, step in steps.items():
        step()
        start = time.perf_counter()
        step()
        times[name] = (time.perf_counter() - start) * 1e3
    memory.fix_malloc_thresholds()
    return {name: (times[name], memory.peak_extra_bytes(step) / 2**20) for name, step in steps.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--queue", type=int, default=4096)
    parser.add_argument("--temperature", type=float, default=0.07)
    parser.add_argument("--memory-batch", type=int, default=1024, help="B of the memory comparison (0: skip)")
    parser.add_argument("--memory-queue", type=int, default=65536, help="K of the memory comparison")
    parser.add_argument("--memory-dim", type=int, default=128, help="d of the memory comparison")
    args = parser.parse_args(argv)

    dense = train(dense_moco, args.steps, args.batch, args.queue, args.temperature)
    fused = train(fused_moco, args.steps, args.batch, args.queue, args.temperature)
    worst = max(abs(a - b) for a, b in zip(dense, fused, strict=True))
    print(f"{'step':>4} {'dense [B, B+K] logits':>22} {'mkefast.soft_pu_loss':>21}")
    for step in sorted({0, args.steps // 2, args.steps - 1}):
        print(f"{step:>4} {dense[step]:>22.12f} {fused[step]:>21.12f}")
    print(f"largest difference over {args.steps} steps: {worst:.2e}")

    if args.memory_batch and memory.supported():
        sizes = (args.memory_batch, args.memory_queue, args.memory_dim)
        figures = time_and_peak({"dense": loss_step(dense_moco, *sizes), "mkefast": loss_step(fused_moco, *sizes)})
        (dense_ms, dense_mib), (ours_ms, ours_mib) = figures["dense"], figures["mkefast"]
        print(f"one forward + backward, B = {args.memory_batch}, K = {args.memory_queue}, d = {args.memory_dim}, "
              f"float32, CPU: time dense {dense_ms:.0f} ms, mkefast {ours_ms:.0f} ms; peak memory dense "
              f"{dense_mib:.1f} MiB, mkefast {ours_mib:.1f} MiB ({dense_mib / max(ours_mib, 1e-9):.0f}x less)")
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
