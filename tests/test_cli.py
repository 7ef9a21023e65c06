"""The command line: `--version`, one line + exit status 2 for every user mistake (each command tried as a hostile
user would), help and defaults for every option."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import mkefast
from mkefast import cli
from mkefast._build import backend_unavailable_reason
from mkefast.backends import BackendUnavailableError
from mkefast.cli import main, user_error_message, version_string


def _raising(exc: BaseException):
    def command(args):
        raise exc

    return command


def test_version_prints_version_and_commit(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    out = capsys.readouterr().out.strip()
    assert out == version_string()
    assert out.startswith(f"mkefast {mkefast.__version__}")
    sha = mkefast._build.git_sha()
    assert (f"(git {sha})" in out) if sha else out == f"mkefast {mkefast.__version__}"


@pytest.mark.parametrize("exc,expected", [
    (ValueError("--seed: expected an integer >= 0,\n  got -1"), "--seed: expected an integer >= 0, got -1"),
    (TypeError("backend: expected a str, got int"), "backend: expected a str, got int"),
    (FileNotFoundError(2, "No such file or directory", "data/x.csv"), "data/x.csv: No such file or directory"),
    (FileNotFoundError("--data-dir: no mfeat-fou in /tmp"), "--data-dir: no mfeat-fou in /tmp"),
    (IsADirectoryError(21, "Is a directory", "out/"), "out/: Is a directory"),
    (BackendUnavailableError("backend='cuda' cannot run soft_pu on cpu torch.float32: no CUDA device is visible"),
     "backend='cuda' cannot run soft_pu on cpu torch.float32: no CUDA device is visible"),
    (ModuleNotFoundError("No module named 'sklearn'", name="sklearn"),
     "scikit-learn is not installed and this command needs it: pip install 'mkefast[experiments]'"),
    (ModuleNotFoundError("No module named 'matplotlib.pyplot'", name="matplotlib.pyplot"),
     "matplotlib is not installed and this command needs it: pip install 'mkefast[experiments]'"),
    (ModuleNotFoundError("No module named 'triton'", name="triton"),
     "triton is not installed and this command needs it: pip install 'mkefast[triton]'"),
], ids=["value", "type", "file-errno", "file-message", "directory", "backend", "sklearn", "matplotlib", "triton"])
def test_user_errors_become_one_line_and_status_2(monkeypatch, capsys, exc, expected):
    monkeypatch.setattr(cli, "_info", _raising(exc))
    assert main(["info"]) == 2
    err = capsys.readouterr().err
    assert err == f"mkefast info: error: {expected}\n"


@pytest.mark.parametrize("exc", [RuntimeError("a bug"), KeyError("x"), AssertionError("a bug"),
                                 ModuleNotFoundError("No module named 'mkefast.nope'", name="mkefast.nope")],
                         ids=["runtime", "key", "assertion", "internal-module"])
def test_bugs_keep_their_traceback(monkeypatch, exc):
    assert user_error_message(exc) is None
    monkeypatch.setattr(cli, "_info", _raising(exc))
    with pytest.raises(type(exc)):
        main(["info"])


def test_interrupt_is_one_line_and_status_130(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_info", _raising(KeyboardInterrupt()))
    assert main(["info"]) == 130
    assert capsys.readouterr().err == "mkefast info: interrupted\n"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
@pytest.mark.parametrize("argv,expected", [
    (["bench", "soft_pu", "--device", "cuda", "--B", "8"], "mkefast bench: error: --device cuda: no CUDA device"),
    (["bench", "soft_pu", "--backends", "cuda", "--B", "8"], "mkefast bench: error: backend='cuda' cannot run soft_pu"),
], ids=["device", "backend"])
def test_asking_for_cuda_without_a_gpu(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1, err


def test_no_traceback_in_a_real_process():
    """The console entry point, end to end: a user mistake prints one line on stderr and exits with 2."""
    out = subprocess.run([sys.executable, "-m", "mkefast.cli", "bench", "soft_pu", "--device", "tpu"],
                         capture_output=True, text=True, check=False)
    assert out.returncode == 2
    assert out.stderr == "mkefast bench: error: --device: expected cpu or cuda[:i], got 'tpu'\n"


# ------------------------------------------------------------------------------------------------------------------
# Every command as a hostile user runs it: each mistake is one line naming the option or the file, exit status 2.

ROWS = 120


def _views(rows: int = ROWS) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"a": rng.normal(size=(rows, 3)).astype(np.float32), "b": rng.normal(size=(rows, 4))}


def _labels(rows: int = ROWS) -> np.ndarray:
    return np.arange(rows) % 3


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of broken inputs: .npz archives (one fault each), mfeat CSV folders, a plain file."""
    root = tmp_path_factory.mktemp("inputs")
    a, b = _views().values()
    y = _labels()
    nan, inf, neg = b.copy(), b.copy(), y.copy()
    nan[7, 1], inf[9, 0], neg[5] = np.nan, np.inf, -1
    archives = {
        "ok": {"a": a, "b": b, "labels": y},
        "nolabels": {"a": a, "b": b},
        "oned": {"a": a[:, 0], "b": b, "labels": y},
        "rows": {"a": a[:-1], "b": b, "labels": y},
        "nan": {"a": a, "b": nan, "labels": y},
        "inf": {"a": a, "b": inf, "labels": y},
        "negative": {"a": a, "b": b, "labels": neg},
        "fractional": {"a": a, "b": b, "labels": y + 0.5},
        "single": {"a": a, "b": b, "labels": np.zeros(ROWS, np.int64)},
        "gaps": {"a": a, "b": b, "labels": y * 2},
        "few": {"a": a[:5], "b": b[:5], "labels": y[:5]},
        "strings": {"a": a, "b": np.full((ROWS, 1), "x"), "labels": y},
        "objects": {"a": a, "b": b, "labels": np.array([{}] * ROWS, dtype=object)},
    }
    for name, arrays in archives.items():
        np.savez(root / f"{name}.npz", **arrays)  # type: ignore[arg-type]
    np.save(root / "array.npy", a)
    (root / "text.npz").write_text("not an archive\n")
    (root / "afile").write_text("a file, not a directory\n")
    shipped = [line.split(",") for line in _csv_lines()]
    for fault in ("cell", "short", "header", "two", "negative", "gaps"):
        folder = root / f"csv_{fault}"
        folder.mkdir()
        rows = [list(r) for r in shipped]
        if fault == "cell":
            rows[5][3] = "abc"
        elif fault == "short":
            rows[7] = rows[7][:-2]
        elif fault == "header":
            rows = rows[:1]
        elif fault == "two":
            rows = rows[:3]
        elif fault == "negative":
            rows[5][-1] = "-1"
        else:
            rows = [rows[0], *([*r[:-1], str(2 * int(r[-1]))] for r in rows[1:])]
        (folder / "mfeat-mor.csv").write_text("\n".join(",".join(r) for r in rows) + "\n")
    # Checkpoint folders whose first stage (`seed0-teacher.pt`) is damaged, or a torch file of something else.
    for fault in ("corrupt", "foreign"):
        (root / f"ckpt_{fault}").mkdir()
    (root / "ckpt_corrupt" / "seed0-teacher.pt").write_bytes(b"PK\x03\x04 cut short")
    torch.save({"weights": torch.zeros(2)}, root / "ckpt_foreign" / "seed0-teacher.pt")
    return root


