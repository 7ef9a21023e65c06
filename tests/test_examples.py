"""The scripts in examples/ run as written (small sizes) and report what their docstrings promise."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(script: str, *args: str) -> str:
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), *args], capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_supcon_dropin_matches_pml_and_uses_less_memory() -> None:
    out = _run("supcon_dropin.py", "--steps", "8", "--batch", "64", "--memory-batch", "1024")
    worst = float(re.search(r"largest difference over 8 steps: (\S+)", out).group(1))  # type: ignore[union-attr]
    assert worst < 1e-9
    pml, mk = (float(x) for x in re.search(r"pml (\S+) MiB, mkefast (\S+) MiB", out).groups())  # type: ignore[union-attr]
    assert mk < pml


def test_ddp_train_matches_one_process() -> None:
    out = _run("ddp_train.py", "--world-size", "2", "--steps", "4", "--batch", "16", "--check")
    assert "largest parameter difference DDP vs one process after 4 steps" in out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="measures /proc/self memory (Linux)")
def test_memory_model_predicts_the_reference_peak() -> None:
    out = _run("memory_model.py", "--sizes", "1024", "--dim", "32", "--backends", "reference")
    row = re.search(r"reference\s+1024\s+32\s+2\s+(\S+)\s+(\S+)\s+(\S+)", out)
    assert row is not None, out
    assert 0.8 < float(row.group(3)) < 1.25, out
