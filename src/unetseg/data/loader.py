"""The training loader: the batches of steps ``start`` to ``stop`` for one rank, prefetched.

There is one loader, and ``fit`` and the data-speed benchmark use the same one
(:func:`train_loader`). Step ``k`` of rank ``r`` takes dataset items
``(k * world_size + r) * batch_size + b``; the :class:`~unetseg.data.tiles.TileDataset` draws
each item deterministically from its index, so a resumed run, another number of worker
processes or another rank sees exactly the tiles it should.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import ConfigError


class StepBatchSampler(Sampler[list[int]]):
    """Dataset indices of each step's batch for one rank, from ``start`` to ``stop`` steps.

    Examples
    --------
    >>> list(StepBatchSampler(start=1, stop=3, batch_size=2, rank=1, world_size=2))
    [[6, 7], [10, 11]]
    """

    def __init__(self, start: int, stop: int, batch_size: int, rank: int = 0, world_size: int = 1):
        self.start, self.stop, self.batch_size = start, stop, batch_size
        self.rank, self.world_size = rank, world_size

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            first = (step * self.world_size + self.rank) * self.batch_size
            yield list(range(first, first + self.batch_size))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def prefetch(iterable: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead.

    NumPy, SciPy and PyTorch release the GIL in their kernels, so tile augmentation overlaps
    with the training step. Exceptions are re-raised in the consumer; leaving the loop early
    stops the thread.

    Examples
    --------
    >>> list(prefetch(range(5)))
    [0, 1, 2, 3, 4]
    """
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def put(item: Any) -> bool:
        """Queue ``item`` unless the consumer has gone (then False): never blocks for good."""
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        _yield_to_training()
        try:
            for item in iterable:
                if not put(item):
                    return
            put(done)  # the end, too, must not wait on a consumer that left (it did: a leaked thread)
        except Exception as exc:  # handed to the consumer and raised there
            put(exc)

    th = threading.Thread(target=produce, name="unetseg-prefetch", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stop.set()
        th.join(timeout=5)


def _yield_to_training() -> None:
    """Lower the calling thread's scheduling priority (Linux: per thread), so that tile making
    takes the cores when the training threads leave them, instead of preempting them."""
    if hasattr(os, "setpriority") and hasattr(threading, "get_native_id"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
    _yield_to_training()


def train_loader(dataset: Dataset, *, batch_size: int, start: int, stop: int, rank: int = 0, world_size: int = 1,
                 num_workers: int = 0, prefetch_depth: int = 2, pin_memory: bool = False) -> Iterator[dict[str, Any]]:
    """Collated batches of steps ``start`` to ``stop`` for one rank.

    ``num_workers > 0``: PyTorch worker processes (one thread each); ``0``: a background thread
    ``prefetch_depth`` batches ahead (:func:`prefetch`).

    Examples
    --------
    >>> import numpy as np
    >>> from unetseg.data import LabeledImage, TileDataset
    >>> img = LabeledImage("a", np.zeros((1, 40, 40), np.float32), np.zeros((40, 40), np.int64),
    ...                    np.ones((40, 40), np.float32), np.zeros((40, 40), bool))
    >>> batches = list(train_loader(TileDataset([img], (36, 36), (20, 20)), batch_size=2, start=3, stop=5))
    >>> len(batches), tuple(batches[0]["image"].shape)
    (2, (2, 1, 36, 36))
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers < 0:
        raise ConfigError(f"runtime.num_workers must be >= 0, got {num_workers}")
    loader = DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(start, stop, batch_size, rank, world_size),
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        worker_init_fn=_worker_init if num_workers > 0 else None,
    )
    return iter(loader) if num_workers > 0 else prefetch(loader, prefetch_depth)
