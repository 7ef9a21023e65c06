"""The methods `mkefast robult` compares Robult with: GMC, Robult taught by MKE, self-training."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from mkefast.data.labels import teacher_labels
from mkefast.data.mfeat import MultiViewSplit, MultiViewTensors
from mkefast.experiments import robult_baselines
from mkefast.experiments.robult_baselines import (
    GMC_TEMPERATURE,
    GMCModel,
    gmc_loss,
    train_gmc,
    train_gmc_variant,
    train_robult_mke_variant,
    train_self_training,
    train_self_training_variant,
)
from mkefast.experiments.robult_paper import supervised_network
from mkefast.models.robult_model import Robult
from mkefast.train.common import seed_everything
from mkefast.train.robult_trainer import RobultConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _gmc_infonce(unimodal: torch.Tensor, joint: torch.Tensor, temperature: float) -> torch.Tensor:
    """GMC's `infonce` as its code computes it (exp of the 2B x 2B similarities, diagonal removed), float64."""
    total = torch.zeros(2 * joint.shape[0], dtype=torch.float64)
    for z in unimodal:
        both = torch.cat([joint, z]).double()
        sim = torch.exp(both @ both.T / temperature)
        keep = ~torch.eye(len(both), dtype=torch.bool)
        denominator = sim.masked_select(keep).view(len(both), -1).sum(-1)
        positive = torch.exp((joint.double() * z.double()).sum(-1) / temperature).repeat(2)
        total = total - torch.log(positive / denominator)
    return total.mean()


