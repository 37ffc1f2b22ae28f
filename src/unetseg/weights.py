"""The paper's pixel-wise loss weights and separation borders between touching instances.

U-Net (Ronneberger et al. 2015, section 3) pre-computes for every ground truth segmentation::

    w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 * sigma**2))

``w_c`` balances the class frequencies, ``d1``/``d2`` are the Euclidean distances to the nearest
and the second-nearest cell, ``w0 = 10`` and ``sigma = 5`` px. Touching cells of the same class
are first separated by a thin background line (paper Fig. 3c); that line then gets the large
weight because both cells are one pixel away.

Conventions used here (all documented choices):

* Distances are between pixel centres (exact Euclidean distance transform), so a background pixel
  next to a cell has ``d = 1``.
* The border term is applied to background pixels only (``background_only=True``): inside a cell
  ``d1 = 0`` and the term would just repeat the class weight's job. Pass ``False`` to apply it
  everywhere, with ``d1 = 0`` inside cells.
* Instances are computed exactly inside a window around each instance's bounding box that is wide
  enough for the border term to fall below ``tol`` (default ``1e-6`` absolute) outside it; beyond
  the window the term is set to 0. ``tol=0`` computes every distance on the whole image.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from .atomic import atomic_path
from .errors import InputError

log = logging.getLogger(__name__)

__all__ = [
    "separation_borders",
    "carve_borders",
    "instances_from_mask",
    "class_weights",
    "class_weight_map",
    "border_term",
    "weight_map",
    "WeightCache",
]


def _offsets(ndim: int, connectivity: int) -> list[tuple[int, ...]]:
    """Half of the neighbourhood offsets (one of each +/- pair) for the given connectivity."""
    offs = []
    for off in np.ndindex(*(3,) * ndim):
        o = tuple(int(v) - 1 for v in off)
        nz = sum(1 for v in o if v != 0)
        if 0 < nz <= connectivity and o > tuple(0 for _ in o):
            offs.append(o)
    return offs


def _pair_slices(shape: tuple[int, ...], off: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    a, b = [], []
    for n, o in zip(shape, off):
        if o > 0:
            a.append(slice(0, n - o))
            b.append(slice(o, n))
        elif o < 0:
            a.append(slice(-o, n))
            b.append(slice(0, n + o))
        else:
            a.append(slice(None))
            b.append(slice(None))
    return tuple(a), tuple(b)


def separation_borders(instances: np.ndarray, *, width: int = 1, connectivity: int | None = None) -> np.ndarray:
    """Pixels to carve out of touching instances so that they become separate components.

    Two instances touch where a pixel of one has a pixel of the other in its neighbourhood.
    With ``width=1`` the pixel of the instance with the larger id is carved, which leaves a
    one-pixel background line (paper Fig. 3c); ``width=2`` carves both sides; larger widths
    grow the two-sided line by ``width - 2`` more dilations inside the instances.

    Parameters
    ----------
    instances : ndarray of int
        Instance label image (0 = background), 2D or 3D.
    width : int
        Line width in pixels (>= 1).
    connectivity : int or None
        Which neighbours touch: 1 = faces only (4-neighbourhood in 2D), ``ndim`` (default) =
        also diagonals, so that even diagonally touching instances end up separated for any
        later connected-component labelling.

    Returns
    -------
    ndarray of bool
        True on the pixels to carve (they were foreground).

    Examples
    --------
    >>> lab = np.zeros((3, 6), int); lab[:, 1:3] = 1; lab[:, 3:5] = 2
    >>> separation_borders(lab).astype(int)
    array([[0, 0, 0, 1, 0, 0],
           [0, 0, 0, 1, 0, 0],
           [0, 0, 0, 1, 0, 0]])
    """
    lab = np.asarray(instances)
    if lab.dtype.kind not in "iub":
        raise InputError(f"instance labels must be integers, got {lab.dtype}")
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    connectivity = lab.ndim if connectivity is None else int(connectivity)
    border = np.zeros(lab.shape, dtype=bool)
    for off in _offsets(lab.ndim, connectivity):
        sa, sb = _pair_slices(lab.shape, off)
        a, b = lab[sa], lab[sb]
        touch = (a != b) & (a != 0) & (b != 0)
        if not touch.any():
            continue
        if width == 1:
            border[sa] |= touch & (a > b)
            border[sb] |= touch & (b > a)
        else:
            border[sa] |= touch
            border[sb] |= touch
    if width > 2 and border.any():
        grown = ndimage.binary_dilation(border, iterations=width - 2)
        border = grown & (lab != 0)
    return border


def carve_borders(instances: np.ndarray, *, width: int = 1, connectivity: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(instances with separation borders set to 0, border mask)``.

    Examples
    --------
    >>> lab = np.array([[1, 1, 2, 2]])
    >>> carve_borders(lab)[0]
    array([[1, 1, 0, 2]])
    """
    lab = np.asarray(instances)
    border = separation_borders(lab, width=width, connectivity=connectivity)
    carved = lab.copy()
    carved[border] = 0
    return carved, border


