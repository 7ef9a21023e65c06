"""Your own data from an .npz archive: what loads, and a one-line error naming the file and the key for every
way the file can be wrong."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mkefast.data import MFEAT_VIEWS, load_mfeat, load_npz
from mkefast.data.mfeat import _SHIPPED

ROWS = 60


def _save(path: Path, **arrays: object) -> Path:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


def _good() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"image": rng.normal(size=(ROWS, 4)), "text": rng.integers(0, 5, size=(ROWS, 2)),
            "flags": rng.random((ROWS, 3)) > 0.5, "labels": np.arange(ROWS) % 3}


def test_the_shipped_mfeat_archive_loads_as_load_mfeat() -> None:
    """mfeat.npz has the layout `load_npz` reads: the same arrays, in the order asked for."""
    data, mfeat = load_npz(_SHIPPED, ["kar", "fou"]), load_mfeat(["kar", "fou"])
    assert list(data.views) == ["kar", "fou"]
    np.testing.assert_array_equal(data.labels, mfeat.labels)
    for name in ("kar", "fou"):
        assert data.views[name].dtype == np.float32
        np.testing.assert_array_equal(data.views[name], mfeat.views[name])
    assert tuple(load_npz(_SHIPPED).views) == MFEAT_VIEWS


def test_dtypes(tmp_path: Path) -> None:
    good = _good()
    data = load_npz(_save(tmp_path / "d.npz", **{**good, "labels": good["labels"].astype(np.float32)}))
    assert list(data.views) == ["image", "text", "flags"]
    assert data.views["image"].dtype == np.float64  # float64 stays: it is standardized before the cast
    assert data.views["text"].dtype == data.views["flags"].dtype == np.float32
    np.testing.assert_array_equal(data.views["text"], good["text"])
    assert data.labels.dtype == np.int64 and data.num_classes == 3
    np.testing.assert_array_equal(data.labels, good["labels"])


def test_compressed_archives_load(tmp_path: Path) -> None:
    np.savez_compressed(tmp_path / "c.npz", **_good())
    assert load_npz(tmp_path / "c.npz", ["text"]).views["text"].shape == (ROWS, 2)


def _damaged(path: Path) -> Path:
    raw = bytearray((_save(path, **_good())).read_bytes())
    raw[200] ^= 0xFF  # inside the first member's data: its CRC no longer matches
    path.write_bytes(bytes(raw))
    return path


def _case(name: str, tmp_path: Path) -> tuple[Path, list[str] | None]:
    good = _good()
    x, y = good["image"], good["labels"]
    broken = {
        "no_labels": {"image": x, "text": x},
        "one_dimensional": {**good, "text": x[:, 0]},
        "rows_differ": {**good, "text": x[:-1]},
        "nan": {**good, "image": np.where(np.arange(ROWS)[:, None] == 4, np.nan, x)},
        "inf": {**good, "image": np.where(np.arange(ROWS)[:, None] == 6, -np.inf, x)},
        "negative": {**good, "labels": np.where(np.arange(ROWS) == 3, -1, y)},
        "not_integer": {**good, "labels": y + 0.25},
        "nan_label": {**good, "labels": np.where(np.arange(ROWS) == 2, np.nan, y)},
        "string_labels": {**good, "labels": y.astype(str)},
        "two_dim_labels": {**good, "labels": y[:, None]},
        "single_class": {**good, "labels": np.zeros(ROWS, np.int64)},
        "gaps": {**good, "labels": y * 10},
        "no_row": {"image": x[:0], "labels": y[:0]},
        "no_feature": {**good, "text": x[:, :0]},
        "complex": {**good, "image": x.astype(np.complex64)},
        "object_view": {**good, "image": np.array([None] * ROWS, dtype=object)},
    }
    if name in broken:
        return _save(tmp_path / f"{name}.npz", **broken[name]), None
    if name == "missing_view":
        return _save(tmp_path / "v.npz", **good), ["image", "sound"]
    if name == "labels_as_view":
        return _save(tmp_path / "v.npz", **good), ["image", "labels"]
    if name == "duplicate_view":
        return _save(tmp_path / "v.npz", **good), ["image", "image"]
    if name == "no_view":
        return _save(tmp_path / "v.npz", labels=y), None
    if name == "npy":
        np.save(tmp_path / "a.npy", x)
        return tmp_path / "a.npy", None
    if name == "text":
        (tmp_path / "t.npz").write_text("image,text,labels\n")
        return tmp_path / "t.npz", None
    if name == "empty_file":
        (tmp_path / "e.npz").write_bytes(b"")
        return tmp_path / "e.npz", None
    if name == "truncated":
        raw = _save(tmp_path / "t.npz", **good).read_bytes()
        (tmp_path / "t.npz").write_bytes(raw[: len(raw) // 2])
        return tmp_path / "t.npz", None
    assert name == "damaged_member"
    return _damaged(tmp_path / "d.npz"), None


@pytest.mark.parametrize("name,message", [
    ("no_labels", "no 'labels' array (the class id of each row); the archive holds ['image', 'text']"),
    ("one_dimensional", "views['text']: expected shape [60, f] (a row per label, f >= 1 features), got [60]"),
    ("rows_differ", "views['text']: expected shape [60, f] (a row per label, f >= 1 features), got [59, 4]"),
    ("nan", "views['image']: NaN or infinity at row 4"),
    ("inf", "views['image']: NaN or infinity at row 6"),
    ("negative", "labels: expected class ids >= 0, got -1 at row 3"),
    ("not_integer", "labels: expected integer class ids, got 0.25 at row 0"),
    ("nan_label", "labels: expected integer class ids, got nan at row 2"),
    ("string_labels", "labels: expected integer class ids, got <U21 values"),
    ("two_dim_labels", "labels: expected a 1-D array (one class id per row), got shape [60, 1]"),
    ("single_class", "labels: expected at least two classes, every row is class 0"),
    ("gaps", "labels: expected the class ids 0..K-1 with every class present, got 3 classes up to id 20 (no row of "
             "class 1)"),
    ("no_row", "labels: expected at least one row, got none"),
    ("no_feature", "views['text']: expected shape [60, f] (a row per label, f >= 1 features), got [60, 0]"),
    ("complex", "views['image']: expected real numbers, got complex64 values"),
    ("object_view", "image: cannot be read (ValueError: Object arrays cannot be loaded when allow_pickle=False)"),
    ("missing_view", "no view 'sound'; the views in the file are ['image', 'text', 'flags']"),
    ("labels_as_view", "no view 'labels'; the views in the file are ['image', 'text', 'flags']"),
    ("duplicate_view", "views: duplicate names in ['image', 'image']"),
    ("no_view", "no view: every key but 'labels' is a view, and there is none"),
    ("npy", "a single .npy array, not an .npz archive"),
    ("text", "not a NumPy .npz archive (ValueError)"),
    ("empty_file", "not a NumPy .npz archive (EOFError)"),
    ("truncated", "not a NumPy .npz archive (BadZipFile)"),
    ("damaged_member", "cannot be read (BadZipFile: Bad CRC-32"),
])
def test_every_fault_is_one_message_naming_the_file_and_the_key(tmp_path: Path, name: str, message: str) -> None:
    path, views = _case(name, tmp_path)
    with pytest.raises(ValueError) as error:
        load_npz(path, views)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text, text


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as error:
        load_npz(tmp_path / "absent.npz")
    assert error.value.filename == str(tmp_path / "absent.npz")
