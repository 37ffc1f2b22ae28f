"""Argument checks and smooth random fields shared by the generators."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ..errors import ConfigError


def _check_shape(shape, ndim: int, minimum: int = 16) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError as exc:
        raise ConfigError(f"shape {shape!r}: expected a tuple of {ndim} integers") from exc
    if len(shape) != ndim:
        raise ConfigError(f"shape {shape!r}: expected {ndim} dimensions")
    if any(s < (1 if (ndim == 3 and i == 0) else minimum) for i, s in enumerate(shape)):
        raise ConfigError(f"shape {shape!r}: each image side must be at least {minimum} px")
    return shape


def _check_range(name: str, value, low: float = 0.0) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{name}={value!r}: expected a (min, max) pair of numbers") from exc
    if not (low <= lo <= hi):
        raise ConfigError(f"{name}={value!r}: expected {low} <= min <= max")
    return lo, hi


def _check_nonneg(**values: float) -> None:
    for name, value in values.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise ConfigError(f"{name}={value!r}: expected a finite number >= 0")


def _smooth_noise(shape: tuple[int, ...], rng: np.random.Generator, scale: float) -> np.ndarray:
    """Gaussian random field with correlation length ``scale`` px, zero mean and unit std.

    Made on a coarse grid and interpolated, so large scales stay cheap.
    """
    factor = max(1, int(scale // 4))
    coarse = tuple(-(-s // factor) + 3 for s in shape)
    field = ndi.gaussian_filter(rng.standard_normal(coarse), scale / factor, mode="wrap")
    if factor > 1:
        field = ndi.zoom(field, factor, order=1, mode="nearest", grid_mode=False)
    field = field[tuple(slice(0, s) for s in shape)]
    std = field.std()
    return ((field - field.mean()) / (std if std > 0 else 1.0)).astype(np.float32)


def _to_unit(field: np.ndarray) -> np.ndarray:
    """Map a unit-std field to (0, 1) with the normal CDF (roughly uniform values)."""
    from scipy.special import ndtr

    return ndtr(field).astype(np.float32)


def _boundary(labels: np.ndarray) -> np.ndarray:
    """One-pixel-thin boundary between different ids, in the image plane (last two axes)."""
    out = np.zeros(labels.shape, dtype=bool)
    for axis in (-1, -2):
        diff = np.diff(labels, axis=axis) != 0
        sl = [slice(None)] * labels.ndim
        sl[axis] = slice(0, -1)
        out[tuple(sl)] |= diff
    return out
