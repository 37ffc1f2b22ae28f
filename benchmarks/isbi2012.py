"""ISBI 2012 with the CPU recipe: the full ``isbi2012`` protocol on held-out sections 20-23,
and the 30 unlabelled test sections written in the challenge's submission format.

    .venv/bin/python benchmarks/isbi2012.py [--minutes 28] [--out /tmp/unetseg-isbi2012]
    .venv/bin/python benchmarks/isbi2012.py --run RUN_DIR      # score an already trained run

Trains ``configs/isbi2012-cpu.yaml`` on sections 00-19 for ``--minutes`` (the schedule is
fitted to the time as in ``isbi_vs_monai.py``), then with the final weights (no
model selection on 20-23):

* predicts 20-23 with overlap-tile + 8-fold TTA and evaluates them with the full ISBI 2012
  protocol (pixel error and its F1 form, Rand error, V_rand and V_info after thinning, warping
  error and its splits-and-mergers part, each at its best threshold), writing
  ``OUT/eval/metrics.json``, ``metrics.csv`` and ``report.html``;
* predicts the 30 test sections the same way and writes ``OUT/isbi2012-test-probabilities.tif``:
  a 30-page 32-bit float TIFF, values in [0, 1], high inside cells (the submission format).

Sections 20-23 are never used for training or tuning here, and the test sections never for
anything but the submission stack.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from unetseg.evaluate import evaluate_to_folder
from unetseg.io import list_images, read_image, write_image
from unetseg.models import load_with_config
from unetseg.normalize import normalize
from unetseg.train.validate import predict_probs

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("isbi_vs_monai", HERE / "isbi_vs_monai.py")
side_by_side = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(side_by_side)


def cell_probabilities(model, card, images: list[np.ndarray]) -> np.ndarray:
    """Class-1 (cell) probabilities with the model's own normalisation and output shift,
    overlap-tile + 8-fold TTA."""
    spec, shift = card.normalization, card.output_shift
    cpu = torch.device("cpu")
    return np.stack([predict_probs(model, normalize(im, spec)[None], tta=True, device=cpu, output_shift=shift)[1] for im in images])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=28.0)
    ap.add_argument("--data", default=str(side_by_side.REPO.parent / "shared" / "data" / "isbi2012"))
    ap.add_argument("--config", default=str(side_by_side.REPO / "configs" / "isbi2012-cpu.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--run", help="an already trained run folder: skip training")
    ap.add_argument("--out", default="/tmp/unetseg-isbi2012")
    args = ap.parse_args()
    data, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    if args.run:
        run = Path(args.run)
    else:
        train_args = argparse.Namespace(
            minutes=args.minutes, config=args.config, overrides=args.overrides, out=str(out),
            ours_steps=None, probe_steps=25, probe_warmup=8,
        )
        side_by_side.run_ours(train_args, side_by_side.load_split(data, {"20", "21", "22", "23"}))
        run = out / "ours"
    weights = run / "model-last.safetensors" if (run / "model-last.safetensors").is_file() else run
    model, meta = load_with_config(weights)
    card = meta["card"]

    names = ["20", "21", "22", "23"]
    images = [read_image(data / "images" / f"{n}.png") for n in names]
    labels = np.stack([read_image(data / "labels" / f"{n}.png") for n in names])
    probs = cell_probabilities(model, card, images)
    metrics = evaluate_to_folder("isbi2012", probs, labels, out / "eval", images=np.stack(images), names=names,
                                 extra={"run": str(run), "tta": "8-fold"})

    test_files = list_images(data / "test")
    test = cell_probabilities(model, card, [read_image(p) for p in test_files]).astype(np.float32)
    write_image(out / "isbi2012-test-probabilities.tif", test, compression=None)

    keys = ("pixel_error", "pixel_error_f1", "rand_error", "v_rand", "v_info", "warping_error", "warping_error_splits_mergers")
    print(f"ISBI 2012, run {run}, sections 20-23, 8-fold TTA (final weights)")
    for k in keys:
        print(f"{k:<32}{metrics[k]['value']:>12.6f}   threshold {metrics[k]['threshold']}")
    print(f"report: {out / 'eval' / 'report.html'}; submission stack ({len(test_files)} sections): "
          f"{out / 'isbi2012-test-probabilities.tif'}")
    print(json.dumps({k: round(float(metrics[k]["value"]), 6) for k in keys}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
