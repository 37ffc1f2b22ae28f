"""Touching cells (DIC-like or fluorescence) and nuclei with instance labels."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from ..errors import ConfigError
from ._common import _boundary, _check_nonneg, _check_range, _check_shape, _smooth_noise


def _place_cells(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    n_cells: int,
    radius: tuple[float, float],
    cluster_size: tuple[int, int],
    overlap: float,
    existing: list[tuple[float, float, float]] = (),
) -> list[tuple[float, float, float]]:
    """Centres and radii; cells in a cluster sit closer than the sum of their radii.

    New clusters keep clear of each other and of ``existing`` cells.
    """
    cells: list[tuple[float, float, float]] = []
    existing = list(existing)
    attempts = 0
    while len(cells) < n_cells and attempts < 50 * n_cells:
        attempts += 1
        k = int(rng.integers(cluster_size[0], cluster_size[1] + 1))
        r0 = rng.uniform(*radius)
        y, x = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        if any(math.hypot(y - cy, x - cx) < 0.9 * (r0 + cr) for cy, cx, cr in cells + existing):
            continue
        cluster = [(y, x, r0)]
        for _ in range(k - 1):
            for _try in range(20):
                py, px, pr = cluster[int(rng.integers(len(cluster)))]
                r = rng.uniform(*radius)
                angle = rng.uniform(0, 2 * math.pi)
                d = (pr + r) * (1.0 - overlap * rng.uniform(0.6, 1.0))
                ny, nx = py + d * math.sin(angle), px + d * math.cos(angle)
                others = cluster + cells + existing
                if all(math.hypot(ny - cy, nx - cx) > 0.6 * (r + cr) for cy, cx, cr in others):
                    cluster.append((ny, nx, r))
                    break
        cells.extend(cluster)
    return cells[: max(n_cells, 1)]


def _instance_map(shape: tuple[int, int], cells, rng: np.random.Generator, *, elongation: float, roughness: float):
    """Instance labels by a normalised-distance competition; also the normalised distance rho.

    Each cell ``i`` has a wobbly elliptical shape; a pixel belongs to the cell with the smallest
    rho_i = distance / local radius if that is below 1. Cells that overlap therefore share a
    curved border and touch with no background between them.
    """
    rho_best = np.full(shape, np.inf, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.int32)
    for i, (cy, cx, r) in enumerate(cells, start=1):
        ext = int(math.ceil(r * (1 + elongation) * (1 + 3 * roughness) + 2))
        y0, y1 = max(0, int(cy) - ext), min(shape[0], int(cy) + ext + 1)
        x0, x1 = max(0, int(cx) - ext), min(shape[1], int(cx) + ext + 1)
        if y1 <= y0 or x1 <= x0:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        theta = rng.uniform(0, math.pi)
        e = 1.0 + elongation * rng.random()
        c, s = math.cos(theta), math.sin(theta)
        u, v = (c * dx + s * dy) / math.sqrt(e), (-s * dx + c * dy) * math.sqrt(e)
        phi = np.arctan2(v, u)
        wobble = np.ones_like(phi)
        for k in range(2, 6):
            wobble += roughness / k * rng.normal() * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
        rho = np.hypot(u, v) / (r * np.maximum(wobble, 0.5))
        win = (rho < 1.0) & (rho < rho_best[y0:y1, x0:x1])
        rho_best[y0:y1, x0:x1][win] = rho[win]
        labels[y0:y1, x0:x1][win] = i
    # Keep only the largest piece of each cell (a neighbour can cut a thin cell in two).
    out = np.zeros(shape, dtype=np.uint16)
    objects = ndi.find_objects(labels)
    next_id = 1
    for i, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        mask = labels[sl] == i
        pieces, n = ndi.label(mask)
        if n > 1:
            sizes = np.bincount(pieces.ravel())[1:]
            mask = pieces == (int(np.argmax(sizes)) + 1)
        if mask.sum() < 30:
            continue
        out[sl][mask] = next_id
        next_id += 1
    rho_best[out == 0] = np.inf
    return out, rho_best


def _render_cells(labels: np.ndarray, rho: np.ndarray, rng: np.random.Generator, *, style: str, noise: float, blur: float) -> np.ndarray:
    shape = labels.shape
    fg = labels > 0
    n_ids = int(labels.max()) + 1
    inner = np.where(fg, np.clip(1.0 - rho, 0.0, 1.0), 0.0).astype(np.float32)
    # Contacts between touching cells: a thin seam where both cells thin out.
    seam = _boundary(labels.astype(np.int32)) & fg
    seam |= np.roll(seam, 1, axis=0) | np.roll(seam, 1, axis=1)
    seam &= fg
    if style == "dic":
        thickness = rng.uniform(0.7, 1.3, size=n_ids).astype(np.float32)
        # Flat-topped cells with steep rims: DIC shows their outlines as bright/dark edges.
        plateau = np.where(fg, np.sqrt(np.clip(1.0 - rho**3, 0.0, 1.0)), 0.0)
        height = thickness[labels] * plateau * 40.0
        height += fg * 3.0 * _smooth_noise(shape, rng, 3.0)
        nucleus = np.where(fg, np.clip(1.0 - 2.5 * rho, 0.0, 1.0), 0.0)
        height += 15.0 * nucleus
        # Granules and vesicles: small bumps and pits that DIC shows as shaded dots.
        dots = np.zeros(shape, dtype=np.float32)
        inside = np.flatnonzero(fg & (rho < 0.85))
        if len(inside):
            picks = rng.choice(inside, size=min(len(inside), max(1, len(inside) // 400)), replace=False)
            dots.flat[picks] = rng.choice([-1.0, 1.0], size=len(picks), p=[0.7, 0.3]) * rng.uniform(0.5, 1.0, size=len(picks))
        height += 120.0 * ndi.gaussian_filter(dots, 1.3)
        height -= 8.0 * ndi.gaussian_filter(seam.astype(np.float32), 1.0)
        height = ndi.gaussian_filter(height, 1.0)
        # DIC: intensity follows the derivative of the optical path along the shear direction.
        gy, gx = np.gradient(height)
        relief = (gx + gy) / math.sqrt(2.0)
        image = 1500.0 + 60.0 * relief + 40.0 * _smooth_noise(shape, rng, 2.0) * (0.3 + fg)
        image += 60.0 * _smooth_noise(shape, rng, 150.0)
    elif style == "fluorescence":
        brightness = rng.uniform(800.0, 2500.0, size=n_ids).astype(np.float32)
        image = brightness[labels] * (0.55 + 0.45 * np.sqrt(inner)) * fg
        image *= 1.0 + 0.15 * _smooth_noise(shape, rng, 3.0)
        image *= 1.0 - 0.45 * ndi.gaussian_filter(seam.astype(np.float32), 0.8) * fg
        image += 200.0 + 40.0 * _smooth_noise(shape, rng, 100.0)
    else:
        raise ConfigError(f"style={style!r}: expected 'dic' or 'fluorescence'")
    if blur > 0:
        image = ndi.gaussian_filter(image, blur)
    if style == "fluorescence":
        image = rng.poisson(np.clip(image, 0, None)).astype(np.float32)
    if noise > 0:
        image += rng.normal(0.0, noise, size=shape).astype(np.float32)
    return image


def touching_cells(
    shape: tuple[int, int] = (512, 512),
    rng: np.random.Generator | None = None,
    *,
    style: str = "dic",
    n_cells: int | None = None,
    radius: tuple[float, float] = (28.0, 56.0),
    cluster_size: tuple[int, int] = (2, 5),
    overlap: float = 0.3,
    elongation: float = 0.6,
    roughness: float = 0.15,
    blur: float = 1.0,
    noise: float = 30.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Cells in clusters that touch one another, with instance labels.

    ``style``: ``"dic"`` relief-like differential interference contrast on a grey background
    (cells neither brighter nor darker on average, as in DIC-C2DH-HeLa) or ``"fluorescence"``
    (bright cells on a dark background with Poisson noise). ``n_cells`` defaults to about one
    per ``(2.4 * mean radius)**2`` px; ``radius`` and ``cluster_size`` are ranges (cells of one
    cluster touch); ``overlap`` pushes neighbours together (a fraction of the sum of radii, 0 =
    just touching); ``elongation``/``roughness`` shape irregularity; ``blur`` Gaussian sigma;
    ``noise`` Gaussian noise in 12-bit units. Returns the uint16 image (0-4095) and uint16
    labels (0 = background, 1..K contiguous ids).

    Examples
    --------
    >>> image, labels = touching_cells((128, 128), np.random.default_rng(3), n_cells=6)
    >>> image.dtype, labels.dtype, int(labels.max()) >= 2
    (dtype('uint16'), dtype('uint16'), True)
    """
    shape = _check_shape(shape, 2)
    rng = np.random.default_rng() if rng is None else rng
    radius = _check_range("radius", radius, low=2.0)
    lo, hi = _check_range("cluster_size", cluster_size, low=1.0)
    _check_nonneg(overlap=overlap, elongation=elongation, roughness=roughness, blur=blur, noise=noise)
    if overlap >= 1:
        raise ConfigError(f"overlap={overlap!r}: expected 0 <= overlap < 1")
    if style not in ("dic", "fluorescence"):
        raise ConfigError(f"style={style!r}: expected 'dic' or 'fluorescence'")
    if n_cells is None:
        mean_r = sum(radius) / 2
        n_cells = max(2, int(round(shape[0] * shape[1] / (2.4 * mean_r) ** 2)))
    if int(n_cells) < 1:
        raise ConfigError(f"n_cells={n_cells!r}: expected at least 1")
    cells = _place_cells(shape, rng, n_cells=int(n_cells), radius=radius, cluster_size=(int(lo), int(hi)), overlap=overlap)
    labels, rho = _instance_map(shape, cells, rng, elongation=elongation, roughness=roughness)
    image = _render_cells(labels, rho, rng, style=style, noise=noise, blur=blur)
    return np.clip(np.rint(image), 0, 4095).astype(np.uint16), labels


