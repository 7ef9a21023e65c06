"""Introspection and packaging: build_config, available_backends, `mkefast info`, import without a GPU."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mkefast
from mkefast._build import BACKEND_NAMES, missing_module_reason

ROOT = Path(__file__).resolve().parents[1]


def test_build_config_keys_and_types():
    config = mkefast.build_config()
    for key in ("version", "cpu", "openmp", "cuda", "cuda_version", "cuda_archs", "triton"):
        assert key in config, key
    assert config["version"] == mkefast.__version__
    assert isinstance(config["cpu"], bool) and isinstance(config["cuda"], bool)
    assert isinstance(config["triton"], bool)
    json.dumps(config)  # serializable, for bug reports


def test_compiled_cpu_module_is_built():
    """`pip install` always builds mkefast._C; the tests run against an installed package."""
    config = mkefast.build_config()
    assert config["cpu"], config["cpu_error"]
    assert "cpu" in mkefast.available_backends()


def test_cuda_module_built_where_nvcc_is_found():
    if shutil.which("nvcc") is None:
        pytest.skip("no nvcc on PATH")
    skipped = importlib.import_module("mkefast._build_info").SKIPPED.get("_C_cuda", "")
    if "MKEFAST_WITH_CUDA=0" in skipped:
        pytest.skip("the CUDA module was switched off at build time (MKEFAST_WITH_CUDA=0)")
    config = mkefast.build_config()
    assert config["cuda"], config["cuda_error"]
    assert config["cuda_version"] is not None
    assert config["cuda_archs"], "the CUDA module reports the architectures it was compiled for"


def test_available_backends_follow_the_rules():
    names = mkefast.available_backends()
    assert names[0] == "reference"
    assert set(names) <= set(BACKEND_NAMES)
    if not torch.cuda.is_available():
        assert "cuda" not in names
    reasons = mkefast.build_config()["why_not"]
    assert set(reasons) == set(BACKEND_NAMES) - set(names)
    assert all(isinstance(r, str) and r for r in reasons.values())


def _run_in_clean_process(code: str) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter that sees no GPU and a minimal PATH; it must succeed."""
    env = {"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr
    return out


def test_import_without_gpu_or_triton_in_a_clean_process():
    """`import mkefast` must work even when triton cannot be imported and no GPU is visible."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import mkefast, torch\n"
        "assert 'triton' not in mkefast.available_backends(), mkefast.available_backends()\n"
        "x = torch.randn(4, 3); print(float(mkefast.soft_pu_loss(x, x, torch.zeros(4, dtype=torch.long), "
        "torch.ones(4, dtype=torch.bool))))\n"
    )
    _run_in_clean_process(code)


def test_cli_info_prints_backends():
    out = subprocess.run([sys.executable, "-m", "mkefast.cli", "info", "--json"], capture_output=True, text=True,
                         check=True)
    config = json.loads(out.stdout)
    assert config["backends"] == mkefast.available_backends()  # the subprocess inherits this environment
    text = subprocess.run([sys.executable, "-m", "mkefast.cli", "info"], capture_output=True, text=True,
                          check=True).stdout
    assert "available backends:" in text


def test_missing_module_reason_says_why_and_how():
    error = ImportError("No module named 'mkefast._C'")
    skipped = {"_C": "no C++ compiler found (CMake: CMAKE_CXX_COMPILER not set)"}
    reason = missing_module_reason("_C", error, skipped)
    assert reason.startswith("mkefast._C was not built: no C++ compiler found")
    assert "to get it, install a C++ compiler" in reason and "reinstall" in reason
    cuda = missing_module_reason("_C_cuda", error, {"_C_cuda": "switched off at build time (MKEFAST_WITH_CUDA=0)"})
    assert "MKEFAST_WITH_CUDA=0" in cuda and "nvcc" in cuda
    # Built but not loadable (a missing shared library): the loader's message, and where to look.
    broken = missing_module_reason("_C", ImportError("libgomp.so.1: cannot open shared object file"), {})
    assert "could not be imported: libgomp.so.1" in broken and "troubleshooting" in broken


def test_a_build_without_the_cpp_module_in_a_clean_process():
    """As after `pip install` without a compiler: `auto` falls back, `cpu` raises saying why and how, and
    `mkefast info` shows the build's reason."""
    code = (
        "import sys, types\n"
        "sys.modules['mkefast._C'] = None\n"  # `import mkefast._C` now raises ImportError
        "record = types.ModuleType('mkefast._build_info')\n"
        "record.GIT_SHA = ''\n"
        "record.SKIPPED = {'_C': 'no C++ compiler found (test)', '_C_cuda': 'no C++ compiler found (test)'}\n"
        "sys.modules['mkefast._build_info'] = record\n"
        "import torch, mkefast\n"
        "from mkefast.backends import BackendUnavailableError\n"
        "from mkefast.cli import main\n"
        "x, z = torch.randn(6, 4), torch.randn(2, 6, 4)\n"
        "labels, labeled = torch.zeros(6, dtype=torch.long), torch.ones(6, dtype=torch.bool)\n"
        "assert 'cpu' not in mkefast.available_backends()\n"
        "assert mkefast.build_config()['cpu_error'].startswith('mkefast._C was not built: no C++ compiler found')\n"
        "print(float(mkefast.soft_pu_loss(x, z, labels, labeled)))\n"
        "try:\n"
        "    mkefast.soft_pu_loss(x, z, labels, labeled, backend='cpu')\n"
        "except BackendUnavailableError as exc:\n"
        "    print('raised:', exc)\n"
        "main(['info'])\n"
    )
    out = _run_in_clean_process(code)
    assert "raised: backend='cpu' cannot run soft_pu" in out.stdout
    assert "no C++ compiler found (test); to get it, install a C++ compiler" in out.stdout
    assert "cpu: unavailable: mkefast._C was not built: no C++ compiler found (test)" in out.stdout


def test_the_build_recorded_its_commit_and_skipped_modules():
    """The generated `mkefast/_build_info.py` is importable and agrees with what loaded."""
    record = importlib.import_module("mkefast._build_info")
    assert isinstance(record.GIT_SHA, str)
    assert set(record.SKIPPED) <= {"_C", "_C_cuda"}
    config = mkefast.build_config()
    assert ("_C" in record.SKIPPED) == (not config["cpu"])
    assert ("_C_cuda" in record.SKIPPED) == (not config["cuda"]) or config["cuda_error"].startswith(
        "mkefast._C_cuda could not be imported")
    sha = mkefast._build.git_sha()
    assert sha is None or re.fullmatch(r"[0-9a-f]{7,40}", sha), sha
    checkout = subprocess.run(["git", "rev-parse", "--is-inside-work-tree"], cwd=ROOT, capture_output=True,
                              text=True, check=False) if shutil.which("git") else None
    if checkout is not None and checkout.returncode == 0:
        assert sha is not None, "built from a git checkout, the package must know its commit"
    assert config["git_sha"] == sha


def _cmake() -> str | None:
    cmake = shutil.which("cmake")
    if cmake is None:
        return None
    version = subprocess.run([cmake, "--version"], capture_output=True, text=True, check=False).stdout.split()
    major_minor = tuple(int(v) for v in version[2].split(".")[:2]) if len(version) > 2 else (0, 0)
    return cmake if major_minor >= (3, 24) else None


@pytest.mark.skipif(_cmake() is None, reason="needs CMake >= 3.24 on PATH")
def test_cmake_without_a_compiler_records_why(tmp_path):
    """CMakeLists.txt configures without a C++ compiler, writes the reasons into `_build_info.py`, and fails
    only when MKEFAST_REQUIRE_COMPILED=1."""
    cmake = _cmake()
    assert cmake is not None
    env = {**os.environ, "CC": "/nonexistent", "CXX": "/nonexistent", "CUDACXX": "/nonexistent"}
    env.pop("MKEFAST_REQUIRE_COMPILED", None)
    out = subprocess.run([cmake, "-S", str(ROOT), "-B", str(tmp_path / "ok")], capture_output=True, text=True,
                         env=env, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    namespace: dict[str, object] = {}
    exec((tmp_path / "ok" / "_build_info.py").read_text(), namespace)
    skipped = namespace["SKIPPED"]
    assert isinstance(skipped, dict) and set(skipped) == {"_C", "_C_cuda"}
    assert skipped["_C"].startswith("no C++ compiler found (CMake: CMAKE_CXX_COMPILER not set")
    assert "no C++ compiler found" in skipped["_C_cuda"]
    required = subprocess.run([cmake, "-S", str(ROOT), "-B", str(tmp_path / "required")], capture_output=True,
                              text=True, env={**env, "MKEFAST_REQUIRE_COMPILED": "1"}, check=False)
    assert required.returncode != 0
    assert "MKEFAST_REQUIRE_COMPILED is set but the C++ module cannot be built" in " ".join(required.stderr.split())
