"""Helpers shared by the Triton kernels of mkefast."""

from __future__ import annotations

import triton
import triton.language as tl

__all__ = ["round_to"]


@triton.jit
def round_to(x, dtype: tl.constexpr, INTERPRET: tl.constexpr):
    """`x.to(dtype)` for float32 `x`, rounded to nearest even as the GPU rounds.

    The Triton interpreter's float32 → bfloat16 conversion does not round to nearest (up to twice the error,
    whatever `fp_downcast_rounding` says), so under it the rounding is done on the bits first: add half a
    bfloat16 ulp (0x7FFF, plus the kept lowest bit, for ties to even) and clear the 16 low bits, after which the
    conversion is exact.
    """
    if INTERPRET and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)
