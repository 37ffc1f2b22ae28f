"""Image axes: from an array plus its file's axes to channels-first samples.

Axes strings use ``Z`` (pages, planes, time points), ``C`` (channels, RGB samples), ``Y`` and
``X`` (:func:`unetseg.io.read_image_axes` reads them from the file's metadata). Training,
prediction and evaluation all turn images into ``(channels, *spatial)`` samples here:

- :func:`to_channels_first`: an in-memory array with known axes -> samples (2D: one per page);
- :func:`label_samples`: the same for single-channel label or probability images;
- :func:`axes_for_model`: the axes of an image stored without them (``.npy``, a lazily read
  TIFF), decided from the model's channel count: the only place that reads axes from a shape;
- :func:`model_views`: lazy channels-first views of a stored array for a model, one per page
  of a stack for a 2D model, with a grey image stored as RGB reduced to one channel.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import InputError

LETTERS = "ZCYX"


def check_axes(axes: str, ndim: int, where: Any = "<array>") -> str:
    """``axes`` when it names each of Z, C, Y, X at most once, includes Y and X and fits ``ndim``.

    Examples
    --------
    >>> check_axes("ZYX", 3)
    'ZYX'
    """
    if set(axes) - set(LETTERS) or "Y" not in axes or "X" not in axes or len(set(axes)) != len(axes) or len(axes) != ndim:
        raise InputError(f"{where}: cannot interpret axes {axes!r} of an array with {ndim} dimensions")
    return axes


def stack_axes(array: np.ndarray, axes: str, *, path: Any = "<array>") -> np.ndarray:
    """Reorder an array with known ``axes`` to ``(N, Y, X)`` or ``(N, Y, X, C)``.

    Examples
    --------
    >>> stack_axes(np.zeros((3, 4, 5)), "CYX").shape
    (1, 4, 5, 3)
    """
    check_axes(axes, array.ndim, path)
    arr = np.transpose(array, [axes.index(a) for a in "ZYXC" if a in axes])
    return arr if "Z" in axes else arr[None]


def to_channels_first(array: np.ndarray, axes: str, *, spatial_dims: int, where: Any = "<array>") -> list[np.ndarray]:
    """Samples ``(C, *spatial)`` of an array with known ``axes``: one per page for 2D, one volume for 3D.

    Examples
    --------
    >>> [s.shape for s in to_channels_first(np.zeros((2, 4, 5, 3)), "ZYXC", spatial_dims=2)]
    [(3, 4, 5), (3, 4, 5)]
    >>> [s.shape for s in to_channels_first(np.zeros((2, 4, 5)), "ZYX", spatial_dims=3)]
    [(1, 2, 4, 5)]
    """
    stack = stack_axes(np.asarray(array), axes, path=where)  # (N, Y, X[, C])
    if stack.ndim == 3:
        stack = stack[..., None]
    chw = np.moveaxis(stack, -1, 1)  # (N, C, Y, X)
    if spatial_dims == 2:
        return [chw[i] for i in range(chw.shape[0])]
    return [np.moveaxis(chw, 1, 0)]  # (C, Z, Y, X)


def grey(sample: np.ndarray, where: Any = "<array>") -> np.ndarray:
    """A ``(C, *spatial)`` sample as one channel: itself when ``C == 1``, the shared channel of a
    grey image stored as RGB(A); real colour is refused.

    Examples
    --------
    >>> grey(np.stack([np.eye(2)] * 3)).shape
    (1, 2, 2)
    """
    if sample.shape[0] == 1:
        return sample
    if sample.shape[0] in (3, 4) and all(np.array_equal(sample[0], sample[c]) for c in (1, 2)):
        return sample[:1]
    raise InputError(f"{where}: {sample.shape[0]}-channel (colour) image; expected a single-channel image")


def label_samples(array: np.ndarray, axes: str, *, spatial_dims: int, where: Any = "<array>") -> list[np.ndarray]:
    """Single-channel samples ``(*spatial)`` of a label or probability image with known ``axes``.

    A grey image stored as RGB(A) counts as single-channel (:func:`grey`).

    Examples
    --------
    >>> [s.shape for s in label_samples(np.zeros((4, 5)), "YX", spatial_dims=2)]
    [(4, 5)]
    """
    return [grey(s, where)[0] for s in to_channels_first(array, axes, spatial_dims=spatial_dims, where=where)]


def axes_for_model(shape: tuple[int, ...], *, spatial_dims: int, channels: int, where: Any = "image") -> str:
    """The axes of an image stored without axis metadata, as the model it is given to reads it.

    Single-channel 2D models take ``(Y, X)`` images, ``(Z, Y, X)`` stacks (slice by slice) and
    ``(Y, X, 3|4)`` RGB(A); multi-channel models take channels first or last.

    Examples
    --------
    >>> axes_for_model((5, 64, 64), spatial_dims=2, channels=1), axes_for_model((64, 64, 3), spatial_dims=2, channels=1)
    ('ZYX', 'YXC')
    >>> axes_for_model((64, 64, 2), spatial_dims=2, channels=2)
    'YXC'
    """
    sp = "ZYX" if spatial_dims == 3 else "YX"
    if len(shape) == spatial_dims and channels == 1:
        return sp
    if len(shape) == spatial_dims + 1:
        if shape[0] == channels and (channels > 1 or spatial_dims == 3 or shape[0] == 1):
            return "C" + sp
        if channels > 1 and shape[-1] == channels:
            return sp + "C"
        if channels == 1 and spatial_dims == 2:
            return "YXC" if shape[-1] <= 4 < shape[0] else "ZYX"
    expected = "(Y, X) or a (Z, Y, X) stack" if spatial_dims == 2 and channels == 1 else f"{spatial_dims} spatial axes with {channels} channels first or last"
    raise InputError(f"{where}: image of shape {tuple(shape)} does not fit a {spatial_dims}D model with {channels} input channel(s) (expected {expected})")


class ChannelsFirstView:
    """A lazy ``(channels, *spatial)`` view of a stored array with ``axes``.

    ``z`` fixes the page of a stack (a 2D model on a 3D file); ``channel`` keeps one channel.
    Indexing reads only the window asked for.
    """

    def __init__(self, src: Any, axes: str, *, z: int | None = None, channel: int | None = None):
        self.src, self.axes, self.z, self.channel = src, axes, z, channel
        sizes = dict(zip(axes, (int(n) for n in src.shape)))
        self.spatial = [a for a in "ZYX" if a in axes and not (a == "Z" and z is not None)]
        c = 1 if channel is not None else sizes.get("C", 1)
        self.shape = (c, *(sizes[a] for a in self.spatial))
        self.dtype = np.dtype(src.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (self.ndim - len(tuple(index)))
        by_axis = dict(zip(self.spatial, index[1:]))
        c_index = slice(self.channel, self.channel + 1) if self.channel is not None else index[0]
        src_index = tuple(c_index if a == "C" else (self.z if a == "Z" and self.z is not None else by_axis[a]) for a in self.axes)
        block = np.asarray(self.src[src_index])
        kept = [a for a in self.axes if not (a == "Z" and self.z is not None)]
        if "C" not in kept:
            return np.transpose(block, [kept.index(a) for a in self.spatial])[None]
        return np.transpose(block, [kept.index(a) for a in ["C", *self.spatial]])


def _channels_equal(source: Any, axes: str, rows: int = 1024) -> bool:
    """Whether the first three channels of ``source`` are equal (read in bands of ``rows``)."""
    y = axes.index("Y")
    n = int(source.shape[y])
    for start in range(0, n, rows):
        index = tuple(slice(start, min(n, start + rows)) if a == "Y" else slice(None) for a in axes)
        band = np.moveaxis(np.asarray(source[index]), axes.index("C"), 0)
        if not (np.array_equal(band[0], band[1]) and np.array_equal(band[0], band[2])):
            return False
    return True


def _pick_channel(source: Any, axes: str, channels: int, channel: int | None, where: Any) -> int | None:
    """The channel a single-channel model reads from a multi-channel image, or None for all."""
    present = int(source.shape[axes.index("C")]) if "C" in axes else 1
    if channel is not None:
        if channels != 1:
            raise InputError(f"{where}: a channel can be picked only for a single-channel model (this one reads {channels})")
        if not 0 <= channel < present:
            raise InputError(f"{where}: channel {channel} requested, the image has {present} channel(s) (0 to {present - 1})")
        return channel
    if channels != 1 or present == 1:
        if present != channels:
            raise InputError(f"{where}: image has {present} channel(s), the model expects {channels}")
        return None
    if present in (3, 4) and _channels_equal(source, axes):
        return 0  # a grey image saved as RGB(A)
    raise InputError(f"{where}: the model reads one channel and this image has {present} that differ; "
                     f"pick one with --channel K (predict_file(..., channel=K)), 0 to {present - 1}")


def model_views(source: Any, axes: str, *, spatial_dims: int, channels: int, channel: int | None = None,
                where: Any = "image") -> list[ChannelsFirstView]:
    """Lazy ``(channels, *spatial)`` views of ``source`` for a model: one, or one per page of a
    stack for a 2D model. ``channel`` picks one channel of a multi-channel image for a
    single-channel model; without it a grey image stored as RGB(A) is read as one channel.

    Examples
    --------
    >>> [v.shape for v in model_views(np.zeros((2, 8, 9)), "ZYX", spatial_dims=2, channels=1)]
    [(1, 8, 9), (1, 8, 9)]
    >>> model_views(np.ones((8, 9, 3)), "YXC", spatial_dims=2, channels=1)[0][:, :2, :2].shape
    (1, 2, 2)
    """
    check_axes(axes, len(source.shape), where)
    if spatial_dims == 3 and "Z" not in axes:
        raise InputError(f"{where}: a 3D model needs a Z axis; the image's axes are {axes}")
    pick = _pick_channel(source, axes, channels, channel, where)
    if spatial_dims == 2 and "Z" in axes:
        return [ChannelsFirstView(source, axes, z=z, channel=pick) for z in range(int(source.shape[axes.index("Z")]))]
    if math.prod(int(n) for n in source.shape) == 0:
        raise InputError(f"{where}: image of shape {tuple(source.shape)} is empty")
    return [ChannelsFirstView(source, axes, channel=pick)]
