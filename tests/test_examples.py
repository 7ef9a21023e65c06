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


def _worst_and_peaks(out: str, steps: int, before: str) -> tuple[float, float, float]:
    """The largest loss difference over the training steps, and the peak MiB of the peer and of mkefast (after
    both times, which must be positive)."""
    worst = re.search(rf"largest difference over {steps} steps: ([^;\s]+)", out)
    times = re.search(rf"time {before} (\S+) ms, mkefast (\S+) ms; peak memory {before} (\S+) MiB, mkefast (\S+) MiB",
                      out)
    assert worst is not None and times is not None, out
    assert float(times.group(1)) > 0 and float(times.group(2)) > 0, out
    return float(worst.group(1)), float(times.group(3)), float(times.group(4))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="measures /proc/self memory (Linux)")
def test_supcon_dropin_matches_pml_and_nt_xent_and_uses_less_memory() -> None:
    out = _run("supcon_dropin.py", "--steps", "8", "--batch", "64", "--memory-batch", "1024")
    worst, pml, mk = _worst_and_peaks(out, 8, "pml")
    assert worst < 1e-9
    nt_xent = re.search(r"NTXentLoss, largest difference of loss and gradient: (\S+)", out)
    assert nt_xent is not None and float(nt_xent.group(1)) < 1e-12, out
    assert mk < pml / 2, out  # pml holds several B×B float matrices (4 MiB each here); mkefast none


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="measures /proc/self memory (Linux)")
def test_clip_dropin_matches_open_clip_with_a_learned_scale_and_uses_less_memory() -> None:
    out = _run("clip_dropin.py", "--steps", "8", "--batch", "64", "--memory-batch", "1024", "--memory-dim", "64")
    worst, dense, mk = _worst_and_peaks(out, 8, "dense")
    assert worst < 1e-9
    taus = re.search(r"learned temperature 1/logit_scale: (\S+) and (\S+)", out)
    assert taus is not None and taus.group(1) == taus.group(2), out
    assert float(taus.group(1)) != pytest.approx(0.07, abs=1e-3), out  # the scale was learned
    assert mk < dense / 2, out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="measures /proc/self memory (Linux)")
def test_moco_queue_matches_the_dense_loss_and_uses_less_memory() -> None:
    out = _run("moco_queue.py", "--steps", "6", "--batch", "32", "--queue", "256", "--memory-batch", "256",
               "--memory-queue", "16384", "--memory-dim", "32")
    worst, dense, mk = _worst_and_peaks(out, 6, "dense")
    assert worst < 1e-9
    assert mk < dense / 2, out


def test_ddp_train_matches_one_process() -> None:
    out = _run("ddp_train.py", "--world-size", "2", "--steps", "4", "--batch", "16", "--check")
    assert "largest parameter difference DDP vs one process after 4 steps" in out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="measures /proc/self memory (Linux)")
def test_memory_model_predicts_the_reference_peak() -> None:
    out = _run("memory_model.py", "--sizes", "1024", "--dim", "32", "--backends", "reference")
    row = re.search(r"reference\s+1024\s+32\s+2\s+(\S+)\s+(\S+)\s+(\S+)", out)
    assert row is not None, out
    assert 0.8 < float(row.group(3)) < 1.25, out
