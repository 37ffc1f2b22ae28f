"""Overlap-tile inference of arrays larger than one machine: ``dask.array.map_overlap``.

Every block is segmented with its neighbours' context by the same tile loop as in memory, so
the result equals :func:`~unetseg.inference.predict_image` on the whole array (tested); the
blocks of one process share one :class:`~unetseg.inference.Predictor` (its network is prepared
once, so threads never convert it while another runs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from .. import sizes, tiling
from ..errors import InputError
from .predictor import Predictor, as_predictor
from .shift import shift_probabilities


def _context(net: nn.Module) -> tuple[int, int]:
    """(context pixels on each side of a block, tile stride) for a network."""
    if net.padding == sizes.VALID:
        step = int(net.size_divisor)
        return int(net.halo) + step, step
    return min(sizes.halo(int(net.depth), sizes.VALID), 64), 1


def _block_chunks(net: nn.Module, shape: Sequence[int], tiles: Sequence[int], chunk_size: int | None, context: int, step: int):
    """Output chunk sizes per axis: multiples of the tile stride, so every tile stays on the pooling grid."""
    chunks_out = []
    for n, t in zip(shape, tiles):
        stride = step
        if net.padding == sizes.VALID:
            t = tiling.valid_output_tile(t, int(net.depth))
            stride = t - t % step
        want = max(chunk_size or 2048, context)
        c = -(-want // stride) * stride
        chunks_out.append(tuple([c] * (n // c) + ([n % c] if n % c else [])))
    return chunks_out


def _mirror_extend(darr: Any, shape: Sequence[int], chunks_out, context: int, step: int) -> Any:
    """Mirror-extend by ``context`` before and ``context + step`` after (the last tile may run up
    to ``step - 1`` pixels past the image) and give the extension to the edge blocks."""
    import dask.array as da

    padded = darr.astype(np.float32)
    for axis, n in enumerate(shape, start=1):
        padded = da.take(padded, tiling.mirror_indices(-context, n + context + step, n), axis=axis)
    in_chunks = [(padded.shape[0],)]
    for c in chunks_out:
        blocks = list(c)
        blocks[0] += context
        blocks[-1] += context + step
        in_chunks.append(tuple(blocks))
    return padded.rechunk(tuple(in_chunks))


def predict_dask(
    model: nn.Module | Predictor,
    darr: Any,
    *,
    tile_shape: Sequence[int] | int | None = None,
    tta: bool = False,
    device: Any = None,
    batch_size: int | None = None,
    precision: str | None = None,
    chunk_size: int | None = None,
    output_shift: Sequence[float] | str | None = None,
) -> Any:
    """Lazy float32 ``(num_classes, *spatial)`` probabilities of a ``dask.array``; equal to ``predict_image``.

    ``darr`` is ``(*spatial)`` or ``(channels, *spatial)``, already normalised. The image is
    mirror-extended (as in memory, so even arrays smaller than the halo work), rechunked into
    blocks whose output sizes are multiples of the tile stride, and each block segmented with
    its neighbours' context by ``map_overlap(depth=halo + 2**depth, boundary="none")``: the extra
    ``2**depth`` pixels let a block's last grid-aligned tile see exactly what the whole-image
    pass sees. Compute with any scheduler (threads or a ``dask.distributed`` client).
    ``output_shift`` moves the result block by block with a 3-pixel overlap.
    """
    predictor = as_predictor(model, device=device, precision=precision)
    net, dims = predictor.network, predictor.spatial_dims
    if darr.ndim == dims:
        darr = darr[None]
    if darr.ndim != dims + 1 or darr.shape[0] != predictor.in_channels:
        raise InputError(f"dask array of shape {darr.shape}: expected {dims} spatial axes and {predictor.in_channels} channel(s)")
    shape = tuple(int(s) for s in darr.shape[1:])
    shift = predictor.shift_for(output_shift)
    context, step = _context(net)
    tiles = predictor.tile_shape_for(tile_shape, int(batch_size or 1))
    tiles = (int(tiles),) * dims if isinstance(tiles, (int, np.integer)) else tuple(int(t) for t in tiles)
    chunks_out = _block_chunks(net, shape, tiles, chunk_size, context, step)
    padded = _mirror_extend(darr, shape, chunks_out, context, step)
    last = [len(c) - 1 for c in chunks_out]

    def block_fn(block: np.ndarray, block_info=None) -> np.ndarray:
        loc = block_info[0]["chunk-location"][1:]
        out_shape = tuple(chunks_out[i][j] for i, j in enumerate(loc))
        inner = tuple(block.shape[i + 1] - 2 * context - (step if loc[i] == last[i] else 0) for i in range(dims))
        if inner != out_shape:  # pragma: no cover - guards the chunk arithmetic
            raise RuntimeError(f"block {loc}: context mismatch {inner} != {out_shape}")
        out = np.empty((predictor.num_classes, *out_shape), dtype=np.float32)
        predictor.predict_into(block, out, tile_shape=tiles, tta=tta, batch_size=batch_size, source_shape=out_shape,
                               source_offset=(context,) * dims, output_shift=None)
        return out

    meta = np.empty((0,) * (dims + 1), np.float32)
    probs = padded.map_overlap(block_fn, depth={0: 0, **{i: context for i in range(1, dims + 1)}}, boundary="none", trim=False,
                               dtype=np.float32, chunks=((predictor.num_classes,), *chunks_out), meta=meta)
    if shift is None:
        return probs
    near = {0: "none", **{i: "nearest" for i in range(1, dims + 1)}}
    return probs.map_overlap(lambda b: shift_probabilities(b, shift), depth={0: 0, **{i: 3 for i in range(1, dims + 1)}},
                             boundary=near, dtype=np.float32, meta=meta)


NO_WORKERS_S = 60.0  # a cluster without workers for this long fails the run (UNETSEG_DASK_NO_WORKERS_S overrides)
_POLL_S = 1.0


def block_regions(chunks: tuple[tuple[int, ...], ...]) -> list[tuple[slice, ...]]:
    """The region of every block of a dask array with ``chunks``, in C order (``to_delayed().ravel()``).

    Examples
    --------
    >>> block_regions(((2, 1), (3,)))
    [(slice(0, 2, None), slice(0, 3, None)), (slice(2, 3, None), slice(0, 3, None))]
    """
    import itertools

    per_axis = [[slice(int(a), int(a + c)) for a, c in zip(np.cumsum((0,) + tuple(ch[:-1])), ch)] for ch in chunks]
    return list(itertools.product(*per_axis))


def _write_block(block: np.ndarray, target: Any, region: tuple[slice, ...], queue_name: str, index: int) -> None:
    """Write one block, then report it (or the error that stopped it) on the client's queue."""
    from distributed import Queue

    try:
        target[region] = block
        report: tuple = (index, int(block.nbytes), None)
    except Exception as exc:  # handed to the client and raised there
        report = (index, 0, exc)
    Queue(queue_name).put(report)


