"""Instance post-processing of DIC-HeLa on out-of-fold probabilities, and where the false objects are.

    .venv/bin/unetseg cv --config configs/hela.yaml --folds 3 --minutes 9 --out /tmp/cv-hela
    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/hela_postprocess.py --cv /tmp/cv-hela
    ... --split border --min-size 50 --threshold 0.5 0.6 0.7   # a recipe with a border class

Each held-out frame of the ``unetseg cv`` folder is predicted again (8-fold TTA, the card's
normalisation and output shift) by the fold model that never trained on it, and turned into
instances with every candidate of a small grid (split none/distance, or border for a recipe with
a border class, minimum size, threshold, and the minimum size of objects touching the frame's
edge, ``--edge-min-size``: cells cut by the frame that the reference leaves unannotated).
For each candidate it prints the per-fold mean CTC SEG (per frame, then over the fold's frames)
and the share of predicted objects that touch no reference cell, over all frames and over the
frames whose annotation is complete (:func:`unetseg.data.targets.partial_frames`: a frame with
fewer than half the median number of annotated cells is partial, and its unannotated cells
count as false objects there although they are cells). The table itself is not a tuned result:
a candidate's row is scored on the frames it would be chosen on. The cross-validated figure is
the nested one at the end: for each fold the candidate with the best pooled SEG on the *other*
folds' frames is applied to it (a tie, as SEG ignores objects on no cell, going to the fewest
false objects there), and all frames are then scored together. Ends with one JSON line
per candidate, then a summary line (chosen candidate per fold, nested SEG), with the CPU's flags.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from isbi_weight_averaging import training_tiles  # noqa: E402

from unetseg.data.targets import partial_frames  # noqa: E402
from unetseg.inference import Predictor, predict_array  # noqa: E402
from unetseg.models import load_with_config  # noqa: E402
from unetseg.io import read_image  # noqa: E402
from unetseg.metrics.ctc import seg_score  # noqa: E402
from unetseg.postprocess import instances_from_probabilities  # noqa: E402
from unetseg.runtime import cpu_flags  # noqa: E402
from unetseg.train.batchnorm import recompute_statistics  # noqa: E402


def fold_predictor(fold: Path, data: Path, bn_refresh: int, *, tiles: str = "plain", seed: int = 12345) -> Predictor:
    """The fold's model, its batch-norm statistics recomputed over ``bn_refresh`` training tiles if
    > 0: ``plain`` crops as training draws them now, ``augmented`` ones as it did before, or
    ``geometric`` (augmented without the intensity part)."""
    if not bn_refresh:
        return Predictor.from_path(fold)
    model, meta = load_with_config(fold / "model.safetensors")
    torch.manual_seed(0)  # the dropout of the pass that collects the statistics: the same on every call
    recompute_statistics(model, training_tiles(fold, data, model, bn_refresh, tiles=tiles, seed=seed))
    return Predictor(model, card=meta["card"])


def held_out(cv: Path, data: Path, sequence: str, bn_refresh: int = 0, *, tiles: str = "plain") -> list[tuple[int, str, np.ndarray, np.ndarray]]:
    """(fold, frame, class probabilities, reference labels) of every held-out frame."""
    out = []
    for fold in sorted(cv.glob("fold*")):
        predictor = fold_predictor(fold, data, bn_refresh, tiles=tiles)
        for f in sorted((fold / "held_out").glob("*.tif")):
            frame = f.stem.split("_t")[-1]
            prob = predict_array(predictor, read_image(data / sequence / f"t{frame}.tif"), output="prob", tta=True)
            gt = read_image(data / f"{sequence}_GT" / "SEG" / f"man_seg{frame}.tif")  # 2 classes: the cell map alone
            out.append((int(fold.name[4:]), frame, np.stack([1.0 - prob, prob]) if prob.ndim == 2 else prob, gt))
    return out


EDGES = ("top", "bottom", "left", "right")


def false_ids(gt: np.ndarray, labels: np.ndarray) -> set[int]:
    """Ids of the predicted objects that touch no reference cell."""
    return set(np.unique(labels[labels > 0]).tolist()) - set(np.unique(labels[(labels > 0) & (gt > 0)]).tolist())


def false_objects(gt: np.ndarray, labels: np.ndarray) -> tuple[int, int]:
    """(predicted objects touching no reference cell, predicted objects)."""
    return len(false_ids(gt, labels)), len(np.unique(labels[labels > 0]))


def false_objects_at_edges(gt: np.ndarray, labels: np.ndarray) -> dict[str, int]:
    """How many predicted objects touching no reference cell touch each edge of the frame
    (``none``: no edge), to tell unannotated cells cut by the frame from objects in open background."""
    false = false_ids(gt, labels)
    rims = dict(zip(EDGES, (labels[0], labels[-1], labels[:, 0], labels[:, -1])))
    at = {e: {int(i) for i in np.unique(rim)} & false for e, rim in rims.items()}
    return {**{e: len(ids) for e, ids in at.items()}, "none": len(false - set().union(*at.values()))}


def edge_areas(labels: np.ndarray, ids=None) -> list[int]:
    """Pixel counts of the objects touching the frame's edge (of ``ids`` only, if given), smallest first."""
    rim = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    keep = [int(i) for i in rim if i and (ids is None or i in ids)]
    return sorted(int(np.count_nonzero(labels == i)) for i in keep)


