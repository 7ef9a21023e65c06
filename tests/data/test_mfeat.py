"""UCI mfeat: the shipped copy equals the CSVs; splits are stratified and standardized on the train part."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from mkefast.data import MFEAT_VIEWS, load_mfeat, split_multiview

CSV_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "mfeat"
FEATURES = {"fou": 76, "fac": 216, "kar": 64, "pix": 240, "zer": 47, "mor": 6}


def test_load_shapes_and_labels() -> None:
    data = load_mfeat()
    assert tuple(data.views) == MFEAT_VIEWS
    for name, x in data.views.items():
        assert x.dtype == np.float32 and x.shape == (2000, FEATURES[name])
    assert data.labels.dtype == np.int64
    np.testing.assert_array_equal(np.bincount(data.labels), np.full(10, 200))


def test_view_selection_keeps_order() -> None:
    data = load_mfeat(["mor", "fou"])
    assert tuple(data.views) == ("mor", "fou")


@pytest.mark.skipif(not CSV_DIR.is_dir(), reason="the mfeat CSV folder is not available")
def test_shipped_copy_equals_csvs() -> None:
    shipped, csv = load_mfeat(), load_mfeat(data_dir=CSV_DIR)
    np.testing.assert_array_equal(shipped.labels, csv.labels)
    for name in MFEAT_VIEWS:
        np.testing.assert_array_equal(shipped.views[name], csv.views[name])


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown view"):
        load_mfeat(["fou", "nope"])
    with pytest.raises(ValueError, match="duplicate"):
        load_mfeat(["fou", "fou"])
    with pytest.raises(FileNotFoundError, match="data_dir"):
        load_mfeat(data_dir=tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"mfeat-mor\.csv"):
        load_mfeat(["mor"], data_dir=tmp_path)
    data = load_mfeat(["mor"])
    for fraction in (0.0, 1.5):
        with pytest.raises(ValueError, match="labeled_fraction"):
            split_multiview(data, labeled_fraction=fraction, seed=0)
    with pytest.raises(ValueError, match="test_size"):
        split_multiview(data, labeled_fraction=0.5, seed=0, test_size=1.0)


def test_csv_folder_reader(tmp_path: Path) -> None:
    rows = np.array([[1.0, 2.0, 0], [3.0, 4.5, 1], [5.0, 6.0, 1]])
    np.savetxt(tmp_path / "mfeat-mor.csv", rows, delimiter=",", header="0,1,2", comments="")
    data = load_mfeat(["mor"], data_dir=tmp_path)
    np.testing.assert_array_equal(data.views["mor"], rows[:, :2].astype(np.float32))
    np.testing.assert_array_equal(data.labels, [0, 1, 1])


def test_split_sizes_stratification_and_standardization() -> None:
    pytest.importorskip("sklearn")
    data = load_mfeat(["mor", "zer"])
    split = split_multiview(data, labeled_fraction=0.05, seed=3)
    assert (len(split.labeled), len(split.unlabeled), len(split.test)) == (70, 1330, 600)
    assert torch.equal(split.labeled.labels.bincount(), torch.full((10,), 7))
    assert torch.equal(split.test.labels.bincount(), torch.full((10,), 60))
    for name in ("mor", "zer"):
        train = torch.cat([split.labeled.views[name], split.unlabeled.views[name]]).double()
        assert train.mean(0).abs().max() < 1e-5
        np.testing.assert_allclose(train.std(0, unbiased=False).numpy(), 1.0, atol=1e-4)
        assert split.test.views[name].double().mean(0).abs().max() > 1e-3  # test rows are only transformed
    again = split_multiview(data, labeled_fraction=0.05, seed=3)
    assert torch.equal(again.labeled.views["zer"], split.labeled.views["zer"])
    other = split_multiview(data, labeled_fraction=0.05, seed=4)
    assert not torch.equal(other.labeled.views["zer"], split.labeled.views["zer"])


def test_split_rows_are_disjoint_and_cover_the_data() -> None:
    pytest.importorskip("sklearn")
    ids = np.arange(2000, dtype=np.float32)[:, None]
    data = load_mfeat(["mor"])
    data.views["id"] = ids
    split = split_multiview(data, labeled_fraction=0.2, seed=0)
    # Standardization is affine and monotone per column, so the id column still identifies the rows.
    parts = [part.views["id"][:, 0] for part in (split.labeled, split.unlabeled, split.test)]
    assert len(torch.cat(parts).unique()) == 2000


def test_fully_labeled_split() -> None:
    pytest.importorskip("sklearn")
    split = split_multiview(load_mfeat(["mor"]), labeled_fraction=1.0, seed=0)
    assert len(split.labeled) == 1400 and len(split.unlabeled) == 0
