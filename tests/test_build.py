"""Introspection and packaging: build_config, available_backends, `mkefast info`, import without a GPU."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import torch

import mkefast
from mkefast._build import BACKEND_NAMES


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
        return
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


def test_import_without_gpu_or_triton_in_a_clean_process():
    """`import mkefast` must work even when triton cannot be imported and no GPU is visible."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import mkefast, torch\n"
        "assert 'triton' not in mkefast.available_backends(), mkefast.available_backends()\n"
        "x = torch.randn(4, 3); print(float(mkefast.soft_pu_loss(x, x, torch.zeros(4, dtype=torch.long), "
        "torch.ones(4, dtype=torch.bool))))\n"
    )
    env = {"CUDA_VISIBLE_DEVICES": "", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
    assert out.returncode == 0, out.stderr


def test_cli_info_prints_backends():
    out = subprocess.run([sys.executable, "-m", "mkefast.cli", "info", "--json"], capture_output=True, text=True,
                         check=True)
    config = json.loads(out.stdout)
    assert config["backends"] == mkefast.available_backends()  # the subprocess inherits this environment
    text = subprocess.run([sys.executable, "-m", "mkefast.cli", "info"], capture_output=True, text=True,
                          check=True).stdout
    assert "available backends:" in text
