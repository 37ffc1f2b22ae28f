"""The ISBI 2012 protocol: one threshold sweep over a stack of cell-probability maps.

Two sweeps, as the challenge's scripts run them: the plain one (``0.0 ... 0.9``: pixel error,
pixel F1, Rand error before thinning, warping error) and the thinned one (``0.0 ... 1.0``:
V_rand and V_info after 4-connected watershed thinning of the binarised map). Each metric is
reported at its own best threshold; the module docstring of :mod:`unetseg.evaluate` lists them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..errors import InputError
from ..metrics import (
    PixelCounts,
    RandPairs,
    binarize,
    isbi_thresholds,
    label4,
    pixel_counts,
    rand_index,
    rand_pairs,
    rand_scores,
    thin_boundaries,
    v_info,
    warping_error,
)
from .common import best, entry, index_of, progress_over
from .stacks import _as_stack, _check_pair, as_probability

log = logging.getLogger(__name__)

NOTES = {
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


def _plain_at(prob: np.ndarray, gt_fg, gt_lab, th: float) -> dict:
    """Pooled counts and per-slice errors of the plain metrics at one threshold."""
    counts, pairs = PixelCounts(0, 0, 0, 0), RandPairs(0.0, 0.0, 0.0, 0)
    ri, pe, we, wsm, merges, splits = [], [], [], [], 0, 0
    for k in range(prob.shape[0]):
        b = binarize(prob[k], th)
        c = pixel_counts(gt_fg[k], b)
        counts = counts + c
        pe.append(c.error)
        lab = label4(b)[0]
        pairs = pairs + rand_pairs(gt_lab[k], lab)
        ri.append(rand_index(gt_lab[k], lab))
        w = warping_error(gt_fg[k], prob[k], th)
        we.append(w.error)
        wsm.append(w.splits_mergers_error)
        merges += w.counts["merge"]
        splits += w.counts["split"]
    scores = pairs.scores()
    return {"pixel_error": counts.error, "pixel_f1": counts.f1, "v_rand_before_thinning_pooled": scores.v_rand,
            "v_rand_before_thinning_merge": scores.merge, "v_rand_before_thinning_split": scores.split,
            "rand_error_classic": 1.0 - float(np.mean(ri)), "warping_error": float(np.mean(we)),
            "warping_error_splits_mergers": float(np.mean(wsm)), "warping_merge_pixels": merges, "warping_split_pixels": splits,
            "per_pe": pe, "per_we": we, "per_wsm": wsm}


def _thinned_at(prob: np.ndarray, gt_lab, th: float) -> dict:
    """Per-slice V_rand and V_info (and their merge/split parts) after thinning at one threshold."""
    vr, vi, m_r, s_r, m_i, s_i = [], [], [], [], [], []
    for k in range(prob.shape[0]):
        thin = thin_boundaries(binarize(prob[k], th))
        r, i = rand_scores(gt_lab[k], thin), v_info(gt_lab[k], thin)
        vr.append(r.v_rand)
        vi.append(i.v_info)
        m_r.append(r.merge)
        s_r.append(r.split)
        m_i.append(i.merge)
        s_i.append(i.split)
    return {"v_rand": float(np.nanmean(vr)), "v_rand_merge": float(np.nanmean(m_r)), "v_rand_split": float(np.nanmean(s_r)),
            "v_info": float(np.nanmean(vi)), "v_info_merge": float(np.nanmean(m_i)), "v_info_split": float(np.nanmean(s_i)),
            "per_vr": vr, "per_vi": vi}


def _sweep(fn, thresholds, progress: bool, desc: str) -> tuple[dict[str, list], dict[str, np.ndarray]]:
    """``fn(th)`` over ``thresholds``: curves (one value per threshold) and per-slice tables."""
    rows = [fn(th) for th in progress_over(thresholds, progress, desc)]
    curves = {k: [r[k] for r in rows] for k in rows[0] if not k.startswith("per_")}
    per = {k: np.asarray([r[k] for r in rows], dtype=np.float64) for k in rows[0] if k.startswith("per_")}
    return curves, per


def _headline(c10: dict, c11: dict, th10: list, th11: list) -> dict:
    """Each ranked metric at its best threshold."""
    out = {}
    for key, curve, ths, mode, flip in (
        ("pixel_error", c10["pixel_error"], th10, "min", False),
        ("pixel_error_f1", c10["pixel_f1"], th10, "max", True),
        ("rand_error", c10["v_rand_before_thinning_pooled"], th10, "max", True),
        ("v_rand", c11["v_rand"], th11, "max", False),
        ("v_info", c11["v_info"], th11, "max", False),
        ("warping_error", c10["warping_error"], th10, "min", False),
        ("warping_error_splits_mergers", c10["warping_error_splits_mergers"], th10, "min", False),
        ("rand_error_classic", c10["rand_error_classic"], th10, "min", False),
    ):
        v, t = best(curve, ths, mode)
        out[key] = entry(1.0 - v if flip else v, t)
    return out


def _inversion_warning(prob: np.ndarray, gt_fg) -> str | None:
    at_half = float(np.mean([np.mean(binarize(p, 0.5) != g) for p, g in zip(prob, gt_fg)]))
    if at_half <= 0.5:
        return None
    return (f"the prediction looks inverted: pixel error {at_half:.3f} at th = 0.5, {1 - at_half:.3f} with 1 - prob; "
            "isbi2012 expects maps high inside cells (1 - p(membrane))")


def evaluate_isbi2012(prob_stack, gt_stack, *, progress: bool = False, thresholds: Sequence[float] | None = None,
                      thresholds_thinned: Sequence[float] | None = None) -> dict:
    """The ISBI 2012 protocol on a stack of cell-probability maps against 0/255 labels.

    ``prob_stack`` is a ``(Z, Y, X)`` or ``(Y, X)`` float map in [0, 1], high inside cells
    (integer maps are scaled by their dtype's maximum), or its path; ``gt_stack`` the same shape
    with 0 = membrane, nonzero = cell. ``thresholds``/``thresholds_thinned`` override the sweeps
    (default: the challenge's 0.0 ... 0.9 and 0.0 ... 1.0); a short list such as ``[0.5]``
    gives a quick score that is not comparable with the challenge's. Returns the
    ``metrics.json`` content.
    """
    prob = as_probability(_as_stack(prob_stack, "prediction"))
    gt = _as_stack(gt_stack, "ground truth")
    _check_pair(prob, gt)
    th10 = isbi_thresholds(0.9) if thresholds is None else [float(t) for t in thresholds]
    th11 = isbi_thresholds(1.0) if thresholds_thinned is None else [float(t) for t in thresholds_thinned]
    if not th10 or not th11:
        raise InputError("threshold lists must not be empty")
    gt_fg = [g > 0 for g in gt]
    gt_lab = [label4(g)[0] for g in gt_fg]
    c10, p10 = _sweep(lambda th: _plain_at(prob, gt_fg, gt_lab, th), th10, progress, "isbi2012 (warping)")
    c11, p11 = _sweep(lambda th: _thinned_at(prob, gt_lab, th), th11, progress, "isbi2012 (thinned)")
    out: dict = {"protocol": "isbi2012", "n_images": int(prob.shape[0]), "shape": list(prob.shape[1:])}
    warning = _inversion_warning(prob, gt_fg)
    if warning:
        log.warning(warning)
        out["warnings"] = [warning]
    out.update(_headline(c10, c11, th10, th11))
    at = {k: index_of(th10, out[k]["threshold"]) for k in ("pixel_error", "warping_error", "warping_error_splits_mergers")}
    at.update({k: index_of(th11, out[k]["threshold"]) for k in ("v_rand", "v_info")})
    tables = {"pixel_error": p10["per_pe"], "warping_error": p10["per_we"], "warping_error_splits_mergers": p10["per_wsm"],
              "v_rand": p11["per_vr"], "v_info": p11["per_vi"]}
    out["per_image"] = [{"index": k, **{key: float(tables[key][at[key], k]) for key in tables}} for k in range(prob.shape[0])]
    out["curves"] = {"thresholds": th10, **c10, "thresholds_thinned": th11, **c11}
    out["notes"] = dict(NOTES)
    return out


def isbi_error_maps(prob_stack, gt_stack, threshold: float) -> list[np.ndarray]:
    """Per slice, a uint8 image of warping-mismatch classes at ``threshold`` (0 elsewhere).

    Values are the :mod:`unetseg.metrics.warping` class codes (MERGE = 1, SPLIT = 2, ...).
    """
    prob = as_probability(_as_stack(prob_stack, "prediction"))
    gt = _as_stack(gt_stack, "ground truth")
    _check_pair(prob, gt)
    return [warping_error(g > 0, p, threshold).class_image() for p, g in zip(prob, gt)]
