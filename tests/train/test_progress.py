"""Progress where people watch: a bar on a terminal, lines in a log (stderr not a terminal), nothing when off; one
mechanism (`mkefast.train.common.progress`) for every trainer."""

from __future__ import annotations

import io
import itertools
import re
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mkefast.train import common
from mkefast.train.common import Progress, progress

LINE = re.compile(r"^mkefast: (?P<desc>.+?): (?P<unit>\w+) (?P<count>\d+)(?:/(?P<total>\d+))?, (?P<rest>.*) s$")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _lines(err: str) -> list[re.Match[str]]:
    matches = [LINE.match(line) for line in err.splitlines()]
    assert all(matches), err
    return [m for m in matches if m is not None]


def test_a_log_gets_a_line_at_the_end_of_a_short_loop(capsys: pytest.CaptureFixture[str]) -> None:
    assert not sys.stderr.isatty()
    bar = progress(range(5), desc="seed 0 teacher", unit="epoch")
    assert bar.mode == "lines"
    for i in bar:
        bar.set_stats(loss=torch.tensor(1.0 / (i + 1)), acc=50.0 + i)
    (line,) = _lines(capsys.readouterr().err)
    assert line["desc"] == "seed 0 teacher" and line["unit"] == "epoch"
    assert (line["count"], line["total"]) == ("5", "5")
    assert line["rest"].startswith("loss 0.2, acc 54, ")


def test_a_log_gets_a_line_every_few_seconds(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    ticks = iter(range(1000))
    monkeypatch.setattr(common, "time", SimpleNamespace(monotonic=lambda: float(next(ticks))))
    monkeypatch.setattr(common, "PROGRESS_LINE_SECONDS", 3.0)
    bar = progress(iter(range(10)), desc="robult", unit="epoch")
    assert list(bar) == list(range(10))
    lines = _lines(capsys.readouterr().err)
    counts = [int(m["count"]) for m in lines]
    # The clock ticks once per step (and when a line is written): a line at least every 3 steps, one at the end.
    assert counts[0] == 3 and counts[-1] == 10 and len(counts) >= 4
    assert all(0 < b - a <= 3 for a, b in itertools.pairwise(counts))
    assert all(m["total"] is None for m in lines)  # an iterator has no length


def test_a_terminal_gets_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    bar = progress(range(3), desc="teacher", unit="epoch", leave=True)
    assert bar.mode == "bar"
    for _ in bar:
        bar.set_stats(loss=0.5)
    out = terminal.getvalue()
    assert "teacher" in out and "3/3" in out and "\r" in out and "mkefast:" not in out


@pytest.mark.parametrize("enabled,env", [(False, None), (None, "0")], ids=["disabled", "MKEFAST_PROGRESS=0"])
def test_off_prints_nothing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                            enabled: bool | None, env: str | None) -> None:
    if env is not None:
        monkeypatch.setenv("MKEFAST_PROGRESS", env)
    bar = progress(range(4), desc="x", enabled=enabled)
    bar.set_stats(loss=1.0)
    assert list(bar) == [0, 1, 2, 3] and bar.mode == "off"
    assert capsys.readouterr().err == ""


def test_forced_on_in_a_log_prints_lines_not_a_bar(capsys: pytest.CaptureFixture[str]) -> None:
    list(progress(range(2), desc="x", enabled=True))
    assert len(_lines(capsys.readouterr().err)) == 1


def test_an_empty_loop_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """A finished run that resumes from its checkpoint trains no epoch, and says nothing about it."""
    assert list(progress(range(0), desc="x")) == []
    assert capsys.readouterr().err == ""


def test_bad_mode() -> None:
    with pytest.raises(ValueError, match="mode"):
        Progress(range(2), desc="x", mode="fancy")


def test_the_trainers_report_epochs_and_losses_in_a_log(capsys: pytest.CaptureFixture[str]) -> None:
    """Both trainers and the supervised baseline use the one mechanism: a line per stage with its losses."""
    pytest.importorskip("sklearn")
    from mkefast.data.mfeat import MultiViewData
    from mkefast.experiments.robult_paper import run_experiment
    from mkefast.models.mke_classifier import MKEClassifier
    from mkefast.train.mke_trainer import TrainConfig, train_classifier
    from mkefast.train.robult_trainer import RobultConfig

    rng = np.random.default_rng(0)
    labels = np.arange(200) % 2
    data = MultiViewData({"a": (rng.normal(size=(200, 3)) + labels[:, None]).astype(np.float32),
                          "b": rng.normal(size=(200, 2)).astype(np.float32)}, labels)
    model = MKEClassifier({"a": 3}, (8,), 2)
    train_classifier(model, {"a": torch.from_numpy(data.views["a"])}, torch.from_numpy(labels),
                     config=TrainConfig(epochs=4), desc="seed 0 teacher")
    run_experiment(data, labeled_fraction=0.2, seed=0, config=RobultConfig(epochs=2, batch_size=64),
                   variants=("robult", "supervised"))
    lines = {m["desc"]: m for m in _lines(capsys.readouterr().err)}
    assert set(lines) == {"seed 0 teacher", "robult", "supervised full", "supervised a", "supervised b"}
    assert lines["seed 0 teacher"]["count"] == "4" and lines["seed 0 teacher"]["rest"].startswith("loss ")
    assert lines["robult"]["unit"] == "epoch" and lines["robult"]["count"] == lines["robult"]["total"] == "2"
    assert re.match(r"sup \S+, pu_lb \S+, pu_ulb \S+, rec \S+, total \S+, ", lines["robult"]["rest"])
    assert lines["supervised full"]["rest"].startswith("loss ")
