"""Pre-training on unetseg's own synthetic images before the recipe's data (``pretrain`` section).

A recipe with ``pretrain: {synthetic: em, share: 0.25}`` first trains the recipe's network on
``count`` synthetic images of that kind (:mod:`unetseg.synthetic`: exact labels, generated on the
spot from ``seed``) for ``share`` of the run's time budget, into ``RUN/pretrain/`` (a run folder
of its own), then trains on the recipe's data from those weights (as ``model.init`` would) for
the rest of the budget. The budget is the run's: ``runtime.max_minutes``, ``unetseg train
--minutes`` or each fold's minutes in ``unetseg cv``; the two stages together never exceed it.
The synthetic labels must be what the recipe's ``data.target`` reads (``em``: 255 = cell, 0 =
membrane, for binary recipes like ISBI 2012's; the cell kinds: instance ids).
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)

PRETRAIN_DIR = "pretrain"


@dataclass(frozen=True)
class PretrainConfig:
    """The pre-training stage of a recipe.

    Attributes
    ----------
    synthetic : str, optional
        A kind of :data:`unetseg.synthetic.KINDS` (not ``em-volume``); ``None``: no pre-training.
    count : int
        Synthetic images generated (each ``size`` x ``size`` pixels).
    size : int
        Side of the synthetic images in pixels.
    seed : int
        Seed of the images (image i comes from ``numpy.random.default_rng([seed, i])``).
    share : float
        Fraction of the run's time budget spent pre-training, in (0, 1).
    """

    synthetic: str | None = None
    count: int = 60
    size: int = 512
    seed: int = 0
    share: float = 0.25

    def __post_init__(self) -> None:
        from ..synthetic import KINDS

        if self.synthetic is not None and (self.synthetic not in KINDS or self.synthetic == "em-volume"):
            raise ConfigError(f"pretrain.synthetic: {self.synthetic!r} is not one of {', '.join(k for k in KINDS if k != 'em-volume')}")
        if self.count < 1 or not 16 <= self.size <= 16384:
            raise ConfigError(f"pretrain: count must be >= 1 and size in [16, 16384] (got {self.count}, {self.size})")
        if not 0.0 < self.share < 1.0:
            raise ConfigError(f"pretrain.share: expected a fraction in (0, 1), got {self.share}")


def pretraining_config(cfg, data_dir: Path):
    """The recipe as its pre-training stage runs it: the synthetic images in ``data_dir`` as
    training data, no validation images (nor what needs them), no output-shift calibration.

    Examples
    --------
    >>> from unetseg.train.config import TrainConfig
    >>> pre = pretraining_config(TrainConfig(pretrain=PretrainConfig(synthetic="em")), Path("syn"))
    >>> pre.train_data.path, pre.val_data, pre.pretrain.synthetic, pre.validation.every
    ('syn', None, None, 0)
    """
    return dataclasses.replace(
        cfg,
        train_data=dataclasses.replace(cfg.train_data, path=str(data_dir), select=None),
        val_data=None,
        validation=dataclasses.replace(cfg.validation, every=0, check_backends=False),
        calibration=dataclasses.replace(cfg.calibration, output_shift=False),
        pretrain=PretrainConfig(),
    )


def pretrained_origin(spec: PretrainConfig, out: Path) -> str:
    """What a model card records as the origin of weights pre-trained as ``spec`` says into
    ``out/pretrain`` (the steps read from that run's own card, so a resumed run records the same)."""
    from ..models import load_card

    steps = load_card(Path(out) / PRETRAIN_DIR / "model-last.safetensors").training.step
    return f"{PRETRAIN_DIR}/ (synthetic {spec.synthetic}: {spec.count} images of {spec.size} px, seed {spec.seed}; {steps} steps)"


def pretrain(cfg, out: Path, *, time_limit_s: float | None, device: str | None, progress: bool, train):
    """Run the pre-training stage of ``cfg`` into ``out/pretrain`` with ``train`` (the function
    :func:`unetseg.train.setup.train_from_config`); return ``(cfg, time left, note)``: the recipe
    starting from the pre-trained weights, the seconds of the budget left for it, and what the
    model card records as the weights' origin."""
    from ..synthetic import pairs, write_pairs

    spec = cfg.pretrain
    if cfg.model.init:
        raise ConfigError("pretrain.synthetic and model.init both give the starting weights; keep one")
    if time_limit_s is None:
        raise ConfigError("pretrain.share needs a time budget: runtime.max_minutes, train --minutes or cv --minutes")
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unetseg-pretrain-") as tmp:
        items = pairs(spec.synthetic, (spec.size, spec.size), spec.count, spec.seed)
        write_pairs(tmp, items, spec.count, em=spec.synthetic == "em")
        result = train(pretraining_config(cfg, Path(tmp)), Path(out) / PRETRAIN_DIR, time_limit_s=spec.share * time_limit_s,
                       device=device, progress=progress)
    weights = Path(out) / PRETRAIN_DIR / "model-last.safetensors"
    left = max(time_limit_s - (time.perf_counter() - start), 1.0)
    note = pretrained_origin(spec, Path(out))
    log.info("pretrain: %d steps on synthetic %s in %.1f min; %.1f min left for the recipe's data",
             result.step, spec.synthetic, (time_limit_s - left) / 60, left / 60)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, init=str(weights))), left, note
