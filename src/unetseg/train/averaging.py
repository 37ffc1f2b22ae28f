"""Averaging the weights of the last part of training (exponential or uniform).

With batch size 1 the weights at the last step carry the noise of the last few tiles; a running
average of the weights over the end of training (Polyak averaging, an exponential moving average
as in timm's ``ModelEmaV2``, or the uniform mean of stochastic weight averaging) removes part of
it at no cost in steps. Training itself is unchanged: the optimiser keeps stepping the raw
weights, and the average is what validation, calibration and the saved model files use.

YAML section ``averaging``::

    averaging: {enabled: true, decay: 0.998, start: 0.5}

The average starts once the schedule has reached ``start`` (a fraction of ``schedule.steps``; with
``schedule.fit_time_limit`` the time-fitted position) and is then updated after every step with the
weight ``max(1 - decay, 1 / n)`` for the ``n``-th update: a uniform mean of the first
``1 / (1 - decay)`` updates, an exponential moving average with ``decay`` after that. ``decay: 1``
keeps the uniform mean of every step since ``start``. Batch-norm statistics are averaged like the
weights; integer buffers (counters) are copied.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class AveragingConfig:
    """Weight averaging (see the module docstring).

    Attributes
    ----------
    enabled : bool
        Keep and use an average of the weights.
    decay : float
        In (0, 1]: the exponential decay per step; 1 = uniform mean since ``start``.
    start : float
        In [0, 1): the share of the schedule after which the average starts.
    """

    enabled: bool = False
    decay: float = 0.998
    start: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.decay <= 1.0:
            raise ConfigError(f"averaging.decay: must be in (0, 1], got {self.decay}")
        if not 0.0 <= self.start < 1.0:
            raise ConfigError(f"averaging.start: must be in [0, 1), got {self.start}")


def update_weight(count: int, decay: float) -> float:
    """Weight of the newest weights in the ``count``-th update (``count >= 1``).

    Examples
    --------
    >>> [round(update_weight(n, 0.5), 3) for n in (1, 2, 3)]
    [1.0, 0.5, 0.5]
    >>> [round(update_weight(n, 1.0), 3) for n in (1, 2, 4)]
    [1.0, 0.5, 0.25]
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    return max(1.0 - decay, 1.0 / count)


class WeightAverage:
    """A running average of a model's weights and buffers, kept in a copy of the model.

    Parameters
    ----------
    model : nn.Module
        The trained network (unwrapped from DistributedDataParallel); copied once.
    decay : float
        See :class:`AveragingConfig`.

    Examples
    --------
    >>> net = nn.Linear(1, 1, bias=False)
    >>> avg = WeightAverage(net, decay=1.0)
    >>> for w in (1.0, 2.0, 6.0):
    ...     _ = net.weight.data.fill_(w)
    ...     avg.update(net)
    >>> avg.count, float(avg.module.weight)
    (3, 3.0)
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.count = 0
        self.module = copy.deepcopy(model)
        self.module.eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the current weights of ``model`` into the average."""
        self.count += 1
        alpha = update_weight(self.count, self.decay)
        source = model.state_dict()
        for key, avg in self.module.state_dict().items():
            new = source[key].detach()
            if avg.is_floating_point():
                avg.lerp_(new.to(avg.dtype), alpha)
            else:
                avg.copy_(new)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged weights and buffers (the averaged model's ``state_dict``)."""
        return self.module.state_dict()

    def load(self, tensors: dict[str, torch.Tensor], count: int) -> None:
        """Restore an average saved by a checkpoint."""
        self.module.load_state_dict(tensors)
        self.count = int(count)
