"""Counting what a model costs: parameters, convolution layers, FLOPs per output pixel."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def parameter_count(model: nn.Module) -> int:
    """Number of trainable parameters.

    Examples
    --------
    >>> from unetseg.models import UNet
    >>> parameter_count(UNet(1, 2))
    31030658
    """
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_conv_layers(model: nn.Module) -> dict[str, int]:
    """Convolution layers by kind: ``{"3x3": ..., "up": ..., "1x1": ..., "total": ...}``.

    Examples
    --------
    >>> from unetseg.models import UNet
    >>> count_conv_layers(UNet(1, 2, base_channels=4))
    {'3x3': 18, 'up': 4, '1x1': 1, 'other': 0, 'total': 23}
    """
    counts = {"3x3": 0, "up": 0, "1x1": 0, "other": 0}
    for m in model.modules():
        if isinstance(m, (nn.ConvTranspose2d, nn.ConvTranspose3d)):
            counts["up"] += 1
        elif isinstance(m, (nn.Conv2d, nn.Conv3d)):
            k = set(m.kernel_size)
            counts["3x3" if k == {3} else "1x1" if k == {1} else "other"] += 1
    counts["total"] = sum(counts.values())
    return counts


def model_flops(model: nn.Module, input_shape: Sequence[int], *, backward: bool = False) -> tuple[float, tuple[int, ...]]:
    """FLOPs (multiply and add counted separately) of one pass of ``model``'s architecture over
    one input tile of spatial ``input_shape``, and the output's spatial shape.

    Counted by ``torch.utils.flop_counter`` on the meta device, so no memory is used for
    activations. ``backward`` adds the backward pass of a training step (in training mode).

    Examples
    --------
    >>> from unetseg.models import UNet
    >>> fwd, out = model_flops(UNet(1, 2, base_channels=4), (188, 188))
    >>> both, _ = model_flops(UNet(1, 2, base_channels=4), (188, 188), backward=True)
    >>> out, 2.5 < both / fwd < 3.0
    ((4, 4), True)
    """
    with torch.device("meta"):
        meta_model = type(model)(**model.config).train(backward)
    x = torch.empty((1, model.config["in_channels"], *input_shape), device="meta")
    counter = FlopCounterMode(display=False)
    with counter, torch.set_grad_enabled(backward):
        out = meta_model(x)
        if backward:
            out.float().sum().backward()
    return float(counter.get_total_flops()), tuple(int(s) for s in out.shape[2:])


def flops_per_output_pixel(model: nn.Module, input_shape: Sequence[int]) -> float:
    """Forward FLOPs (multiply and add counted separately) per output pixel for one input tile.

    Counted on the meta device (:func:`model_flops`). For valid-padded models the figure falls
    as tiles grow, since the halo is shared by more output pixels.
    """
    flops, out_shape = model_flops(model, input_shape)
    return flops / math.prod(out_shape)
