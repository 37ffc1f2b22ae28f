"""Batch-norm statistics recomputed over many training tiles before a model is used ("precise BN").

In training mode a batch-norm layer normalises with the statistics of the current batch and keeps
an exponential running average of them (momentum 0.1) for evaluation. With the paper's batch of
one tile, that running average is mostly the last ten or so tiles: the evaluated network changes
with whatever those tiles happened to be, and a model can miss whole cells because its last tiles
held few of them. Recomputing the statistics as a plain mean over many tiles drawn as training
draws them (Wu & Johnson, "Rethinking 'Batch' in BatchNorm", 2021; fvcore's
``update_bn_stats``) removes that noise without touching a weight.

YAML section ``batch_norm``::

    batch_norm: {refresh_tiles: 64}

``refresh_tiles`` tiles (0, the default, keeps the running averages) are drawn from the training
set before every validation and before the final calibration and save, the same tiles for every
rank: the samples of the last steps, *without their augmentation* (:func:`refresh_source`), as
inference sees the images. Over augmented tiles the statistics depended on which tiles were drawn:
on one DIC-HeLa fold model, one frame's SEG was 0.51-0.78 over four draws of 256-1024 augmented
tiles, 0.86-0.87 over four draws of 64-1024 plain ones, and 0.87 over two draws with the geometric
augmentation alone, so the intensity part (brightness, contrast, gamma, noise) was the cause
(``benchmarks/hela_bn_draws.py``; docs/training.md, twenty-second session). It is on in the
DIC-HeLa recipe, where it was measured to help; on the nuclei recipe one run with and one without
(over augmented tiles then) did not show a gain, so it is not the default (docs/training.md). The
statistics are computed by :func:`torch.optim.swa_utils.update_bn`. Networks without batch norm
are left alone and cost nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError


@dataclass(frozen=True)
class BatchNormConfig:
    """Recomputing batch-norm statistics (see the module docstring).

    Attributes
    ----------
    refresh_tiles : int
        Training tiles the statistics are recomputed over; 0 keeps the running averages.
    """

    refresh_tiles: int = 0

    def __post_init__(self) -> None:
        if self.refresh_tiles < 0:
            raise ConfigError(f"batch_norm.refresh_tiles: must be >= 0, got {self.refresh_tiles}")


def has_batch_norm(model: nn.Module) -> bool:
    """Whether ``model`` holds a batch-norm layer with running statistics.

    Examples
    --------
    >>> has_batch_norm(nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))), has_batch_norm(nn.Conv2d(1, 2, 3))
    (True, False)
    """
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats for m in model.modules())


def refresh_indices(step: int, tiles: int, batch_size: int, world_size: int = 1) -> list[list[int]]:
    """Dataset indices of the refresh batches at ``step``: rank 0's samples of the last steps.

    Step ``k`` of rank ``r`` trains on samples ``(k * world_size + r) * batch_size + b``
    (:class:`unetseg.data.loader.StepBatchSampler`); these are rank 0's of the steps before
    ``step`` (or after it, early in a run), so every rank uses the same tiles.

    Examples
    --------
    >>> refresh_indices(10, 3, 1)
    [[7], [8], [9]]
    >>> refresh_indices(1, 4, 2)  # early in a run: the first samples
    [[0, 1], [2, 3]]
    >>> refresh_indices(10, 2, 1, world_size=2)  # rank 0's samples of steps 8 and 9
    [[16], [18]]
    """
    batches = -(-tiles // batch_size)
    first = max(0, step - batches)
    return [[(first + k) * world_size * batch_size + b for b in range(batch_size)] for k in range(batches)]


def refresh_source(train_set: Any) -> Any:
    """The dataset the statistics are recomputed over: ``train_set.unaugmented()`` where the
    training set offers it (:meth:`unetseg.data.TileDataset.unaugmented`), else ``train_set``.

    Examples
    --------
    >>> refresh_source([1, 2]) == [1, 2]
    True
    """
    plain = getattr(train_set, "unaugmented", None)
    return plain() if callable(plain) else train_set


def recompute_statistics(model: nn.Module, batches: Sequence[torch.Tensor] | Callable[[], Sequence[torch.Tensor]], *,
                         device: torch.device | None = None) -> bool:
    """Replace the running statistics of every batch-norm layer by their mean over ``batches``.

    ``batches`` are input tensors ``(N, C, *spatial)`` (or a callable returning them, called only
    when the model has batch norm). Weights are untouched; the model's train/eval mode is kept.
    Returns whether anything was recomputed.

    Examples
    --------
    >>> net = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.BatchNorm2d(1))
    >>> _ = net[0].weight.data.fill_(1.0)
    >>> recompute_statistics(net, [torch.full((1, 1, 2, 2), v) for v in (1.0, 3.0)])
    True
    >>> float(net[1].running_mean), net.training
    (2.0, True)
    """
    if not has_batch_norm(model):
        return False
    tensors = batches() if callable(batches) else batches
    torch.optim.swa_utils.update_bn(list(tensors), model, device=device)
    return True
