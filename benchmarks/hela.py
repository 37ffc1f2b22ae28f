"""DIC-HeLa instance segmentation with the paper's weight maps: SEG by leave-frames-out CV.

    .venv/bin/python benchmarks/hela.py [--folds 3] [--minutes 8] [--data ../shared/data/DIC-C2DH-HeLa]

The annotated frames of ``--data`` (Cell Tracking Challenge layout) are split into ``--folds``
groups in time order. For each fold, ``configs/hela.yaml`` (touching cells separated by carved
borders, border weights w0 = 10, sigma = 5 px, partial ground truth ignored far from annotated
cells) trains on the other frames for ``--minutes``; the held-out frames are segmented with
overlap-tile + 8-fold TTA into instance labels (connected components of the cell class, small
objects removed) and scored with the Cell Tracking Challenge SEG measure, pooled over all
reference objects of all held-out frames. No frame is ever scored by a model that saw it.

Prints a per-fold table and one JSON line. The paper reports IoU 0.7756 on the 2015 challenge
test sequences (our data are sequence 01 only, 9 annotated frames: not the same test set).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from unetseg.data import discover
from unetseg.evaluate import evaluate_ctc
from unetseg.io import read_image
from unetseg.predict import predict_file
from unetseg.train.config import load_train_config
from unetseg.train.setup import train_from_config

REPO = Path(__file__).resolve().parents[1]


def folds_of(names: list[str], k: int) -> list[list[str]]:
    """``k`` contiguous groups of names in time order (as equal as possible)."""
    return [list(chunk) for chunk in np.array_split(np.array(names, dtype=object), k) if len(chunk)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "DIC-C2DH-HeLa"))
    ap.add_argument("--config", default=str(REPO / "configs" / "hela.yaml"))
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--minutes", type=float, default=8.0, help="training time per fold")
    ap.add_argument("--min-size", type=int, default=50, help="remove predicted objects smaller than this (px)")
    ap.add_argument("--no-tta", action="store_true")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    ap.add_argument("--out", default="/tmp/unetseg-hela")
    args = ap.parse_args()

    _, pairs = discover(args.data)
    pairs = [p for p in pairs if p.label is not None]
    by_name = {p.name: p for p in pairs}
    out = Path(args.out)
    rows, preds, gts = [], [], []
    t0 = time.monotonic()
    for i, held in enumerate(folds_of([p.name for p in pairs], args.folds)):
        train = [n for n in by_name if n not in held]
        cfg = load_train_config(
            args.config,
            [f"train_data.path={args.data}", f"train_data.select={json.dumps(train)}", "val_data=null",
             f"runtime.max_minutes={args.minutes}", *args.overrides],
        )
        run = out / f"fold{i}"
        result = train_from_config(cfg, run, config_path=args.config)
        fold_preds, fold_gts = [], []
        for name in held:
            target = out / f"fold{i}-{name}-labels.tif"
            predict_file(run, by_name[name].image, target, output="labels", split="none",
                         min_size=args.min_size, tta=not args.no_tta)
            fold_preds.append(read_image(target))
            fold_gts.append(read_image(by_name[name].label))
        seg = evaluate_ctc(np.stack(fold_preds), np.stack(fold_gts))["seg"]["value"]
        rows.append((i, held, result.step, seg))
        preds += fold_preds
        gts += fold_gts
    pooled = evaluate_ctc(np.stack(preds), np.stack(gts))["seg"]["value"]

    print(f"DIC-HeLa leave-frames-out CV: {len(pairs)} annotated frames, {args.folds} folds, "
          f"{args.minutes:g} min training per fold, TTA {'off' if args.no_tta else '8-fold'}")
    print(f"{'fold':<6}{'held-out frames':<40}{'steps':>8}{'SEG':>9}")
    for i, held, steps, seg in rows:
        print(f"{i:<6}{', '.join(held):<40}{steps:>8}{seg:>9.4f}")
    print(f"pooled SEG over all reference objects: {pooled:.4f}  (paper, 2015 test set: 0.7756)")
    print(json.dumps({"seg_pooled": round(pooled, 4), "folds": args.folds, "minutes_per_fold": args.minutes,
                      "total_minutes": round((time.monotonic() - t0) / 60, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
