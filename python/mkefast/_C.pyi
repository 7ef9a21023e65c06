"""Type stubs of mkefast._C, the C++/OpenMP CPU kernels. Pointers are `tensor.data_ptr()` integers;
Python allocates every buffer (see mkefast.backends.cpu)."""

from typing import Any

def build_info() -> dict[str, Any]:
    """openmp, openmp_version, max_threads, compiler."""

def soft_pu_fwd_f32(
    dots: int,
    rows: int,
    b: int,
    first_row: int,
    cls: int,
    labeled: int,
    n11: int,
    n10: int,
    class_members: int,
    class_begin: int,
    inv_tau: float,
    inv_two_sigma_sq: float,
    rbf: bool,
    phi: bool,
    lb: int,
    ulb: int,
    lse: int,
    ref: int,
    a_ulb: int,
    num_threads: int,
) -> None:
    """Fused pass over a [rows, b] chunk of raw dot products; writes the [rows] statistics."""

def soft_pu_bwd_f32(
    dots: int,
    rows: int,
    b: int,
    first_row: int,
    cls: int,
    labeled: int,
    n11: int,
    n10: int,
    class_members: int,
    class_begin: int,
    inv_tau: float,
    inv_two_sigma_sq: float,
    rbf: bool,
    phi: bool,
    lse: int,
    ref: int,
    a_ulb: int,
    grad_lb: int,
    grad_ulb: int,
    max_class_size: int,
    num_threads: int,
) -> None:
    """Overwrites the [rows, b] chunk of raw dot products with G / tau."""

def cosine_rec_fwd_f32(
    a: int, b: int, loss: int, n: int, d: int, stride_a: int, stride_b: int, num_threads: int
) -> None:
    """Per-row 1 - cos^2 of [n, d] rows into loss [n]."""

def cosine_rec_bwd_f32(
    a: int,
    b: int,
    grad_loss: int,
    grad_a: int,
    grad_b: int,
    n: int,
    d: int,
    stride_a: int,
    stride_b: int,
    num_threads: int,
) -> None:
    """Both gradients in one pass; grad_a / grad_b may be 0 (not needed)."""

def soft_pu_fwd_f64(
    dots: int,
    rows: int,
    b: int,
    first_row: int,
    cls: int,
    labeled: int,
    n11: int,
    n10: int,
    class_members: int,
    class_begin: int,
    inv_tau: float,
    inv_two_sigma_sq: float,
    rbf: bool,
    phi: bool,
    lb: int,
    ulb: int,
    lse: int,
    ref: int,
    a_ulb: int,
    num_threads: int,
) -> None:
    """Fused pass over a [rows, b] chunk of raw dot products; writes the [rows] statistics."""

def soft_pu_bwd_f64(
    dots: int,
    rows: int,
    b: int,
    first_row: int,
    cls: int,
    labeled: int,
    n11: int,
    n10: int,
    class_members: int,
    class_begin: int,
    inv_tau: float,
    inv_two_sigma_sq: float,
    rbf: bool,
    phi: bool,
    lse: int,
    ref: int,
    a_ulb: int,
    grad_lb: int,
    grad_ulb: int,
    max_class_size: int,
    num_threads: int,
) -> None:
    """Overwrites the [rows, b] chunk of raw dot products with G / tau."""

def cosine_rec_fwd_f64(
    a: int, b: int, loss: int, n: int, d: int, stride_a: int, stride_b: int, num_threads: int
) -> None:
    """Per-row 1 - cos^2 of [n, d] rows into loss [n]."""

def cosine_rec_bwd_f64(
    a: int,
    b: int,
    grad_loss: int,
    grad_a: int,
    grad_b: int,
    n: int,
    d: int,
    stride_a: int,
    stride_b: int,
    num_threads: int,
) -> None:
    """Both gradients in one pass; grad_a / grad_b may be 0 (not needed)."""
