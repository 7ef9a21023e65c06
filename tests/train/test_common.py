"""What the trainers share: checkpoints that cannot lie, accuracy, batches, devices."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from mkefast.data.mfeat import MultiViewTensors
from mkefast.train.common import (
    CHECKPOINT_FORMAT,
    Checkpointer,
    TensorBatches,
    accuracy,
    check_device,
    loader_generators,
    resolve_device,
    run_identity,
    to_device,
)


def _state(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_checkpoint_round_trip_restores_everything_and_loads_weights_only(tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    model, optimizer = _state(0)
    generator = torch.Generator().manual_seed(5)
    torch.randn(3, generator=generator)
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    Checkpointer(path, config={"a": 1}).maybe_save(7, model, optimizer, [generator], {"history": [{"x": 1.5}]},
                                                   force=True)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(())),
                float(torch.rand((), generator=generator)))
    state = torch.load(path, weights_only=True)
    assert state["format"] == CHECKPOINT_FORMAT and state["epoch"] == 7

    other, other_opt = _state(1)
    other_generator = torch.Generator().manual_seed(0)
    epoch, extra = Checkpointer(path, config={"a": 1}).restore(other, other_opt, [other_generator])
    assert epoch == 7 and extra == {"history": [{"x": 1.5}]}
    for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert other_opt.state_dict()["state"][0]["exp_avg"].equal(optimizer.state_dict()["state"][0]["exp_avg"])
    got = (random.random(), float(np.random.rand()), float(torch.rand(())),
           float(torch.rand((), generator=other_generator)))
    assert got == expected


def test_another_configuration_starts_fresh_with_a_notice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "run.pt"
    model, optimizer = _state(0)
    Checkpointer(path, config={"train": {"epochs": 300}, "fraction": 0.05}).maybe_save(
        1, model, optimizer, force=True)
    fresh, fresh_opt = _state(1)
    before = [p.clone() for p in fresh.parameters()]
    epoch, extra = Checkpointer(path, config={"train": {"epochs": 100}, "fraction": 0.05}).restore(fresh, fresh_opt)
    assert (epoch, extra) == (0, {})
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters(), strict=True))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "train.epochs 300 -> 100" in err and "starting fresh" in err


def test_no_checkpoint_or_no_path_restores_nothing(tmp_path: Path) -> None:
    model, optimizer = _state(0)
    assert Checkpointer(tmp_path / "absent.pt").restore(model, optimizer) == (0, {})
    assert Checkpointer(None).restore(model, optimizer) == (0, {})
    Checkpointer(None).maybe_save(1, model, optimizer, force=True)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("content", ["empty", "truncated", "foreign_pickle", "plain_state_dict", "text"])
def test_damaged_or_foreign_checkpoints_give_one_line_errors_with_the_path(tmp_path: Path, content: str) -> None:
    path = tmp_path / "run.pt"
    model, optimizer = _state(0)
    if content == "empty":
        path.write_bytes(b"")
    elif content == "truncated":
        Checkpointer(path).maybe_save(1, model, optimizer, force=True)
        path.write_bytes(path.read_bytes()[:200])
    elif content == "foreign_pickle":
        torch.save({"model": nn.Linear(2, 2)}, path)  # a whole module: weights_only refuses to unpickle it
    elif content == "plain_state_dict":
        torch.save(model.state_dict(), path)
    else:
        path.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint") as info:
        Checkpointer(path).restore(model, optimizer)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_checkpointer_validates_its_period() -> None:
    with pytest.raises(ValueError, match="every"):
        Checkpointer(None, every=0)


def test_run_identity_tells_seeds_and_architectures_apart() -> None:
    torch.manual_seed(0)
    a = run_identity(nn.Linear(3, 2))
    torch.manual_seed(0)
    assert run_identity(nn.Linear(3, 2)) == a
    torch.manual_seed(1)
    b = run_identity(nn.Linear(3, 2))
    assert b["initial_weights"] != a["initial_weights"] and b["rng"] != a["rng"]
    torch.manual_seed(0)
    assert run_identity(nn.Sequential(nn.Linear(3, 2)))["architecture"] != a["architecture"]


def test_accuracy_reads_every_form_and_restores_the_mode() -> None:
    scores = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0], [1.0, 0.0], [1.0, 2.0]])
    labels = torch.tensor([0, 1, 1, 1, 1, 1])

    class Fixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(()))

        def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
            assert not self.training
            return scores[views["i"]]

    model = Fixed().train()
    views = {"i": torch.arange(6)}
    assert accuracy(model, MultiViewTensors(views, labels)) == 4 / 6 * 100.0
    assert model.training
    assert accuracy(model, (views, labels)) == 4 / 6 * 100.0
    batches = [({"i": torch.arange(0, 4)}, labels[:4]), ({"i": torch.arange(4, 6)}, labels[4:])]
    assert accuracy(model, batches) == 4 / 6 * 100.0
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.arange(6), labels), batch_size=4)
    assert accuracy(lambda i: scores[i], loader) == 4 / 6 * 100.0
    with pytest.raises(ValueError, match="row"):
        accuracy(model, [])


def test_tensor_batches_cover_every_row_once_per_epoch() -> None:
    torch.manual_seed(0)
    batches = TensorBatches(10, 4, drop_last=False)
    epoch = list(batches)
    assert [len(b) for b in epoch] == [4, 4, 2] and sorted(torch.cat(epoch).tolist()) == list(range(10))
    assert [len(b) for b in TensorBatches(10, 4, drop_last=True)] == [4, 4]
    assert [len(b) for b in TensorBatches(3, 8, drop_last=True)] == [3]
    assert not torch.equal(torch.cat(list(batches)), torch.cat(epoch))  # a new order every epoch


def test_loader_generators_finds_the_shuffling_generator() -> None:
    generator = torch.Generator()
    data = torch.utils.data.TensorDataset(torch.arange(5))
    assert loader_generators(torch.utils.data.DataLoader(data, shuffle=True, generator=generator)) == [generator]
    assert loader_generators(torch.utils.data.DataLoader(data)) == []
    assert loader_generators([1, 2]) == []


def test_devices_are_validated() -> None:
    assert check_device(None) is None and check_device("cuda:1") == "cuda:1"
    with pytest.raises(ValueError, match="device"):
        check_device("gpu")
    with pytest.raises(TypeError, match="device"):
        check_device(0)
    model = nn.Linear(2, 2)
    assert resolve_device(None, model) == torch.device("cpu")
    assert resolve_device(None, nn.Identity()) == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            resolve_device("cuda", model)
    moved = to_device({"a": [torch.ones(1), (torch.zeros(1), 3)]}, torch.device("cpu"))
    assert isinstance(moved["a"][1], tuple) and moved["a"][1][1] == 3
