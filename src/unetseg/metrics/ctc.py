"""Cell Tracking Challenge SEG: the Jaccard index of reference objects with their matches.

A predicted object S matches a reference object R iff ``|R ∩ S| > 0.5 |R|`` (strict), so
each R has at most one match. ``J = |R ∩ S| / |R ∪ S|`` if matched, else 0. SEG is the mean J
over all reference objects pooled across frames; false positives do not count. (Plain
foreground IoU is a different number: two touching cells predicted as one give IoU 1 but
SEG 0.5.)
"""

from __future__ import annotations

import numpy as np

from ._common import check_labels, check_same_shape, contingency


def seg_jaccards(gt_labels: np.ndarray, pred_labels: np.ndarray) -> np.ndarray:
    """Per reference object, the SEG Jaccard (0 when unmatched), in ascending label order.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> seg_jaccards(gt, np.array([[3, 3, 3, 3, 3]])).tolist()  # one object covers both
    [0.4, 0.4]
    """
    check_same_shape(gt_labels, pred_labels)
    gt = check_labels(gt_labels, "reference").ravel()
    pred = check_labels(pred_labels, "prediction").ravel()
    ref_ids, ref_sizes = np.unique(gt[gt != 0], return_counts=True)
    out = np.zeros(len(ref_ids), dtype=np.float64)
    if len(ref_ids) == 0:
        return out
    both = (gt != 0) & (pred != 0)
    if not both.any():
        return out
    gi, pj, inter, _ = contingency(gt[both], pred[both])
    match = 2 * inter > ref_sizes[np.searchsorted(ref_ids, gi)]
    if not match.any():
        return out
    gi, pj, inter = gi[match], pj[match], inter[match]
    pred_ids, pred_sizes = np.unique(pred[pred != 0], return_counts=True)
    r_size = ref_sizes[np.searchsorted(ref_ids, gi)]
    s_size = pred_sizes[np.searchsorted(pred_ids, pj)]
    out[np.searchsorted(ref_ids, gi)] = inter / (r_size + s_size - inter)
    return out


def seg_score(gt_labels: np.ndarray, pred_labels: np.ndarray) -> float:
    """CTC SEG of one frame (or a volume): mean Jaccard over reference objects.

    Returns NaN when the reference has no object. To pool frames, concatenate the
    :func:`seg_jaccards` of each frame and average.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> seg_score(gt, gt)
    1.0
    >>> seg_score(gt, np.array([[5, 5, 5, 0, 0]]))  # cell 1 matched with J=2/3, cell 2 missed
    0.3333333333333333
    """
    j = seg_jaccards(gt_labels, pred_labels)
    return float(j.mean()) if j.size else float("nan")


def unmatched_objects(gt_labels: np.ndarray, pred_labels: np.ndarray) -> tuple[int, int]:
    """``(predicted objects that overlap no reference object, all predicted objects)``.

    SEG ignores false positives; this counts the ones that touch no annotated cell at all
    (false objects in empty background).

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 0, 0]])
    >>> unmatched_objects(gt, np.array([[2, 0, 0, 3, 3]]))
    (1, 2)
    """
    check_same_shape(gt_labels, pred_labels)
    gt = check_labels(gt_labels, "reference").ravel()
    pred = check_labels(pred_labels, "prediction").ravel()
    ids = np.unique(pred[pred != 0])
    touching = np.unique(pred[(pred != 0) & (gt != 0)])
    return int(len(ids) - len(touching)), int(len(ids))
