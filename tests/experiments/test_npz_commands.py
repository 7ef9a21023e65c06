"""`mkefast mke npz` and `mkefast robult npz`: the mfeat commands' code paths on a file of your own. The shipped
mfeat.npz is such a file, so both commands must give the mfeat commands' results and JSON, to the bit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mkefast.cli import main
from mkefast.data.mfeat import _SHIPPED

pytestmark = [pytest.mark.usefixtures("one_thread")]


def _run(tmp_path: Path, name: str, argv: list[str]) -> dict[str, object]:
    out = tmp_path / f"{name}.json"
    assert main([*argv, "--json", str(out), "--no-progress"]) == 0
    return json.loads(out.read_text())  # type: ignore[no-any-return]


def test_mke_npz_is_mke_mfeat_on_a_file(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    options = ["--teacher-view", "mor", "--student-views", "zer", "--teacher-epochs", "3", "--student-epochs", "3",
               "--labeled-fraction", "0.1", "--seed", "4", "--seeds", "2"]
    mfeat = _run(tmp_path, "mfeat", ["mke", "mfeat", *options])
    npz = _run(tmp_path, "npz", ["mke", "npz", "--path", str(_SHIPPED), *options])
    assert npz["accuracy"] == mfeat["accuracy"] and npz["per_seed"] == mfeat["per_seed"]
    assert list(npz["per_seed"]) == ["4", "5"]  # type: ignore[call-overload]
    config = dict(npz["config"])  # type: ignore[call-overload]
    assert (config.pop("data"), config.pop("path")) == ("npz", str(_SHIPPED))
    expected = dict(mfeat["config"])  # type: ignore[call-overload]
    assert expected.pop("data") == "mfeat"
    config.pop("seconds"), expected.pop("seconds")
    assert config == expected and config["student_views"] == ["mor", "zer"]
    assert set(npz) == set(mfeat) == {"accuracy", "std", "per_seed", "rounds", "config", "provenance"}


def test_robult_npz_is_robult_mfeat_on_a_file(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    options = ["--views", "fou,mor", "--labeled-fraction", "0.1", "--seed", "2", "--epochs", "1",
               "--variants", "robult,supervised"]
    mfeat = _run(tmp_path, "mfeat", ["robult", "mfeat", *options])
    npz = _run(tmp_path, "npz", ["robult", "npz", "--path", str(_SHIPPED), *options])
    assert npz["accuracy"] == mfeat["accuracy"]
    assert set(npz["accuracy"]["robult"]) == {"full", "fou", "mor"}  # type: ignore[index]
    config, expected = dict(npz["config"]), dict(mfeat["config"])  # type: ignore[call-overload]
    assert (config.pop("dataset"), config.pop("path"), expected.pop("dataset")) == ("npz", str(_SHIPPED), "mfeat")
    config.pop("seconds"), expected.pop("seconds")
    assert config == expected and set(npz) == set(mfeat) == {"accuracy", "config", "provenance"}
