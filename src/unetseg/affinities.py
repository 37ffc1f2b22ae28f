"""Affinities: whether two pixels a fixed offset apart belong to the same object.

A network with ``affinity_offsets`` (:class:`~unetseg.models.UNet`) predicts, next to its class
probabilities, one channel per offset ``d``: at pixel ``p`` the probability that ``p`` and
``p + d`` lie in the same object. Nearest-neighbour offsets say where boundaries are; long-range
ones (9, 27 px) let the segmentation see that two pixels are separated even where the boundary
between them has a gap. The mutex watershed (Wolf et al., TPAMI 2020; the route of the best
published ISBI 2012 result) turns them into regions: attractive nearest-neighbour edges and
repulsive long-range edges are processed strongest first, and two clusters never merge once a
repulsive edge between them was accepted. It runs in ``bioimage-cpp`` (the C++ library of
Pape's group that ``elf`` builds on); the training targets come from the same library.

The offsets must be closed under the 8 rotations/flips of the last two axes, so that test-time
augmentation can map every predicted channel back onto another one (:func:`tta_permutation`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from .errors import InputError

Offsets = tuple[tuple[int, ...], ...]


def transformed_offset(offset: Sequence[int], quarter_turns: int, flip: bool) -> tuple[int, ...]:
    """Where ``offset`` points after the test-time transform ``(quarter_turns, flip)`` of the
    last two axes (flip of the last axis first, then ``torch.rot90(x, quarter_turns, (-2, -1))``).

    Examples
    --------
    >>> transformed_offset((0, 1), 1, False), transformed_offset((0, 1), 0, True), transformed_offset((2, 0, 1), 2, False)
    ((-1, 0), (0, -1), (2, 0, -1))
    """
    *rest, dy, dx = (int(v) for v in offset)
    if flip:
        dx = -dx
    for _ in range(quarter_turns % 4):
        dy, dx = -dx, dy
    return (*rest, dy, dx)


def check_offsets(offsets: Sequence[Sequence[int]], spatial_dims: int) -> Offsets:
    """``offsets`` as a tuple of int tuples, checked: ``spatial_dims`` values each, not zero, no
    repeats, and closed under the 8 rotations/flips of the last two axes (``ValueError`` else).

    Examples
    --------
    >>> check_offsets([[-1, 0], [1, 0], [0, -1], [0, 1]], 2)
    ((-1, 0), (1, 0), (0, -1), (0, 1))
    >>> check_offsets([[-1, 0], [0, -1]], 2)
    Traceback (most recent call last):
    ...
    ValueError: affinity_offsets: not closed under rotations and flips (missing [1, 0]); give each offset with its rotations and mirror images
    """
    out = []
    for off in offsets:
        if isinstance(off, (str, bytes)) or not isinstance(off, Sequence) or len(off) != spatial_dims:
            raise ValueError(f"affinity_offsets: {off!r} is not a list of {spatial_dims} integers")
        if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in off) or not any(off):
            raise ValueError(f"affinity_offsets: {list(off)!r} must be {spatial_dims} integers, not all 0")
        out.append(tuple(int(v) for v in off))
    if len(set(out)) != len(out):
        raise ValueError("affinity_offsets: an offset is given twice")
    known = set(out)
    for off in out:
        for k in range(4):
            for flip in (False, True):
                moved = transformed_offset(off, k, flip)
                if moved not in known:
                    raise ValueError(f"affinity_offsets: not closed under rotations and flips (missing {list(moved)}); "
                                     "give each offset with its rotations and mirror images")
    return tuple(out)


def tta_permutation(offsets: Offsets, quarter_turns: int, flip: bool) -> list[int]:
    """For each channel ``j`` of a network run on the transformed image (its output turned back),
    the channel of the original offsets it predicts: ``offsets.index(T^-1 offsets[j])``.

    Examples
    --------
    >>> offs = ((-1, 0), (1, 0), (0, -1), (0, 1))
    >>> tta_permutation(offs, 1, False), tta_permutation(offs, 0, True)
    ([3, 2, 0, 1], [0, 1, 3, 2])
    """
    index = {off: i for i, off in enumerate(offsets)}
    undo = []
    for off in offsets:
        back = transformed_offset(off, -quarter_turns, False)  # T = rot^k . flip, so T^-1 = flip . rot^-k
        undo.append(index[transformed_offset(back, 0, flip)])
    return undo


def attractive_first(offsets: Offsets) -> tuple[list[int], int]:
    """The channel order the mutex watershed takes (nearest-neighbour offsets, one step along one
    axis, first) and how many of them there are.

    Examples
    --------
    >>> attractive_first(((-9, 0), (0, 1), (0, -1), (1, 1)))
    ([1, 2, 0, 3], 2)
    """
    near = [i for i, off in enumerate(offsets) if sum(abs(v) for v in off) == 1]
    return near + [i for i in range(len(offsets)) if i not in near], len(near)


def affinity_targets(instances: np.ndarray, offsets: Offsets, valid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Training targets of the affinity channels: ``(K, *spatial)`` float32 affinities (1 where
    ``p`` and ``p + d`` carry the same object id > 0; 0 where they differ or either is 0) and a
    bool mask (both inside the image and both ``valid``).

    Examples
    --------
    >>> lab = np.array([[1, 1, 0, 2]])
    >>> aff, ok = affinity_targets(lab, ((0, -1), (0, 1)))
    >>> aff.tolist(), ok.astype(int).tolist()
    ([[[0.0, 1.0, 0.0, 0.0]], [[1.0, 0.0, 0.0, 0.0]]], [[[0, 1, 1, 1]], [[1, 1, 1, 0]]])
    """
    import bioimage_cpp as bic

    lab = np.ascontiguousarray(instances, dtype=np.int64)
    offs = np.asarray(offsets, dtype=np.int64)
    aff, _ = bic.affinities.compute_affinities(lab, offs, ignore_label=0)  # any pair with 0 (boundary) is 0
    inside = np.ones(lab.shape, np.int64) if valid is None else np.asarray(valid, bool).astype(np.int64)
    _, mask = bic.affinities.compute_affinities(inside, offs, ignore_label=0)
    return aff.astype(np.float32, copy=False), mask.astype(bool)


