"""Type stubs of mkefast._C, the C++/OpenMP CPU kernels. Pointers are `tensor.data_ptr()` integers (0: not
needed); every argument is keyword-only; Python allocates every buffer (see mkefast.backends.cpu)."""

from typing import Any

def build_info() -> dict[str, Any]:
    """openmp, openmp_version, max_threads, compiler, isa (the soft-PU kernels in use), isas_built, isas_supported."""

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
    modalities: int,
    first_anchor: int,
    stride: int,
    class_members: int,
    class_begin: int,
    max_class_size: int,
    lb: int,
    ulb: int,
    lse: int,
    ref: int,
    a_ulb: int,
    num_threads: int,
) -> None:
    """Forward epilogue over a [rows, modalities, cols] chunk of raw dot products; writes the statistics of its
    rows into [M, B_a] arrays (pointers at [0, first_anchor], `stride` elements between modalities)."""

def soft_pu_fwd_grad_f32(
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    modalities: int,
    first_anchor: int,
    stride: int,
    class_members: int,
    class_begin: int,
    max_class_size: int,
    lb: int,
    ulb: int,
    lse: int,
    ref: int,
    a_ulb: int,
    grad_temperature: int,
    num_threads: int,
) -> None:
    """The forward epilogue and the gradient of sum(lb + ulb): the statistics, and the chunk overwritten with
    d(sum(lb + ulb))/d(dots) (and the rows' shares of its derivative in tau)."""

def soft_pu_sym_fwd_f32(
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    modalities: int,
    first_anchor: int,
    stride: int,
    class_members: int,
    class_begin: int,
    max_class_size: int,
    lb: int,
    ulb: int,
    lse: int,
    ref: int,
    a_ulb: int,
    row_lse: int,
    bounded: bool,
    shift: float,
    col_max: int,
    col_sum: int,
    num_threads: int,
) -> None:
    """Symmetric InfoNCE forward: the rows' statistics (and their lse in float64) and the running column
    statistics col_max / col_sum ([modalities, cols]); the chunk is left as scratch."""

def soft_pu_sym_grad_f32(
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    modalities: int,
    first_anchor: int,
    stride: int,
    class_members: int,
    class_begin: int,
    max_class_size: int,
    row_lse: int,
    grad_ulb: int,
    grad_temperature: int,
    bounded: bool,
    shift: float,
    lse_col_hi: int,
    lse_col_lo: int,
    grad_col: int,
    col_factor: int,
    num_threads: int,
) -> None:
    """Symmetric InfoNCE backward: the chunk overwritten with the gradient of both directions' terms (and the
    rows' shares of dL/dtau)."""

def soft_pu_bwd_f32(
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    modalities: int,
    first_anchor: int,
    stride: int,
    class_members: int,
    class_begin: int,
    max_class_size: int,
    lse: int,
    ref: int,
    a_ulb: int,
    grad_lb: int,
    grad_ulb: int,
    grad_temperature: int,
    num_threads: int,
) -> None:
    """Overwrites the [rows, modalities, cols] chunk of raw dot products with G / tau (and the rows' shares of
    dL/dtau)."""

def cosine_rec_fwd_f32(
    *, a: int, b: int, loss: int, n: int, d: int, stride_a: int, stride_b: int, num_threads: int
) -> None:
    """Per-row 1 - cos^2 of [n, d] rows into loss [n]."""

def cosine_rec_bwd_f32(
    *,
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
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    modalities: int,
    first_anchor: int,
    stride: int,
    class_members: int,
    class_begin: int,
    max_class_size: int,
    lb: int,
    ulb: int,
    lse: int,
    ref: int,
    a_ulb: int,
    num_threads: int,
) -> None:
    """Forward epilogue over a [rows, modalities, cols] chunk of raw dot products; writes the statistics of its
    rows into [M, B_a] arrays (pointers at [0, first_anchor], `stride` elements between modalities)."""

def soft_pu_fwd_grad_f64(
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    modalities: int,
    first_anchor: int,
    stride: int,
    class_members: int,
    class_begin: int,
    max_class_size: int,
    lb: int,
    ulb: int,
    lse: int,
    ref: int,
    a_ulb: int,
    grad_temperature: int,
    num_threads: int,
) -> None:
    """The forward epilogue and the gradient of sum(lb + ulb): the statistics, and the chunk overwritten with
    d(sum(lb + ulb))/d(dots) (and the rows' shares of its derivative in tau)."""

def soft_pu_sym_fwd_f64(
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    modalities: int,
    first_anchor: int,
    stride: int,
    class_members: int,
    class_begin: int,
    max_class_size: int,
    lb: int,
    ulb: int,
    lse: int,
    ref: int,
    a_ulb: int,
    row_lse: int,
    bounded: bool,
    shift: float,
    col_max: int,
    col_sum: int,
    num_threads: int,
) -> None:
    """Symmetric InfoNCE forward: the rows' statistics (and their lse in float64) and the running column
    statistics col_max / col_sum ([modalities, cols]); the chunk is left as scratch."""

def soft_pu_sym_grad_f64(
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    modalities: int,
    first_anchor: int,
    stride: int,
    class_members: int,
    class_begin: int,
    max_class_size: int,
    row_lse: int,
    grad_ulb: int,
    grad_temperature: int,
    bounded: bool,
    shift: float,
    lse_col_hi: int,
    lse_col_lo: int,
    grad_col: int,
    col_factor: int,
    num_threads: int,
) -> None:
    """Symmetric InfoNCE backward: the chunk overwritten with the gradient of both directions' terms (and the
    rows' shares of dL/dtau)."""

def soft_pu_bwd_f64(
    *,
    params: SoftPUParams,
    dots: int,
    rows: int,
    cols: int,
    modalities: int,
    first_anchor: int,
    stride: int,
    class_members: int,
    class_begin: int,
    max_class_size: int,
    lse: int,
    ref: int,
    a_ulb: int,
    grad_lb: int,
    grad_ulb: int,
    grad_temperature: int,
    num_threads: int,
) -> None:
    """Overwrites the [rows, modalities, cols] chunk of raw dot products with G / tau (and the rows' shares of
    dL/dtau)."""

def cosine_rec_fwd_f64(
    *, a: int, b: int, loss: int, n: int, d: int, stride_a: int, stride_b: int, num_threads: int
) -> None:
    """Per-row 1 - cos^2 of [n, d] rows into loss [n]."""

def cosine_rec_bwd_f64(
    *,
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
