"""The paper's data augmentation: elastic deformation, rotation, scale, shift, flips, gray values.

One :class:`Transform` is drawn by :func:`sample_transform` from an explicit
``numpy.random.Generator`` and then applied identically to the image, the labels, the weight map
and the ignore mask. All geometric parts are composed into ONE coordinate map (for every output
pixel, where to read in the source), so each array is resampled once:

* image: cubic interpolation (2D: PyTorch's bicubic ``grid_sample``, Keys cubic convolution;
  3D: SciPy cubic B-spline),
* labels and ignore mask: nearest neighbour (values are copied, never interpolated),
* weight map: linear.

Outside the source the image is mirrored (the overlap-tile rule): ``d c b | a b c d | c b a``.

Elastic deformation exactly as in the paper: random displacement vectors on a coarse grid
(3 x 3 by default) drawn from a Gaussian with 10 px standard deviation, interpolated to a
per-pixel displacement with cubic splines (bicubic in 2D).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
from scipy import ndimage

from .errors import ConfigError

__all__ = ["AugmentConfig", "Transform", "sample_transform", "apply_transform", "warp", "apply_gray", "elastic_weights"]


def _pair(value: Any, key: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return (-float(value), float(value))
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"augment.{key}: expected a number or a [low, high] pair, got {value!r}") from exc
    if lo > hi:
        raise ConfigError(f"augment.{key}: low {lo} is above high {hi}")
    return (lo, hi)


@dataclass(frozen=True)
class AugmentConfig:
    """What to augment and how much; every ``*_p`` is the probability that the part is applied.

    Ranges are ``(low, high)`` and drawn uniformly. Angles are in degrees, shifts in pixels,
    brightness is added, contrast multiplies around the tile mean, gamma acts on the tile's
    min-max range, noise is Gaussian with a std drawn from ``noise_std``.

    Examples
    --------
    >>> AugmentConfig().elastic_sigma
    10.0
    >>> AugmentConfig.from_dict({"rotation_p": 0}).rotation_p
    0.0
    """

    elastic_p: float = 1.0
    elastic_grid: int = 3
    elastic_sigma: float = 10.0
    rotation_p: float = 1.0
    rotation_range: tuple[float, ...] = (-180.0, 180.0)
    rotation_axes: str = "inplane"  # 3D: "inplane" (last two axes) or "full" (random 3D rotation)
    scale_p: float = 0.5
    scale_range: tuple[float, ...] = (0.85, 1.15)
    shift_p: float = 1.0
    shift_range: tuple[float, ...] = (-16.0, 16.0)
    flip_p: float = 0.5
    brightness_p: float = 0.5
    brightness_range: tuple[float, ...] = (-0.1, 0.1)
    contrast_p: float = 0.5
    contrast_range: tuple[float, ...] = (0.75, 1.3)
    gamma_p: float = 0.3
    gamma_range: tuple[float, ...] = (0.7, 1.5)
    noise_p: float = 0.3
    noise_std: tuple[float, ...] = (0.0, 0.05)

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_p"):
                if not isinstance(v, (int, float)) or not 0.0 <= float(v) <= 1.0:
                    raise ConfigError(f"augment.{f.name}: probability must be in [0, 1], got {v!r}")
                object.__setattr__(self, f.name, float(v))
            elif f.name.endswith("_range") or f.name == "noise_std":
                object.__setattr__(self, f.name, _pair(v, f.name))
        if int(self.elastic_grid) < 2:
            raise ConfigError(f"augment.elastic_grid: need at least 2 control points per axis, got {self.elastic_grid}")
        if self.elastic_sigma < 0:
            raise ConfigError(f"augment.elastic_sigma: must be >= 0, got {self.elastic_sigma}")
        if self.rotation_axes not in ("inplane", "full"):
            raise ConfigError(f"augment.rotation_axes: expected 'inplane' or 'full', got {self.rotation_axes!r}")
        if self.scale_range[0] <= 0:
            raise ConfigError(f"augment.scale_range: scales must be positive, got {self.scale_range}")
        if self.noise_std[0] < 0:
            raise ConfigError(f"augment.noise_std: must be >= 0, got {self.noise_std}")

    @classmethod
    def none(cls) -> AugmentConfig:
        """No augmentation at all (identity transform)."""
        return cls(**{f.name: 0.0 for f in fields(cls) if f.name.endswith("_p")})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> AugmentConfig:
        """Build from a mapping (YAML); unknown keys raise :class:`ConfigError`."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"augment: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(known))}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v, tuple) else v) for f in fields(self) for v in [getattr(self, f.name)]}


