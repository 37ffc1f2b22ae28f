"""The U-Net of Ronneberger, Fischer and Brox (MICCAI 2015) and its common variants."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import sizes
from ..affinities import check_offsets
from .layers import (
    NORMS,
    center_crop,
    conv_cls,
    conv_transpose_cls,
    dropout_cls,
    he_normal_,
    max_pool_cls,
    norm_layer,
)


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by (optional) normalisation and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, padding: str, norm: str, spatial_dims: int):
        conv = conv_cls(spatial_dims)
        pad = 1 if padding == "same" else 0
        bias = norm == "none"
        layers: list[nn.Module] = []
        for c_in in (in_channels, out_channels):
            layers += [
                conv(c_in, out_channels, kernel_size=3, padding=pad, bias=bias),
                norm_layer(norm, out_channels, spatial_dims),
                nn.ReLU(inplace=True),
            ]
        super().__init__(*layers)


class Down(nn.Sequential):
    """2x2 max-pool with stride 2, then a :class:`DoubleConv` (one contracting level)."""

    def __init__(self, in_channels: int, out_channels: int, padding: str, norm: str, spatial_dims: int):
        super().__init__(
            max_pool_cls(spatial_dims)(kernel_size=2, stride=2),
            DoubleConv(in_channels, out_channels, padding, norm, spatial_dims),
        )


class UpSample(nn.Sequential):
    """Double the resolution and halve the channels.

    ``"transpose"``: the paper's 2x2 up-convolution (transposed convolution, stride 2).
    ``"bilinear"``: (tri)linear interpolation followed by a 1x1 convolution.
    """

    def __init__(self, in_channels: int, out_channels: int, mode: str, spatial_dims: int):
        if mode == "transpose":
            layers: list[nn.Module] = [conv_transpose_cls(spatial_dims)(in_channels, out_channels, kernel_size=2, stride=2)]
        else:
            interp = "bilinear" if spatial_dims == 2 else "trilinear"
            layers = [
                nn.Upsample(scale_factor=2, mode=interp, align_corners=False),
                conv_cls(spatial_dims)(in_channels, out_channels, kernel_size=1),
            ]
        super().__init__(*layers)


class Up(nn.Module):
    """One expanding level: upsample, center-crop the skip feature map, concatenate, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int, padding: str, norm: str, upsample: str, spatial_dims: int):
        super().__init__()
        self.up = UpSample(in_channels, out_channels, upsample, spatial_dims)
        self.conv = DoubleConv(2 * out_channels, out_channels, padding, norm, spatial_dims)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        x = self.up(x)
        skip = center_crop(skip, tuple(x.shape[2:]))
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net; ``UNet(in_channels=1, num_classes=2)`` is the network of the paper (Fig. 1).

    Parameters
    ----------
    in_channels : int
        Input channels (1 for grey-value microscopy; several for multi-modal input).
    num_classes : int
        Output channels; the network returns logits (apply softmax for probabilities).
    depth : int
        Number of 2x2 max-pool steps (4 in the paper: 5 resolution levels).
    base_channels : int
        Feature channels of the first level, doubled per level (64 in the paper).
    padding : {"valid", "same"}
        ``"valid"`` (paper): unpadded convolutions, output smaller than input by ``2 * halo``;
        skip connections are center-cropped. ``"same"``: zero-padded, output size = input size.
    norm : {"none", "batch", "instance"}
        Normalisation after each 3x3 convolution (none in the paper).
    dropout : float
        Drop-out probability at the end of the contracting path (the paper uses drop-out there).
    upsample : {"transpose", "bilinear"}
        2x2 up-convolution (paper) or interpolation + 1x1 convolution.
    spatial_dims : {2, 3}
        2D images or 3D volumes.
    affinity_offsets : list of lists of int, optional
        One more output channel per offset: the logit that a pixel and the pixel this far away
        lie in the same object (:mod:`unetseg.affinities`; closed under rotations and flips).
        The class logits come first; ``num_classes`` still counts only them.

    Examples
    --------
    >>> import torch
    >>> net = UNet(in_channels=1, num_classes=2, base_channels=4)
    >>> net(torch.zeros(1, 1, 188, 188)).shape
    torch.Size([1, 2, 4, 4])
    >>> net.output_shape((572, 572))
    (388, 388)
    """

    arch = "UNet"
    activation_memory_factor = 1.0  # relative peak activation memory, read by inference.auto_tile_shape

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        *,
        depth: int = 4,
        base_channels: int = 64,
        padding: str = "valid",
        norm: str = "none",
        dropout: float = 0.5,
        upsample: str = "transpose",
        spatial_dims: int = 2,
        affinity_offsets: list[list[int]] | None = None,
    ):
        super().__init__()
        _check_args(in_channels, num_classes, depth, base_channels, padding, norm, dropout, upsample, spatial_dims)
        self.affinity_offsets = check_offsets(affinity_offsets or (), spatial_dims)
        self.config = dict(
            in_channels=in_channels,
            num_classes=num_classes,
            depth=depth,
            base_channels=base_channels,
            padding=padding,
            norm=norm,
            dropout=float(dropout),
            upsample=upsample,
            spatial_dims=spatial_dims,
        )
        if self.affinity_offsets:  # saved only when used: model files of plain networks stay as they were
            self.config["affinity_offsets"] = [list(o) for o in self.affinity_offsets]
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.padding = padding
        self.spatial_dims = spatial_dims
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.inc = DoubleConv(in_channels, widths[0], padding, norm, spatial_dims)
        self.downs = nn.ModuleList(
            Down(widths[i], widths[i + 1], padding, norm, spatial_dims) for i in range(depth)
        )
        self.dropout = dropout_cls(spatial_dims)(dropout) if dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(
            Up(widths[i + 1], widths[i], padding, norm, upsample, spatial_dims) for i in reversed(range(depth))
        )
        self.head = conv_cls(spatial_dims)(widths[0], num_classes + len(self.affinity_offsets), kernel_size=1)
        he_normal_(self)

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        x = self.dropout(skips.pop())
        for up in self.ups:
            x = up(x, skips.pop())
        return self.head(x)

    # Size arithmetic of this instance (see :mod:`unetseg.sizes`).
    @property
    def halo(self) -> int:
        """Input context each side of an output pixel needs (0 for same padding)."""
        return sizes.halo(self.depth, self.padding)

    @property
    def size_divisor(self) -> int:
        """Valid input sizes step by this many pixels."""
        return 2**self.depth

    def output_shape(self, input_shape) -> tuple[int, ...]:
        return sizes.output_shape(input_shape, self.depth, self.padding)

    def input_shape_for(self, out_shape) -> tuple[int, ...]:
        return sizes.input_shape_for(out_shape, self.depth, self.padding)


def _check_args(in_channels, num_classes, depth, base_channels, padding, norm, dropout, upsample, spatial_dims):
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims={spatial_dims!r}: expected 2 or 3")
    if padding not in (sizes.VALID, sizes.SAME):
        raise ValueError(f"padding={padding!r}: expected 'valid' or 'same'")
    if norm not in NORMS:
        raise ValueError(f"norm={norm!r}: expected one of {', '.join(NORMS)}")
    if upsample not in ("transpose", "bilinear"):
        raise ValueError(f"upsample={upsample!r}: expected 'transpose' or 'bilinear'")
    for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("depth", depth), ("base_channels", base_channels)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}={value!r}: expected a positive integer")
    if not 0.0 <= float(dropout) < 1.0:
        raise ValueError(f"dropout={dropout!r}: expected a probability in [0, 1)")