@pytest.mark.parametrize("m, b", [(2, 8), (3, 5)], ids=["pair", "triple"])
def test_gmc_loss_is_gmc_infonce(m: int, b: int) -> None:
    """Loss and gradients, through the normalization that GMC's encoders end with."""
    gen = torch.Generator().manual_seed(m)
    raw_unimodal = torch.randn(m, b, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    raw_joint = torch.randn(b, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    unimodal, joint = F.normalize(raw_unimodal, dim=-1), F.normalize(raw_joint, dim=-1)
    ours = gmc_loss(unimodal, joint, temperature=GMC_TEMPERATURE, backend="reference")
    truth = _gmc_infonce(unimodal, joint, GMC_TEMPERATURE)
    torch.testing.assert_close(ours, truth, rtol=1e-12, atol=1e-12)
    upstream = torch.autograd.grad(ours, (raw_unimodal, raw_joint), retain_graph=True)
    expected = torch.autograd.grad(truth, (raw_unimodal, raw_joint), retain_graph=True)
    for a, e in zip(upstream, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)
    fast = gmc_loss(unimodal.float(), joint.float(), temperature=GMC_TEMPERATURE)
    torch.testing.assert_close(fast.double(), truth, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unimodal, joint"):
        gmc_loss(unimodal, joint[:-1])


def _toy_split(classes: int = 3, views: tuple[int, ...] = (5, 4)) -> MultiViewSplit:
    gen = torch.Generator().manual_seed(0)
    centers = [torch.randn(classes, f, generator=gen) * 2 for f in views]

    def part(n: int) -> MultiViewTensors:
        y = torch.arange(n) % classes
        return MultiViewTensors({f"v{i}": c[y] + torch.randn(n, c.shape[1], generator=gen)
                                 for i, c in enumerate(centers)}, y)

    return MultiViewSplit(part(12), part(60), part(30))


def _backbone() -> Robult:
    return Robult([5, 4], 3, hidden_size=8, shared_size=6, unique_size=4, encoder_hidden=(8,), head_hidden=(8,),
                  modality_names=["v0", "v1"])


def test_gmc_model_shares_robults_parts_and_reads_any_subset() -> None:
    torch.manual_seed(0)
    backbone = _backbone()
    model = GMCModel(backbone, 3)
    assert model.encoders is backbone.encoders and model.fusion is backbone.fusion
    assert model.shared_head is backbone.shared_head
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith(("unique_heads", "reconstructors")) for n in names)
    x0, x1 = torch.randn(7, 5), torch.randn(7, 4)
    unimodal, joint = model.representations([x0, x1])
    assert unimodal.shape == (2, 7, 6) and joint.shape == (7, 6)
    torch.testing.assert_close(joint.norm(dim=-1), torch.ones(7))
    hidden = torch.cat([backbone.encoders[0](x0), backbone.encoders[1](x1)], -1)
    torch.testing.assert_close(joint, F.normalize(backbone.shared_head(backbone.fusion(hidden)), dim=-1))
    torch.testing.assert_close(model({"v0": x0, "v1": x1}), model.classify(joint))
    torch.testing.assert_close(model({"v1": x1}), model.classify(unimodal[1]))
    with pytest.raises(ValueError, match="views"):
        model({"v2": x0})


def test_train_gmc_fits_labeled_rows_and_uses_the_unlabeled_ones() -> None:
    split = _toy_split()
    views = {n: torch.cat([split.labeled.views[n], split.unlabeled.views[n]]) for n in ("v0", "v1")}
    targets = torch.cat([split.labeled.labels, split.unlabeled.labels])
    labeled = torch.arange(len(targets)) < 12
    config = RobultConfig(epochs=8, batch_size=24, lr=1e-2)
    weights = []
    for unlabeled_rows in (views, {n: torch.cat([v[:12], v[12:].flip(0)]) for n, v in views.items()}):
        seed_everything(0)
        model = train_gmc(GMCModel(_backbone(), 3), [unlabeled_rows["v0"], unlabeled_rows["v1"]], targets,
                          labeled, config)
        assert not model.training
        weights.append(model.encoders[0].hidden_layers[0][0].weight.detach().clone())
    assert not torch.equal(weights[0], weights[1])  # the unlabeled rows enter through the contrastive loss
    acc = train_gmc_variant(split, RobultConfig(epochs=15, batch_size=24, lr=1e-2), 3,
                            model_kwargs={"hidden_size": 8, "shared_size": 6, "encoder_hidden": (8,)})
    assert set(acc) == {"full", "v0", "v1"} and acc["full"] > 50.0


def test_robult_mke_takes_its_pseudo_labels_from_the_mke_student(monkeypatch: pytest.MonkeyPatch) -> None:
    split = _toy_split()
    captured: dict[str, Any] = {}
    original_run_mke = robult_baselines.run_mke
    original_trainer = robult_baselines.RobultTrainer

    def run_mke(split_: MultiViewSplit, config: Any, **kwargs: Any) -> Any:
        assert split_ is split and config.teacher_views == ("v1",) and config.student_views == ("v0", "v1")
        assert config.models == ("mm_student",) and config.perturbation.input_noise == 2.0
        config = replace(config, teacher_train=replace(config.teacher_train, epochs=5),
                         student_train=replace(config.student_train, epochs=5))
        result = original_run_mke(split_, config, **kwargs)
        captured["student"] = result.students["mm_student"]
        return result

    class Trainer(original_trainer):  # type: ignore[misc, valid-type]
        def __init__(self, model: Robult, config: RobultConfig, **kwargs: Any) -> None:
            captured["teacher"] = kwargs["teacher"]
            super().__init__(model, config, **kwargs)

    monkeypatch.setattr(robult_baselines, "run_mke", run_mke)
    monkeypatch.setattr(robult_baselines, "RobultTrainer", Trainer)
    acc = train_robult_mke_variant(split, RobultConfig(epochs=2, batch_size=24), 3, seed=0, teacher_view="v1",
                                   model_kwargs={"hidden_size": 8})
    assert set(acc) == {"full", "v0", "v1"}
    xs = [torch.cat([split.labeled.views[n], split.unlabeled.views[n]]) for n in ("v0", "v1")]
    with torch.no_grad():
        expected = captured["student"]({"v0": xs[0], "v1": xs[1]}).argmax(-1)
    assert torch.equal(teacher_labels(captured["teacher"], xs, len(xs[0])), expected)
    with pytest.raises(ValueError, match="teacher_view"):
        train_robult_mke_variant(split, RobultConfig(epochs=1), 3, seed=0, teacher_view="v7")


def test_self_training_learns_only_from_confident_unlabeled_rows() -> None:
    """Above every confidence the unlabeled rows cannot change the model; at threshold 0 they do."""
    split = _toy_split()
    config = RobultConfig(batch_size=16)
    weights = {}
    for name, threshold, unlabeled in (("a", 0.999999, split.unlabeled.views),
                                       ("b", 0.999999, {n: -v for n, v in split.unlabeled.views.items()}),
                                       ("c", 0.0, split.unlabeled.views)):
        seed_everything(0)
        net = supervised_network([5, 4], 3, encoder_hidden=(8,), hidden_size=8)
        train_self_training(net, [split.labeled.views["v0"], split.labeled.views["v1"]], split.labeled.labels,
                            [unlabeled["v0"], unlabeled["v1"]], config, 20, threshold=threshold)
        assert not net.training
        weights[name] = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert torch.equal(weights["a"], weights["b"]) and not torch.equal(weights["a"], weights["c"])
    with pytest.raises(ValueError, match="threshold"):
        train_self_training(net, [], split.labeled.labels, [], config, 1, threshold=1.0)
    acc = train_self_training_variant(split, RobultConfig(batch_size=16), 3, 30,
                                      model_kwargs={"hidden_size": 8, "encoder_hidden": (8,)})
    assert set(acc) == {"full", "v0", "v1"}
