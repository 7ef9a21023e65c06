"""Drop-in: open_clip's `ClipLoss` → `mkefast.nn.ClipLoss`, one import, with a learnable logit scale.

    python examples/clip_dropin.py                   # 30 training steps with each, then memory at B = 16384

The change in a training script that uses open_clip:

    - from open_clip.loss import ClipLoss
    + from mkefast.nn import ClipLoss

    criterion = ClipLoss()
    loss = criterion(image_features, text_features, model.logit_scale.exp())   # output_dict=True works too

Same forward, same numbers (loss, feature gradients and the gradient of the learnable `logit_scale`), but the
fused backends never build the two B×B logit matrices. Across GPUs, `ClipLoss(distributed=True)` all-gathers
the features with gradients, as open_clip's `gather_with_grad=True` does (`mkefast.distributed.clip_loss`).

The script trains a small two-tower model twice, once with each loss (float64), and prints both loss curves
and the learned temperature; then it measures the time and the peak memory of one float32 forward + backward
at B = 16384, d = 512 with the benchmark runner (`mkefast bench clip`: a fresh process per point, peak resident
memory above the inputs). Without open_clip installed, the "before" side is its formula
(`mkefast.bench.clip.DenseClipLoss`: two B×B logit matrices and two cross-entropies, as open_clip computes it).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mkefast.backends import CHUNKED_MIN_DIM, resolve_backend
from mkefast.bench import clip
from mkefast.bench.runner import Case, run_sweep
from mkefast.nn import ClipLoss

try:
    from open_clip.loss import ClipLoss as OpenClipLoss
except ImportError:
    from mkefast.bench.clip import DenseClipLoss as OpenClipLoss


class TwoTower(nn.Module):
    """An image tower, a text tower and CLIP's learnable logit scale (initialized to log(1/0.07))."""

    def __init__(self, image_dim: int, text_dim: int, embed: int) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Linear(image_dim, 64), nn.GELU(), nn.Linear(64, embed))
        self.text = nn.Sequential(nn.Linear(text_dim, 64), nn.GELU(), nn.Linear(64, embed))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))

    def forward(self, images: Tensor, texts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return (F.normalize(self.image(images), dim=-1), F.normalize(self.text(texts), dim=-1),
                self.logit_scale.exp())


def make_pairs(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Paired "images" and "texts": two noisy linear views of one latent per pair, float64."""
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(n, 8, generator=gen, dtype=torch.float64)
    views = [latent @ torch.randn(8, dim, generator=gen, dtype=torch.float64) for dim in (24, 16)]
    return tuple(v + 0.3 * torch.randn(v.shape, generator=gen, dtype=torch.float64) for v in views)  # type: ignore[return-value]


def train(criterion: Callable[..., Any], steps: int, batch: int, seed: int = 0) -> tuple[list[float], float]:
    """The existing training loop; only `criterion` changes. Returns every step's loss and the final 1/scale."""
    images, texts = make_pairs(steps * batch, seed)
    torch.manual_seed(seed)
    model = TwoTower(24, 16, 32).double()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    losses = []
    for step in range(steps):
        rows = slice(step * batch, (step + 1) * batch)
        loss = criterion(*model(images[rows], texts[rows]))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, float(1 / model.logit_scale.detach().exp())


def peak_memory(batch: int, dim: int, csv: str | None) -> dict[str, tuple[float, float]]:
    """(ms, peak MiB above the inputs) of one fwd+bwd, float32, CPU: open_clip's formula and mkefast's `auto`
    backend."""
    backend = resolve_backend("auto", "soft_pu", torch.device("cpu"), torch.float32, dim >= CHUNKED_MIN_DIM)
    cases = [Case(op="clip", provider=provider, device="cpu", dtype="float32", B=batch, d=dim, M=1,
                  mode="fwd+bwd", repeats=1, warmup=1) for provider in (clip.DENSE, backend)]
    rows = run_sweep(clip.SPEC, "mkefast.bench.clip", cases, csv_path=csv, log=lambda _line: None,
                     timeout_s=3600)
    return {row["backend"]: (float(row["ms_median"]), float(row["peak_mem_mb"])) for row in rows}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--memory-batch", type=int, default=16384, help="B of the memory comparison (0: skip)")
    parser.add_argument("--memory-dim", type=int, default=512, help="d of the memory comparison")
    parser.add_argument("--csv", default=None, help="also append the memory rows to this CSV")
    args = parser.parse_args(argv)

    old, old_tau = train(OpenClipLoss(), args.steps, args.batch)
    new, new_tau = train(ClipLoss(), args.steps, args.batch)
    worst = max(abs(a - b) for a, b in zip(old, new, strict=True))
    before = f"{OpenClipLoss.__module__}.{OpenClipLoss.__name__}"
    print(f"{'step':>4} {before:>36} {'mkefast.nn.ClipLoss':>20}")
    for step in sorted({0, args.steps // 2, args.steps - 1}):
        print(f"{step:>4} {old[step]:>36.12f} {new[step]:>20.12f}")
    print(f"largest difference over {args.steps} steps: {worst:.2e}; learned temperature 1/logit_scale: "
          f"{old_tau:.12f} and {new_tau:.12f}")

    if args.memory_batch:
        figures = peak_memory(args.memory_batch, args.memory_dim, args.csv)
        dense_ms, dense = figures.pop(clip.DENSE)
        backend, (ours_ms, ours) = next(iter(figures.items()))
        print(f"one forward + backward, B = {args.memory_batch}, d = {args.memory_dim}, float32, CPU: "
              f"time dense {dense_ms:.0f} ms, mkefast {ours_ms:.0f} ms; "
              f"peak memory dense {dense:.1f} MiB, mkefast {ours:.1f} MiB (backend {backend}; "
              f"{dense / max(ours, 1e-9):.0f}x less)")
    return 0 if worst < 1e-9 and abs(old_tau - new_tau) < 1e-12 else 1


if __name__ == "__main__":
    raise SystemExit(main())
