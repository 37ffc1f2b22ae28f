"""The object protocols: Cell Tracking Challenge SEG, pooled binary Dice/IoU, object F1 and
DSB2018 mean AP. Instance protocols need label images: a probability map given as labels is
refused (:func:`~unetseg.evaluate.stacks.require_labels`)."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..metrics import (
    DSB_THRESHOLDS,
    PixelCounts,
    average_precision,
    binarize,
    dice_from_counts,
    iou_from_counts,
    isbi_thresholds,
    label4,
    match_instances,
    pixel_counts,
    seg_jaccards,
    unmatched_objects,
)
from .common import entry
from .stacks import _as_stack, _check_pair, _name, as_probability, require_labels


def _is_probability(arr: np.ndarray) -> bool:
    """Float arrays are probability maps unless they hold integers above 1 (labels as float)."""
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        return False
    return not (arr.size and arr.max() > 1 and np.all(arr == np.round(arr)))


def as_instances(arr: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Instance labels from labels (as they are), a binary mask or a probability map.

    Float maps are binarised at ``threshold``; a mask with a single nonzero value is split
    into its 4-connected components.

    Examples
    --------
    >>> as_instances(np.array([[1, 0, 1]])).tolist()
    [[1, 0, 2]]
    """
    arr = np.asarray(arr)
    if np.issubdtype(arr.dtype, np.floating):
        if _is_probability(arr):
            return label4(binarize(arr, threshold))[0]
        arr = arr.astype(np.int64)
    if arr.dtype == bool or len(np.unique(arr[arr != 0])) <= 1:
        return label4(arr != 0)[0]
    if arr.size and arr.min() < 0:
        raise InputError("instance labels must be non-negative")
    return arr


def evaluate_ctc(pred_labels, gt_labels) -> dict:
    """Cell Tracking Challenge SEG over frames (mean Jaccard over all reference objects).

    Returns ``{"protocol": "ctc", "seg": {"value": ..., "threshold": None}, ...}`` with the
    per-frame SEG under ``per_image``.

    Examples
    --------
    >>> gt = np.array([[[1, 1, 0, 2, 2]]])
    >>> evaluate_ctc(gt, gt)["seg"]["value"]
    1.0
    """
    pred = require_labels(_as_stack(pred_labels, "prediction"), _name(pred_labels, "prediction"))
    gt = require_labels(_as_stack(gt_labels, "ground truth"), _name(gt_labels, "ground truth"))
    _check_pair(pred, gt)
    all_j, per, false, predicted = [], [], 0, 0
    for k in range(pred.shape[0]):
        ref, seg_k = as_instances(gt[k]), as_instances(pred[k])
        j = seg_jaccards(ref, seg_k)
        f, n = unmatched_objects(ref, seg_k)
        all_j.append(j)
        false, predicted = false + f, predicted + n
        per.append({"index": k, "seg": float(j.mean()) if j.size else None, "n_objects": int(j.size), "unmatched_objects": f,
                    "predicted_objects": n})
    pooled = np.concatenate(all_j) if all_j else np.zeros(0)
    seg = float(pooled.mean()) if pooled.size else float("nan")
    return {
        "protocol": "ctc",
        "n_images": int(pred.shape[0]),
        "seg": entry(seg, None),
        "n_objects": int(pooled.size),
        "unmatched_fraction": entry(false / predicted if predicted else 0.0, None),
        "per_image": per,
        "notes": {"seg": "mean Jaccard over reference objects pooled across frames; match iff |R∩S| > 0.5|R|",
                  "unmatched_fraction": "predicted objects overlapping no reference object / all predicted objects, pooled"},
    }


