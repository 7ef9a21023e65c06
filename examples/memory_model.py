"""Peak memory of one soft-PU forward + backward: the model of docs/memory_model.md against a measurement.

    python examples/memory_model.py                      # the table of docs/memory_model.md
    python examples/memory_model.py --sizes 512 --dim 32 --backends reference

Measurement (Linux, glibc; `mkefast.bench.memory`, as the benchmark runner measures): after one warm-up call
per backend, each configuration allocates its inputs, resets the process's peak resident set size (write 5
to /proc/self/clear_refs), runs forward + backward once and reads the peak (VmHWM in /proc/self/status)
minus the resident size before the call: the peak extra memory of the call, the gradients of the inputs
included. glibc is told to serve every block of 128 KiB or more by mmap and to return it when freed
(`mallopt`), so RSS follows the live tensors to within about a MiB of allocator and library noise.
"""

from __future__ import annotations

import argparse

import torch

import mkefast
from mkefast.backends import cpu as cpu_backend
from mkefast.bench.memory import fix_malloc_thresholds, peak_extra_bytes

MIB = 2**20

# Per pair (j, k) at the peak of the reference backend's backward (measured; docs/memory_model.md): five
# [M, B, N] accumulation-dtype buffers and five [B, N] bool masks.
REFERENCE_PAIR_BUFFERS = 5
REFERENCE_MASKS = 5
# Copies of the [B, d] + [M, B, d] inputs alive at the peak, which comes while the pairs are processed in
# backward: the normalized inputs (saved for backward) and the gradient accumulators of the backend.
INPUT_COPIES = 2


def predicted_bytes(backend: str, b: int, d: int, m: int, world: int = 1, elem: int = 4,
                    chunk_rows: int = 0) -> int:
    """Model of the peak extra bytes of forward + backward on one rank (docs/memory_model.md).

    Args:
        backend: "reference", "cpu"/"cuda" (row-chunked) or "triton" (tiles).
        b: anchors per rank (B); the rank sees N = world·b candidates.
        d: feature size. m: modalities (M). world: ranks (W).
        elem: bytes per accumulation-dtype element (4 for float32 and below, 8 for float64).
        chunk_rows: anchor rows per chunk of the chunked backends (`mkefast.backends.cpu.chunk_rows`, set
            by `MKEFAST_CPU_CHUNK_MB`); one `[chunk_rows, N]` block is alive at a time.
    """
    n = world * b
    rows = INPUT_COPIES * (b + m * b) * d * elem
    if world > 1:  # gathered candidates, their gradient, and the padded copy sent to the reduce-scatter
        rows += 3 * m * n * d * elem
    if backend == "reference":
        return (REFERENCE_PAIR_BUFFERS * m * elem + REFERENCE_MASKS) * b * n + rows
    return (chunk_rows * n * elem if backend in ("cpu", "cuda") else 0) + rows


def _workload(backend: str, b: int, d: int, m: int) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    fused = torch.randn(b, d, generator=gen).requires_grad_(True)
    unimodal = torch.randn(m, b, d, generator=gen).requires_grad_(True)
    labels = torch.randint(0, 10, (b,), generator=gen)
    labeled = torch.rand(b, generator=gen) < 0.3
    pseudo = torch.randint(-1, 10, (b,), generator=gen)
    return fused, unimodal, labels, labeled, pseudo


def _run(backend: str, inputs: tuple[torch.Tensor, ...]) -> None:
    mkefast.soft_pu_loss(*inputs, backend=backend).backward()


def measured_bytes(backend: str, b: int, d: int, m: int) -> int:
    """Peak extra memory of `soft_pu_loss(...).backward()` on CPU float32 inputs (allocated beforehand)."""
    inputs = _workload(backend, b, d, m)
    return peak_extra_bytes(lambda: _run(backend, inputs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--modalities", type=int, default=2)
    parser.add_argument("--backends", nargs="+", default=["reference", "cpu"])
    args = parser.parse_args(argv)
    fix_malloc_thresholds()
    print(f"{'backend':>10} {'B':>6} {'d':>5} {'M':>3} {'model MiB':>10} {'measured MiB':>13} {'ratio':>6}")
    for backend in args.backends:
        if backend not in mkefast.available_backends():
            print(f"{backend:>10} not available here")
            continue
        measured_bytes(backend, 256, args.dim, args.modalities)  # warm libraries and thread pools up
        for b in args.sizes:
            rows = cpu_backend.chunk_rows(b, b, torch.float32) if backend == "cpu" else 0
            model = predicted_bytes(backend, b, args.dim, args.modalities, chunk_rows=rows)
            got = measured_bytes(backend, b, args.dim, args.modalities)
            print(f"{backend:>10} {b:>6} {args.dim:>5} {args.modalities:>3} {model / MIB:>10.1f} "
                  f"{got / MIB:>13.1f} {got / model:>6.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
