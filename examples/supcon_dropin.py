"""Drop-in: pytorch-metric-learning's `SupConLoss` → `mkefast.nn.SupConLoss`, one import.

    python examples/supcon_dropin.py                 # 30 training steps with each, NT-Xent, then B = 4096

The change in a training script that uses pytorch-metric-learning:

    - from pytorch_metric_learning.losses import SupConLoss
    + from mkefast.nn import SupConLoss

    criterion = SupConLoss(temperature=0.1)
    loss = criterion(embeddings, labels)             # single view; also (embeddings, labels, ref_emb=, ref_labels=)

Same forward signature, same numbers (loss and gradients; its mean over the anchors that have a positive,
0 for a batch without positive or negative pairs), but the fused backends never build the B×B similarity
matrix. NT-Xent / SimCLR is the same loss on the 2N views of N samples with instance labels
(`labels = torch.arange(N).repeat(2)`). Miners (`indices_tuple`) are not supported: mkefast's loss uses every
pair, as pytorch-metric-learning's does without a miner.

The script trains the same small encoder twice, once with each loss (float64, so that the comparison is about
the math, not the summation order), and prints both loss curves; checks NT-Xent against pytorch-metric-learning's
`NTXentLoss` (loss and gradient); then it measures the time and the peak memory of one float32 forward +
backward at B = 4096, d = 128 with the benchmark runner (`mkefast bench supcon`: a fresh process per point,
peak resident memory above the inputs). Exit status 1 if a comparison fails.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from pytorch_metric_learning.losses import NTXentLoss
from pytorch_metric_learning.losses import SupConLoss as PMLSupConLoss
from torch import Tensor, nn

import mkefast
from mkefast.backends import CHUNKED_MIN_DIM, resolve_backend
from mkefast.bench import supcon
from mkefast.bench.runner import Case, run_sweep
from mkefast.nn import SupConLoss

Criterion = Callable[[Tensor, Tensor], Tensor]


def make_data(n: int, classes: int, dim: int, seed: int) -> tuple[Tensor, Tensor]:
    """Noisy samples around class centres, float64."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    centres = torch.randn(classes, dim, generator=gen, dtype=torch.float64) * 2
    return centres[labels] + torch.randn(n, dim, generator=gen, dtype=torch.float64), labels


def train(criterion: Criterion, steps: int, batch: int, seed: int = 0) -> list[float]:
    """The existing training loop; only `criterion` changes. Returns the loss of every step."""
    x, y = make_data(steps * batch, 10, 20, seed)
    torch.manual_seed(seed)
    encoder = nn.Sequential(nn.Linear(20, 64), nn.Tanh(), nn.Linear(64, 32)).double()
    opt = torch.optim.SGD(encoder.parameters(), lr=0.5)
    losses = []
    for step in range(steps):
        rows = slice(step * batch, (step + 1) * batch)
        loss = criterion(encoder(x[rows]), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def nt_xent_difference(pairs: int, dim: int, temperature: float, seed: int = 0) -> float:
    """NT-Xent (SimCLR) as `mkefast.supcon_loss` on the 2N views with instance labels, against
    pytorch-metric-learning's `NTXentLoss` on the same views: the largest difference of loss and gradient."""
    gen = torch.Generator().manual_seed(seed)
    views = torch.randn(2 * pairs, dim, generator=gen, dtype=torch.float64)  # view a of every sample, then view b
    instance = torch.arange(pairs).repeat(2)
    results = []
    for criterion in (NTXentLoss(temperature=temperature),
                      lambda x, y: mkefast.supcon_loss(x, y, temperature=temperature)):
        x = views.clone().requires_grad_()
        loss = criterion(x, instance)
        (grad,) = torch.autograd.grad(loss, x)
        results.append((loss.detach(), grad))
    (old, old_grad), (new, new_grad) = results
    return max(float((old - new).abs()), float((old_grad - new_grad).abs().max()))


def peak_memory(batch: int, dim: int, csv: str | None) -> dict[str, tuple[float, float]]:
    """(ms, peak MiB above the inputs) of one fwd+bwd, float32, CPU: pytorch-metric-learning and mkefast's
    `auto` backend."""
    backend = resolve_backend("auto", "soft_pu", torch.device("cpu"), torch.float32, dim >= CHUNKED_MIN_DIM)
    cases = [Case(op="supcon", provider=provider, device="cpu", dtype="float32", B=batch, d=dim, M=1,
                  mode="fwd+bwd", repeats=1, warmup=1) for provider in (supcon.PML, backend)]
    rows = run_sweep(supcon.SPEC, "mkefast.bench.supcon", cases, csv_path=csv, log=lambda _line: None)
    return {row["backend"]: (float(row["ms_median"]), float(row["peak_mem_mb"])) for row in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--memory-batch", type=int, default=4096, help="B of the memory comparison (0: skip)")
    parser.add_argument("--memory-dim", type=int, default=128, help="d of the memory comparison")
    parser.add_argument("--csv", default=None, help="also append the memory rows to this CSV")
    args = parser.parse_args(argv)

    old = train(PMLSupConLoss(temperature=args.temperature), args.steps, args.batch)
    new = train(SupConLoss(temperature=args.temperature), args.steps, args.batch)
    worst = max(abs(a - b) for a, b in zip(old, new, strict=True))
    print(f"{'step':>4} {'pytorch_metric_learning':>24} {'mkefast.nn.SupConLoss':>22}")
    for step in sorted({0, args.steps // 2, args.steps - 1}):
        print(f"{step:>4} {old[step]:>24.12f} {new[step]:>22.12f}")
    print(f"largest difference over {args.steps} steps: {worst:.2e}")
    nt_xent = nt_xent_difference(args.batch // 2, 32, temperature=0.5)
    print(f"NT-Xent, {args.batch // 2} pairs: supcon_loss with instance labels vs pytorch_metric_learning "
          f"NTXentLoss, largest difference of loss and gradient: {nt_xent:.2e}")

    if args.memory_batch:
        figures = peak_memory(args.memory_batch, args.memory_dim, args.csv)
        pml_ms, pml = figures.pop(supcon.PML)
        backend, (ours_ms, ours) = next(iter(figures.items()))
        print(f"one forward + backward, B = {args.memory_batch}, d = {args.memory_dim}, float32, CPU: "
              f"time pml {pml_ms:.0f} ms, mkefast {ours_ms:.0f} ms; "
              f"peak memory pml {pml:.1f} MiB, mkefast {ours:.1f} MiB (backend {backend}; "
              f"{pml / max(ours, 1e-9):.0f}x less)")
    return 0 if worst < 1e-9 and nt_xent < 1e-12 else 1


if __name__ == "__main__":
    raise SystemExit(main())
