"""What was built and what can run here: the compiled modules, Triton, and the backends they enable."""

from __future__ import annotations

import datetime
import functools
import importlib
import importlib.util
import os
import subprocess
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

BACKEND_NAMES = ("reference", "cpu", "cuda", "triton")


@functools.cache
def _load(name: str) -> tuple[ModuleType | None, str | None]:
    """Imports a compiled module once; returns (module, None) or (None, why it is missing)."""
    try:
        return importlib.import_module(f"mkefast.{name}"), None
    except ImportError as exc:  # not built, or built for another Python / platform
        return None, f"mkefast.{name} could not be imported: {exc}"


def cpu_module() -> ModuleType | None:
    """The compiled CPU module `mkefast._C`, or None when it was not built."""
    return _load("_C")[0]


def cuda_module() -> ModuleType | None:
    """The compiled CUDA module `mkefast._C_cuda`, or None when it was not built."""
    return _load("_C_cuda")[0]


@functools.cache
def triton_importable() -> tuple[bool, str | None]:
    """Whether `import triton` works, without importing it (that takes a second or two)."""
    try:
        spec = importlib.util.find_spec("triton")
    except (ImportError, ValueError):  # ValueError: a module blocked or half-imported in sys.modules
        spec = None
    if spec is None:
        return False, "triton is not installed (pip install triton)"
    return True, None


def triton_interpreted() -> bool:
    """True when Triton kernels run on CPU tensors under the interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def backend_unavailable_reason(name: str) -> str | None:
    """None when backend `name` can run in this process, else a sentence saying why not."""
    if name == "reference":
        return None
    if name == "cpu":
        return _load("_C")[1]
    if name == "cuda":
        error = _load("_C_cuda")[1]
        if error is not None:
            return error + " (built only where a CUDA compiler is found at install time)"
        if not torch.cuda.is_available():
            return "no CUDA device is visible (torch.cuda.is_available() is False)"
        return None
    if name == "triton":
        ok, why = triton_importable()
        if not ok:
            return why
        if not torch.cuda.is_available() and not triton_interpreted():
            return "no CUDA device is visible and TRITON_INTERPRET is not set"
        return None
    raise ValueError(f"backend: expected one of {BACKEND_NAMES} or 'auto', got {name!r}")


def available_backends() -> list[str]:
    """The backend names that can run in this process, fastest last is not implied: see `build_config()`.

    `reference` always; `cpu` when `mkefast._C` loaded; `cuda` when `mkefast._C_cuda` loaded and a GPU is
    visible; `triton` when Triton is installed and either a GPU is visible or `TRITON_INTERPRET=1`.
    """
    return [name for name in BACKEND_NAMES if backend_unavailable_reason(name) is None]


def build_config() -> dict[str, Any]:
    """How mkefast was built and what this process can use.

    Returns:
        A dict with at least `version`, `cpu` (the C++ module loaded), `openmp`, `cuda` (the CUDA module
        built and loaded), `cuda_version`, `cuda_archs`, `triton` (importable), plus `torch`,
        `triton_version`, `gpu` (a visible device's name or None), `backends` and, for every backend that
        cannot run, `why_not[name]`.
    """
    from mkefast import __version__

    cpu, cpu_error = _load("_C")
    cuda, cuda_error = _load("_C_cuda")
    cpu_info: dict[str, Any] = cpu.build_info() if cpu is not None else {}
    cuda_info: dict[str, Any] = cuda.build_info() if cuda is not None else {}
    triton_ok, _ = triton_importable()
    triton_version = None
    if triton_ok:
        from importlib.metadata import PackageNotFoundError, version

        try:
            triton_version = version("triton")
        except PackageNotFoundError:
            triton_version = None
    cuda_version = cuda_info.get("cuda_version")
    return {
        "version": __version__,
        "torch": torch.__version__,
        "cpu": cpu is not None,
        "cpu_error": cpu_error,
        "openmp": bool(cpu_info.get("openmp", False)),
        "openmp_threads": torch.get_num_threads(),
        "cxx_compiler": cpu_info.get("compiler"),
        "cuda": cuda is not None,
        "cuda_error": cuda_error,
        "cuda_version": f"{cuda_version // 1000}.{cuda_version % 1000 // 10}" if cuda_version else None,
        "cuda_archs": cuda_info.get("archs", "").split(",") if cuda_info else [],
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "triton": triton_ok,
        "triton_version": triton_version,
        "triton_interpret": triton_interpreted(),
        "backends": available_backends(),
        "why_not": {
            name: reason
            for name in BACKEND_NAMES
            if (reason := backend_unavailable_reason(name)) is not None
        },
    }


@functools.cache
def git_sha() -> str | None:
    """The commit this package was built from: the sha recorded at build time (`mkefast._git_sha`, written by
    the build), else `git rev-parse` of the checkout the package is imported from, else None."""
    try:
        from mkefast._git_sha import GIT_SHA  # type: ignore[import-not-found]

        if GIT_SHA:
            return str(GIT_SHA)
    except ImportError:
        pass
    try:
        out = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True,
                             check=False, cwd=Path(__file__).resolve().parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha if out.returncode == 0 and sha else None


def provenance() -> dict[str, Any]:
    """What produced a result: mkefast's version and commit, torch, Triton, the date (UTC). Every JSON and CSV
    row that the command line writes carries these keys."""
    from mkefast import __version__

    triton_version = None
    if triton_importable()[0]:
        from importlib.metadata import PackageNotFoundError, version

        try:
            triton_version = version("triton")
        except PackageNotFoundError:
            triton_version = None
    return {
        "mkefast": __version__,
        "git_sha": git_sha(),
        "torch": torch.__version__,
        "triton": triton_version,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