def _csv_lines() -> list[str]:
    """mfeat's `mor` view as its original CSV (header of column numbers, then features and label per row)."""
    from mkefast.data import load_mfeat

    data = load_mfeat(["mor"])
    header = ",".join(str(i) for i in range(data.views["mor"].shape[1] + 1))
    return [header, *(",".join([*(f"{v:g}" for v in x), str(label)])
                      for x, label in zip(data.views["mor"], data.labels, strict=True))]


def _status(argv: list[str]) -> int | str | None:
    try:
        return main(argv)
    except SystemExit as stop:
        return stop.code


NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
MFEAT = ["mke", "mfeat", "--teacher-view", "mor", "--student-views", "mor,zer"]
MFEAT_MOR = ["mke", "mfeat", "--teacher-view", "mor", "--student-views", "mor"]
NPZ_MKE = ["mke", "npz", "--teacher-view", "a", "--student-views", "a,b", "--path"]
NPZ_ROBULT = ["robult", "npz", "--views", "a,b", "--path"]
ROBULT = ["robult", "mfeat", "--views", "fou,kar"]

# (argv with {dir} for the folder of broken inputs, the command, what the message must name)
MISTAKES = [
    pytest.param(["kernels", "--arch", "70"], "kernels", "argument --arch", id="kernels-arch"),
    pytest.param(["kernels", "--d", "0"], "kernels", "argument --d", id="kernels-d-0"),
    pytest.param(["kernels", "--json", "{dir}"], "kernels", "argument --json", id="kernels-json-directory"),
    pytest.param(["kernels", "--from-json", "{dir}/missing.json"], "kernels", "argument --from-json",
                 id="kernels-from-json-missing"),
    pytest.param(["info", "--bogus"], "info", "--bogus", id="info-unknown-option"),
    pytest.param(["demo", "--out", "{dir}/afile/x.png"], "demo", "argument --out", id="demo-out-under-a-file"),
    pytest.param(["demo", "--out", "{dir}"], "demo", "argument --out", id="demo-out-directory"),
    pytest.param(["mke"], "mke", "dataset", id="mke-no-dataset"),
    pytest.param(["mke", "twomoon", "--seeds", "0"], "mke twomoon", "argument --seeds", id="seeds-0"),
    pytest.param(["mke", "twomoon", "--seeds", "1001"], "mke twomoon", "argument --seeds", id="seeds-1001"),
    pytest.param(["mke", "twomoon", "--seeds", "x"], "mke twomoon", "argument --seeds", id="seeds-text"),
    pytest.param(["mke", "twomoon", "--threshold", "1.5"], "mke twomoon", "argument --threshold", id="threshold"),
    pytest.param(["mke", "twomoon", "--rounds", "0"], "mke twomoon", "argument --rounds", id="rounds"),
    pytest.param(["mke", "twomoon", "--teacher-epochs", "0"], "mke twomoon", "argument --teacher-epochs",
                 id="teacher-epochs-0"),
    pytest.param(["mke", "twomoon", "--student-epochs", "-3"], "mke twomoon", "argument --student-epochs",
                 id="student-epochs-negative"),
    pytest.param(["mke", "twomoon", "--strength", "-1"], "mke twomoon", "argument --strength", id="strength"),
    pytest.param(["mke", "twomoon", "--perturbation", "dropout", "--strength", "1.5"], "mke twomoon",
                 "--strength: dropout", id="dropout-1.5"),
    pytest.param(["mke", "twomoon", "--perturbation", "input"], "mke twomoon", "--strength", id="no-strength"),
    pytest.param(["mke", "twomoon", "--perturbation", "wobble"], "mke twomoon", "argument --perturbation",
                 id="perturbation"),
    pytest.param(["mke", "twomoon", "--batch-size", "0"], "mke twomoon", "argument --batch-size", id="batch-0"),
    pytest.param(["mke", "twomoon", "--device", "tpu"], "mke twomoon", "argument --device", id="device-tpu"),
    pytest.param(["mke", "twomoon", "--device", "cuda"], "mke twomoon", "argument --device: 'cuda': no CUDA",
                 id="device-cuda", marks=NO_CUDA),
    pytest.param(["mke", "twomoon", "--json", "{dir}/afile/out.json"], "mke twomoon", "argument --json",
                 id="json-under-a-file"),
    pytest.param(["mke", "twomoon", "--json", "{dir}"], "mke twomoon", "argument --json", id="json-directory"),
    pytest.param(["mke", "twomoon", "--plot", "{dir}/afile/x.png"], "mke twomoon", "argument --plot", id="plot"),
    pytest.param(["mke", "twomoon", "--checkpoint-dir", "{dir}/afile"], "mke twomoon", "argument --checkpoint-dir",
                 id="checkpoint-dir-file"),
    pytest.param(["mke", "mfeat", "--student-views", "fou"], "mke mfeat", "--teacher-view", id="required"),
    pytest.param([*MFEAT, "--seed", "-1"], "mke mfeat", "argument --seed", id="seed-negative"),
    pytest.param([*MFEAT, "--seed", "4294967296"], "mke mfeat", "argument --seed", id="seed-too-large"),
    pytest.param([*MFEAT, "--seed", "4294967295", "--seeds", "2"], "mke mfeat", "--seed, --seeds", id="last-seed"),
    pytest.param([*MFEAT, "--seeds", "0"], "mke mfeat", "argument --seeds", id="mfeat-seeds-0"),
    pytest.param([*MFEAT, "--teacher-view", "xyz"], "mke mfeat", "argument --teacher-view", id="teacher-view"),
    pytest.param([*MFEAT, "--teacher-view", "fou,kar"], "mke mfeat", "argument --teacher-view", id="two-teachers"),
    pytest.param([*MFEAT, "--student-views", "fou,,kar"], "mke mfeat", "argument --student-views", id="empty-name"),
    pytest.param([*MFEAT, "--student-views", "fou,fou"], "mke mfeat", "argument --student-views", id="twice"),
    pytest.param([*MFEAT, "--student-views", "fou,xyz"], "mke mfeat", "argument --student-views", id="unknown-view"),
    pytest.param([*MFEAT, "--labeled-fraction", "0"], "mke mfeat", "argument --labeled-fraction", id="fraction-0"),
    pytest.param([*MFEAT, "--labeled-fraction", "1"], "mke mfeat", "argument --labeled-fraction", id="fraction-1"),
    pytest.param([*MFEAT, "--labeled-fraction", "nan"], "mke mfeat", "argument --labeled-fraction",
                 id="fraction-nan"),
    pytest.param([*MFEAT, "--labeled-fraction", "0.001"], "mke mfeat", "labeled_fraction 0.001",
                 id="fraction-labels-too-few"),
    pytest.param([*MFEAT, "--data-dir", "{dir}/missing"], "mke mfeat", "argument --data-dir", id="data-dir"),
    pytest.param([*MFEAT, "--data-dir", "{dir}/csv_cell"], "mke mfeat", "mfeat-mor.csv, line 6, column 4",
                 id="csv-malformed-cell"),
    pytest.param([*MFEAT, "--data-dir", "{dir}/csv_short"], "mke mfeat", "mfeat-mor.csv, line 8",
                 id="csv-short-row"),
    pytest.param([*MFEAT, "--data-dir", "{dir}/csv_header"], "mke mfeat", "mfeat-mor.csv: only a header",
                 id="csv-only-header"),
    pytest.param([*MFEAT_MOR, "--data-dir", "{dir}/csv_two"], "mke mfeat", "csv_two: labels: expected at least two",
                 id="csv-two-rows"),
    pytest.param([*MFEAT_MOR, "--data-dir", "{dir}/csv_negative"], "mke mfeat",
                 "csv_negative: labels: expected class ids >= 0, got -1 at row 4", id="csv-label-negative"),
    pytest.param([*MFEAT_MOR, "--data-dir", "{dir}/csv_gaps"], "mke mfeat",
                 "csv_gaps: labels: expected the class ids 0..K-1", id="csv-label-gaps"),
    pytest.param([*MFEAT, "--checkpoint-dir", "{dir}/ckpt_corrupt"], "mke mfeat",
                 "checkpoint {dir}/ckpt_corrupt/seed0-teacher.pt: cannot be read", id="checkpoint-corrupt"),
    pytest.param([*MFEAT, "--checkpoint-dir", "{dir}/ckpt_foreign"], "mke mfeat",
                 "checkpoint {dir}/ckpt_foreign/seed0-teacher.pt: not an mkefast training checkpoint",
                 id="checkpoint-foreign"),
    pytest.param(["mke", "twomoon", "--differences", "--protocol", "ours"], "mke twomoon",
                 "--differences: only with --protocol paper", id="differences-without-paper"),
    pytest.param(["mke", "twomoon", "--protocol", "paper", "--soft"], "mke twomoon",
                 "--soft: not part of --protocol paper", id="paper-protocol-soft"),
    pytest.param(["mke", "twomoon", "--protocol", "fancy"], "mke twomoon", "argument --protocol",
                 id="protocol-name"),
    pytest.param([*NPZ_MKE, "{dir}/missing.npz"], "mke npz", "argument --path", id="npz-missing"),
    pytest.param([*NPZ_MKE, "{dir}"], "mke npz", "argument --path", id="npz-directory"),
    pytest.param([*NPZ_MKE, "{dir}/text.npz"], "mke npz", "text.npz: not a NumPy .npz archive", id="npz-text"),
    pytest.param([*NPZ_MKE, "{dir}/array.npy"], "mke npz", "array.npy: a single .npy array", id="npz-npy"),
    pytest.param([*NPZ_MKE, "{dir}/nolabels.npz"], "mke npz", "nolabels.npz: no 'labels' array", id="npz-no-labels"),
    pytest.param([*NPZ_MKE, "{dir}/oned.npz"], "mke npz", "oned.npz: views['a']: expected shape", id="npz-1d-view"),
    pytest.param([*NPZ_MKE, "{dir}/rows.npz"], "mke npz", "rows.npz: views['a']: expected shape [120, f]",
                 id="npz-row-counts"),
    pytest.param([*NPZ_MKE, "{dir}/nan.npz"], "mke npz", "nan.npz: views['b']: NaN or infinity at row 7",
                 id="npz-nan"),
    pytest.param([*NPZ_MKE, "{dir}/inf.npz"], "mke npz", "inf.npz: views['b']: NaN or infinity at row 9",
                 id="npz-inf"),
    pytest.param([*NPZ_MKE, "{dir}/negative.npz"], "mke npz", "negative.npz: labels: expected class ids >= 0",
                 id="npz-negative-label"),
    pytest.param([*NPZ_MKE, "{dir}/fractional.npz"], "mke npz", "fractional.npz: labels: expected integer",
                 id="npz-fractional-label"),
    pytest.param([*NPZ_MKE, "{dir}/objects.npz"], "mke npz", "objects.npz: labels: cannot be read",
                 id="npz-object-labels"),
    pytest.param([*NPZ_MKE, "{dir}/single.npz"], "mke npz", "single.npz: labels: expected at least two classes",
                 id="npz-single-class"),
    pytest.param([*NPZ_MKE, "{dir}/gaps.npz"], "mke npz", "gaps.npz: labels: expected the class ids 0..K-1",
                 id="npz-label-gaps"),
    pytest.param([*NPZ_MKE, "{dir}/few.npz"], "mke npz", "labels: a stratified split of 5 rows", id="npz-few-rows"),
    pytest.param([*NPZ_MKE, "{dir}/strings.npz"], "mke npz", "strings.npz: views['b']: expected real numbers",
                 id="npz-strings"),
    pytest.param(["mke", "npz", "--teacher-view", "c", "--student-views", "a,b", "--path", "{dir}/ok.npz"],
                 "mke npz", "ok.npz: no view 'c'", id="npz-unknown-view"),
    pytest.param([*NPZ_ROBULT, "{dir}/ok.npz", "--views", "a"], "robult npz", "argument --views", id="robult-1-view"),
    pytest.param([*NPZ_ROBULT, "{dir}/ok.npz", "--views", "a,labels"], "robult npz", "ok.npz: no view 'labels'",
                 id="robult-labels-as-view"),
    pytest.param([*NPZ_ROBULT, "{dir}/gaps.npz"], "robult npz", "gaps.npz: labels:", id="robult-npz-gaps"),
    pytest.param([*ROBULT, "--views", "fou"], "robult mfeat", "argument --views", id="robult-views"),
    pytest.param([*ROBULT, "--variants", "robult,fancy"], "robult mfeat", "argument --variants", id="variants"),
    pytest.param([*ROBULT, "--backend", "gpu"], "robult mfeat", "argument --backend", id="backend-name"),
    pytest.param([*ROBULT, "--batch-size", "1"], "robult mfeat", "argument --batch-size", id="robult-batch-1"),
    pytest.param([*ROBULT, "--lr", "0"], "robult mfeat", "argument --lr", id="lr-0"),
    pytest.param([*ROBULT, "--lr", "inf"], "robult mfeat", "argument --lr", id="lr-inf"),
    pytest.param([*ROBULT, "--pseudo-threshold", "1"], "robult mfeat", "argument --pseudo-threshold",
                 id="pseudo-threshold"),
    pytest.param([*ROBULT, "--threads", "0"], "robult mfeat", "argument --threads", id="threads"),
    pytest.param([*ROBULT, "--epochs", "0"], "robult mfeat", "argument --epochs", id="epochs-0"),
    pytest.param([*ROBULT, "--seed", "-1"], "robult mfeat", "argument --seed", id="robult-seed"),
    pytest.param([*ROBULT, "--variants", "robult_mke", "--mke-teacher-view", "zer"], "robult mfeat",
                 "--mke-teacher-view: expected one of the views fou, kar, got 'zer'", id="mke-teacher-view"),
    pytest.param([*ROBULT, "--mke-teacher-view", "fou,kar"], "robult mfeat", "argument --mke-teacher-view",
                 id="two-mke-teachers"),
    pytest.param(["robult", "synthetic", "--unique-bits", "-1"], "robult synthetic", "argument --unique-bits",
                 id="unique-bits"),
    pytest.param(["robult", "synthetic", "--redundant-bits", "x"], "robult synthetic", "argument --redundant-bits",
                 id="redundant-bits"),
    pytest.param(["robult", "synthetic", "--synergistic-bits", "-2"], "robult synthetic",
                 "argument --synergistic-bits", id="synergistic-bits"),
    pytest.param(["robult", "synthetic", "--redundant-bits", "17"], "robult synthetic", "expected 1 to 16 label bits",
                 id="too-many-bits"),
    pytest.param(["robult", "synthetic", "--noise", "-0.1"], "robult synthetic", "argument --noise", id="noise"),
    pytest.param(["robult", "synthetic", "--noise", "nan"], "robult synthetic", "argument --noise", id="noise-nan"),
    pytest.param(["robult", "synthetic", "--modalities", "1"], "robult synthetic", "argument --modalities",
                 id="modalities"),
    pytest.param(["robult", "synthetic", "--data-seed", "-1"], "robult synthetic", "argument --data-seed",
                 id="data-seed"),
    pytest.param(["robult", "synthetic", "--samples", "10"], "robult synthetic", "labels: a stratified split",
                 id="samples-too-few"),
    pytest.param(["bench", "soft_pu", "--B", "8", "--d", "0"], "bench", "--d", id="bench-d"),
]


