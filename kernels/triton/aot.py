"""Ahead-of-time compilation of every Triton kernel variant for NVIDIA targets, without a GPU.

`triton.compile` lowers a kernel for a named target (`GPUTarget("cuda", 90, 32)` is sm_90a) with the ptxas
that ships in Triton's wheel, so a machine without a GPU can check that every variant of the kernels still
compiles for the GPUs it will run on, and read what ptxas made of it: registers per thread, spilled bytes
(the stack frame) and shared memory (from the cubin's resource usage, via the bundled `cuobjdump`).

    python -m mkefast.kernels.triton.aot --arch 90a,80 --dtype bf16 --d 64,128,256

prints one line per (kernel variant, target, d). It needs the kernels compiled, not interpreted: run it
without `TRITON_INTERPRET=1` (the tests start it in a subprocess for that reason).

A variant fixes the kernel's compile-time switches (RBF on/off, "phi" or "logit" weights, exclude_diagonal,
which gradients, one feature block or a loop: SINGLE_D follows from d as in `mkefast.backends.triton`) and
one tile configuration; the integer arguments carry the divisibility hints a launch would give them
(pointers and d aligned to 16 bytes / elements when they are).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["KernelReport", "Variant", "compile_variant", "main", "variants"]

_ARCHS = {"90a": 90, "80": 80}
_DTYPES = {"bf16": "bf16", "fp16": "fp16", "fp32": "fp32"}
# Element type of every pointer argument: "in" is the inputs' dtype.
_POINTERS = {
    "s_ptr": "in", "z_ptr": "in", "a_ptr": "in", "b_ptr": "in", "grad_z_ptr": "in", "grad_a_ptr": "in",
    "grad_b_ptr": "in", "cls_ptr": "i32", "a_cls_ptr": "i32", "lab_idx_ptr": "i32", "n_lab_ptr": "i32",
    "lab_ptr": "u8", "a_lab_ptr": "u8",
}
_FLOATS = {"qk_scale", "rbf_scale", "log2_sigma", "inv_temp"}
# The pair kernels' tile of the report: a middle entry of their autotuning space (BLOCK_M, BLOCK_N, warps, stages).
PAIR_TILE = (64, 64, 4, 3)
COSINE_TILE = (4, 4)  # BLOCK_R, warps
_WEIGHTS = {"none": {"RBF": False, "PHI": False}, "logit": {"RBF": True, "PHI": False},
            "phi": {"RBF": True, "PHI": True}}


@dataclass(frozen=True)
class Variant:
    """One compiled form of a kernel: its name in the kernel module and its compile-time arguments."""

    kernel: str
    label: str
    constexprs: dict[str, Any]
    grad_s_dtype: str = "in"  # the atomic kernel accumulates the anchors' gradient in fp32
    num_warps: int = 4
    num_stages: int = 3


@dataclass(frozen=True)
class KernelReport:
    kernel: str
    variant: str
    arch: str
    dtype: str
    d: int
    registers: int  # per thread
    spilled: int  # bytes of stack per thread (spills)
    shared: int  # bytes of shared memory per block
    seconds: float

    def line(self) -> str:
        return (f"{self.kernel:<28} {self.variant:<26} sm_{self.arch:<4} {self.dtype:<5} d={self.d:<5} "
                f"regs={self.registers:<4} spilled={self.spilled:<5} B  "
                f"smem={self.shared // 1024} KiB  {self.seconds:.1f} s")


def _launch_choices(d: int, dtype: str) -> tuple[int, str, int]:
    """(BLOCK_D of the pair kernels, their dot precision, BLOCK_D of the cosine kernels), as
    `mkefast.backends.triton` chooses them for a launch."""
    import torch
    from mkefast.kernels.triton.cosine_rec import MAX_BLOCK_D

    from mkefast.backends.triton import _cosine_block_d, _dot_precision, _pair_block_d

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    return _pair_block_d(d), _dot_precision(torch_dtype), _cosine_block_d(d, MAX_BLOCK_D)


def variants(d: int, dtype: str, *, kernels: Iterable[str] | None = None,
             labels: Iterable[str] | None = None) -> list[Variant]:
    """The variants compiled for feature size d and `dtype` inputs: every kernel, every weight mode, both
    exclusion settings across them, every choice of gradients; SINGLE_D and the dot precision as a launch would
    set them. `kernels` / `labels` keep only those kernel names / variant labels."""
    block_d, precision, cos_block = _launch_choices(d, dtype)
    bm, bn, warps, stages = PAIR_TILE
    tile = {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_D": block_d, "DOT_PRECISION": precision, "INTERPRET": False}
    single = {"SINGLE_D": d <= block_d}

    def pair(kernel: str, weights: str, exclude: bool, **extra: Any) -> Variant:
        flags = "".join(f"+{k.lower()}" for k, v in extra.items() if v)
        label = f"{weights}{'+excl' if exclude else ''}{flags}"
        constexprs = {**_WEIGHTS[weights], "EXCLUDE_DIAGONAL": exclude, **single, **extra, **tile}
        return Variant(kernel, label, constexprs, grad_s_dtype="fp32" if "atomic" in kernel else "in",
                       num_warps=warps, num_stages=stages)

    rows, r_warps = COSINE_TILE
    out = [
        Variant("_soft_pu_phi_ref_kernel", "excl", {"EXCLUDE_DIAGONAL": True, **tile}, num_warps=warps,
                num_stages=stages),
        pair("_soft_pu_fwd_kernel", "none", False),
        pair("_soft_pu_fwd_kernel", "logit", False),
        pair("_soft_pu_fwd_kernel", "phi", True),
        pair("_soft_pu_bwd_rows_kernel", "logit", False, GRAD_S=True, GRAD_T=False),
        pair("_soft_pu_bwd_rows_kernel", "phi", True, GRAD_S=True, GRAD_T=True),
        pair("_soft_pu_bwd_rows_kernel", "none", False, GRAD_S=False, GRAD_T=True),
        pair("_soft_pu_bwd_cols_kernel", "logit", False),
        pair("_soft_pu_bwd_cols_kernel", "phi", True),
        pair("_soft_pu_bwd_atomic_kernel", "none", False, GRAD_T=False),
        pair("_soft_pu_bwd_atomic_kernel", "phi", True, GRAD_T=True),
        Variant("_cosine_rec_fwd_kernel", "", {"BLOCK_R": rows, "BLOCK_D": cos_block}, num_warps=r_warps),
        Variant("_cosine_rec_bwd_kernel", "a+b", {"NEED_A": True, "NEED_B": True, "SINGLE_D": d <= cos_block,
                                                  "BLOCK_R": rows, "BLOCK_D": cos_block, "INTERPRET": False},
                num_warps=r_warps),
    ]
    keep_kernels = None if kernels is None else set(kernels)
    keep_labels = None if labels is None else set(labels)
    return [v for v in out if (keep_kernels is None or v.kernel in keep_kernels)
            and (keep_labels is None or v.label in keep_labels)]


def _jit_function(kernel: str) -> Any:
    from mkefast.kernels.triton import cosine_rec, soft_pu

    from triton.runtime.jit import JITFunction

    if soft_pu.INTERPRET:
        raise RuntimeError("mkefast.kernels.triton.aot: the kernels were imported under TRITON_INTERPRET=1; "
                           "run the compile check in a process without it")
    module = cosine_rec if kernel.startswith("_cosine") else soft_pu
    fn = getattr(module, kernel)
    while not isinstance(fn, JITFunction):  # the autotuner wraps it
        fn = fn.fn
    return fn


def _signature(fn: Any, variant: Variant, dtype: str, d: int) -> tuple[dict[str, str], dict[tuple[int], Any]]:
    signature: dict[str, str] = {}
    attrs: dict[tuple[int], Any] = {}
    for i, name in enumerate(fn.arg_names):
        if name in variant.constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            elem = variant.grad_s_dtype if name == "grad_s_ptr" else _POINTERS.get(name, "fp32")
            signature[name] = "*" + (dtype if elem == "in" else elem)
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in _FLOATS:
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
            if name == "D" and d % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, attrs


def _resource_usage(cubin: bytes) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread) of the cubin's one function, by Triton's cuobjdump.

    Triton kernels keep no arrays on the stack, so its frame is what ptxas spilled.
    """
    import triton.backends.nvidia as nvidia

    tool = Path(nvidia.__file__).parent / "bin" / "cuobjdump"
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([str(tool), "--dump-resource-usage", f.name], check=True, capture_output=True,
                              text=True).stdout
    usage = re.search(r"REG:(\d+) STACK:(\d+)", text)
    if usage is None:
        raise RuntimeError(f"cannot read the resource usage from cuobjdump's output:\n{text}")
    return int(usage.group(1)), int(usage.group(2))


