"""Building blocks shared by the U-Net family, generic over 2D and 3D."""

from __future__ import annotations

import math

import torch
from torch import nn

NORMS = ("none", "batch", "instance")


def conv_cls(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Conv2d, 3: nn.Conv3d}[spatial_dims]


def conv_transpose_cls(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[spatial_dims]


def max_pool_cls(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.MaxPool2d, 3: nn.MaxPool3d}[spatial_dims]


def dropout_cls(spatial_dims: int) -> type[nn.Module]:
    return {2: nn.Dropout2d, 3: nn.Dropout3d}[spatial_dims]


def norm_layer(norm: str, channels: int, spatial_dims: int) -> nn.Module:
    """Batch norm, instance norm (with affine parameters) or identity."""
    if norm == "batch":
        return {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[spatial_dims](channels)
    if norm == "instance":
        return {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}[spatial_dims](channels, affine=True)
    return nn.Identity()


def center_crop(x: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Crop the spatial axes of ``x`` (N, C, *spatial) symmetrically to ``shape``."""
    slices = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], shape):
        start = (have - want) // 2
        slices.append(slice(start, start + want))
    return x[tuple(slices)]


def he_normal_(module: nn.Module) -> None:
    """The paper's initialisation: weights ~ N(0, sqrt(2/N)), N = k^d * C_in; zero biases.

    Applied alike to convolutions and up-convolutions: N counts the kernel taps times the
    layer's input channels, as the paper states it (e.g. 3*3*64 = 576).
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
            in_channels = m.in_channels // m.groups
            fan_in = in_channels * math.prod(m.kernel_size)
            nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_in))
            if m.bias is not None:
                nn.init.zeros_(m.bias)
