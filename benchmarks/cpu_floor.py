"""The CPU path against its floor: `python benchmarks/cpu_floor.py [--B 8192] [--d 128] [--M 2] [--csv PATH]`.

For each loss (soft-PU with M modalities, `supcon_loss` single view, `clip_loss` symmetric at logit scale 10 and
100), fwd+bwd, side by side in ONE process, the providers interleaved repetition by repetition (so that the
noise of a shared machine falls on all of them alike; ratios hold, absolute times do not):

- `mkefast`: the fused `cpu` backend, float32 inputs; `mkefast_bf16`: the same with bfloat16 inputs.
- `gemm_floor`: the three GEMM-equivalents of the same shapes through `torch.mm`: the logits `s zᵀ` and the
  two gradient GEMMs `G z`, `Gᵀ s` (`[B, d]` anchors against `[M·B, d]` candidates). No fused loss that
  needs the logits and returns both gradients can do less.
- `compiled_dense`: `torch.compile` of the plain dense math of the same loss (keeps the `B×M·B` logits).

Every row: median and 20th/80th percentiles of the repetitions in ms, the ratio of the median to the
`gemm_floor` median, and the peak memory above the inputs (peak RSS of one warm call in a fresh process). Rows
are appended to `--csv` (default benchmarks/results/cpu_floor.csv) with the device, the kernels' instruction
set, the versions and the git sha.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

import mkefast
from mkefast._build import cpu_module, provenance
from mkefast.backends import reference
from mkefast.ops._common import SoftPUOptions, make_targets

OPS = ("soft_pu", "supcon", "clip", "clip_s100")
# CLIP's logit scale: 10 (one exp shift serves the whole batch: |ℓ| ≤ 10) and open_clip's cap, 100, where the
# float32 kernels keep a running max per column (docs/math.md, "Symmetric InfoNCE in one pass").
CLIP_SCALE = {"clip": 10.0, "clip_s100": 100.0}
PROVIDERS = ("mkefast", "mkefast_bf16", "gemm_floor", "compiled_dense")
COLUMNS = ("op", "provider", "device", "isa", "dtype", "B", "d", "M", "mode", "ms_median", "ms_p20", "ms_p80",
           "vs_floor", "peak_mem_mb", "torch", "triton", "git_sha", "date", "mkefast")
CLASSES = 10  # soft-PU: 5 % labeled, pseudo labels for the rest (the benchmarks' setting); SupCon: all labeled
TEMPERATURE = 0.1


def _inputs(op: str, b: int, d: int, m: int) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, CLASSES, (b,), generator=g)
    if op == "soft_pu":
        return {"fused": torch.randn(b, d, generator=g), "unimodal": torch.randn(m, b, d, generator=g),
                "labels": labels, "labeled": torch.rand(b, generator=g) < 0.05,
                "pseudo": torch.randint(0, CLASSES, (b,), generator=g)}
    if op == "supcon":
        return {"embeddings": torch.randn(b, d, generator=g), "labels": labels}
    return {"image": F.normalize(torch.randn(b, d, generator=g), dim=-1),
            "text": F.normalize(torch.randn(b, d, generator=g), dim=-1)}


def _leaves(x: dict[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    return {k: v.to(dtype).requires_grad_() if v.is_floating_point() else v for k, v in x.items()}


def _fused(op: str, x: dict[str, Any]) -> Callable[[], torch.Tensor]:
    if op == "soft_pu":
        return lambda: mkefast.soft_pu_loss(x["fused"], x["unimodal"], x["labels"], x["labeled"], x["pseudo"],
                                            temperature=TEMPERATURE, backend="cpu")  # type: ignore[return-value]
    if op == "supcon":
        return lambda: mkefast.supcon_loss(x["embeddings"], x["labels"], temperature=TEMPERATURE, backend="cpu")
    return lambda: mkefast.clip_loss(x["image"], x["text"], CLIP_SCALE[op], backend="cpu")


def _dense(op: str, x: dict[str, Any]) -> Callable[[], torch.Tensor]:
    """torch.compile of the dense math, as a user without mkefast would write it (soft-PU: mkefast's
    reference math, which is that dense form)."""
    if op == "soft_pu":
        targets = make_targets(x["labels"], x["labeled"], x["pseudo"], x["labels"], x["labeled"], x["pseudo"],
                               diag_offset=0, exclude_diagonal=False)
        options = SoftPUOptions(temperature=TEMPERATURE)

        def soft_pu(fused: torch.Tensor, unimodal: torch.Tensor) -> torch.Tensor:
            stats = reference.soft_pu_terms(F.normalize(fused, dim=-1), F.normalize(unimodal, dim=-1), targets,
                                            options)
            return (stats.lb + stats.ulb).mean()

        compiled = torch.compile(soft_pu, dynamic=False)
        return lambda: compiled(x["fused"], x["unimodal"])
    if op == "supcon":
        def supcon(e: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            e = F.normalize(e, dim=-1)
            eye = torch.eye(e.shape[0], dtype=torch.bool)
            logits = (e @ e.T / TEMPERATURE).masked_fill(eye, float("-inf"))
            pos = (labels[:, None] == labels[None, :]) & ~eye
            log_p = logits - torch.logsumexp(logits, dim=1, keepdim=True)
            n = pos.sum(1)
            per_anchor = -torch.where(pos, log_p, 0.0).sum(1) / n.clamp(min=1)
            return per_anchor[n > 0].mean()

        compiled_supcon = torch.compile(supcon, dynamic=False)
        return lambda: compiled_supcon(x["embeddings"], x["labels"])

    scale = CLIP_SCALE[op]

    def clip(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        logits = scale * image @ text.T
        target = torch.arange(image.shape[0])
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))

    compiled_clip = torch.compile(clip, dynamic=False)
    return lambda: compiled_clip(x["image"], x["text"])


def _floor(op: str, x: dict[str, Any], m: int) -> Callable[[], None]:
    """The three GEMM-equivalents of the op's shapes; `G` stands in for the gradient of the logits."""
    s = x["fused"] if op == "soft_pu" else x["embeddings"] if op == "supcon" else x["image"]
    z = x["unimodal"].reshape(-1, s.shape[1]) if op == "soft_pu" else s if op == "supcon" else x["text"]
    s, z = s.detach(), z.detach()
    logits = s.new_empty(s.shape[0], z.shape[0])
    grad_s, grad_z = torch.empty_like(s), torch.empty_like(z)

    def gemms() -> None:
        torch.mm(s, z.T, out=logits)
        torch.mm(logits, z, out=grad_s)
        torch.mm(logits.T, s, out=grad_z)

    return gemms


