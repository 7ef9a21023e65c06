"""Robult model: latent shapes, predictions from every subset of modalities, late fusion, validation."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from mkefast.models.robult_model import LATE_FUSIONS, Robult, RobultOutput, late_fusion

pytestmark = pytest.mark.usefixtures("one_thread")


SIZES = {2: [5, 7], 3: [5, 7, 3]}


def _model(m: int, **kwargs: object) -> Robult:
    return Robult(SIZES[m], 4, hidden_size=12, shared_size=6, unique_size=5, encoder_hidden=(9,),
                  head_hidden=(8,), **kwargs)  # type: ignore[arg-type]


def _views(m: int, b: int = 10) -> list[torch.Tensor]:
    return [torch.randn(b, f) for f in SIZES[m]]


@pytest.mark.parametrize("m", [2, 3], ids=lambda m: f"M{m}")
def test_latent_shapes(m: int) -> None:
    out = _model(m)(_views(m))
    assert isinstance(out, RobultOutput)
    expected = {
        "hidden": (m, 10, 12), "fused_hidden": (10, 12), "shared": (m, 10, 6), "fused_shared": (10, 6),
        "unique": (m, 10, 5), "reconstruction": (m, 10, 12), "logits": (10, 4), "unimodal_logits": (m, 10, 4),
    }
    assert {k: tuple(v.shape) for k, v in out._asdict().items()} == expected


def test_latents_follow_the_pipeline() -> None:
    model = _model(2).eval()
    xs = _views(2)
    out = model(xs)
    h1 = model.encoders[1](xs[1])
    torch.testing.assert_close(out.hidden[1], h1)
    torch.testing.assert_close(out.shared[1], model.shared_head(h1))
    torch.testing.assert_close(out.fused_shared, model.shared_head(out.fused_hidden))
    torch.testing.assert_close(out.unique[1], model.unique_heads[1](h1))
    rec = model.reconstructors[1](torch.cat([out.unique[1], out.shared[1]], -1))
    torch.testing.assert_close(out.reconstruction[1], rec)
    torch.testing.assert_close(out.unimodal_logits[1], model.classifier(rec))
    torch.testing.assert_close(model.unimodal_logits(1, xs[1]), out.unimodal_logits[1])


@pytest.mark.parametrize("m", [2, 3], ids=lambda m: f"M{m}")
def test_predict_every_subset(m: int) -> None:
    model = _model(m).eval()
    xs = _views(m)
    out = model(xs)
    for r in range(1, m + 1):
        for subset in itertools.combinations(range(m), r):
            given = [x if i in subset else None for i, x in enumerate(xs)]
            probs = model.predict(given)
            assert probs.shape == (10, 4)
            torch.testing.assert_close(probs.sum(-1), torch.ones(10))
            if r == m:
                torch.testing.assert_close(probs, out.logits.softmax(-1))
            else:
                torch.testing.assert_close(probs, out.unimodal_logits[list(subset)].softmax(-1).mean(0))
            by_name = model.predict(xs, available=[model.modality_names[i] for i in subset])
            torch.testing.assert_close(by_name, probs)


def test_predict_with_mapping_and_names() -> None:
    model = _model(2, modality_names=["a", "b"]).eval()
    xs = _views(2)
    torch.testing.assert_close(model.predict({"b": xs[1]}), model.unimodal_logits(1, xs[1]).softmax(-1))
    torch.testing.assert_close(model.predict({"a": xs[0], "b": xs[1]}), model(xs).logits.softmax(-1))


def test_late_fusion_rules() -> None:
    logits = torch.tensor([[[3.0, 0.0, 0.0]], [[0.0, 2.0, 0.0]], [[0.0, 2.0, 0.0]]])  # [A=3, B=1, K=3]
    probs = logits.softmax(-1)
    torch.testing.assert_close(late_fusion(logits, "mean_prob"), probs.mean(0))
    torch.testing.assert_close(late_fusion(logits, "mean_logit"), logits.mean(0).softmax(-1))
    torch.testing.assert_close(late_fusion(logits, "max_conf"), probs[0])
    # Two weakly agreeing modalities outvote one confident one under soft voting, not under max_conf.
    assert late_fusion(logits, "mean_prob").argmax().item() == 1
    assert late_fusion(logits, "max_conf").argmax().item() == 0
    with pytest.raises(ValueError, match="fusion"):
        late_fusion(logits, "vote")


@pytest.mark.parametrize("fusion", LATE_FUSIONS)
def test_predict_fusion_options(fusion: str) -> None:
    model = _model(3).eval()
    xs = _views(3)
    probs = model.predict([xs[0], None, xs[2]], fusion=fusion)
    torch.testing.assert_close(probs, late_fusion(model(xs).unimodal_logits[[0, 2]], fusion))


def test_custom_encoders_and_regression() -> None:
    encoders = [nn.Sequential(nn.Flatten(), nn.Linear(6, 12)), nn.Linear(7, 12)]
    model = Robult([6, 7], 1, hidden_size=12, encoders=encoders, task="regression").eval()
    xs = [torch.randn(4, 2, 3), torch.randn(4, 7)]
    out = model(xs)
    assert out.hidden.shape == (2, 4, 12)
    torch.testing.assert_close(model.predict([xs[0], None]), out.unimodal_logits[0])
    torch.testing.assert_close(model.predict(xs), out.logits)


def test_argument_validation() -> None:
    with pytest.raises(ValueError, match="in_features"):
        Robult([5], 3)
    with pytest.raises(ValueError, match="num_outputs"):
        Robult([5, 6], 0)
    with pytest.raises(ValueError, match="task"):
        Robult([5, 6], 3, task="ranking")
    with pytest.raises(ValueError, match="modality_names"):
        Robult([5, 6], 3, modality_names=["a", "a"])
    with pytest.raises(ValueError, match="encoders"):
        Robult([5, 6], 3, encoders=[nn.Linear(5, 128)])
    model = _model(2)
    xs = _views(2)
    with pytest.raises(ValueError, match="views"):
        model([xs[0]])
    with pytest.raises(ValueError, match="views"):
        model([xs[0], None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"views\['1'\]"):
        model([xs[0], torch.randn(10, 3)])
    with pytest.raises(ValueError, match="available"):
        model.predict(xs, available=[])
    with pytest.raises(ValueError, match="available"):
        model.predict(xs, available=["z"])
    with pytest.raises(ValueError, match="not given"):
        model.predict([xs[0], None], available=[1])
    bad = Robult([5, 7], 4, hidden_size=12, encoders=[nn.Linear(5, 12), nn.Linear(7, 11)])
    with pytest.raises(ValueError, match=r"encoders\[1\]"):
        bad(xs)
