"""Binary Dice and IoU (empty vs empty = 1), with confusion counts for pooling."""

from __future__ import annotations

import numpy as np

from .pixel import PixelCounts, pixel_counts


def dice_from_counts(c: PixelCounts) -> float:
    """Dice = 2TP / (2TP + FP + FN); 1.0 when both masks are empty."""
    den = 2 * c.tp + c.fp + c.fn
    return 2 * c.tp / den if den else 1.0


def iou_from_counts(c: PixelCounts) -> float:
    """IoU = TP / (TP + FP + FN); 1.0 when both masks are empty."""
    den = c.tp + c.fp + c.fn
    return c.tp / den if den else 1.0


def dice(gt: np.ndarray, pred: np.ndarray) -> float:
    """Binary Dice coefficient of ``pred != 0`` against ``gt != 0``.

    Examples
    --------
    >>> dice(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    0.6666666666666666
    >>> dice(np.zeros(3), np.zeros(3))
    1.0
    """
    return dice_from_counts(pixel_counts(gt, pred))


def iou(gt: np.ndarray, pred: np.ndarray) -> float:
    """Binary intersection over union (Jaccard) of ``pred != 0`` against ``gt != 0``.

    Examples
    --------
    >>> iou(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))
    0.5
    """
    return iou_from_counts(pixel_counts(gt, pred))
