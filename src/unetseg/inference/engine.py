"""The forward pass and the tile loop of overlap-tile inference (paper Fig. 2).

Everything here works on a network already prepared for inference (:class:`~unetseg.inference.
Predictor` does that once, on its own copy) and treats it as a callable ``forward(batch) ->
probabilities``, the way MONAI's sliding-window inferer does:

- :func:`estimate_tile_memory` / :func:`auto_tile_shape`: the largest tile that fits a memory
  budget, asking the model for its relative activation memory (``activation_memory_factor``);
- :func:`tta_forward`: softmax probabilities of a batch, averaged over the 8 rotations/flips;
- :func:`run_plan`: reads a source band by band (mirroring beyond the image), runs the tiles of
  a :class:`~unetseg.tiling.TilePlan` and writes each band to a target, so memory depends on the
  tile size and image width, not on the image size.

The reference the tiled output equals (for a valid model, up to float rounding)::

    h = model.halo
    big = tiling.mirror_pad(image, [(0, 0)] + [(h, h + e) for e in extra])  # extra: up to a valid size
    probs = softmax(model(big))[..., :H, :W]
"""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import sizes, tiling
from ..affinities import tta_permutation
from ..errors import InputError
from ..runtime import autocast, memory_format
from .shift import RowShifter

log = logging.getLogger(__name__)

# Bytes of activations per batch of tiles on the CPU. 2 GiB: on the 2-core AVX-512-BF16 EPYC the
# paper network segments a 2048^2 image fastest with output tiles of about 800 (fp32) to 1200 (bf16)
# px, which 2 GiB allows; 1 GiB gave 500-px fp32 tiles, 1.13x slower (benchmarks/tile_speed.py).
DEFAULT_CPU_BUDGET = 2 << 30


