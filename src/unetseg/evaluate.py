"""Evaluation protocols: sweep thresholds over probability maps, report each metric's best.

Every protocol returns the ``metrics.json`` dictionary: top-level metric entries of the form
``{"value": float, "threshold": float | None}``, plus ``curves`` (the value at every
threshold), ``per_image`` values and a few definitions under ``notes``.

* ``isbi2012`` (:func:`evaluate_isbi2012`): predicted maps are cell probabilities (high
  inside cells), the ground truth is 0 = membrane / nonzero = cell. One threshold for the
  whole stack; thresholds accumulate as ``th += 0.1`` in doubles.

  ============================== =========================================== ==============
  key                            definition                                  thresholds
  ============================== =========================================== ==============
  pixel_error                    min plain pixel error (pooled)              0.0 ... 0.9
  pixel_error_f1                 1 - max pixel F1, TP/FP/FN pooled           0.0 ... 0.9
  rand_error                     1 - max V_rand before thinning, pooled      0.0 ... 0.9
  v_rand                         max V_rand after thinning, per-slice mean   0.0 ... 1.0
  v_info                         max V_info after thinning, per-slice mean   0.0 ... 1.0
  warping_error                  min warping error, per-slice mean           0.0 ... 0.9
  warping_error_splits_mergers   min SPLIT+MERGE warping error               0.0 ... 0.9
  ============================== =========================================== ==============

* ``ctc`` (:func:`evaluate_ctc`): Cell Tracking Challenge SEG over instance labels.
* ``binary`` (:func:`evaluate_binary`): pooled Dice and IoU (best threshold for maps).
* ``instances`` (:func:`evaluate_instances`): object precision/recall/F1 at IoU 0.5 and the
  DSB2018 mean AP.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import list_images, read_image
from .metrics import (
    DSB_THRESHOLDS,
    PixelCounts,
    RandPairs,
    average_precision,
    binarize,
    dice_from_counts,
    iou_from_counts,
    isbi_thresholds,
    label4,
    match_instances,
    pixel_counts,
    rand_index,
    rand_pairs,
    rand_scores,
    seg_jaccards,
    thin_boundaries,
    v_info,
    warping_error,
)

log = logging.getLogger(__name__)

PROTOCOLS = ("isbi2012", "ctc", "binary", "instances")

#: Keys of the isbi2012 protocol, in the order they are reported.
ISBI_KEYS = (
    "pixel_error",
    "pixel_error_f1",
    "rand_error",
    "v_rand",
    "v_info",
    "warping_error",
    "warping_error_splits_mergers",
)


# --------------------------------------------------------------------------- loading


def load_stack(path: str | os.PathLike) -> np.ndarray:
    """Load a single image, a multi-page TIFF or a folder of slices as a ``(Z, Y, X)`` array.

    A 2D image becomes a stack of one. Greyscale PNG/JPEG stored as RGB(A) with equal
    colour channels is reduced to one channel; real colour is refused.

    Raises
    ------
    InputError
        Missing or unreadable files, an empty folder, colour images, slices of different
        shapes, or more than three dimensions.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from unetseg.io import write_image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for i in range(3):
    ...     write_image(d / f"s{i}.tif", np.full((4, 5), i, np.uint8))
    >>> load_stack(d).shape
    (3, 4, 5)
    """
    path = Path(path)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise InputError(f"{path}: folder holds no images")
        slices = [_as_slice(read_image(f), f) for f in files]
        shapes = {s.shape for s in slices}
        if len(shapes) > 1:
            raise InputError(f"{path}: slices differ in shape ({', '.join(str(s) for s in sorted(shapes))})")
        return np.stack(slices)
    arr = read_image(path)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and path.suffix.lower() in (".png", ".jpg", ".jpeg"):
        return _as_slice(arr, path)[None]
    arr = np.squeeze(arr) if arr.ndim > 3 else arr
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise InputError(f"{path}: expected a 2D image or a stack of 2D slices, got shape {arr.shape}")
    return arr


def stack_names(path: str | os.PathLike, count: int) -> list[str]:
    """Names for the slices of :func:`load_stack` (file stems for folders, ``name[i]`` else)."""
    path = Path(path)
    if path.is_dir():
        names = [f.stem for f in list_images(path)]
        if len(names) == count:
            return names
    if count == 1:
        return [path.stem]
    return [f"{path.stem}[{i}]" for i in range(count)]


def _as_slice(arr: np.ndarray, path) -> np.ndarray:
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):
        rgb = arr[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise InputError(f"{path}: colour image; expected a greyscale probability or label image")
        return rgb[..., 0]
    arr = np.squeeze(arr) if arr.ndim > 2 else arr
    if arr.ndim != 2:
        raise InputError(f"{path}: expected a 2D slice, got shape {arr.shape}")
    return arr


def _as_stack(x, name: str) -> np.ndarray:
    if isinstance(x, (str, os.PathLike)):
        return load_stack(x)
    if isinstance(x, (list, tuple)):
        arrs = [np.asarray(a) for a in x]
        if len({a.shape for a in arrs}) > 1:
            raise InputError(f"{name}: images differ in shape")
        return np.stack(arrs) if arrs else np.zeros((0, 0, 0))
    arr = np.asarray(x)
    if arr.ndim == 2:
        return arr[None]
    if arr.ndim != 3:
        raise InputError(f"{name}: expected a 2D image or a (Z, Y, X) stack, got shape {arr.shape}")
    return arr


def _check_pair(pred: np.ndarray, gt: np.ndarray) -> None:
    if pred.shape != gt.shape:
        raise InputError(f"prediction and ground truth differ in shape: {pred.shape} vs {gt.shape} (Z, Y, X)")
    if pred.shape[0] == 0:
        raise InputError("no images to evaluate")


def as_probability(pred: np.ndarray, name: str = "prediction") -> np.ndarray:
    """A probability map in [0, 1]: floats as they are, integers divided by their dtype's max.

    Float32 maps stay float32, so thresholds compare exactly as the reference does.

    Examples
    --------
    >>> as_probability(np.array([0, 255], np.uint8)).tolist()
    [0.0, 1.0]
    """
    arr = np.asarray(pred)
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if np.issubdtype(arr.dtype, np.integer):
        top = np.iinfo(arr.dtype).max
        if arr.size and arr.min() < 0:
            raise InputError(f"{name}: negative values in an integer probability map")
        return (arr.astype(np.float64) / top).astype(np.float32)
    if not np.issubdtype(arr.dtype, np.floating):
        raise InputError(f"{name}: expected a float probability map, got {arr.dtype}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise InputError(f"{name}: probability map holds NaN or Inf")
    if arr.size and (arr.min() < -_TOLERANCE or arr.max() > 1 + _TOLERANCE):
        raise InputError(f"{name}: probability map outside [0, 1] (min {arr.min():g}, max {arr.max():g}); expected cell probabilities")
    if arr.size and (arr.min() < 0 or arr.max() > 1):  # rounding noise of a softmax: clip
        arr = np.clip(arr, 0, 1).astype(arr.dtype, copy=False)
    return arr


_TOLERANCE = 1e-6


def _best(values, thresholds, mode: str) -> tuple[float, float]:
    """First best value (strict improvement, as the reference loops) and its threshold."""
    best_v, best_t = None, None
    for v, t in zip(values, thresholds):
        if v is None or not np.isfinite(v):
            continue
        if best_v is None or (v < best_v if mode == "min" else v > best_v):
            best_v, best_t = v, t
    if best_v is None:
        return float("nan"), float("nan")
    return float(best_v), float(best_t)


def _index(thresholds: list[float], th: float) -> int:
    return thresholds.index(th) if th in thresholds else 0


def _entry(value: float, threshold) -> dict:
    return {"value": float(value), "threshold": None if threshold is None else float(threshold)}


def _progress(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False)


# --------------------------------------------------------------------------- isbi2012


def evaluate_isbi2012(
    prob_stack,
    gt_stack,
    *,
    progress: bool = False,
    thresholds: Sequence[float] | None = None,
    thresholds_thinned: Sequence[float] | None = None,
) -> dict:
    """The ISBI 2012 protocol on a stack of cell-probability maps against 0/255 labels.

    Parameters
    ----------
    prob_stack : array-like or path
        ``(Z, Y, X)`` or ``(Y, X)`` float map in [0, 1], high inside cells (integer maps are
        scaled by their dtype's maximum).
    gt_stack : array-like or path
        Same shape; 0 = membrane, nonzero = cell.
    progress : bool
        Show a progress bar over thresholds.
    thresholds, thresholds_thinned : sequences of float, optional
        Override the sweeps (default: the challenge's 0.0 ... 0.9 and 0.0 ... 1.0). A short
        list such as ``[0.5]`` gives a quick validation score during training; such numbers
        are not comparable with the challenge's.

    Returns
    -------
    dict
        The ``metrics.json`` content (see the module docstring for the keys).
    """
    prob = as_probability(_as_stack(prob_stack, "prediction"))
    gt = _as_stack(gt_stack, "ground truth")
    _check_pair(prob, gt)
    z = prob.shape[0]
    th10 = isbi_thresholds(0.9) if thresholds is None else [float(t) for t in thresholds]
    th11 = isbi_thresholds(1.0) if thresholds_thinned is None else [float(t) for t in thresholds_thinned]
    if not th10 or not th11:
        raise InputError("threshold lists must not be empty")
    gt_fg = [g > 0 for g in gt]
    gt_lab = [label4(g)[0] for g in gt_fg]

    pe, f1, vr_pooled, vr_pooled_merge, vr_pooled_split, rand_classic, we, wsm = [], [], [], [], [], [], [], []
    n_merge, n_split = [], []
    per_pe = np.zeros((len(th10), z))
    per_we = np.zeros((len(th10), z))
    per_wsm = np.zeros((len(th10), z))
    for ti, th in enumerate(_progress(th10, progress, "isbi2012 (warping)")):
        counts = PixelCounts(0, 0, 0, 0)
        pairs = RandPairs(0.0, 0.0, 0.0, 0)
        ri = []
        merges = splits = 0
        for k in range(z):
            b = binarize(prob[k], th)
            c = pixel_counts(gt_fg[k], b)
            counts = counts + c
            per_pe[ti, k] = c.error
            lab = label4(b)[0]
            pairs = pairs + rand_pairs(gt_lab[k], lab)
            ri.append(rand_index(gt_lab[k], lab))
            w = warping_error(gt_fg[k], prob[k], th)
            per_we[ti, k] = w.error
            per_wsm[ti, k] = w.splits_mergers_error
            merges += w.counts["merge"]
            splits += w.counts["split"]
        pe.append(counts.error)
        f1.append(counts.f1)
        scores = pairs.scores()
        vr_pooled.append(scores.v_rand)
        vr_pooled_merge.append(scores.merge)
        vr_pooled_split.append(scores.split)
        n_merge.append(merges)
        n_split.append(splits)
        rand_classic.append(1.0 - float(np.mean(ri)))
        we.append(float(per_we[ti].mean()))
        wsm.append(float(per_wsm[ti].mean()))

    per_vr = np.zeros((len(th11), z))
    per_vi = np.zeros((len(th11), z))
    vr_merge, vr_split, vi_merge, vi_split = [], [], [], []
    for ti, th in enumerate(_progress(th11, progress, "isbi2012 (thinned)")):
        m_r, s_r, m_i, s_i = [], [], [], []
        for k in range(z):
            thin = thin_boundaries(binarize(prob[k], th))
            r = rand_scores(gt_lab[k], thin)
            i = v_info(gt_lab[k], thin)
            per_vr[ti, k], per_vi[ti, k] = r.v_rand, i.v_info
            m_r.append(r.merge)
            s_r.append(r.split)
            m_i.append(i.merge)
            s_i.append(i.split)
        vr_merge.append(float(np.nanmean(m_r)))
        vr_split.append(float(np.nanmean(s_r)))
        vi_merge.append(float(np.nanmean(m_i)))
        vi_split.append(float(np.nanmean(s_i)))
    vr = [float(np.nanmean(per_vr[t])) for t in range(len(th11))]
    vi = [float(np.nanmean(per_vi[t])) for t in range(len(th11))]

    out: dict = {"protocol": "isbi2012", "n_images": z, "shape": list(prob.shape[1:])}
    at_half = float(np.mean([np.mean(binarize(p, 0.5) != g) for p, g in zip(prob, gt_fg)]))
    if at_half > 0.5:  # worse than chance at 0.5: most likely a membrane map
        msg = (
            f"the prediction looks inverted: pixel error {at_half:.3f} at th = 0.5, {1 - at_half:.3f} with 1 - prob; "
            "isbi2012 expects maps high inside cells (1 - p(membrane))"
        )
        log.warning(msg)
        out["warnings"] = [msg]
    v, t = _best(pe, th10, "min")
    out["pixel_error"] = _entry(v, t)
    v, t = _best(f1, th10, "max")
    out["pixel_error_f1"] = _entry(1.0 - v, t)
    v, t = _best(vr_pooled, th10, "max")
    out["rand_error"] = _entry(1.0 - v, t)
    v, t_vr = _best(vr, th11, "max")
    out["v_rand"] = _entry(v, t_vr)
    v, t_vi = _best(vi, th11, "max")
    out["v_info"] = _entry(v, t_vi)
    v, t_we = _best(we, th10, "min")
    out["warping_error"] = _entry(v, t_we)
    v, t_sm = _best(wsm, th10, "min")
    out["warping_error_splits_mergers"] = _entry(v, t_sm)
    v, t = _best(rand_classic, th10, "min")
    out["rand_error_classic"] = _entry(v, t)

    i10 = {key: _index(th10, out[key]["threshold"]) for key in ("pixel_error", "warping_error", "warping_error_splits_mergers")}
    i11 = {"v_rand": _index(th11, t_vr), "v_info": _index(th11, t_vi)}
    out["per_image"] = [
        {
            "index": k,
            "pixel_error": float(per_pe[i10["pixel_error"], k]),
            "warping_error": float(per_we[i10["warping_error"], k]),
            "warping_error_splits_mergers": float(per_wsm[i10["warping_error_splits_mergers"], k]),
            "v_rand": float(per_vr[i11["v_rand"], k]),
            "v_info": float(per_vi[i11["v_info"], k]),
        }
        for k in range(z)
    ]
    out["curves"] = {
        "thresholds": th10,
        "pixel_error": pe,
        "pixel_f1": f1,
        "v_rand_before_thinning_pooled": vr_pooled,
        "v_rand_before_thinning_merge": vr_pooled_merge,
        "v_rand_before_thinning_split": vr_pooled_split,
        "rand_error_classic": rand_classic,
        "warping_error": we,
        "warping_error_splits_mergers": wsm,
        "warping_merge_pixels": n_merge,
        "warping_split_pixels": n_split,
        "thresholds_thinned": th11,
        "v_rand": vr,
        "v_rand_merge": vr_merge,
        "v_rand_split": vr_split,
        "v_info": vi,
        "v_info_merge": vi_merge,
        "v_info_split": vi_split,
    }
    out["notes"] = {
        "binarisation": "cell = prob > th, map widened to float64; th accumulates as th += 0.1",
        "pixel_error": "plain pixel error, pooled over slices (min over th 0.0..0.9)",
        "pixel_error_f1": "1 - max pixel F1 with cell positive, TP/FP/FN pooled over slices",
        "rand_error": "1 - max foreground-restricted V_rand before thinning, pair counts pooled over slices",
        "v_rand": "max over th 0.0..1.0 of the per-slice mean V_rand after 4-connected watershed thinning",
        "v_info": "max over th 0.0..1.0 of the per-slice mean V_info after thinning",
        "warping_error": "min over th 0.0..0.9 of the per-slice mean warping error (4/8 simple points)",
        "warping_error_splits_mergers": "min over th 0.0..0.9 of the SPLIT+MERGE mismatch pixels / all pixels",
        "rand_error_classic": "1 - classic Rand index (label 0 an ordinary cluster), per-slice mean; not ranked by the challenge",
    }
    return out


def isbi_error_maps(prob_stack, gt_stack, threshold: float) -> list[np.ndarray]:
    """Per slice, a uint8 image of warping-mismatch classes at ``threshold`` (0 elsewhere).

    Values are the :mod:`unetseg.metrics.warping` class codes (MERGE = 1, SPLIT = 2, ...).
    """
    prob = as_probability(_as_stack(prob_stack, "prediction"))
    gt = _as_stack(gt_stack, "ground truth")
    _check_pair(prob, gt)
    return [warping_error(g > 0, p, threshold).class_image() for p, g in zip(prob, gt)]


# --------------------------------------------------------------------------- instances


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
    pred = _as_stack(pred_labels, "prediction")
    gt = _as_stack(gt_labels, "ground truth")
    _check_pair(pred, gt)
    all_j, per = [], []
    for k in range(pred.shape[0]):
        j = seg_jaccards(as_instances(gt[k]), as_instances(pred[k]))
        all_j.append(j)
        per.append({"index": k, "seg": float(j.mean()) if j.size else None, "n_objects": int(j.size)})
    pooled = np.concatenate(all_j) if all_j else np.zeros(0)
    seg = float(pooled.mean()) if pooled.size else float("nan")
    return {
        "protocol": "ctc",
        "n_images": int(pred.shape[0]),
        "seg": _entry(seg, None),
        "n_objects": int(pooled.size),
        "per_image": per,
        "notes": {"seg": "mean Jaccard over reference objects pooled across frames; match iff |R∩S| > 0.5|R|"},
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
        "dice": _entry(d_curve[bi], thresholds[bi]),
        "iou": _entry(i_curve[bj], thresholds[bj]),
        "dice_mean_per_image": _entry(float(np.mean(per_image_dice[bi])), thresholds[bi]),
        "per_image": per,
        "notes": {"dice": "pooled over images (TP/FP/FN summed); empty vs empty = 1", "iou": "pooled over images"},
    }
    if thresholds[0] is not None:
        out["curves"] = {"thresholds": thresholds, "dice": d_curve, "iou": i_curve}
    return out


def evaluate_instances(pred, gt, *, iou_threshold: float = 0.5) -> dict:
    """Object precision/recall/F1/accuracy at IoU ``iou_threshold`` and DSB2018 mean AP.

    ``pred`` holds instance labels, binary masks (split into 4-connected components) or a
    probability map (binarised at th = 0.0 ... 0.9, keeping the threshold with the best F1).
    Counts are pooled over images; mean AP is averaged per image.
    """
    pred = _as_stack(pred, "prediction")
    gt = _as_stack(gt, "ground truth")
    _check_pair(pred, gt)
    gts = [as_instances(g) for g in gt]
    thresholds = isbi_thresholds(0.9) if _is_probability(pred) else [None]
    curve_f1, results = [], []
    for th in thresholds:
        preds = [as_instances(p, 0.5 if th is None else th) for p in pred]
        ms = [match_instances(g, p, iou_threshold) for g, p in zip(gts, preds)]
        tp = sum(m["tp"] for m in ms)
        n_true = sum(m["n_true"] for m in ms)
        n_pred = sum(m["n_pred"] for m in ms)
        f1 = 2 * tp / (n_true + n_pred) if (n_true + n_pred) else 1.0
        curve_f1.append(f1)
        results.append((preds, ms, tp, n_true, n_pred))
    bi = int(np.argmax(curve_f1))
    th = thresholds[bi]
    preds, ms, tp, n_true, n_pred = results[bi]
    fp, fn = n_pred - tp, n_true - tp
    aps = [average_precision(g, p) for g, p in zip(gts, preds)]
    ap_curve = {t: float(np.mean([a[t] for a in aps])) for t in DSB_THRESHOLDS}
    m_ap = float(np.mean([np.mean(list(a.values())) for a in aps]))
    out = {
        "protocol": "instances",
        "n_images": int(pred.shape[0]),
        "f1": _entry(curve_f1[bi], th),
        "precision": _entry(tp / n_pred if n_pred else (1.0 if n_true == 0 else 0.0), th),
        "recall": _entry(tp / n_true if n_true else 1.0, th),
        "accuracy": _entry(tp / (tp + fp + fn) if (tp + fp + fn) else 1.0, th),
        "mean_ap": _entry(m_ap, th),
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


# --------------------------------------------------------------------------- dispatch


def run_protocol(protocol: str, pred, gt, *, progress: bool = False) -> dict:
    """Evaluate ``pred`` against ``gt`` (arrays or paths) with a named protocol.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> run_protocol("ctc", gt, gt)["seg"]
    {'value': 1.0, 'threshold': None}
    """
    if protocol not in PROTOCOLS:
        raise InputError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    log.debug("evaluating with protocol %s", protocol)
    if protocol == "isbi2012":
        return evaluate_isbi2012(pred, gt, progress=progress)
    if protocol == "ctc":
        return evaluate_ctc(pred, gt)
    if protocol == "binary":
        return evaluate_binary(pred, gt)
    return evaluate_instances(pred, gt)


def headline(metrics: dict) -> list[tuple[str, float, float | None]]:
    """``(name, value, threshold)`` rows of the top-level ``{"value", "threshold"}`` entries."""
    rows = []
    for key, val in metrics.items():
        if isinstance(val, dict) and "value" in val and "threshold" in val:
            rows.append((key, val["value"], val["threshold"]))
    return rows


# --------------------------------------------------------------------------- output


def jsonable(obj):
    """A copy of ``obj`` with NaN/Inf replaced by ``None`` and NumPy scalars as Python numbers."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if np.isfinite(f) else None
    return obj


def write_metrics(out_dir, metrics: dict) -> tuple[Path, Path]:
    """Write ``metrics.json`` and ``metrics.csv`` (metric, value, threshold) atomically.

    Examples
    --------
    >>> import tempfile, json
    >>> d = tempfile.mkdtemp()
    >>> j, c = write_metrics(d, {"seg": {"value": 0.5, "threshold": None}})
    >>> json.loads(j.read_text())["seg"]["value"], c.read_text().splitlines()[1]
    (0.5, 'seg,0.5,')
    """
    import csv
    import io
    import json

    from .atomic import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    clean = jsonable(metrics)
    json_path = out / "metrics.json"
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["metric", "value", "threshold"])
    for name, value, threshold in headline(clean):
        writer.writerow([name, "" if value is None else repr(float(value)), "" if threshold is None else repr(float(threshold))])
    csv_path = out / "metrics.csv"
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buf.getvalue(), encoding="utf-8")
    return json_path, csv_path


