"""A multi-view data set of your own, from a NumPy ``.npz`` archive (`mkefast mke npz`, `mkefast robult npz`).

The archive holds one 2-D array ``[N, f_view]`` per view, its key the view's name, and ``labels``, the
class id (0..K-1) of each of the N rows::

    np.savez("mydata.npz", image=image_features, text=text_features, labels=labels)

The shipped ``mfeat.npz`` has this layout (views fou, fac, kar, pix, zer, mor).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from collections.abc import Sequence

import numpy as np

from mkefast.data.mfeat import MultiViewData, about_file, class_ids

__all__ = ["LABELS_KEY", "load_npz"]

LABELS_KEY = "labels"
"""The key of the class ids in the archive; every other key is a view."""

# What NumPy raises on a file that is not an .npz archive or whose member is damaged.
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def _read(npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return np.asarray(npz[key])
    except _UNREADABLE as exc:
        raise ValueError(f"{key}: cannot be read ({type(exc).__name__}: {exc}); expected a numeric array saved "
                         "with np.savez") from None


def _features(npz: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    """The view `key` as float32 (float64 stays float64), or ValueError for arrays that are not real numbers."""
    x = _read(npz, key)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"views[{key!r}]: expected real numbers, got {x.dtype} values")
    if x.dtype == np.float64:
        return x
    return x.astype(np.float32)


def load_npz(path: str | os.PathLike[str], views: Sequence[str] | None = None) -> MultiViewData:
    """Loads a multi-view data set from an ``.npz`` archive: one 2-D array per view and ``labels``.

    Args:
        path: the archive (`np.savez` or `np.savez_compressed`).
        views: the views to read, in this order (default: every key but ``labels``, in the archive's order).

    Returns:
        The views (float32 `[N, f_view]`; float64 arrays stay float64, NumPy integers and booleans become
        float32) and the labels (int64 `[N]`, the classes 0..K-1).

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: naming the file and the key: not an .npz archive, a damaged member, no ``labels``, a
            view that is not in the archive, a view that is not a 2-D array of real numbers, row counts that
            differ from the labels', NaN or infinity in a view, labels that are not integers >= 0, a
            single class, or class ids with gaps.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(2, "No such file", path)
    with about_file(path):
        try:
            npz = np.load(path, allow_pickle=False)
        except _UNREADABLE as exc:
            raise ValueError(f"not a NumPy .npz archive ({type(exc).__name__}); expected one written by "
                             "np.savez(path, labels=..., <view>=..., ...)") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError("a single .npy array, not an .npz archive; expected one written by "
                             "np.savez(path, labels=..., <view>=..., ...)")
        with npz:
            available = [key for key in npz.files if key != LABELS_KEY]
            if LABELS_KEY not in npz.files:
                raise ValueError(f"no {LABELS_KEY!r} array (the class id of each row); the archive holds "
                                 f"{npz.files}")
            names = list(available if views is None else views)
            if not names:
                raise ValueError(f"no view: every key but {LABELS_KEY!r} is a view, and there is none")
            if len(set(names)) != len(names):
                raise ValueError(f"views: duplicate names in {names}")
            unknown = [v for v in names if v not in available]
            if unknown:
                raise ValueError(f"no view {', '.join(map(repr, unknown))}; the views in the file are {available}")
            labels = class_ids(_read(npz, LABELS_KEY))
            data = MultiViewData({name: _features(npz, name) for name in names}, labels)
        data.check_classes()
    return data