def instances_from_mask(mask: np.ndarray, *, connectivity: int = 1) -> np.ndarray:
    """Connected components of a foreground mask as instance labels (int32, 0 = background).

    For the ISBI 2012 membrane data the instances are the 4-connected cell regions
    (``connectivity=1``).

    Examples
    --------
    >>> instances_from_mask(np.array([[1, 0, 1], [1, 0, 0]], bool))
    array([[1, 0, 2],
           [1, 0, 0]], dtype=int32)
    """
    mask = np.asarray(mask, dtype=bool)
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    lab, _ = ndimage.label(mask, structure=structure, output=np.int32)
    return lab


def class_weights(
    target: np.ndarray,
    num_classes: int | None = None,
    *,
    mask: np.ndarray | None = None,
    method: str = "balanced",
) -> np.ndarray:
    """Per-class weights ``w_c`` that balance class frequencies.

    ``"balanced"``: ``w_c = N / (K * n_c)`` over the ``K`` classes present, where ``N`` counts
    the pixels (where ``mask`` is True) and ``n_c`` those of class ``c``; each present class then
    contributes equally to the loss and the mean pixel weight is 1. Absent classes get weight 0.
    ``"none"``: all ones.

    Examples
    --------
    >>> class_weights(np.array([0, 0, 0, 1]))
    array([0.6666667, 2.       ], dtype=float32)
    """
    t = np.asarray(target)
    if t.dtype.kind not in "iub":
        raise InputError(f"class target must be integers, got {t.dtype}")
    if t.size and t.min() < 0:
        raise InputError("class target holds negative class ids")
    k = int(t.max()) + 1 if num_classes is None and t.size else int(num_classes or 1)
    if method == "none":
        return np.ones(k, dtype=np.float32)
    if method != "balanced":
        raise ValueError(f"class weight method {method!r}: expected 'balanced' or 'none'")
    vals = t[np.asarray(mask, dtype=bool)] if mask is not None else t.ravel()
    counts = np.bincount(vals.ravel(), minlength=k)[:k].astype(np.float64)
    present = counts > 0
    w = np.zeros(k, dtype=np.float64)
    if present.any():
        w[present] = counts.sum() / (present.sum() * counts[present])
    return w.astype(np.float32)