def evaluate_binary(pred, gt) -> dict:
    """Pooled binary Dice and IoU; a probability map is swept over th = 0.0 ... 0.9.

    Examples
    --------
    >>> r = evaluate_binary(np.array([[0.9, 0.2]]), np.array([[1, 0]]))
    >>> r["dice"]["value"], r["iou"]["value"]
    (1.0, 1.0)
    """
    pred = _as_stack(pred, "prediction")
    gt = _as_stack(gt, "ground truth")
    _check_pair(pred, gt)
    gt_fg = gt != 0
    if _is_probability(pred):
        prob = as_probability(pred)
        thresholds = isbi_thresholds(0.9)
        masks = lambda th: [binarize(p, th) for p in prob]  # noqa: E731
    else:
        thresholds = [None]
        masks = lambda th: [p != 0 for p in pred]  # noqa: E731
    d_curve, i_curve, per_image_dice = [], [], []
    for th in thresholds:
        counts = [pixel_counts(g, m) for g, m in zip(gt_fg, masks(th))]
        total = sum(counts, PixelCounts(0, 0, 0, 0))
        d_curve.append(dice_from_counts(total))
        i_curve.append(iou_from_counts(total))
        per_image_dice.append([dice_from_counts(c) for c in counts])
    bi = int(np.argmax(d_curve))
    bj = int(np.argmax(i_curve))
    per = [{"index": k, "dice": d} for k, d in enumerate(per_image_dice[bi])]
    out = {
        "protocol": "binary",
        "n_images": int(pred.shape[0]),
        "dice": entry(d_curve[bi], thresholds[bi]),
        "iou": entry(i_curve[bj], thresholds[bj]),
        "dice_mean_per_image": entry(float(np.mean(per_image_dice[bi])), thresholds[bi]),
        "per_image": per,
        "notes": {"dice": "pooled over images (TP/FP/FN summed); empty vs empty = 1", "iou": "pooled over images"},
    }
    if thresholds[0] is not None:
        out["curves"] = {"thresholds": thresholds, "dice": d_curve, "iou": i_curve}
    return out


def _match_at(pred, gts, th, iou_threshold: float):
    """Instances of ``pred`` at threshold ``th`` matched to ``gts``: (preds, matches, tp, n_true, n_pred, F1)."""
    preds = [as_instances(p, 0.5 if th is None else th) for p in pred]
    ms = [match_instances(g, p, iou_threshold) for g, p in zip(gts, preds)]
    tp = sum(m["tp"] for m in ms)
    n_true = sum(m["n_true"] for m in ms)
    n_pred = sum(m["n_pred"] for m in ms)
    return preds, ms, tp, n_true, n_pred, (2 * tp / (n_true + n_pred) if (n_true + n_pred) else 1.0)


def evaluate_instances(pred, gt, *, iou_threshold: float = 0.5) -> dict:
    """Object precision/recall/F1/accuracy at IoU ``iou_threshold`` and DSB2018 mean AP.

    ``pred`` holds instance labels, binary masks (split into 4-connected components) or a
    probability map (binarised at th = 0.0 ... 0.9, keeping the threshold with the best F1).
    Counts are pooled over images; mean AP is averaged per image.
    """
    pred = _as_stack(pred, "prediction")
    gt = require_labels(_as_stack(gt, "ground truth"), _name(gt, "ground truth"))
    _check_pair(pred, gt)
    gts = [as_instances(g) for g in gt]
    thresholds = isbi_thresholds(0.9) if _is_probability(pred) else [None]
    results = [_match_at(pred, gts, th, iou_threshold) for th in thresholds]
    curve_f1 = [r[-1] for r in results]
    bi = int(np.argmax(curve_f1))
    th = thresholds[bi]
    preds, ms, tp, n_true, n_pred, _ = results[bi]
    fp, fn = n_pred - tp, n_true - tp
    aps = [average_precision(g, p) for g, p in zip(gts, preds)]
    ap_curve = {t: float(np.mean([a[t] for a in aps])) for t in DSB_THRESHOLDS}
    m_ap = float(np.mean([np.mean(list(a.values())) for a in aps]))
    out = {
        "protocol": "instances",
        "n_images": int(pred.shape[0]),
        "f1": entry(curve_f1[bi], th),
        "precision": entry(tp / n_pred if n_pred else (1.0 if n_true == 0 else 0.0), th),
        "recall": entry(tp / n_true if n_true else 1.0, th),
        "accuracy": entry(tp / (tp + fp + fn) if (tp + fp + fn) else 1.0, th),
        "mean_ap": entry(m_ap, th),
        "iou_threshold": float(iou_threshold),
        "counts": {"tp": tp, "fp": fp, "fn": fn, "n_true": n_true, "n_pred": n_pred},
        "per_image": [
            {"index": k, "f1": m["f1"], "mean_ap": float(np.mean(list(a.values()))), "n_true": m["n_true"], "n_pred": m["n_pred"]}
            for k, (m, a) in enumerate(zip(ms, aps))
        ],
        "curves": {"iou_thresholds": list(DSB_THRESHOLDS), "ap": [ap_curve[t] for t in DSB_THRESHOLDS]},
        "notes": {
            "f1": f"objects matched one-to-one with IoU >= {iou_threshold}; counts pooled over images",
            "mean_ap": "DSB2018: AP(t) = TP/(TP+FP+FN) with IoU > t, t = 0.50..0.95, mean over t then images",
        },
    }
    if th is not None:
        out["curves"]["thresholds"] = thresholds
        out["curves"]["f1"] = curve_f1
    return out
