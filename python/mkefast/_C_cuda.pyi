"""Type stubs of mkefast._C_cuda, the CUDA kernels. Pointers are device `tensor.data_ptr()` integers (0: not
needed), `stream` is `torch.cuda.current_stream().cuda_stream`; every argument is keyword-only (see
mkefast.backends.cuda)."""

from typing import Any

def build_info() -> dict[str, Any]:
    """cuda_version (CUDART_VERSION), archs."""

class SoftPUParams:
    """Targets (pointers to the SoftPUTargets arrays) and options of one direction of the soft-PU op; built by
    `mkefast.backends._chunked.soft_pu_params`. The arrays must outlive every launch that reads it."""

    diag_offset: int
    exclude_diagonal: bool
    inv_tau: float
    inv_sigma: float
    log_sigma: float
    rbf: bool
    phi: bool

    def __init__(
        self,
        *,
        cls: int,
        labeled: int,
        anchor_cls: int,
        anchor_labeled: int,
        n11: int,
        n10: int,
        diag_offset: int,
        exclude_diagonal: bool,
        inv_tau: float,
        inv_sigma: float,
        log_sigma: float,
        rbf: bool,
        phi: bool,
    ) -> None: ...

def soft_pu_fwd_f32(
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    ld: int,
    first_anchor: int,
    lb: int,
    ulb: int,
    lse: int,
    ref: int,
    a_ulb: int,
    device: int,
    stream: int,
) -> None:
    """Epilogue over a [rows, cols] chunk of raw dot products; writes the [rows] statistics."""

def soft_pu_bwd_f32(
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    ld: int,
    first_anchor: int,
    lse: int,
    ref: int,
    a_ulb: int,
    grad_lb: int,
    grad_ulb: int,
    grad_temperature: int,
    device: int,
    stream: int,
) -> None:
    """Overwrites the [rows, cols] chunk with G / tau (and the rows' shares of dL/dtau)."""

def soft_pu_fwd_f64(
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    ld: int,
    first_anchor: int,
    lb: int,
    ulb: int,
    lse: int,
    ref: int,
    a_ulb: int,
    device: int,
    stream: int,
) -> None:
    """Epilogue over a [rows, cols] chunk of raw dot products; writes the [rows] statistics."""

def soft_pu_bwd_f64(
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    ld: int,
    first_anchor: int,
    lse: int,
    ref: int,
    a_ulb: int,
    grad_lb: int,
    grad_ulb: int,
    grad_temperature: int,
    device: int,
    stream: int,
) -> None:
    """Overwrites the [rows, cols] chunk with G / tau (and the rows' shares of dL/dtau)."""

def cosine_rec_fwd_f32(*, a: int, b: int, loss: int, n: int, d: int, device: int, stream: int) -> None:
    """Per-row 1 - cos^2 of [n, d] rows into float32 (float64) loss [n]."""

def cosine_rec_bwd_f32(
    *, a: int, b: int, grad_loss: int, grad_a: int, grad_b: int, n: int, d: int, device: int, stream: int
) -> None:
    """Both gradients in one launch; grad_a / grad_b may be 0 (not needed)."""

def cosine_rec_fwd_f64(*, a: int, b: int, loss: int, n: int, d: int, device: int, stream: int) -> None:
    """Per-row 1 - cos^2 of [n, d] rows into float32 (float64) loss [n]."""

def cosine_rec_bwd_f64(
    *, a: int, b: int, grad_loss: int, grad_a: int, grad_b: int, n: int, d: int, device: int, stream: int
) -> None:
    """Both gradients in one launch; grad_a / grad_b may be 0 (not needed)."""

def cosine_rec_fwd_f16(*, a: int, b: int, loss: int, n: int, d: int, device: int, stream: int) -> None:
    """Per-row 1 - cos^2 of [n, d] rows into float32 (float64) loss [n]."""

def cosine_rec_bwd_f16(
    *, a: int, b: int, grad_loss: int, grad_a: int, grad_b: int, n: int, d: int, device: int, stream: int
) -> None:
    """Both gradients in one launch; grad_a / grad_b may be 0 (not needed)."""

def cosine_rec_fwd_bf16(*, a: int, b: int, loss: int, n: int, d: int, device: int, stream: int) -> None:
    """Per-row 1 - cos^2 of [n, d] rows into float32 (float64) loss [n]."""

def cosine_rec_bwd_bf16(
    *, a: int, b: int, grad_loss: int, grad_a: int, grad_b: int, n: int, d: int, device: int, stream: int
) -> None:
    """Both gradients in one launch; grad_a / grad_b may be 0 (not needed)."""
