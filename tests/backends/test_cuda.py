"""The `cuda` backend: the compiled module's interface (any machine with nvcc) and its kernels (GPU only).

The GPU tests add to tests/backends/test_parity.py what is specific to the chunked CUDA path: many chunks per
call (chunk boundaries, with and without a row offset), feature sizes where the chunked path is the one
`auto` picks, both RBF spaces in every dtype, and both code paths of the cosine kernel (16-byte vector loads
and the scalar fallback for unaligned rows).
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
from mkefast.ops._common import SoftPUOptions, make_targets
from tests.backends.test_parity import MARGIN, PATTERNS, _err, _scale, check_against_reference
from tests.conftest import requires_gpu
from tests.ops.test_soft_pu import make_batch

_cuda_off = os.environ.get("MKEFAST_WITH_CUDA", "").lower() in ("0", "off", "false", "no")
requires_cuda_build = pytest.mark.skipif(
    shutil.which("nvcc") is None or _cuda_off, reason="no CUDA compiler on PATH: the CUDA module is not built"
)
LOW_PRECISION = [torch.float32, torch.bfloat16, torch.float16]


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
    assert names <= set(dir(lib)), sorted(names - set(dir(lib)))
    info = lib.build_info()
    assert info["cuda_version"] >= 11000 and info["archs"]


@requires_cuda_build
def test_failed_launch_raises_runtime_error_with_the_cuda_message():
    lib = cuda_module()
    assert lib is not None
    # No device 4096 exists anywhere: making it current fails before any pointer is touched.
    with pytest.raises(RuntimeError, match=r"mkefast\._C_cuda\.cosine_rec_fwd_f32: .+"):
        lib.cosine_rec_fwd_f32(0, 0, 0, 4, 4, 4096, 0)


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


# ---------------------------------------------------------------- GPU


@requires_gpu
@pytest.mark.parametrize("pattern", PATTERNS)
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("rbf_space,rbf_sigma", [("logit", 1.0), ("phi", 3.0), ("logit", math.inf)])
@pytest.mark.parametrize("shape", [(1, 3, 1), (7, 130, 2), (257, 3, 1), (96, 1100, 2)],
                         ids=lambda s: "B{}-d{}-M{}".format(*s))
def test_soft_pu_matches_reference(shape, rbf_space, rbf_sigma, dtype, pattern):
    check_against_reference("cuda", dtype, shape, pattern, temperature=0.2, rbf_space=rbf_space,
                            rbf_sigma=rbf_sigma)


@requires_gpu
@pytest.mark.parametrize("row_offset", [0, 11])
@pytest.mark.parametrize("rbf_space", ["logit", "phi"])
def test_soft_pu_many_chunks_match_reference(monkeypatch, rbf_space, row_offset):
    """Three-row chunks (the last one short), in float64 so that any index slip shows."""
    from mkefast.backends import cuda as backend

    b, d, m = 50, 9, 2
    monkeypatch.setattr(backend, "CHUNK_BUDGET_MB", 3 * b * 8 / 2**20)
    fused, unimodal, labels, labeled, pseudo = make_batch(b, d, m, "pseudo_neg", dtype=torch.float64, seed=4)
    dev = torch.device("cuda")
    fused = torch.nn.functional.normalize(fused, dim=-1).to(dev)
    unimodal = torch.nn.functional.normalize(unimodal, dim=-1).to(dev)
    targets = make_targets(labels.to(dev), labeled.to(dev), pseudo.to(dev))._replace(row_offset=row_offset)
    anchors = fused[row_offset:row_offset + 31].contiguous()
    options = SoftPUOptions(temperature=0.3, rbf_sigma=1.5 if rbf_space == "logit" else 4.0, rbf_space=rbf_space)
    grad_lb = torch.randn(m, anchors.shape[0], dtype=torch.float64, device=dev)
    grad_ulb = torch.randn_like(grad_lb)
    outs = []
    for name in ("cuda", "reference"):
        impl = get_backend(name)
        stats = impl.soft_pu_fwd(anchors, unimodal, targets, options)
        grads = impl.soft_pu_bwd(anchors, unimodal, targets, options, stats, grad_lb, grad_ulb, True, True)
        outs.append((*stats, *grads))
    for got, want in zip(*outs, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-11)


@requires_gpu
def test_soft_pu_one_gradient_only():
    fused, unimodal, labels, labeled, pseudo = make_batch(33, 20, 2, "pseudo", dtype=torch.float32, seed=2)
    dev = torch.device("cuda")
    args = [t.to(dev) for t in (fused, unimodal, labels, labeled, pseudo)]
    for which in (0, 1):
        inputs = [args[0].clone(), args[1].clone()]
        inputs[which].requires_grad_()
        grads = []
        for name in ("cuda", "reference"):
            loss = mkefast.soft_pu_loss(inputs[0], inputs[1], *args[2:], backend=name)
            grads.append(torch.autograd.grad(loss, inputs[which])[0])
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)


def _cosine_case(a: torch.Tensor, b: torch.Tensor, needs: tuple[bool, bool]) -> None:
    """cuda vs reference vs a float64 truth on the same rounded inputs (rows and the requested gradients)."""
    upstream = torch.randn(a.shape[:-1], device=a.device)
    results = []
    for name, x, y in (("cuda", a, b), ("reference", a, b), ("reference", a.double(), b.double())):
        # detach, not clone: a clone would be a fresh (aligned) allocation, and the unaligned case would vanish
        x, y = x.detach().requires_grad_(needs[0]), y.detach().requires_grad_(needs[1])
        rows = mkefast.cosine_reconstruction_loss(x, y, reduction="none", backend=name)
        inputs = [t for t, need in zip((x, y), needs, strict=True) if need]
        results.append((rows, *torch.autograd.grad((rows.double() * upstream).sum(), inputs)))
    for got, ref, truth in zip(*results, strict=True):
        assert got.dtype == ref.dtype and got.shape == ref.shape
        if a.dtype == torch.float64:
            torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
        else:
            assert _err(got, truth) <= _err(ref, truth) + MARGIN[a.dtype] * _scale(truth)


@requires_gpu
@pytest.mark.parametrize("dtype", [*LOW_PRECISION, torch.float64], ids=str)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (9, 8), (257, 130), (3, 64, 1024), (17, 4104)],
                         ids=lambda s: "x".join(map(str, s)))
def test_cosine_matches_reference(shape, dtype):
    a = torch.randn(shape, dtype=dtype, device="cuda")
    b = torch.randn(shape, dtype=dtype, device="cuda")
    _cosine_case(a, b, (True, True))


@requires_gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=str)
def test_cosine_unaligned_rows_and_single_gradients(dtype):
    """A view starting one element into its storage has unaligned rows: the scalar path must give the same."""
    storage = torch.randn(1 + 40 * 64, dtype=dtype, device="cuda")
    a = storage[1:].view(40, 64)
    assert a.is_contiguous() and a.data_ptr() % 16 != 0
    b = torch.randn(40, 64, dtype=dtype, device="cuda")
    for needs in ((True, True), (True, False), (False, True)):
        _cosine_case(a, b, needs)


@requires_gpu
def test_cosine_zero_rows_use_the_clamp():
    a = torch.zeros(4, 16, device="cuda")
    a[1] = 1.0
    b = torch.randn(4, 16, device="cuda")
    _cosine_case(a, b, (True, True))