def _lost_keys(dask_scheduler: Any, keys: list) -> list:
    """Keys the scheduler no longer holds, or holds as failed (run on the scheduler)."""
    return [k for k in keys if k not in dask_scheduler.tasks or dask_scheduler.tasks[k].state == "erred"]


def store_on_cluster(result: Any, target: Any, client: Any, *, no_workers_s: float | None = None) -> int:
    """Write the dask array ``result`` into ``target`` on a ``distributed`` cluster; bytes written.

    One task per block computes and writes it at its own offsets, then reports on a distributed
    queue. The tasks are fire-and-forget: the scheduler runs each until it is done and then
    forgets it, so a worker that dies after finishing a block never makes Dask redo it (a block
    is written twice only if its worker dies between writing and finishing the task); work lost
    with a dead worker is recomputed on the workers left. A cluster with no worker for
    ``no_workers_s`` seconds (default ``$UNETSEG_DASK_NO_WORKERS_S`` or 60), or a block the
    scheduler gave up on (``KilledWorker``: its workers kept dying), is a
    :class:`~unetseg.errors.ClusterError`; an error inside a block is raised as it was. The
    caller's atomic writer then leaves nothing under the final name.
    """
    import os
    import uuid

    import dask
    from distributed import Queue, fire_and_forget

    from ..errors import ClusterError

    limit = float(os.environ.get("UNETSEG_DASK_NO_WORKERS_S", NO_WORKERS_S)) if no_workers_s is None else no_workers_s
    name = f"unetseg-blocks-{uuid.uuid4().hex}"
    reports = Queue(name, client=client)
    blocks = list(zip(result.to_delayed().ravel(), block_regions(result.chunks)))
    futures = client.compute([dask.delayed(_write_block, pure=False)(b, target, r, name, i) for i, (b, r) in enumerate(blocks)])
    fire_and_forget(futures)
    keys = [f.key for f in futures]
    del futures  # the client holds no result, so none is ever recomputed for it
    done: dict[int, int] = {}
    idle = 0.0
    while len(done) < len(blocks):
        try:
            index, nbytes, error = reports.get(timeout=_POLL_S)
        except TimeoutError:
            idle = 0.0 if client.scheduler_info(n_workers=-1)["workers"] else idle + _POLL_S
            if idle >= limit:
                raise ClusterError(f"{client.scheduler.address}: the Dask cluster has had no worker for {limit:.0f} s "
                                   f"with {len(blocks) - len(done)} of {len(blocks)} blocks left") from None
            _check_lost(client, reports, done, keys)
            continue
        if error is not None:
            raise error
        done[index], idle = nbytes, 0.0
    return sum(done.values())


def _check_lost(client: Any, reports: Any, done: dict, keys: list) -> None:
    """Raise when the scheduler dropped a block that never reported (it gave up on it)."""
    from ..errors import ClusterError

    lost = client.run_on_scheduler(_lost_keys, keys=[k for i, k in enumerate(keys) if i not in done])
    if lost and reports.qsize() == 0:
        raise ClusterError(f"{client.scheduler.address}: the scheduler gave up on {len(lost)} block(s) "
                           "(their workers kept dying: KilledWorker)")
