"""Robult's experiments: the `mkefast robult` command and its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mkefast.cli import main
from mkefast.experiments.common import default_device

pytestmark = pytest.mark.usefixtures("one_thread")


def test_cli_mfeat_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "robult.json"
    rc = main(["robult", "mfeat", "--views", "fou,mor", "--labeled-fraction", "0.1", "--seed", "3",
               "--epochs", "1", "--batch-size", "256", "--json", str(path)])
    assert rc == 0
    result = json.loads(path.read_text())
    variants = {"robult", "supervised", "robult_no_rec", "robult_no_lb", "robult_no_ulb", "robult_no_sup", "gmc",
                "robult_mke", "self_training"}
    assert set(result["accuracy"]) == variants
    for acc in result["accuracy"].values():
        assert set(acc) == {"full", "fou", "mor"}
        assert all(0.0 <= a <= 100.0 for a in acc.values())
    assert result["config"]["views"] == ["fou", "mor"] and result["config"]["seed"] == 3
    assert result["config"]["mke_teacher_view"] is None
    assert result["config"]["device"] == default_device()
    assert set(result["provenance"]) >= {"mkefast", "git_sha", "torch", "date"}
    assert "robult_no_sup" in capsys.readouterr().out


def test_cli_synthetic_writes_json(tmp_path: Path) -> None:
    path = tmp_path / "synthetic.json"
    rc = main(["robult", "synthetic", "--samples", "400", "--labeled-fraction", "0.5", "--epochs", "1",
               "--variants", "robult,supervised,gmc,self_training", "--redundant-bits", "1", "--synergistic-bits", "1",
               "--noise", "0.3", "--json", str(path)])
    assert rc == 0
    result = json.loads(path.read_text())
    assert set(result["accuracy"]) == {"robult", "supervised", "gmc", "self_training"}
    assert set(result["accuracy"]["robult"]) == {"full", "m0", "m1"}
    config = result["config"]
    bits = (config["redundant_bits"], config["unique_bits"], config["synergistic_bits"], config["noise"])
    assert bits == (1, 1, 1, 0.3)
    with pytest.raises(SystemExit) as stop:
        main(["robult", "synthetic", "--unique-bits", "-1", "--epochs", "1"])
    assert stop.value.code == 2


@pytest.mark.parametrize("args,option", [
    (["--views", "fou"], "--views"), (["--views", "fou,xyz"], "--views"),
    (["--variants", "robult,fancy"], "--variants"), (["--backend", "gpu"], "--backend"),
    (["--device", "tpu0"], "--device"), (["--labeled-fraction", "0"], "--labeled-fraction"),
    (["--labeled-fraction", "1.5"], "--labeled-fraction"), (["--epochs", "0"], "--epochs"),
])
def test_cli_argument_validation(capsys: pytest.CaptureFixture[str], args: list[str], option: str) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["robult", "mfeat", "--views", "fou,kar", "--epochs", "1", *args])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"mkefast robult mfeat: error: argument {option}:")
    assert err.count("\n") == 1


def test_cli_teacher_view_must_be_a_view(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["robult", "mfeat", "--views", "fou,kar", "--variants", "robult_mke", "--mke-teacher-view", "zer",
                 "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mkefast robult mfeat: error: --mke-teacher-view:") and err.count("\n") == 1