def class_weight_map(target: np.ndarray, weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """``w_c(x)``: look up each pixel's class weight (float32)."""
    w = np.asarray(weights, dtype=np.float32)
    t = np.asarray(target)
    if t.size and int(t.max()) >= len(w):
        raise InputError(f"class id {int(t.max())} has no weight (only {len(w)} given)")
    return w[t]


def _cutoff(w0: float, sigma: float, tol: float) -> float:
    """Distance sum beyond which ``w0 * exp(-d**2 / (2 sigma**2))`` is below ``tol``."""
    if tol <= 0 or w0 <= tol:
        return math.inf if tol <= 0 else 0.0
    return sigma * math.sqrt(2.0 * math.log(w0 / tol))


def nearest_two_distances(instances: np.ndarray, *, max_distance: float = math.inf, sampling: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact Euclidean distances ``d1``, ``d2`` to the nearest and second-nearest instance.

    Distances above ``max_distance`` are not computed and come back as ``inf``. The distance
    of a pixel to its own instance is 0.

    Examples
    --------
    >>> lab = np.array([[1, 0, 0, 2]])
    >>> d1, d2 = nearest_two_distances(lab)
    >>> d1, d2
    (array([[0., 1., 1., 0.]], dtype=float32), array([[3., 2., 2., 3.]], dtype=float32))
    """
    lab = np.asarray(instances)
    d1 = np.full(lab.shape, np.inf, dtype=np.float32)
    d2 = np.full(lab.shape, np.inf, dtype=np.float32)
    objects = ndimage.find_objects(lab) if lab.size else []
    margin = [int(math.ceil(max_distance / (s if sampling else 1.0))) if math.isfinite(max_distance) else None for s in (sampling or [1.0] * lab.ndim)]
    for idx, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        win = tuple(
            slice(0, n) if m is None else slice(max(0, s.start - m), min(n, s.stop + m))
            for s, n, m in zip(sl, lab.shape, margin)
        )
        sub = lab[win]
        d = ndimage.distance_transform_edt(sub != idx, sampling=sampling).astype(np.float32, copy=False)
        v1, v2 = d1[win], d2[win]
        np.minimum(v2, np.maximum(v1, d), out=v2)
        np.minimum(v1, d, out=v1)
    return d1, d2


def border_term(
    instances: np.ndarray,
    *,
    w0: float = 10.0,
    sigma: float = 5.0,
    background_only: bool = True,
    tol: float = 1e-6,
    sampling: Sequence[float] | None = None,
) -> np.ndarray:
    """``w0 * exp(-(d1 + d2)**2 / (2 sigma**2))`` (float32); 0 where fewer than two instances are in reach.

    See the module docstring for the conventions (pixel-centre distances, background only,
    ``tol``).
    """
    lab = np.asarray(instances)
    if lab.dtype.kind not in "iub":
        raise InputError(f"instance labels must be integers, got {lab.dtype}")
    if w0 == 0:
        return np.zeros(lab.shape, dtype=np.float32)
    cut = _cutoff(w0, sigma, tol)
    d1, d2 = nearest_two_distances(lab, max_distance=cut, sampling=sampling)
    s = d1 + d2
    term = np.zeros(lab.shape, dtype=np.float32)
    ok = np.isfinite(s)
    if background_only:
        ok &= lab == 0
    term[ok] = np.float32(w0) * np.exp(-(s[ok] ** 2) / np.float32(2.0 * sigma * sigma))
    return term


def weight_map(
    instances: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weight: str | Sequence[float] | np.ndarray | None = "balanced",
    *,
    target: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    num_classes: int | None = None,
    background_only: bool = True,
    tol: float = 1e-6,
    sampling: Sequence[float] | None = None,
) -> np.ndarray:
    """The paper's weight map ``w(x) = w_c(x) + w0 * exp(-(d1 + d2)^2 / (2 sigma^2))`` (float32).

    Parameters
    ----------
    instances : ndarray of int
        Instance labels (0 = background), already separated by :func:`carve_borders` when
        instances touched.
    w0, sigma : float
        The border term's height and width (paper: 10 and about 5 px).
    class_weight : "balanced", "none", None or sequence
        ``w_c``: ``"balanced"`` by :func:`class_weights`, ``"none"``/None = 1 everywhere, or one
        weight per class id.
    target : ndarray of int or None
        Class ids per pixel for ``w_c``; default ``instances > 0`` (background 0, cell 1).
    mask : ndarray of bool or None
        Pixels that count (True); class frequencies are computed over them only and the map is
        0 elsewhere.
    num_classes : int or None
        Number of classes for ``w_c`` (default: ``target.max() + 1``, at least 2).
    background_only, tol, sampling
        See :func:`border_term`.

    Examples
    --------
    >>> lab = np.zeros((1, 5), int); lab[0, :2] = 1; lab[0, 3:] = 2
    >>> w = weight_map(lab, class_weight=None)
    >>> round(float(w[0, 2]), 4)  # 1 + 10 * exp(-(1 + 1)**2 / 50)
    10.2312
    """
    lab = np.asarray(instances)
    if target is None:
        target = (lab > 0).astype(np.int64)
    target = np.asarray(target)
    if target.shape != lab.shape:
        raise InputError(f"target shape {target.shape} differs from instance shape {lab.shape}")
    if isinstance(class_weight, str) or class_weight is None:
        method = "none" if class_weight in (None, "none") else class_weight
        k = num_classes if num_classes is not None else max(2, int(target.max()) + 1 if target.size else 2)
        cw = class_weights(target, k, mask=mask, method=method)
    else:
        cw = np.asarray(class_weight, dtype=np.float32)
    w = class_weight_map(target, cw)
    w += border_term(lab, w0=w0, sigma=sigma, background_only=background_only, tol=tol, sampling=sampling)
    if mask is not None:
        w[~np.asarray(mask, dtype=bool)] = 0.0
    return w


def content_key(*arrays: np.ndarray | None, params: Mapping | None = None) -> str:
    """A SHA-256 hex digest of arrays (shape, dtype and bytes) and parameters."""
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.shape}{a.dtype.str}".encode())
        h.update(a.data)
    h.update(repr(sorted((params or {}).items())).encode())
    return h.hexdigest()


class WeightCache:
    """Cache of pre-computed weight maps keyed by the content hash of labels and parameters.

    Maps are kept in memory and, when ``directory`` is given, stored there as ``KEY.npy``
    (written atomically, so concurrent processes never read a half-written map).

    Examples
    --------
    >>> cache = WeightCache()
    >>> lab = np.zeros((8, 8), np.int32); lab[2:4, 2:4] = 1
    >>> w1 = cache.get(lab, w0=10.0, sigma=5.0)
    >>> w2 = cache.get(lab, w0=10.0, sigma=5.0)
    >>> w1 is w2, cache.hits
    (True, 1)
    """

    def __init__(self, directory: str | os.PathLike | None = None, *, max_items: int = 4096) -> None:
        self.directory = Path(directory) if directory is not None else None
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        self.max_items = max_items
        self._mem: dict[str, np.ndarray] = {}
        self.hits = 0
        self.misses = 0

    def get(self, instances: np.ndarray, *, target: np.ndarray | None = None, mask: np.ndarray | None = None, **params) -> np.ndarray:
        """The weight map of :func:`weight_map` for these arguments, computed at most once."""
        key = content_key(instances, target, mask, params={k: (tuple(v) if isinstance(v, (list, np.ndarray)) else v) for k, v in params.items()})
        if key in self._mem:
            self.hits += 1
            return self._mem[key]
        w = None
        file = self.directory / f"{key}.npy" if self.directory is not None else None
        if file is not None and file.is_file():
            try:
                w = np.load(file, allow_pickle=False)
                if w.shape != np.shape(instances) or w.dtype != np.float32:
                    w = None
            except (OSError, ValueError) as exc:
                log.warning("%s: ignoring unreadable cached weight map (%s)", file, exc)
                w = None
        if w is None:
            self.misses += 1
            w = weight_map(instances, target=target, mask=mask, **params)
            if file is not None:
                with atomic_path(file) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, w, allow_pickle=False)
        else:
            self.hits += 1
        if len(self._mem) >= self.max_items:
            self._mem.pop(next(iter(self._mem)))
        self._mem[key] = w
        return w