@pytest.mark.parametrize("argv,command,names", MISTAKES)
def test_a_mistake_is_one_line_naming_the_option_or_file(files: Path, capsys: pytest.CaptureFixture[str],
                                                          argv: list[str], command: str, names: str) -> None:
    status = _status([a.replace("{dir}", str(files)) for a in argv])
    captured = capsys.readouterr()
    names = names.replace("{dir}", str(files))
    assert status == 2, captured.err
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    assert captured.err.startswith(f"mkefast {command}: error: "), captured.err
    assert names in captured.err, captured.err


@pytest.mark.parametrize("argv,env,names", [
    pytest.param([*ROBULT, "--backend", "cuda"], {}, "backend='cuda' cannot run", id="backend-cuda",
                 marks=pytest.mark.skipif(backend_unavailable_reason("cuda") is None, reason="CUDA backend runs")),
    pytest.param(ROBULT, {"MKEFAST_BACKEND": "gpu"}, "MKEFAST_BACKEND: expected one of", id="env-backend"),
    pytest.param(["robult", "synthetic", "--backend", "cpu", "--variants", "robult", "--epochs", "1"],
                 {"MKEFAST_CPU_CHUNK_MB": "inf"}, "MKEFAST_CPU_CHUNK_MB: expected a positive finite", id="env-chunk",
                 marks=pytest.mark.skipif(backend_unavailable_reason("cpu") is not None, reason="no CPU backend")),
])
def test_environment_and_backend_mistakes_are_one_line(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str], argv: list[str],
                                                       env: dict[str, str], names: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert _status(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"mkefast {' '.join(argv[:2])}: error: {names}"), err


