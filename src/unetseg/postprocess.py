"""From probability maps to instance labels: threshold, connected components, watershed split.

All functions are pure functions of NumPy arrays, 2D or 3D. Label images use the smallest of
uint16/uint32 that holds the largest label (:func:`label_dtype`), the types TIFF readers and the
Cell Tracking Challenge tools expect.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .errors import ConfigError, InputError

SPLITS = ("none", "distance", "border")


def label_dtype(max_label: int) -> np.dtype:
    """uint16 when ``max_label`` fits, else uint32.

    Examples
    --------
    >>> label_dtype(65535), label_dtype(65536)
    (dtype('uint16'), dtype('uint32'))
    """
    if max_label < 0 or max_label >= 2**32:
        raise InputError(f"{max_label} labels do not fit a uint32 label image")
    return np.dtype(np.uint16) if max_label < 2**16 else np.dtype(np.uint32)


def as_label_image(labels: np.ndarray) -> np.ndarray:
    """Cast non-negative integer labels to :func:`label_dtype` of their maximum."""
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    if labels.size and int(labels.min()) < 0:
        raise InputError("label image has negative labels")
    return labels.astype(label_dtype(top), copy=False)


def threshold(prob: np.ndarray, t: float = 0.5) -> np.ndarray:
    """Foreground mask ``prob > t``.

    Examples
    --------
    >>> threshold(np.array([0.2, 0.5, 0.7])).tolist()
    [False, False, True]
    """
    if not 0.0 <= float(t) <= 1.0:
        raise ConfigError(f"threshold {t!r}: expected a probability in [0, 1]")
    return np.asarray(prob) > t


def connected_components(mask: np.ndarray, *, connectivity: int = 1) -> np.ndarray:
    """Label the connected components of a boolean mask (1: faces only, ndim: also corners).

    Examples
    --------
    >>> connected_components(np.array([[1, 1, 0, 1]], bool)).tolist()
    [[1, 1, 0, 2]]
    """
    mask = np.asarray(mask, dtype=bool)
    structure = ndi.generate_binary_structure(mask.ndim, connectivity)
    labels, n = ndi.label(mask, structure=structure, output=np.uint32 if mask.size >= 2**16 else None)
    return labels.astype(label_dtype(int(n)), copy=False)


def fill_small_holes(prob: np.ndarray, area: int) -> np.ndarray:
    """Fill the dark structures of a foreground-probability map smaller than ``area`` pixels.

    Area closing (:func:`skimage.morphology.area_closing`, computed as the area opening of the
    negated map so every value is copied exactly) raises every regional dark structure
    (a connected set of pixels darker than its surroundings, with full connectivity: the
    background's in the warping-error convention) that covers fewer than ``area`` pixels to the
    level of its rim. At every threshold the binarised map then has no background component
    smaller than ``area`` enclosed by foreground, while larger structures (the membrane network of
    an EM section, the gap between cells) keep every value. In EM sections these holes are
    organelles mistaken for membrane; each is a topological error the warping error counts.
    ``area`` 0 (or 1) returns the map unchanged.

    Examples
    --------
    >>> prob = np.full((5, 5), 0.9, np.float32)
    >>> prob[2, 2] = 0.1                      # a one-pixel hole inside an object
    >>> prob[:, 0] = 0.0                      # a background strip of 5 pixels
    >>> out = fill_small_holes(prob, 3)
    >>> bool(out[2, 2] == prob[2, 1]), float(out[0, 0])
    (True, 0.0)
    """
    from skimage.morphology import area_opening

    prob = np.asarray(prob)
    if int(area) != area or area < 0:
        raise ConfigError(f"postprocess.fill_holes: expected a pixel count >= 0, got {area!r}")
    if area <= 1:
        return prob
    # area_closing subtracts from the dtype's maximum, which rounds float maps by an ulp; the
    # opening of the negated map is the same filter and copies values exactly
    return (-area_opening(-prob, int(area), connectivity=prob.ndim)).astype(prob.dtype, copy=False)


def foreground_postprocess(probs: np.ndarray, foreground_class: int, post, *, sections: bool = False,
                           affinities: np.ndarray | None = None, offsets: tuple = ()) -> np.ndarray:
    """The card's post-processing of a 2-class foreground map, in place: holes filled
    (:func:`fill_small_holes`, ``post.fill_holes``), then boundaries closed by agglomeration
    (:func:`unetseg.membranes.agglomerate_boundaries`, ``post.agglomerate``) or by the mutex
    watershed on the model's ``affinities`` (``(K, *spatial)`` for ``offsets``;
    :func:`unetseg.affinities.mutex_boundaries`, ``post.mutex_watershed``), each plane of the
    first spatial axis alone with ``sections`` (both work on 2D sections: a 3D map is closed
    slice by slice in any case). ``post`` is a :class:`~unetseg.models.card.Postprocess`. A map of
    more than 2 classes has no single foreground and is left as it is.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> probs = np.stack([np.zeros((5, 5), np.float32), np.full((5, 5), 0.9, np.float32)])
    >>> probs[1, 2, 2] = 0.1
    >>> out = foreground_postprocess(probs, 1, SimpleNamespace(fill_holes=3, agglomerate=0.0))
    >>> float(out[1, 2, 2])
    0.8999999761581421
    """
    mutex = bool(getattr(post, "mutex_watershed", False))
    if probs.shape[0] > 2 or (post.fill_holes <= 1 and post.agglomerate <= 0 and not mutex):
        return probs
    if mutex and (affinities is None or not offsets):
        raise InputError("postprocess.mutex_watershed needs the model's affinity outputs (a model trained with "
                         "model.args.affinity_offsets, predicted in this process)")
    from .affinities import mutex_boundaries
    from .membranes import agglomerate_boundaries

    c = min(foreground_class, probs.shape[0] - 1)
    planes = probs[c] if sections else probs[c][None]
    aff = None if affinities is None else (affinities if sections else affinities[:, None])
    for i in range(len(planes)):
        filled = fill_small_holes(planes[i], post.fill_holes)
        planes[i] = (mutex_boundaries(filled, aff[:, i], offsets, threshold=post.threshold) if mutex
                     else agglomerate_boundaries(filled, post.agglomerate))
    return probs


def remove_small_objects(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop objects smaller than ``min_size`` pixels and renumber the rest 1..n in scan order.

    Examples
    --------
    >>> remove_small_objects(np.array([[1, 1, 0, 2, 3, 3, 3]]), 2).tolist()
    [[1, 1, 0, 0, 2, 2, 2]]
    """
    labels = np.asarray(labels)
    if labels.size == 0 or min_size <= 1:
        return relabel_sequential(labels)
    counts = np.bincount(labels.ravel())
    small = counts < int(min_size)
    small[0] = False
    cleaned = np.where(small[labels], 0, labels)
    return relabel_sequential(cleaned)


