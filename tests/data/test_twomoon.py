"""TwoMoon follows the MKE paper's protocol: sizes, determinism, standardization, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mkefast.data import TWOMOON_VIEWS, load_twomoon, split_twomoon, twomoon_seeds

pytest.importorskip("sklearn")


def test_split_sizes_and_views() -> None:
    split = split_twomoon()
    assert (len(split.labeled), len(split.unlabeled), len(split.test)) == (30, 270, 200)
    for part in (split.labeled, split.unlabeled, split.test):
        assert tuple(part.views) == TWOMOON_VIEWS
        for x in part.views.values():
            assert x.dtype == torch.float32 and x.shape == (len(part), 1)
        assert part.labels.dtype == torch.int64
        assert set(part.labels.tolist()) <= {0, 1}


def test_split_is_deterministic_and_matches_sklearn() -> None:
    from sklearn.datasets import make_moons
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    a, b = split_twomoon(), split_twomoon()
    for part in ("labeled", "unlabeled", "test"):
        assert torch.equal(getattr(a, part).labels, getattr(b, part).labels)
        assert torch.equal(getattr(a, part).views["xa"], getattr(b, part).views["xa"])
    x, y = make_moons(500, noise=0.1, random_state=42)
    x = StandardScaler().fit_transform(x)
    x_train, x_test, y_train, _ = train_test_split(x, y, test_size=0.4, random_state=42)
    x_l, _, y_l, _ = train_test_split(x_train, y_train, test_size=0.9, random_state=42)
    np.testing.assert_allclose(a.test.views["xa"].numpy()[:, 0], x_test[:, 0].astype(np.float32))
    np.testing.assert_allclose(a.labeled.views["xb"].numpy()[:, 0], x_l[:, 1].astype(np.float32))
    np.testing.assert_array_equal(a.labeled.labels.numpy(), y_l)


def test_standardized_on_all_points() -> None:
    data = load_twomoon()
    for x in data.views.values():
        assert abs(float(x.mean())) < 1e-5
        assert float(x.std()) == pytest.approx(1.0, abs=1e-4)


def test_seeds_are_fixed_and_distinct() -> None:
    seeds = twomoon_seeds(10)
    assert seeds == twomoon_seeds(10) and len(set(seeds)) == 10
    assert twomoon_seeds(3) == seeds[:3]


@pytest.mark.parametrize("kwargs", [{"test_size": 0.0}, {"unlabeled_size": 1.0}])
def test_split_rejects_bad_sizes(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        split_twomoon(**kwargs)


def test_seeds_rejects_bad_count() -> None:
    with pytest.raises(ValueError, match="n"):
        twomoon_seeds(0)
