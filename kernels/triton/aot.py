"""Ahead-of-time compilation of every Triton kernel variant for NVIDIA targets, without a GPU.

`triton.compile` lowers a kernel for a named target (`GPUTarget("cuda", 90, 32)` is sm_90a) with the ptxas
that ships in Triton's wheel, so a machine without a GPU can compile every variant of the kernels for the GPUs
they will run on, and read what ptxas made of it (`compile_variant`): registers per thread, spilled bytes (the
stack frame), shared memory, whether the tile products run on the tensor cores, and how many exponentials
(MUFU.EX2, the special-function unit that bounds this loss at small d) one tile costs. `mkefast kernels`
(`mkefast.kernels_report`) prints and saves these records. It needs the kernels compiled, not interpreted: run
it without `TRITON_INTERPRET=1`.

A variant fixes a kernel's compile-time switches (RBF on/off, "phi" or "logit" weights, exclude_diagonal, which
gradients; SINGLE_D (forward), BLOCK_D and the dot precision follow from d and the dtype as in
`mkefast.backends.triton`); each is compiled for every configuration of its kernel's autotuning candidates
(`candidate_configs`: those for the tensor cores and those for fp32 operands, whatever the dtype), and
`in_autotune_space` says whether the kernel's own pruning keeps that configuration for this launch. The integer
arguments carry the divisibility hints a launch would give them (pointers and d aligned to 16 bytes / elements
when they are).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ARCHS",
    "DTYPES",
    "KernelRecord",
    "Variant",
    "autotune_space",
    "candidate_configs",
    "compile_variant",
    "config_dict",
    "cuobjdump",
    "sass_stats",
    "variants",
]

ARCHS = {"90a": 90, "80": 80}
DTYPES = ("bf16", "fp16", "fp32")
# Element type of every pointer argument: "in" is the inputs' dtype.
_POINTERS = {
    "s_ptr": "in", "z_ptr": "in", "a_ptr": "in", "b_ptr": "in", "grad_z_ptr": "in", "grad_a_ptr": "in",
    "grad_b_ptr": "in", "cls_ptr": "i32", "a_cls_ptr": "i32", "lab_idx_ptr": "i32", "n_lab_ptr": "i32",
    "lab_ptr": "u8", "a_lab_ptr": "u8",
}
_FLOATS = {"qk_scale", "rbf_scale", "log2_sigma", "inv_temp"}
_WEIGHTS = {"none": {"RBF": False, "PHI": False}, "logit": {"RBF": True, "PHI": False},
            "phi": {"RBF": True, "PHI": True}}
# The tensor-core instruction of each target in SASS: warpgroup MMA on Hopper, warp-level MMA on Ampere.
_TENSOR_CORE_OPS = {"90a": ("HGMMA", "HMMA"), "80": ("HMMA",)}


@dataclass(frozen=True)
class Variant:
    """One compiled form of a kernel: its name in the kernel module and its compile-time arguments (without
    the tile configuration, which comes from the kernel's autotuning candidates)."""

    kernel: str
    label: str
    constexprs: dict[str, Any]
    grad_s_dtype: str = "in"  # the atomic kernel accumulates the anchors' gradient in fp32

    @property
    def pair(self) -> bool:
        """Whether the kernel tiles anchor × candidate pairs (BLOCK_M × BLOCK_N), not rows (BLOCK_R)."""
        return self.kernel.startswith("_soft_pu")


@dataclass(frozen=True)
class KernelRecord:
    """What ptxas made of one variant in one tile configuration for one target, dtype and d."""

    kernel: str
    variant: str
    arch: str
    dtype: str
    d: int
    config: dict[str, int]  # the autotuned meta-parameters, num_warps and num_stages
    registers: int  # per thread
    spill_bytes: int  # stack bytes per thread: Triton kernels keep no arrays on the stack, so this is spills
    shared_bytes: int  # per block
    tensor_cores: bool  # HGMMA (wgmma) on sm_90a or HMMA (mma.sync) anywhere in the SASS
    tensor_core_op: str  # the tensor-core instruction found ("" when none)
    exp_per_tile: int  # MUFU.EX2 per tile: the static count in the kernel × its threads
    exp_per_pair: float  # exp_per_tile / pairs of the tile (pair kernels; 0 for the row kernels)
    in_autotune_space: bool  # the kernel's pruning keeps this configuration for this launch
    triton: str  # Triton's version
    seconds: float = field(compare=False)  # compile time


def config_dict(config: Any) -> dict[str, int]:
    """A `triton.Config` as the plain dict the records carry: its meta-parameters, num_warps, num_stages, and
    maxnreg where it sets one."""
    maxnreg = {} if config.maxnreg is None else {"maxnreg": int(config.maxnreg)}
    return {**{k: int(v) for k, v in config.kwargs.items()}, "num_warps": int(config.num_warps),
            "num_stages": int(config.num_stages), **maxnreg}


def _launch_choices(d: int, dtype: str) -> tuple[int, int, str, int]:
    """(BLOCK_D of the forward pair kernel, of the streamed ones (backward, "phi" pre-pass), their dot precision,
    BLOCK_D of the cosine kernels), as `mkefast.backends.triton` chooses them for a launch."""
    import torch
    from mkefast.kernels.triton.cosine_rec import MAX_BLOCK_D

    from mkefast.backends.triton import _cosine_block_d, _dot_precision, _pair_block_d

    torch_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    return (_pair_block_d(d), _pair_block_d(d, streamed=True), _dot_precision(torch_dtype),
            _cosine_block_d(d, MAX_BLOCK_D))


def variants(d: int, dtype: str, *, kernels: Iterable[str] | None = None,
             labels: Iterable[str] | None = None) -> list[Variant]:
    """The variants compiled for feature size d and `dtype` inputs: every kernel, every weight mode, both
    exclusion settings across them, every choice of gradients; SINGLE_D, BLOCK_D and the dot precision as a
    launch would set them. `kernels` / `labels` keep only those kernel names / variant labels."""
    fwd_block, bwd_block, precision, cos_block = _launch_choices(d, dtype)
    launch = {"BLOCK_D": fwd_block, "DOT_PRECISION": precision, "INTERPRET": False}

    def pair(kernel: str, weights: str, exclude: bool, **extra: Any) -> Variant:
        flags = "".join(f"+{k.lower()}" for k, v in extra.items() if v)
        label = f"{weights}{'+excl' if exclude else ''}{flags}"
        # The backward always streams over d (`mkefast.backends.triton._MAX_STREAMED_BLOCK_D`).
        single = {} if "bwd" in kernel else {"SINGLE_D": d <= fwd_block}
        constexprs = {**_WEIGHTS[weights], "EXCLUDE_DIAGONAL": exclude, **single, **extra, **launch,
                      "BLOCK_D": bwd_block if "bwd" in kernel else fwd_block}
        return Variant(kernel, label, constexprs, grad_s_dtype="fp32" if "atomic" in kernel else "in")

    out = [
        Variant("_soft_pu_phi_ref_kernel", "excl", {"EXCLUDE_DIAGONAL": True, **launch, "BLOCK_D": bwd_block}),
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
        Variant("_cosine_rec_fwd_kernel", "loss", {"BLOCK_D": cos_block}),
        Variant("_cosine_rec_bwd_kernel", "a+b", {"NEED_A": True, "NEED_B": True, "SINGLE_D": d <= cos_block,
                                                  "BLOCK_D": cos_block, "INTERPRET": False}),
    ]
    keep_kernels = None if kernels is None else set(kernels)
    keep_labels = None if labels is None else set(labels)
    return [v for v in out if (keep_kernels is None or v.kernel in keep_kernels)
            and (keep_labels is None or v.label in keep_labels)]


def _autotuner(kernel: str) -> Any:
    from mkefast.kernels.triton import cosine_rec, soft_pu

    if soft_pu.INTERPRET:
        raise RuntimeError("the Triton kernels were imported under TRITON_INTERPRET=1; compile them ahead of time "
                           "in a process without it")
    return getattr(cosine_rec if kernel.startswith("_cosine") else soft_pu, kernel)


def _jit_function(kernel: str) -> Any:
    from triton.runtime.jit import JITFunction

    fn = _autotuner(kernel)
    while not isinstance(fn, JITFunction):  # the autotuner wraps it
        fn = fn.fn
    return fn


def candidate_configs(kernel: str) -> list[Any]:
    """Every configuration of the kernel's autotuner, before its pruning for a launch."""
    return list(_autotuner(kernel).configs)


def autotune_space(variant: Variant, d: int) -> list[Any]:
    """The configurations the kernel's autotuner may pick for a launch of `variant` (after its pruning, which
    sees the launch's keyword arguments, as `Autotuner.prune_configs` passes them)."""
    tuner = _autotuner(variant.kernel)
    prune = getattr(tuner, "early_config_prune", None)
    configs = list(tuner.configs)
    return list(prune(configs, {"D": d}, **variant.constexprs)) if prune else configs


def _signature(fn: Any, constexprs: dict[str, Any], grad_s_dtype: str, dtype: str,
               d: int) -> tuple[dict[str, str], dict[tuple[int], Any]]:
    signature: dict[str, str] = {}
    attrs: dict[tuple[int], Any] = {}
    for i, name in enumerate(fn.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            elem = grad_s_dtype if name == "grad_s_ptr" else _POINTERS.get(name, "fp32")
            signature[name] = "*" + (dtype if elem == "in" else elem)
            attrs[(i,)] = [["tt.divisibility", 16]]
        elif name in _FLOATS:
            signature[name] = "fp32"
        else:
            signature[name] = "i32"
            if name == "D" and d % 16 == 0:
                attrs[(i,)] = [["tt.divisibility", 16]]
    return signature, attrs


def cuobjdump() -> Path:
    """The `cuobjdump` that ships in Triton's wheel (no CUDA toolkit needed)."""
    import triton.backends.nvidia as nvidia

    return Path(nvidia.__file__).parent / "bin" / "cuobjdump"


@dataclass
class SassStats:
    """One function's resource usage and instruction counts, from `cuobjdump -res-usage -sass`."""

    registers: int = 0
    stack: int = 0  # bytes per thread
    shared: int = 0  # static shared memory, bytes per block
    ops: dict[str, int] = field(default_factory=dict)  # opcode -> static count in the function

    def count(self, *prefixes: str) -> int:
        return sum(n for op, n in self.ops.items() if op.startswith(prefixes))


_ARCH = re.compile(r"(?:arch = |code for )(sm_\w+)")
_FUNCTION = re.compile(r"^\s*Function\s*:?\s*([^\s:]+):?\s*$")
_USAGE = re.compile(r"REG:(\d+) STACK:(\d+) SHARED:(\d+)")
# A SASS line, `/*0a50*/  @!P0 MUFU.EX2 R4, R4 ;`: the opcode with its modifiers.
_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)")


def sass_stats(path: Path, tool: Path | None = None) -> dict[tuple[str, str], SassStats]:
    """{(arch, function): SassStats} of every kernel in a cubin or a fat binary (a `.so`), arch as "sm_90a".

    cuobjdump prints a cubin's resource usage before naming its target; those entries are merged into the
    function's SASS entry (a cubin holds one target).
    """
    text = subprocess.run([str(tool or cuobjdump()), "-res-usage", "-sass", str(path)], check=True,
                          capture_output=True, text=True).stdout
    stats: dict[tuple[str, str], SassStats] = {}
    arch = name = ""
    for line in text.splitlines():
        if found := _ARCH.search(line):
            arch = found.group(1)
        elif found := _FUNCTION.match(line):
            name = found.group(1)
            pending = stats.pop(("", name), None)
            entry = stats.setdefault((arch, name), pending or SassStats())
        elif (found := _USAGE.search(line)) and name:
            entry = stats.setdefault((arch, name), SassStats())
            entry.registers, entry.stack, entry.shared = (int(g) for g in found.groups())
        elif (found := _INSTRUCTION.match(line)) and name:
            op = found.group(1)
            entry.ops[op] = entry.ops.get(op, 0) + 1
    return stats


def compile_variant(variant: Variant, config: Any, arch: str, dtype: str, d: int,
                    space: list[Any] | None = None) -> KernelRecord:
    """Compiles `variant` in tile configuration `config` (a `triton.Config` of its kernel) for sm_`arch`
    (`"90a"` or `"80"`) with `dtype` inputs at feature size d. `space` is `autotune_space(variant, d)` when the
    caller has it already."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.compiler import compile as compile_kernel

    fn = _jit_function(variant.kernel)
    constexprs = {**variant.constexprs, **config.kwargs}
    signature, attrs = _signature(fn, constexprs, variant.grad_s_dtype, dtype, d)
    start = time.perf_counter()
    compiled = compile_kernel(
        ASTSource(fn, signature, constexprs, attrs),
        target=GPUTarget("cuda", ARCHS[arch], 32),
        options={"num_warps": config.num_warps, "num_stages": config.num_stages, "enable_fp_fusion": True,
                 **({} if config.maxnreg is None else {"maxnreg": config.maxnreg})},
    )
    seconds = time.perf_counter() - start
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        (stats,) = sass_stats(Path(f.name)).values()
    ops = [op for op in _TENSOR_CORE_OPS[arch] if stats.count(op)]
    threads = 32 * config.num_warps
    exp_per_tile = stats.count("MUFU.EX2") * threads
    pairs = config.kwargs["BLOCK_M"] * config.kwargs["BLOCK_N"] if variant.pair else 0
    if space is None:
        space = autotune_space(variant, d)
    return KernelRecord(
        kernel=variant.kernel, variant=variant.label, arch=arch, dtype=dtype, d=d, config=config_dict(config),
        registers=stats.registers, spill_bytes=stats.stack, shared_bytes=int(compiled.metadata.shared),
        tensor_cores=bool(ops), tensor_core_op=ops[0] if ops else "", exp_per_tile=exp_per_tile,
        exp_per_pair=exp_per_tile / pairs if pairs else 0.0,
        in_autotune_space=any(config_dict(c) == config_dict(config) for c in space), triton=triton.__version__,
        seconds=seconds,
    )
