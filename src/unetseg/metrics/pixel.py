"""Pixel error (plain) and pixel F1 (the leaderboard's ``1 - max F1`` form), cell = positive."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ._common import check_same_shape


@dataclass(frozen=True)
class PixelCounts:
    """Confusion counts with cell (foreground) as the positive class."""

    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: "PixelCounts") -> "PixelCounts":
        return PixelCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.tn + other.tn)

    @property
    def total(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @property
    def error(self) -> float:
        """Fraction of pixels whose binary labels differ."""
        return (self.fp + self.fn) / self.total if self.total else 0.0

    @property
    def f1(self) -> float:
        """Pixel F1 = 2TP / (2TP + FP + FN); 1.0 when there is no positive anywhere."""
        den = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / den if den else 1.0


def pixel_counts(gt: np.ndarray, pred: np.ndarray) -> PixelCounts:
    """TP/FP/FN/TN of binary ``pred`` against binary ``gt`` (nonzero = cell).

    Examples
    --------
    >>> pixel_counts(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    PixelCounts(tp=1, fp=1, fn=1, tn=1)
    """
    check_same_shape(gt, pred)
    g = np.asarray(gt) != 0
    p = np.asarray(pred) != 0
    tp = int(np.count_nonzero(g & p))
    fp = int(np.count_nonzero(~g & p))
    fn = int(np.count_nonzero(g & ~p))
    return PixelCounts(tp, fp, fn, g.size - tp - fp - fn)


def pixel_error(gt: np.ndarray, pred: np.ndarray) -> float:
    """Plain pixel error: the fraction of pixels where binary ``pred`` and ``gt`` differ.

    Examples
    --------
    >>> pixel_error(np.array([[255, 0], [255, 255]]), np.array([[1, 1], [1, 1]]))
    0.25
    """
    return pixel_counts(gt, pred).error


def pixel_f1(gt: np.ndarray, pred: np.ndarray) -> float:
    """Pixel F1 with cell as the positive class (``1 - pixel_f1`` is the leaderboard pixel error).

    Examples
    --------
    >>> pixel_f1(np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0]))
    0.5
    """
    return pixel_counts(gt, pred).f1


def pixel_error_by_distance(gt: np.ndarray, pred: np.ndarray, bands: tuple[float, ...] = (1.0, 2.0)) -> np.ndarray:
    """Split the plain pixel error by each pixel's distance to the ground truth's cell/membrane boundary.

    A pixel's distance is the Euclidean distance to the nearest pixel of the other ground-truth
    class (so both pixels either side of a boundary are at distance 1). Entry ``k`` is the fraction
    of all pixels that are errors at a distance in ``(bands[k-1], bands[k]]``; the last entry holds
    the errors beyond ``bands[-1]``. The entries sum to :func:`pixel_error`. Errors within a pixel
    or two of a boundary are localisation errors (where annotators themselves disagree); errors
    far from any boundary are wrong decisions (an organelle outline called membrane).

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 0, 0, 0]] * 2)
    >>> pred = np.array([[1, 1, 1, 0, 0, 1]] * 2)  # boundary one pixel off, one false cell far away
    >>> pixel_error_by_distance(gt, pred).tolist()  # <= 1 px, (1, 2] px, > 2 px
    [0.16666666666666666, 0.0, 0.16666666666666666]
    >>> float(pixel_error_by_distance(gt, pred).sum()) == pixel_error(gt, pred)
    True
    """
    check_same_shape(gt, pred)
    if not bands or any(b <= 0 for b in bands) or list(bands) != sorted(bands):
        raise ValueError(f"bands must be positive and increasing, got {bands!r}")
    g = np.asarray(gt) != 0
    err = g != (np.asarray(pred) != 0)
    if g.all() or not g.any():  # no boundary: every error is far from one
        dist = np.full(g.shape, np.inf)
    else:
        dist = np.where(g, ndi.distance_transform_edt(g), ndi.distance_transform_edt(~g))
    edges = [0.0, *bands, np.inf]
    d = dist[err]
    return np.array([np.count_nonzero((d > lo) & (d <= hi)) for lo, hi in zip(edges[:-1], edges[1:])]) / g.size