def matches(gt: np.ndarray, labels: np.ndarray) -> tuple[int, list[float]]:
    """(reference cells no predicted object covers by more than half, as SEG leaves them at 0;
    area of the covering object / area of the cell, for every covered cell)."""
    missed, ratios = 0, []
    for r in np.unique(gt[gt > 0]):
        cell = gt == r
        ids, counts = np.unique(labels[cell], return_counts=True)
        over = [i for i, c in zip(ids, counts) if i and c > 0.5 * cell.sum()]
        if over:
            ratios.append(float((labels == over[0]).sum() / cell.sum()))
        else:
            missed += 1
    return missed, ratios


def score(frames, split: str, min_size: int, threshold: float, edge_min_size: int = 0) -> tuple[list[tuple[int, float, int, int]], dict]:
    """(per frame: fold, SEG, reference objects, false objects if the frame's annotation is complete; the candidate's summary)."""
    partial = dict(zip([f for _, f, _, _ in frames], partial_frames([gt for *_, gt in frames])))
    per_fold: dict[int, list[float]] = {}
    per_object: list[float] = []  # each frame's SEG once per reference object: SEG pooled as `unetseg cv` pools it
    false_all = [0, 0]
    false_complete = [0, 0]
    edges_complete = dict.fromkeys((*EDGES, "none"), 0)  # the complete frames' false objects by the frame edge they touch
    missed: dict[str, int] = {}
    rows: list[tuple[int, float, int, int]] = []  # (fold, SEG, reference objects, false objects) per frame, for the nested choice
    area_ratios: list[float] = []
    false_edge_areas: list[int] = []  # pixel counts of the complete frames' false objects at the edge
    for fold, frame, probs, gt in frames:
        labels = instances_from_probabilities(probs, threshold_value=threshold, foreground_class=1, split=split, min_size=min_size,
                                              border_class=2 if probs.shape[0] == 3 else None, edge_min_size=edge_min_size)
        per_fold.setdefault(fold, []).append(seg_score(gt, labels))
        per_object += [per_fold[fold][-1]] * len(np.unique(gt[gt > 0]))
        bad, n = false_objects(gt, labels)
        rows.append((fold, per_fold[fold][-1], len(np.unique(gt[gt > 0])), 0 if partial[frame] else bad))
        false_all = [false_all[0] + bad, false_all[1] + n]
        lost, ratios = matches(gt, labels)
        missed[frame], area_ratios = lost, area_ratios + ratios
        if not partial[frame]:
            false_complete = [false_complete[0] + bad, false_complete[1] + n]
            at = false_objects_at_edges(gt, labels)
            edges_complete = {e: k + at[e] for e, k in edges_complete.items()}
            false_edge_areas += edge_areas(labels, false_ids(gt, labels))
    folds = [float(np.mean(v)) for _, v in sorted(per_fold.items())]
    return rows, {"split": split, "min_size": min_size, "threshold": threshold, "edge_min_size": edge_min_size, "seg_per_fold": [round(s, 4) for s in folds],
            "seg_mean": round(float(np.mean(folds)), 4), "seg_pooled": round(float(np.mean(per_object)), 4), "false_objects": false_all, "false_objects_complete_frames": false_complete,
            "false_objects_complete_frames_by_edge": edges_complete, "false_objects_complete_frames_edge_areas": sorted(false_edge_areas),
            "missed_cells_per_frame": missed, "area_ratio_median": round(float(np.median(area_ratios)), 3) if area_ratios else None,
            "partial_frames": sorted(f for f, p in partial.items() if p)}


