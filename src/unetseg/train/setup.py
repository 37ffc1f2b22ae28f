"""From a :class:`TrainConfig` to a running :func:`fit`: data, model, model-file metadata."""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .. import runtime
from ..data import LabeledData, LabeledImage, TileDataset, card_for_target, load_labeled
from ..errors import ConfigError, InputError, ModelFileError
from ..models import ARCHITECTURES, build
from . import distributed as dist_util
from .config import SplitConfig, TrainConfig
from .init import init_from
from .loop import TrainResult, fit, seed_model_init
from .pretrain import pretrain, pretrained_origin

log = logging.getLogger(__name__)


def resolve_path(path: str, config_path: str | os.PathLike | None, key: str) -> Path:
    """A recipe path: as given (absolute or from the working directory), else relative to the
    config file's folder, else to that folder's parent (the repository root for ``configs/``)."""
    if not path:
        raise ConfigError(f"{key}: a dataset path is required")
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or config_path is None:
        return p
    base = Path(config_path).resolve().parent
    for root in (base, base.parent):
        if (root / p).exists():
            return (root / p).resolve()
    return p


def select(items: list[LabeledImage], patterns: list[str] | None, key: str) -> list[LabeledImage]:
    """Samples whose name matches any glob of ``patterns`` (all when None).

    Examples
    --------
    >>> import numpy as np
    >>> mk = lambda n: LabeledImage(n, np.zeros((1, 1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), np.zeros((1, 1), bool))
    >>> [i.name for i in select([mk("00"), mk("19"), mk("20")], ["0?", "1?"], "train_data.select")]
    ['00', '19']
    """
    if patterns is None:
        return items
    out = [it for it in items if any(fnmatch.fnmatchcase(it.name, p) for p in patterns)]
    if not out:
        names = ", ".join(it.name for it in items[:6])
        raise ConfigError(f"{key}: {patterns} matches no sample (names look like: {names})")
    return out


def load_split(
    split: SplitConfig, cfg: TrainConfig, config_path, key: str, *, progress: bool = False, cache: dict | None = None
) -> LabeledData:
    """The selected samples of one split and their resolved target (``cache`` shares one read
    between splits of a folder)."""
    path = resolve_path(split.path, config_path, f"{key}.path")
    if not path.exists():
        raise InputError(f"{key}.path: {path} does not exist")
    data_cfg = cfg.data if split.labels is None else dataclasses.replace(cfg.data, labels=split.labels)
    ident = (str(path.resolve()), split.labels)
    if cache is not None and ident in cache:
        data = cache[ident]
    else:
        data = load_labeled(path, data_cfg, progress=progress)
        if cache is not None:
            cache[ident] = data
    return dataclasses.replace(data, items=select(data.items, split.select, f"{key}.select"))


def model_args(cfg: TrainConfig, in_channels: int, num_classes: int) -> dict[str, Any]:
    """The model's constructor arguments with channels/classes taken from the data."""
    args = dict(cfg.model.args)
    for k, v in (("in_channels", in_channels), ("num_classes", num_classes)):
        if k in args and int(args[k]) != v:
            raise ConfigError(f"model.args.{k}: {args[k]} does not match the data ({v})")
        args[k] = v
    if cfg.model.arch == "UNet":
        args.setdefault("spatial_dims", cfg.data.spatial_dims)
    return args


