"""FusionNet (Quan, Hildebrand, Jeong 2016): a fully residual U-Net for connectomics."""

from __future__ import annotations

from torch import Tensor, nn

from .. import sizes
from .layers import he_normal_


def _conv_bn_act(c_in: int, c_out: int, act: nn.Module | None, stride: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out)]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


def _activation(name: str) -> nn.Module:
    return nn.ReLU(inplace=True) if name == "relu" else nn.ELU(inplace=True)


class ResidualBlock(nn.Module):
    """Three 3x3 conv + batch-norm layers (activation after the first two) added to the block input."""

    def __init__(self, channels: int, act: str):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn_act(channels, channels, _activation(act)),
            _conv_bn_act(channels, channels, _activation(act)),
            _conv_bn_act(channels, channels, None),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class ConvResidualConv(nn.Sequential):
    """One FusionNet level: conv -> residual block -> conv (each conv with batch norm + activation)."""

    def __init__(self, c_in: int, c_out: int, act: str):
        super().__init__(
            _conv_bn_act(c_in, c_out, _activation(act)),
            ResidualBlock(c_out, act),
            _conv_bn_act(c_out, c_out, _activation(act)),
        )


class FusionNet(nn.Module):
    """FusionNet: residual levels, summation skips, padded convolutions with batch norm.

    Encoder levels use ReLU, decoder levels ELU; 4 levels plus a bridge; upsampling by a 3x3
    transposed convolution with stride 2; a final 3x3 convolution gives the logits. Output size
    equals input size, which must be a multiple of 16.

    Parameters
    ----------
    in_channels, num_classes : int
        Input channels and output classes (logits).
    base_channels : int
        Width of the first level (64 in the paper), doubled per level.
    downsample : {"maxpool", "conv"}
        2x2 max-pool (paper) or a stride-2 3x3 conv + BN + ReLU (the source document's code).
    skip_merge : {"sum", "mean"}
        Merge decoder and encoder maps by summation (paper) or by their mean (the document's code).

    Examples
    --------
    >>> import torch
    >>> net = FusionNet(1, 2, base_channels=4)
    >>> net(torch.zeros(1, 1, 32, 48)).shape
    torch.Size([1, 2, 32, 48])
    """

    arch = "FusionNet"
    activation_memory_factor = 2.0  # residual blocks keep about twice the activations of a U-Net level
    depth = 4
    padding = sizes.SAME
    spatial_dims = 2

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        *,
        base_channels: int = 64,
        downsample: str = "maxpool",
        skip_merge: str = "sum",
    ):
        super().__init__()
        if downsample not in ("maxpool", "conv"):
            raise ValueError(f"downsample={downsample!r}: expected 'maxpool' or 'conv'")
        if skip_merge not in ("sum", "mean"):
            raise ValueError(f"skip_merge={skip_merge!r}: expected 'sum' or 'mean'")
        self.config = dict(
            in_channels=in_channels,
            num_classes=num_classes,
            base_channels=base_channels,
            downsample=downsample,
            skip_merge=skip_merge,
        )
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.skip_scale = 0.5 if skip_merge == "mean" else 1.0
        widths = [base_channels * 2**i for i in range(self.depth + 1)]
        self.encoders = nn.ModuleList()
        self.pools = nn.ModuleList()
        c_in = in_channels
        for w in widths[:-1]:
            self.encoders.append(ConvResidualConv(c_in, w, "relu"))
            self.pools.append(nn.MaxPool2d(2) if downsample == "maxpool" else _conv_bn_act(w, w, nn.ReLU(inplace=True), stride=2))
            c_in = w
        self.bridge = ConvResidualConv(widths[-2], widths[-1], "relu")
        self.upconvs = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for w_low, w in zip(reversed(widths[1:]), reversed(widths[:-1])):
            self.upconvs.append(
                nn.Sequential(
                    nn.ConvTranspose2d(w_low, w, kernel_size=3, stride=2, padding=1, output_padding=1, bias=False),
                    nn.BatchNorm2d(w),
                    nn.ELU(inplace=True),
                )
            )
            self.decoders.append(ConvResidualConv(w, w, "elu"))
        self.head = nn.Conv2d(widths[0], num_classes, kernel_size=3, padding=1)
        he_normal_(self)

    def forward(self, x: Tensor) -> Tensor:
        skips = []
        for enc, pool in zip(self.encoders, self.pools):
            x = enc(x)
            skips.append(x)
            x = pool(x)
        x = self.bridge(x)
        for upconv, dec in zip(self.upconvs, self.decoders):
            x = (upconv(x) + skips.pop()) * self.skip_scale
            x = dec(x)
        return self.head(x)

    halo = 0
    size_divisor = 2**depth

    def output_shape(self, input_shape) -> tuple[int, ...]:
        return sizes.output_shape(input_shape, self.depth, self.padding)

    def input_shape_for(self, out_shape) -> tuple[int, ...]:
        return sizes.input_shape_for(out_shape, self.depth, self.padding)
