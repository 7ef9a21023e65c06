"""The `cuda` backend: the compiled module's interface (any machine with nvcc) and its kernels (GPU only).

On a GPU the host functions run the same checks as the `cpu` backend's (`tests.backends._chunked_checks`):
every statistic and gradient (anchors, candidates, τ) against the float64 truth, many chunks per call,
queues, anchors past the candidates, partners shifted by diag_offset, the numerics cases of issue 10, and
the cosine kernel's two code paths (16-byte vector loads and the scalar fallback for unaligned rows) and
its scale-free form.
"""

from __future__ import annotations

import math
import os
import shutil

import pytest
import torch

import mkefast
from mkefast._build import cuda_module
from mkefast.backends import BackendUnavailableError, get_backend
from mkefast.backends._chunked import kernel_targets, soft_pu_params
from mkefast.ops._common import SoftPUOptions
from tests.backends import _chunked_checks as checks
from tests.backends._chunked_checks import Shape, problem_for
from tests.conftest import requires_gpu

_cuda_off = os.environ.get("MKEFAST_WITH_CUDA", "").lower() in ("0", "off", "false", "no")
requires_cuda_build = pytest.mark.skipif(
    shutil.which("nvcc") is None or _cuda_off, reason="no CUDA compiler on PATH: the CUDA module is not built"
)
GPU = "cuda"


# ---------------------------------------------------------------- any machine


def test_unsupported_reason_names_the_device_and_dtype():
    impl = get_backend("cuda")
    assert "CUDA tensors" in impl.unsupported_reason("soft_pu", torch.device("cpu"), torch.float32)
    assert "int32" in impl.unsupported_reason("cosine_rec", torch.device("cuda"), torch.int32)
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        for op in ("soft_pu", "cosine_rec"):
            assert impl.unsupported_reason(op, torch.device("cuda"), dtype) is None


@requires_cuda_build
def test_cuda_module_lists_every_kernel_the_backend_calls():
    """Built where nvcc is found, importable without a GPU, and binding every name mkefast.backends.cuda uses."""
    from mkefast.backends import cuda as backend

    lib = cuda_module()
    assert lib is not None, mkefast.build_config()["cuda_error"]
    assert mkefast.build_config()["cuda"]
    names = {f"cosine_rec_{step}_{suffix}" for step in ("fwd", "bwd") for suffix in backend._SUFFIX.values()}
    names |= {f"soft_pu_{step}_{suffix}" for step in ("fwd", "bwd") for suffix in ("f32", "f64")}
    names |= {"SoftPUParams"}
    assert names <= set(dir(lib)), sorted(names - set(dir(lib)))
    info = lib.build_info()
    assert info["cuda_version"] >= 11000 and info["archs"]


@requires_cuda_build
def test_cuda_bindings_take_keywords_only_and_one_params_object():
    """The same SoftPUParams as mkefast._C, built by the shared helper (host pointers do for building it)."""
    lib = cuda_module()
    assert lib is not None
    options = SoftPUOptions(temperature=0.5, rbf_sigma=math.inf, rbf_space="logit", exclude_diagonal=True)
    targets = kernel_targets(problem_for(Shape(4, 6, 1, 3), "pseudo", options).targets._replace(diag_offset=2))
    params = soft_pu_params(lib, targets, options)
    assert params.inv_tau == 2.0 and not params.rbf and not params.phi and params.exclude_diagonal
    assert params.diag_offset == 2
    with pytest.raises(TypeError):
        lib.cosine_rec_fwd_f32(0, 0, 0, 4, 4, 4096, 0)  # positional: refused before any launch


@requires_cuda_build
def test_failed_launch_raises_runtime_error_with_the_cuda_message():
    lib = cuda_module()
    assert lib is not None
    # No device 4096 exists anywhere: making it current fails before any pointer is touched.
    with pytest.raises(RuntimeError, match=r"mkefast\._C_cuda\.cosine_rec_fwd_f32: .+"):
        lib.cosine_rec_fwd_f32(a=0, b=0, loss=0, n=4, d=4, device=4096, stream=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")
def test_without_gpu_cuda_is_not_available_and_naming_it_raises():
    assert "cuda" not in mkefast.available_backends()
    assert "cuda" in mkefast.build_config()["why_not"]
    x = torch.randn(4, 3)
    with pytest.raises(BackendUnavailableError, match=r"backend='cuda' cannot run soft_pu.*available here"):
        mkefast.soft_pu_loss(x, x, torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.bool),
                             backend="cuda")
    with pytest.raises(BackendUnavailableError, match="backend='cuda'"):
        mkefast.cosine_reconstruction_loss(x, x, backend="cuda")


