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
    assert main(["robult", "synthetic", "--unique-bits", "-1", "--epochs", "1"]) == 2


def test_cli_argument_validation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["robult", "mfeat", "--views", "fou", "--epochs", "1"]) == 2
    assert "--views" in capsys.readouterr().err
    assert main(["robult", "mfeat", "--views", "fou,xyz", "--epochs", "1"]) == 2
    assert "views" in capsys.readouterr().err
    assert main(["robult", "mfeat", "--views", "fou,kar", "--variants", "robult,fancy", "--epochs", "1"]) == 2
    assert "variants" in capsys.readouterr().err
    assert main(["robult", "mfeat", "--views", "fou,kar", "--backend", "gpu", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "backend" in err and err.count("\n") == 1
    assert main(["robult", "mfeat", "--views", "fou,kar", "--device", "tpu0", "--epochs", "1"]) == 2
    assert "device" in capsys.readouterr().err
    assert main(["robult", "mfeat", "--views", "fou,kar", "--variants", "robult_mke", "--mke-teacher-view", "zer",
                 "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "teacher_view" in err and err.count("\n") == 1
    for bad in (["--labeled-fraction", "0"], ["--labeled-fraction", "1.5"], ["--epochs", "0"]):
        with pytest.raises(SystemExit):
            main(["robult", "mfeat", "--views", "fou,kar", *bad])
