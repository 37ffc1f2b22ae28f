"""Output shift: annotations displaced from the image by a fraction of a pixel.

Training can estimate how far its labels sit from the structures they outline
(:mod:`unetseg.train.calibrate`); the model card stores that shift and inference moves the
probabilities by it after test-time augmentation, for a whole map (:func:`shift_probabilities`)
or for bands that arrive in order while streaming (:class:`RowShifter`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import ConfigError


def check_output_shift(shift: Sequence[float] | None, dims: int) -> tuple[float, ...] | None:
    """``shift`` as a tuple of ``dims`` floats within +-2 pixels, or None when absent or all zero."""
    if shift is None:
        return None
    try:
        values = tuple(float(v) for v in shift)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"output_shift {shift!r}: expected {dims} numbers (pixels per spatial axis)") from exc
    if len(values) != dims or not all(math.isfinite(v) and abs(v) <= 2.0 for v in values):
        raise ConfigError(f"output_shift {list(values)}: expected {dims} finite numbers within +-2 pixels")
    return values if any(values) else None


def shift_probabilities(probs: np.ndarray, shift: Sequence[float]) -> np.ndarray:
    """Move a ``(classes, *spatial)`` probability map by ``shift`` pixels, linearly interpolated.

    ``out[c, x] = probs[c, x - shift]`` (:func:`scipy.ndimage.shift` with ``order=1``); values
    beyond the image repeat the edge (``mode="nearest"``), and every output stays a probability
    distribution over the classes. This is how a model calibrated on annotations that are
    displaced from the image content (:func:`unetseg.train.calibrate.estimate_output_shift`)
    places its output where those annotations would be.

    Examples
    --------
    >>> p = np.array([[[0.0, 0.0, 1.0, 1.0]]])
    >>> shift_probabilities(p, (0, -0.5)).tolist()  # half a pixel to the left
    [[[0.0, 0.5, 1.0, 1.0]]]
    """
    from scipy import ndimage as ndi

    probs = np.asarray(probs, dtype=np.float32)
    if len(shift) != probs.ndim - 1:
        raise ValueError(f"shift {tuple(shift)} needs one value per spatial axis of {probs.shape[1:]}")
    return ndi.shift(probs, (0.0, *(float(s) for s in shift)), order=1, mode="nearest", prefilter=False)


class RowShifter:
    """Applies :func:`shift_probabilities` to bands that arrive in order along axis 0.

    Output row ``r`` needs input rows ``floor(r - s0)`` and the one after it, so a band can be
    emitted once the next band's first rows are known; bands are emitted late, never twice, and
    the result equals shifting the whole map at once (rows beyond the image repeat the edge).
    """

    def __init__(self, shift: Sequence[float], rows: int):
        self.shift = tuple(float(s) for s in shift)
        a = math.floor(-self.shift[0])
        self.before, self.after = max(0, -a), max(0, a + 1)
        self.rows = rows
        self.buf: np.ndarray | None = None  # input rows [buf_start, buf_start + len)
        self.buf_start = 0
        self.done = 0  # output rows emitted

    def push(self, start: int, band: np.ndarray) -> list[tuple[int, np.ndarray]]:
        if self.buf is None:
            self.buf, self.buf_start = band, start
        else:
            self.buf = np.concatenate([self.buf, band], axis=1)
        known = self.buf_start + self.buf.shape[1]
        stop = self.rows if known >= self.rows else max(self.done, known - self.after)
        if stop <= self.done:
            return []
        idx = np.clip(np.arange(self.done - self.before, stop + self.after), 0, self.rows - 1) - self.buf_start
        moved = shift_probabilities(np.take(self.buf, idx, axis=1), self.shift)
        out = [(self.done, moved[:, self.before : self.before + stop - self.done])]
        self.done = stop
        keep_from = max(0, self.done - self.before - self.buf_start)
        self.buf, self.buf_start = self.buf[:, keep_from:], self.buf_start + keep_from
        return out
