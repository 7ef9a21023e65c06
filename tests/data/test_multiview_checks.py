"""What a multi-view data set must hold, the mfeat CSV reader's errors (file and line), and the split's checks,
which refuse exactly what scikit-learn's stratified splits would refuse, with messages that name the cause."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mkefast.data import MultiViewData, load_mfeat, split_indices

sklearn_split = pytest.importorskip("sklearn.model_selection")


def _data(**changes: object) -> MultiViewData:
    fields: dict[str, object] = {"views": {"a": np.zeros((4, 2), np.float32)}, "labels": np.array([0, 1, 0, 1])}
    fields.update(changes)
    return MultiViewData(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize("changes,message", [
    ({"labels": np.array([0.0, 1.0, 0.0, 1.0])}, "labels: expected a 1-D array of integer class ids, got float64"),
    ({"labels": [0, 1, 0, 1]}, "labels: expected a 1-D array of integer class ids, got list"),
    ({"labels": np.array([0, 1, -2, 1])}, "labels: expected class ids >= 0, got -2 at row 2"),
    ({"labels": np.array([], np.int64), "views": {"a": np.zeros((0, 2), np.float32)}}, "labels: expected at least one"),
    ({"views": {}}, "views: expected at least one view"),
    ({"views": {"a": np.zeros((3, 2), np.float32)}}, "views['a']: expected shape [4, f]"),
    ({"views": {"a": np.zeros((4, 2), np.int64)}}, "views['a']: expected floating-point features, got int64"),
    ({"views": {"a": np.array([[0, 0], [0, 0], [0, np.nan], [0, 0]], np.float32)}},
     "views['a']: NaN or infinity at row 2"),
], ids=["float-labels", "list-labels", "negative", "empty", "no-view", "rows", "int-view", "nan"])
def test_a_data_set_names_what_is_wrong(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=None) as error:
        _data(**changes)
    assert str(error.value).startswith(message)


def test_check_classes() -> None:
    _data().check_classes()
    with pytest.raises(ValueError, match="at least two classes, every row is class 1"):
        _data(labels=np.array([1, 1, 1, 1])).check_classes()
    with pytest.raises(ValueError, match=r"3 classes up to id 3 \(no row of class 2\)"):
        _data(labels=np.array([0, 1, 3, 1])).check_classes()


def _write_view(folder: Path, view: str, rows: list[str]) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"mfeat-{view}.csv").write_text("\n".join(rows) + "\n")


GOOD = ["0,1,2", "1.0,2.0,0", "3.0,4.5,1", "5,6,1", "7,8,0"]


@pytest.mark.parametrize("rows,message", [
    ([], "mfeat-mor.csv: empty; expected a header row"),
    (GOOD[:1], "mfeat-mor.csv: only a header row; expected a header row, then one row per sample"),
    (["0", "1", "2"], "mfeat-mor.csv: 1 column; expected a header row"),
    ([*GOOD[:3], "5,6", *GOOD[4:]], "mfeat-mor.csv, line 4: 2 cells, expected 3 as in the header"),
    ([*GOOD[:2], "3.0,x4,1", *GOOD[3:]], "mfeat-mor.csv, line 3, column 2: 'x4' is not a number"),
    ([*GOOD[:2], "3.0,4.5,1.5", *GOOD[3:]], "mfeat-mor.csv: labels: expected integer class ids, got 1.5 at row 1"),
    ([*GOOD[:2], "3.0,4.5,-1", *GOOD[3:]], ": labels: expected class ids >= 0, got -1 at row 1"),
    ([*GOOD[:2], "nan,4.5,1", *GOOD[3:]], ": views['mor']: NaN or infinity at row 1"),
    ([*GOOD[:2], "3.0,4.5,3", *GOOD[3:]], ": labels: expected the class ids 0..K-1"),
], ids=["empty", "header-only", "one-column", "short-row", "cell", "label-fraction", "label-negative", "nan",
        "label-gap"])
def test_the_csv_reader_names_the_file_and_line(tmp_path: Path, rows: list[str], message: str) -> None:
    _write_view(tmp_path, "mor", rows)
    with pytest.raises(ValueError) as error:
        load_mfeat(["mor"], data_dir=tmp_path)
    text = str(error.value)
    assert text.startswith(str(tmp_path)) and message in text and "\n" not in text, text


def test_the_csv_files_of_the_views_must_agree(tmp_path: Path) -> None:
    _write_view(tmp_path, "fou", GOOD)
    _write_view(tmp_path, "mor", GOOD[:-1])
    with pytest.raises(ValueError, match=r"mfeat-mor\.csv: 3 rows, the files of the views before it have 4"):
        load_mfeat(["fou", "mor"], data_dir=tmp_path)
    _write_view(tmp_path, "mor", [*GOOD[:-1], "7,8,1"])
    with pytest.raises(ValueError, match=r"mfeat-mor\.csv: its labels differ"):
        load_mfeat(["fou", "mor"], data_dir=tmp_path)


def _sklearn_alone(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, ...] | None:
    """The two stratified splits as scikit-learn makes them unchecked; None where it refuses."""
    try:
        train, test = sklearn_split.train_test_split(np.arange(len(labels)), test_size=0.3, random_state=seed,
                                                     stratify=labels)
        if fraction == 1.0:
            return train, train[:0], test
        labeled, unlabeled = sklearn_split.train_test_split(train, train_size=fraction, random_state=seed,
                                                            stratify=labels[train])
    except ValueError:
        return None
    return labeled, unlabeled, test


def test_the_split_refuses_exactly_what_scikit_learn_refuses() -> None:
    rng = np.random.default_rng(0)
    refused = 0
    for case in range(400):
        classes = int(rng.integers(1, 6))
        labels = rng.integers(0, classes, size=int(rng.integers(2, 40)))
        fraction = 1.0 if case % 10 == 0 else float(rng.choice([0.05, 0.1, 0.3, 0.5, 0.9, rng.uniform(0.01, 0.99)]))
        expected = _sklearn_alone(labels, fraction, case)
        if expected is None:
            refused += 1
            with pytest.raises(ValueError, match=r"^(labels: a stratified split|test_size|labeled_fraction)"):
                split_indices(labels, labeled_fraction=fraction, seed=case)
            continue
        got = split_indices(labels, labeled_fraction=fraction, seed=case)
        for part, want in zip((got.labeled, got.unlabeled, got.test), expected, strict=True):
            np.testing.assert_array_equal(part, want)
        np.testing.assert_array_equal(np.sort(got.train), np.sort(np.concatenate([got.labeled, got.unlabeled])))
    assert 50 < refused < 350  # both outcomes are exercised


@pytest.mark.parametrize("labels,fraction,message", [
    (np.array([0, 0, 1, 1, 2]), 0.5, "labels: a stratified split of 5 rows into training and test parts needs at "
                                     "least 2 rows of every class, class 2 has one"),
    (np.repeat(np.arange(4), 2), 0.5, "test_size 0.3: 8 rows split into training and test parts of 5 and 3 rows; "
                                      "each part needs a row of every one of the 4 classes"),
    (np.repeat(np.arange(2), 20), 0.02, "labeled_fraction 0.02: 28 rows split into labeled and unlabeled parts of 0 "
                                        "and 28 rows"),
    (np.repeat(np.arange(2), 20), 0.99, "labeled_fraction 0.99: 28 rows split into labeled and unlabeled parts of "
                                        "27 and 1 rows"),
], ids=["single-row-class", "too-few-for-test", "no-labeled-row", "no-unlabeled-row"])
def test_split_messages(labels: np.ndarray, fraction: float, message: str) -> None:
    with pytest.raises(ValueError) as error:
        split_indices(labels, labeled_fraction=fraction, seed=0)
    assert str(error.value).startswith(message), str(error.value)


def test_split_seed_range() -> None:
    labels = np.repeat(np.arange(2), 20)
    for seed in (-1, 2**32):
        with pytest.raises(ValueError, match="seed: expected an integer in"):
            split_indices(labels, labeled_fraction=0.5, seed=seed)
    split_indices(labels, labeled_fraction=0.5, seed=2**32 - 1)