def format_table(metrics: dict) -> str:
    """The headline metrics as an aligned text table."""
    rows = headline(metrics)
    width = max([len(r[0]) for r in rows] + [6])
    lines = [f"{'metric':<{width}}  {'value':>12}  threshold"]
    for name, value, threshold in rows:
        v = "nan" if value is None or not np.isfinite(value) else f"{value:.6g}"
        t = "" if threshold is None or not np.isfinite(threshold) else f"{threshold:.6g}"
        lines.append(f"{name:<{width}}  {v:>12}  {t}")
    return "\n".join(lines)


def evaluate_to_folder(
    protocol: str,
    pred,
    gt,
    out_dir,
    *,
    images=None,
    names: Sequence[str] | None = None,
    report: bool = True,
    max_report_images: int = 12,
    progress: bool = False,
    extra: dict | None = None,
) -> dict:
    """Evaluate and write ``metrics.json``, ``metrics.csv`` and (optionally) ``report.html``.

    What ``unetseg evaluate`` does, as one call for the demo and for training. ``pred``,
    ``gt`` and ``images`` are arrays (``(Z, Y, X)`` or 2D) or paths; ``extra`` is merged
    into the metrics dictionary before writing (for example the inputs' names).

    Returns
    -------
    dict
        The metrics, as written to ``metrics.json`` (before NaN became ``null``).
    """
    pred_arr = _as_stack(pred, "prediction")
    gt_arr = _as_stack(gt, "ground truth")
    _check_pair(pred_arr, gt_arr)
    img_arr = None
    if images is not None and report:
        img_arr = _as_stack(images, "images")
        if img_arr.shape != pred_arr.shape:
            raise InputError(f"images: shape {img_arr.shape} differs from the predictions' {pred_arr.shape} (Z, Y, X)")
    metrics = run_protocol(protocol, pred_arr, gt_arr, progress=progress)
    if extra:
        metrics.update(extra)
    write_metrics(out_dir, metrics)
    if report:
        from .report import write_report

        error_maps, th = None, None
        if protocol == "isbi2012":
            th = metrics["warping_error_splits_mergers"]["threshold"]
            n = min(len(pred_arr), max_report_images)
            if np.isfinite(th):
                error_maps = isbi_error_maps(pred_arr[:n], gt_arr[:n], th)
        elif protocol == "binary":
            th = metrics["dice"]["threshold"]
        elif protocol == "instances":
            th = metrics["f1"]["threshold"]
        write_report(
            out_dir,
            metrics,
            img_arr,
            gt_arr,
            pred_arr,
            names=names,
            error_maps=error_maps,
            pred_threshold=th,
            title=f"unetseg evaluate ({protocol})",
            max_images=max_report_images,
        )
    return metrics
