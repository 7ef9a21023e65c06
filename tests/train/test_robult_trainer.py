"""Robult's trainer: loss routing, the per-batch loss, tensors and data loaders, resume, regression, teacher."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mkefast
from mkefast.data.labels import discretize, pseudo_labels_from_logits, quantile_edges, teacher_labels
from mkefast.models.robult_model import Robult
from mkefast.train.common import seed_everything
from mkefast.train.robult_trainer import (
    RobultConfig,
    RobultTrainer,
    pu_classes,
    regression_bin_edges,
    robult_loss,
    robult_losses,
    weighted_total,
)

pytestmark = pytest.mark.usefixtures("one_thread")


GROUPS = ("encoders", "fusion", "shared_head", "unique_heads", "reconstructors", "classifier")
# docs/math.md: L_rec trains only g^i and r^i; L_PU trains f^i, f^0, g^0; L_sup trains everything.
ALLOWED = {
    "sup": set(GROUPS),
    "pu_labeled": {"encoders", "fusion", "shared_head"},
    "pu_unlabeled": {"encoders", "fusion", "shared_head"},
    "rec": {"unique_heads", "reconstructors"},
}


def _tiny(m: int = 2, **kwargs: object) -> Robult:
    return Robult([5, 7, 3][:m], 3, hidden_size=10, shared_size=6, unique_size=4, encoder_hidden=(8,),
                  head_hidden=(8,), **kwargs)  # type: ignore[arg-type]


def _batch(m: int = 2, b: int = 24) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    xs = [torch.randn(b, f) for f in [5, 7, 3][:m]]
    labels = torch.arange(b) % 3
    labeled = torch.arange(b) < b // 2
    return xs, labels, labeled


def _grads(model: Robult) -> dict[str, list[torch.Tensor | None]]:
    return {g: [p.grad for p in getattr(model, g).parameters()] for g in GROUPS}


@pytest.mark.parametrize("m", [2, 3], ids=lambda m: f"M{m}")
def test_each_loss_reaches_only_its_parameters(m: int) -> None:
    model = _tiny(m)
    xs, labels, labeled = _batch(m)
    config = RobultConfig(backend="reference")
    out = model(xs)
    pseudo = pseudo_labels_from_logits(out.logits)
    losses = robult_losses(model, out, labels, labeled, pu_labels=torch.where(labeled, labels, -1),
                           pseudo_labels=pseudo, config=config)
    per_loss = {}
    for name, loss in losses._asdict().items():
        assert loss.item() > 0, name
        model.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        per_loss[name] = _grads(model)
        for group, grads in per_loss[name].items():
            if group in ALLOWED[name]:
                assert all(g is not None and g.abs().sum() > 0 for g in grads), (name, group)
            else:
                assert all(g is None or not g.any() for g in grads), (name, group)

    # The routed losses give their allowed groups the very gradients of the unrouted ones.
    model.zero_grad(set_to_none=True)
    mkefast.cosine_reconstruction_loss(out.reconstruction, out.hidden, backend="reference").backward(
        retain_graph=True)
    for group in ALLOWED["rec"]:
        for g, ref in zip(per_loss["rec"][group], _grads(model)[group], strict=True):
            torch.testing.assert_close(g, ref)

    # One backward of the sum gives the sum of the per-loss gradients.
    model.zero_grad(set_to_none=True)
    sum(losses).backward()
    for group in GROUPS:
        for i, p in enumerate(getattr(model, group).parameters()):
            expected = sum(grads[group][i] for grads in per_loss.values() if grads[group][i] is not None)
            torch.testing.assert_close(p.grad, expected)


def _fit(model: Robult, epochs: int, checkpoint: str | None, xs: list[torch.Tensor], labels: torch.Tensor,
         labeled: torch.Tensor) -> list[dict[str, float]]:
    config = RobultConfig(epochs=epochs, batch_size=8, backend="reference")
    return RobultTrainer(model, config, checkpoint=checkpoint, checkpoint_every=1,
                         show_progress=False).fit(xs, labels, labeled)


class Killed(Exception):
    """Stands for a SIGKILL in the middle of training."""


def test_checkpoint_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    xs, labels, labeled = _batch(b=30)
    seed_everything(1)
    straight = _tiny(dropout=0.2)
    history = _fit(straight, 4, None, xs, labels, labeled)

    path = str(tmp_path / "robult.pt")
    seed_everything(1)
    killed = _tiny(dropout=0.2)
    calls = [0]

    def die(module: torch.nn.Module, args: object) -> None:
        calls[0] += 1
        if calls[0] > 3 * 3 + 1:  # 3 batches of 8 an epoch: dies in epoch 4, after the save at epoch 3
            raise Killed

    killed.register_forward_pre_hook(die)
    with pytest.raises(Killed):
        _fit(killed, 4, path, xs, labels, labeled)
    assert torch.load(path, weights_only=True)["epoch"] == 3
    seed_everything(1)  # the same run started again: everything else must come from the checkpoint
    resumed = _tiny(dropout=0.2)
    resumed_history = _fit(resumed, 4, path, xs, labels, labeled)

    assert len(resumed_history) == 4
    assert resumed_history == history
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_another_seed_or_config_does_not_reuse_a_checkpoint(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    xs, labels, labeled = _batch(b=30)
    path = str(tmp_path / "robult.pt")
    seed_everything(1)
    _fit(_tiny(), 2, path, xs, labels, labeled)
    for seed, epochs in ((2, 2), (1, 3)):
        seed_everything(seed)
        resumed = _fit(_tiny(), epochs, path, xs, labels, labeled)
        assert "starting fresh" in capsys.readouterr().err
        seed_everything(seed)
        assert resumed == _fit(_tiny(), epochs, None, xs, labels, labeled)


def test_training_reduces_the_losses_and_validates() -> None:
    xs, labels, labeled = _batch(b=48)
    seed_everything(0)
    model = _tiny()
    config = RobultConfig(epochs=30, backend="reference", pseudo_threshold=0.5)
    history = RobultTrainer(model, config, show_progress=False).fit(xs, labels, labeled, val=(xs, labels),
                                                                    eval_every=10)
    assert history[-1]["sup"] < history[0]["sup"]
    assert history[-1]["rec"] < history[0]["rec"]
    assert [("val" in h) for h in history].count(True) == 3
    assert 0 <= history[-1]["val"] <= 100


def test_regression_mode_trains_with_l1_and_binned_pu_classes() -> None:
    seed_everything(0)
    xs, _, labeled = _batch(b=40)
    y = (xs[0][:, 0] + xs[1][:, 1]).unsqueeze(1)  # [N, 1]
    edges = quantile_edges(y[:, 0], 4)
    bins = discretize(y[:, 0], edges)
    assert edges.shape == (3,) and set(bins.tolist()) == {0, 1, 2, 3}
    model = Robult([5, 7], 1, hidden_size=10, encoder_hidden=(8,), task="regression")
    trainer = RobultTrainer(model, RobultConfig(epochs=40, num_bins=4, lr=1e-2, backend="reference"),
                            show_progress=False)
    got_edges = regression_bin_edges(y, labeled, 4)
    torch.testing.assert_close(got_edges, quantile_edges(y[labeled, 0], 4))
    pu = pu_classes(y, labeled, task="regression", bin_edges=got_edges)
    assert (pu[~labeled] == -1).all() and (pu[labeled] >= 0).all()
    with pytest.raises(ValueError, match="bin_edges"):
        pu_classes(y, labeled, task="regression")
    before = (model.predict(xs) - y).abs().mean()
    history = trainer.fit(xs, y, labeled, val=(xs, y), eval_every=40)
    assert history[-1]["val"] < before
    assert history[-1]["sup"] < history[0]["sup"]


def test_teacher_pseudo_labels_are_used() -> None:
    xs, labels, labeled = _batch(b=24)
    seen = []

    def teacher(views: list[torch.Tensor]) -> torch.Tensor:
        seen.append(len(views))
        return torch.nn.functional.one_hot(labels, 3).float() * 5  # confident logits

    trainer = RobultTrainer(_tiny(), RobultConfig(epochs=1, backend="reference", pseudo_threshold=0.5),
                            teacher=teacher, show_progress=False)
    assert teacher_labels(teacher, xs, len(labels), threshold=0.5).tolist() == labels.tolist()
    trainer.fit(xs, labels, labeled)
    assert seen == [2, 2]
    bad = RobultTrainer(_tiny(), teacher=lambda v: torch.zeros(3), show_progress=False)
    with pytest.raises(ValueError, match="teacher"):
        bad.fit(xs, labels, labeled)


def test_no_sup_ablation_trains_the_classifier_in_a_probe() -> None:
    xs, labels, labeled = _batch(b=24)
    model = _tiny()
    before = [p.clone() for p in model.classifier.parameters()]
    RobultTrainer(model, RobultConfig(epochs=2, sup_weight=0.0, probe_epochs=5, backend="reference"),
                  show_progress=False).fit(xs, labels, labeled)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.classifier.parameters(), strict=True))


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"batch_size": 1}, "batch_size"), ({"rec_weight": -1.0}, "rec_weight"), ({"pseudo_threshold": 1.0},
    "pseudo_threshold"), ({"backend": "gpu"}, "backend"), ({"device": "gpu"}, "device"), ({"lr": 0.0}, "lr"),
    ({"temperature": 0.0}, "temperature"), ({"rbf_sigma": -1.0}, "rbf_sigma"), ({"rbf_space": "x"}, "rbf_space"),
    ({"num_bins": 1}, "num_bins"), ({"probe_epochs": -1}, "probe_epochs"), ({"weight_decay": -1.0}, "weight_decay"),
])
def test_config_validation(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        RobultConfig(**kwargs)  # type: ignore[arg-type]


def test_fit_validation() -> None:
    xs, labels, labeled = _batch()
    trainer = RobultTrainer(_tiny(), RobultConfig(epochs=1), show_progress=False)
    with pytest.raises(ValueError, match="labeled"):
        trainer.fit(xs, labels, labeled.long())
    with pytest.raises(ValueError, match="views"):
        trainer.fit([xs[0]], labels, labeled)
    with pytest.raises(ValueError, match="views"):
        trainer.fit([xs[0], xs[1][:5]], labels, labeled)
    with pytest.raises(ValueError, match="labeled"):
        trainer.fit(xs, labels, torch.zeros_like(labeled))
    with pytest.raises(ValueError, match="targets"):
        trainer.fit(xs, labels)
    with pytest.raises(ValueError, match="batch"):
        trainer.fit([(xs, labels)])
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device"):
            RobultTrainer(_tiny(), RobultConfig(device="cuda"))




def test_robult_loss_is_what_the_trainer_computes() -> None:
    """A plain loop over robult_loss with AdamW gives the trainer's weights, bit for bit."""
    xs, labels, labeled = _batch(b=24)
    config = RobultConfig(epochs=3, batch_size=None, backend="reference")
    loader = [(xs, labels, labeled)]
    seed_everything(0)
    trained = _tiny()
    history = RobultTrainer(trained, config, show_progress=False).fit(loader)

    seed_everything(0)
    model = _tiny()
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    for epoch in range(config.epochs):
        step = robult_loss(model, xs, labels, labeled, config=config)
        optimizer.zero_grad(set_to_none=True)
        step.total.backward()
        optimizer.step()
        assert history[epoch]["total"] == float(step.total.detach())
        torch.testing.assert_close(step.total, weighted_total(step.losses, config), rtol=0, atol=0)
    for a, b in zip(trained.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


class _Rows(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """(views by name, target, labeled) rows, as a user's Dataset would give them."""

    def __init__(self, xs: list[torch.Tensor], labels: torch.Tensor, labeled: torch.Tensor) -> None:
        self.xs, self.labels, self.labeled = xs, labels, labeled

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        return {str(m): x[i] for m, x in enumerate(self.xs)}, self.labels[i], self.labeled[i]


def _loader(xs: list[torch.Tensor], labels: torch.Tensor, labeled: torch.Tensor) -> torch.utils.data.DataLoader:  # type: ignore[type-arg]
    return torch.utils.data.DataLoader(_Rows(xs, labels, labeled), batch_size=16, shuffle=True,
                                       generator=torch.Generator().manual_seed(0))


def test_mini_batches_from_a_data_loader_learn_validate_and_resume(tmp_path: Path) -> None:
    seed_everything(0)
    xs, labels, labeled = _batch(b=64)
    xs = [x + labels[:, None].float() for x in xs]  # a learnable signal
    val = _loader(xs, labels, labeled)
    val_batches = [(v, t) for v, t, _ in val]
    config = RobultConfig(epochs=6, backend="reference", lr=1e-2)
    seed_everything(1)
    model = _tiny()
    history = RobultTrainer(model, config, show_progress=False).fit(_loader(xs, labels, labeled), val=val_batches,
                                                                   eval_every=3)
    assert len(history) == 6 and history[-1]["sup"] < history[0]["sup"]
    assert history[-1]["val"] > history[2]["val"] - 1e-9 and 0 <= history[-1]["val"] <= 100

    path = str(tmp_path / "loader.pt")
    seed_everything(1)
    killed = _tiny()
    calls = [0]

    def die(module: torch.nn.Module, args: object) -> None:
        calls[0] += 1
        if calls[0] > 4 * 4 + 2:  # 4 batches an epoch: dies in epoch 5, after the save at epoch 4
            raise Killed

    killed.register_forward_pre_hook(die)
    with pytest.raises(Killed):
        RobultTrainer(killed, config, checkpoint=path, checkpoint_every=2, show_progress=False).fit(
            _loader(xs, labels, labeled), val=val_batches, eval_every=3)
    seed_everything(1)
    resumed = _tiny()
    again = RobultTrainer(resumed, config, checkpoint=path, checkpoint_every=2, show_progress=False).fit(
        _loader(xs, labels, labeled), val=val_batches, eval_every=3)
    assert again == history
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_regression_teacher_and_probe_from_a_loader() -> None:
    seed_everything(0)
    xs, labels, labeled = _batch(b=48)
    y = (xs[0][:, 0] + xs[1][:, 1]).unsqueeze(1)
    model = Robult([5, 7], 1, hidden_size=10, encoder_hidden=(8,), task="regression")
    trainer = RobultTrainer(model, RobultConfig(epochs=8, num_bins=4, lr=1e-2, backend="reference"),
                            show_progress=False)
    history = trainer.fit(_loader(xs, y, labeled), val=(xs, y), eval_every=8)
    assert history[-1]["sup"] < history[0]["sup"]

    seen: list[int] = []

    def teacher(views: list[torch.Tensor]) -> torch.Tensor:
        seen.append(len(views[0]))
        return torch.nn.functional.one_hot(labels[: len(views[0])], 3).float() * 5

    RobultTrainer(_tiny(), RobultConfig(epochs=1, backend="reference"), teacher=teacher,
                  show_progress=False).fit(_loader(xs, labels, labeled))
    assert seen == [16, 16, 16]

    probed = _tiny()
    before = [p.clone() for p in probed.classifier.parameters()]
    RobultTrainer(probed, RobultConfig(epochs=1, sup_weight=0.0, probe_epochs=3, backend="reference"),
                  show_progress=False).fit(_loader(xs, labels, labeled))
    assert any(not torch.equal(a, b) for a, b in zip(before, probed.classifier.parameters(), strict=True))
