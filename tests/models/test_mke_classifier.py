"""MKE perturbations: T1 scales with mean|x| per view, T2 hits only the first hidden layer, T3 only trains."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from mkefast.models.mke_classifier import MKEClassifier, Perturbation, scaled_gaussian_noise


class Recorder(nn.Module):
    """An identity encoder that keeps what it saw."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        self.seen = x
        return x


@pytest.mark.parametrize("strength", [0.5, 2.0])
def test_scaled_noise_std(strength: float) -> None:
    x = torch.randn(400, 50) * 3 + 1
    noise = scaled_gaussian_noise(x, strength) - x
    assert float(noise.std()) == pytest.approx(strength * float(x.abs().mean()), rel=0.03)
    assert torch.equal(scaled_gaussian_noise(x, 0.0), x)


def test_input_noise_per_view_in_train_mode_only() -> None:
    recorders = {"a": Recorder(), "b": Recorder()}
    model = MKEClassifier({"a": 30, "b": 30}, [8], 3, perturbation=Perturbation(input_noise=1.5),
                          encoders=recorders)
    views = {"a": torch.randn(500, 30), "b": torch.randn(500, 30) * 10}
    model.train()
    model(views)
    for name, recorder in recorders.items():
        assert recorder.seen is not None
        noise = recorder.seen - views[name]
        assert float(noise.std()) == pytest.approx(1.5 * float(views[name].abs().mean()), rel=0.05)
    model.eval()
    model(views)
    for name, recorder in recorders.items():
        assert torch.equal(recorder.seen, views[name])


def test_hidden_noise_on_first_hidden_layer_only() -> None:
    torch.manual_seed(1)
    model = MKEClassifier({"a": 4}, [64, 32], 2, perturbation=Perturbation(hidden_noise=5.0)).train()
    seen: dict[str, Tensor] = {}
    model.mlp.hidden_layers[0].register_forward_hook(lambda m, i, o: seen.__setitem__("h1", o.detach()))
    model.mlp.hidden_layers[1].register_forward_pre_hook(lambda m, i: seen.__setitem__("in2", i[0].detach()))
    model.mlp.hidden_layers[1].register_forward_hook(lambda m, i, o: seen.__setitem__("h2", o.detach()))
    model.mlp.head.register_forward_pre_hook(lambda m, i: seen.__setitem__("in_head", i[0].detach()))
    x = torch.randn(300, 4)
    model({"a": x})
    noise = seen["in2"] - seen["h1"]
    assert float(noise.std()) == pytest.approx(5.0 * float(seen["h1"].abs().mean()), rel=0.05)
    assert torch.equal(seen["in_head"], seen["h2"])  # nothing added after the second layer
    model.eval()
    model({"a": x})
    assert torch.equal(seen["in2"], seen["h1"])


def test_dropout_only_in_train_mode() -> None:
    model = MKEClassifier({"a": 6}, [32, 32], 2, perturbation=Perturbation(dropout=0.4))
    assert [block[2].p for block in model.mlp.hidden_layers] == [0.4, 0.4]
    x = {"a": torch.randn(64, 6)}
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


def test_no_perturbation_is_deterministic_in_train_mode() -> None:
    model = MKEClassifier({"a": 3, "b": 2}, [8], 4).train()
    x = {"a": torch.randn(5, 3), "b": torch.randn(5, 2)}
    assert torch.equal(model(x), model(x))
    assert model(x).shape == (5, 4) and model.num_classes == 4


def test_perturbation_validation_and_names() -> None:
    assert Perturbation.of("input", 2.0) == Perturbation(input_noise=2.0)
    assert Perturbation.of("hidden", 5.0) == Perturbation(hidden_noise=5.0)
    assert Perturbation.of("dropout", 0.4) == Perturbation(dropout=0.4)
    assert Perturbation.of("none", 3.0) == Perturbation()
    assert Perturbation(input_noise=2.0, dropout=0.5).describe() == "v0=2, r0=0.5"
    with pytest.raises(ValueError, match="kind"):
        Perturbation.of("gauss", 1.0)
    with pytest.raises(ValueError, match="input_noise"):
        Perturbation(input_noise=-1.0)
    with pytest.raises(ValueError, match="dropout"):
        Perturbation(dropout=1.0)


def test_classifier_validation() -> None:
    with pytest.raises(ValueError, match="view_features"):
        MKEClassifier({}, [4], 2)
    with pytest.raises(ValueError, match="encoders"):
        MKEClassifier({"a": 2}, [4], 2, encoders={"b": nn.Identity()})
    with pytest.raises(ValueError, match="hidden"):
        MKEClassifier({"a": 2}, [], 2, perturbation=Perturbation(hidden_noise=1.0))
    with pytest.raises(ValueError, match="missing"):
        MKEClassifier({"a": 2, "b": 1}, [4], 2)({"a": torch.randn(3, 2)})


def test_repr_names_the_views_and_perturbation() -> None:
    model = MKEClassifier({"a": 2, "b": 3}, [4], 2, perturbation=Perturbation(input_noise=1.0, dropout=0.5))
    assert "views=['a', 'b'], perturbation=v0=1, r0=0.5" in repr(model)
