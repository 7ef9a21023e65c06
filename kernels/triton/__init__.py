"""Triton kernels of mkefast, shipped in the wheel as mkefast.kernels.triton."""