@pytest.mark.parametrize("argv", [
    ["demo"], ["mke", "twomoon"], MFEAT, ["mke", "npz", "--teacher-view", "a", "--student-views", "b", "--path",
                                          "{dir}/ok.npz"], ROBULT, ["robult", "synthetic"],
], ids=["demo", "twomoon", "mke-mfeat", "mke-npz", "robult-mfeat", "robult-synthetic"])
def test_missing_scikit_learn_stops_before_any_training(files: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    monkeypatch.setitem(sys.modules, "sklearn", None)
    assert _status([a.replace("{dir}", str(files)) for a in argv]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.endswith(": error: scikit-learn is not installed and this command needs it: "
                                 "pip install 'mkefast[experiments]'\n") and captured.err.count("\n") == 1


def test_plot_without_matplotlib_stops_before_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert _status(["mke", "twomoon", "--plot", str(tmp_path / "f.png"), "--json", str(tmp_path / "r.json")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and not (tmp_path / "r.json").exists()
    assert captured.err == ("mkefast mke twomoon: error: matplotlib is not installed and this command needs it: "
                            "pip install 'mkefast[experiments]'\n")


def test_the_json_is_written_before_the_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A plot that fails (here: the disk is full) loses no result: the JSON is already written."""
    pytest.importorskip("matplotlib")
    from mkefast.experiments import mke_paper

    def full_disk(*args: object) -> None:
        raise PermissionError(13, "Permission denied", str(tmp_path / "f.png"))

    monkeypatch.setattr(mke_paper, "plot_twomoon", full_disk)
    assert _status(["mke", "twomoon", "--seeds", "1", "--teacher-epochs", "2", "--student-epochs", "2",
                    "--no-progress", "--plot", str(tmp_path / "f.png"), "--json", str(tmp_path / "r.json")]) == 2
    assert "um_teacher" in json.loads((tmp_path / "r.json").read_text())["accuracy"]
    assert capsys.readouterr().err == f"mkefast mke twomoon: error: {tmp_path / 'f.png'}: Permission denied\n"


def _leaf_parsers() -> dict[str, argparse.ArgumentParser]:
    return {leaf.prog: leaf for leaf in cli._leaves(cli.build_parser())}


def test_every_command_is_checked() -> None:
    """The table above tries every command (a new command needs its mistakes there too)."""
    tried = {f"mkefast {command}" for _, command, _ in (p.values for p in MISTAKES)}
    assert set(_leaf_parsers()) <= tried, set(_leaf_parsers()) - tried


@pytest.mark.parametrize("prog", sorted(_leaf_parsers()))
def test_every_option_of_every_command_has_help_and_shows_its_default(prog: str) -> None:
    parser = _leaf_parsers()[prog]
    assert isinstance(parser, cli.Parser) and parser.formatter_class is cli.HelpFormatter
    formatter = cli.HelpFormatter(prog)
    for action in parser._actions:
        assert action.help, f"{prog} {action.option_strings or action.dest} has no help"
        if action.option_strings and not action.required and action.default is not argparse.SUPPRESS:
            shown = formatter._get_help_string(action) or ""
            assert "default" in shown, f"{prog} {action.option_strings} does not say its default: {shown!r}"
    assert parser.format_help()
