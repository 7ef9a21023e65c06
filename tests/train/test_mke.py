"""MKE training: pseudo labels, losses, resumable training, experiments and the `mke` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mkefast.cli import main
from mkefast.data.mfeat import MultiViewSplit, MultiViewTensors
from mkefast.models.mke import MKEClassifier, Perturbation
from mkefast.train.common import seed_everything
from mkefast.train.mke import (
    MODELS,
    MKEConfig,
    TrainConfig,
    distillation_loss,
    pseudo_labels,
    run_mke,
    train_classifier,
)


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    # The models here are tiny; with a busy CPU, intra-op threads cost far more than the math.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class FixedLogits(nn.Module):
    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.logits


def test_pseudo_labels_hard_soft_threshold() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.1], [-3.0, 3.0]])
    teacher = FixedLogits(logits)
    hard = pseudo_labels(teacher, {}, soft=False)
    assert torch.equal(hard.targets, torch.tensor([0, 1, 1])) and bool(hard.mask.all()) and not hard.soft
    soft = pseudo_labels(teacher, {}, soft=True)
    assert soft.soft
    torch.testing.assert_close(soft.targets, logits.softmax(1))
    kept = pseudo_labels(teacher, {}, threshold=0.8)
    assert kept.mask.tolist() == [True, False, True]
    with pytest.raises(ValueError, match="threshold"):
        pseudo_labels(teacher, {}, threshold=0.999)
    with pytest.raises(ValueError, match="threshold"):
        pseudo_labels(teacher, {}, threshold=1.0)


def test_distillation_loss_variants() -> None:
    logits = torch.randn(6, 3)
    labels = torch.tensor([0, 2, 1, 1, 0, 2])
    torch.testing.assert_close(distillation_loss(logits, labels), F.cross_entropy(logits, labels))
    one_hot = F.one_hot(labels, 3).float()
    torch.testing.assert_close(distillation_loss(logits, one_hot), F.cross_entropy(logits, labels))
    probs = torch.rand(6, 3).softmax(1)
    expected = (probs * (probs.log() - logits.log_softmax(1))).sum(1).mean()
    torch.testing.assert_close(distillation_loss(logits, probs), expected)
    mask = torch.tensor([True, False, True, False, False, True])
    torch.testing.assert_close(distillation_loss(logits, labels, mask), F.cross_entropy(logits[mask], labels[mask]))
    torch.testing.assert_close(distillation_loss(logits, labels, double_softmax=True),
                               F.cross_entropy(logits.softmax(1), labels))
    with pytest.raises(ValueError, match="targets"):
        distillation_loss(logits, torch.rand(6, 4))


def _train(epochs: int, checkpoint: Path | None) -> MKEClassifier:
    seed_everything(7)
    model = MKEClassifier({"a": 3}, [16, 16], 2, perturbation=Perturbation(input_noise=1.0, hidden_noise=1.0,
                                                                           dropout=0.3))
    x, y = torch.randn(40, 3), torch.randint(0, 2, (40,))
    config = TrainConfig(epochs=epochs, lr=0.05, optimizer="adam", checkpoint_every=4)
    return train_classifier(model, {"a": x}, y, config=config, checkpoint=checkpoint, show_progress=False)


def test_resume_equals_uninterrupted_run(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    reference = _train(30, None)
    _train(13, path)  # "interrupted" after epoch 13 (last periodic save at 12, final save at 13)
    resumed = _train(30, path)
    for a, b in zip(reference.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.load(path, weights_only=False)["epoch"] == 30
    loaded = _train(30, path)  # a finished checkpoint is only loaded
    assert torch.equal(loaded.mlp.head.weight, reference.mlp.head.weight)


def _toy_split() -> MultiViewSplit:
    gen = torch.Generator().manual_seed(0)

    def part(n: int) -> MultiViewTensors:
        y = torch.randint(0, 2, (n,), generator=gen)
        a = y[:, None].float() + 0.8 * torch.randn(n, 1, generator=gen)
        b = y[:, None].float() + 0.2 * torch.randn(n, 2, generator=gen)
        return MultiViewTensors({"a": a, "b": b}, y)

    return MultiViewSplit(part(20), part(80), part(50))


def test_run_mke_and_checkpoint_dir(tmp_path: Path) -> None:
    config = MKEConfig(teacher_views=("a",), student_views=("a", "b"), teacher_hidden=(8,),
                       um_student_hidden=(8,), mm_student_hidden=(8,), rounds=2,
                       teacher_train=TrainConfig(epochs=20, lr=0.05, optimizer="adam"),
                       student_train=TrainConfig(epochs=20, lr=0.05, optimizer="adam", checkpoint_every=10))
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
    assert "MM student" in capsys.readouterr().out


def test_cli_mfeat_writes_json(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    out = tmp_path / "mfeat.json"
    code = main(["mke", "mfeat", "--teacher-view", "mor", "--student-views", "mor,zer",
                 "--labeled-fraction", "0.1", "--teacher-epochs", "3", "--student-epochs", "3", "--soft",
                 "--json", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    assert set(payload["accuracy"]) == set(MODELS) and payload["config"]["soft_labels"] is True
    assert main(["mke", "mfeat", "--teacher-view", "nope", "--student-views", "zer"]) == 2
