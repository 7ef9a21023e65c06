"""The command line's generic behaviour: `--version`, and one line + exit status 2 for every user mistake."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import mkefast
from mkefast import cli
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


def test_every_option_has_help_and_shows_its_default():
    """`mkefast info` and `mkefast bench` (the commands of this module and of mkefast.bench): each option is
    documented, and the help shows its default."""
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name in ("info", "bench"):
        sub = subparsers[name]
        assert sub.formatter_class is cli.HelpFormatter, name
        for action in sub._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
        text = sub.format_help()
        assert "(default:" in text, name
