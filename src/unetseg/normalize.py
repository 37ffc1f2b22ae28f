"""Input intensity normalisation, stored with the model so prediction repeats what training did."""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import ConfigError, InputError

METHODS = ("percentile", "minmax", "dtype", "zscore", "none")
DEFAULT = {"method": "percentile", "low": 1.0, "high": 99.8}


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
    spec = dict(DEFAULT if spec is None else spec)
    method = spec.pop("method", "percentile")
    if method not in METHODS:
        raise ConfigError(f"normalization method {method!r}: expected one of {', '.join(METHODS)}")
    arr = np.asarray(image)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"cannot normalise an image of dtype {arr.dtype}: expected integer or float pixels")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise InputError("image contains NaN or Inf values")
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
