"""DIC-HeLa instance segmentation with the paper's weight maps: SEG by leave-frames-out CV.

    .venv/bin/python benchmarks/hela.py [--folds 3] [--minutes 8] [--data ../shared/data/DIC-C2DH-HeLa]

The annotated frames of ``--data`` (Cell Tracking Challenge layout) are split into ``--folds``
groups in time order. For each fold, ``configs/hela.yaml`` (touching cells separated by carved
borders, border weights w0 = 10, sigma = 5 px, partial ground truth ignored far from annotated
cells) trains on the other frames for ``--minutes``; the held-out frames are segmented with
overlap-tile + 8-fold TTA into instance labels (connected components of the cell class, or split
by a watershed on the distance transform; small objects removed) and scored with the Cell
Tracking Challenge SEG measure, pooled over all reference objects of all held-out frames. No frame is ever scored by a model that saw it.
A recipe with ``schedule.fit_time_limit`` (``configs/hela.yaml``) spans its schedule over the
minutes itself; for one without, a speed probe sets ``schedule.steps`` so the learning-rate
schedule ends with the time budget (:func:`unetseg.train.setup.steps_for_budget`).

Prints a per-fold table and one JSON line. The paper reports IoU 0.7756 on the 2015 challenge
test sequences (our data are sequence 01 only, 9 annotated frames: not the same test set).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from unetseg.data import discover
from unetseg.evaluate import evaluate_ctc
from unetseg.io import read_image, write_image
from unetseg.postprocess import instances_from_probabilities
from unetseg.predict import predict_file
from unetseg.train.config import load_train_config
from unetseg.train.setup import steps_for_budget, train_from_config

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("none", "distance")  # instance post-processing compared on the same probabilities


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
    three_class = load_train_config(args.config, args.overrides).data.target.border_class_width > 0
    splits = ("border", "none") if three_class else SPLITS  # a border class: seeded by interiors, or plain components

    _, pairs = discover(args.data)
    pairs = [p for p in pairs if p.label is not None]
    by_name = {p.name: p for p in pairs}
    out = Path(args.out)
    rows, preds, gts = [], {s: [] for s in splits}, []
    t0 = time.monotonic()
    steps = None
    for i, held in enumerate(folds_of([p.name for p in pairs], args.folds)):
        train = [n for n in by_name if n not in held]
        cfg = load_train_config(
            args.config,
            [f"train_data.path={args.data}", f"train_data.select={json.dumps(train)}", "val_data=null",
             f"runtime.max_minutes={args.minutes}", *args.overrides],
        )
        if steps is None and not cfg.schedule.fit_time_limit:  # one speed probe: every fold trains the same network on tiles of the same size
            steps, rate = steps_for_budget(cfg, args.minutes, config_path=args.config)
            print(f"speed probe: {rate:.3f} steps/s -> schedule of {steps} steps per fold", flush=True)
        if steps is not None:  # a recipe whose schedule is fitted to its time limit needs no probe
            cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, steps=steps))
        run = out / f"fold{i}"
        result = train_from_config(cfg, run, config_path=args.config)
        fold = {s: [] for s in splits}
        for name in held:
            prob_path = out / f"fold{i}-{name}-prob.tif"  # the cell-class map, as `unetseg predict` writes it
            predict_file(run, by_name[name].image, prob_path, output="prob", tta=not args.no_tta)
            cell = read_image(prob_path)  # the cell map alone for two classes, every class for three
            prob = cell if cell.ndim == 3 else np.stack([1.0 - cell, cell])
            for split in splits:
                labels = instances_from_probabilities(prob, split=split, min_size=args.min_size,
                                                      border_class=2 if prob.shape[0] == 3 else None)
                fold[split].append(labels)
                write_image(out / f"fold{i}-{name}-labels-{split}.tif", labels)
            gts.append(read_image(by_name[name].label))
        fold_gts = np.stack(gts[-len(held):])
        segs = {s: evaluate_ctc(np.stack(fold[s]), fold_gts)["seg"]["value"] for s in splits}
        rows.append((i, held, result.step, segs))
        for s in splits:
            preds[s] += fold[s]
    scored = {s: evaluate_ctc(np.stack(preds[s]), np.stack(gts)) for s in splits}
    pooled = {s: scored[s]["seg"]["value"] for s in splits}
    unmatched = {s: scored[s]["unmatched_fraction"]["value"] for s in splits}

    print(f"DIC-HeLa leave-frames-out CV: {len(pairs)} annotated frames, {args.folds} folds, "
          f"{args.minutes:g} min training per fold, TTA {'off' if args.no_tta else '8-fold'}, "
          f"objects < {args.min_size} px removed")
    print(f"{'fold':<6}{'held-out frames':<40}{'steps':>8}" + "".join(f"{'SEG ' + s:>16}" for s in splits))
    for i, held, nsteps, segs in rows:
        print(f"{i:<6}{', '.join(held):<40}{nsteps:>8}" + "".join(f"{segs[s]:>16.4f}" for s in splits))
    print("pooled SEG over all reference objects: " + ", ".join(f"{pooled[s]:.4f} (split {s})" for s in splits)
          + "  (paper, 2015 test set: 0.7756)")
    print("predicted objects overlapping no reference cell: " + ", ".join(f"{unmatched[s]:.1%} (split {s})" for s in splits)
          + "  (issue target <= 5%)")
    print(json.dumps({"seg_pooled": {s: round(pooled[s], 4) for s in splits},
                      "unmatched_fraction": {s: round(unmatched[s], 4) for s in splits}, "folds": args.folds,
                      "minutes_per_fold": args.minutes, "steps_per_fold": steps,
                      "total_minutes": round((time.monotonic() - t0) / 60, 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
