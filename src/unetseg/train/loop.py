"""The training loop: one screen that calls the named stages of :mod:`unetseg.train.stages`.

Determinism and exact resume
----------------------------
Every random choice of step ``k`` is a pure function of ``(seed, k, rank)``:

- the samples of step ``k`` are items ``(k * world_size + rank) * batch_size + b`` of a map-style
  dataset whose ``__getitem__`` is deterministic in ``(seed, index)`` (crop position,
  augmentation), so data-loading workers and restarts draw the same tiles
  (:func:`unetseg.data.train_loader`);
- dropout runs under a forked torch RNG seeded with ``(seed, k, rank)``;
- the learning rate is a function of ``k`` (:func:`unetseg.train.optim.lr_at`).

A checkpoint therefore needs only the weights, the optimiser state and ``k`` to continue
exactly (plus the weight average, :mod:`unetseg.train.averaging`, when one is kept); the torch
RNG state is stored too, for code outside the step.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.loader import StepBatchSampler, train_loader
from ..models import ModelCard
from .config import TrainConfig
from .runlock import held_run_folder
from .stages import after_step, close_run, finish_run, record_step, seeded_rng, setup_run, train_step, waited_for

__all__ = ["StepBatchSampler", "TrainResult", "fit", "seed_model_init", "step_seed"]


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for the torch RNG of one step on one rank.

    Examples
    --------
    >>> step_seed(0, 5, 0) == step_seed(0, 5, 0) != step_seed(0, 5, 1)
    True
    """
    return int(np.random.SeedSequence([seed, step, rank, 0x7E57]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class _StopSignal:
    """Turns SIGINT/SIGTERM into a flag checked after each step (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _StopSignal:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C stops at once
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)


@dataclass
class TrainResult:
    """What :func:`fit` did."""

    run_dir: Path
    step: int
    status: str  # "completed", "interrupted" (signal), "stopped" (stop_after), "early_stopped", "time_limit"
    signal: int | None = None
    best_metric: float | None = None
    best_step: int | None = None
    steps_per_s: float = 0.0
    history: list[dict] = field(default_factory=list)


def seed_model_init(seed: int) -> contextlib.AbstractContextManager:
    """Context in which building a model draws its initial weights from ``seed`` only."""
    return seeded_rng(int(np.random.SeedSequence([seed, 0x1417]).generate_state(1, np.uint64)[0] >> np.uint64(1)), torch.device("cpu"))


def fit(
    cfg: TrainConfig,
    model: nn.Module,
    train_set: Dataset,
    run_dir: str | os.PathLike,
    *,
    val_set: Sequence[Any] = (),
    card: ModelCard | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
    stop_after: int | None = None,
    time_limit_s: float | None = None,
    on_step: Callable[[int, float], bool | None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_set`` as ``cfg`` says, writing the run folder ``run_dir``.

    ``train_set`` is a map-style dataset whose item ``i`` (deterministic in ``i``) is a dict with
    ``image`` (C, *in), ``target`` (*out) int64 and optionally ``weight`` and ``mask``;
    ``val_set`` holds held-out images (``name``, ``image``, ``target``, optional ``ignore``)
    validated by full-image prediction. ``card`` is the model card the saved models start from
    (normalisation, classes, provenance); training adds precision, step, metrics and the
    calibrated output shift. ``run_dir`` receives ``model.safetensors`` (the best model when
    validating, else the last), ``model-last.safetensors``, ``config.yaml``, ``metrics.jsonl``,
    ``checkpoints/``, ``loss.png`` and ``val/*.png``. ``resume`` continues from the newest
    checkpoint; ``stop_after`` stops (with a checkpoint) after that many steps; ``time_limit_s``
    stops after that much training time counted over resumes (``schedule.fit_time_limit`` also
    fits the learning-rate schedule to it); ``on_step(step, loss)`` is called after each step, and
    when it returns True training stops as on SIGINT (checkpoint, status ``interrupted``,
    resumable): how a GUI thread stops a run.

    Raises
    ------
    TrainingError
        The loss became NaN/Inf (the last good checkpoint is kept), or a checkpoint does not fit.
    """
    with held_run_folder(run_dir):  # one live run per folder (RUN/.lock)
        state = setup_run(cfg, model, train_set, Path(run_dir), val_set=val_set, card=card or ModelCard(), resume=resume,
                          device=device, progress=progress, stop_after=stop_after, time_limit_s=time_limit_s)
        info, rt = state.info, cfg.runtime
        batches = train_loader(train_set, batch_size=cfg.batch_size, start=state.start, stop=state.end, rank=info.rank,
                               world_size=info.world_size, num_workers=rt.num_workers, prefetch_depth=cfg.sampling.prefetch,
                               pin_memory=state.device.type == "cuda")
        state.ddp_model.train()
        try:
            with _StopSignal() as stopper:
                for batch in waited_for(batches, state):
                    seeded = lambda: seeded_rng(step_seed(rt.seed, state.step, info.rank), state.device)  # noqa: E731
                    loss, lr, grad_norm = train_step(state, batch, seeded)
                    asked = on_step is not None and bool(on_step(state.step, loss))
                    record_step(state, loss, lr, grad_norm)
                    if after_step(state, stopper.signum or (signal.SIGINT if asked else None)):
                        break
            finish_run(state)
        finally:
            close_run(state)
    run_s = time.perf_counter() - state.t_start
    return TrainResult(run_dir=state.run_dir, step=state.step, status=state.status, signal=state.signum, best_metric=state.best_metric,
                       best_step=state.best_step, steps_per_s=(state.step - state.start) / run_s if run_s > 0 else 0.0,
                       history=list(state.metrics.records))
