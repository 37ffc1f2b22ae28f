"""Output-shift calibration: where the annotations lie relative to the image content.

Annotations can be displaced from the image by a fraction of a pixel: in the ISBI 2012 labels
the membranes sit about half a pixel above the dark membrane pixels of the sections. A network
trained with rotations and flips cannot learn such an offset (every flip reverses it), so its
output is centred on the image content and every boundary pixel of the annotation is a coin
toss. After training, :func:`estimate_output_shift` finds the sub-pixel shift of the model's
probabilities that best explains the *training* annotations (never the validation or test
ones); the shift is stored in the model file (``extra["output_shift"]``) and
:func:`unetseg.inference.shift_probabilities` applies it after test-time augmentation.
Well-aligned annotations give a shift of zero, which changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

_EPS = 1e-6


@dataclass(frozen=True)
class CalibrationConfig:
    """Output-shift calibration at the end of training (see the module docstring).

    Attributes
    ----------
    output_shift : bool
        Estimate the shift on the training images and store it in the model file.
    max_shift : float
        Largest shift tried per axis, in pixels (at most 2).
    step : float
        Grid spacing of the search, in pixels.
    max_images : int
        Training images predicted for the estimate (evenly spaced through the list).
    min_gain : float
        Keep a shift only if it lowers the mean cross-entropy by at least this fraction;
        otherwise the shift is zero.
    """

    output_shift: bool = False
    max_shift: float = 1.0
    step: float = 0.25
    max_images: int = 8
    min_gain: float = 0.01

    def __post_init__(self) -> None:
        if not 0 < self.max_shift <= 2.0:
            raise ConfigError(f"calibration.max_shift: expected a value in (0, 2], got {self.max_shift}")
        if not 0 < self.step <= self.max_shift:
            raise ConfigError(f"calibration.step: expected a value in (0, max_shift], got {self.step}")
        if self.max_images < 1:
            raise ConfigError(f"calibration.max_images: must be >= 1, got {self.max_images}")
        if not 0 <= self.min_gain < 1:
            raise ConfigError(f"calibration.min_gain: expected a value in [0, 1), got {self.min_gain}")


def shift_cross_entropy(
    probs: Sequence[np.ndarray], targets: Sequence[np.ndarray], shift: Sequence[float], masks: Sequence[np.ndarray | None] | None = None
) -> float:
    """Mean cross-entropy of ``targets`` under ``probs`` moved by ``shift`` (pixels per axis).

    ``probs`` are ``(classes, *spatial)`` maps, ``targets`` integer class maps of the same
    spatial shape, ``masks`` (optional) True where a pixel counts.

    Examples
    --------
    >>> p = np.array([[[1.0, 1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0, 1.0]]])  # class 1 from x = 2
    >>> t = np.array([[0, 1, 1, 1]])  # annotated from x = 1
    >>> shift_cross_entropy([p], [t], (0, -1)) < shift_cross_entropy([p], [t], (0, 0))
    True
    """
    from ..inference import shift_probabilities

    total, count = 0.0, 0
    masks = masks if masks is not None else [None] * len(probs)
    for p, t, m in zip(probs, targets, masks):
        moved = shift_probabilities(p, shift) if any(shift) else np.asarray(p, np.float32)
        t = np.clip(np.asarray(t, np.int64), 0, moved.shape[0] - 1)  # ignored pixels may hold any value
        picked = np.take_along_axis(moved, t[None], axis=0)[0]
        nll = -np.log(np.clip(picked, _EPS, 1.0))
        if m is not None:
            nll = nll[np.asarray(m, bool)]
        total += float(nll.sum(dtype=np.float64))
        count += nll.size
    return total / max(count, 1)


def estimate_output_shift(
    probs: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    *,
    max_shift: float = 1.0,
    step: float = 0.25,
    min_gain: float = 0.01,
) -> tuple[tuple[float, ...], dict[str, Any]]:
    """The shift of ``probs`` (pixels per spatial axis) that best explains ``targets``.

    Searches the grid ``-max_shift, ..., max_shift`` (spacing ``step``) one axis at a time, two
    sweeps, minimising :func:`shift_cross_entropy`. A shift that lowers the cross-entropy by less
    than ``min_gain`` (a fraction) is reported as zero. Returns the shift and a report with the
    cross-entropy without and with it.

    Examples
    --------
    >>> t = np.zeros((24, 24), np.int64); t[8:16, 8:16] = 1        # an annotated square
    >>> from scipy import ndimage as ndi
    >>> fg = ndi.gaussian_filter(ndi.shift(t.astype(float), (1.0, 0), order=1), 1.0)  # seen 1 px lower
    >>> shift, report = estimate_output_shift([np.stack([1 - fg, fg])], [t])
    >>> shift
    (-1.0, 0.0)
    """
    if not probs or len(probs) != len(targets):
        raise ValueError(f"estimate_output_shift: {len(probs)} probability maps for {len(targets)} targets")
    dims = np.asarray(probs[0]).ndim - 1
    n = int(math.floor(max_shift / step + 1e-9))
    grid = [round(i * step, 6) for i in range(-n, n + 1)]
    cache: dict[tuple[float, ...], float] = {}

    def cost(s: tuple[float, ...]) -> float:
        if s not in cache:
            cache[s] = shift_cross_entropy(probs, targets, s, masks)
        return cache[s]

    zero = (0.0,) * dims
    best = zero
    for _ in range(2):
        for axis in range(dims):
            candidates = [best[:axis] + (g,) + best[axis + 1 :] for g in grid]
            best = min(candidates, key=lambda s: (cost(s), sum(abs(v) for v in s)))
    base, found = cost(zero), cost(best)
    kept = best if found < base * (1.0 - min_gain) else zero
    report = {"output_shift": list(kept), "best_shift": list(best), "cross_entropy_unshifted": base, "cross_entropy_shifted": found, "evaluated": len(cache)}
    return tuple(float(v) for v in kept), report


def calibrate_model(
    model: Any, items: Sequence[Any], cfg: CalibrationConfig, *, device: Any = None, precision: str = "fp32", channels_last: bool | str = "auto"
) -> tuple[tuple[float, ...], dict[str, Any]]:
    """Predict up to ``cfg.max_images`` training ``items`` (no TTA) and estimate their output shift
    through one :class:`~unetseg.inference.Predictor` (a copy of the weights)."""
    from ..inference import as_predictor
    from .validate import predict_probs

    if not items:
        raise ValueError("calibration needs at least one training image")
    idx = sorted({int(round(i)) for i in np.linspace(0, len(items) - 1, min(len(items), cfg.max_images))})
    chosen = [items[i] for i in idx]
    predictor = as_predictor(model, device=device, precision=precision, channels_last=channels_last)
    probs = [predict_probs(predictor, it.image, device=device, precision=precision) for it in chosen]
    targets = [np.asarray(it.target) for it in chosen]
    masks = [None if getattr(it, "ignore", None) is None else ~np.asarray(it.ignore, bool) for it in chosen]
    shift, report = estimate_output_shift(probs, targets, masks, max_shift=cfg.max_shift, step=cfg.step, min_gain=cfg.min_gain)
    report["images"] = [getattr(it, "name", str(i)) for i, it in zip(idx, chosen)]
    return shift, report
