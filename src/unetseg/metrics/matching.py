"""Object matching of instance labels (after StarDist's ``matching``) and DSB-style mean AP.

IoU matrix over labels >= 1, one-to-one assignment maximising the number of matches (then
the total IoU), a pair matches if IoU >= thr (or > thr with ``strict=True``). Precision =
TP/(TP+FP), recall = TP/(TP+FN), F1, accuracy = TP/(TP+FP+FN) (the DSB2018 "AP").
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

from ._common import check_labels, check_same_shape, contingency

DSB_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))


def iou_matrix(gt_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """IoU between every GT object and every predicted object (labels >= 1).

    Returns ``(iou, gt_ids, pred_ids)`` with ``iou`` of shape ``(len(gt_ids), len(pred_ids))``.
    """
    check_same_shape(gt_labels, pred_labels)
    gt = check_labels(gt_labels, "ground truth").ravel()
    pred = check_labels(pred_labels, "prediction").ravel()
    gt_ids, gt_sizes = np.unique(gt[gt != 0], return_counts=True)
    pred_ids, pred_sizes = np.unique(pred[pred != 0], return_counts=True)
    mat = np.zeros((len(gt_ids), len(pred_ids)), dtype=np.float64)
    both = (gt != 0) & (pred != 0)
    if both.any():
        gi, pj, inter, _ = contingency(gt[both], pred[both])
        r = np.searchsorted(gt_ids, gi)
        c = np.searchsorted(pred_ids, pj)
        mat[r, c] = inter / (gt_sizes[r] + pred_sizes[c] - inter)
    return mat, gt_ids, pred_ids


def _count_matches(iou: np.ndarray, thr: float, strict: bool) -> tuple[int, float]:
    if iou.size == 0:
        return 0, 0.0
    ok = iou > thr if strict else iou >= thr
    if not ok.any():
        return 0, 0.0
    # maximise the number of matches first, then their total IoU
    cost = -(ok.astype(np.float64)) - iou / (2.0 * max(iou.shape))
    rows, cols = linear_sum_assignment(cost)
    good = ok[rows, cols]
    return int(good.sum()), float(iou[rows[good], cols[good]].sum())


def match_instances(gt_labels: np.ndarray, pred_labels: np.ndarray, thresh: float = 0.5, *, strict: bool = False) -> dict:
    """Precision, recall, F1 and accuracy of predicted objects at an IoU threshold.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2, 0, 3]])
    >>> m = match_instances(gt, np.array([[4, 4, 0, 5, 0, 0, 0]]), 0.5)
    >>> m["tp"], m["fp"], m["fn"], m["f1"]
    (2, 0, 1, 0.8)
    """
    iou, gt_ids, pred_ids = iou_matrix(gt_labels, pred_labels)
    tp, iou_sum = _count_matches(iou, float(thresh), strict)
    n_gt, n_pred = len(gt_ids), len(pred_ids)
    fp, fn = n_pred - tp, n_gt - tp
    precision = tp / n_pred if n_pred else (1.0 if n_gt == 0 else 0.0)
    recall = tp / n_gt if n_gt else 1.0
    f1 = 2 * tp / (n_pred + n_gt) if (n_pred + n_gt) else 1.0
    accuracy = tp / (tp + fp + fn) if (tp + fp + fn) else 1.0
    return {
        "thresh": float(thresh),
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "n_true": n_gt,
        "n_pred": n_pred,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "accuracy": float(accuracy),
        "mean_matched_iou": iou_sum / tp if tp else 0.0,
    }


def average_precision(gt_labels: np.ndarray, pred_labels: np.ndarray, thresholds=DSB_THRESHOLDS) -> dict[float, float]:
    """DSB2018 AP(t) = TP/(TP+FP+FN) with matches at IoU > t, for each t."""
    iou, gt_ids, pred_ids = iou_matrix(gt_labels, pred_labels)
    out = {}
    for t in thresholds:
        tp, _ = _count_matches(iou, float(t), True)
        den = len(gt_ids) + len(pred_ids) - tp
        out[float(t)] = tp / den if den else 1.0
    return out


def mean_ap(gt_labels, pred_labels, thresholds=DSB_THRESHOLDS) -> float:
    """DSB2018 score: AP averaged over t = 0.50, 0.55, ..., 0.95, then over images.

    ``gt_labels`` and ``pred_labels`` are one label image each, or equal-length lists
    (or stacks along axis 0) of them.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> mean_ap(gt, gt)
    1.0
    """
    gts, preds = _as_list(gt_labels), _as_list(pred_labels)
    if len(gts) != len(preds):
        from ..errors import InputError

        raise InputError(f"{len(gts)} ground-truth images but {len(preds)} predictions")
    per_image = [float(np.mean(list(average_precision(g, p, thresholds).values()))) for g, p in zip(gts, preds)]
    return float(np.mean(per_image)) if per_image else float("nan")


def _as_list(x) -> list[np.ndarray]:
    if isinstance(x, (list, tuple)):
        return [np.asarray(a) for a in x]
    arr = np.asarray(x)
    return [arr] if arr.ndim <= 2 else [a for a in arr]