def mutex_regions(cell_prob: np.ndarray, affinities: np.ndarray, offsets: Offsets, *, threshold: float = 0.5,
                  stride: int = 1) -> np.ndarray:
    """Regions of a 2D section by the mutex watershed on predicted affinities.

    The pixels with ``cell_prob > threshold`` are partitioned (attractive nearest-neighbour
    edges weighted by their affinity, repulsive long-range edges by one minus it); boundary
    pixels then join the region they flood to first on ``1 - cell_prob`` (scikit-image's
    watershed), so region borders run along the middle of the boundaries. ``stride`` > 1 keeps
    the repulsive edges of every ``stride``-th pixel along each axis only (fewer, so fewer false
    splits; a regular grid, so the result is deterministic).

    Examples
    --------
    >>> offs = check_offsets([[-1, 0], [1, 0], [0, -1], [0, 1], [-4, 0], [4, 0], [0, -4], [0, 4]], 2)
    >>> lab = np.ones((8, 9), np.int64); lab[:, 4] = 0; lab[:, 5:] = 2; lab[3, 4] = 1  # a gap in the boundary
    >>> aff, _ = affinity_targets(lab, offs)
    >>> aff[3, 3, 4] = aff[2, 3, 5] = 0.6  # that the nearest-neighbour affinities alone would close
    >>> len(np.unique(mutex_regions((lab > 0).astype(np.float32), aff, offs)))  # the long-range ones keep them apart
    2
    """
    import bioimage_cpp as bic
    from skimage.segmentation import watershed

    p = np.asarray(cell_prob, dtype=np.float32)
    a = np.asarray(affinities, dtype=np.float32)
    if p.ndim != 2 or a.shape != (len(offsets), *p.shape):
        raise InputError(f"mutex_regions: expected a 2D map and ({len(offsets)}, *map) affinities, got {p.shape} and {a.shape}")
    order, n_near = attractive_first(offsets)
    weights = a[order].copy()
    weights[n_near:] = 1.0 - weights[n_near:]
    seeds = bic.segmentation.mutex_watershed(weights, [list(offsets[i]) for i in order], n_near, mask=p > threshold,
                                             strides=[stride] * p.ndim if stride > 1 else None)
    seeds = seeds.astype(np.int64)
    return watershed(1.0 - p, markers=seeds) if seeds.any() else np.ones(p.shape, np.int64)


def mutex_boundaries(cell_prob: np.ndarray, affinities: np.ndarray, offsets: Offsets, *, threshold: float = 0.5,
                     stride: int = 1) -> np.ndarray:
    """``cell_prob`` (2D) with the one-pixel lines between the :func:`mutex_regions` set to 0,
    unchanged elsewhere: every threshold of the map then sees closed boundaries.

    Examples
    --------
    >>> offs = check_offsets([[-1, 0], [1, 0], [0, -1], [0, 1], [-2, 0], [2, 0], [0, -2], [0, 2]], 2)
    >>> lab = np.ones((4, 6), np.int64); lab[:, 3:] = 2
    >>> aff, _ = affinity_targets(lab, offs)
    >>> (mutex_boundaries(np.ones((4, 6), np.float32), aff, offs) == 0).sum(axis=0).tolist()
    [0, 0, 4, 0, 0, 0]
    """
    from .membranes import separating_lines

    out = np.array(cell_prob, dtype=np.float32)
    out[separating_lines(mutex_regions(out, affinities, offsets, threshold=threshold, stride=stride))] = 0.0
    return out
