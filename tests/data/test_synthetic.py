"""Synthetic multi-view data: shapes, determinism, and the redundant / unique / synergistic structure."""

from __future__ import annotations

import numpy as np
import pytest

from mkefast.data.synthetic import make_synthetic, synthetic_ceiling


def _bits(labels: np.ndarray, total: int) -> np.ndarray:
    return (labels[:, None] >> np.arange(total - 1, -1, -1)) & 1  # [N, total], most significant first


def _signal_readout(x: np.ndarray, bit: np.ndarray) -> float:
    """Accuracy of the best linear readout of one bit from a view (least squares, on the same rows)."""
    design = np.c_[x, np.ones(len(x))]
    coef, *_ = np.linalg.lstsq(design, 2.0 * bit - 1.0, rcond=None)
    return float(((design @ coef > 0) == (bit == 1)).mean())


@pytest.mark.parametrize("m", [2, 3], ids=lambda m: f"M{m}")
def test_shapes_classes_and_determinism(m: int) -> None:
    data = make_synthetic(300, num_modalities=m, redundant_bits=1, unique_bits=1, synergistic_bits=1,
                          features=8, seed=3)
    assert list(data.views) == [f"m{i}" for i in range(m)]
    assert all(x.shape == (300, 8) and x.dtype == np.float32 for x in data.views.values())
    assert data.labels.dtype == np.int64 and data.labels.min() >= 0 and data.labels.max() < 2 ** (m + 2)
    again = make_synthetic(300, num_modalities=m, redundant_bits=1, unique_bits=1, synergistic_bits=1,
                           features=8, seed=3)
    np.testing.assert_array_equal(again.labels, data.labels)
    other = make_synthetic(300, num_modalities=m, redundant_bits=1, unique_bits=1, synergistic_bits=1,
                           features=8, seed=4)
    assert not np.array_equal(other.labels, data.labels)


def test_each_bit_is_where_it_should_be() -> None:
    # Bits: redundant r, unique u0, unique u1, synergistic s = b0 xor b1.
    data = make_synthetic(2000, redundant_bits=1, unique_bits=1, synergistic_bits=1, features=6, noise=0.1,
                          seed=0)
    bits = _bits(data.labels, 4)
    x0, x1 = data.views["m0"], data.views["m1"]
    assert _signal_readout(x0, bits[:, 0]) > 0.99 and _signal_readout(x1, bits[:, 0]) > 0.99  # redundant
    assert _signal_readout(x0, bits[:, 1]) > 0.99 and _signal_readout(x1, bits[:, 1]) < 0.6  # unique to m0
    assert _signal_readout(x1, bits[:, 2]) > 0.99 and _signal_readout(x0, bits[:, 2]) < 0.6  # unique to m1
    # Synergy: neither view alone, nor a linear readout of both, finds s; a bilinear one of both does.
    assert max(_signal_readout(x0, bits[:, 3]), _signal_readout(x1, bits[:, 3]),
               _signal_readout(np.c_[x0, x1], bits[:, 3])) < 0.6
    bilinear = (x0[:, :, None] * x1[:, None, :]).reshape(len(x0), -1)
    assert _signal_readout(bilinear, bits[:, 3]) > 0.95


def test_ceiling() -> None:
    assert synthetic_ceiling(2, [0, 1], unique_bits=1, synergistic_bits=1) == 1.0
    assert synthetic_ceiling(2, [0], unique_bits=1, synergistic_bits=1) == 0.25
    assert synthetic_ceiling(3, [2], unique_bits=2, synergistic_bits=0) == 2.0 ** -4
    with pytest.raises(ValueError, match="available"):
        synthetic_ceiling(2, [])
    with pytest.raises(ValueError, match="available"):
        synthetic_ceiling(2, [2])


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"num_modalities": 1}, "num_modalities"),
        ({"unique_bits": -1}, "unique_bits"),
        ({"redundant_bits": 0, "unique_bits": 0}, "label bits"),
        ({"features": 2}, "features"),
        ({"noise": -0.1}, "noise"),
    ],
)
def test_argument_validation(kwargs: dict[str, int | float], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        make_synthetic(10, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_samples"):
        make_synthetic(0)
