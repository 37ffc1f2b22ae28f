"""Tile plans for overlap-tile inference (paper Fig. 2): pure functions on shapes and indices.

Valid-padding models (the paper's U-Net)
    The *output* plane is cut into tiles; each tile is fed its input window, the tile enlarged by
    the model's halo on every side. Context beyond the image is extrapolated by mirroring
    (:func:`mirror_indices`). Max-pooling makes a valid U-Net equivariant only to shifts that are
    multiples of ``2**depth`` (its ``size_divisor``), so every tile starts on that grid: then each
    output pixel sees exactly the input it would see if the whole mirrored image went through the
    network at once, and the tiled result equals the whole-image result. Valid output sizes are
    ``4 (mod 16)`` for depth 4, so consecutive tiles overlap by those 4 output pixels (about 1% of
    a 388-pixel tile); the last tile of an axis shrinks to the smallest valid size that reaches the
    image edge instead of adding a whole extra tile, so at most ``size_divisor - 1`` pixels beyond
    the image are computed per axis.

    Exactness needs translation-equivariant layers: it holds for the paper's 2x2 up-convolutions
    (``upsample="transpose"``). With ``upsample="bilinear"`` the interpolation clamps at every
    feature-map edge, so outputs near tile borders differ from a whole-image pass (by up to
    0.14 in probability for a random network with 116-pixel tiles); use large tiles there.

Same-padding models (padded U-Net, FusionNet)
    Output equals input size, but pixels near a window edge see zero padding instead of image
    context, so windows overlap by ``2 * margin`` and each keeps its central part (the margin of
    a window is discarded except at the image border, where nothing better exists). This costs
    ``1 - ((W - 2m) / W) ** d`` of the compute in overlaps and is still not identical to a
    whole-image pass (the receptive field of a U-Net is much larger than any practical margin);
    valid tiling is exact and wastes only the halo. See :func:`plan_axis_same`.

Mirroring mode
    ``numpy.pad(..., mode="symmetric")`` (the edge pixel is repeated: ``c b a | a b c | c b a``),
    which is also what ``scipy.ndimage`` calls ``"reflect"`` and what ``dask``'s
    ``boundary="reflect"`` does. It is periodic with period ``2 * size``, so images smaller than
    the halo are mirrored repeatedly, exactly as ``numpy.pad`` does it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import sizes

MIRROR_MODE = "symmetric"


def mirror_indices(start: int, stop: int, size: int) -> np.ndarray:
    """Indices into an axis of length ``size`` for positions ``start..stop-1``, mirrored outside.

    Equals the indices ``numpy.pad(..., mode="symmetric")`` reads, for any pad width.

    Examples
    --------
    >>> mirror_indices(-3, 6, 3).tolist()
    [2, 1, 0, 0, 1, 2, 2, 1, 0]
    >>> mirror_indices(-2, 3, 1).tolist()
    [0, 0, 0, 0, 0]
    """
    if size < 1:
        raise ValueError(f"size={size}: expected a positive axis length")
    idx = np.arange(start, stop, dtype=np.int64) % (2 * size)
    return np.where(idx >= size, 2 * size - 1 - idx, idx)


def mirror_pad(array: np.ndarray, pad: Sequence[tuple[int, int]]) -> np.ndarray:
    """Mirror-pad ``array`` (``numpy.pad`` with ``mode="symmetric"``), one ``(before, after)`` per axis.

    Examples
    --------
    >>> mirror_pad(np.array([1, 2]), [(3, 1)]).tolist()
    [2, 2, 1, 1, 2, 2]
    """
    return np.pad(array, [tuple(p) for p in pad], mode=MIRROR_MODE)


@dataclass(frozen=True)
class AxisTile:
    """One tile along one axis, in output (= image) coordinates.

    ``start``/``size``: the full network output of the tile, which may run past the image end.
    ``keep_start``/``keep_stop``: the part of the image this tile writes (inside the image).
    """

    start: int
    size: int
    keep_start: int
    keep_stop: int

    @property
    def stop(self) -> int:
        return self.start + self.size


def _smallest_valid_output(size: int, depth: int) -> int:
    h = sizes.halo(depth, sizes.VALID)
    return sizes.next_valid_size(size + 2 * h, depth, sizes.VALID) - 2 * h


def _largest_valid_output(size: int, depth: int) -> int | None:
    smallest = _smallest_valid_output(1, depth)
    if size < smallest:
        return None
    step = 2**depth
    return smallest + (size - smallest) // step * step


def smallest_valid_output(size: int, depth: int) -> int:
    """Smallest output size of a valid model that covers ``size`` pixels.

    Examples
    --------
    >>> smallest_valid_output(1, 4), smallest_valid_output(17, 4), smallest_valid_output(388, 4)
    (4, 20, 388)
    """
    return _smallest_valid_output(size, depth)


def valid_output_tile(tile: int, depth: int) -> int:
    """Largest valid output size <= ``tile`` whose stride (``tile`` rounded down to a multiple of
    ``2**depth``) is positive: at least 20 for depth 4.

    Examples
    --------
    >>> valid_output_tile(400, 4), valid_output_tile(4, 4)
    (388, 20)
    """
    smallest = _smallest_valid_output(1, depth)
    first_stride = _smallest_valid_output(smallest + 1, depth)
    return max(first_stride, _largest_valid_output(max(int(tile), first_stride), depth) or first_stride)


def plan_axis_valid(size: int, tile: int, depth: int) -> list[AxisTile]:
    """Output tiles along one axis for a valid-padding model of ``depth`` poolings.

    ``tile`` is the largest output tile wanted (rounded down to a valid output size that allows a
    stride of at least ``2**depth``). Tiles start on the ``2**depth`` grid; the last one shrinks to
    the smallest valid size reaching the image end; an image smaller than a tile gets one tile of
    the smallest valid size covering it.

    Examples
    --------
    >>> [(t.start, t.size, t.keep_start, t.keep_stop) for t in plan_axis_valid(500, 388, 4)]
    [(0, 388, 0, 384), (384, 116, 384, 500)]
    >>> [(t.start, t.size) for t in plan_axis_valid(1, 388, 4)]
    [(0, 4)]
    """
    if size < 1:
        raise ValueError(f"size={size}: expected a positive axis length")
    step = 2**depth
    tile = valid_output_tile(tile, depth)
    cover = _smallest_valid_output(size, depth)
    if cover <= tile:
        return [AxisTile(0, cover, 0, size)]
    stride = tile - tile % step
    tiles = []
    start = 0
    while start + tile < size:
        tiles.append(AxisTile(start, tile, start, start + stride))
        start += stride
    last = _smallest_valid_output(size - start, depth)
    tiles.append(AxisTile(start, last, start, size))
    return tiles


def plan_axis_same(size: int, window: int, margin: int, divisor: int) -> list[AxisTile]:
    """Overlapping windows along one axis for a same-padding model.

    Windows have ``window`` pixels (a multiple of ``divisor``; an image smaller than that gets one
    window of the smallest multiple covering it, mirrored beyond the image). Neighbours overlap by
    ``2 * margin`` and the overlap is split in its middle, so each window discards about ``margin``
    pixels on each inner side. The last window is shifted inward to end at the image edge.

    Examples
    --------
    >>> [(t.start, t.size, t.keep_start, t.keep_stop) for t in plan_axis_same(300, 128, 16, 16)]
    [(0, 128, 0, 112), (96, 128, 112, 198), (172, 128, 198, 300)]
    """
    if size < 1:
        raise ValueError(f"size={size}: expected a positive axis length")
    window = max(divisor, window - window % divisor)
    cover = -(-size // divisor) * divisor
    if cover <= window:
        return [AxisTile(0, cover, 0, size)]
    margin = max(0, min(margin, (window - divisor) // 2))
    stride = window - 2 * margin
    starts = list(range(0, size - window, stride)) + [size - window]
    tiles = []
    for i, s in enumerate(starts):
        lo = 0 if i == 0 else (tiles[-1].keep_stop)
        hi = size if i == len(starts) - 1 else (s + window + starts[i + 1]) // 2
        tiles.append(AxisTile(s, window, lo, hi))
    return tiles


@dataclass(frozen=True)
class Tile:
    """One N-D tile: the product of one :class:`AxisTile` per spatial axis.

    ``in_start``/``in_stop`` give the input window in image coordinates (may lie outside the
    image, where it is mirrored); ``keep`` the image region written and ``keep_in_tile`` the same
    region inside the tile's output.
    """

    axes: tuple[AxisTile, ...]
    halo: int

    @property
    def out_shape(self) -> tuple[int, ...]:
        return tuple(a.size for a in self.axes)

    @property
    def in_shape(self) -> tuple[int, ...]:
        return tuple(a.size + 2 * self.halo for a in self.axes)

    @property
    def in_start(self) -> tuple[int, ...]:
        return tuple(a.start - self.halo for a in self.axes)

    @property
    def in_stop(self) -> tuple[int, ...]:
        return tuple(a.stop + self.halo for a in self.axes)

    @property
    def keep(self) -> tuple[slice, ...]:
        return tuple(slice(a.keep_start, a.keep_stop) for a in self.axes)

    @property
    def keep_in_tile(self) -> tuple[slice, ...]:
        return tuple(slice(a.keep_start - a.start, a.keep_stop - a.start) for a in self.axes)


@dataclass(frozen=True)
class TilePlan:
    """All tiles of an image, grouped along the first spatial axis into bands.

    ``bands[i]`` lists the tiles sharing the ``i``-th tile of axis 0, in order; streaming
    inference reads one band of input and writes one band of output at a time.
    """

    shape: tuple[int, ...]
    halo: int
    axes: tuple[tuple[AxisTile, ...], ...]

    @property
    def bands(self) -> list[list[Tile]]:
        rest = list(itertools.product(*self.axes[1:]))
        return [[Tile((a0, *r), self.halo) for r in rest] for a0 in self.axes[0]]

    def __iter__(self):
        for band in self.bands:
            yield from band

    def __len__(self) -> int:
        return math.prod(len(a) for a in self.axes)

    @property
    def computed_pixels(self) -> int:
        """Output pixels the network computes (overlaps and overshoot included)."""
        return math.prod(sum(t.size for t in a) for a in self.axes)

    @property
    def input_pixels(self) -> int:
        """Input pixels the network reads (halos included)."""
        return math.prod(sum(t.size + 2 * self.halo for t in a) for a in self.axes)

    @property
    def efficiency(self) -> float:
        """Image pixels divided by computed output pixels (1.0 = no overlap, no overshoot)."""
        return math.prod(self.shape) / self.computed_pixels


def plan_tiles(
    shape: Sequence[int],
    tile_shape: Sequence[int] | int,
    *,
    depth: int,
    padding: str,
    margin: int | None = None,
) -> TilePlan:
    """Plan the tiles of an image of spatial ``shape``.

    Parameters
    ----------
    shape : sequence of int
        Spatial image shape (2D or 3D).
    tile_shape : int or sequence of int
        Largest *output* tile per axis (valid models) or window size (same models).
    depth, padding : int, str
        The model's number of poolings and padding mode.
    margin : int or None
        Same-padding only: pixels discarded at inner window edges (default: a quarter of the
        window, at most the halo a valid model of this depth would have).

    Examples
    --------
    >>> plan = plan_tiles((17, 300), 196, depth=4, padding="valid")
    >>> [t.out_shape for t in plan]
    [(20, 196), (20, 116)]
    >>> plan.halo
    92
    """
    shape = tuple(int(s) for s in shape)
    if isinstance(tile_shape, (int, np.integer)):
        tile_shape = (int(tile_shape),) * len(shape)
    tile_shape = tuple(int(t) for t in tile_shape)
    if len(tile_shape) != len(shape):
        raise ValueError(f"tile_shape {tile_shape} has {len(tile_shape)} axes, image shape {shape} has {len(shape)}")
    if padding == sizes.VALID:
        axes = tuple(plan_axis_valid(s, t, depth) for s, t in zip(shape, tile_shape))
        return TilePlan(shape, sizes.halo(depth, sizes.VALID), axes)
    if padding != sizes.SAME:
        raise ValueError(f"padding {padding!r}: expected 'valid' or 'same'")
    divisor = 2**depth
    axes = []
    for s, w in zip(shape, tile_shape):
        m = margin if margin is not None else min(sizes.halo(depth, sizes.VALID), w // 4)
        axes.append(plan_axis_same(s, w, m, divisor))
    return TilePlan(shape, 0, tuple(axes))
