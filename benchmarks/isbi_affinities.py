"""Learned affinities on ISBI 2012: the mutex watershed against agglomeration, on the same models.

    OFFS='[[-1,0],[1,0],[0,-1],[0,1],[-3,0],[3,0],[0,-3],[0,3],[-9,0],[9,0],[0,-9],[0,9],[-9,-9],[9,9],[-9,9],[9,-9],[-27,0],[27,0],[0,-27],[0,27]]'
    flock /tmp/unetseg-bench.lock .venv/bin/unetseg cv --config configs/isbi2012-cpu.yaml --folds 4 --minutes 7 \\
        --set "model.args.affinity_offsets=$OFFS" --set postprocess.agglomerate=0 --set postprocess.mutex_watershed=true --out /tmp/cv-aff
    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/isbi_affinities.py --cv /tmp/cv-aff

A recipe whose network also predicts affinities (``model.args.affinity_offsets``) is trained by
``unetseg cv``. This script loads each fold's model, predicts its held-out sections once (8-fold
TTA, the card's output shift, holes filled as the card says) with the affinity channels, and
scores with the full ISBI 2012 protocol, pooled over all held-out sections, three ways of
closing the boundaries of the same maps: none, waterz agglomeration (``--agglomerate``, the
committed recipe's 0.1) and the mutex watershed on the predicted affinities. Nothing is chosen
on the scored sections (the mutex watershed has no parameter). One JSON line per variant with
the per-fold V_rand, and the CPU's flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402

from unetseg.affinities import mutex_boundaries  # noqa: E402
from unetseg.cv import pool_split  # noqa: E402
from unetseg.evaluate import evaluate_isbi2012  # noqa: E402
from unetseg.inference import Predictor  # noqa: E402
from unetseg.postprocess import foreground_postprocess  # noqa: E402
from unetseg.runtime import cpu_flags  # noqa: E402
from unetseg.train.config import load_train_config  # noqa: E402
from unetseg.train.setup import load_split  # noqa: E402

KEYS = ("v_rand", "pixel_error", "warping_error", "warping_error_splits_mergers", "v_info")


def held_out_outputs(cv: Path, config: Path) -> list[tuple[str, np.ndarray, np.ndarray, Predictor, int]]:
    """(name, class+affinity outputs, 0/255 labels, fold predictor, fold) of every held-out section."""
    cfg = load_train_config(config)
    items = {it.name: it for it in load_split(pool_split(cfg), cfg, config, "train_data").items}
    rows = []
    for fold in json.loads((cv / "cv.json").read_text())["folds"]:
        predictor = Predictor.from_path(cv / f"fold{fold['fold']}", precision="auto")
        for name in fold["held_out"]:
            it = items[name]
            outputs = predictor.predict(it.image, tta=True, affinities=bool(predictor.affinity_offsets))
            rows.append((name, outputs, (np.asarray(it.target) > 0).astype(np.uint8) * 255, predictor, fold["fold"]))
    return rows


def closed(outputs: np.ndarray, predictor: Predictor, how: str, agglomerate: float) -> np.ndarray:
    """The foreground map with holes filled as the card says, its boundaries closed ``how``:
    ``none``, ``agglomerate`` or ``mutexS`` (the mutex watershed, repulsive edges on a stride-S grid)."""
    c, card = predictor.num_classes, predictor.card
    post = dataclasses.replace(card.postprocess, agglomerate=agglomerate if how == "agglomerate" else 0.0, mutex_watershed=False)
    probs = outputs[:c].copy()
    foreground_postprocess(probs, card.foreground_class, post)
    fg = probs[card.foreground_class]
    if how.startswith("mutex"):
        return mutex_boundaries(fg, outputs[c:], predictor.affinity_offsets, threshold=post.threshold, stride=int(how[5:]))
    return fg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=Path, required=True, help="an unetseg cv output folder of a recipe with affinity outputs")
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "isbi2012-cpu.yaml", help="the recipe (for its data)")
    ap.add_argument("--agglomerate", type=float, default=0.1)
    ap.add_argument("--strides", type=int, nargs="+", default=[1], help="mutex watershed: repulsive edges on these grid strides")
    args = ap.parse_args()
    t0 = time.perf_counter()
    rows = held_out_outputs(args.cv, args.config)
    predict_s = time.perf_counter() - t0
    gts = np.stack([r[2] for r in rows])
    variants = ["none", "agglomerate"] + ([f"mutex{s}" for s in args.strides] if rows[0][3].affinity_offsets else [])
    for how in variants:
        t0 = time.perf_counter()
        maps = np.stack([closed(r[1], r[3], how, args.agglomerate) for r in rows])
        close_s = time.perf_counter() - t0
        res = evaluate_isbi2012(maps, gts)
        folds = sorted({r[4] for r in rows})
        per_fold = [float(evaluate_isbi2012(maps[[r[4] == k for r in rows]], gts[[r[4] == k for r in rows]])["v_rand"]["value"])
                    for k in folds]
        print(json.dumps({"closing": how, **{k: float(res[k]["value"]) for k in KEYS}, "per_fold_v_rand": per_fold,
                          "sections": len(rows), "closing_s": round(close_s, 1), "predict_s": round(predict_s, 1),
                          "cv": str(args.cv), **cpu_flags()}), flush=True)


if __name__ == "__main__":
    main()
