"""MKE's experiments: the protocol (`run_mke`), its checkpoints, and the `mkefast mke` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mkefast.cli import main
from mkefast.data.mfeat import MultiViewSplit, MultiViewTensors
from mkefast.experiments.mke_paper import MODELS, MKEConfig, run_mke
from mkefast.train.mke_trainer import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _toy_split() -> MultiViewSplit:
    gen = torch.Generator().manual_seed(0)

    def part(n: int) -> MultiViewTensors:
        y = torch.randint(0, 2, (n,), generator=gen)
        a = y[:, None].float() + 0.8 * torch.randn(n, 1, generator=gen)
        b = y[:, None].float() + 0.2 * torch.randn(n, 2, generator=gen)
        return MultiViewTensors({"a": a, "b": b}, y)

    return MultiViewSplit(part(20), part(80), part(50))


def _toy_config(**train: object) -> MKEConfig:
    return MKEConfig(teacher_views=("a",), student_views=("a", "b"), teacher_hidden=(8,),
                     um_student_hidden=(8,), mm_student_hidden=(8,), rounds=2,
                     teacher_train=TrainConfig(epochs=20, lr=0.05, optimizer="adam"),
                     student_train=TrainConfig(epochs=20, lr=0.05, optimizer="adam", checkpoint_every=10,
                                               **train))  # type: ignore[arg-type]


@pytest.mark.parametrize("batch_size", [None, 16], ids=["full_batch", "mini_batch"])
def test_run_mke_and_checkpoint_dir(tmp_path: Path, batch_size: int | None) -> None:
    config = _toy_config(batch_size=batch_size)
    plain = run_mke(_toy_split(), config, seed=3)
    assert tuple(plain.accuracy) == MODELS and len(plain.rounds) == 2
    assert all(0.0 <= acc <= 100.0 for acc in plain.accuracy.values())
    resumed = run_mke(_toy_split(), config, seed=3, checkpoint_dir=tmp_path)
    again = run_mke(_toy_split(), config, seed=3, checkpoint_dir=tmp_path)
    assert plain.accuracy == resumed.accuracy == again.accuracy
    assert (tmp_path / "seed3-mm_student_round2.pt").exists()
    with pytest.raises(ValueError, match="lacks the views"):
        run_mke(_toy_split(), MKEConfig(teacher_views=("a",), student_views=("a", "c")), seed=0)


def test_cli_twomoon_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "twomoon.json"
    code = main(["mke", "twomoon", "--seeds", "2", "--teacher-epochs", "5", "--student-epochs", "5",
                 "--perturbation", "hidden", "--strength", "5", "--json", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    assert set(payload["accuracy"]) == set(MODELS)
    assert len(payload["per_seed"]) == 2
    assert payload["config"]["perturbation"]["hidden_noise"] == 5.0
    assert payload["config"]["student_train"]["batch_size"] is None
    assert set(payload["provenance"]) >= {"mkefast", "git_sha", "torch", "date"}
    assert "MM student" in capsys.readouterr().out


def _mfeat(tmp_path: Path, name: str, *args: str, checkpoint: bool = True) -> dict[str, object]:
    out = tmp_path / f"{name}.json"
    extra = ["--checkpoint-dir", str(tmp_path / "ckpt")] if checkpoint else []
    code = main(["mke", "mfeat", "--teacher-view", "mor", "--student-views", "mor,zer", "--teacher-epochs", "3",
                 "--student-epochs", "3", "--json", str(out), *extra, *args])
    assert code == 0
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_cli_mfeat_writes_json(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    payload = _mfeat(tmp_path, "soft", "--labeled-fraction", "0.1", "--soft", "--batch-size", "128",
                     checkpoint=False)
    assert set(payload["accuracy"]) == set(MODELS) and payload["config"]["soft_labels"] is True  # type: ignore[index, arg-type]
    assert payload["config"]["teacher_train"]["batch_size"] == 128  # type: ignore[index]
    with pytest.raises(SystemExit, match="2"):
        main(["mke", "mfeat", "--teacher-view", "nope", "--student-views", "zer"])


@pytest.mark.parametrize("change", [
    (["--labeled-fraction", "0.05"], ["--labeled-fraction", "0.2"]),
    (["--student-epochs", "5"], ["--student-epochs", "3"]),
    (["--perturbation", "input", "--strength", "2"], ["--perturbation", "dropout", "--strength", "0.4"]),
], ids=["fraction", "epochs", "perturbation"])
def test_a_checkpoint_dir_is_never_reused_by_another_configuration(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], change: tuple[list[str], list[str]]) -> None:
    """The bug of issue 12: a re-run with other settings printed the old run's accuracies."""
    pytest.importorskip("sklearn")
    before, after = change
    first = _mfeat(tmp_path, "first", *before)
    assert "starting fresh" not in capsys.readouterr().err
    assert _mfeat(tmp_path, "same", *before)["per_seed"] == first["per_seed"]
    assert "starting fresh" not in capsys.readouterr().err
    changed = _mfeat(tmp_path, "changed", *after)
    notices = [line for line in capsys.readouterr().err.splitlines() if "starting fresh" in line]
    assert len(notices) == 1 + 4 + 1  # the teacher, four students and the supervised model: one line each
    assert changed["per_seed"] == _mfeat(tmp_path, "fresh", *after, checkpoint=False)["per_seed"]


@pytest.mark.slow
def test_a_killed_run_resumes_to_the_same_result(tmp_path: Path) -> None:
    """SIGKILL and SIGINT in the middle of a stage, then the same command again: the result of a run never
    stopped."""
    pytest.importorskip("sklearn")
    args = [sys.executable, "-m", "mkefast.cli", "mke", "twomoon", "--seeds", "1", "--teacher-epochs", "200",
            "--student-epochs", "400", "--json"]
    env = {**os.environ, "MKEFAST_PROGRESS": "0"}
    clean = tmp_path / "clean.json"
    subprocess.run([*args, str(clean)], check=True, env=env, capture_output=True, timeout=300)
    for sig in (signal.SIGKILL, signal.SIGINT):
        ckpt = tmp_path / f"ckpt-{sig.name}"
        out = tmp_path / f"{sig.name}.json"
        run = [*args, str(out), "--checkpoint-dir", str(ckpt)]
        # A shell that starts a job in the background without job control (`cmd &` in a script, as a CI runner
        # may) ignores SIGINT in it and all it starts, and Python then never raises KeyboardInterrupt: the child
        # gets SIGINT's default back, whatever launched the tests.
        proc = subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.monotonic() + 240
        while not list(ckpt.glob("*noisy_student.pt")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(sig)
        proc.wait(timeout=60)
        assert not out.exists(), "the run finished before it was stopped"
        subprocess.run(run, check=True, env=env, capture_output=True, timeout=300)
        assert json.loads(out.read_text())["per_seed"] == json.loads(clean.read_text())["per_seed"]
