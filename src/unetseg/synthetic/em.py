"""EM sections of neural tissue in the style of ISBI 2012, with exact membrane labels."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ..errors import ConfigError
from ._common import _boundary, _check_nonneg, _check_range, _check_shape, _smooth_noise, _to_unit


def _cell_partition(
    shape: tuple[int, ...],
    rng: np.random.Generator,
    *,
    cell_area: float,
    size_variation: float,
    warp: float,
    z_step: float = 1.0,
) -> np.ndarray:
    """Irregular space partition: warped Voronoi cells with locally varying size (int32 ids >= 1).

    ``shape`` is (Y, X) or (Z, Y, X); in 3D a section is ``z_step`` px thick, so cells run
    through about ``diameter / z_step`` sections.
    """
    pad = int(math.ceil(3 * warp)) + 2
    ndim = len(shape)
    planar = shape[-2:]
    padded = tuple(shape[:-2]) + tuple(s + 2 * pad for s in planar)
    # Seed density varies smoothly, so big and small cells cluster as in real tissue.
    density = np.exp(size_variation * _smooth_noise(padded, rng, 60.0))
    density /= density.mean()
    if ndim == 2:
        expected = padded[0] * padded[1] / cell_area
    else:
        diameter = 2.0 * math.sqrt(cell_area / math.pi)
        expected = padded[0] * padded[1] * padded[2] * z_step / (cell_area * diameter)
    count = max(2, int(rng.poisson(expected)))
    flat = rng.choice(density.size, size=count, replace=False, p=(density / density.sum()).ravel())
    points = np.stack(np.unravel_index(flat, padded), axis=1).astype(np.float64)
    points[:, -2:] += rng.random((count, 2)) - 0.5
    # Thin seeds that sit much closer than the local spacing (avoids slivers).
    from scipy.spatial import cKDTree

    scale = np.ones(ndim)
    if ndim == 3:
        scale[0] = z_step
    spacing = np.sqrt(cell_area / density.ravel()[flat])
    tree = cKDTree(points * scale)
    keep = np.ones(count, dtype=bool)
    for i, j in sorted(tree.query_pairs(0.45 * spacing.max()), key=lambda p: p[0]):
        if keep[i] and keep[j]:
            dist = np.linalg.norm((points[i] - points[j]) * scale)
            if dist < 0.45 * min(spacing[i], spacing[j]):
                keep[j] = False
    points = points[keep]
    seeds = np.zeros(padded, dtype=np.int32)
    idx = tuple(np.clip(np.round(points[:, d]).astype(int), 0, padded[d] - 1) for d in range(ndim))
    seeds[idx] = np.arange(1, len(points) + 1, dtype=np.int32)
    _, nearest = ndi.distance_transform_edt(seeds == 0, sampling=scale, return_indices=True)
    labels = seeds[tuple(nearest)]
    # Two scales of smooth displacement bend the straight Voronoi edges into curves.
    grids = np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij")
    coords = []
    for d in range(ndim):
        if ndim == 3 and d == 0:
            coords.append(grids[0])
            continue
        disp = warp * _smooth_noise(shape, rng, 18.0) + 0.35 * warp * _smooth_noise(shape, rng, 6.0)
        coords.append(grids[d] + pad + disp)
    return ndi.map_coordinates(labels, coords, order=0, mode="nearest").astype(np.int32)


def _stamp(canvas: np.ndarray, center, patch: np.ndarray) -> None:
    """Add ``patch`` to ``canvas`` centred at ``center`` (clipped at the border)."""
    cy, cx = int(round(center[0])), int(round(center[1]))
    h, w = patch.shape
    y0, x0 = cy - h // 2, cx - w // 2
    ys, xs = max(0, y0), max(0, x0)
    ye, xe = min(canvas.shape[0], y0 + h), min(canvas.shape[1], x0 + w)
    if ye > ys and xe > xs:
        canvas[ys:ye, xs:xe] += patch[ys - y0 : ye - y0, xs - x0 : xe - x0]


def _vesicle_patch(radius: float, depth: float) -> np.ndarray:
    r = int(math.ceil(radius + 2))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    rho = np.hypot(yy, xx)
    ring = np.exp(-0.5 * ((rho - radius) / 0.8) ** 2)
    core = 0.35 * (rho < radius)
    return -depth * (ring + core)


def _mitochondrion_patch(a: float, b: float, angle: float, depth: float, rng: np.random.Generator) -> np.ndarray:
    r = int(math.ceil(a + 2))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float32)
    c, s = math.cos(angle), math.sin(angle)
    u = c * xx + s * yy
    v = -s * xx + c * yy
    rho = np.sqrt((u / a) ** 2 + (v / b) ** 2)
    inside = rho < 1
    outline = np.exp(-0.5 * ((rho - 1.0) * min(a, b) / 0.9) ** 2)
    period = rng.uniform(3.5, 6.0)
    cristae = 0.5 + 0.5 * np.cos(2 * math.pi * u / period + rng.uniform(0, 2 * math.pi))
    fill = inside * (0.55 + 0.45 * cristae)
    return -depth * np.clip(fill + 0.8 * outline, 0, 1.6)


def _organelles(labels, membrane, dist, half_width, rng: np.random.Generator, *, vesicles: float, mitochondria: float) -> np.ndarray:
    """Dark vesicles and striped mitochondria inside cells, clear of the membranes (labels stay exact)."""
    shape = labels.shape
    area = shape[0] * shape[1]
    organelles = np.zeros(shape, dtype=np.float32)
    free = np.where(membrane, 0.0, dist - half_width)
    candidates = np.flatnonzero(free > 4.0)
    if not len(candidates):
        return organelles
    for flat in rng.choice(candidates, size=min(rng.poisson(vesicles * area / 1e5), len(candidates))):
        cy, cx = divmod(int(flat), shape[1])
        radius = min(rng.uniform(1.5, 4.0), free.flat[flat] - 2.0)
        if radius >= 1.5:
            _stamp(organelles, (cy, cx), _vesicle_patch(radius, rng.uniform(40, 80)))
    n_mito = rng.poisson(mitochondria * area / 1e5)
    big = np.flatnonzero(free > 7.0)
    for flat in rng.choice(big, size=min(n_mito, len(big))) if len(big) else []:
        cy, cx = divmod(int(flat), shape[1])
        a = min(rng.uniform(8.0, 22.0), free.flat[flat] - 2.0)
        b = min(rng.uniform(5.0, 10.0), a)
        if a < 6.0:
            continue
        # The long axis may leave the free disc: only keep it if it stays in one cell.
        patch = _mitochondrion_patch(a, b, rng.uniform(0, math.pi), rng.uniform(50, 80), rng)
        h = patch.shape[0] // 2
        y0, x0 = cy - h, cx - h
        sl = (slice(max(0, y0), min(shape[0], y0 + patch.shape[0])), slice(max(0, x0), min(shape[1], x0 + patch.shape[1])))
        sub = patch[sl[0].start - y0 : sl[0].stop - y0, sl[1].start - x0 : sl[1].stop - x0]
        touched = sub < -1.0
        if np.all(free[sl][touched] > 1.0) and np.all(labels[sl][touched] == labels[cy, cx]):
            organelles[sl] += sub
    return organelles


def _render_em(
    labels: np.ndarray,
    membrane: np.ndarray,
    dist: np.ndarray,
    half_width: np.ndarray,
    rng: np.random.Generator,
    *,
    cell_intensity: float,
    membrane_intensity: float,
    intensity_spread: float,
    texture: float,
    vesicles: float,
    mitochondria: float,
    blur: float,
    noise: float,
) -> np.ndarray:
    """Grey values of one EM section (float32, roughly 0-255) from its cell map."""
    shape = labels.shape
    n_ids = int(labels.max()) + 1
    shade = rng.normal(0.0, intensity_spread, size=n_ids).astype(np.float32)
    image = cell_intensity + shade[labels]
    # Membranes: dark core with soft edges, darkness varying along the membrane.
    depth = (cell_intensity - membrane_intensity) * (0.5 + 0.8 * _to_unit(_smooth_noise(shape, rng, 25.0)))
    profile = np.clip((half_width + 0.8 - dist) / 1.3, 0.0, 1.0)
    image = image - depth * profile * 1.12
    # Cytoplasm texture: granular fine scale plus cloudy medium scale, and sparse dark specks.
    image += texture * (0.9 * _smooth_noise(shape, rng, 0.9) + 0.35 * _smooth_noise(shape, rng, 4.0))
    specks = (rng.random(shape) < 0.01).astype(np.float32)
    image -= 60.0 * ndi.gaussian_filter(specks, 1.0) * 2 * math.pi
    image += _organelles(labels, membrane, dist, half_width, rng, vesicles=vesicles, mitochondria=mitochondria)
    # Slow illumination change, optics blur and detector noise.
    image += 8.0 * _smooth_noise(shape, rng, 120.0)
    if blur > 0:
        image = ndi.gaussian_filter(image, blur)
    if noise > 0:
        image += rng.normal(0.0, noise, size=shape).astype(np.float32)
    return image


def _em_labels_and_geometry(partition: np.ndarray, rng: np.random.Generator, width: tuple[float, float]):
    """Membrane mask, distance to the cell boundary and the local membrane half-width."""
    shape = partition.shape
    boundary = _boundary(partition)
    dist = ndi.distance_transform_edt(~boundary).astype(np.float32)
    lo, hi = width
    # Width varies along each membrane (smooth field) and between membranes (per-cell factor).
    along = _to_unit(_smooth_noise(shape, rng, 20.0))
    per_cell = rng.uniform(0.0, 1.0, size=int(partition.max()) + 1).astype(np.float32)
    mix = np.clip(0.6 * along + 0.4 * per_cell[partition], 0.0, 1.0)
    full = lo + (hi - lo) * mix**1.5
    half_width = np.maximum((full - 1.0) / 2.0, 0.5)
    membrane = dist <= half_width
    return membrane, dist, half_width


#: Rendering parameters of :func:`em_membranes` that :func:`em_volume` passes through.
_RENDER_KEYS = ("cell_intensity", "membrane_intensity", "intensity_spread", "texture", "vesicles", "mitochondria", "blur", "noise")


def em_membranes(
    shape: tuple[int, int] = (512, 512),
    rng: np.random.Generator | None = None,
    *,
    cell_area: float = 1900.0,
    size_variation: float = 1.2,
    membrane_width: tuple[float, float] = (3.5, 14.0),
    warp: float = 5.0,
    cell_intensity: float = 147.0,
    membrane_intensity: float = 84.0,
    intensity_spread: float = 16.0,
    texture: float = 22.0,
    vesicles: float = 80.0,
    mitochondria: float = 4.0,
    blur: float = 0.6,
    noise: float = 12.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One EM-like section of neural tissue with its exact membrane labels (ISBI 2012 style).

    ``shape`` is (Y, X), each side at least 16 px; ``rng`` is the source of all randomness. The
    labels (uint8, 255 = cell interior, 0 = membrane) depend only on the geometry parameters, so
    changing a rendering parameter keeps them. Geometry: ``cell_area`` mean px per cell
    (membrane included), ``size_variation`` log-scale spread of the local cell density,
    ``membrane_width`` smallest and largest membrane width in px (varying along and between
    membranes), ``warp`` px of smooth displacement curving the borders. Rendering:
    ``cell_intensity``/``membrane_intensity`` mean grey values of cytoplasm and membrane core,
    ``intensity_spread`` per-cell shade, ``texture`` granular cytoplasm amplitude,
    ``vesicles``/``mitochondria`` expected organelles per 100,000 px (inside cells, labelled as
    cell), ``blur`` Gaussian sigma, ``noise`` Gaussian noise in grey values. Returns the uint8
    image and labels.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> image, labels = em_membranes((96, 128), rng)
    >>> image.shape, bool(0.05 < (labels == 0).mean() < 0.5)
    ((96, 128), True)
    >>> bool(image[labels == 0].mean() < image[labels == 255].mean())
    True
    """
    shape = _check_shape(shape, 2)
    rng = np.random.default_rng() if rng is None else rng
    width = _check_range("membrane_width", membrane_width, low=1.0)
    _check_nonneg(cell_area=cell_area, size_variation=size_variation, warp=warp, intensity_spread=intensity_spread,
                  texture=texture, vesicles=vesicles, mitochondria=mitochondria, blur=blur, noise=noise)
    if cell_area < 20:
        raise ConfigError(f"cell_area={cell_area!r}: expected at least 20 px")
    # Separate streams: the labels depend only on the geometry parameters, so the same seed with
    # other rendering parameters (noise, texture, ...) gives the same ground truth.
    geometry_rng, render_rng = rng.spawn(2)
    partition = _cell_partition(shape, geometry_rng, cell_area=cell_area, size_variation=size_variation, warp=warp)
    membrane, dist, half_width = _em_labels_and_geometry(partition, geometry_rng, width)
    image = _render_em(partition, membrane, dist, half_width, render_rng, cell_intensity=cell_intensity,
                       membrane_intensity=membrane_intensity, intensity_spread=intensity_spread, texture=texture,
                       vesicles=vesicles, mitochondria=mitochondria, blur=blur, noise=noise)
    labels = np.where(membrane, 0, 255).astype(np.uint8)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels


