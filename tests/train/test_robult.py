"""Robult trainer: loss routing, checkpoint resume, helpers, regression, teacher, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import mkefast
from mkefast.cli import main
from mkefast.models.robult import Robult
from mkefast.train.common import seed_everything
from mkefast.train.robult import (
    RobultConfig,
    RobultTrainer,
    discretize,
    multilabel_to_class_ids,
    pseudo_labels_from_logits,
    quantile_edges,
    robult_losses,
)


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These tiny models run far faster on one thread, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


GROUPS = ("encoders", "fusion", "shared_head", "unique_heads", "reconstructors", "classifier")
# SPEC §4: L_rec trains only g^i and r^i; L_PU trains f^i, f^0, g^0; L_sup trains everything.
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


def test_checkpoint_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    xs, labels, labeled = _batch(b=30)
    seed_everything(1)
    straight = _tiny(dropout=0.2)
    history = _fit(straight, 4, None, xs, labels, labeled)

    seed_everything(1)
    path = str(tmp_path / "robult.pt")
    _fit(_tiny(dropout=0.2), 2, path, xs, labels, labeled)
    seed_everything(2)  # a different init and RNG state: everything must come from the checkpoint
    resumed = _tiny(dropout=0.2)
    resumed_history = _fit(resumed, 4, path, xs, labels, labeled)

    assert len(resumed_history) == 4
    assert resumed_history == history
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


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


def test_multilabel_to_class_ids() -> None:
    sets = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 0, 1], [0, 0, 0]])
    ids, vocab = multilabel_to_class_ids(sets)
    assert ids[0] == ids[2] and len({ids[0].item(), ids[1].item(), ids[3].item()}) == 3
    torch.testing.assert_close(vocab[ids], sets.bool())
    other, _ = multilabel_to_class_ids(torch.tensor([[0, 1, 0], [1, 1, 1]], dtype=torch.bool), vocab)
    assert other.tolist() == [ids[1].item(), -1]
    with pytest.raises(TypeError, match="label_sets"):
        multilabel_to_class_ids(torch.rand(2, 3))
    with pytest.raises(ValueError, match="label_sets"):
        multilabel_to_class_ids(torch.ones(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="vocabulary"):
        multilabel_to_class_ids(sets, vocab[:, :2])


def test_pseudo_labels_threshold() -> None:
    logits = torch.tensor([[5.0, 0.0], [0.1, 0.0], [0.0, 3.0]])
    assert pseudo_labels_from_logits(logits).tolist() == [0, 0, 1]
    assert pseudo_labels_from_logits(logits, 0.9).tolist() == [0, -1, 1]


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
    pu, got_edges = trainer._pu_labels(y, labeled)
    torch.testing.assert_close(got_edges, quantile_edges(y[labeled, 0], 4))
    assert (pu[~labeled] == -1).all() and (pu[labeled] >= 0).all()
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
    assert trainer._teacher_labels(xs).tolist() == labels.tolist()
    trainer.fit(xs, labels, labeled)
    assert seen == [2, 2]
    bad = RobultTrainer(_tiny(), teacher=lambda v: torch.zeros(3), show_progress=False)
    with pytest.raises(ValueError, match="teacher"):
        bad._teacher_labels(xs)


def test_no_sup_ablation_trains_the_classifier_in_a_probe() -> None:
    xs, labels, labeled = _batch(b=24)
    model = _tiny()
    before = [p.clone() for p in model.classifier.parameters()]
    RobultTrainer(model, RobultConfig(epochs=2, sup_weight=0.0, probe_epochs=5, backend="reference"),
                  show_progress=False).fit(xs, labels, labeled)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.classifier.parameters(), strict=True))


def test_config_and_fit_validation() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        RobultConfig(batch_size=1)
    with pytest.raises(ValueError, match="rec_weight"):
        RobultConfig(rec_weight=-1.0)
    with pytest.raises(ValueError, match="pseudo_threshold"):
        RobultConfig(pseudo_threshold=1.0)
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


def test_cli_mfeat_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "robult.json"
    rc = main(["robult", "mfeat", "--views", "fou,mor", "--labeled-fraction", "0.1", "--seed", "3",
               "--epochs", "1", "--batch-size", "256", "--json", str(path)])
    assert rc == 0
    result = json.loads(path.read_text())
    variants = {"robult", "supervised", "robult_no_rec", "robult_no_lb", "robult_no_ulb", "robult_no_sup"}
    assert set(result["accuracy"]) == variants
    for acc in result["accuracy"].values():
        assert set(acc) == {"full", "fou", "mor"}
        assert all(0.0 <= a <= 100.0 for a in acc.values())
    assert result["config"]["views"] == ["fou", "mor"] and result["config"]["seed"] == 3
    assert "robult_no_sup" in capsys.readouterr().out


def test_cli_synthetic_writes_json(tmp_path: Path) -> None:
    path = tmp_path / "synthetic.json"
    rc = main(["robult", "synthetic", "--samples", "200", "--labeled-fraction", "0.5", "--epochs", "1",
               "--variants", "robult,supervised", "--json", str(path)])
    assert rc == 0
    result = json.loads(path.read_text())
    assert set(result["accuracy"]) == {"robult", "supervised"}
    assert set(result["accuracy"]["robult"]) == {"full", "m0", "m1"}


def test_cli_argument_validation(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["robult", "mfeat", "--views", "fou", "--epochs", "1"]) == 2
    assert "--views" in capsys.readouterr().err
    assert main(["robult", "mfeat", "--views", "fou,xyz", "--epochs", "1"]) == 2
    assert "views" in capsys.readouterr().err
    assert main(["robult", "mfeat", "--views", "fou,kar", "--variants", "robult,fancy", "--epochs", "1"]) == 2
    assert "variants" in capsys.readouterr().err
    for bad in (["--labeled-fraction", "0"], ["--labeled-fraction", "1.5"], ["--epochs", "0"]):
        with pytest.raises(SystemExit):
            main(["robult", "mfeat", "--views", "fou,kar", *bad])
