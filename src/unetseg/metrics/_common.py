"""Helpers shared by the metric modules: thresholds, binarisation, labelling, contingency tables."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError

#: 4-connectivity structuring element (2D), the challenge's choice for cell components.
FOUR = ndimage.generate_binary_structure(2, 1)


def isbi_thresholds(stop: float = 0.9, *, start: float = 0.0, step: float = 0.1) -> list[float]:
    """Thresholds exactly as the ISBI reference loops them (``th += step`` in doubles).

    The accumulated values are not the decimal ones: the tenth of ``0.0, 0.1, ...`` is
    ``0.8999999999999999`` and the eleventh ``0.9999999999999999``.

    Examples
    --------
    >>> isbi_thresholds(0.9)[-2:]
    [0.7999999999999999, 0.8999999999999999]
    >>> len(isbi_thresholds(0.9)), len(isbi_thresholds(1.0)), isbi_thresholds(1.0)[-1]
    (10, 11, 0.9999999999999999)
    """
    out = []
    th = float(start)
    while th <= stop:
        out.append(th)
        th += step
    return out


def binarize(prob: np.ndarray, threshold: float) -> np.ndarray:
    """``prob > threshold`` with the map widened to float64 first (as the reference does).

    NumPy 2 would otherwise cast the Python float threshold down to the map's float32, so
    ``0.9999999999999999`` would become ``1.0`` and a value of exactly 1 would flip.

    Examples
    --------
    >>> binarize(np.array([1.0, 0.5], dtype=np.float32), 0.9999999999999999)
    array([ True, False])
    """
    return np.asarray(prob).astype(np.float64, copy=False) > float(threshold)


def label4(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """4-connected components (face-connected in any dimension) of a boolean mask."""
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    lab, n = ndimage.label(mask, structure=structure)
    return lab, int(n)


def check_same_shape(a: np.ndarray, b: np.ndarray, what: str = "prediction and ground truth") -> None:
    """Raise :class:`InputError` unless ``a`` and ``b`` have the same shape."""
    if np.shape(a) != np.shape(b):
        raise InputError(f"{what} differ in shape: {np.shape(a)} vs {np.shape(b)}")


def check_labels(labels: np.ndarray, name: str) -> np.ndarray:
    """Return ``labels`` as a non-negative integer array, or raise :class:`InputError`."""
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        if np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        else:
            raise InputError(f"{name}: expected an integer label image, got {arr.dtype} with non-integer values")
    if arr.size and arr.min() < 0:
        raise InputError(f"{name}: label images must be non-negative (found {arr.min()})")
    return arr


def foreground_pixels(gt_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat ground-truth and predicted labels of the pixels whose ground truth is not 0.

    The pixel restriction of the foreground-restricted Rand and information scores.

    Examples
    --------
    >>> foreground_pixels(np.array([[0, 1], [2, 2]]), np.array([[5, 0], [3, 3]]))
    (array([1, 2, 2]), array([0, 3, 3]))
    """
    check_same_shape(gt_labels, pred_labels)
    gt = check_labels(gt_labels, "ground truth").ravel()
    pred = check_labels(pred_labels, "prediction").ravel()
    fg = gt != 0
    return gt[fg], pred[fg]


def contingency(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Sparse contingency table of two label arrays of equal shape.

    Returns ``(a_ids, b_ids, counts, _)``-style data as three aligned 1D arrays: for every
    pair of labels that co-occur, the label in ``a``, the label in ``b`` and the pixel
    count, plus the unique labels of ``a`` in the fourth slot for convenience.

    Examples
    --------
    >>> ai, bi, c, _ = contingency(np.array([1, 1, 2]), np.array([5, 5, 5]))
    >>> ai.tolist(), bi.tolist(), c.tolist()
    ([1, 2], [5, 5], [2, 1])
    """
    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    ua, ia = np.unique(a, return_inverse=True)
    ub, ib = np.unique(b, return_inverse=True)
    key = ia.astype(np.int64) * max(len(ub), 1) + ib
    keys, counts = np.unique(key, return_counts=True)
    return ua[keys // max(len(ub), 1)], ub[keys % max(len(ub), 1)], counts.astype(np.int64), ua


_DENSE_LIMIT = 1 << 22


def overlap_counts(g: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Counts behind the Rand and information scores of GT labels ``g`` (all > 0) and ``p``.

    Returns ``(nij, t, s, z)``: the nonzero joint counts with ``p > 0``, the GT segment sizes,
    the predicted segment sizes (``p > 0``) and the number of ``p == 0`` pixels. Uses a dense
    ``bincount`` when the label ranges allow it (the usual case), ``np.unique`` otherwise.

    Examples
    --------
    >>> nij, t, s, z = overlap_counts(np.array([1, 1, 2, 2]), np.array([1, 1, 1, 0]))
    >>> nij.tolist(), t.tolist(), s.tolist(), z
    ([2, 1], [2, 2], [3], 1)
    """
    g = np.asarray(g).ravel()
    p = np.asarray(p).ravel()
    if g.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, 0
    gmax, pmax = int(g.max()), int(p.max())
    if (gmax + 1) * (pmax + 1) <= _DENSE_LIMIT:
        table = np.bincount(g.astype(np.int64) * (pmax + 1) + p, minlength=(gmax + 1) * (pmax + 1))
        table = table.reshape(gmax + 1, pmax + 1)
        t = table.sum(axis=1)
        z = int(table[:, 0].sum())
        inner = table[:, 1:]
        s = inner.sum(axis=0)
        return inner[inner > 0], t[t > 0], s[s > 0], z
    z = int(np.count_nonzero(p == 0))
    _, t = np.unique(g, return_counts=True)
    keep = p != 0
    if not keep.any():
        return np.zeros(0, dtype=np.int64), t, np.zeros(0, dtype=np.int64), z
    _, _, nij, _ = contingency(g[keep], p[keep])
    _, s = np.unique(p[keep], return_counts=True)
    return nij, t, s, z