def _render_params(render: dict) -> dict:
    """:func:`em_membranes`'s rendering defaults updated with ``render`` (unknown keys refused)."""
    import inspect

    signature = inspect.signature(em_membranes).parameters
    defaults = {key: signature[key].default for key in _RENDER_KEYS}
    unknown = set(render) - set(defaults)
    if unknown:
        raise ConfigError(f"em_volume: unknown parameter(s) {', '.join(sorted(unknown))}")
    defaults.update(render)
    _check_nonneg(**{k: v for k, v in defaults.items() if not k.endswith("_intensity")})
    return defaults


def em_volume(
    shape: tuple[int, int, int] = (8, 512, 512),
    rng: np.random.Generator | None = None,
    *,
    z_step: float = 3.0,
    cell_area: float = 1900.0,
    size_variation: float = 1.2,
    membrane_width: tuple[float, float] = (3.5, 14.0),
    warp: float = 5.0,
    **render,
) -> tuple[np.ndarray, np.ndarray]:
    """A stack of serial EM sections: cells continue through neighbouring sections.

    ``shape`` is (sections, Y, X). ``z_step`` is the section thickness in px of the in-plane
    scale: cells of diameter ``d`` run through about ``d / z_step`` sections. The geometry
    parameters and ``**render`` (``cell_intensity``, ``membrane_intensity``,
    ``intensity_spread``, ``texture``, ``vesicles``, ``mitochondria``, ``blur``, ``noise``) are
    those of :func:`em_membranes`. Returns uint8 image and labels (255 = cell, 0 = membrane).

    Examples
    --------
    >>> image, labels = em_volume((3, 64, 64), np.random.default_rng(0))
    >>> image.shape, labels.dtype
    ((3, 64, 64), dtype('uint8'))
    """
    shape = _check_shape(shape, 3)
    rng = np.random.default_rng() if rng is None else rng
    width = _check_range("membrane_width", membrane_width, low=1.0)
    _check_nonneg(cell_area=cell_area, size_variation=size_variation, warp=warp, z_step=z_step)
    if z_step <= 0 or cell_area < 20:
        raise ConfigError(f"z_step={z_step!r}, cell_area={cell_area!r}: expected z_step > 0 and cell_area >= 20")
    defaults = _render_params(render)
    geometry_rng, render_rng = rng.spawn(2)
    partition = _cell_partition(shape, geometry_rng, cell_area=cell_area, size_variation=size_variation, warp=warp, z_step=z_step)
    images = np.empty(shape, dtype=np.uint8)
    labels = np.empty(shape, dtype=np.uint8)
    for z in range(shape[0]):
        section = partition[z]
        membrane, dist, half_width = _em_labels_and_geometry(section, geometry_rng, width)
        image = _render_em(section, membrane, dist, half_width, render_rng, **defaults)
        images[z] = np.clip(np.rint(image), 0, 255).astype(np.uint8)
        labels[z] = np.where(membrane, 0, 255)
    return images, labels


