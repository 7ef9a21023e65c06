"""pytest-benchmark setup of the benchmark suite (`pytest benchmarks/ --benchmark-only`; see benchmarks/README.md).

Not collected by the normal test run (testpaths = tests).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--bench-device", default="cpu", help="mkefast benchmarks: the device, cpu or cuda[:i]")
    parser.addoption("--bench-mem-limit-gb", default=16.0, type=float,
                     help="mkefast benchmarks: skip a point whose provider is predicted to need more memory")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "smoke: a small point of every op and its main providers (under a minute)")


@pytest.fixture(scope="session")
def bench_device(request: pytest.FixtureRequest) -> str:
    device = str(request.config.getoption("--bench-device"))
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip(f"--bench-device {device}: no CUDA device is visible")
    return device


@pytest.fixture(scope="session")
def bench_mem_limit_gb(request: pytest.FixtureRequest) -> float:
    return float(request.config.getoption("--bench-mem-limit-gb"))