def _step(op: str, provider: str, b: int, d: int, m: int) -> tuple[Callable[[], None], dict[str, Any]]:
    x = _inputs(op, b, d, m)
    if provider == "gemm_floor":
        return _floor(op, x, m), x
    x = _leaves(x, torch.bfloat16 if provider == "mkefast_bf16" else torch.float32)
    loss = _dense(op, x) if provider == "compiled_dense" else _fused(op, x)

    def fwd_bwd() -> None:
        for v in x.values():
            v.grad = None
        loss().backward()

    return fwd_bwd, x


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _peak_worker(op: str, provider: str, b: int, d: int, m: int) -> None:
    """Subprocess: one warm-up call (torch.compile compiles in it), then the peak RSS of one call above what
    the process holds before it (the inputs, the compiled code), in MiB. Linux: writing 5 to
    /proc/self/clear_refs resets the peak (VmHWM) to the current RSS."""
    step, _ = _step(op, provider, b, d, m)
    step()
    Path("/proc/self/clear_refs").write_text("5")
    base = _rss_kib("VmRSS")
    step()
    print(json.dumps({"peak_mem_mb": (_rss_kib("VmHWM") - base) / 1024}))


def _peak_mb(op: str, provider: str, b: int, d: int, m: int) -> float:
    """The peak memory of one call above the inputs, measured in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--peak-worker", json.dumps([op, provider, b, d, m])],
                         capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1])["peak_mem_mb"])


def run(ops: list[str], b: int, d: int, m: int, repeats: int, warmup: int) -> list[dict[str, Any]]:
    rows = []
    lib = cpu_module()
    isa = lib.build_info()["isa"] if lib is not None else "none"
    device = f"cpu ({os.cpu_count()} cores; {torch.get_num_threads()} threads)"
    for op in ops:
        m_op = m if op == "soft_pu" else 1
        steps = {p: _step(op, p, b, d, m_op)[0] for p in PROVIDERS}
        for step in steps.values():
            for _ in range(warmup):
                step()
        times: dict[str, list[float]] = {p: [] for p in PROVIDERS}
        for _ in range(repeats):
            for p, step in steps.items():
                t0 = time.perf_counter()
                step()
                times[p].append((time.perf_counter() - t0) * 1e3)
        del steps
        floor = statistics.median(times["gemm_floor"])
        for p in PROVIDERS:
            q = statistics.quantiles(times[p], n=5, method="inclusive")
            med = statistics.median(times[p])
            rows.append({"op": op, "provider": p, "device": device, "isa": isa,
                         "dtype": "bfloat16" if p == "mkefast_bf16" else "float32", "B": b, "d": d, "M": m_op,
                         "mode": "fwd+bwd", "ms_median": med, "ms_p20": q[0], "ms_p80": q[3],
                         "vs_floor": med / floor, "peak_mem_mb": _peak_mb(op, p, b, d, m_op), **provenance()})
            r = rows[-1]
            print(f"{op:8s} {p:15s} {med:9.1f} ms ({r['ms_p20']:.1f}-{r['ms_p80']:.1f})  "
                  f"{r['vs_floor']:5.2f}x floor  {r['peak_mem_mb']:8.1f} MiB", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--B", type=int, default=8192)
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--M", type=int, default=2)
    parser.add_argument("--ops", default=",".join(OPS), help=f"comma list of {', '.join(OPS)}")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--csv", default=str(Path(__file__).parent / "results" / "cpu_floor.csv"))
    parser.add_argument("--peak-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.peak_worker:
        _peak_worker(*json.loads(args.peak_worker))
        return 0
    ops = args.ops.split(",")
    bad = sorted(set(ops) - set(OPS))
    if bad:
        parser.error(f"--ops: expected a comma list of {', '.join(OPS)}, got {', '.join(bad)}")
    rows = run(ops, args.B, args.d, args.M, args.repeats, args.warmup)
    path = Path(args.csv)
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
