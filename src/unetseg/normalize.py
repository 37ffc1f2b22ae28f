"""Input intensity normalisation, stored with the model so prediction repeats what training did.

Two variants of the same definition, side by side:

- :func:`normalize` scales an image held in memory (training, ``predict_image`` callers);
- :func:`fit_normalization` computes the same image-wide statistics band by band over a source
  that may not fit in memory and returns a function that normalises any window of it
  (``predict_file``, Dask). Both give the same result on the same image (tested).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .errors import ConfigError, InputError

METHODS = ("percentile", "minmax", "dtype", "zscore", "none")
DEFAULT = {"method": "percentile", "low": 1.0, "high": 99.8}
_SAMPLE_LIMIT = 1 << 24  # elements per channel used for float percentiles of a streamed source
_BAND_ELEMENTS = 1 << 24  # elements read at a time while streaming statistics


def _method(spec: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    spec = dict(DEFAULT if spec is None else spec)
    method = spec.pop("method", "percentile")
    if method not in METHODS:
        raise ConfigError(f"normalization method {method!r}: expected one of {', '.join(METHODS)}")
    return method, spec


def _check_pixels(dtype: np.dtype) -> None:
    if np.dtype(dtype).kind not in "biuf":
        raise InputError(f"cannot normalise an image of dtype {dtype}: expected integer or float pixels")


def _check_finite(block: np.ndarray) -> None:
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        raise InputError("image contains NaN or Inf values")


def normalize(image: np.ndarray, spec: dict[str, Any] | None = None, *, channel_axis: int | None = None) -> np.ndarray:
    """Scale an image to roughly [0, 1] as float32, per channel.

    Parameters
    ----------
    image : ndarray
        Spatial image, or with channels along ``channel_axis``.
    spec : dict
        ``{"method": "percentile", "low": 1, "high": 99.8}`` (robust, the StarDist/CSBDeep default),
        ``{"method": "minmax"}``, ``{"method": "dtype"}`` (divide by the integer dtype's maximum,
        e.g. 255), ``{"method": "zscore"}`` or ``{"method": "none"}``.
    channel_axis : int or None
        Axis holding channels, normalised independently.

    Examples
    --------
    >>> normalize(np.array([[0, 255]], dtype=np.uint8), {"method": "dtype"})
    array([[0., 1.]], dtype=float32)
    """
    method, spec = _method(spec)
    arr = np.asarray(image)
    _check_pixels(arr.dtype)
    _check_finite(arr)
    if method == "dtype":
        scale = float(np.iinfo(arr.dtype).max) if arr.dtype.kind in "iu" else 1.0
        return (arr.astype(np.float32) / np.float32(scale)).astype(np.float32, copy=False)
    out = arr.astype(np.float32)
    if method == "none":
        return out
    reduce_axes = tuple(a for a in range(arr.ndim) if channel_axis is None or a != channel_axis % arr.ndim)
    if method == "zscore":
        mean = out.mean(axis=reduce_axes, keepdims=True)
        std = out.std(axis=reduce_axes, keepdims=True)
        return (out - mean) / np.maximum(std, 1e-6)
    if method == "minmax":
        lo = out.min(axis=reduce_axes, keepdims=True)
        hi = out.max(axis=reduce_axes, keepdims=True)
    else:
        lo = np.percentile(out, float(spec.get("low", 1.0)), axis=reduce_axes, keepdims=True)
        hi = np.percentile(out, float(spec.get("high", 99.8)), axis=reduce_axes, keepdims=True)
    return (out - lo) / np.maximum(hi - lo, 1e-6)


def fit_normalization(source: Any, spec: dict[str, Any] | None) -> Callable[[np.ndarray], np.ndarray]:
    """The statistics of :func:`normalize` computed band by band over ``source``.

    ``source`` is ``(channels, *spatial)`` and sliceable (NumPy, memmap, a lazy file source);
    channels are normalised independently. Returns a function mapping any window
    ``(channels, *window)`` to float32 with image-wide statistics. ``minmax``, ``zscore``,
    ``dtype`` and integer ``percentile`` (8/16-bit, via exact histograms) match
    :func:`normalize` on the whole image; float percentiles use a regular subsample of at most
    16M pixels per channel (exact below that).

    Examples
    --------
    >>> img = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    >>> f = fit_normalization(img, {"method": "minmax"})
    >>> bool(np.allclose(f(img), normalize(img, {"method": "minmax"}, channel_axis=0)))
    True
    """
    method, spec = _method(spec)
    dtype = np.dtype(source.dtype)
    _check_pixels(dtype)
    if method == "none":
        return lambda w: np.asarray(w, dtype=np.float32)
    if method == "dtype":
        scale = np.float32(np.iinfo(dtype).max if dtype.kind in "iu" else 1.0)
        return lambda w: np.asarray(w).astype(np.float32) / scale
    channels = int(source.shape[0])
    shape_c = (channels,) + (1,) * (len(source.shape) - 1)
    if method == "zscore":
        mean, std = _streamed_moments(source, channels)
        return _affine(mean, np.maximum(std, 1e-6), shape_c)
    if method == "minmax":
        lo, hi = _streamed_range(source, channels)
    else:
        q = (float(spec.get("low", 1.0)), float(spec.get("high", 99.8)))
        if dtype.kind in "biu" and dtype.itemsize <= 2:
            lo, hi = _histogram_percentiles(source, channels, dtype, q)
        else:
            lo, hi = _sampled_percentiles(source, channels, q)
    span = np.maximum(np.asarray(hi, np.float32) - np.asarray(lo, np.float32), np.float32(1e-6))
    return _affine(lo, span, shape_c)


def _affine(offset, scale, shape_c) -> Callable[[np.ndarray], np.ndarray]:
    lo32 = np.asarray(offset, dtype=np.float32).reshape(shape_c)
    span32 = np.asarray(scale, dtype=np.float32).reshape(shape_c)
    return lambda w: (np.asarray(w).astype(np.float32) - lo32) / span32


def _bands(source: Any) -> Iterator[np.ndarray]:
    """``source`` read in bands along its first spatial axis, each ``(channels, pixels)``."""
    shape = tuple(int(s) for s in source.shape)
    row = max(1, math.prod(shape[2:]) * shape[0])
    step = max(1, _BAND_ELEMENTS // row)
    for start in range(0, shape[1], step):
        yield np.asarray(source[(slice(None), slice(start, min(shape[1], start + step)))]).reshape(shape[0], -1)


def _streamed_range(source: Any, channels: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = np.full(channels, np.inf), np.full(channels, -np.inf)
    for b in _bands(source):
        _check_finite(b)
        lo, hi = np.minimum(lo, b.min(axis=1)), np.maximum(hi, b.max(axis=1))
    return lo, hi


def _streamed_moments(source: Any, channels: int) -> tuple[np.ndarray, np.ndarray]:
    s1, s2, count = np.zeros(channels), np.zeros(channels), 0
    for b in _bands(source):
        _check_finite(b)
        bf = b.astype(np.float64)
        s1 += bf.sum(axis=1)
        s2 += (bf * bf).sum(axis=1)
        count += b.shape[1]
    mean = s1 / count
    return mean, np.sqrt(np.maximum(s2 / count - mean * mean, 0.0))


def _histogram_percentiles(source: Any, channels: int, dtype: np.dtype, q: tuple[float, float]):
    """Exact percentiles (NumPy's linear interpolation) of 8/16-bit pixels from histograms."""
    base = int(np.iinfo(dtype).min) if dtype.kind != "b" else 0
    counts = None
    for b in _bands(source):
        b = b.astype(np.int64) - base
        c = np.stack([np.bincount(b[i], minlength=(1 << (8 * dtype.itemsize))) for i in range(channels)])
        counts = c if counts is None else counts + c
    out = []
    for qq in q:
        vals = []
        for i in range(channels):
            cum = np.cumsum(counts[i])
            n = int(cum[-1])
            pos = qq / 100.0 * (n - 1)
            k = int(np.floor(pos))
            v0 = int(np.searchsorted(cum, k + 1)) + base
            v1 = int(np.searchsorted(cum, min(k + 2, n))) + base
            vals.append(v0 + (pos - k) * (v1 - v0))
        out.append(np.array(vals))
    return out[0], out[1]


def _sampled_percentiles(source: Any, channels: int, q: tuple[float, float]):
    shape = tuple(int(s) for s in source.shape[1:])
    stride = max(1, math.ceil((math.prod(shape) / _SAMPLE_LIMIT) ** (1 / len(shape))))
    if stride == 1:
        sample = np.asarray(source[(slice(None),) + tuple(slice(0, n) for n in shape)])
    else:
        rows = []
        for start in range(0, shape[0], stride):
            row = np.asarray(source[(slice(None), slice(start, start + 1))])
            rows.append(row[(slice(None), slice(None)) + (slice(None, None, stride),) * (len(shape) - 1)])
        sample = np.concatenate(rows, axis=1)
    sample = sample.reshape(channels, -1).astype(np.float32)
    _check_finite(sample)
    return np.percentile(sample, q[0], axis=1), np.percentile(sample, q[1], axis=1)
