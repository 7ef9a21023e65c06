"""Drop-in: replace pytorch-metric-learning's `SupConLoss` by `mkefast.SoftPULoss` in a training loop.

    python examples/supcon_dropin.py --steps 30

The correspondence is exact (same loss, same gradients, same training curve) under these conditions:

- cross-embedding SupCon: anchors `fused` [B, d] against one candidate set `unimodal[i]` [B, d] per
  modality, called as `SupConLoss(temperature=τ)(fused, labels, ref_emb=unimodal[i], ref_labels=...)`,
  averaged over the M modalities; `SoftPULoss(temperature=τ)` with every sample labeled;
- the self-pair (j, j) is a positive in both. pml keeps it only when `ref_labels` is a different tensor
  object from `labels`: with `ref_labels=labels` (the same object) it drops the diagonal from the
  positives and from the denominator (`get_matches_and_diffs` tests `ref_labels is labels`), which is a
  different loss. Pass `labels.clone()`;
- temperature: both divide the cosine similarity by τ (pml's default distance is `CosineSimilarity`,
  which L2-normalizes with eps 1e-12 like `normalize=True`);
- pml averages with `AvgNonZeroReducer` (anchors with a zero loss are left out) and returns 0 for a batch
  without negatives; mkefast averages over every anchor. With at least two classes in the batch every
  anchor's loss is > 0, so the two means agree.

Memory: pml builds several B×B float matrices (similarities, positive and negative masks, log-probs);
mkefast's fused backends never hold a B×B block (see docs/memory_model.md). The script prints both peaks.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from memory_model import fix_malloc_thresholds, peak_extra_bytes
from pytorch_metric_learning.losses import SupConLoss
from torch import Tensor, nn

import mkefast

Criterion = Callable[[Tensor, Tensor, Tensor], Tensor]


def pml_criterion(temperature: float) -> Criterion:
    """The existing code: pml's SupCon between fused anchors and each modality, averaged over modalities."""
    supcon = SupConLoss(temperature=temperature)

    def loss(fused: Tensor, unimodal: Tensor, labels: Tensor) -> Tensor:
        # A distinct ref_labels object keeps the self-pair as a positive (see the module docstring).
        return torch.stack([supcon(fused, labels, ref_emb=z, ref_labels=labels.clone()) for z in unimodal]).mean()

    return loss


def mkefast_criterion(temperature: float) -> Criterion:
    """The replacement: one fused call over all modalities; every sample labeled."""
    soft_pu = mkefast.SoftPULoss(temperature=temperature)

    def loss(fused: Tensor, unimodal: Tensor, labels: Tensor) -> Tensor:
        return soft_pu(fused, unimodal, labels, torch.ones_like(labels, dtype=torch.bool))

    return loss


class TwoViewEncoder(nn.Module):
    """One encoder per view and a fusion layer: unimodal `[M, B, h]` and fused `[B, h]` embeddings."""

    def __init__(self, dims: tuple[int, ...], hidden: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(nn.Linear(d, hidden, dtype=dtype) for d in dims)
        self.fusion = nn.Linear(hidden * len(dims), hidden, dtype=dtype)

    def forward(self, views: list[Tensor]) -> tuple[Tensor, Tensor]:
        h = [torch.tanh(enc(x)) for enc, x in zip(self.encoders, views, strict=True)]
        return self.fusion(torch.cat(h, dim=-1)), torch.stack(h)


def make_views(
    n: int, classes: int, dims: tuple[int, ...], seed: int, dtype: torch.dtype
) -> tuple[list[Tensor], Tensor]:
    """Two noisy linear views of class centres."""
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, classes, (n,), generator=gen)
    views = []
    for d in dims:
        centres = torch.randn(classes, d, generator=gen, dtype=dtype) * 2
        views.append(centres[labels] + torch.randn(n, d, generator=gen, dtype=dtype))
    return views, labels


def train(criterion: Criterion, steps: int, batch: int, dtype: torch.dtype, seed: int = 0) -> list[float]:
    """The existing training loop; only `criterion` changes. Returns the loss of every step."""
    dims = (20, 12)
    views, labels = make_views(steps * batch, 10, dims, seed, dtype)
    torch.manual_seed(seed)
    model = TwoViewEncoder(dims, 32, dtype)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for step in range(steps):
        rows = slice(step * batch, (step + 1) * batch)
        fused, unimodal = model([v[rows] for v in views])
        loss = criterion(fused, unimodal, labels[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def one_step_peak(criterion: Criterion, batch: int, dim: int, modalities: int = 2) -> int:
    """Peak extra bytes of one loss forward + backward on float32 embeddings `[B, dim]`, `[M, B, dim]`."""
    gen = torch.Generator().manual_seed(0)
    fused = torch.randn(batch, dim, generator=gen, requires_grad=True)
    unimodal = torch.randn(modalities, batch, dim, generator=gen, requires_grad=True)
    labels = torch.randint(0, 10, (batch,), generator=gen)
    return peak_extra_bytes(lambda: criterion(fused, unimodal, labels).backward())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.1)
    parser.add_argument("--memory-batch", type=int, default=4096, help="B of the memory comparison (0: skip)")
    args = parser.parse_args(argv)

    # float64, so that the comparison is about the math, not about summation order.
    old = train(pml_criterion(args.temperature), args.steps, args.batch, torch.float64)
    new = train(mkefast_criterion(args.temperature), args.steps, args.batch, torch.float64)
    worst = max(abs(a - b) for a, b in zip(old, new, strict=True))
    print(f"{'step':>4} {'pml SupConLoss':>16} {'mkefast SoftPULoss':>19}")
    for step in sorted({0, args.steps // 2, args.steps - 1}):
        print(f"{step:>4} {old[step]:>16.12f} {new[step]:>19.12f}")
    print(f"largest difference over {args.steps} steps: {worst:.2e}")

    if args.memory_batch:
        fix_malloc_thresholds()
        for criterion in (pml_criterion, mkefast_criterion):  # warm both up before measuring
            one_step_peak(criterion(args.temperature), 256, 128)
        pml_peak = one_step_peak(pml_criterion(args.temperature), args.memory_batch, 128)
        mk_peak = one_step_peak(mkefast_criterion(args.temperature), args.memory_batch, 128)
        print(f"peak extra memory of one step at B = {args.memory_batch}, d = 128, M = 2 (float32): "
              f"pml {pml_peak / 2**20:.1f} MiB, mkefast {mk_peak / 2**20:.1f} MiB "
              f"(backend {mkefast.ops.soft_pu.resolve('auto', 'soft_pu', torch.device('cpu'), torch.float32, False)})")
    return 0 if worst < 1e-9 else 1


if __name__ == "__main__":
    raise SystemExit(main())