@dataclass(frozen=True, eq=False)
class Transform:
    """One sampled augmentation; apply it with :func:`apply_transform` or :meth:`coordinates`.

    ``matrix`` maps output offsets (from the tile centre) to source offsets (rotation, scale and
    flips composed), ``shift`` is added in source pixels, ``grid`` holds the elastic control
    displacements (shape ``(g,)*ndim + (ndim,)``) or None, and the gray-value parameters are
    applied after resampling.
    """

    shape: tuple[int, ...]
    matrix: np.ndarray = field(repr=False)
    shift: tuple[float, ...] = ()
    grid: np.ndarray | None = field(default=None, repr=False)
    brightness: float = 0.0
    contrast: float = 1.0
    gamma: float = 1.0
    noise_std: float = 0.0
    noise_seed: int = 0

    @classmethod
    def identity(cls, shape: Sequence[int]) -> Transform:
        shape = tuple(int(s) for s in shape)
        return cls(shape=shape, matrix=np.eye(len(shape)), shift=(0.0,) * len(shape))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def is_geometric_identity(self) -> bool:
        return bool(np.array_equal(self.matrix, np.eye(self.ndim)) and not any(self.shift) and (self.grid is None or not self.grid.any()))

    def displacement(self) -> np.ndarray | None:
        """Per-pixel elastic displacement ``(ndim, *shape)`` float32, or None without elastic."""
        if self.grid is None:
            return None
        g = self.grid.shape[0]
        ws = [elastic_weights(n, g) for n in self.shape]
        if self.ndim == 2:
            # Sum of g outer products: much faster than a BLAS call with an inner size of 3.
            out = np.zeros((2, *self.shape), dtype=np.float32)
            wx = ws[1].astype(np.float32).T
            for k in range(2):
                a = (ws[0] @ self.grid[..., k]).astype(np.float32)
                for j in range(g):
                    out[k] += a[:, j, None] * wx[j]
            return out
        return np.einsum("zi,yj,xk,ijkd->dzyx", ws[0], ws[1], ws[2], self.grid, optimize=True).astype(np.float32)

    def coordinates(self, center: Sequence[float] | None = None) -> np.ndarray:
        """Source coordinates ``(ndim, *shape)`` float32 of every output pixel.

        The output tile's centre lands on ``center + shift`` in the source (default: the
        centre of a source of the same shape, so the identity transform gives ``coords == index``).
        """
        nd = self.ndim
        c_out = np.array([(n - 1) / 2.0 for n in self.shape])
        c_src = c_out if center is None else np.asarray(center, dtype=np.float64)
        c_src = c_src + np.asarray(self.shift if self.shift else (0.0,) * nd)
        axes = [np.arange(n, dtype=np.float32) - np.float32(c) for n, c in zip(self.shape, c_out)]
        disp = self.displacement()
        out = np.empty((nd, *self.shape), dtype=np.float32)
        for i in range(nd):
            acc = np.full(self.shape, np.float32(c_src[i]), dtype=np.float32)
            for j in range(nd):
                a = np.float32(self.matrix[i, j])
                if a == 0:
                    continue
                shp = [1] * nd
                shp[j] = self.shape[j]
                acc += a * axes[j].reshape(shp)
                if disp is not None:
                    acc += a * disp[j]
            out[i] = acc
        return out

    def crop_coordinates(self, coords: np.ndarray, out_shape: Sequence[int]) -> np.ndarray:
        """The centred ``out_shape`` part of a coordinate map (for the valid-output crop)."""
        sl = [slice(None)]
        for n, m in zip(self.shape, out_shape):
            off = (n - m) // 2
            sl.append(slice(off, off + m))
        return coords[tuple(sl)]


@functools.lru_cache(maxsize=64)
def elastic_weights(n: int, g: int) -> np.ndarray:
    """Interpolation matrix ``(n, g)``: cubic-spline weights of ``g`` control points at ``n`` pixels.

    The control points sit evenly from the first to the last pixel; ``W @ values`` is the
    cubic spline through the control values (so a zero grid gives zero displacement).

    Examples
    --------
    >>> w = elastic_weights(5, 3)
    >>> np.allclose(w.sum(axis=1), 1), np.allclose(w[[0, 2, 4]], np.eye(3))
    (True, True)
    """
    t = np.linspace(0.0, g - 1.0, n) if n > 1 else np.array([(g - 1) / 2.0])
    w = np.empty((n, g), dtype=np.float64)
    for j in range(g):
        e = np.zeros(g)
        e[j] = 1.0
        w[:, j] = ndimage.map_coordinates(e, t[None], order=3, mode="mirror")
    w.setflags(write=False)
    return w


def _rotation(rng: np.random.Generator, nd: int, cfg: AugmentConfig) -> np.ndarray:
    lo, hi = cfg.rotation_range
    if nd == 2 or cfg.rotation_axes == "inplane":
        a = math.radians(rng.uniform(lo, hi))
        c, s = math.cos(a), math.sin(a)
        r = np.eye(nd)
        r[-2:, -2:] = [[c, -s], [s, c]]
        return r
    # Random axis, angle from the range (Rodrigues).
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis) or 1.0
    a = math.radians(rng.uniform(lo, hi))
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * k + (1 - math.cos(a)) * (k @ k)


