"""Synthetic microscopy images with exact ground truth, for the demo, tests and quick experiments.

Three generators, all pure NumPy/SciPy, deterministic for a given ``numpy.random.Generator``:

- :func:`em_membranes` (and :func:`em_volume` for a stack of serial sections): electron-microscopy
  sections in the style of the ISBI 2012 challenge. Irregular cells with curved borders, dark
  membranes of varying thickness, and inside the cells dark vesicles, mitochondria-like blobs
  and granular texture that are *not* membrane, so a threshold alone does not solve the task.
  Labels follow the ISBI 2012 convention: 255 = cell interior, 0 = membrane.
- :func:`touching_cells`: whole cells that touch one another without a background gap, in a
  DIC-like relief style or a fluorescence style, with instance labels (0 = background). These
  are the cases the paper's border weight map is made for.
- :func:`nuclei`: smaller, mostly separate fluorescent nuclei with instance labels.

The default parameters of :func:`em_membranes` were matched to the 24 labelled ISBI 2012
sections: membrane covers about 22 % of the pixels, the mean intensity is about 90 on membrane
and 145 on cells, and the image standard deviation is about 44.

Examples
--------
>>> import numpy as np
>>> image, labels = em_membranes((128, 128), np.random.default_rng(0))
>>> image.dtype, labels.dtype, sorted(np.unique(labels).tolist())
(dtype('uint8'), dtype('uint8'), [0, 255])
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from .errors import ConfigError

__all__ = ["em_membranes", "em_volume", "touching_cells", "nuclei", "generate", "check_params", "kind_function", "em_statistics", "KINDS"]

#: Names accepted by ``unetseg data synth`` and what each produces.
KINDS = {
    "em": "EM membrane sections like ISBI 2012 (uint8 image, labels 255 = cell, 0 = membrane)",
    "em-volume": "serial EM sections whose cells continue from one section to the next",
    "dic-cells": "touching cells in a DIC-like relief style (uint16 image, instance labels)",
    "fluo-cells": "touching cells in a fluorescence style (uint16 image, instance labels)",
    "nuclei": "mostly separate fluorescent nuclei (uint16 image, instance labels)",
}


# --------------------------------------------------------------------------------------------
# helpers


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


# --------------------------------------------------------------------------------------------
# EM membranes


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


def _boundary(labels: np.ndarray) -> np.ndarray:
    """One-pixel-thin boundary between different ids, in the image plane (last two axes)."""
    out = np.zeros(labels.shape, dtype=bool)
    for axis in (-1, -2):
        diff = np.diff(labels, axis=axis) != 0
        sl = [slice(None)] * labels.ndim
        sl[axis] = slice(0, -1)
        out[tuple(sl)] |= diff
    return out


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
    area = shape[0] * shape[1]
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
    # Organelles inside cells, kept clear of the membranes so the labels stay exact.
    organelles = np.zeros(shape, dtype=np.float32)
    free = np.where(membrane, 0.0, dist - half_width)
    candidates = np.flatnonzero(free > 4.0)
    n_ves = rng.poisson(vesicles * area / 1e5)
    if len(candidates):
        for flat in rng.choice(candidates, size=min(n_ves, len(candidates))):
            cy, cx = divmod(int(flat), shape[1])
            radius = min(rng.uniform(1.5, 4.0), free.flat[flat] - 2.0)
            if radius >= 1.5:
                _stamp(organelles, (cy, cx), _vesicle_patch(radius, rng.uniform(40, 80)))
        n_mito = rng.poisson(mitochondria * area / 1e5)
        big = np.flatnonzero(free > 7.0)
        for flat in rng.choice(big, size=min(n_mito, len(big))) if len(big) else []:
            cy, cx = divmod(int(flat), shape[1])
            room = free.flat[flat] - 2.0
            a = min(rng.uniform(8.0, 22.0), room)
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
    image += organelles
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

    Parameters
    ----------
    shape : (int, int)
        Image size (Y, X), each side at least 16 px.
    rng : numpy.random.Generator
        Source of all randomness; the same generator state gives the same image. The labels
        depend only on the geometry parameters (``cell_area`` to ``warp``), so changing a
        rendering parameter (intensities, texture, organelles, blur, noise) keeps them.
    cell_area : float
        Mean area per cell in px, membrane included. Cells vary in size around it.
    size_variation : float
        Log-scale spread of the local cell density; 0 gives cells of similar size.
    membrane_width : (float, float)
        Smallest and largest membrane width in px; the width varies along and between membranes.
    warp : float
        Amplitude in px of the smooth displacement that curves the cell borders.
    cell_intensity, membrane_intensity : float
        Mean grey value of cytoplasm and of the membrane core before texture and noise.
    intensity_spread : float
        Standard deviation of the per-cell shade.
    texture : float
        Amplitude of the granular cytoplasm texture.
    vesicles, mitochondria : float
        Expected number of dark vesicles and of striped mitochondria-like blobs per 100,000 px.
        They lie inside cells and are labelled as cell interior.
    blur : float
        Gaussian blur sigma in px (optics).
    noise : float
        Standard deviation of additive Gaussian noise in grey values.

    Returns
    -------
    image : ndarray of uint8, shape ``shape``
    labels : ndarray of uint8, shape ``shape``
        255 = cell interior, 0 = membrane.

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
    _check_nonneg(
        cell_area=cell_area, size_variation=size_variation, warp=warp, intensity_spread=intensity_spread,
        texture=texture, vesicles=vesicles, mitochondria=mitochondria, blur=blur, noise=noise,
    )
    if cell_area < 20:
        raise ConfigError(f"cell_area={cell_area!r}: expected at least 20 px")
    # Separate streams: the labels depend only on the geometry parameters, so the same seed with
    # other rendering parameters (noise, texture, ...) gives the same ground truth.
    geometry_rng, render_rng = rng.spawn(2)
    partition = _cell_partition(shape, geometry_rng, cell_area=cell_area, size_variation=size_variation, warp=warp)
    membrane, dist, half_width = _em_labels_and_geometry(partition, geometry_rng, width)
    image = _render_em(
        partition, membrane, dist, half_width, render_rng,
        cell_intensity=cell_intensity, membrane_intensity=membrane_intensity,
        intensity_spread=intensity_spread, texture=texture, vesicles=vesicles,
        mitochondria=mitochondria, blur=blur, noise=noise,
    )
    labels = np.where(membrane, 0, 255).astype(np.uint8)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), labels


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

    Parameters
    ----------
    shape : (int, int, int)
        (sections, Y, X).
    rng : numpy.random.Generator
    z_step : float
        Section thickness in px of the in-plane scale. Cells of diameter ``d`` run through about
        ``d / z_step`` sections; larger values give less similar neighbours.
    cell_area, size_variation, membrane_width, warp
        As in :func:`em_membranes`.
    **render
        ``cell_intensity``, ``membrane_intensity``, ``intensity_spread``, ``texture``,
        ``vesicles``, ``mitochondria``, ``blur``, ``noise`` as in :func:`em_membranes`.

    Returns
    -------
    image, labels : ndarray of uint8, shape ``shape``
        Labels are 255 = cell interior, 0 = membrane, section by section.

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
    import inspect

    signature = inspect.signature(em_membranes).parameters
    defaults = {key: signature[key].default for key in _RENDER_KEYS}
    unknown = set(render) - set(defaults)
    if unknown:
        raise ConfigError(f"em_volume: unknown parameter(s) {', '.join(sorted(unknown))}")
    defaults.update(render)
    _check_nonneg(**{k: v for k, v in defaults.items() if not k.endswith("_intensity")})
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


# --------------------------------------------------------------------------------------------
# touching cells and nuclei


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

    Parameters
    ----------
    shape : (int, int)
        Image size (Y, X), each side at least 16 px.
    rng : numpy.random.Generator
    style : {"dic", "fluorescence"}
        ``"dic"``: relief-like differential interference contrast on a grey background (cells
        are neither brighter nor darker than the background on average, as in DIC-C2DH-HeLa).
        ``"fluorescence"``: bright cells on a dark background with Poisson noise.
    n_cells : int, optional
        Number of cells; by default about one per ``(2.4 * mean radius)**2`` px.
    radius : (float, float)
        Range of cell radii in px.
    cluster_size : (int, int)
        Range of the number of cells per cluster; cells of one cluster touch.
    overlap : float
        How far (as a fraction of the sum of radii) neighbours in a cluster are pushed together;
        0 places them just touching, larger values give longer shared borders.
    elongation, roughness : float
        Shape irregularity: aspect ratio spread and boundary wobble.
    blur : float
        Gaussian blur sigma in px.
    noise : float
        Standard deviation of additive Gaussian noise (image units, 12-bit range).

    Returns
    -------
    image : ndarray of uint16, shape ``shape``
        Values in a 12-bit range (0-4095).
    labels : ndarray of uint16, shape ``shape``
        0 = background, 1..K = cells (contiguous ids).

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


def generate(kind: str, shape: tuple[int, int], rng: np.random.Generator, **params) -> tuple[np.ndarray, np.ndarray]:
    """One image/label pair of a named ``kind`` (see :data:`KINDS`; not ``em-volume``).

    ``params`` go to the generator (for example ``noise=20`` or ``membrane_width=(2, 6)``); an
    unknown name raises :class:`~unetseg.errors.ConfigError`.

    Examples
    --------
    >>> image, labels = generate("nuclei", (64, 64), np.random.default_rng(0), noise=5)
    >>> image.shape
    (64, 64)
    """
    if kind == "em-volume" or kind not in KINDS:
        raise ConfigError(f"synthetic kind {kind!r}: expected one of {', '.join(k for k in KINDS if k != 'em-volume')}")
    fn, fixed = kind_function(kind)
    check_params(fn, params, fixed)
    return fn(shape, rng, **fixed, **params)


def kind_function(kind: str):
    """``(function, fixed keyword arguments)`` behind a kind name of :data:`KINDS`.

    Examples
    --------
    >>> kind_function("dic-cells")[1]
    {'style': 'dic'}
    """
    table = {
        "em": (em_membranes, {}),
        "em-volume": (em_volume, {}),
        "dic-cells": (touching_cells, {"style": "dic"}),
        "fluo-cells": (touching_cells, {"style": "fluorescence"}),
        "nuclei": (nuclei, {}),
    }
    if kind not in table:
        raise ConfigError(f"synthetic kind {kind!r}: expected one of {', '.join(table)}")
    return table[kind]


def check_params(fn, params: dict, fixed: dict | None = None) -> None:
    """Raise ConfigError naming any key of ``params`` that ``fn`` does not take as a keyword.

    Examples
    --------
    >>> check_params(nuclei, {"noise": 3})
    >>> check_params(nuclei, {"nosie": 3})
    Traceback (most recent call last):
    ...
    unetseg.errors.ConfigError: nuclei: unknown parameter 'nosie'; expected one of blur, n_nuclei, noise, radius, touching
    """
    import inspect

    sig = inspect.signature(fn)
    allowed = {n for n, p in sig.parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY} - set(fixed or {})
    if fn is em_volume:
        allowed |= set(_RENDER_KEYS)
    for key in params:
        if key not in allowed:
            raise ConfigError(f"{fn.__name__}: unknown parameter {key!r}; expected one of {', '.join(sorted(allowed))}")