def nested(table: dict[tuple[str, int, float, int], list[tuple[int, float, int, int]]]) -> dict:
    """Each fold scored with the candidate whose pooled SEG is best on the other folds' frames, a
    tie (SEG ignores objects that match no cell) going to the fewest false objects there, then to
    the first candidate; ``table`` maps each candidate to ``score``'s rows."""
    candidates = list(table)

    def pooled(rows, keep) -> float:
        rows = [(s, n) for f, s, n, _ in rows if keep(f)]
        return sum(s * n for s, n in rows) / max(sum(n for _, n in rows), 1)

    def rank(c, f) -> tuple[float, int]:
        return round(pooled(table[c], lambda g: g != f), 6), -sum(b for g, *_, b in table[c] if g != f)

    folds = sorted({f for f, *_ in table[candidates[0]]})
    chosen = {f: max(candidates, key=lambda c: rank(c, f)) for f in folds}
    rows = [row for f in folds for row in table[chosen[f]] if row[0] == f]
    return {"nested_seg_pooled": round(pooled(rows, lambda f: True), 4), "nested_false_objects_complete_frames": sum(r[3] for r in rows),
            "chosen_per_fold": {str(f): dict(zip(("split", "min_size", "threshold", "edge_min_size"), c)) for f, c in chosen.items()}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cv", type=Path, required=True, help="an `unetseg cv` folder of a HeLa recipe")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "DIC-C2DH-HeLa")
    ap.add_argument("--sequence", default="01")
    ap.add_argument("--split", nargs="+", default=["none", "distance"], help="none, distance; border for a 3-class (border) recipe")
    ap.add_argument("--min-size", nargs="+", type=int, default=[50, 150])
    ap.add_argument("--threshold", nargs="+", type=float, default=[0.5, 0.6])
    ap.add_argument("--edge-min-size", nargs="+", type=int, default=[0],
                    help="remove objects touching the frame's edge under this many pixels (0 = off)")
    ap.add_argument("--bn-refresh", type=int, default=0,
                    help="recompute each fold model's batch-norm statistics over N tiles of its training frames first "
                         "(for folds trained before batch_norm.refresh_tiles, or before it left out the augmentation)")
    ap.add_argument("--bn-tiles", choices=("plain", "augmented", "geometric"), default="plain",
                    help="--bn-refresh over plain crops (as training does since the twenty-second session) or augmented tiles (before), or geometric (augmented without intensity changes)")
    args = ap.parse_args(argv)
    frames = held_out(args.cv, args.data, args.sequence, args.bn_refresh, tiles=args.bn_tiles)
    print(f"smallest annotated cell touching the frame's edge: {min(a for *_, gt in frames for a in edge_areas(gt))} px", flush=True)
    candidates = list(itertools.product(args.split, args.min_size, args.threshold, sorted(args.edge_min_size)))
    table = {}
    for split, min_size, threshold, edge in candidates:
        table[(split, min_size, threshold, edge)], r = score(frames, split, min_size, threshold, edge)
        fa, fc = r["false_objects"], r["false_objects_complete_frames"]
        print(f"split {split:8s} min {min_size:4d} thr {threshold:.2f} edge {edge:4d}: SEG per fold {r['seg_per_fold']} mean {r['seg_mean']:.4f} pooled {r['seg_pooled']:.4f}; "
              f"false objects {fa[0]}/{fa[1]} ({fa[0] / max(fa[1], 1):.3f}), in complete frames {fc[0]}/{fc[1]} "
              f"({fc[0] / max(fc[1], 1):.3f}; touching the frame's edges {r['false_objects_complete_frames_by_edge']}, "
              f"their px {r['false_objects_complete_frames_edge_areas']}); cells missed {sum(r['missed_cells_per_frame'].values())} "
              f"(most in one frame {max(r['missed_cells_per_frame'].values())}), matched object / cell area median {r['area_ratio_median']}", flush=True)
        print(json.dumps({**r, "cpu_flags": cpu_flags()}), flush=True)
    summary = nested(table)
    print(f"nested over folds (each fold's setting chosen on the other folds): pooled SEG {summary['nested_seg_pooled']:.4f}, "
          f"false objects in complete frames {summary['nested_false_objects_complete_frames']}; "
          + "; ".join(f"fold {f}: {c['split']} min {c['min_size']} thr {c['threshold']} edge {c['edge_min_size']}"
                      for f, c in summary["chosen_per_fold"].items()))
    print(json.dumps({"summary": True, **summary, "cpu_flags": cpu_flags()}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
