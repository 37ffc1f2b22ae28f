"""``unetseg cv``: k-fold cross-validation of a recipe (per-fold and pooled challenge metrics)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cv",
        help="k-fold cross-validation of a recipe: train on K-1 groups, score the held-out one, K times",
        description=(
            "Split the recipe's labelled images (train_data, plus val_data on the same dataset) into K contiguous "
            "groups; train on the others and score each held-out group with 8-fold TTA (no validation on it). "
            "Writes OUT/foldK/, OUT/cv.json, OUT/metrics.json/.csv and OUT/report.html (pooled); --final also "
            "trains on all images into OUT/final."
        ),
    )
    p.add_argument("--config", required=True, help="training recipe (YAML)")
    p.add_argument("--folds", type=int, required=True, help="number of folds K (>= 2)")
    p.add_argument("--out", required=True, help="output folder (created)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config value (repeatable)")
    p.add_argument("--minutes", type=float, default=None, help="training time per fold (default: the recipe's runtime.max_minutes)")
    p.add_argument("--protocol", default=None, choices=["isbi2012", "ctc", "binary", "instances"],
                   help="scoring protocol (default: ctc for instance labels, else isbi2012)")
    p.add_argument("--split", default=None, choices=["none", "distance", "border"], help="instances: watershed split (default: the recipe's postprocess)")
    p.add_argument("--min-size", type=int, default=None, help="instances: remove smaller objects (default: the recipe's postprocess)")
    p.add_argument("--final", action="store_true", help="afterwards train on all images into OUT/final")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..cv import cross_validate
    from ..train.config import load_train_config

    if args.minutes is not None and args.minutes <= 0:
        raise ConfigError(f"--minutes {args.minutes}: expected a positive time")
    out = Path(args.out)
    if (out / "cv.json").exists() or (out / "fold0").exists():
        raise ConfigError(f"{out}: already holds a cross-validation; choose another --out")
    cfg = load_train_config(args.config, args.overrides)
    result = cross_validate(cfg, out, folds=args.folds, config_path=args.config, protocol=args.protocol, minutes=args.minutes,
                            final=args.final, device=args.device, progress=not args.no_progress, split=args.split,
                            min_size=args.min_size)
    keys = list(result.pooled)
    print(f"{'fold':<6}{'held out':<36}" + "".join(f"{k:>16}" for k in keys))
    for row in result.folds:
        held = ", ".join(row["held_out"])
        print(f"{row['fold']:<6}{held[:34]:<36}" + "".join(f"{row[k]:>16.5f}" for k in keys))
    print(f"{'pooled':<42}" + "".join(f"{result.pooled[k]:>16.5f}" for k in keys))
    print(f"wrote {out / 'cv.json'}, {out / 'metrics.json'}" + (f"; final model in {result.final}" if result.final else ""))
    return 0
