"""Type stubs of mkefast._C_cuda, the CUDA kernels. Pointers are device `tensor.data_ptr()` integers,
`stream` is `torch.cuda.current_stream().cuda_stream` (see mkefast.backends.cuda)."""

from typing import Any

def build_info() -> dict[str, Any]:
    """cuda_version (CUDART_VERSION), archs."""

def soft_pu_fwd_f32(
    dots: int,
    cls: int,
    labeled: int,
    n11: int,
    n10: int,
    lb: int,
    ulb: int,
    lse: int,
    ref: int,
    a_ulb: int,
    rows: int,
    cols: int,
    ld: int,
    first_row: int,
    inv_tau: float,
    inv_two_sigma_sq: float,
    phi_space: bool,
    device: int,
    stream: int,
) -> None:
    """Epilogue over a [rows, cols] chunk of raw dot products; writes the [rows] statistics."""

def soft_pu_bwd_f32(
    dots: int,
    cls: int,
    labeled: int,
    n11: int,
    n10: int,
    lse: int,
    ref: int,
    a_ulb: int,
    grad_lb: int,
    grad_ulb: int,
    rows: int,
    cols: int,
    ld: int,
    first_row: int,
    inv_tau: float,
    inv_two_sigma_sq: float,
    phi_space: bool,
    device: int,
    stream: int,
) -> None:
    """Overwrites the [rows, cols] chunk with G / tau."""

def soft_pu_fwd_f64(
    dots: int,
    cls: int,
    labeled: int,
    n11: int,
    n10: int,
    lb: int,
    ulb: int,
    lse: int,
    ref: int,
    a_ulb: int,
    rows: int,
    cols: int,
    ld: int,
    first_row: int,
    inv_tau: float,
    inv_two_sigma_sq: float,
    phi_space: bool,
    device: int,
    stream: int,
) -> None:
    """Epilogue over a [rows, cols] chunk of raw dot products; writes the [rows] statistics."""

def soft_pu_bwd_f64(
    dots: int,
    cls: int,
    labeled: int,
    n11: int,
    n10: int,
    lse: int,
    ref: int,
    a_ulb: int,
    grad_lb: int,
    grad_ulb: int,
    rows: int,
    cols: int,
    ld: int,
    first_row: int,
    inv_tau: float,
    inv_two_sigma_sq: float,
    phi_space: bool,
    device: int,
    stream: int,
) -> None:
    """Overwrites the [rows, cols] chunk with G / tau."""

def cosine_rec_fwd_f32(a: int, b: int, loss: int, n: int, d: int, device: int, stream: int) -> None:
    """Per-row 1 - cos^2 of [n, d] rows into float32 (float64) loss [n]."""

def cosine_rec_bwd_f32(
    a: int, b: int, grad_loss: int, grad_a: int, grad_b: int, n: int, d: int, device: int, stream: int
) -> None:
    """Both gradients in one launch; grad_a / grad_b may be 0 (not needed)."""

def cosine_rec_fwd_f64(a: int, b: int, loss: int, n: int, d: int, device: int, stream: int) -> None:
    """Per-row 1 - cos^2 of [n, d] rows into float32 (float64) loss [n]."""

def cosine_rec_bwd_f64(
    a: int, b: int, grad_loss: int, grad_a: int, grad_b: int, n: int, d: int, device: int, stream: int
) -> None:
    """Both gradients in one launch; grad_a / grad_b may be 0 (not needed)."""

def cosine_rec_fwd_f16(a: int, b: int, loss: int, n: int, d: int, device: int, stream: int) -> None:
    """Per-row 1 - cos^2 of [n, d] rows into float32 (float64) loss [n]."""

def cosine_rec_bwd_f16(
    a: int, b: int, grad_loss: int, grad_a: int, grad_b: int, n: int, d: int, device: int, stream: int
) -> None:
    """Both gradients in one launch; grad_a / grad_b may be 0 (not needed)."""

def cosine_rec_fwd_bf16(a: int, b: int, loss: int, n: int, d: int, device: int, stream: int) -> None:
    """Per-row 1 - cos^2 of [n, d] rows into float32 (float64) loss [n]."""

def cosine_rec_bwd_bf16(
    a: int, b: int, grad_loss: int, grad_a: int, grad_b: int, n: int, d: int, device: int, stream: int
) -> None:
    """Both gradients in one launch; grad_a / grad_b may be 0 (not needed)."""
