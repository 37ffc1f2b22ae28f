"""Membrane closure on out-of-fold ISBI 2012 maps: does it raise V_rand and lower the warping error?

    .venv/bin/unetseg cv --config configs/isbi2012-cpu.yaml --folds 4 --minutes 7 --out /tmp/cv
    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/isbi_postprocess.py --cv /tmp/cv

Reads the held-out maps that ``unetseg cv`` keeps (``OUT/foldK/held_out/NAME.tif``: each section
predicted by the fold model that never trained on it) and scores, with the full ISBI 2012
protocol, the plain maps and :func:`unetseg.membranes.close_membranes` with each candidate of a
small grid. Per candidate it prints the mean over folds of the per-fold metrics. The honest
figure is the nested one: for each fold the candidate with the best mean V_rand on the *other*
folds is applied to it, and all sections are then scored together (``nested``), against the
plain maps scored the same way (``plain``). No parameter is chosen on the sections it scores.
One JSON line per candidate and a final ``summary`` line, with the CPU's flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402

from unetseg.data import DataConfig, TargetConfig, load_dataset  # noqa: E402
from unetseg.evaluate import evaluate_isbi2012  # noqa: E402
from unetseg.io import read_image  # noqa: E402
from unetseg.membranes import Closure, close_membranes  # noqa: E402
from unetseg.runtime import cpu_flags  # noqa: E402

KEYS = ("v_rand", "pixel_error", "warping_error", "warping_error_splits_mergers", "v_info")


def load_folds(cv: Path, data: Path) -> list[tuple[list[str], np.ndarray, np.ndarray]]:
    """(names, maps, 0/255 labels) per fold, in fold order."""
    cfg = DataConfig(target=TargetConfig(kind="binary", foreground_value=255),
                     weights=dataclasses.replace(DataConfig().weights, enabled=False))
    truth = {it.name: (np.asarray(it.target) > 0).astype(np.uint8) * 255 for it in load_dataset(data, cfg)}
    folds = []
    for folder in sorted(cv.glob("fold*/held_out"), key=lambda p: int(p.parent.name[4:])):
        names = sorted(p.stem for p in folder.glob("*.tif"))
        maps = np.stack([read_image(folder / f"{n}.tif").astype(np.float32) for n in names])
        folds.append((names, maps, np.stack([truth[n] for n in names])))
    if not folds:
        raise SystemExit(f"{cv}: no fold*/held_out/*.tif (run unetseg cv first)")
    return folds


def score(maps: np.ndarray, gts: np.ndarray) -> dict:
    res = evaluate_isbi2012(maps, gts)
    return {k: float(res[k]["value"]) for k in KEYS}


def candidates(args) -> list[Closure | None]:
    grid = itertools.product(args.seed, args.sigma, args.min_seed, args.merge, args.h)
    return [None] + [Closure(seed_threshold=s, sigma=g, min_seed_size=m, merge=None if c < 0 else c, h=h) for s, g, m, c, h in grid]


def name(c: Closure | None) -> str:
    return "plain" if c is None else f"seed{c.seed_threshold}-sigma{c.sigma}-min{c.min_seed_size}-merge{c.merge}-h{c.h}"


def apply(c: Closure | None, maps: np.ndarray) -> np.ndarray:
    return maps if c is None else close_membranes(maps, c)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=Path, required=True, help="an unetseg cv output folder")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "isbi2012")
    ap.add_argument("--seed", type=float, nargs="+", default=[0.8, 0.9, 0.95])
    ap.add_argument("--sigma", type=float, nargs="+", default=[0.0, 1.0, 2.0])
    ap.add_argument("--min-seed", type=int, nargs="+", default=[20])
    ap.add_argument("--h", type=float, nargs="+", default=[0.0], help="distance-maxima seeds of this height (0: threshold seeds)")
    ap.add_argument("--merge", type=float, nargs="+", default=[-1.0], help="merge thresholds; -1 = no merging")
    args = ap.parse_args()
    folds = load_folds(args.cv, args.data)
    table = {}
    for c in candidates(args):
        t0 = time.perf_counter()
        per_fold = [score(apply(c, maps), gts) for _, maps, gts in folds]
        table[name(c)] = (c, per_fold)
        mean = {k: float(np.mean([f[k] for f in per_fold])) for k in KEYS}
        print(json.dumps({"candidate": name(c), "mean_over_folds": mean, "per_fold_v_rand": [f["v_rand"] for f in per_fold],
                          "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    chosen = []
    for k in range(len(folds)):
        others = {n: np.mean([f["v_rand"] for j, f in enumerate(pf) if j != k]) for n, (_, pf) in table.items()}
        chosen.append(max(others, key=others.get))
    nested = np.concatenate([apply(table[chosen[k]][0], maps) for k, (_, maps, _) in enumerate(folds)])
    gts = np.concatenate([g for _, _, g in folds])
    plain = np.concatenate([maps for _, maps, _ in folds])
    print(json.dumps({"summary": True, "chosen_per_fold": chosen, "plain": score(plain, gts), "nested": score(nested, gts),
                      "sections": int(gts.shape[0]), "cv": str(args.cv), **cpu_flags()}), flush=True)


if __name__ == "__main__":
    main()