def sample_transform(rng: np.random.Generator, shape: Sequence[int], cfg: AugmentConfig | None = None) -> Transform:
    """Draw one augmentation for an output tile of ``shape`` (2D or 3D).

    The same generator state gives the same transform, so a seed reproduces the exact sample.

    Examples
    --------
    >>> t1 = sample_transform(np.random.default_rng(3), (64, 64))
    >>> t2 = sample_transform(np.random.default_rng(3), (64, 64))
    >>> np.array_equal(t1.coordinates(), t2.coordinates())
    True
    """
    cfg = cfg or AugmentConfig()
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if nd not in (2, 3):
        raise ValueError(f"augmentation works on 2D or 3D tiles, got shape {shape}")
    # Always draw every random number, in a fixed order, so that switching one part on or off
    # does not change the others' values for the same seed.
    u = rng.random(10)
    m = np.eye(nd)
    rot = _rotation(rng, nd, cfg)
    if u[0] < cfg.rotation_p:
        m = m @ rot
    scale = rng.uniform(*cfg.scale_range)
    if u[1] < cfg.scale_p:
        m = m * scale
    flips = rng.random(nd) < cfg.flip_p
    m = m @ np.diag(np.where(flips, -1.0, 1.0))
    shift = rng.uniform(*cfg.shift_range, size=nd)
    shift = tuple(float(s) for s in (shift if u[2] < cfg.shift_p else np.zeros(nd)))
    grid = rng.normal(0.0, cfg.elastic_sigma, size=(int(cfg.elastic_grid),) * nd + (nd,))
    grid = grid if u[3] < cfg.elastic_p and cfg.elastic_sigma > 0 else None
    brightness = rng.uniform(*cfg.brightness_range)
    contrast = rng.uniform(*cfg.contrast_range)
    gamma = rng.uniform(*cfg.gamma_range)
    noise = rng.uniform(*cfg.noise_std)
    seed = int(rng.integers(0, 2**63 - 1))
    return Transform(
        shape=shape,
        matrix=m,
        shift=shift,
        grid=grid,
        brightness=float(brightness) if u[4] < cfg.brightness_p else 0.0,
        contrast=float(contrast) if u[5] < cfg.contrast_p else 1.0,
        gamma=float(gamma) if u[6] < cfg.gamma_p else 1.0,
        noise_std=float(noise) if u[7] < cfg.noise_p else 0.0,
        noise_seed=seed,
    )


def _mirror_index(c: np.ndarray, n: int) -> np.ndarray:
    """Round coordinates and fold them into ``[0, n)`` by mirroring (``d c b | a b c d``)."""
    i = np.rint(c).astype(np.intp)
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    i = np.mod(i, period)
    return np.where(i >= n, period - i, i)


def nearest_index(coords: np.ndarray, shape: Sequence[int]) -> tuple[np.ndarray, ...]:
    """Integer index arrays (mirrored into ``shape``) of the nearest source pixel of each coordinate."""
    return tuple(_mirror_index(coords[i], shape[i]) for i in range(coords.shape[0]))


def warp(array: np.ndarray, coords: np.ndarray, order: int, *, channel_axis: bool = False) -> np.ndarray:
    """Resample ``array`` at ``coords`` (``(ndim, *out)``), mirroring outside the array.

    ``order`` 0 = nearest (any dtype, values copied), 1 = linear, 3 = cubic (float32 result).
    With ``channel_axis=True`` the first axis of ``array`` holds channels, resampled alike.

    Examples
    --------
    >>> a = np.arange(12.0).reshape(3, 4)
    >>> idx = np.stack(np.meshgrid(np.arange(3), np.arange(4), indexing="ij")).astype(np.float32)
    >>> np.allclose(warp(a, idx, 3), a)
    True
    """
    arr = np.asarray(array)
    nd = coords.shape[0]
    spatial = arr.shape[1:] if channel_axis else arr.shape
    if len(spatial) != nd:
        raise ValueError(f"coordinates for {nd}D, array of shape {arr.shape}")
    if order == 0:
        idx = nearest_index(coords, spatial)
        return arr[(slice(None), *idx)] if channel_axis else arr[idx]
    import torch

    data = arr if channel_axis else arr[None]
    if order == 3 and nd == 3:
        return np.stack([ndimage.map_coordinates(np.asarray(ch, np.float32), coords, order=3, mode="mirror", output=np.float32) for ch in data])[
            slice(None) if channel_axis else 0
        ]
    t = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))[None]
    # grid_sample wants (x, y[, z]) in [-1, 1] with align_corners=True: -1 = first pixel centre.
    norm = []
    for i in reversed(range(nd)):
        n = spatial[i]
        norm.append(coords[i] * np.float32(2.0 / (n - 1)) - np.float32(1.0) if n > 1 else np.zeros_like(coords[i]))
    grid = torch.from_numpy(np.stack(norm, axis=-1))[None]
    mode = {1: "bilinear", 3: "bicubic"}.get(order)
    if mode is None:
        raise ValueError(f"interpolation order {order}: expected 0, 1 or 3")
    with torch.no_grad():
        out = torch.nn.functional.grid_sample(t, grid, mode=mode, padding_mode="reflection", align_corners=True)
    res = out[0].numpy()
    return res if channel_axis else res[0]