def compile_variant(variant: Variant, arch: str, dtype: str, d: int) -> KernelReport:
    """Compiles `variant` for sm_`arch` (`"90a"` or `"80"`) with `dtype` inputs at feature size d."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as compile_kernel

    fn = _jit_function(variant.kernel)
    signature, attrs = _signature(fn, variant, _DTYPES[dtype], d)
    start = time.perf_counter()
    compiled = compile_kernel(
        ASTSource(fn, signature, variant.constexprs, attrs),
        target=GPUTarget("cuda", _ARCHS[arch], 32),
        options={"num_warps": variant.num_warps, "num_stages": variant.num_stages, "enable_fp_fusion": True},
    )
    seconds = time.perf_counter() - start
    regs, spilled = _resource_usage(compiled.asm["cubin"])
    return KernelReport(variant.kernel, variant.label, arch, dtype, d, regs, spilled, int(compiled.metadata.shared),
                        seconds)


def _csv(kind: Callable[[str], Any], allowed: Iterable[str] | None = None) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if allowed is not None:
            bad = [t for t in items if t not in allowed]
            if bad:
                raise argparse.ArgumentTypeError(f"expected some of {sorted(allowed)}, got {bad}")
        return [kind(t) for t in items]
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mkefast.kernels.triton.aot", description=__doc__.split("\n")[0])
    parser.add_argument("--arch", type=_csv(str, _ARCHS), default=["90a", "80"], help="targets (90a, 80)")
    parser.add_argument("--dtype", type=_csv(str, _DTYPES), default=["bf16"], help="input dtypes (bf16, fp16, fp32)")
    parser.add_argument("--d", type=_csv(int), default=[128], help="feature sizes")
    parser.add_argument("--kernels", type=_csv(str), default=None, help="kernel names (default: all)")
    parser.add_argument("--labels", type=_csv(str), default=None, help="variant labels (default: all)")
    args = parser.parse_args(argv)
    failures = 0
    for d in args.d:
        for dtype in args.dtype:
            for arch in args.arch:
                for variant in variants(d, dtype, kernels=args.kernels, labels=args.labels):
                    try:
                        print(compile_variant(variant, arch, dtype, d).line(), flush=True)
                    except Exception as e:  # report every failing variant, then fail
                        failures += 1
                        print(f"{variant.kernel:<28} {variant.label:<26} sm_{arch:<4} {dtype:<5} d={d:<5} FAILED: "
                              f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