def remove_small_edge_objects(labels: np.ndarray, min_size: int, *, edge_dims: int | None = None) -> np.ndarray:
    """Drop objects that touch the image's edge and have fewer than ``min_size`` pixels, and
    renumber the rest 1..n in scan order.

    A cell cut by the frame shows as a sliver at the edge; references such as the Cell Tracking
    Challenge's often leave such slivers unannotated, and the objects a network makes there are
    mostly fragments (Cellpose's ``exclude_on_edges`` drops every edge object; this drops the
    small ones only). ``edge_dims``: how many trailing axes have edges (default all; 2 for a
    stack of 2D sections, whose first and last sections are not edges).

    Examples
    --------
    >>> labels = np.array([[1, 0, 2, 2, 2], [0, 0, 2, 2, 2], [0, 3, 0, 0, 0], [0, 0, 0, 0, 0]])
    >>> remove_small_edge_objects(labels, 2).tolist()  # the 1-px object 1 at the edge goes, 3 stays
    [[0, 0, 1, 1, 1], [0, 0, 1, 1, 1], [0, 2, 0, 0, 0], [0, 0, 0, 0, 0]]
    """
    labels = np.asarray(labels)
    dims = labels.ndim if edge_dims is None else int(edge_dims)
    if labels.size == 0 or min_size <= 1:
        return relabel_sequential(labels)
    if not 1 <= dims <= labels.ndim:
        raise ConfigError(f"edge_dims {edge_dims}: expected 1 to {labels.ndim} for labels of shape {labels.shape}")
    on_edge = np.zeros(int(labels.max()) + 1, bool)
    for axis in range(labels.ndim - dims, labels.ndim):
        for end in (0, -1):
            on_edge[np.take(labels, end, axis=axis)] = True
    small = on_edge & (np.bincount(labels.ravel(), minlength=on_edge.size) < int(min_size))
    small[0] = False
    return relabel_sequential(np.where(small[labels], 0, labels))