def apply_gray(image: np.ndarray, t: Transform) -> np.ndarray:
    """Gray-value part of ``t`` on a float32 image ``(C, *spatial)`` (new array).

    Order: gamma on the per-channel min-max range, contrast around the per-channel mean,
    brightness offset, additive Gaussian noise (from ``t.noise_seed``). Computed in place on one
    copy to keep a 572x572 tile at a few milliseconds.
    """
    out = np.array(image, dtype=np.float32, copy=True)
    red = tuple(range(1, out.ndim))
    if t.gamma != 1.0:
        lo = out.min(axis=red, keepdims=True)
        span = np.maximum(out.max(axis=red, keepdims=True) - lo, np.float32(1e-6))
        out -= lo
        out *= np.float32(1.0) / span
        np.power(out, np.float32(t.gamma), out=out)
        out *= span
        out += lo
    if t.contrast != 1.0 or t.brightness != 0.0:
        c = np.float32(t.contrast)
        offset = np.float32(t.brightness)
        if t.contrast != 1.0:
            offset = offset + out.mean(axis=red, keepdims=True, dtype=np.float32) * (np.float32(1.0) - c)
            out *= c
        out += offset
    if t.noise_std > 0:
        noise = np.random.default_rng(t.noise_seed).standard_normal(out.shape, dtype=np.float32)
        noise *= np.float32(t.noise_std)
        out += noise
    return out


def _common_shape(image, *spatial) -> tuple[int, ...] | None:
    """The spatial shape shared by ``image`` (channels first) and the ``spatial`` arrays given."""
    shapes = ([tuple(np.shape(image)[1:])] if image is not None else []) + [tuple(np.shape(a)) for a in spatial if a is not None]
    for s in shapes[1:]:
        if s != shapes[0]:
            raise ValueError(f"arrays to augment differ in shape: {s} vs {shapes[0]}")
    return shapes[0] if shapes else None


def apply_transform(
    t: Transform,
    image: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    *,
    center: Sequence[float] | None = None,
    out_shape: Sequence[int] | None = None,
) -> dict[str, np.ndarray]:
    """Apply one sampled transform to image (cubic), labels and mask (nearest), weight (linear).

    Parameters
    ----------
    t : Transform
        From :func:`sample_transform`; ``t.shape`` is the image tile's shape.
    image : ndarray
        ``(C, *spatial)`` float image (the source; the result has ``t.shape`` spatially).
    labels, weight, mask : ndarray
        Spatial arrays aligned with ``image``; resampled on the centred ``out_shape`` crop of
        the tile (default ``t.shape``), which is what a valid-padding U-Net's output covers.
    center : sequence of float
        Where the tile centre lands in the source (default: the source's centre).

    Returns
    -------
    dict
        ``image`` (C, *t.shape) float32, and ``labels``/``weight``/``mask`` of ``out_shape``
        for those given.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> img = rng.random((1, 32, 32)).astype(np.float32)
    >>> lab = (img[0] > 0.5).astype(np.int64) * 7
    >>> out = apply_transform(sample_transform(rng, (32, 32)), img, lab)
    >>> sorted(np.unique(out["labels"]).tolist())
    [0, 7]
    """
    src_shape = _common_shape(image, labels, weight, mask)
    if src_shape is None:
        return {}
    if center is None:
        center = [(n - 1) / 2.0 for n in src_shape]
    coords = t.coordinates(center)
    out: dict[str, np.ndarray] = {}
    if image is not None:
        out["image"] = apply_gray(warp(image, coords, 3, channel_axis=True), t)
    if labels is not None or weight is not None or mask is not None:
        sub = t.crop_coordinates(coords, out_shape) if out_shape is not None else coords
        idx = nearest_index(sub, src_shape) if labels is not None or mask is not None else None
        if labels is not None:
            out["labels"] = np.asarray(labels)[idx]
        if weight is not None:
            out["weight"] = warp(weight, sub, 1)
        if mask is not None:
            out["mask"] = np.asarray(mask)[idx]
    return out
