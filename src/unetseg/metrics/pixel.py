"""Pixel error (plain) and pixel F1 (the leaderboard's ``1 - max F1`` form), cell = positive."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