def relabel_sequential(labels: np.ndarray) -> np.ndarray:
    """Renumber labels to 1..n in order of first appearance in scan order (0 stays background).

    Examples
    --------
    >>> relabel_sequential(np.array([[7, 0, 3, 7]])).tolist()
    [[1, 0, 2, 1]]
    """
    labels = np.asarray(labels)
    flat = labels.ravel()
    ids, first = np.unique(flat, return_index=True)
    keep = ids != 0
    ids, first = ids[keep], first[keep]
    order = ids[np.argsort(first, kind="stable")]
    lut = np.zeros(int(labels.max()) + 1 if labels.size else 1, dtype=np.int64)
    lut[order] = np.arange(1, len(order) + 1)
    return lut[labels].astype(label_dtype(len(order)), copy=False)


def _peak_markers(distance: np.ndarray, mask: np.ndarray, min_distance: int, h: float) -> np.ndarray:
    """Markers at regional maxima of the distance map that rise at least ``h`` over their saddle."""
    from skimage.morphology import h_maxima

    if h > 0:
        peaks = h_maxima(distance, h).astype(bool) & mask
    else:
        size = 2 * int(min_distance) + 1
        peaks = (distance == ndi.maximum_filter(distance, size=size)) & mask
    structure = ndi.generate_binary_structure(mask.ndim, mask.ndim)
    markers, _ = ndi.label(peaks, structure=structure)
    return markers


def watershed_split(
    mask: np.ndarray,
    *,
    border: np.ndarray | None = None,
    min_distance: int = 3,
    h: float = 1.0,
    connectivity: int = 1,
    seeds: np.ndarray | None = None,
) -> np.ndarray:
    """Split touching objects of ``mask`` by a marker-controlled watershed.

    Parameters
    ----------
    mask : ndarray of bool
        Foreground.
    border : ndarray of float, optional
        Probability of "object border" (a border class of a 3-class model): markers are the
        connected parts of ``seeds`` inside ``mask``, flooded over ``border``. Without it,
        markers are maxima of the distance transform of ``mask`` rising at least ``h`` pixels
        over their surroundings (``h = 0``: plain local maxima in a ``2 * min_distance + 1`` window),
        flooded over the negated distance.
    connectivity : int
        Neighbourhood of the watershed and the markers.
    seeds : ndarray of bool, optional
        With ``border`` (required there): the confident object interiors that seed one object
        each. "Not border" is no seed: an uncertain contact between two objects would join them.

    Returns
    -------
    ndarray
        uint16/uint32 labels, 0 background. Every component of ``mask`` keeps a label, except
        with ``border``: border with no seed inside (a halo in empty background) is no object.

    Examples
    --------
    >>> two = np.zeros((9, 20), bool)
    >>> two[1:8, 1:9] = two[1:8, 10:18] = True; two[4, 9] = True  # two squares and a thin bridge
    >>> int(watershed_split(two).max())
    2
    """
    from skimage.segmentation import watershed

    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.uint16)
    structure = ndi.generate_binary_structure(mask.ndim, connectivity)
    if border is not None:
        border = np.asarray(border, dtype=np.float32)
        if border.shape != mask.shape:
            raise InputError(f"border map of shape {border.shape} does not match the mask {mask.shape}")
        if seeds is None or np.shape(seeds) != mask.shape:
            raise InputError(f"a border-flooded watershed needs seeds of the mask's shape {mask.shape}")
        markers, _ = ndi.label(mask & np.asarray(seeds, dtype=bool), structure=structure)
        surface = border
    else:
        distance = ndi.distance_transform_edt(mask)
        markers = _with_orphans(_peak_markers(distance, mask, min_distance, h), mask, structure)
        surface = -distance
    labels = watershed(surface, markers=markers, mask=mask, connectivity=connectivity)
    return relabel_sequential(labels)


