"""Nuclei instance segmentation (Data Science Bowl 2018 sample): train on three quadrants,
object F1 and DSB mean AP on the fourth.

    .venv/bin/python benchmarks/nuclei.py [--minutes 6] [--folds 1] [--data ../shared/data/dsb2018-stardist-sample]

The image and its instance mask are cut into four quadrants. For each fold (``--folds 1``: test
on the bottom-right quadrant; up to 4 rotates the test quadrant), ``configs/nuclei.yaml`` trains
on the other three for ``--minutes``; the test quadrant is segmented with overlap-tile + 8-fold
TTA into instances (connected components of the nucleus class after carved-border training,
optionally a distance-transform watershed, small objects removed) and scored with StarDist-style
matching: precision/recall/F1 at IoU 0.5 and the DSB 2018 mean AP over IoU 0.50:0.95.
By default training stops at the time limit wherever the recipe's schedule is; with
``--fit-schedule`` one speed probe sets ``schedule.steps`` so the schedule ends with the budget.
Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from unetseg.data import discover
from unetseg.evaluate import evaluate_instances
from unetseg.io import read_image, write_image
from unetseg.predict import predict_file
from unetseg.train.config import load_train_config
from unetseg.train.setup import steps_for_budget, train_from_config

REPO = Path(__file__).resolve().parents[1]


def quadrants(array: np.ndarray) -> list[np.ndarray]:
    """Top-left, top-right, bottom-left, bottom-right quadrants of a 2D array."""
    h, w = array.shape[0] // 2, array.shape[1] // 2
    return [array[:h, :w], array[:h, w:], array[h:, :w], array[h:, w:]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "dsb2018-stardist-sample"))
    ap.add_argument("--config", default=str(REPO / "configs" / "nuclei.yaml"))
    ap.add_argument("--minutes", type=float, default=6.0, help="training time per fold")
    ap.add_argument("--folds", type=int, default=1, choices=[1, 2, 3, 4], help="how many quadrants take a turn as test")
    ap.add_argument("--split", default="none", choices=["none", "distance"], help="watershed split of touching nuclei")
    ap.add_argument("--min-size", type=int, default=15)
    ap.add_argument("--no-tta", action="store_true")
    ap.add_argument("--fit-schedule", action="store_true",
                    help="set schedule.steps from a speed probe so the cosine ends with the budget "
                         "(default: the recipe's schedule, cut off by the time limit)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="recipe override KEY=VALUE")
    ap.add_argument("--out", default="/tmp/unetseg-nuclei")
    args = ap.parse_args()

    _, pairs = discover(args.data)
    pair = next(p for p in pairs if p.label is not None)
    image_q, label_q = quadrants(read_image(pair.image)), quadrants(read_image(pair.label))
    out = Path(args.out)
    rows = []
    t0 = time.monotonic()
    steps = None
    for fold, test in enumerate([3, 0, 1, 2][: args.folds]):
        data = out / f"fold{fold}" / "data"
        for sub in ("images", "labels"):
            (data / sub).mkdir(parents=True, exist_ok=True)
        for q in range(4):
            if q != test:
                write_image(data / "images" / f"q{q}.tif", image_q[q])
                write_image(data / "labels" / f"q{q}.tif", label_q[q])
        test_image = out / f"fold{fold}" / "test.tif"
        write_image(test_image, image_q[test])
        cfg = load_train_config(
            args.config, [f"train_data.path={data}", f"runtime.max_minutes={args.minutes}", *args.overrides]
        )
        if args.fit_schedule and steps is None:  # one speed probe: the schedule ends with the time budget
            steps, rate = steps_for_budget(cfg, args.minutes, config_path=args.config)
            print(f"speed probe: {rate:.3f} steps/s -> schedule of {steps} steps per fold", flush=True)
        if steps is not None:
            cfg = dataclasses.replace(cfg, schedule=dataclasses.replace(cfg.schedule, steps=steps))
        run = out / f"fold{fold}" / "run"
        result = train_from_config(cfg, run, config_path=args.config)
        target = out / f"fold{fold}" / "test-labels.tif"
        predict_file(run, test_image, target, output="labels", split=args.split, min_size=args.min_size, tta=not args.no_tta)
        scores = evaluate_instances(read_image(target), label_q[test])
        rows.append((fold, test, result.step, scores))

    print(f"DSB 2018 sample, {args.minutes:g} min training per fold, TTA {'off' if args.no_tta else '8-fold'}, split {args.split}")
    keys = ("precision", "recall", "f1", "mean_ap")
    print(f"{'fold':<6}{'test quadrant':<15}{'steps':>7}" + "".join(f"{k:>11}" for k in keys))
    for fold, test, nsteps, scores in rows:
        vals = [_value(scores, k) for k in keys]
        print(f"{fold:<6}{test:<15}{nsteps:>7}" + "".join(f"{v:>11.4f}" for v in vals))
    summary = {k: round(float(np.mean([_value(s, k) for *_, s in rows])), 4) for k in keys}
    summary.update(folds=args.folds, minutes_per_fold=args.minutes, total_minutes=round((time.monotonic() - t0) / 60, 1))
    print(json.dumps(summary))
    return 0


def _value(scores: dict, key: str) -> float:
    entry = scores[key]
    return float(entry["value"] if isinstance(entry, dict) else entry)


if __name__ == "__main__":
    raise SystemExit(main())
