"""The training loop: steps, validation, best-model keeping, early stopping, faults, resume.

Determinism and exact resume
----------------------------
Every random choice of step ``k`` is a pure function of ``(seed, k, rank)``:

- the samples of step ``k`` are items ``(k * world_size + rank) * batch_size + b`` of a map-style
  dataset whose ``__getitem__`` is deterministic in ``(seed, index)`` (crop position,
  augmentation), so data-loading workers and restarts draw the same tiles;
- dropout runs under a forked torch RNG seeded with ``(seed, k, rank)``;
- the learning rate is a function of ``k`` (:func:`unetseg.train.optim.lr_at`).

A checkpoint therefore needs only the weights, the optimiser state and ``k`` to continue
exactly (plus the weight average, :mod:`unetseg.train.averaging`, when one is kept); the torch
RNG state is stored too, for code outside the step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from .. import runtime
from ..config import dump_config
from ..data import prefetch
from ..errors import ConfigError, TrainingError
from ..losses import build_loss
from ..models import load_with_config
from ..models import save as save_model
from . import distributed as dist_util
from .averaging import WeightAverage
from .calibrate import calibrate_model
from .checkpoint import latest_checkpoint, load_checkpoint, read_averaged, save_checkpoint
from .config import TrainConfig
from .optim import build_optimizer, clip_gradients, lr_at, schedule_position, set_lr
from .plots import plot_loss_curve, plot_overlay, read_metrics
from .progress import Progress
from .validate import metric_mode, validate

log = logging.getLogger(__name__)


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


def step_seed(seed: int, step: int, rank: int) -> int:
    """A 63-bit seed for the torch RNG of one step on one rank.

    Examples
    --------
    >>> step_seed(0, 5, 0) == step_seed(0, 5, 0) != step_seed(0, 5, 1)
    True
    """
    return int(np.random.SeedSequence([seed, step, rank, 0x7E57]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        yield


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
    return _seeded(int(np.random.SeedSequence([seed, 0x1417]).generate_state(1, np.uint64)[0] >> np.uint64(1)), torch.device("cpu"))


def _to_device(batch: Mapping[str, Tensor], device: torch.device, mem: torch.memory_format) -> dict[str, Tensor]:
    out = {}
    for k, v in batch.items():
        if not isinstance(v, Tensor):
            continue
        v = v.to(device, non_blocking=True)
        if k == "image" and v.dim() == 4:
            v = v.contiguous(memory_format=mem)
        out[k] = v
    return out


def _trim_metrics(path: Path, step: int) -> None:
    """Drop metrics lines written after the checkpoint we resume from."""
    if not path.is_file():
        return
    keep = [json.dumps(r) for r in read_metrics(path) if int(r.get("step", 0)) <= step]
    from ..atomic import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


class _MetricsLog:
    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled
        self.records: list[dict] = read_metrics(path) if enabled else []

    def write(self, record: dict) -> None:
        self.records.append(record)
        if not self.enabled:
            return
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()


def _is_better(value: float, best: float | None, mode: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    if best is None:
        return True
    return value > best if mode == "max" else value < best


def fit(
    cfg: TrainConfig,
    model: nn.Module,
    train_set: Dataset,
    run_dir: str | os.PathLike,
    *,
    val_set: Sequence[Any] = (),
    model_extra: dict[str, Any] | None = None,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
    stop_after: int | None = None,
    time_limit_s: float | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train ``model`` on ``train_set`` as ``cfg`` says, writing the run folder ``run_dir``.

    Parameters
    ----------
    cfg : TrainConfig
        The resolved recipe (written to ``run_dir/config.yaml``).
    model : nn.Module
        A freshly built network (see :func:`seed_model_init` for reproducible weights).
    train_set : Dataset
        Map-style dataset; item ``i`` is a dict with ``image`` (C, *in), ``target`` (*out) int64
        and optionally ``weight`` (*out) float and ``mask`` (*out) bool, deterministic in ``i``.
    run_dir : path
        Output folder (created). Holds ``model.safetensors`` (+ ``.json``; the best model when
        validating, else the last), ``model-last.safetensors``, ``config.yaml``,
        ``metrics.jsonl``, ``checkpoints/``, ``loss.png`` and ``val/*.png``.
    val_set : sequence
        Held-out images with attributes ``name``, ``image`` (C, *sp) and ``target`` (*sp) and
        optionally ``ignore`` (*sp) bool; validated by full-image prediction.
    model_extra : dict
        Stored as ``extra`` in the model file (normalisation, classes, foreground class, task).
    resume : bool
        Continue from the newest checkpoint in ``run_dir/checkpoints``.
    device : str or torch.device, optional
        Overrides ``cfg.runtime.device``.
    progress : bool
        Show a progress bar / periodic lines (the CLI does).
    stop_after : int, optional
        Stop (with a checkpoint) once this many steps are done, as if interrupted.
    time_limit_s : float, optional
        Stop (with a checkpoint and a final validation) after this much wall-clock time,
        counted over resumes (from the checkpoint's time); ``schedule.fit_time_limit`` also
        fits the learning-rate schedule to it.
    on_step : callable, optional
        Called as ``on_step(step, loss)`` after every step (tests, custom logging).

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingError
        The loss became NaN/Inf (the last good checkpoint is kept), or a checkpoint does not fit.
    """
    run_dir = Path(run_dir)
    rt = cfg.runtime
    dev = runtime.resolve_device(device if device is not None else rt.device)
    info = dist_util.init(dev)
    dev = dist_util.device_for(dev, info)
    precision = runtime.resolve_precision(rt.precision, dev)
    spatial_dims = getattr(model, "spatial_dims", 2)
    use_cl = runtime.training_channels_last(rt.channels_last, dev, precision, spatial_dims)
    mem = runtime.memory_format(dev, spatial_dims) if use_cl else torch.contiguous_format
    if dev.type == "cpu":
        runtime.configure_allocator()
    if rt.threads is not None:
        runtime.configure_threads(rt.threads)
    elif dev.type == "cpu" and info.enabled:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        runtime.configure_threads(max(1, cpus // info.world_size))

    ckpt_dir = run_dir / "checkpoints"
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "val").mkdir(exist_ok=True)
    dist_util.barrier(info)

    model = model.to(dev)
    if use_cl:
        model = model.to(memory_format=mem)
    optimizer = build_optimizer(cfg.optim, model.parameters())
    total = cfg.schedule.steps
    averager = WeightAverage(model, cfg.averaging.decay) if cfg.averaging.enabled else None

    start = 0
    # elapsed_s: training wall-clock time up to the checkpoint, so time limits span resumes
    state: dict[str, Any] = {"best_metric": None, "best_step": None, "bad_validations": 0, "elapsed_s": 0.0}
    if resume:
        path = latest_checkpoint(ckpt_dir)
        if path is None:
            raise TrainingError(f"{ckpt_dir}: no complete checkpoint to resume from")
        meta = load_checkpoint(path, model, optimizer)
        start = int(meta["step"])
        if averager is not None:
            tensors = read_averaged(path)
            if tensors is None:
                raise TrainingError(f"{path}: holds no weight average, but averaging.enabled is true in this config")
            averager.load(tensors, int(meta.get("state", {}).get("averaging_count", 0)))
        state.update(meta.get("state", {}).get("history", {}))
        if info.is_main:
            _trim_metrics(run_dir / "metrics.jsonl", start)
        log.info("resuming from %s (step %d of %d)", path, start, total)
    elif info.is_main:
        dump_config(cfg, run_dir / "config.yaml")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    dist_util.barrier(info)

    ddp_model = dist_util.wrap(model, dev, info)
    loss_fn = build_loss(cfg.loss)
    scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" and dev.type == "cuda" else None
    metrics_log = _MetricsLog(run_dir / "metrics.jsonl", info.is_main)
    metric_name = cfg.validation.metric
    mode = metric_mode(metric_name, cfg.validation.mode)
    extra = dict(model_extra or {})
    extra.setdefault("training", {})
    extra["training"] = {**extra["training"], "precision": precision}

    end = total if stop_after is None else min(total, stop_after)
    sampler = StepBatchSampler(start, end, cfg.batch_size, info.rank, info.world_size)
    loader = DataLoader(
        train_set,
        batch_sampler=sampler,
        num_workers=rt.num_workers,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
    )

    def weights() -> nn.Module:
        """The network that is validated, calibrated and saved: the weight average once it has started."""
        return averager.module if averager is not None and averager.count > 0 else model

    def training_extra(step: int, **more: Any) -> dict[str, Any]:
        info_ = {**extra["training"], "step": step, **more}
        if averager is not None:
            info_["averaged_steps"] = averager.count
        return {**extra, "training": info_}

    def checkpoint(step: int) -> None:
        state["elapsed_s"] = elapsed()
        if info.is_main:
            ckpt_state = {"history": state, "seed": rt.seed, "world_size": info.world_size, "batch_size": cfg.batch_size}
            if averager is not None:
                ckpt_state["averaging_count"] = averager.count
            save_checkpoint(
                ckpt_dir,
                step,
                model,
                optimizer,
                state=ckpt_state,
                keep_last=cfg.checkpoint.keep_last,
                averaged=averager.state_dict() if averager is not None else None,
            )
            save_model(weights(), run_dir / "model-last.safetensors", extra=training_extra(step))
            if not val_set:
                save_model(weights(), run_dir, extra=training_extra(step))
        dist_util.barrier(info)

    def run_validation(step: int) -> bool:
        """Validate on rank 0; returns True when early stopping says stop (on every rank)."""
        stop = False
        if info.is_main and val_set:
            t0 = time.perf_counter()
            metrics, probs = validate(
                weights(),
                val_set,
                device=dev,
                precision=precision,
                foreground_class=int(extra.get("foreground_class", 1)),
                tta=cfg.validation.tta,
                tile=cfg.validation.tile,
                keep=cfg.validation.overlays,
                thresholds=cfg.validation.thresholds,
                output_shift=extra.get("output_shift"),
                channels_last=use_cl,
            )
            value = metrics.get(metric_name)
            if value is None:
                raise ConfigError(f"validation.metric {metric_name!r}: not computed; available: {', '.join(sorted(metrics))}")
            improved = _is_better(value, state["best_metric"], mode)
            if improved:
                state["best_metric"] = float(value)
                state["best_step"] = step
                state["bad_validations"] = 0
                save_model(weights(), run_dir, extra=training_extra(step, **{metric_name: float(value)}))
            else:
                state["bad_validations"] = int(state["bad_validations"]) + 1
            metrics_log.write({"kind": "val", "step": step, "metrics": metrics, "best": improved, "seconds": round(time.perf_counter() - t0, 2)})
            bar.message("validation at step %d: %s%s" % (step, "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()), "  (best)" if improved else ""))
            for item, prob in zip(val_set, probs):
                plot_overlay(item.image, prob, _binary_target(item, extra), run_dir / "val" / f"{item.name}.png", title=f"{item.name} step {step}")
            plot_loss_curve(metrics_log.records, run_dir / "loss.png")
            patience = cfg.validation.patience
            stop = patience is not None and state["bad_validations"] >= patience
        stop = dist_util.broadcast_object(stop, info)
        return bool(stop)

    def calibrate(step: int) -> None:
        """Estimate the output shift on the training images (rank 0) and store it in the model files."""
        images = getattr(train_set, "images", None)
        if info.is_main and not images:
            log.warning("calibration.output_shift: the training set (%s) exposes no images; no shift estimated", type(train_set).__name__)
        elif info.is_main:
            t0 = time.perf_counter()
            shift, report = calibrate_model(weights(), images, cfg.calibration, device=dev, precision=precision, channels_last=use_cl)
            extra["output_shift"] = list(shift)
            metrics_log.write({"kind": "calibration", "step": step, **report, "seconds": round(time.perf_counter() - t0, 2)})
            bar.message("output shift %s (cross-entropy %.4f -> %.4f on %d training images)" % (
                list(shift), report["cross_entropy_unshifted"], report["cross_entropy_shifted"], len(report["images"])))
            save_model(weights(), run_dir / "model-last.safetensors", extra=training_extra(step))
            best = run_dir / "model.safetensors"
            if best.is_file():  # the best model of this run: the same annotations, the same shift
                best_model, meta = load_with_config(best)
                save_model(best_model, run_dir, extra={**meta.get("extra", {}), "output_shift": list(shift)})
        dist_util.barrier(info)

    bar = Progress(total, start, enabled=progress and info.is_main, every_s=rt.progress_every_s)
    status = "completed"
    signum = None
    step = start
    t_start = time.perf_counter()
    prior_s = float(state.get("elapsed_s") or 0.0)

    def elapsed() -> float:
        return prior_s + time.perf_counter() - t_start

    fit_time = cfg.schedule.fit_time_limit and time_limit_s is not None
    window_t, window_steps, running = time.perf_counter(), 0, []
    ddp_model.train()
    try:
        with _StopSignal() as stopper:
            batches = loader if rt.num_workers > 0 else prefetch(loader, cfg.sampling.prefetch)
            for batch in batches:
                position: float = step
                if fit_time and step >= cfg.schedule.warmup_steps:
                    # the warm-up counts steps; every rank takes the furthest position (equal rates)
                    position = dist_util.max_value(schedule_position(step, total, elapsed(), time_limit_s), dev, info)
                lr = lr_at(cfg.optim, cfg.schedule, position)
                set_lr(optimizer, lr)
                batch = _to_device(batch, dev, mem)
                with _seeded(step_seed(rt.seed, step, info.rank), dev):
                    with runtime.autocast(dev, precision):
                        logits = ddp_model(batch["image"])
                    loss = loss_fn(logits.float(), batch)
                    if rt.debug_nan_at_step is not None and step == rt.debug_nan_at_step:
                        loss = loss * float("nan")
                    value = float(loss.detach())
                    bad = dist_util.any_flag(not math.isfinite(value), dev, info)
                    if bad:
                        last = latest_checkpoint(ckpt_dir)
                        where = f"; the last good checkpoint is {last}" if last else "; no checkpoint was written yet"
                        raise TrainingError(
                            f"loss became {value} at step {step + 1}: training stopped{where}. "
                            "Lower optim.lr, add warm-up (schedule.warmup_steps) or gradient clipping (optim.grad_clip)"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(loss).backward()
                        scaler.unscale_(optimizer)
                        gnorm = clip_gradients(model, cfg.optim.grad_clip) if cfg.optim.grad_clip else None
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        loss.backward()
                        gnorm = clip_gradients(model, cfg.optim.grad_clip) if cfg.optim.grad_clip else None
                        optimizer.step()
                if averager is not None and position >= cfg.averaging.start * total:
                    averager.update(model)
                step += 1
                running.append(value)
                window_steps += 1
                if on_step is not None:
                    on_step(step, value)
                bar.update(step, value, lr)
                if step % rt.log_every == 0 or step == end:
                    now = time.perf_counter()
                    mean_loss = dist_util.mean_value(float(np.mean(running)), dev, info)
                    rec = {"kind": "train", "step": step, "loss": mean_loss, "lr": lr, "steps_per_s": round(window_steps / max(now - window_t, 1e-9), 4), "time_s": round(now - t_start, 2)}
                    if gnorm is not None:
                        rec["grad_norm"] = gnorm
                    metrics_log.write(rec)
                    window_t, window_steps, running = now, 0, []
                stop_now = dist_util.any_flag(stopper.signum is not None, dev, info)
                over_time = time_limit_s is not None and dist_util.any_flag(elapsed() > time_limit_s, dev, info)
                validate_now = cfg.validation.every > 0 and step % cfg.validation.every == 0 and step < end
                if validate_now and not stop_now:
                    if run_validation(step):
                        status = "early_stopped"
                        checkpoint(step)
                        break
                if (step % cfg.checkpoint.every == 0 and step < total) or stop_now:
                    checkpoint(step)
                if stop_now:
                    status, signum = "interrupted", stopper.signum
                    bar.close()
                    log.warning("stopped by signal %s after step %d; checkpoint written, resume with --resume %s", signum, step, run_dir)
                    break
                if over_time:
                    status = "time_limit"
                    break
        finished = status in ("time_limit", "early_stopped") or (status == "completed" and step >= total)
        if finished and cfg.calibration.output_shift:
            calibrate(step)
        if status == "completed" and step < total:  # stop_after reached before the end
            status = "stopped"
            if step % cfg.checkpoint.every != 0:
                checkpoint(step)
        elif status in ("completed", "time_limit"):
            if val_set:
                run_validation(step)
            checkpoint(step)
        if info.enabled:
            diff = dist_util.max_param_difference(model, dev, info)
            if info.is_main:
                metrics_log.write({"kind": "ddp_check", "step": step, "world_size": info.world_size, "max_param_diff": diff})
            if diff > 0:
                raise TrainingError(f"parameters differ across the {info.world_size} processes (max difference {diff:g})")
    finally:
        bar.close()
        if info.is_main and metrics_log.records:
            with contextlib.suppress(OSError, ValueError):
                plot_loss_curve(metrics_log.records, run_dir / "loss.png")
    run_s = time.perf_counter() - t_start
    return TrainResult(
        run_dir=run_dir,
        step=step,
        status=status,
        signal=signum,
        best_metric=state["best_metric"],
        best_step=state["best_step"],
        steps_per_s=(step - start) / run_s if run_s > 0 else 0.0,
        history=list(metrics_log.records),
    )


def _binary_target(item: Any, extra: Mapping[str, Any]) -> np.ndarray | None:
    target = getattr(item, "target", None)
    if target is None:
        return None
    return np.asarray(target) == int(extra.get("foreground_class", 1))
