"""TwoMoon, the synthetic data set of the MKE paper (Xue et al., ICCV 2021, Section 5.1 and Table 2).

The protocol follows the paper's official notebook exactly::

    X, y = make_moons(500, noise=0.1, random_state=42)
    X = StandardScaler().fit_transform(X)            # fitted on all 500 points, as in the notebook
    X_train, X_test, ... = train_test_split(X, y, test_size=.4, random_state=42)         # 300 / 200
    X_l, X_u, ... = train_test_split(X_train, y_train, test_size=.9, random_state=42)    # 30 / 270

Each point has two modalities: ``"xa"`` (the first coordinate, the only one the unimodal teacher sees) and
``"xb"`` (the second coordinate); the multimodal student sees both.
"""

from __future__ import annotations

import random

import numpy as np
import torch

from mkefast.data.mfeat import MultiViewData, MultiViewSplit, MultiViewTensors

__all__ = ["MAX_TWOMOON_SEEDS", "TWOMOON_VIEWS", "load_twomoon", "split_twomoon", "twomoon_seeds"]

TWOMOON_VIEWS: tuple[str, str] = ("xa", "xb")

MAX_TWOMOON_SEEDS = 1000
"""`twomoon_seeds` draws distinct seeds from range(MAX_TWOMOON_SEEDS)."""


def load_twomoon(n_samples: int = 500, *, noise: float = 0.1, random_state: int = 42) -> MultiViewData:
    """The standardized two moons as two one-dimensional views.

    Args:
        n_samples: number of points (`sklearn.datasets.make_moons`).
        noise: std of the Gaussian noise added to the points.
        random_state: seed of the generator.

    Returns:
        Views `"xa"` and `"xb"`, each float32 `[n_samples, 1]`, and int64 labels `[n_samples]`; the
        points are standardized with the mean and std of all of them (the paper's protocol).
    """
    if n_samples < 2:
        raise ValueError(f"n_samples: expected at least 2 points, got {n_samples}")
    from sklearn.datasets import make_moons
    from sklearn.preprocessing import StandardScaler

    x, y = make_moons(n_samples, noise=noise, random_state=random_state)
    x = StandardScaler().fit_transform(x).astype(np.float32)
    return MultiViewData({"xa": x[:, :1], "xb": x[:, 1:]}, y.astype(np.int64))


def split_twomoon(data: MultiViewData | None = None, *, test_size: float = 0.4, unlabeled_size: float = 0.9,
                  random_state: int = 42) -> MultiViewSplit:
    """The paper's split: 200 test, then 30 labeled and 270 unlabeled points (with the defaults).

    Both splits are `sklearn.model_selection.train_test_split(..., random_state=random_state)` without
    stratification, as in the official notebook; no further standardization is applied.

    Args:
        data: the points (default: `load_twomoon()`).
        test_size: share of all points held out for testing.
        unlabeled_size: share of the remaining points whose labels are hidden.
        random_state: seed of both splits.
    """
    for name, value in (("test_size", test_size), ("unlabeled_size", unlabeled_size)):
        if not 0.0 < value < 1.0:
            raise ValueError(f"{name}: expected a value in (0, 1), got {value}")
    from sklearn.model_selection import train_test_split

    data = load_twomoon() if data is None else data
    idx = np.arange(len(data.labels))
    train_idx, test_idx = train_test_split(idx, test_size=test_size, random_state=random_state)
    labeled_idx, unlabeled_idx = train_test_split(train_idx, test_size=unlabeled_size,
                                                  random_state=random_state)

    def take(rows: np.ndarray) -> MultiViewTensors:
        return MultiViewTensors({name: torch.from_numpy(x[rows]) for name, x in data.views.items()},
                                torch.from_numpy(data.labels[rows]))

    return MultiViewSplit(labeled=take(labeled_idx), unlabeled=take(unlabeled_idx), test=take(test_idx))


def twomoon_seeds(n: int = 10, *, base_seed: int = 42) -> list[int]:
    """The run seeds: `n` distinct integers in [0, MAX_TWOMOON_SEEDS) drawn by `random.Random(base_seed)`.

    The paper averages 10 runs with seeds drawn after `random.seed(42)`; its exact draw is not published,
    so this fixes one (`random.Random(42).sample(range(1000), n)`).
    """
    if not 1 <= n <= MAX_TWOMOON_SEEDS:
        raise ValueError(f"n: expected a number of seeds in [1, {MAX_TWOMOON_SEEDS}], got {n}")
    return random.Random(base_seed).sample(range(MAX_TWOMOON_SEEDS), n)