# ---------------------------------------------------------------- GPU: soft-PU


@requires_gpu
@pytest.mark.parametrize("shape,labels,options", checks.float64_matrix())
def test_float64_matches_truth(monkeypatch, shape, labels, options):
    from mkefast.backends import cuda as backend

    # 3-row chunks of float64 dots: many chunks per call, the last one short.
    monkeypatch.setattr(backend, "CHUNK_BUDGET_MB", 3 * shape.b_c * 8 / 2**20)
    checks.check_float64("cuda", GPU, shape, labels, options)


@requires_gpu
@pytest.mark.parametrize("shape,labels,options,close", checks.F32_CASES)
def test_float32_no_worse_than_reference(shape, labels, options, close):
    checks.check_float32("cuda", GPU, shape, labels, options, close)


@requires_gpu
@pytest.mark.parametrize("tau", [0.05, 0.03])
def test_phi_gradient_of_close_anchors_is_exact(tau):
    checks.check_phi_gradient_of_close_anchors("cuda", GPU, tau)


@requires_gpu
@pytest.mark.parametrize("needs", checks.NEEDS)
def test_only_the_gradients_asked_for(needs):
    checks.check_needs("cuda", GPU, needs)


@requires_gpu
def test_empty_denominator_rows():
    checks.check_empty_denominator("cuda", GPU)


@requires_gpu
def test_nan_in_gives_nan_out():
    checks.check_nan_in_gives_nan_out("cuda", GPU)


@requires_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_inputs_are_computed_in_float32(dtype):
    # The float32 GEMMs of the upcast copies are cuBLAS's: equal to rounding, not necessarily bitwise.
    checks.check_low_precision("cuda", GPU, dtype, rtol=1e-6)


@requires_gpu
def test_wide_features_match_float64():
    """d = 1100: the feature sizes for which `auto` prefers this backend on a GPU."""
    options = SoftPUOptions(temperature=0.2, rbf_sigma=3.0, rbf_space="phi", exclude_diagonal=True)
    checks.check_float64("cuda", GPU, Shape(96, 130, 2, 1100), "pseudo", options)


# ---------------------------------------------------------------- GPU: cosine reconstruction


@requires_gpu
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (9, 8), (257, 130), (3, 64, 1024), (17, 4104)], ids=str)
def test_cosine_float64_matches_reference(shape):
    checks.check_cosine_float64("cuda", GPU, shape)


# bfloat16 / float16 margins: a few units in their last place (2^-8, 2^-11) of the largest value.
COSINE_MARGIN = {torch.float32: checks.F32_MARGIN, torch.bfloat16: 2e-2, torch.float16: 3e-3}


@requires_gpu
@pytest.mark.parametrize("dtype", list(COSINE_MARGIN), ids=str)
@pytest.mark.parametrize("shape", [(257, 130), (64, 1024), (17, 4104)], ids=str)
def test_cosine_no_worse_than_reference(shape, dtype):
    checks.check_cosine_no_worse_than_reference("cuda", GPU, shape, dtype, COSINE_MARGIN[dtype])


@requires_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_cosine_unaligned_rows_and_single_gradients(dtype):
    """A view starting one element into its storage has unaligned rows: the scalar path must agree."""
    storage = torch.randn(1 + 40 * 64, dtype=dtype, device=GPU)
    a = storage[1:].view(40, 64)
    assert a.is_contiguous() and a.data_ptr() % 16 != 0
    b = torch.randn(40, 64, dtype=dtype, device=GPU)
    grad = torch.randn(40, dtype=torch.float64, device=GPU)
    # Both paths sum in another order; bfloat16 gradients may then round one step apart.
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    aligned = checks.cosine_run("cuda", a.clone(), b, grad)
    for got, want in zip(checks.cosine_run("cuda", a, b, grad), aligned, strict=True):
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)
    impl = get_backend("cuda")
    for needs in ((True, False), (False, True)):
        grads = impl.cosine_rec_bwd(a, b, grad.float(), *needs)
        for got, want, need in zip(grads, aligned[1:], needs, strict=True):
            assert (got is None) == (not need)
            if got is not None:
                torch.testing.assert_close(got, want, rtol=tol, atol=tol)


@requires_gpu
@pytest.mark.parametrize("dtype,scale", checks.COSINE_SCALES)
def test_cosine_is_scale_free(dtype, scale):
    checks.check_cosine_scale_free("cuda", GPU, dtype, scale)
