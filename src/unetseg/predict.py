"""Overlap-tile inference (paper Fig. 2): any image size, in memory, out of core, or on Dask.

Layers, from pure to practical:

- :func:`predict_image` ``(model, image) -> probabilities``: a pure function of the array. It
  applies **no intensity normalisation**; pass an image already normalised the way the model was
  trained (:func:`unetseg.normalize.normalize` with ``meta["extra"]["normalization"]``).
- :func:`predict_into` streams from any *source* (NumPy array, memmap, :mod:`unetseg.store`
  source) into any *target* supporting ``target[index] = band`` (NumPy array, store writer,
  zarr), one band of tiles at a time, so memory depends on the tile size and image width, not
  on the image size.
- :func:`predict_file` reads the model's normalisation from its file and segments one image file
  to an output file (probabilities, mask or labels), out of core where the formats allow.
- :func:`predict_dask` segments a ``dask.array`` with ``map_overlap``.

Tiling is planned by :mod:`unetseg.tiling`: valid-padding models get non-overlapping output tiles
on the ``2**depth`` grid fed with input windows enlarged by the halo and mirrored beyond the image
(``numpy.pad`` mode ``"symmetric"``), which reproduces the whole-image output exactly; same-padding
models get overlapping windows with their margins discarded.

The reference the tiled output equals (for a valid model, up to float rounding)::

    h = model.halo
    big = tiling.mirror_pad(image, [(0, 0)] + [(h, h + e) for e in extra])  # extra: up to a valid size
    probs = softmax(model(big))[..., :H, :W]
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import sizes, tiling
from .errors import ConfigError, InputError
from .runtime import autocast, configure_allocator, memory_format, resolve_device, resolve_precision

log = logging.getLogger(__name__)

DEFAULT_CPU_BUDGET = 1 << 30  # bytes of activations per batch of tiles on the CPU
OUTPUT_KINDS = ("prob", "mask", "labels")


# ----------------------------------------------------------------------------------------------
# Memory estimate and automatic tile size
# ----------------------------------------------------------------------------------------------
def estimate_tile_memory(model: nn.Module, in_shape: Sequence[int], *, batch_size: int = 1, bytes_per_value: int = 4) -> int:
    """Rough peak activation memory (bytes) of one forward pass on tiles of ``in_shape``.

    Counts the skip feature maps kept for the expanding path plus the largest transient
    (concatenation, convolution input and output at full resolution), times 1.5 for library
    workspace. FusionNet (residual blocks) counts double.

    Examples
    --------
    >>> from unetseg.models import UNet
    >>> estimate_tile_memory(UNet(base_channels=64), (572, 572)) // 2**20
    705
    """
    cfg = getattr(model, "config", {})
    width = int(cfg.get("base_channels", 64))
    depth = int(getattr(model, "depth", 4))
    area = float(math.prod(int(s) for s in in_shape))
    dims = len(in_shape)
    kept = sum(width * 2**i * area / 2 ** (dims * i) for i in range(depth))
    transient = 4 * width * area + int(cfg.get("in_channels", 1)) * area
    factor = 1.5 * (2.0 if getattr(model, "arch", "") == "FusionNet" else 1.0)
    return int(factor * (kept + transient) * batch_size * bytes_per_value)


def default_memory_budget(device: torch.device) -> int:
    """Activation memory to plan tiles for: half the free GPU memory, or on the CPU 1 GiB (at
    most a quarter of the available RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        import psutil

        available = psutil.virtual_memory().available
    except (ImportError, OSError):  # pragma: no cover
        available = 4 * DEFAULT_CPU_BUDGET
    return int(min(DEFAULT_CPU_BUDGET, available // 4))


def auto_tile_shape(model: nn.Module, *, memory_budget: int | None = None, batch_size: int = 1, device: torch.device | None = None, bytes_per_value: int = 4) -> tuple[int, ...]:
    """Largest cubic/square tile (output size for valid models, window for same models) whose
    :func:`estimate_tile_memory` fits ``memory_budget``.

    Examples
    --------
    >>> from unetseg.models import UNet
    >>> auto_tile_shape(UNet(base_channels=64), memory_budget=2**30)
    (500, 500)
    """
    device = device or torch.device("cpu")
    budget = memory_budget if memory_budget is not None else default_memory_budget(device)
    dims = int(getattr(model, "spatial_dims", 2))
    depth, padding = int(model.depth), model.padding
    candidates = sizes.valid_sizes(8192 if dims == 2 else 1024, depth, padding)
    best = candidates[0]
    for s in candidates:
        if estimate_tile_memory(model, (s,) * dims, batch_size=batch_size, bytes_per_value=bytes_per_value) <= budget:
            best = s
        else:
            break
    h = model.halo
    return (best - 2 * h,) * dims


# ----------------------------------------------------------------------------------------------
# Forward pass with precision, memory format and test-time augmentation
# ----------------------------------------------------------------------------------------------
def dihedral_transforms(spatial_dims: int) -> list[tuple[int, bool]]:
    """The 8 rotations/flips of the last two axes as ``(quarter_turns, flip)`` pairs.

    Examples
    --------
    >>> len(dihedral_transforms(2))
    8
    """
    return [(k, f) for f in (False, True) for k in range(4)]


def _apply(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if flip:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, k, dims=(-2, -1)) if k else x


def _invert(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    if k:
        x = torch.rot90(x, -k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x


def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the class axis (sigmoid for a single output channel), in float32."""
    logits = logits.float()
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


class _Runner:
    """Runs a model on batches of tiles: device transfer, autocast, channels_last, TTA."""

    def __init__(self, model: nn.Module, device: torch.device, precision: str, tta: bool, channels_last: bool):
        self.model = model
        self.device = device
        self.precision = precision
        self.tta = tta
        dims = int(getattr(model, "spatial_dims", 2))
        self.fmt = memory_format(device, dims) if channels_last else torch.contiguous_format
        if model.training:
            model.eval()
        param = next(model.parameters(), None)
        if param is not None and param.device != device:
            model.to(device)
        if channels_last and not _weights_in_format(model, self.fmt):
            model.to(memory_format=self.fmt)

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        transforms = dihedral_transforms(x.ndim - 2) if self.tta else [(0, False)]
        total = None
        with torch.inference_mode(), autocast(self.device, self.precision):
            for k, flip in transforms:
                xt = _apply(x, k, flip).contiguous(memory_format=self.fmt)
                p = _invert(probabilities(self.model(xt)), k, flip)
                total = p if total is None else total + p
        total = total / len(transforms)
        return total.to("cpu", torch.float32).contiguous().numpy()


def _weights_in_format(model: nn.Module, fmt: torch.memory_format) -> bool:
    """Whether every convolution weight already has ``fmt`` (so threads sharing the model never
    convert it while another runs it)."""
    for p in model.parameters():
        if p.dim() in (4, 5) and not p.is_contiguous(memory_format=fmt):
            return False
    return True


def _resolve_channels_last(channels_last: bool | str, device: torch.device, dims: int) -> bool:
    if channels_last == "auto":
        return device.type == "cuda" or dims == 2
    return bool(channels_last)


# ----------------------------------------------------------------------------------------------
# Output shift: annotations displaced from the image by a fraction of a pixel
# ----------------------------------------------------------------------------------------------
def check_output_shift(shift: Sequence[float] | None, dims: int) -> tuple[float, ...] | None:
    """``shift`` as a tuple of ``dims`` floats within +-2 pixels, or None when absent or all zero."""
    if shift is None:
        return None
    try:
        values = tuple(float(v) for v in shift)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"output_shift {shift!r}: expected {dims} numbers (pixels per spatial axis)") from exc
    if len(values) != dims or not all(math.isfinite(v) and abs(v) <= 2.0 for v in values):
        raise ConfigError(f"output_shift {list(values)}: expected {dims} finite numbers within +-2 pixels")
    return values if any(values) else None


def shift_probabilities(probs: np.ndarray, shift: Sequence[float]) -> np.ndarray:
    """Move a ``(classes, *spatial)`` probability map by ``shift`` pixels, linearly interpolated.

    ``out[c, x] = probs[c, x - shift]`` (:func:`scipy.ndimage.shift` with ``order=1``); values
    beyond the image repeat the edge (``mode="nearest"``), and every output stays a probability
    distribution over the classes. This is how a model calibrated on annotations that are
    displaced from the image content (:func:`unetseg.train.calibrate.estimate_output_shift`)
    places its output where those annotations would be.

    Examples
    --------
    >>> p = np.array([[[0.0, 0.0, 1.0, 1.0]]])
    >>> shift_probabilities(p, (0, -0.5)).tolist()  # half a pixel to the left
    [[[0.0, 0.5, 1.0, 1.0]]]
    """
    from scipy import ndimage as ndi

    probs = np.asarray(probs, dtype=np.float32)
    if len(shift) != probs.ndim - 1:
        raise ValueError(f"shift {tuple(shift)} needs one value per spatial axis of {probs.shape[1:]}")
    return ndi.shift(probs, (0.0, *(float(s) for s in shift)), order=1, mode="nearest", prefilter=False)


class _RowShifter:
    """Applies :func:`shift_probabilities` to bands that arrive in order along axis 0.

    Output row ``r`` needs input rows ``floor(r - s0)`` and the one after it, so a band can be
    emitted once the next band's first rows are known; bands are emitted late, never twice, and
    the result equals shifting the whole map at once (rows beyond the image repeat the edge).
    """

    def __init__(self, shift: Sequence[float], rows: int):
        self.shift = tuple(float(s) for s in shift)
        a = math.floor(-self.shift[0])
        self.before, self.after = max(0, -a), max(0, a + 1)
        self.rows = rows
        self.buf: np.ndarray | None = None  # input rows [buf_start, buf_start + len)
        self.buf_start = 0
        self.done = 0  # output rows emitted

    def push(self, start: int, band: np.ndarray) -> list[tuple[int, np.ndarray]]:
        if self.buf is None:
            self.buf, self.buf_start = band, start
        else:
            self.buf = np.concatenate([self.buf, band], axis=1)
        known = self.buf_start + self.buf.shape[1]
        stop = self.rows if known >= self.rows else max(self.done, known - self.after)
        if stop <= self.done:
            return []
        idx = np.clip(np.arange(self.done - self.before, stop + self.after), 0, self.rows - 1) - self.buf_start
        moved = shift_probabilities(np.take(self.buf, idx, axis=1), self.shift)
        out = [(self.done, moved[:, self.before : self.before + stop - self.done])]
        self.done = stop
        keep_from = max(0, self.done - self.before - self.buf_start)
        self.buf, self.buf_start = self.buf[:, keep_from:], self.buf_start + keep_from
        return out


# ----------------------------------------------------------------------------------------------
# Streaming core
# ----------------------------------------------------------------------------------------------
def _read_mirrored(source: Any, channels: int, ranges: Sequence[tuple[int, int]], offset: Sequence[int] = ()) -> np.ndarray:
    """Read ``source[:, ranges...]`` (shifted by ``offset``), mirroring positions outside ``source``."""
    extent = tuple(int(n) for n in source.shape[1:])
    offset = tuple(offset) or (0,) * len(extent)
    idx = [tiling.mirror_indices(a + o, b + o, n) for (a, b), n, o in zip(ranges, extent, offset)]
    lo = [int(i.min()) for i in idx]
    hi = [int(i.max()) + 1 for i in idx]
    slab = np.asarray(source[(slice(0, channels), *(slice(a, b) for a, b in zip(lo, hi)))])
    for axis, (i, a, b) in enumerate(zip(idx, lo, hi)):
        if len(i) != b - a or (i[0] != a) or not np.all(np.diff(i) == 1):
            slab = np.take(slab, i - a, axis=axis + 1)
    return slab


def predict_into(
    model: nn.Module,
    source: Any,
    target: Any,
    *,
    tile_shape: Sequence[int] | int | None = None,
    tta: bool = False,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    precision: str = "fp32",
    channels_last: bool | str = "auto",
    margin: int | None = None,
    memory_budget: int | None = None,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool | Any = False,
    source_shape: Sequence[int] | None = None,
    source_offset: Sequence[int] = (),
    output_shift: Sequence[float] | None = None,
) -> tiling.TilePlan:
    """Segment ``source`` (channels, *spatial) into ``target`` band by band; return the tile plan.

    Parameters
    ----------
    source : array-like
        ``(channels, *spatial)``, sliceable (NumPy, memmap, :mod:`unetseg.store` source, zarr).
    target : array-like
        Receives ``target[(slice(None), *band_region)] = probs`` (or ``target[band_region] = ...``
        when ``transform`` drops the class axis).
    preprocess : callable, optional
        Applied to every input window ``(channels, *window)`` read (e.g. normalisation); the
        default converts to float32.
    transform : callable, optional
        Applied to each band of probabilities ``(num_classes, *band)`` before writing (e.g. keep
        class 1, threshold).
    source_shape, source_offset : sequence of int, optional
        Spatial size of the image (default: from ``source``) and where image position 0 lies in
        ``source`` (Dask blocks carry their context this way).
    output_shift : sequence of float, optional
        Move the probabilities by this many pixels per axis (:func:`shift_probabilities`) before
        ``transform``; bands are then written one band late.

    Other parameters are those of :func:`predict_image`.
    """
    dev = resolve_device(device)
    precision = resolve_precision(precision, dev)
    if dev.type == "cpu":
        configure_allocator()
    dims = int(getattr(model, "spatial_dims", 2))
    channels = int(getattr(model, "in_channels", source.shape[0]))
    shape = tuple(int(s) for s in (source_shape if source_shape is not None else source.shape[1:]))
    if len(shape) != dims:
        raise InputError(f"image has {len(shape)} spatial axes {shape}, the model expects {dims}")
    shift = check_output_shift(output_shift, dims)
    bs = int(batch_size or 1)
    bytes_per_value = 2 if precision in ("bf16", "fp16") else 4
    if tile_shape is None:
        tile_shape = auto_tile_shape(model, memory_budget=memory_budget, batch_size=bs, device=dev, bytes_per_value=bytes_per_value)
    plan = tiling.plan_tiles(shape, tile_shape, depth=int(model.depth), padding=model.padding, margin=margin)
    was_training = model.training
    use_cl = _resolve_channels_last(channels_last, dev, dims)
    converted = use_cl and not _weights_in_format(model, memory_format(dev, dims))
    runner = _Runner(model, dev, precision, tta, use_cl)
    try:
        _run_plan(model, source, target, plan, runner, dims, channels, shape, preprocess, transform, progress, batch_size, source_offset, shift)
    finally:
        if was_training:  # called from a training loop: hand the model back as it came
            model.train()
            if converted:
                model.to(memory_format=torch.contiguous_format)
    return plan


def _run_plan(model, source, target, plan, runner, dims, channels, shape, preprocess, transform, progress, batch_size, source_offset, shift=None) -> None:
    bs = int(batch_size or 1)
    num_classes = int(getattr(model, "num_classes", 1))
    pre = preprocess or (lambda w: w.astype(np.float32, copy=False))
    bar = _progress_bar(progress, len(plan))
    log.debug("tiling %s into %d tiles of up to %s (efficiency %.3f)", shape, len(plan), plan.axes and tuple(a[0].size for a in plan.axes), plan.efficiency)
    h = plan.halo
    shifter = _RowShifter(shift, shape[0]) if shift is not None else None
    for band in plan.bands:
        a0 = band[0].axes[0]
        # Input rows of this band along axis 0 (mirrored) and the whole extent of the other axes.
        rest_ranges = [(min(t.axes[i].start for t in band) - h, max(t.axes[i].stop for t in band) + h) for i in range(1, dims)]
        band_ranges = [(a0.start - h, a0.stop + h), *rest_ranges]
        band_in = pre(_read_mirrored(source, channels, band_ranges, source_offset))
        origin = [r[0] for r in band_ranges]
        band_out = np.empty((num_classes, a0.keep_stop - a0.keep_start, *shape[1:]), dtype=np.float32)
        groups: dict[tuple[int, ...], list[tiling.Tile]] = {}
        for tile in band:
            groups.setdefault(tile.in_shape, []).append(tile)
        for in_shape, tiles in groups.items():
            for i in range(0, len(tiles), bs):
                chunk = tiles[i : i + bs]
                batch = np.stack([band_in[(slice(None), *(slice(s - o, s - o + n) for s, o, n in zip(t.in_start, origin, in_shape)))] for t in chunk])
                probs = runner(batch)
                for t, p in zip(chunk, probs):
                    dst = (slice(None), slice(0, a0.keep_stop - a0.keep_start), *t.keep[1:])
                    band_out[dst] = p[(slice(None), *t.keep_in_tile)]
                if bar is not None:
                    bar.update(len(chunk))
        ready = shifter.push(a0.keep_start, band_out) if shifter is not None else [(a0.keep_start, band_out)]
        for start, rows in ready:
            result = transform(rows) if transform is not None else rows
            region = (slice(start, start + rows.shape[1]), *(slice(0, n) for n in shape[1:]))
            if result.ndim == dims:
                target[region] = result
            else:
                target[(slice(None), *region)] = result
    if bar is not None and progress is True:
        bar.close()


def _progress_bar(progress: bool | Any, total: int):
    if progress is True:
        from tqdm import tqdm

        return tqdm(total=total, unit="tile", leave=False, desc="tiles")
    if progress:  # an existing bar to advance
        progress.total = (progress.total or 0) + total
        progress.refresh()
        return progress
    return None


def _as_channels_first(image: np.ndarray, model: nn.Module) -> np.ndarray:
    dims = int(getattr(model, "spatial_dims", 2))
    channels = int(getattr(model, "in_channels", 1))
    arr = np.asarray(image)
    if arr.ndim == dims:
        arr = arr[None]
    if arr.ndim != dims + 1 or arr.shape[0] != channels:
        raise InputError(
            f"image of shape {np.shape(image)}: expected (*spatial) or (channels, *spatial) with "
            f"{dims} spatial axes and {channels} channel(s)"
        )
    if arr.dtype.kind not in "biuf":
        raise InputError(f"image of dtype {arr.dtype}: expected numbers")
    if 0 in arr.shape:
        raise InputError(f"image of shape {arr.shape} is empty")
    return arr


def predict_image(
    model: nn.Module,
    image: np.ndarray,
    *,
    tile_shape: Sequence[int] | int | None = None,
    tta: bool = False,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    precision: str = "fp32",
    channels_last: bool | str = "auto",
    margin: int | None = None,
    memory_budget: int | None = None,
    progress: bool | Any = False,
    output_shift: Sequence[float] | None = None,
) -> np.ndarray:
    """Class probabilities of ``image`` by overlap-tile inference.

    A pure function of the array: **no normalisation is applied** (see :func:`predict_file`).
    The model is put in eval mode and moved to ``device``.

    Parameters
    ----------
    model : torch.nn.Module
        A unetseg model (``UNet``, ``FusionNet``) or any module with ``halo``, ``depth``,
        ``padding``, ``spatial_dims``, ``in_channels`` and ``num_classes`` that returns logits.
    image : ndarray
        ``(*spatial)`` or ``(channels, *spatial)``, any size (even 1x1).
    tile_shape : int or sequence of int, optional
        Largest output tile per axis (valid models) or window (same models); default: the
        largest that fits the memory budget (:func:`auto_tile_shape`).
    tta : bool
        Average the probabilities over the 8 rotations/flips of the last two axes.
    device : str or torch.device, optional
        ``"cpu"``, ``"cuda"`` or ``None``/``"auto"``.
    batch_size : int, optional
        Tiles of equal shape run together (default 1: large tiles beat large batches).
    precision : {"fp32", "bf16", "fp16", "auto"}
        Autocast precision (:func:`unetseg.runtime.autocast`); outputs are float32.
    channels_last : bool or "auto"
        Use the channels_last memory format (default for 2D).
    margin : int, optional
        Same-padding models: pixels discarded at inner window edges.
    output_shift : sequence of float, optional
        Move the probabilities by this many pixels per spatial axis (:func:`shift_probabilities`),
        e.g. a model file's ``extra["output_shift"]``.

    Returns
    -------
    ndarray
        float32 ``(num_classes, *spatial)`` probabilities (sigmoid for a one-channel model).

    Examples
    --------
    >>> from unetseg.models import UNet
    >>> net = UNet(1, 2, base_channels=2)
    >>> predict_image(net, np.zeros((17, 30), np.float32), tile_shape=20).shape
    (2, 17, 30)
    """
    x = _as_channels_first(image, model)
    out = np.empty((int(model.num_classes), *x.shape[1:]), dtype=np.float32)
    predict_into(
        model, x, out, tile_shape=tile_shape, tta=tta, device=device, batch_size=batch_size, precision=precision,
        channels_last=channels_last, margin=margin, memory_budget=memory_budget, progress=progress,
        output_shift=output_shift,
    )
    return out


def whole_image_reference(model: nn.Module, image: np.ndarray) -> np.ndarray:
    """The network on the whole mirrored image at once (what :func:`predict_image` reproduces).

    Valid models: the image mirror-padded by the halo (and at the end up to the next valid
    size) in one forward pass, cropped to the image. Meant for tests and small images.
    """
    x = _as_channels_first(image, model).astype(np.float32)
    h = model.halo
    spatial = x.shape[1:]
    if model.padding == sizes.VALID:
        target = [tiling.smallest_valid_output(n, int(model.depth)) for n in spatial]
        pad = [(0, 0)] + [(h, h + t - n) for t, n in zip(target, spatial)]
    else:
        d = 2**model.depth
        pad = [(0, 0)] + [(0, -(-n // d) * d - n) for n in spatial]
    big = tiling.mirror_pad(x, pad)
    model.eval()
    fmt = memory_format(torch.device("cpu"), x.ndim - 1)
    model.to(memory_format=fmt)
    with torch.inference_mode():
        p = probabilities(model(torch.from_numpy(big)[None].contiguous(memory_format=fmt)))[0].contiguous().numpy()
    return np.ascontiguousarray(p[(slice(None), *(slice(0, n) for n in spatial))])


# ----------------------------------------------------------------------------------------------
# Dask
# ----------------------------------------------------------------------------------------------
def predict_dask(
    model: nn.Module,
    darr: Any,
    *,
    tile_shape: Sequence[int] | int | None = None,
    tta: bool = False,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    precision: str = "fp32",
    chunk_size: int | None = None,
    output_shift: Sequence[float] | None = None,
) -> Any:
    """Lazy class probabilities of a ``dask.array`` via ``map_overlap``; equal to :func:`predict_image`.

    ``darr`` is ``(*spatial)`` or ``(channels, *spatial)``, already normalised. The image is first
    extended by mirroring (the same ``numpy.pad(mode="symmetric")`` extension as the in-memory
    path, so even arrays smaller than the halo work), rechunked into blocks whose output sizes are
    multiples of the tile stride (so every tile stays on the pooling grid), and each block is
    segmented with its neighbours' context through ``map_overlap(depth=halo + 2**depth,
    boundary="none")``: the extra ``2**depth`` pixels over the halo let the last (grid-aligned)
    tile of a block see exactly the input the whole-image pass sees. Compute the result with any
    scheduler (threads, or a ``dask.distributed`` client). ``output_shift`` moves the result as
    :func:`shift_probabilities` does, block by block with a 3-pixel overlap.

    Returns
    -------
    dask.array.Array
        float32 ``(num_classes, *spatial)``, chunked like the planned blocks.
    """
    import dask.array as da

    dims = int(getattr(model, "spatial_dims", 2))
    if darr.ndim == dims:
        darr = darr[None]
    if darr.ndim != dims + 1 or darr.shape[0] != int(model.in_channels):
        raise InputError(f"dask array of shape {darr.shape}: expected {dims} spatial axes and {model.in_channels} channel(s)")
    shape = tuple(int(s) for s in darr.shape[1:])
    shift = check_output_shift(output_shift, dims)
    h = int(model.halo)
    step = int(model.size_divisor) if model.padding == sizes.VALID else 1
    context = h + step if model.padding == sizes.VALID else _same_context(model)
    if tile_shape is None:
        dev = resolve_device(device)
        tile_shape = auto_tile_shape(model, device=dev, batch_size=int(batch_size or 1))
    tiles = (int(tile_shape),) * dims if isinstance(tile_shape, (int, np.integer)) else tuple(int(t) for t in tile_shape)
    chunks_out = []
    for n, t in zip(shape, tiles):
        if model.padding == sizes.VALID:
            t = tiling.valid_output_tile(t, int(model.depth))
            stride = t - t % step
        else:
            stride = step
        want = max(chunk_size or 2048, context)
        c = -(-want // stride) * stride
        chunks_out.append(tuple([c] * (n // c) + ([n % c] if n % c else [])))
    # Mirror-extend by ``context`` before and ``context + step`` after (the last tile may run
    # up to step - 1 pixels past the image), then give the extension to the edge blocks.
    padded = darr.astype(np.float32)
    for axis, n in enumerate(shape, start=1):
        idx = tiling.mirror_indices(-context, n + context + step, n)
        padded = da.take(padded, idx, axis=axis)
    in_chunks = [(padded.shape[0],)]
    for c in chunks_out:
        blocks = list(c)
        blocks[0] += context
        blocks[-1] += context + step
        in_chunks.append(tuple(blocks))
    padded = padded.rechunk(tuple(in_chunks))
    num_classes = int(model.num_classes)
    out_chunks = ((num_classes,), *chunks_out)
    last = [len(c) - 1 for c in chunks_out]

    def block_fn(block: np.ndarray, block_info=None) -> np.ndarray:
        loc = block_info[0]["chunk-location"][1:]
        out_shape = tuple(chunks_out[i][j] for i, j in enumerate(loc))
        out = np.empty((num_classes, *out_shape), dtype=np.float32)
        inner = tuple(block.shape[i + 1] - 2 * context - (step if loc[i] == last[i] else 0) for i in range(dims))
        if inner != out_shape:  # pragma: no cover - guards the chunk arithmetic
            raise RuntimeError(f"block {loc}: context mismatch {inner} != {out_shape}")
        predict_into(
            model, block, out, tile_shape=tiles, tta=tta, device=device, batch_size=batch_size, precision=precision,
            source_shape=out_shape, source_offset=(context,) * dims,
        )
        return out

    # Prepare the model once here: the blocks run in parallel threads sharing it.
    _Runner(model, resolve_device(device), resolve_precision(precision, resolve_device(device)), tta, _resolve_channels_last("auto", resolve_device(device), dims))
    depth = {0: 0, **{i: context for i in range(1, dims + 1)}}
    meta = np.empty((0,) * (dims + 1), np.float32)
    probs = padded.map_overlap(block_fn, depth=depth, boundary="none", trim=False, dtype=np.float32, chunks=out_chunks, meta=meta)
    if shift is None:
        return probs
    near = {0: "none", **{i: "nearest" for i in range(1, dims + 1)}}
    return probs.map_overlap(lambda b: shift_probabilities(b, shift), depth={0: 0, **{i: 3 for i in range(1, dims + 1)}}, boundary=near, dtype=np.float32, meta=meta)


def _same_context(model: nn.Module) -> int:
    return min(sizes.halo(int(model.depth), sizes.VALID), 64)


# ----------------------------------------------------------------------------------------------
# Files: model meta, normalisation statistics, layouts, outputs
# ----------------------------------------------------------------------------------------------
def load_predictor(model: nn.Module | str | os.PathLike, *, device: str | torch.device | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A model and its ``extra`` metadata from a module (``extra`` empty), model file or run folder."""
    if isinstance(model, nn.Module):
        return model, {}
    from .models import load_with_config

    loaded, meta = load_with_config(model, device=resolve_device(device))
    return loaded, dict(meta.get("extra") or {})


_SAMPLE_LIMIT = 1 << 24  # elements per channel used for float percentiles


def fit_normalization(source: Any, spec: dict[str, Any] | None) -> Callable[[np.ndarray], np.ndarray]:
    """Statistics of :func:`unetseg.normalize.normalize` computed band by band over ``source``.

    ``source`` is ``(channels, *spatial)``; channels are normalised independently. Returns a
    function mapping any window ``(channels, *window)`` to float32, so windows can be normalised
    one at a time with image-wide statistics. ``minmax``, ``zscore``, ``dtype`` and integer
    ``percentile`` (8/16-bit, via exact histograms) match ``normalize`` on the whole image;
    float percentiles use a regular subsample of at most 16M pixels per channel (exact below).
    """
    from .normalize import DEFAULT, METHODS

    spec = dict(DEFAULT if spec is None else spec)
    method = spec.get("method", "percentile")
    if method not in METHODS:
        raise ConfigError(f"normalization method {method!r}: expected one of {', '.join(METHODS)}")
    dtype = np.dtype(source.dtype)
    if dtype.kind not in "biuf":
        raise InputError(f"cannot normalise an image of dtype {dtype}: expected integer or float pixels")
    channels = int(source.shape[0])
    if method == "none":
        return lambda w: np.asarray(w, dtype=np.float32)
    if method == "dtype":
        scale = np.float32(np.iinfo(dtype).max if dtype.kind in "iu" else 1.0)
        return lambda w: np.asarray(w).astype(np.float32) / scale
    bands = list(_bands(source))
    shape_c = (channels,) + (1,) * (len(source.shape) - 1)
    if method in ("minmax", "zscore"):
        lo = np.full(channels, np.inf)
        hi = np.full(channels, -np.inf)
        s1 = np.zeros(channels)
        s2 = np.zeros(channels)
        count = 0
        for band in bands:
            b = np.asarray(source[band]).reshape(channels, -1)
            _check_finite(b)
            lo = np.minimum(lo, b.min(axis=1))
            hi = np.maximum(hi, b.max(axis=1))
            if method == "zscore":
                bf = b.astype(np.float64)
                s1 += bf.sum(axis=1)
                s2 += (bf * bf).sum(axis=1)
            count += b.shape[1]
        if method == "zscore":
            mean = s1 / count
            std = np.sqrt(np.maximum(s2 / count - mean * mean, 0.0))
            mean32 = mean.astype(np.float32).reshape(shape_c)
            std32 = np.maximum(std, 1e-6).astype(np.float32).reshape(shape_c)
            return lambda w: (np.asarray(w).astype(np.float32) - mean32) / std32
    else:
        q = (float(spec.get("low", 1.0)), float(spec.get("high", 99.8)))
        if dtype.kind in "biu" and dtype.itemsize <= 2:
            lo, hi = _histogram_percentiles(source, bands, channels, dtype, q)
        else:
            lo, hi = _sampled_percentiles(source, channels, q)
    lo32 = np.asarray(lo, dtype=np.float32).reshape(shape_c)
    span = np.maximum(np.asarray(hi, dtype=np.float32).reshape(shape_c) - lo32, np.float32(1e-6))
    return lambda w: (np.asarray(w).astype(np.float32) - lo32) / span


def _check_finite(block: np.ndarray) -> None:
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        raise InputError("image contains NaN or Inf values")


def _bands(source: Any, limit: int = 1 << 24):
    shape = tuple(int(s) for s in source.shape)
    row = max(1, math.prod(shape[2:]) * shape[0])
    step = max(1, limit // row)
    for start in range(0, shape[1], step):
        yield (slice(None), slice(start, min(shape[1], start + step)))


def _histogram_percentiles(source, bands, channels, dtype, q):
    base = int(np.iinfo(dtype).min) if dtype.kind != "b" else 0
    counts = None
    for band in bands:
        b = np.asarray(source[band]).reshape(channels, -1).astype(np.int64) - base
        c = np.stack([np.bincount(b[i], minlength=(1 << (8 * dtype.itemsize))) for i in range(channels)])
        counts = c if counts is None else counts + c
    out = []
    for qq in q:
        vals = []
        for i in range(channels):
            cum = np.cumsum(counts[i])
            n = int(cum[-1])
            pos = qq / 100.0 * (n - 1)
            k = int(np.floor(pos))
            frac = pos - k
            v0 = int(np.searchsorted(cum, k + 1)) + base
            v1 = int(np.searchsorted(cum, min(k + 2, n))) + base
            vals.append(v0 + frac * (v1 - v0))
        out.append(np.array(vals))
    return out[0], out[1]


def _sampled_percentiles(source, channels, q):
    shape = tuple(int(s) for s in source.shape[1:])
    total = math.prod(shape)
    stride = max(1, math.ceil((total / _SAMPLE_LIMIT) ** (1 / len(shape))))
    if stride == 1:
        sample = np.asarray(source[(slice(None),) + tuple(slice(0, n) for n in shape)])
    else:
        rows = []
        for start in range(0, shape[0], stride):
            row = np.asarray(source[(slice(None), slice(start, start + 1))])
            rows.append(row[(slice(None), slice(None)) + (slice(None, None, stride),) * (len(shape) - 1)])
        sample = np.concatenate(rows, axis=1)
    sample = sample.reshape(channels, -1).astype(np.float32)
    _check_finite(sample)
    lo = np.percentile(sample, q[0], axis=1)
    hi = np.percentile(sample, q[1], axis=1)
    return lo, hi


class _View:
    """``(channels, *spatial)`` view of a source stored as (*spatial), (C, *s), (*s, C) or a stack slice."""

    def __init__(self, src: Any, kind: str, z: int | None = None):
        self.src, self.kind, self.z = src, kind, z
        s = tuple(int(n) for n in src.shape)
        self.shape = {"add": (1, *s), "first": s, "last": (s[-1], *s[:-1]), "slice": (1, *s[1:])}[kind]
        self.dtype = np.dtype(src.dtype)
        self.ndim = len(self.shape)

    def __getitem__(self, index) -> np.ndarray:
        index = tuple(index) + (slice(None),) * (self.ndim - len(tuple(index)))
        if self.kind == "first":
            return np.asarray(self.src[index])
        if self.kind == "add":
            return np.asarray(self.src[index[1:]])[None]
        if self.kind == "slice":
            return np.asarray(self.src[(self.z, *index[1:])])[None]
        return np.moveaxis(np.asarray(self.src[(*index[1:], index[0])]), -1, 0)


class _StackTarget:
    """Writes the bands of stack slice ``z`` into a target holding the whole stack."""

    def __init__(self, target: Any, z: int, class_axis: bool):
        self.target, self.z, self.class_axis = target, z, class_axis

    def __setitem__(self, index, value) -> None:
        index = tuple(index)
        if self.class_axis:
            self.target[(index[0], self.z, *index[1:])] = value
        else:
            self.target[(self.z, *index)] = value


def image_views(source: Any, model: nn.Module, name: str = "image") -> list[_View]:
    """Interpret a stored array for ``model``: one ``(channels, *spatial)`` view, or one per slice
    of a stack of 2D images for a 2D model.

    Single-channel models take ``(*spatial)`` images and, for 2D models, ``(Z, Y, X)`` stacks
    (slice by slice). Multi-channel models take channels first or last.
    """
    dims = int(getattr(model, "spatial_dims", 2))
    channels = int(model.in_channels)
    shape = tuple(int(s) for s in source.shape)
    if len(shape) == dims and channels == 1:
        return [_View(source, "add")]
    if len(shape) == dims + 1:
        if shape[0] == channels and (channels > 1 or dims == 3 or shape[0] == 1):
            return [_View(source, "first")]
        if channels > 1 and shape[-1] == channels:
            return [_View(source, "last")]
        if channels == 1 and dims == 2 and not (shape[-1] <= 4 < shape[0]):
            return [_View(source, "slice", z) for z in range(shape[0])]
    raise InputError(
        f"{name}: image of shape {shape} does not fit a {dims}D model with {channels} input channel(s) "
        f"(expected {'(Y, X) or a (Z, Y, X) stack' if dims == 2 and channels == 1 else f'{dims} spatial axes with {channels} channels first or last'})"
    )


def _output_spec(kind: str, num_classes: int, foreground: int, t: float):
    """(class axis kept?, dtype, band transform) for an output kind."""
    if kind == "prob":
        if num_classes <= 2:
            c = foreground if num_classes == 2 else 0
            return False, np.float32, lambda p: p[c]
        return True, np.float32, None
    if kind == "mask":
        if num_classes <= 2:
            c = foreground if num_classes == 2 else 0
            return False, np.uint8, lambda p: np.where(p[c] > t, np.uint8(255), np.uint8(0))
        return False, np.uint8, lambda p: np.argmax(p, axis=0).astype(np.uint8)
    raise ConfigError(f"output {kind!r}: expected one of {', '.join(OUTPUT_KINDS)}")


def predict_file(
    model: nn.Module | str | os.PathLike,
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    *,
    output: str = "prob",
    threshold: float = 0.5,
    normalization: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    split: str = "none",
    min_size: int = 0,
    dask_scheduler: Any = None,
    progress: bool | Any = False,
    **kwargs: Any,
) -> Path:
    """Segment one image file into ``output_path`` (``.tif``, ``.zarr`` or ``.npy``).

    The model's ``extra["normalization"]`` (or ``normalization``) is fitted over the whole image
    and applied window by window; inputs are read lazily (:mod:`unetseg.store`) and ``prob`` and
    ``mask`` outputs written band by band, so memory does not grow with the image. ``labels``
    needs the whole probability map in memory for the watershed.

    ``output``: ``"prob"`` float32 probabilities (for a 2-class model the foreground map alone),
    ``"mask"`` uint8 (binary 0/255 for 1-2 classes, else the argmax class), ``"labels"``
    uint16/uint32 instances (:func:`unetseg.postprocess.instances_from_probabilities`).
    Other keyword arguments go to :func:`predict_into` (``tile_shape``, ``tta``, ``device``,
    ``batch_size``, ``precision``, ``output_shift``, ...); ``output_shift`` defaults to the model's
    ``extra["output_shift"]`` (set by training with ``calibration.output_shift``; pass ``None``
    to ignore it). With ``dask_scheduler`` (``"threads"``, an address or a
    ``distributed.Client``) the image is segmented by :func:`predict_dask`.
    """
    from .postprocess import instances_from_probabilities
    from .store import create_writer, open_source

    net, meta_extra = load_predictor(model, device=kwargs.get("device"))
    extra = {**meta_extra, **(extra or {})}
    kwargs.setdefault("output_shift", extra.get("output_shift"))
    spec = normalization if normalization is not None else extra.get("normalization")
    foreground = int(extra.get("foreground_class", 1))
    input_path, output_path = Path(input_path), Path(output_path)
    source = open_source(input_path)
    views = image_views(source, net, str(input_path))
    num_classes = int(net.num_classes)
    spatial = views[0].shape[1:]
    stack = len(views) > 1 or (views[0].kind == "slice")
    if output == "labels":
        probs = np.empty((num_classes, len(views), *spatial) if stack else (num_classes, *spatial), np.float32)
        for z, view in enumerate(views):
            pre = fit_normalization(view, spec)
            tgt = _StackTarget(probs, z, True) if stack else probs
            _predict_view(net, view, tgt, pre, None, np.float32, dask_scheduler, progress, kwargs)
        border = extra.get("border_class")
        labels = instances_from_probabilities(
            probs, threshold_value=threshold, foreground_class=min(foreground, num_classes - 1), split=split,
            border_class=border, min_size=min_size,
        )
        from .io import write_image

        write_image(output_path, labels)
        return output_path
    class_axis, dtype, transform = _output_spec(output, num_classes, foreground, threshold)
    out_shape = ((num_classes,) if class_axis else ()) + ((len(views),) if stack else ()) + tuple(spatial)
    with create_writer(output_path, out_shape, dtype) as writer:
        for z, view in enumerate(views):
            pre = fit_normalization(view, spec)
            tgt = _StackTarget(writer, z, class_axis) if stack else writer
            _predict_view(net, view, tgt, pre, transform, dtype, dask_scheduler, progress, kwargs)
    return output_path


def _predict_view(net, view, target, pre, transform, dtype, dask_scheduler, progress, kwargs) -> None:
    if dask_scheduler is None:
        predict_into(net, view, target, preprocess=pre, transform=transform, progress=progress, **kwargs)
        return
    import dask.array as da

    dims = view.ndim - 1
    darr = da.from_array(view, chunks=(view.shape[0],) + (1024,) * dims, asarray=True, fancy=False)
    normed = darr.map_blocks(pre, dtype=np.float32)
    allowed = {k: v for k, v in kwargs.items() if k in ("tile_shape", "tta", "device", "batch_size", "precision", "output_shift")}
    probs = predict_dask(net, normed, **allowed)
    result = probs.map_blocks(transform, drop_axis=0, dtype=dtype) if transform is not None else probs
    _store_dask(result, target, dask_scheduler)


def _store_dask(result, target, scheduler) -> None:
    import dask.array as da

    if isinstance(scheduler, str) and scheduler in ("threads", "sync", "synchronous"):
        da.store(result, _Full(target, result.ndim), lock=True, scheduler=scheduler)
        return
    from distributed import Client

    if isinstance(scheduler, Client):
        da.store(result, _Full(target, result.ndim), lock=True, scheduler=scheduler)
        return
    with Client(scheduler) as client:
        da.store(result, _Full(target, result.ndim), lock=True, scheduler=client)


class _Full:
    """Adapter so ``da.store`` can write into targets that take full-index tuples."""

    def __init__(self, target, ndim):
        self.target, self.ndim = target, ndim
        self.shape = getattr(target, "shape", None)

    def __setitem__(self, index, value):
        self.target[index] = value
