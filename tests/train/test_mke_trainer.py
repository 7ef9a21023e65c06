"""MKE's trainer: the losses, tensors and data loaders, mini-batches, devices and resumable checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from mkefast.data.labels import pseudo_labels
from mkefast.models.mke_classifier import MKEClassifier, Perturbation
from mkefast.train.common import CHECKPOINT_FORMAT, seed_everything
from mkefast.train.mke_trainer import (
    TrainConfig,
    distillation_loss,
    student_loss,
    train_classifier,
    unpack_mke_batch,
)

pytestmark = pytest.mark.usefixtures("one_thread")


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


def test_student_loss_is_the_perturbed_loss_in_training_mode() -> None:
    seed_everything(0)
    model = MKEClassifier({"a": 4}, [8], 3, perturbation=Perturbation(input_noise=1.0))
    views, labels = {"a": torch.randn(10, 4)}, torch.randint(0, 3, (10,))
    model.eval()
    torch.testing.assert_close(student_loss(model, views, labels), F.cross_entropy(model(views), labels), rtol=0,
                               atol=0)
    model.train()
    torch.manual_seed(1)
    perturbed = student_loss(model, views, labels)
    torch.manual_seed(1)
    torch.testing.assert_close(perturbed, F.cross_entropy(model(views), labels), rtol=0, atol=0)
    assert not torch.equal(perturbed, student_loss(model.eval(), views, labels))


def _data(n: int = 40) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=gen)
    return {"a": y[:, None].float() + 0.5 * torch.randn(n, 3, generator=gen)}, y


def _model(seed: int = 7, *, perturbed: bool = True) -> MKEClassifier:
    seed_everything(seed)
    perturbation = Perturbation(input_noise=1.0, hidden_noise=1.0, dropout=0.3) if perturbed else None
    return MKEClassifier({"a": 3}, [16, 16], 2, perturbation=perturbation)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


class Killed(Exception):
    """Stands for a SIGKILL in the middle of training."""


def _die_after(model: torch.nn.Module, forwards: int) -> torch.utils.hooks.RemovableHandle:
    count = [0]

    def hook(module: torch.nn.Module, args: object) -> None:
        count[0] += 1
        if count[0] > forwards:
            raise Killed

    return model.register_forward_pre_hook(hook)


def _train(epochs: int, checkpoint: Path | None = None, *, die_after: int | None = None,
           **config: object) -> MKEClassifier:
    views, y = _data()
    model = _model()
    if die_after is not None:
        _die_after(model, die_after)
    train = TrainConfig(epochs=epochs, lr=0.05, optimizer="adam", checkpoint_every=4, **config)  # type: ignore[arg-type]
    return train_classifier(model, views, y, config=train, checkpoint=checkpoint, show_progress=False)  # type: ignore[return-value]


@pytest.mark.parametrize("batch_size", [None, 16], ids=["full_batch", "mini_batch"])
def test_resume_equals_uninterrupted_run(tmp_path: Path, batch_size: int | None) -> None:
    path = tmp_path / "ckpt.pt"
    reference = _train(30, batch_size=batch_size)
    steps_per_epoch = 1 if batch_size is None else 3
    with pytest.raises(Killed):  # killed in epoch 14, after the save at epoch 12
        _train(30, path, die_after=13 * steps_per_epoch + 1, batch_size=batch_size)
    state = torch.load(path, weights_only=True)
    assert state["format"] == CHECKPOINT_FORMAT and state["epoch"] == 12
    assert _same_weights(_train(30, path, batch_size=batch_size), reference)
    assert torch.load(path, weights_only=True)["epoch"] == 30
    assert _same_weights(_train(30, path, batch_size=batch_size), reference)  # a finished run is only loaded


def test_a_checkpoint_is_not_reused_by_another_seed_or_config(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "ckpt.pt"
    views, y = _data()
    train = TrainConfig(epochs=6, lr=0.05, optimizer="adam")
    train_classifier(_model(1), views, y, config=train, checkpoint=path, show_progress=False)
    other_seed = train_classifier(_model(2), views, y, config=train, checkpoint=path, show_progress=False)
    assert "starting fresh" in capsys.readouterr().err
    assert _same_weights(other_seed, train_classifier(_model(2), views, y, config=train, show_progress=False))
    fewer = TrainConfig(epochs=3, lr=0.05, optimizer="adam")
    shorter = train_classifier(_model(2), views, y, config=fewer, checkpoint=path, show_progress=False)
    assert "epochs 6 -> 3" in capsys.readouterr().err
    assert _same_weights(shorter, train_classifier(_model(2), views, y, config=fewer, show_progress=False))


class _Rows(Dataset):  # type: ignore[type-arg]
    """Rows of the toy data as the default collate expects them: views by name, then the label or index."""

    def __init__(self, views: dict[str, torch.Tensor], second: torch.Tensor | None) -> None:
        self.views, self.second = views, second

    def __len__(self) -> int:
        return len(self.views["a"])

    def __getitem__(self, i: int) -> object:
        views = {k: v[i] for k, v in self.views.items()}
        return (views,) if self.second is None else (views, self.second[i])


def test_a_full_batch_loader_trains_exactly_like_the_tensors() -> None:
    views, y = _data()
    train = TrainConfig(epochs=12, lr=0.05, optimizer="adam")
    reference = train_classifier(_model(), views, y, config=train, show_progress=False)
    # A list of batches draws no random numbers, so even the perturbations' noise is the same...
    assert _same_weights(train_classifier(_model(), [(views, y)], config=train, show_progress=False), reference)
    # ...while a DataLoader draws a seed from torch's RNG every epoch: compare without perturbations.
    plain = train_classifier(_model(perturbed=False), views, y, config=train, show_progress=False)
    loader = DataLoader(_Rows(views, y), batch_size=len(y))
    assert _same_weights(train_classifier(_model(perturbed=False), loader, config=train, show_progress=False), plain)

    teacher = reference
    labels = pseudo_labels(teacher, views, threshold=0.6)
    assert not bool(labels.mask.all())
    student = train_classifier(_model(3, perturbed=False), views, labels, config=train, show_progress=False)
    by_index = train_classifier(_model(3, perturbed=False), DataLoader(_Rows(views, torch.arange(len(y))),
                                                                       batch_size=len(y)),
                                labels, config=train, show_progress=False)
    by_teacher = train_classifier(_model(3, perturbed=False), DataLoader(_Rows(views, None), batch_size=len(y)),
                                  teacher=teacher, threshold=0.6, config=train, show_progress=False)
    from_teacher_once = train_classifier(_model(3, perturbed=False), views, teacher=teacher, threshold=0.6,
                                         config=train, show_progress=False)
    assert _same_weights(by_index, student) and _same_weights(by_teacher, student)
    assert _same_weights(from_teacher_once, student)


def test_mini_batches_from_a_shuffling_loader_learn_and_resume_bitwise(tmp_path: Path) -> None:
    views, y = _data(96)
    train = TrainConfig(epochs=8, lr=0.02, optimizer="adam", checkpoint_every=3)

    def loader() -> DataLoader:  # type: ignore[type-arg]
        return DataLoader(_Rows(views, y), batch_size=16, shuffle=True,
                          generator=torch.Generator().manual_seed(0))

    def fit() -> MKEClassifier:
        model = _model()
        before = F.cross_entropy(model.eval()(views), y)
        train_classifier(model, loader(), config=train, show_progress=False)
        assert F.cross_entropy(model(views), y) < before
        return model

    reference = fit()
    path = tmp_path / "loader.pt"
    model = _model()
    _die_after(model, 4 * 6 + 2)  # 6 batches an epoch: killed in epoch 5, after the save at epoch 3
    with pytest.raises(Killed):
        train_classifier(model, loader(), config=train, checkpoint=path, show_progress=False)
    assert torch.load(path, weights_only=True)["epoch"] == 3
    assert _same_weights(train_classifier(_model(), loader(), config=train, checkpoint=path, show_progress=False),
                         reference)


def test_tensor_mini_batches_are_reproducible_and_differ_from_full_batch() -> None:
    a = _train(5, batch_size=8)
    assert _same_weights(a, _train(5, batch_size=8)) and not _same_weights(a, _train(5))


def test_unpack_mke_batch_forms_and_errors() -> None:
    views = {"a": torch.randn(4, 3)}
    got_views, targets, mask = unpack_mke_batch((views, torch.tensor([1, 0, 1, 1])))
    assert got_views is views and targets.tolist() == [1, 0, 1, 1] and mask is None
    full, keep = torch.tensor([5, 6, 7, 8, 9]), torch.tensor([True, False, True, True, True])
    _, targets, mask = unpack_mke_batch([views, torch.tensor([4, 1, 0, 2])], targets=full, mask=keep)
    assert targets.tolist() == [9, 6, 5, 7] and mask is not None and mask.tolist() == [True, False, True, True]
    with pytest.raises(ValueError, match="index"):
        unpack_mke_batch((views, torch.rand(4)), targets=full)
    with pytest.raises(ValueError, match=r"\(views, targets\)"):
        unpack_mke_batch((views,))
    with pytest.raises(ValueError, match="views"):
        unpack_mke_batch(([views["a"]], torch.zeros(4)))
    with pytest.raises(ValueError, match="teacher"):
        unpack_mke_batch((views,), targets=full, teacher=lambda v: v["a"])


def test_train_classifier_validation() -> None:
    views, y = _data()
    model = _model()
    train = TrainConfig(epochs=1)
    with pytest.raises(ValueError, match="targets"):
        train_classifier(model, views, config=train)
    with pytest.raises(ValueError, match="views"):
        train_classifier(model, views, y[:5], config=train)
    with pytest.raises(ValueError, match="mask"):
        train_classifier(model, views, y, mask=torch.ones(len(y)), config=train)
    with pytest.raises(ValueError, match="teacher"):
        train_classifier(model, views, y, teacher=model, config=train)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            train_classifier(model, views, y, config=TrainConfig(epochs=1, device="cuda"))


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"epochs": -1}, "epochs"), ({"lr": 0.0}, "lr"), ({"optimizer": "lbfgs"}, "optimizer"),
    ({"weight_decay": -1.0}, "weight_decay"), ({"batch_size": 0}, "batch_size"),
    ({"checkpoint_every": 0}, "checkpoint_every"), ({"device": "gpu"}, "device"),
])
def test_train_config_validation(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        TrainConfig(**{"epochs": 1, **kwargs})  # type: ignore[arg-type]
