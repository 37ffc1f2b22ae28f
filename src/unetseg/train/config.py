"""The training configuration: one frozen dataclass per YAML section.

A config file looks like::

    model: {arch: UNet, args: {base_channels: 16, depth: 4}}
    train_data: {path: ../shared/data/isbi2012, select: ["0?", "1?"]}
    val_data: {path: ../shared/data/isbi2012, select: ["2?"]}
    data: {...}          # unetseg.data.DataConfig (targets, weight maps, normalisation)
    augment: {...}       # unetseg.augment.AugmentConfig
    sampling: {foreground_bias: 0.0, border_bias: 0.0, augment: true}
    optim: {name: sgd, lr: 0.5, momentum: 0.99}
    schedule: {steps: 4000, name: poly, warmup_steps: 200}
    loss: {name: ce, reduction: mean}
    validation: {every: 500, metric: v_rand}
    checkpoint: {every: 500, keep_last: 3}
    calibration: {output_shift: false}  # unetseg.train.calibrate.CalibrationConfig
    averaging: {enabled: false}          # unetseg.train.averaging.AveragingConfig
    batch_norm: {refresh_tiles: 0}       # unetseg.train.batchnorm.BatchNormConfig
    postprocess: {split: none, min_size: 0}  # unetseg.models.card.Postprocess: --output labels defaults
    pretrain: {synthetic: null}          # unetseg.train.pretrain.PretrainConfig
    runtime: {device: auto, precision: auto, seed: 0}
    batch_size: 1
    tile: [388, 388]     # output tile of one sample; the input adds the model's halo

Every key is checked: unknown keys and wrong types raise ConfigError naming ``section.key``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from ..augment import AugmentConfig
from ..config import from_dict, load_config
from ..data import DataConfig
from ..errors import ConfigError
from ..losses import LossConfig
from ..models.card import Postprocess
from .averaging import AveragingConfig
from .batchnorm import BatchNormConfig
from .calibrate import CalibrationConfig
from .checkpoint import CheckpointConfig
from .optim import OptimConfig, ScheduleConfig
from .pretrain import PretrainConfig


@dataclass(frozen=True)
class ModelConfig:
    """Which network: an architecture of :data:`unetseg.models.ARCHITECTURES` and its arguments.

    ``args`` are the constructor keyword arguments (``in_channels`` and ``num_classes`` default to
    what the data provide). ``init`` starts from a trained model (a run folder or model file:
    fine-tuning, :mod:`unetseg.train.init`); its architecture must match, except the class count
    when ``reinit_head`` re-initialises the output layer.
    """

    arch: str = "UNet"
    args: dict[str, Any] = field(default_factory=dict)
    init: str | None = None
    reinit_head: bool = False


@dataclass(frozen=True)
class SplitConfig:
    """Where a split's images are: a dataset path (any layout of :func:`unetseg.data.discover`)
    and optional name globs selecting samples (``["0?", "1?"]`` = ISBI sections 00-19).

    Relative paths are looked up from the working directory, then from the config file's folder
    and its parent (recipes in ``configs/`` use paths relative to the repository root).
    """

    path: str = ""
    select: list[str] | None = None
    labels: str | None = None


@dataclass(frozen=True)
class SamplingConfig:
    """How training tiles are drawn (see :class:`unetseg.data.TileDataset`).

    Attributes
    ----------
    augment : bool
        Apply the ``augment`` section (False: plain crops).
    foreground_bias, border_bias : float
        Probability of centring a tile on a foreground pixel / a high-weight border pixel.
    border_threshold : float
        Weight above which a pixel counts as border for ``border_bias``.
    prefetch : int
        Batches prepared ahead by a background thread (``runtime.num_workers == 0``).
    """

    augment: bool = True
    foreground_bias: float = 0.0
    border_bias: float = 0.0
    border_threshold: float = 3.0
    prefetch: int = 2


@dataclass(frozen=True)
class ValidationConfig:
    """Validation by full-image overlap-tile prediction on held-out images.

    Attributes
    ----------
    every : int
        Validate every this many steps (0: only at the end; validation needs validation images).
    metric : str
        What decides the best model: ``v_rand``, ``pixel_error``, ``dice`` or ``loss``.
    mode : {"auto", "max", "min"}
        Whether larger is better (``auto``: min for errors and loss, max otherwise).
    tta : bool
        8-fold test-time augmentation during validation (slower).
    tile : list of int, optional
        Output tile for validation prediction (default: the predictor's choice).
    patience : int, optional
        Early stopping: stop after this many validations without improvement.
    overlays : int
        How many validation images get an overlay PNG.
    thresholds : list of float
        Binarisation thresholds of the foreground probability; each metric is reported at its
        best one (like the ISBI protocol; class-weighted losses shift the best threshold).
    check_backends : bool
        After training on a CPU with ``val_data``, measure every inference backend against fp32
        on the validation images and record the fastest within the accuracy rule in
        ``RUN/backends.json`` (:func:`unetseg.backend_check.check_backends`; what ``unetseg
        predict`` uses by default). Costs a minute or so of compilation.
    """

    every: int = 500
    metric: str = "v_rand"
    mode: Literal["auto", "max", "min"] = "auto"
    tta: bool = False
    tile: list[int] | None = None
    patience: int | None = None
    overlays: int = 2
    thresholds: list[float] = field(default_factory=lambda: [0.5])
    check_backends: bool = False


@dataclass(frozen=True)
class RuntimeConfig:
    """Where and how fast.

    Attributes
    ----------
    device : str
        ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (the CLI's ``--device`` wins).
    precision : {"auto", "fp32", "bf16", "fp16"}
        ``auto``: bf16 autocast on recent GPUs, and on CPUs with native bf16 where a short
        probe at the start measures it at least 1.2x as fast as fp32; fp32 elsewhere
        (:func:`unetseg.runtime.resolve_precision`).
    channels_last : bool or "auto"
        Train in the channels-last memory format (2D and 3D networks). ``auto``: on CUDA and
        under bf16/fp16 autocast; for fp32 on a CPU where the same probe measures it faster
        (:func:`unetseg.runtime.training_channels_last`). Set both explicitly for runs that
        must repeat bit for bit on one machine: a probe near its threshold can decide either way.
    compile : bool
        Run the network of the training step through ``torch.compile`` (inductor, forward and
        backward; one graph for the fixed training tile). Off by default: on the 2-core
        AVX-512-BF16 EPYC it ran the CPU recipe no faster than eager (``benchmarks/train_speed.py``).
    threads : int, optional
        PyTorch intra-op threads per process (default: the CPUs available / processes).
    num_workers : int
        Data-loading worker processes (0: load in the training process).
    seed : int
        Seeds everything random: initial weights, sampling, augmentation, dropout.
    log_every : int
        Write a metrics line every this many steps.
    progress_every_s : float
        Without a terminal, a plain progress line every this many seconds.
    max_minutes : float, optional
        Stop (checkpoint, final validation, model written) after this much wall-clock time even
        if ``schedule.steps`` are not done (``unetseg train --minutes`` overrides it).
    debug_nan_at_step : int, optional
        Testing hook: replace the loss by NaN at this step.
    collective_timeout_s : float
        Under ``torchrun``: how long a process waits in a collective (gradient all-reduce,
        barrier) for the others before it fails instead of hanging, e.g. when another rank died.
        It must cover the longest wait of a healthy run: rank 0 validating or writing a
        checkpoint while the others wait at the next barrier.
    """

    device: str = "auto"
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    channels_last: bool | Literal["auto"] = "auto"
    compile: bool = False
    threads: int | None = None
    num_workers: int = 0
    seed: int = 0
    log_every: int = 10
    progress_every_s: float = 30.0
    max_minutes: float | None = None
    debug_nan_at_step: int | None = None
    collective_timeout_s: float = 1800.0


@dataclass(frozen=True)
class TrainConfig:
    """A complete training recipe (see the module docstring for the YAML layout)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train_data: SplitConfig = field(default_factory=SplitConfig)
    val_data: SplitConfig | None = None
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    averaging: AveragingConfig = field(default_factory=AveragingConfig)
    batch_norm: BatchNormConfig = field(default_factory=BatchNormConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    postprocess: Postprocess = field(default_factory=Postprocess)  # copied into the model card
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    batch_size: int = 1
    tile: list[int] = field(default_factory=lambda: [388, 388])

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size: must be >= 1, got {self.batch_size}")
        if not self.tile or any(t < 1 for t in self.tile):
            raise ConfigError(f"tile: expected positive output tile sizes, got {self.tile}")
        if self.checkpoint.every < 1:
            raise ConfigError(f"checkpoint.every: must be >= 1, got {self.checkpoint.every}")
        if self.validation.every < 0:
            raise ConfigError(f"validation.every: must be >= 0, got {self.validation.every}")


def load_train_config(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """Read a training recipe from YAML with ``key=value`` overrides (strictly checked)."""
    return load_config(TrainConfig, path, overrides)


def train_config_from_dict(data: dict[str, Any]) -> TrainConfig:
    """Build a :class:`TrainConfig` from plain data (strictly checked)."""
    return from_dict(TrainConfig, data)
