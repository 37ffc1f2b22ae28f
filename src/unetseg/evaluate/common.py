"""Helpers shared by the protocols: the best value over a threshold sweep, metric entries."""

from __future__ import annotations

import numpy as np


def best(values, thresholds, mode: str) -> tuple[float, float]:
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


def index_of(thresholds: list[float], th: float) -> int:
    return thresholds.index(th) if th in thresholds else 0


def entry(value: float, threshold) -> dict:
    return {"value": float(value), "threshold": None if threshold is None else float(threshold)}


def progress_over(iterable, enabled: bool, desc: str):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, leave=False)
