"""Foreground-restricted information-theoretic score V_info (ISBI 2012, after Fiji).

Same restriction and singletons as V_rand, with ``p_ij = n_ij / n`` (natural logarithms)::

    H(T)   = -Σ t_i log t_i
    H(S)   = -Σ s_j log s_j + (z/n) log n
    H(S,T) = -Σ p_ij log p_ij + (z/n) log n
    I = H(S) + H(T) - H(S,T),   V_info = 2I / (H(S) + H(T))

split score = I/H(T), merge score = I/H(S). The reference's edge cases: H(T) = 0 gives
(split, merge) = (0, 1), H(S) = 0 gives (1, 0); either way V_info = 0. Note that
``skimage.metrics.variation_of_information`` is the unnormalised VI, a different number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._common import foreground_pixels, overlap_counts


@dataclass(frozen=True)
class InfoScores:
    """V_info with its split and merge parts and the entropies (nats)."""

    v_info: float
    split: float
    merge: float
    h_gt: float
    h_pred: float
    mutual_information: float


def _plogp(counts: np.ndarray, n: float) -> float:
    p = counts.astype(np.float64) / n
    p = p[p > 0]
    return float(np.sum(p * np.log(p)))


def v_info(gt_labels: np.ndarray, pred_labels: np.ndarray) -> InfoScores:
    """Foreground-restricted V_info of predicted segments against ground-truth segments.

    Examples
    --------
    >>> gt = np.array([[1, 1, 0, 2, 2]])
    >>> v_info(gt, gt).v_info
    1.0
    >>> v_info(np.array([[1, 1, 1]]), np.array([[1, 1, 1]])).v_info  # H(GT) = 0
    0.0
    """
    g, p = foreground_pixels(gt_labels, pred_labels)
    n = float(g.size)
    if n == 0:
        nan = float("nan")
        return InfoScores(nan, nan, nan, nan, nan, nan)
    nij, t, s, zi = overlap_counts(g, p)
    z = float(zi)
    singles = (z / n) * np.log(n)
    h_t = -_plogp(t, n)
    h_s = -_plogp(s, n) + singles
    h_st = -_plogp(nij, n) + singles
    mi = h_s + h_t - h_st
    split = mi / h_t if h_t != 0 else 0.0
    merge = mi / h_s if h_s != 0 else 0.0
    if h_t == 0:
        split, merge = 0.0, 1.0
    if h_s == 0:
        split, merge = 1.0, 0.0
    den = split + merge
    score = 2 * split * merge / den if den > 0 else 0.0
    return InfoScores(float(score), float(split), float(merge), float(h_t), float(h_s), float(mi))
