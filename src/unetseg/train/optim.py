"""Optimisers, learning-rate schedules (step, poly, cosine, linear warm-up) and gradient clipping.

The schedule is a pure function of the step (:func:`lr_at`), so resuming needs only the step
number: no scheduler object state to save.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser settings.

    Attributes
    ----------
    name : {"sgd", "adam", "adamw"}
        ``sgd`` with ``momentum=0.99`` is the paper's choice.
    lr : float
        Peak learning rate. How it relates to ``loss.reduction``: see ``docs/training.md``.
    momentum : float
        SGD momentum (0.99 in the paper: each gradient contributes to ~100 updates).
    nesterov : bool
        Nesterov momentum (SGD only).
    betas : tuple of float
        Adam/AdamW betas.
    eps : float
        Adam/AdamW epsilon.
    weight_decay : float
        L2 penalty (decoupled for AdamW).
    grad_clip : float, optional
        Clip the global gradient norm to this value (``None``: no clipping).
    """

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = 0.01
    momentum: float = 0.99
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    grad_clip: float | None = None


@dataclass(frozen=True)
class ScheduleConfig:
    """How long to train and how the learning rate moves.

    Attributes
    ----------
    steps : int
        Optimiser steps in total.
    name : {"constant", "step", "poly", "cosine"}
        Shape of the schedule after the warm-up.
    warmup_steps : int
        Linear ramp from ``warmup_start * lr`` to ``lr`` over these steps.
    warmup_start : float
        Factor of ``lr`` at step 0 of the warm-up.
    step_size : int
        ``step``: multiply by ``gamma`` every ``step_size`` steps (``milestones`` wins when set).
    milestones : list of int
        ``step``: explicit steps at which the rate is multiplied by ``gamma``.
    gamma : float
        ``step``: decay factor.
    power : float
        ``poly``: ``(1 - t)^power``.
    min_lr_factor : float
        ``poly``/``cosine``: the rate never falls below ``min_lr_factor * lr``.
    fit_time_limit : bool
        When training has a time limit (``runtime.max_minutes`` or ``unetseg train --minutes``),
        advance the schedule after the warm-up by the elapsed share of that time as well as by
        steps (whichever is further, :func:`schedule_position`), so the rate has decayed when the time is up even
        on a machine slower than ``steps`` assumes. The run is then only bit-reproducible when
        the steps, not the clock, decide the position.
    """

    steps: int = 1000
    name: Literal["constant", "step", "poly", "cosine"] = "constant"
    warmup_steps: int = 0
    warmup_start: float = 0.0
    step_size: int = 1000
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    power: float = 0.9
    min_lr_factor: float = 0.0
    fit_time_limit: bool = False

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"schedule.steps: must be >= 1, got {self.steps}")
        if self.warmup_steps < 0:
            raise ConfigError(f"schedule.warmup_steps: must be >= 0, got {self.warmup_steps}")
        if self.step_size < 1:
            raise ConfigError(f"schedule.step_size: must be >= 1, got {self.step_size}")


def schedule_position(step: int, steps: int, elapsed_s: float, time_limit_s: float | None) -> float:
    """Where a time-fitted schedule stands: ``max(step, steps * elapsed_s / time_limit_s)``.

    Capped at ``steps - 1`` (the end of the schedule); just ``step`` without a time limit.

    Examples
    --------
    >>> schedule_position(100, 1000, 30.0, 60.0)  # half the time gone after a tenth of the steps
    500.0
    >>> schedule_position(700, 1000, 30.0, 60.0)  # faster than planned: the steps decide
    700.0
    >>> schedule_position(100, 1000, 90.0, 60.0), schedule_position(100, 1000, 90.0, None)
    (999.0, 100.0)
    """
    if not time_limit_s or time_limit_s <= 0:
        return float(step)
    return float(max(step, min(steps - 1, steps * elapsed_s / time_limit_s)))


def lr_factor(cfg: ScheduleConfig, step: float) -> float:
    """Multiplier of the peak learning rate at 0-based ``step`` (fractional for time-fitted runs).

    Examples
    --------
    >>> cfg = ScheduleConfig(steps=100, name="cosine", warmup_steps=10)
    >>> [round(lr_factor(cfg, s), 3) for s in (0, 5, 10, 55, 99)]
    [0.1, 0.6, 1.0, 0.491, 0.0]
    >>> lr_factor(ScheduleConfig(steps=100, name="step", step_size=30), 65)
    0.010000000000000002
    """
    if cfg.warmup_steps and step < cfg.warmup_steps:
        t = (step + 1) / cfg.warmup_steps
        return cfg.warmup_start + (1.0 - cfg.warmup_start) * t
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        if cfg.milestones:
            n = sum(1 for m in cfg.milestones if step >= m)
        else:
            n = step // cfg.step_size
        return cfg.gamma**n
    span = max(1, cfg.steps - cfg.warmup_steps - 1)
    t = min(1.0, max(0.0, (step - cfg.warmup_steps) / span))
    if cfg.name == "poly":
        f = (1.0 - t) ** cfg.power
    elif cfg.name == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * t))
    else:
        raise ConfigError(f"schedule.name {cfg.name!r}: expected constant, step, poly or cosine")
    return cfg.min_lr_factor + (1.0 - cfg.min_lr_factor) * f


def lr_at(optim: OptimConfig, schedule: ScheduleConfig, step: float) -> float:
    """The learning rate used for 0-based ``step`` (or a :func:`schedule_position`)."""
    return optim.lr * lr_factor(schedule, step)


def build_optimizer(cfg: OptimConfig, params) -> torch.optim.Optimizer:
    """The optimiser of ``cfg`` over ``params``.

    Examples
    --------
    >>> opt = build_optimizer(OptimConfig(), nn.Linear(2, 2).parameters())
    >>> type(opt).__name__, opt.param_groups[0]["momentum"]
    ('SGD', 0.99)
    """
    if cfg.lr <= 0:
        raise ConfigError(f"optim.lr: must be > 0, got {cfg.lr}")
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optim.name {cfg.name!r}: expected sgd, adam or adamw")


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group."""
    for group in optimizer.param_groups:
        group["lr"] = lr


def clip_gradients(model: nn.Module, max_norm: float | None) -> float:
    """Clip the global gradient norm (when ``max_norm`` is set); return the norm before clipping."""
    params = [p for p in model.parameters() if p.grad is not None]
    if not params:
        return 0.0
    if max_norm is None:
        norms = torch.stack([p.grad.detach().float().norm() for p in params])
        return float(norms.norm())
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
