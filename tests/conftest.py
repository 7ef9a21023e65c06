"""Test setup: the Triton interpreter on machines without a GPU, one share of the cores per pytest-xdist worker,
deterministic seeds, shared helpers."""

from __future__ import annotations

import os
from collections.abc import Iterator

# Must happen before any module defining Triton kernels is imported.
if "TRITON_INTERPRET" not in os.environ:
    try:
        import torch

        has_gpu = torch.cuda.is_available()
    except ImportError:
        has_gpu = False
    if not has_gpu:
        os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

import mkefast

# Under pytest-xdist (`-n auto`) the workers share the cores: each gets its share of torch's threads, and the
# processes its tests start (examples, CLI commands, benchmark points) inherit it through OMP_NUM_THREADS.
# Two workers of two threads each on two cores would spend much of their time waiting on each other's
# OpenMP barriers. Results do not depend on the thread count (tests/backends/test_cpu.py checks it bitwise);
# the tests about threads set their own.
# An OMP_NUM_THREADS set by the caller is kept.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    _cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    _threads = max(1, _cores // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist the `slow` tests (a minute or two each) run first: last, one of them would keep a
    worker busy long after the others have finished."""
    if "PYTEST_XDIST_WORKER" in os.environ:
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run far faster on one thread, above all on a busy machine (use with `usefixtures`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def backend_params(*, op: str = "soft_pu", include_reference: bool = False) -> list[object]:
    """pytest params for every backend; unavailable ones are skipped with the reason."""
    from mkefast._build import BACKEND_NAMES, backend_unavailable_reason

    params = []
    for name in BACKEND_NAMES:
        if name == "reference" and not include_reference:
            continue
        reason = backend_unavailable_reason(name)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        params.append(pytest.param(name, id=name, marks=marks))
    return params


def device_for(backend: str) -> torch.device:
    """The device a backend's tests use: CUDA for the GPU backends when there is a GPU."""
    if backend in ("cuda", "triton") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


requires_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

__all__ = ["backend_params", "device_for", "mkefast", "requires_gpu"]
