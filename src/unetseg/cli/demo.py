"""``unetseg demo``: the whole job on built-in synthetic data (or a real dataset) in minutes."""

from __future__ import annotations

import argparse
import logging
import time


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="train on synthetic EM data, segment a larger image with overlap-tile, evaluate",
        description="Train a U-Net on generated EM sections (or --data PATH, ISBI 2012 layout), segment a "
        "held-out image with the overlap-tile strategy and 8-fold TTA, and evaluate it with the ISBI 2012 "
        "metrics. Writes OUT/overlay.png, loss.png, metrics.json/csv and report.html.",
    )
    p.add_argument("--out", default="demo-out", help="output folder (default: demo-out)")
    p.add_argument("--data", help="a real dataset with images/ and labels/ (e.g. ../shared/data/isbi2012)")
    p.add_argument("--minutes", type=float, default=None, help="training time limit (default: the recipe's steps)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    p.add_argument("--no-tta", action="store_true", help="skip test-time augmentation")
    p.add_argument("--device", default=None, help="auto, cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from ..evaluate import format_table

    logging.getLogger("unetseg").setLevel(logging.INFO)
    t0 = time.monotonic()
    result = run_demo(
        args.out, data=args.data, minutes=args.minutes, steps=args.steps, tta=not args.no_tta,
        device=args.device, seed=args.seed, progress=True,
    )
    print(format_table(result.metrics))
    print(f"\ntrained {result.train_steps} steps ({result.train_status}); demo took {(time.monotonic() - t0) / 60:.1f} min")
    print(f"look at: {result.files['overlay']}  (image, probability, contours)")
    for key in ("loss", "report", "metrics", "run"):
        if key in result.files:
            print(f"         {result.files[key]}")
    if "package" in result.files:
        print(f"bioimage.io package: {result.files['package']}; test it with: bioimageio test {result.files['package']}")
    return 0
