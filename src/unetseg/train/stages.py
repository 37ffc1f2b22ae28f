"""The named stages of :func:`unetseg.train.loop.fit`, each acting on one explicit :class:`RunState`.

``setup_run`` (device, folder, optimiser, resume) -> per batch ``train_step`` and
``after_step`` (log, validate, checkpoint, stop) -> ``finish_run`` (calibrate, final
validation and checkpoint, DDP check) -> ``close_run``. The state object holds everything that
changes during a run; nothing is shared through closures.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .. import runtime
from ..atomic import atomic_path
from ..config import dump_config
from ..errors import ConfigError, DiskFullError, TrainingError
from ..losses import build_loss
from ..models import ModelCard, load_with_config
from ..models import save as save_model
from . import distributed as dist_util
from .averaging import WeightAverage
from .batchnorm import recompute_statistics, refresh_indices, refresh_source
from .calibrate import calibrate_model
from .checkpoint import latest_checkpoint, load_checkpoint, read_averaged, save_checkpoint
from .config import TrainConfig
from .optim import build_optimizer, clip_gradients, lr_at, schedule_position, set_lr
from .plots import plot_loss_curve, plot_overlay, read_metrics
from .progress import Progress
from .validate import metric_mode, validate

log = logging.getLogger(__name__)


@contextlib.contextmanager
def seeded_rng(seed: int, device: torch.device):
    """The torch RNG (and CUDA's on a CUDA device) seeded with ``seed`` inside, restored after."""
    devices = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.random.default_generator.manual_seed(seed)
        if device.type == "cuda":
            torch.cuda.manual_seed(seed)
        yield


class MetricsLog:
    """``metrics.jsonl`` of a run (written on the main rank), and its records in memory."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled
        self.records: list[dict] = read_metrics(path) if enabled else []

    def write(self, record: dict) -> None:
        self.records.append(record)
        if self.enabled:
            try:
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(record) + "\n")
                    fh.flush()
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise DiskFullError(f"{self.path}: no space left on the device for the next record "
                                        f"({len(json.dumps(record)) + 1} bytes)") from exc
                raise


@dataclass
class RunState:
    """Everything a training run holds and changes, in one place."""

    cfg: TrainConfig
    run_dir: Path
    info: dist_util.DistInfo
    device: torch.device
    precision: str
    memory_format: torch.memory_format
    channels_last: bool
    model: nn.Module
    optimizer: torch.optim.Optimizer
    averager: WeightAverage | None
    card: ModelCard
    train_set: Dataset
    val_set: Sequence[Any]
    time_limit_s: float | None
    start: int = 0
    end: int = 0
    step: int = 0
    ddp_model: nn.Module | None = None
    loss_fn: Callable[..., Tensor] | None = None
    scaler: Any = None
    metrics: MetricsLog | None = None
    bar: Progress | None = None
    best_metric: float | None = None
    best_step: int | None = None
    bad_validations: int = 0
    bn_step: int | None = None  # the step whose batch-norm statistics were last recomputed
    prior_s: float = 0.0  # training time before a resume
    t_start: float = field(default_factory=time.perf_counter)
    status: str = "completed"
    signum: int | None = None
    window: dict[str, Any] = field(default_factory=lambda: _new_window(time.perf_counter()))

    @property
    def total(self) -> int:
        return self.cfg.schedule.steps

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    def elapsed(self) -> float:
        """Training wall-clock seconds, counted over resumes."""
        return self.prior_s + time.perf_counter() - self.t_start

    def weights(self) -> nn.Module:
        """The network validated, calibrated and saved: the weight average once it has started."""
        return self.averager.module if self.averager is not None and self.averager.count > 0 else self.model

    def history(self) -> dict[str, Any]:
        """What a checkpoint stores to continue validation bookkeeping and time limits."""
        return {"best_metric": self.best_metric, "best_step": self.best_step, "bad_validations": self.bad_validations,
                "elapsed_s": self.elapsed()}

    def card_at(self, step: int, **metrics: float) -> ModelCard:
        """The model card of the weights at ``step`` (with their validation ``metrics``)."""
        averaged = self.averager.count if self.averager is not None else None
        return self.card.with_training(precision=self.precision, step=step, averaged_steps=averaged, metrics=dict(metrics))


def _runtime(cfg: TrainConfig, device: Any, spatial_dims: int):
    """(device, distributed info, precision, channels-last?, memory format), threads set."""
    rt = cfg.runtime
    dev = runtime.resolve_device(device if device is not None else rt.device)
    info = dist_util.init(dev, timeout_s=rt.collective_timeout_s)
    dev = dist_util.device_for(dev, info)
    if dev.type == "cpu":
        runtime.configure_allocator()
    if rt.threads is not None:
        runtime.configure_threads(rt.threads)
    elif dev.type == "cpu" and info.enabled:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        runtime.configure_threads(max(1, cpus // info.world_size))
    precision = runtime.resolve_precision(rt.precision, dev)  # "auto" on a CPU is measured: threads first
    use_cl = runtime.training_channels_last(rt.channels_last, dev, precision, spatial_dims)
    mem = runtime.memory_format(dev, spatial_dims) if use_cl else torch.contiguous_format
    return dev, info, precision, use_cl, mem


def setup_run(cfg: TrainConfig, model: nn.Module, train_set: Dataset, run_dir: Path, *, val_set: Sequence[Any], card: ModelCard,
              resume: bool, device: Any, progress: bool, stop_after: int | None, time_limit_s: float | None) -> RunState:
    """Stage 1: device and precision, the run folder, the optimiser, resume or a fresh start."""
    dev, info, precision, use_cl, mem = _runtime(cfg, device, int(getattr(model, "spatial_dims", 2)))
    if info.is_main:
        (run_dir / "val").mkdir(parents=True, exist_ok=True)
    dist_util.barrier(info)
    model = model.to(dev)
    if use_cl:
        model = model.to(memory_format=mem)
    averager = WeightAverage(model, cfg.averaging.decay) if cfg.averaging.enabled else None
    state = RunState(cfg, run_dir, info, dev, precision, mem, use_cl, model, build_optimizer(cfg.optim, model.parameters()),
                     averager, card, train_set, val_set, time_limit_s)
    if resume:
        _resume(state)
    elif info.is_main:
        dump_config(cfg, run_dir / "config.yaml")
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)
    dist_util.barrier(info)
    state.end = cfg.schedule.steps if stop_after is None else min(cfg.schedule.steps, stop_after)
    state.step = state.start
    state.ddp_model = dist_util.wrap(model, dev, info)
    if cfg.runtime.compile:  # the step's forward and backward; checkpoints and validation use the eager module
        state.ddp_model = torch.compile(state.ddp_model)
    state.loss_fn = build_loss(cfg.loss, num_classes=int(getattr(model, "num_classes", 0)),
                               affinity_offsets=tuple(getattr(model, "affinity_offsets", ())))
    state.scaler = torch.amp.GradScaler(dev.type) if precision == "fp16" and dev.type == "cuda" else None
    state.metrics = MetricsLog(run_dir / "metrics.jsonl", info.is_main)
    state.metrics.write(_runtime_record(cfg, dev, precision, use_cl))
    time_left = None if time_limit_s is None else max(0.0, time_limit_s - state.prior_s)
    state.bar = Progress(cfg.schedule.steps, state.start, enabled=progress and info.is_main, every_s=cfg.runtime.progress_every_s,
                         time_left_s=time_left)
    state.t_start = time.perf_counter()
    return state


def _runtime_record(cfg: TrainConfig, dev: torch.device, precision: str, use_cl: bool) -> dict[str, Any]:
    """The ``runtime`` line of metrics.jsonl: what this run (or resumed part) computes in, and on a
    CPU its flags and, where ``auto`` was decided by measurement, the probe's timings."""
    rec: dict[str, Any] = {"kind": "runtime", "device": str(dev), "precision": precision, "channels_last": use_cl,
                           "threads": torch.get_num_threads()}
    if dev.type == "cpu":
        rec.update(runtime.cpu_flags())
        if "auto" in (cfg.runtime.precision, cfg.runtime.channels_last):
            rec["probe_s"] = dataclasses.asdict(runtime.cpu_speed())
    return rec


def _resume(state: RunState) -> None:
    path = latest_checkpoint(state.ckpt_dir)
    if path is None:
        raise TrainingError(f"{state.ckpt_dir}: no complete checkpoint to resume from")
    meta = load_checkpoint(path, state.model, state.optimizer)
    state.start = int(meta["step"])
    saved = meta.get("state", {})
    if state.averager is not None:
        tensors = read_averaged(path)
        if tensors is None:
            raise TrainingError(f"{path}: holds no weight average, but averaging.enabled is true in this config")
        state.averager.load(tensors, int(saved.get("averaging_count", 0)))
    history = saved.get("history", {})
    state.best_metric, state.best_step = history.get("best_metric"), history.get("best_step")
    state.bad_validations = int(history.get("bad_validations", 0))
    state.prior_s = float(history.get("elapsed_s") or 0.0)
    if state.info.is_main:
        _trim_metrics(state.run_dir / "metrics.jsonl", state.start)
    log.info("resuming from %s (step %d of %d)", path, state.start, state.total)


def _trim_metrics(path: Path, step: int) -> None:
    """Drop metrics lines written after the checkpoint we resume from."""
    if path.is_file():
        keep = [json.dumps(r) for r in read_metrics(path) if int(r.get("step", 0)) <= step]
        with atomic_path(path) as tmp:
            tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


def _to_device(batch: Mapping[str, Tensor], device: torch.device, mem: torch.memory_format) -> dict[str, Tensor]:
    out = {}
    for k, v in batch.items():
        if isinstance(v, Tensor):
            v = v.to(device, non_blocking=True)
            out[k] = v.contiguous(memory_format=mem) if k == "image" and v.dim() == 4 else v
    return out


def _check_loss(state: RunState, value: float) -> None:
    if dist_util.any_flag(not math.isfinite(value), state.device, state.info):
        last = latest_checkpoint(state.ckpt_dir)
        where = f"; the last good checkpoint is {last}" if last else "; no checkpoint was written yet"
        raise TrainingError(
            f"loss became {value} at step {state.step + 1}: training stopped{where}. "
            "Lower optim.lr, add warm-up (schedule.warmup_steps) or gradient clipping (optim.grad_clip)"
        )


def schedule_point(state: RunState) -> float:
    """Where the learning-rate schedule stands: the step, or (``schedule.fit_time_limit``) the
    share of the time limit used, whichever is further; every rank takes the furthest."""
    cfg = state.cfg
    if not (cfg.schedule.fit_time_limit and state.time_limit_s is not None) or state.step < cfg.schedule.warmup_steps:
        return float(state.step)
    position = schedule_position(state.step, state.total, state.elapsed(), state.time_limit_s)
    return dist_util.max_value(position, state.device, state.info)


def train_step(state: RunState, batch: Mapping[str, Tensor], seeded: Callable[[], Any]) -> tuple[float, float, float | None]:
    """Stage 2: one optimiser step on ``batch`` under the step's seeded RNG; returns (loss, lr, grad norm)."""
    cfg, opt = state.cfg, state.optimizer
    position = schedule_point(state)
    lr = lr_at(cfg.optim, cfg.schedule, position)
    set_lr(opt, lr)
    batch = _to_device(batch, state.device, state.memory_format)
    clip = cfg.optim.grad_clip
    with seeded():
        with runtime.autocast(state.device, state.precision):
            logits = state.ddp_model(batch["image"])
        loss = state.loss_fn(logits.float(), batch)
        if cfg.runtime.debug_nan_at_step is not None and state.step == cfg.runtime.debug_nan_at_step:
            loss = loss * float("nan")
        value = float(loss.detach())
        _check_loss(state, value)
        opt.zero_grad(set_to_none=True)
        if state.scaler is not None:
            state.scaler.scale(loss).backward()
            state.scaler.unscale_(opt)
            gnorm = clip_gradients(state.model, clip) if clip else None
            state.scaler.step(opt)
            state.scaler.update()
        else:
            loss.backward()
            gnorm = clip_gradients(state.model, clip) if clip else None
            opt.step()
    if state.averager is not None and position >= cfg.averaging.start * state.total:
        state.averager.update(state.model)
    state.step += 1
    return value, lr, gnorm


def waited_for(batches: Iterable[Any], state: RunState) -> Iterator[Any]:
    """``batches``, adding the time the loop waits for each one to ``state.window["wait"]``: the
    ``data_wait`` of the ``train`` lines (the share of the time that data loading was not hidden)."""
    it = iter(batches)
    while True:
        t = time.perf_counter()
        try:
            batch = next(it)
        except StopIteration:
            return
        state.window["wait"] += time.perf_counter() - t
        yield batch


def _new_window(t: float) -> dict[str, Any]:
    """What the ``train`` lines of metrics.jsonl sum up since time ``t``: steps, losses, data wait."""
    return {"t": t, "steps": 0, "losses": [], "wait": 0.0}


def record_step(state: RunState, value: float, lr: float, gnorm: float | None) -> None:
    """Progress bar every step; a ``train`` line in metrics.jsonl every ``runtime.log_every`` steps."""
    w = state.window
    w["losses"].append(value)
    w["steps"] += 1
    state.bar.update(state.step, value, lr)
    if state.step % state.cfg.runtime.log_every == 0 or state.step == state.end:
        now = time.perf_counter()
        mean_loss = dist_util.mean_value(float(np.mean(w["losses"])), state.device, state.info)
        rec = {"kind": "train", "step": state.step, "loss": mean_loss, "lr": lr,
               "steps_per_s": round(w["steps"] / max(now - w["t"], 1e-9), 4), "time_s": round(now - state.t_start, 2),
               "data_wait": round(w["wait"] / max(now - w["t"], 1e-9), 4)}
        if gnorm is not None:
            rec["grad_norm"] = gnorm
        state.metrics.write(rec)
        state.window = _new_window(now)


def after_step(state: RunState, signum: int | None) -> bool:
    """Stage 3: validate, checkpoint, or stop (signal, time limit, early stopping); True to stop."""
    cfg, step, dev, info = state.cfg, state.step, state.device, state.info
    stop_now = dist_util.any_flag(signum is not None, dev, info)
    over_time = state.time_limit_s is not None and dist_util.any_flag(state.elapsed() > state.time_limit_s, dev, info)
    if cfg.validation.every > 0 and step % cfg.validation.every == 0 and step < state.end and not stop_now:
        if validate_stage(state):
            state.status = "early_stopped"
            checkpoint_stage(state)
            return True
    if (step % cfg.checkpoint.every == 0 and step < state.total) or stop_now:
        checkpoint_stage(state)
    if stop_now:
        state.status, state.signum = "interrupted", signum
        state.bar.close()
        log.warning("stopped by signal %s after step %d; checkpoint written, resume with --resume %s", signum, step, state.run_dir)
        return True
    if over_time:
        state.status = "time_limit"
        return True
    return False


def checkpoint_stage(state: RunState) -> None:
    """A checkpoint (weights, optimiser, step, history) and ``model-last`` (and ``model`` when not validating)."""
    if state.info.is_main:
        cfg, info = state.cfg, state.info
        ckpt_state = {"history": state.history(), "seed": cfg.runtime.seed, "world_size": info.world_size, "batch_size": cfg.batch_size}
        if state.averager is not None:
            ckpt_state["averaging_count"] = state.averager.count
        save_checkpoint(state.ckpt_dir, state.step, state.model, state.optimizer, state=ckpt_state, keep_last=cfg.checkpoint.keep_last,
                        averaged=state.averager.state_dict() if state.averager is not None else None)
        save_model(state.weights(), state.run_dir / "model-last.safetensors", card=state.card_at(state.step))
        if not state.val_set:
            save_model(state.weights(), state.run_dir, card=state.card_at(state.step))
    dist_util.barrier(state.info)


def _is_better(value: float | None, best: float | None, mode: str) -> bool:
    if value is None or not math.isfinite(value):
        return False
    return best is None or (value > best if mode == "max" else value < best)


def batch_norm_stage(state: RunState) -> None:
    """Recompute the batch-norm statistics of the weights in use over un-augmented training tiles (every rank alike)."""
    tiles = state.cfg.batch_norm.refresh_tiles
    if tiles == 0 or state.bn_step == state.step:
        return
    t0 = time.perf_counter()

    source = refresh_source(state.train_set)

    def batches() -> list[Tensor]:
        stacked = [torch.stack([source[i]["image"] for i in idx]) for idx in refresh_indices(state.step, tiles, state.cfg.batch_size, state.info.world_size)]
        return [b.to(state.device, memory_format=state.memory_format) for b in stacked]

    seed = int(np.random.SeedSequence([state.cfg.runtime.seed, state.step, 0xB4]).generate_state(1)[0])
    with seeded_rng(seed, state.device), runtime.autocast(state.device, state.precision):
        done = recompute_statistics(state.weights(), batches)
    state.bn_step = state.step
    if done:
        state.metrics.write({"kind": "batch_norm", "step": state.step, "tiles": tiles, "seconds": round(time.perf_counter() - t0, 2)})


def validate_stage(state: RunState) -> bool:
    """Validate on rank 0, keep the best model, draw overlays; True when early stopping says stop."""
    stop = False
    if state.val_set:
        batch_norm_stage(state)
    if state.info.is_main and state.val_set:
        vc, step, card = state.cfg.validation, state.step, state.card
        t0 = time.perf_counter()
        metrics, probs = validate(state.weights(), state.val_set, device=state.device, precision=state.precision,
                                  foreground_class=card.foreground_class, tta=vc.tta, tile=vc.tile, keep=vc.overlays,
                                  thresholds=vc.thresholds, output_shift=card.output_shift, channels_last=state.channels_last)
        value = metrics.get(vc.metric)
        if value is None:
            raise ConfigError(f"validation.metric {vc.metric!r}: not computed; available: {', '.join(sorted(metrics))}")
        improved = _is_better(value, state.best_metric, metric_mode(vc.metric, vc.mode))
        if improved:
            state.best_metric, state.best_step, state.bad_validations = float(value), step, 0
            save_model(state.weights(), state.run_dir, card=state.card_at(step, **{vc.metric: float(value)}))
        else:
            state.bad_validations += 1
        state.metrics.write({"kind": "val", "step": step, "metrics": metrics, "best": improved, "seconds": round(time.perf_counter() - t0, 2)})
        state.bar.message("validation at step %d: %s%s" % (step, "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()), "  (best)" if improved else ""))
        for item, prob in zip(state.val_set, probs):
            target = getattr(item, "target", None)
            truth = None if target is None else np.asarray(target) == card.foreground_class
            plot_overlay(item.image, prob, truth, state.run_dir / "val" / f"{item.name}.png", title=f"{item.name} step {step}")
        plot_loss_curve(state.metrics.records, state.run_dir / "loss.png")
        stop = vc.patience is not None and state.bad_validations >= vc.patience
    return bool(dist_util.broadcast_object(stop, state.info))


def calibrate_stage(state: RunState) -> None:
    """Estimate the output shift on the training images (rank 0) and store it in the model files."""
    images = getattr(state.train_set, "images", None)
    if state.info.is_main and not images:
        log.warning("calibration.output_shift: the training set (%s) exposes no images; no shift estimated", type(state.train_set).__name__)
    elif state.info.is_main:
        t0 = time.perf_counter()
        shift, report = calibrate_model(state.weights(), images, state.cfg.calibration, device=state.device, precision=state.precision,
                                        channels_last=state.channels_last)
        state.card = dataclasses.replace(state.card, output_shift=tuple(shift))
        state.metrics.write({"kind": "calibration", "step": state.step, **report, "seconds": round(time.perf_counter() - t0, 2)})
        state.bar.message("output shift %s (cross-entropy %.4f -> %.4f on %d training images)" % (
            list(shift), report["cross_entropy_unshifted"], report["cross_entropy_shifted"], len(report["images"])))
        save_model(state.weights(), state.run_dir / "model-last.safetensors", card=state.card_at(state.step))
        best = state.run_dir / "model.safetensors"
        if best.is_file():  # the best model of this run: the same annotations, the same shift
            best_model, meta = load_with_config(best)
            save_model(best_model, state.run_dir, card=dataclasses.replace(meta["card"], output_shift=tuple(shift)))
    dist_util.barrier(state.info)


def finish_run(state: RunState) -> None:
    """Stage 4: calibrate, validate and checkpoint the final weights, check that DDP ranks agree."""
    status, step, total = state.status, state.step, state.total
    finished = status in ("time_limit", "early_stopped") or (status == "completed" and step >= total)
    if finished:
        batch_norm_stage(state)
    if finished and state.cfg.calibration.output_shift:
        calibrate_stage(state)
    if status == "completed" and step < total:  # stop_after reached before the end
        state.status = "stopped"
        if step % state.cfg.checkpoint.every != 0:
            checkpoint_stage(state)
    elif status in ("completed", "time_limit"):
        if state.val_set:
            validate_stage(state)
        checkpoint_stage(state)
    info = state.info
    if info.enabled:
        diff = dist_util.max_param_difference(state.model, state.device, info)
        if info.is_main:
            state.metrics.write({"kind": "ddp_check", "step": step, "world_size": info.world_size, "max_param_diff": diff})
        if diff > 0:
            raise TrainingError(f"parameters differ across the {info.world_size} processes (max difference {diff:g})")


def close_run(state: RunState) -> None:
    """Always: close the progress bar and draw the loss curve of what was logged."""
    state.bar.close()
    if state.info.is_main and state.metrics.records:
        with contextlib.suppress(OSError, ValueError):
            plot_loss_curve(state.metrics.records, state.run_dir / "loss.png")