def check_model_config(cfg: TrainConfig, config_path: str | os.PathLike | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Check ``model`` and ``tile`` before any data is read; return the (input, output) tile.

    A model with the recipe's arguments (channels and classes as the config says, or 1 and 2)
    is built once: a misspelt or badly typed argument or a tile the network cannot produce is a
    :class:`~unetseg.errors.ConfigError` naming the key.
    """
    if cfg.model.arch not in ARCHITECTURES:
        raise ConfigError(f"model.arch: {cfg.model.arch!r} is not one of {', '.join(ARCHITECTURES)}")
    accepted = set(inspect.signature(ARCHITECTURES[cfg.model.arch].__init__).parameters) - {"self"}
    unknown = sorted(set(cfg.model.args) - accepted)
    if unknown:
        raise ConfigError(f"model.args.{unknown[0]}: unknown argument of {cfg.model.arch} (accepted: {', '.join(sorted(accepted))})")
    target = cfg.data.target
    args = dict(cfg.model.args)
    args.setdefault("in_channels", cfg.data.in_channels or 1)
    args.setdefault("num_classes", target.num_classes)
    if cfg.model.arch == "UNet":
        args.setdefault("spatial_dims", cfg.data.spatial_dims)
    try:
        with torch.device("meta"):  # checks arguments and tile arithmetic without allocating weights
            probe = build(cfg.model.arch, args)
    except ModelFileError as exc:
        raise ConfigError(f"model.args: {exc}") from exc
    if cfg.model.init:
        init = resolve_path(cfg.model.init, config_path, "model.init")
        if not init.exists():
            raise ConfigError(f"model.init: {init} does not exist (expected a run folder or a model .safetensors file)")
    return tile_shapes(cfg, probe)


def tile_shapes(cfg: TrainConfig, model) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(input, output)`` tile of ``model`` for the recipe's ``tile`` (its output size)."""
    out_shape = tuple(int(t) for t in cfg.tile)
    if len(out_shape) != cfg.data.spatial_dims:
        raise ConfigError(f"tile: {list(out_shape)} has {len(out_shape)} sizes for {cfg.data.spatial_dims}D data")
    try:
        in_shape = tuple(model.input_shape_for(out_shape))
        real_out = tuple(model.output_shape(in_shape))
    except (ValueError, InputError) as exc:
        raise ConfigError(f"tile: {list(out_shape)} is not a valid output tile for this model ({exc})") from exc
    if real_out != out_shape:
        raise ConfigError(f"tile: {list(out_shape)} is not a valid output tile; the nearest valid one is {list(real_out)}")
    return in_shape, out_shape


def train_from_config(
    cfg: TrainConfig,
    out: str | os.PathLike,
    *,
    config_path: str | os.PathLike | None = None,
    resume: bool = False,
    device: str | None = None,
    progress: bool = False,
    time_limit_s: float | None = None,
    stop_after: int | None = None,
    on_step=None,
) -> TrainResult:
    """Check the recipe, load its data, build its model and train it into the run folder ``out``
    (after the recipe's ``pretrain`` stage, :mod:`unetseg.train.pretrain`, unless resuming)."""
    in_shape, out_shape = check_model_config(cfg, config_path)  # every config error before any data is read
    info = dist_util.from_env()
    if time_limit_s is None and cfg.runtime.max_minutes is not None:
        time_limit_s = cfg.runtime.max_minutes * 60
    cache: dict = {}
    train = load_split(cfg.train_data, cfg, config_path, "train_data", progress=progress and info.is_main, cache=cache)
    val_items: list[LabeledImage] = []
    if cfg.val_data is not None and cfg.val_data.path:
        val_items = load_split(cfg.val_data, cfg, config_path, "val_data", cache=cache).items
    origin = pretrained_origin(cfg.pretrain, Path(out)) if cfg.pretrain.synthetic and resume else cfg.model.init
    if cfg.pretrain.synthetic and not resume:  # after the recipe's data loaded: its errors come first
        if info.world_size > 1:
            raise ConfigError("pretrain runs in one process: pre-train with one process, then give its model as model.init")
        cfg, time_limit_s, origin = pretrain(cfg, Path(out), time_limit_s=time_limit_s, device=device, progress=progress,
                                             train=train_from_config)
    args = model_args(cfg, int(train.items[0].image.shape[0]), train.target.num_classes)
    with seed_model_init(cfg.runtime.seed):
        model = build(cfg.model.arch, args)
    if cfg.model.init and not resume:
        init = resolve_path(cfg.model.init, config_path, "model.init")
        fresh = init_from(model, init, reinit_head=cfg.model.reinit_head)
        log.info("model.init: weights from %s%s", init, f" (re-initialised: {', '.join(fresh)})" if fresh else "")
    train_set = training_tiles(cfg, train.items, in_shape, out_shape)
    card = dataclasses.replace(card_for_target(train.target, cfg.data.normalization), postprocess=cfg.postprocess).with_training(
        train=tuple(it.name for it in train.items), val=tuple(it.name for it in val_items), tile=out_shape, data=cfg.train_data.path,
        init=origin,
    )
    log.info(
        "training %s on %d image(s), validating on %d; input tile %s -> output %s, batch %d, %d steps",
        cfg.model.arch, len(train.items), len(val_items), in_shape, out_shape, cfg.batch_size, cfg.schedule.steps,
    )
    result = fit(cfg, model, train_set, out, val_set=val_items, card=card, resume=resume, device=device, progress=progress,
                 time_limit_s=time_limit_s, stop_after=stop_after, on_step=on_step)
    if cfg.validation.check_backends and val_items and info.is_main and result.status in ("completed", "time_limit", "early_stopped"):
        _check_backends(Path(out), runtime.resolve_device(device if device is not None else cfg.runtime.device))
    return result


def training_tiles(cfg: TrainConfig, items: Sequence[LabeledImage], in_shape: Sequence[int], out_shape: Sequence[int]) -> TileDataset:
    """The recipe's random training tiles of ``items`` (one rank: the loader picks each rank's
    indices), carrying the skeletons its Skeleton Recall term recalls, if it has one.

    Examples
    --------
    >>> import numpy as np
    >>> from unetseg.losses import LossConfig
    >>> img = LabeledImage("a", np.zeros((1, 40, 40), np.float32), np.zeros((40, 40), np.int64),
    ...                    np.ones((40, 40), np.float32), np.zeros((40, 40), bool))
    >>> cfg = TrainConfig(loss=LossConfig(skeleton_weight=1.0, skeleton_classes=[0, 1]))
    >>> tuple(training_tiles(cfg, [img], (36, 36), (20, 20))[0]["skeleton"].shape)
    (2, 20, 20)
    """
    samp = cfg.sampling
    return TileDataset(
        items, in_shape, out_shape, augment=cfg.augment if samp.augment else None, samples_per_epoch=10**12,
        foreground_bias=samp.foreground_bias, border_bias=samp.border_bias, border_threshold=samp.border_threshold,
        seed=cfg.runtime.seed, rank=0, world_size=1, skeleton_classes=cfg.loss.recalled_classes,
    )


def _check_backends(run_dir: Path, device) -> None:
    """The backend check of a finished run (CPU only: it times CPU backends)."""
    from ..backend_check import check_backends

    if device.type != "cpu":
        log.info("validation.check_backends: skipped on %s (the check measures CPU backends)", device)
        return
    record = check_backends(run_dir)
    log.info("backends: %s is the fastest within the accuracy rule on this CPU (%s)", record["choice"], run_dir / "backends.json")


def steps_for_budget(
    cfg: TrainConfig,
    minutes: float,
    *,
    config_path: str | os.PathLike | None = None,
    probe_steps: int = 25,
    warmup: int = 8,
    fill: float = 0.97,
    device: str | None = None,
) -> tuple[int, float]:
    """How many steps of ``cfg`` fit in ``minutes`` on this machine: ``(steps, steps_per_s)``.

    Trains ``warmup + probe_steps`` steps into a temporary run folder (deleted afterwards) and
    times the last ``probe_steps``. Setting ``schedule.steps`` to the result makes a decaying
    learning-rate schedule end when the time budget does, instead of being cut off while the rate
    is still high (``runtime.max_minutes`` alone stops training but does not shorten the
    schedule). Short probes can misjudge the speed of the whole run.
    ``fill`` leaves a margin for validation and checkpoints.
    """
    if minutes <= 0 or probe_steps < 1 or warmup < 0:
        raise ConfigError(f"steps_for_budget: minutes {minutes}, probe_steps {probe_steps}, warmup {warmup} must be positive")
    stamps: dict[int, float] = {}
    probe = dataclasses.replace(
        cfg,
        val_data=None,
        validation=dataclasses.replace(cfg.validation, every=0),
        checkpoint=dataclasses.replace(cfg.checkpoint, every=10**9),
        schedule=dataclasses.replace(cfg.schedule, steps=10**6),
        runtime=dataclasses.replace(cfg.runtime, max_minutes=None),
    )
    with tempfile.TemporaryDirectory(prefix="unetseg-probe-") as tmp:
        train_from_config(probe, Path(tmp) / "run", config_path=config_path, device=device, stop_after=warmup + probe_steps,
                          on_step=lambda step, _loss: stamps.__setitem__(step, time.perf_counter()))
    rate = probe_steps / (stamps[warmup + probe_steps] - stamps[warmup])
    return max(10, int(rate * minutes * 60 * fill)), rate
