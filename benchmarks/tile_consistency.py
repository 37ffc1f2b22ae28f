"""Does the output tile size change a model's map? Out-of-fold ISBI 2012 scores per tile size.

    .venv/bin/unetseg cv --config configs/isbi2012-cpu.yaml --folds 4 --minutes 7 \
        --set model.args.norm=instance --out /tmp/cv-instance
    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/tile_consistency.py --cv /tmp/cv-instance --tiles 0 260 132

Overlap-tile inference of a valid U-Net without normalisation, or with batch norm's stored
statistics, gives the same map for every tile size (``tests/test_predict.py``). Instance norm
normalises every tile by that tile's own mean and variance, so its map can change with the tile
and show seams where tiles meet. For each fold of an ``unetseg cv`` folder this predicts the
fold's held-out sections again (8-fold TTA with ``--tta``, the card's post-processing) with each
output tile size in ``--tiles`` (0: the tile the predictor picks by itself from its memory
budget, one tile per 512 x 512 section here), scores all sections pooled with the ISBI 2012
protocol, and compares the foreground probability with that of the first tile size: largest and
mean absolute difference, the share of pixels that change side of 0.5, and the mean absolute
difference within 4 pixels of a tile border against elsewhere (a seam shows as the first much
larger than the second). One JSON line per tile size, with the CPU's flags.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402

from unetseg.cv import evaluate_predictions, headline, reference_labels  # noqa: E402
from unetseg.data import load_dataset  # noqa: E402
from unetseg.inference import Predictor  # noqa: E402
from unetseg.runtime import cpu_flags  # noqa: E402
from unetseg.train.config import load_train_config  # noqa: E402


def border_mask(shape: tuple[int, ...], plan, width: int = 4) -> np.ndarray:
    """True within ``width`` pixels of a boundary between two of the plan's output tiles (none for one tile).

    >>> from types import SimpleNamespace as NS
    >>> plan = NS(axes=((NS(keep_start=0, keep_stop=5), NS(keep_start=5, keep_stop=10)), (NS(keep_start=0, keep_stop=3),)))
    >>> border_mask((10, 3), plan, width=1)[:, 0].astype(int).tolist()
    [0, 0, 0, 0, 1, 1, 0, 0, 0, 0]
    """
    mask = np.zeros(shape, dtype=bool)
    for axis, tiles in enumerate(plan.axes):
        for tile in tiles[1:]:
            index = [slice(None)] * len(shape)
            index[axis] = slice(max(tile.keep_start - width, 0), tile.keep_start + width)
            mask[tuple(index)] = True
    return mask


def predict_maps(predictor: Predictor, images: list[np.ndarray], tile: int, tta: bool) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Post-processed foreground maps of 2D ``images`` ``(H, W)`` or ``(channels, H, W)`` with output tile
    ``tile`` (0: automatic), and their tile-border masks."""
    maps, borders = [], []
    for image in images:
        image = np.asarray(image, dtype=np.float32)
        image = image[None] if image.ndim == 2 else image
        target = np.empty((predictor.num_classes, *image.shape[1:]), dtype=np.float32)
        plan = predictor.predict_into(image, target, tile_shape=tile or None, tta=tta)
        maps.append(predictor.postprocess(target)[predictor.card.foreground_class])
        borders.append(border_mask(image.shape[1:], plan))
    return maps, borders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cv", type=Path, required=True, help="an `unetseg cv` folder (fold0, fold1, ... and cv.json)")
    ap.add_argument("--tiles", type=int, nargs="+", default=[0, 260, 132], help="output tile sizes (0: automatic)")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "isbi2012", help="the labelled sections")
    ap.add_argument("--no-tta", dest="tta", action="store_false")
    args = ap.parse_args()
    summary = json.loads((args.cv / "cv.json").read_text())
    cfg = load_train_config(args.cv / "fold0" / "config.yaml")  # the folds share the data section
    by_name = {it.name: it for it in load_dataset(args.data, cfg.data)}
    folds = [([by_name[n] for n in f["held_out"]], Predictor.from_path(args.cv / f"fold{f['fold']}")) for f in summary["folds"]]
    gts = [reference_labels(it, "isbi2012") for items, _ in folds for it in items]
    print(json.dumps({"cpu": cpu_flags(), "cv": str(args.cv), "tiles": args.tiles, "tta": args.tta}), flush=True)
    reference = None
    for tile in args.tiles:
        t0 = time.perf_counter()
        maps, borders = [], []
        for items, predictor in folds:
            m, b = predict_maps(predictor, [it.image for it in items], tile, args.tta)
            maps += m
            borders += b
        row = {"tile": tile, **headline(evaluate_predictions("isbi2012", maps, gts), "isbi2012"),
               "seconds": round(time.perf_counter() - t0, 1)}
        if reference is None:
            reference = maps
        else:
            now, ref, seam = np.stack(maps), np.stack(reference), np.stack(borders)
            diff = np.abs(now - ref)
            row.update(max_abs_diff=float(diff.max()), mean_abs_diff=float(diff.mean()), flipped=float(np.mean((now > 0.5) != (ref > 0.5))),
                       diff_at_tile_borders=float(diff[seam].mean()) if seam.any() else None,
                       diff_elsewhere=float(diff[~seam].mean()))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
