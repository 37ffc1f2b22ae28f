"""Where the ISBI 2012 labels lie relative to the images, and what the output shift buys.

    .venv/bin/python benchmarks/isbi_label_offset.py [--run RUN --probs PROBS.npy] ...

1. Without any model: for each *training* section (00-19) the mean intensity of the pixels
   labelled membrane minus that of the pixels labelled cell, after moving the image by ``dy``
   rows (linear interpolation). Membranes are dark, so the most negative contrast marks the
   displacement at which the labels fit the image best; a label grid aligned with the image
   would give ``dy = 0``.
2. For each ``--run RUN --probs PROBS.npy`` pair (a run folder of ``benchmarks/isbi_vs_monai.py``
   trained without ``calibration.output_shift`` and the probability stack of sections 20-23 it
   saved; calibrated runs are skipped, their stacks are shifted already): the output shift estimated on the
   training sections with the run's final weights (:func:`unetseg.train.calibrate.calibrate_model`,
   the recipe's settings), and the ISBI 2012 protocol on 20-23 without and with that shift. The
   shift never looks at 20-23.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import numpy as np  # noqa: E402
from scipy import ndimage as ndi  # noqa: E402

from unetseg.evaluate import evaluate_isbi2012  # noqa: E402
from unetseg.io import read_image  # noqa: E402
from unetseg.predict import shift_probabilities  # noqa: E402

TRAIN = [f"{i:02d}" for i in range(20)]
VAL = ["20", "21", "22", "23"]


def label_contrast(data: Path, shifts: np.ndarray) -> np.ndarray:
    """(sections, shifts) membrane-minus-cell mean intensity with the image moved by ``dy`` rows."""
    out = np.zeros((len(TRAIN), len(shifts)))
    for i, name in enumerate(TRAIN):
        image = read_image(data / "images" / f"{name}.png").astype(np.float32)
        membrane = read_image(data / "labels" / f"{name}.png") == 0
        c = 8  # leave out the rows the shift fills from the edge
        m = membrane[c:-c, c:-c]
        for j, dy in enumerate(shifts):
            moved = ndi.shift(image, (dy, 0.0), order=1, mode="nearest")[c:-c, c:-c]
            out[i, j] = moved[m].mean() - moved[~m].mean()
    return out


def protocol(probs: np.ndarray, gt: np.ndarray) -> dict:
    res = evaluate_isbi2012(probs.astype(np.float32), gt)
    return {k: res[k]["value"] for k in ("pixel_error", "v_rand", "warping_error")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "isbi2012"))
    ap.add_argument("--run", action="append", default=[], help="run folder (its model-last.safetensors)")
    ap.add_argument("--probs", action="append", default=[], help="its probabilities of 20-23 (N, H, W)")
    args = ap.parse_args()
    data = Path(args.data)
    if not (data / "labels").is_dir():
        print(f"no ISBI 2012 data at {data}; nothing to do")
        return 0
    if len(args.run) != len(args.probs):
        ap.error("give one --probs per --run")

    shifts = np.round(np.arange(-1.5, 1.5001, 0.25), 2)
    contrast = label_contrast(data, shifts)
    mean = contrast.mean(0)
    print("1. membrane-minus-cell intensity of the training sections with the image moved by dy rows")
    print("   dy:       " + " ".join(f"{s:>6.2f}" for s in shifts))
    print("   contrast: " + " ".join(f"{v:>6.2f}" for v in mean))
    best = shifts[np.argmin(contrast, axis=1)]
    print(f"   darkest membranes at dy = {shifts[np.argmin(mean)]:+.2f} on average; per section: "
          f"{', '.join(f'{v:+.2f}' for v in best)}")
    print("   (dy < 0: the image content matches the labels after moving up, i.e. the labels sit above it)")

    if args.run:
        import torch

        from isbi_vs_monai import load_split
        from unetseg.models import load_with_config
        from unetseg.train.calibrate import calibrate_model
        from unetseg.train.config import load_train_config

        torch.set_num_threads(2)
        gt = np.stack([(read_image(data / "labels" / f"{n}.png") > 0).astype(np.uint8) * 255 for n in VAL])
        train_items = load_split(data, set(TRAIN))
        print("\n2. output shift estimated on the training sections; ISBI protocol on 20-23 (8-fold TTA stacks)")
        print(f"   {'run':<28} {'shift (y, x)':>14} {'pixel error':>18} {'V_rand':>16} {'warping':>18}")
        for run, probs_path in zip(args.run, args.probs):
            run = Path(run)
            model, meta = load_with_config(run / "model-last.safetensors")
            if meta["card"].output_shift is not None:  # its saved probabilities are shifted already
                print(f"   {str(run):<28} trained with calibration (shift {list(meta['card'].output_shift)}): nothing to re-score")
                continue
            calib = load_train_config(run / "config.yaml").calibration
            shift, _report = calibrate_model(model, train_items, calib, device=torch.device("cpu"))
            probs = np.load(probs_path)
            before = protocol(probs, gt)
            after = protocol(np.stack([shift_probabilities(p[None], shift)[0] for p in probs]), gt)
            print(f"   {str(run):<28} {str(list(shift)):>14} {before['pixel_error']:.4f} -> {after['pixel_error']:.4f} "
                  f"{before['v_rand']:.4f} -> {after['v_rand']:.4f} {before['warping_error']:.5f} -> {after['warping_error']:.5f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