def _with_orphans(markers: np.ndarray, mask: np.ndarray, structure: np.ndarray) -> np.ndarray:
    """``markers`` plus one marker for every component of ``mask`` that has none (tiny, or all border)."""
    comps, n = ndi.label(mask, structure=structure)
    has_marker = np.zeros(n + 1, bool)
    has_marker[comps[markers > 0]] = True
    orphan = ~has_marker[comps] & mask
    if not orphan.any():
        return markers
    extra, _ = ndi.label(orphan, structure=structure)
    return np.where(extra > 0, extra + markers.max(), markers)


def instances_from_probabilities(
    prob: np.ndarray,
    *,
    threshold_value: float = 0.5,
    foreground_class: int = 1,
    split: str = "none",
    border_class: int | None = None,
    min_size: int = 0,
    connectivity: int = 1,
    min_distance: int = 3,
    h: float = 1.0,
    edge_min_size: int = 0,
    edge_dims: int | None = None,
) -> np.ndarray:
    """Instance labels from class probabilities ``(num_classes, *spatial)``.

    Foreground is ``prob[foreground_class] > threshold_value``. ``split``: ``"none"`` (connected
    components), ``"distance"`` (watershed on the distance transform) or ``"border"`` (a 3-class
    model with a border class: objects are ``interior + border > threshold_value``, seeded by
    the connected interiors ``prob[foreground_class] > threshold_value`` of at least
    ``min_size`` pixels and flooded over the border probability). Objects under ``min_size``
    pixels are removed, then objects touching the edge under ``edge_min_size`` pixels
    (:func:`remove_small_edge_objects`, with its ``edge_dims``).

    Examples
    --------
    >>> p = np.zeros((2, 4, 6), np.float32); p[1, 1:3, 1:3] = p[1, 1:3, 4:6] = 0.9; p[0] = 1 - p[1]
    >>> instances_from_probabilities(p).max(), instances_from_probabilities(p).dtype
    (np.uint16(2), dtype('uint16'))
    """
    prob = np.asarray(prob)
    if split not in SPLITS:
        raise ConfigError(f"split {split!r}: expected one of {', '.join(SPLITS)}")
    if not 0 <= foreground_class < prob.shape[0]:
        raise ConfigError(f"foreground_class {foreground_class}: the map has {prob.shape[0]} classes")
    if split == "border":
        if border_class is None or not 0 <= border_class < prob.shape[0] or border_class == foreground_class:
            raise ConfigError(f"split 'border' needs a border_class other than the foreground among the {prob.shape[0]} classes (got {border_class!r})")
        # Objects are interior plus their border; markers are the interiors the border separates.
        mask = threshold(np.clip(prob[foreground_class] + prob[border_class], 0, 1), threshold_value)
        # Seeds are confident interiors, not merely "not border": pixels that are neither cell nor
        # border with confidence (the gap between two cells) would otherwise join two cells' seeds.
        seeds = remove_small_objects(connected_components(threshold(prob[foreground_class], threshold_value),
                                                          connectivity=connectivity), min_size) > 0
        labels = watershed_split(mask, border=prob[border_class], seeds=seeds, connectivity=connectivity)
    else:
        mask = threshold(prob[foreground_class], threshold_value)
        if split == "none":
            labels = connected_components(mask, connectivity=connectivity)
        else:
            labels = watershed_split(mask, min_distance=min_distance, h=h, connectivity=connectivity)
    labels = remove_small_objects(labels, min_size) if min_size > 1 else as_label_image(labels)
    return remove_small_edge_objects(labels, edge_min_size, edge_dims=edge_dims) if edge_min_size > 1 else labels