def nuclei(
    shape: tuple[int, int] = (512, 512),
    rng: np.random.Generator | None = None,
    *,
    n_nuclei: int | None = None,
    radius: tuple[float, float] = (7.0, 14.0),
    touching: float = 0.25,
    blur: float = 1.0,
    noise: float = 20.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Fluorescent nuclei, mostly separate, some in touching pairs (Data Science Bowl style).

    Parameters
    ----------
    shape : (int, int)
    rng : numpy.random.Generator
    n_nuclei : int, optional
        Number of nuclei; by default about 20 % of the image is covered.
    radius : (float, float)
        Range of nucleus radii in px.
    touching : float
        Fraction of nuclei placed in touching pairs or triplets.
    blur, noise : float
        As in :func:`touching_cells`.

    Returns
    -------
    image, labels : ndarray of uint16
        Image in a 12-bit range; labels 0 = background, 1..K = nuclei.

    Examples
    --------
    >>> image, labels = nuclei((96, 96), np.random.default_rng(0))
    >>> int(labels.max()) > 3
    True
    """
    shape = _check_shape(shape, 2)
    rng = np.random.default_rng() if rng is None else rng
    radius = _check_range("radius", radius, low=2.0)
    if not (0 <= touching <= 1):
        raise ConfigError(f"touching={touching!r}: expected a fraction in [0, 1]")
    if n_nuclei is None:
        mean_r = sum(radius) / 2
        n_nuclei = max(2, int(round(0.2 * shape[0] * shape[1] / (math.pi * mean_r**2))))
    n_nuclei = int(n_nuclei)
    n_grouped = int(round(touching * n_nuclei))
    cells = _place_cells(shape, rng, n_cells=n_grouped, radius=radius, cluster_size=(2, 3), overlap=0.2) if n_grouped else []
    if n_nuclei > len(cells):
        cells += _place_cells(shape, rng, n_cells=n_nuclei - len(cells), radius=radius, cluster_size=(1, 1), overlap=0.0, existing=cells)
    labels, rho = _instance_map(shape, cells, rng, elongation=0.4, roughness=0.06)
    image = _render_cells(labels, rho, rng, style="fluorescence", noise=noise, blur=blur)
    return np.clip(np.rint(image), 0, 4095).astype(np.uint16), labels