def em_statistics(image: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Summary statistics of an EM section and its membrane labels (255 cell, 0 membrane).

    Used to match :func:`em_membranes` to ISBI 2012 (table in ``docs/data.md``). Cells are the
    4-connected components of label 255; membrane width is twice the distance transform on
    the membrane skeleton; ``fine_std`` is the std of the image minus its Gaussian blur
    (sigma 2); ``best_threshold_error`` is the smallest pixel error of ``image < t`` as the
    membrane prediction over t = 40, 42, ..., 218.

    Examples
    --------
    >>> image, labels = em_membranes((128, 128), np.random.default_rng(0))
    >>> stats = em_statistics(image, labels)
    >>> bool(stats["membrane_mean"] < stats["cell_mean"])
    True
    """
    from skimage.morphology import skeletonize

    image = np.asarray(image, dtype=np.float64)
    membrane = np.asarray(labels) == 0
    cells, n_cells = ndi.label(~membrane)
    sizes = np.bincount(cells.ravel())[1:] if n_cells else np.zeros(1)
    width = 2 * ndi.distance_transform_edt(membrane)[skeletonize(membrane)]
    if width.size == 0:
        width = np.zeros(1)
    return {
        "membrane_fraction": float(membrane.mean()),
        "membrane_mean": float(image[membrane].mean()) if membrane.any() else float("nan"),
        "cell_mean": float(image[~membrane].mean()) if (~membrane).any() else float("nan"),
        "std": float(image.std()),
        "cells": int(n_cells),
        "cell_area_median": float(np.median(sizes)),
        "cell_area_p90": float(np.percentile(sizes, 90)),
        "width_median": float(np.median(width)),
        "width_p10": float(np.percentile(width, 10)),
        "width_p90": float(np.percentile(width, 90)),
        "fine_std": float((image - ndi.gaussian_filter(image, 2)).std()),
        "best_threshold_error": float(min(np.mean((image < t) != membrane) for t in range(40, 220, 2))),
    }