def estimate_tile_memory(model: nn.Module, in_shape: Sequence[int], *, batch_size: int = 1, bytes_per_value: int = 4) -> int:
    """Rough peak activation memory (bytes) of one forward pass on tiles of ``in_shape``.

    Counts the skip feature maps kept for the expanding path plus the largest transient
    (concatenation, convolution input and output at full resolution), times 1.5 for library
    workspace, times the model's ``activation_memory_factor`` (1 for the U-Net, 2 for FusionNet's
    residual blocks; 1 when a model does not say).

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
    factor = 1.5 * float(getattr(model, "activation_memory_factor", 1.0))
    return int(factor * (kept + transient) * batch_size * bytes_per_value)


def default_memory_budget(device: torch.device) -> int:
    """Activation memory to plan tiles for: half the free GPU memory, or on the CPU
    :data:`DEFAULT_CPU_BUDGET` (2 GiB; at most a quarter of the available RAM)."""
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


def probabilities(logits: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Softmax over the class axis (sigmoid for a single output channel), in float32; channels
    beyond ``num_classes`` (a network's affinities) get a sigmoid each.

    Examples
    --------
    >>> p = probabilities(torch.zeros(1, 3, 1, 1), num_classes=2)
    >>> p.flatten().tolist()
    [0.5, 0.5, 0.5]
    """
    logits = logits.float()
    if num_classes is not None and logits.shape[1] > num_classes:
        head, rest = logits[:, :num_classes], logits[:, num_classes:]
        return torch.cat([probabilities(head), torch.sigmoid(rest)], dim=1)
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def network_probabilities(network: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``network(x)`` as float32 probabilities: :func:`probabilities` of its logits (its affinity
    channels, if any, each by a sigmoid), or its output itself for a network that
    ``returns_probabilities`` (a foreign package's own postprocessing)."""
    out = network(x)
    if getattr(network, "returns_probabilities", False):
        return out.float()
    return probabilities(out, int(network.num_classes) if getattr(network, "affinity_offsets", ()) else None)


def resolve_channels_last(channels_last: bool | str, device: torch.device, dims: int) -> bool:
    """Whether inference uses the channels-last memory format (``"auto"``: on CUDA and in 2D).

    Examples
    --------
    >>> resolve_channels_last("auto", torch.device("cpu"), 3), resolve_channels_last(True, torch.device("cpu"), 3)
    (False, True)
    """
    if channels_last == "auto":
        return device.type == "cuda" or dims == 2
    return bool(channels_last)


def prepared_copy(model: nn.Module, device: torch.device, fmt: torch.memory_format) -> nn.Module:
    """A copy of ``model`` in eval mode, on ``device``, in memory format ``fmt``, without gradients.

    The model given is left exactly as it was (mode, device, memory format, parameters).
    """
    net = copy.deepcopy(model)
    net.eval()
    net.requires_grad_(False)
    net.to(device)
    if fmt != torch.contiguous_format:
        net.to(memory_format=fmt)
    return net


def tta_forward(network: nn.Module, batch: np.ndarray, *, device: torch.device, precision: str, fmt: torch.memory_format, tta: bool) -> np.ndarray:
    """Float32 probabilities ``(N, classes, *tile)`` of a batch of input tiles ``(N, C, *in)``,
    averaged over the 8 rotations/flips when ``tta``, under autocast ``precision``. A network's
    affinity channels follow its classes; under each rotation/flip they are mapped back onto the
    offsets they predict (:func:`unetseg.affinities.tta_permutation`)."""
    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
    transforms = dihedral_transforms(x.ndim - 2) if tta else [(0, False)]
    offsets = getattr(network, "affinity_offsets", ())
    total = None
    with torch.inference_mode(), autocast(device, precision):
        for k, flip in transforms:
            xt = _apply(x, k, flip).contiguous(memory_format=fmt)
            p = _invert(network_probabilities(network, xt), k, flip)
            if offsets and (k or flip):  # channel j now holds the affinity along T^-1(offset j)
                c = int(network.num_classes)
                back = np.argsort(tta_permutation(offsets, k, flip))
                p = torch.cat([p[:, :c], p[:, c:][:, torch.as_tensor(back, device=p.device)]], dim=1)
            total = p if total is None else total + p
    total = total / len(transforms)
    return total.to("cpu", torch.float32).contiguous().numpy()


def read_mirrored(source: Any, channels: int, ranges: Sequence[tuple[int, int]], offset: Sequence[int] = ()) -> np.ndarray:
    """Read ``source[:, ranges...]`` (shifted by ``offset``), mirroring positions outside ``source``.

    Examples
    --------
    >>> read_mirrored(np.arange(4)[None], 1, [(-2, 6)]).tolist()
    [[1, 0, 0, 1, 2, 3, 3, 2]]
    """
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


def _predict_band(forward, band, band_in, origin, out, batch_size: int, bar) -> None:
    """Run the tiles of one band (grouped by input shape, ``batch_size`` at a time) into ``out``."""
    a0 = band[0].axes[0]
    groups: dict[tuple[int, ...], list[tiling.Tile]] = {}
    for tile in band:
        groups.setdefault(tile.in_shape, []).append(tile)
    for in_shape, tiles in groups.items():
        for i in range(0, len(tiles), batch_size):
            chunk = tiles[i : i + batch_size]
            batch = np.stack([band_in[(slice(None), *(slice(s - o, s - o + n) for s, o, n in zip(t.in_start, origin, in_shape)))] for t in chunk])
            for t, p in zip(chunk, forward(batch)):
                out[(slice(None), slice(0, a0.keep_stop - a0.keep_start), *t.keep[1:])] = p[(slice(None), *t.keep_in_tile)]
            if bar is not None:
                bar.update(len(chunk))


def run_plan(
    forward: Callable[[np.ndarray], np.ndarray],
    source: Any,
    target: Any,
    plan: tiling.TilePlan,
    *,
    channels: int,
    num_classes: int,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    progress: bool | Any = False,
    batch_size: int = 1,
    source_offset: Sequence[int] = (),
    shift: Sequence[float] | None = None,
) -> None:
    """Segment ``source`` into ``target`` band by band along the first spatial axis.

    ``forward`` maps a batch of input tiles to probabilities; ``preprocess`` is applied to each
    band read, ``transform`` to each band of probabilities before it is written; ``shift``
    moves the probabilities (:class:`~unetseg.inference.shift.RowShifter`, bands written late).
    """
    shape = plan.shape
    dims = len(shape)
    pre = preprocess or (lambda w: w.astype(np.float32, copy=False))
    bar = progress_bar(progress, len(plan))
    log.debug("tiling %s into %d tiles (efficiency %.3f)", shape, len(plan), plan.efficiency)
    h = plan.halo
    shifter = RowShifter(shift, shape[0]) if shift is not None else None
    for band in plan.bands:
        a0 = band[0].axes[0]
        rest = [(min(t.axes[i].start for t in band) - h, max(t.axes[i].stop for t in band) + h) for i in range(1, dims)]
        band_ranges = [(a0.start - h, a0.stop + h), *rest]
        band_in = pre(read_mirrored(source, channels, band_ranges, source_offset))
        band_out = np.empty((num_classes, a0.keep_stop - a0.keep_start, *shape[1:]), dtype=np.float32)
        _predict_band(forward, band, band_in, [r[0] for r in band_ranges], band_out, batch_size, bar)
        ready = shifter.push(a0.keep_start, band_out) if shifter is not None else [(a0.keep_start, band_out)]
        for start, rows in ready:
            result = transform(rows) if transform is not None else rows
            region = (slice(start, start + rows.shape[1]), *(slice(0, n) for n in shape[1:]))
            target[region if result.ndim == dims else (slice(None), *region)] = result
    if bar is not None and progress is True:
        bar.close()


def progress_bar(progress: bool | Any, total: int):
    """A new tqdm bar (``progress=True``), an existing bar advanced by ``total`` more, or None."""
    if progress is True:
        from tqdm import tqdm

        return tqdm(total=total, unit="tile", leave=False, desc="tiles")
    if progress:  # an existing bar to advance
        progress.total = (progress.total or 0) + total
        progress.refresh()
        return progress
    return None


def as_channels_first(image: np.ndarray, spatial_dims: int, channels: int) -> np.ndarray:
    """An in-memory image ``(*spatial)`` or ``(channels, *spatial)`` as ``(channels, *spatial)``.

    Examples
    --------
    >>> as_channels_first(np.zeros((4, 5)), 2, 1).shape
    (1, 4, 5)
    """
    arr = np.asarray(image)
    if arr.ndim == spatial_dims:
        arr = arr[None]
    if arr.ndim != spatial_dims + 1 or arr.shape[0] != channels:
        raise InputError(
            f"image of shape {np.shape(image)}: expected (*spatial) or (channels, *spatial) with "
            f"{spatial_dims} spatial axes and {channels} channel(s)"
        )
    if arr.dtype.kind not in "biuf":
        raise InputError(f"image of dtype {arr.dtype}: expected numbers")
    if 0 in arr.shape:
        raise InputError(f"image of shape {arr.shape} is empty")
    return arr


def whole_image_reference(model: nn.Module, image: np.ndarray) -> np.ndarray:
    """The network on the whole mirrored image at once (what overlap-tile prediction reproduces).

    Valid models: the image mirror-padded by the halo (and at the end up to the next valid
    size) in one forward pass, cropped to the image. Meant for tests and small images; the
    model given is not changed.
    """
    x = as_channels_first(image, int(getattr(model, "spatial_dims", 2)), int(getattr(model, "in_channels", 1))).astype(np.float32)
    h = model.halo
    spatial = x.shape[1:]
    if model.padding == sizes.VALID:
        target = [tiling.smallest_valid_output(n, int(model.depth)) for n in spatial]
        pad = [(0, 0)] + [(h, h + t - n) for t, n in zip(target, spatial)]
    else:
        d = 2**model.depth
        pad = [(0, 0)] + [(0, -(-n // d) * d - n) for n in spatial]
    big = tiling.mirror_pad(x, pad)
    fmt = memory_format(torch.device("cpu"), x.ndim - 1)
    net = prepared_copy(model, torch.device("cpu"), fmt)
    with torch.inference_mode():
        p = network_probabilities(net, torch.from_numpy(big)[None].contiguous(memory_format=fmt))[0].contiguous().numpy()
    return np.ascontiguousarray(p[(slice(None), *(slice(0, n) for n in spatial))])
