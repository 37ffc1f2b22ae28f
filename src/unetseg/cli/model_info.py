"""``unetseg model-info``: what a U-Net configuration costs and which tiles it accepts."""

from __future__ import annotations

import argparse

from ..models import build, count_conv_layers, flops_per_output_pixel, parameter_count, read_config
from ..sizes import output_size_choices


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model-info", help="parameters, halo, valid tile sizes and FLOPs of a model")
    p.add_argument("--model", help="a saved model file or run folder (default: build from the options below)")
    p.add_argument("--arch", default="UNet", choices=["UNet", "FusionNet"])
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--num-classes", type=int, default=2)
    p.add_argument("--depth", type=int, default=4, help="UNet only")
    p.add_argument("--base-channels", type=int, default=64)
    p.add_argument("--padding", default="valid", choices=["valid", "same"], help="UNet only")
    p.add_argument("--norm", default="none", choices=["none", "batch", "instance"], help="UNet only")
    p.add_argument("--upsample", default="transpose", choices=["transpose", "bilinear"], help="UNet only")
    p.add_argument("--spatial-dims", type=int, default=2, choices=[2, 3], help="UNet only")
    p.add_argument("--max-tile", type=int, default=1024, help="largest input tile side to list")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    card = None
    if args.model:
        meta = read_config(args.model)
        arch, kwargs, card = meta["arch"], meta["args"], meta["card"]
    else:
        arch = args.arch
        kwargs = dict(in_channels=args.in_channels, num_classes=args.num_classes, base_channels=args.base_channels)
        if arch == "UNet":
            kwargs.update(depth=args.depth, padding=args.padding, norm=args.norm, upsample=args.upsample, spatial_dims=args.spatial_dims)
    model = build(arch, kwargs)
    convs = count_conv_layers(model)
    dims = getattr(model, "spatial_dims", 2)
    choices = output_size_choices(args.max_tile, model.depth, model.padding, count=4)
    print(f"architecture      {arch}  " + " ".join(f"{k}={v}" for k, v in kwargs.items()))
    print(f"parameters        {parameter_count(model):,}")
    print(f"conv layers       {convs['total']} ({convs['3x3']} 3x3, {convs['up']} up-conv, {convs['1x1']} 1x1, {convs['other']} other)")
    print(f"halo per side     {model.halo} px")
    print(f"tile step         {model.size_divisor} px")
    print("valid tiles       input -> output   GFLOPs per output megapixel")
    for size_in, size_out in choices:
        flops = flops_per_output_pixel(model, (size_in,) * dims)
        shape_in = "x".join([str(size_in)] * dims)
        shape_out = "x".join([str(size_out)] * dims)
        print(f"                  {shape_in:>9} -> {shape_out:<9} {flops * 1e6 / 1e9:,.0f}")
    if card is not None:
        _print_card(card)
    return 0


def _print_card(card) -> None:
    """What the model card tells a user: the task, classes, normalisation, shift and provenance."""
    t = card.training
    task = "instances (--output labels splits the foreground into objects)" if card.is_instances else "semantic"
    print(f"task              {task}")
    print(f"classes           {', '.join(f'{i}={n}' for i, n in enumerate(card.classes))}  (foreground: {card.foreground_name}"
          + (f", border: {card.classes[card.border_class]})" if card.border_class is not None else ")"))
    print(f"normalisation     {card.normalization}")
    print(f"output shift      {list(card.output_shift) if card.output_shift else 'none'}")
    print(f"trained on        {len(t.train)} image(s){f' from {t.data}' if t.data else ''}; validated on {len(t.val)}; "
          f"tile {list(t.tile) if t.tile else '?'}; {t.precision or '?'}; step {t.step if t.step is not None else '?'}"
          + (f"; started from {t.init}" if t.init else "") + f"; unetseg {t.unetseg_version or '?'}")
    if t.metrics:
        print("metrics           " + ", ".join(f"{k} {v:.4f}" for k, v in t.metrics.items()))
