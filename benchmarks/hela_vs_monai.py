"""DIC-HeLa side by side by cross-validation: an ``unetseg cv`` folder vs the MONAI baseline.

    .venv/bin/unetseg cv --config configs/hela.yaml --folds 3 --minutes 9 --out /tmp/cv-hela
    flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/hela_vs_monai.py --ours-cv /tmp/cv-hela --minutes 9

Ours: the held-out instance labels ``unetseg cv`` wrote (``OUT/foldK/held_out/NAME.tif``, made by
the fold model with the post-processing its card records). MONAI (:mod:`monai_baseline`: BasicUNet,
DiceCE on cell vs background, the same ``--minutes`` per fold, bf16 where the CPU has it) trains
on the same folds (read from ``cv.json``), predicts the held-out frames with sliding window and
8-fold TTA, and its foreground probability becomes instances the two ways a MONAI user would
choose from: connected components, and a distance-transform watershed (both with objects under
50 px removed, threshold 0.5). The reference frames are used as they are (``man_seg067`` labels
3 of its cells; the other cells there are background for MONAI's loss). Prints per fold and
pooled CTC SEG (pooled: all reference objects of all frames) and the share of predicted objects
that touch no reference cell (over all frames, and over the frames annotated completely), with the
CPU's flags; needs the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hela_postprocess import false_objects  # noqa: E402
from monai_baseline import predict_monai, train_monai  # noqa: E402
from unetseg import runtime  # noqa: E402
from unetseg.data import LabeledImage  # noqa: E402
from unetseg.data.targets import partial_frames  # noqa: E402
from unetseg.io import read_image  # noqa: E402
from unetseg.metrics.ctc import seg_score  # noqa: E402
from unetseg.normalize import normalize  # noqa: E402
from unetseg.postprocess import instances_from_probabilities  # noqa: E402

SPLITS = ("none", "distance")


def frame(data: Path, name: str) -> tuple[LabeledImage, np.ndarray]:
    """(item with the percentile-normalised image and 0/1 cell target, reference instance labels) of ``01_tTTT``."""
    seq, t = name.split("_t")
    image = normalize(read_image(data / seq / f"t{t}.tif"), {"method": "percentile", "low": 1.0, "high": 99.8})[None]
    gt = read_image(data / f"{seq}_GT" / "SEG" / f"man_seg{t}.tif")
    target = (gt > 0).astype(np.int64)
    return LabeledImage(name, image.astype(np.float32), target, np.ones(gt.shape, np.float32), np.zeros(gt.shape, bool)), gt


def pooled(gts: list[np.ndarray], labels: list[np.ndarray]) -> dict:
    """SEG over all reference objects of all frames, and the share of predicted objects touching no
    reference cell: over all frames, and over the frames whose annotation is complete (a partial
    frame's unannotated cells count as false objects although they are cells)."""
    per_object, false, complete = [], [0, 0], [0, 0]
    for gt, lab, partial in zip(gts, labels, partial_frames(gts)):
        n = len(np.unique(gt[gt > 0]))
        per_object += [seg_score(gt, lab)] * n  # seg_score averages over the frame's n reference objects
        bad, objects = false_objects(gt, lab)
        false = [false[0] + bad, false[1] + objects]
        if not partial:
            complete = [complete[0] + bad, complete[1] + objects]
    return {"seg": round(float(np.mean(per_object)), 4), "unmatched_fraction": round(false[0] / max(false[1], 1), 4),
            "unmatched_fraction_complete_frames": round(complete[0] / max(complete[1], 1), 4)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours-cv", type=Path, required=True, help="an `unetseg cv` folder of a HeLa recipe")
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "DIC-C2DH-HeLa")
    ap.add_argument("--minutes", type=float, default=9.0, help="MONAI training time per fold")
    ap.add_argument("--monai-precision", default="auto", choices=["auto", "bf16", "fp32"], help="auto: as precision: auto decides")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if not args.data.exists():
        print(json.dumps({"skipped": f"{args.data} not found"}))
        return 0
    args.monai_precision = runtime.resolve_precision(args.monai_precision, torch.device("cpu"))
    folds = json.loads((args.ours_cv / "cv.json").read_text())["folds"]
    names = [n for f in folds for n in f["held_out"]]
    frames = {n: frame(args.data, n) for n in names}
    gts, ours, monai = [], [], {s: [] for s in SPLITS}
    for f in folds:
        held = f["held_out"]
        model, train_s, steps = train_monai(args, [frames[n][0] for n in names if n not in held])
        probs = predict_monai(model, [frames[n][0] for n in held], args.monai_precision)
        fold_gts = [frames[n][1] for n in held]
        fold_ours = [read_image(args.ours_cv / f"fold{f['fold']}" / "held_out" / f"{n}.tif") for n in held]
        fold_monai = {s: [instances_from_probabilities(np.stack([1 - p, p]), split=s, min_size=50) for p in probs] for s in SPLITS}
        gts += fold_gts
        ours += fold_ours
        for s in SPLITS:
            monai[s] += fold_monai[s]
        print(json.dumps({"fold": f["fold"], "held_out": held, "monai_steps": steps, "monai_minutes": round(train_s / 60, 2),
                          "unetseg": pooled(fold_gts, fold_ours), **{f"monai_{s}": pooled(fold_gts, fold_monai[s]) for s in SPLITS}}),
              flush=True)
    print(json.dumps({"pooled": True, "frames": len(gts), "unetseg": pooled(gts, ours), "ours_cv": str(args.ours_cv),
                      **{f"monai_{s}": pooled(gts, monai[s]) for s in SPLITS}, "monai_precision": args.monai_precision,
                      **runtime.cpu_flags()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
