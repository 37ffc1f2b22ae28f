"""Where the ISBI pixel error comes from: errors near the ground-truth boundaries vs far from them.

    .venv/bin/python benchmarks/isbi_error_bands.py /tmp/isbi_vs_monai/ours_probs.npy [/tmp/isbi_vs_monai/monai_probs.npy ...]

Each argument is a stack of cell probabilities for sections 20-23 as ``isbi_vs_monai.py`` saves
them (``ours_probs.npy``, ``monai_probs.npy``). At each stack's best threshold of the ISBI grid
(th = 0.0 ... 0.9, as the pixel error of :func:`unetseg.evaluate.evaluate_isbi2012`) the plain pixel
error is split by :func:`unetseg.metrics.pixel_error_by_distance` into errors within 1 px of a
ground-truth cell/membrane boundary, between 1 and 2 px, and farther; and into false membrane (cell
pixels called membrane) and false cell.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from unetseg.data import DataConfig, TargetConfig, load_dataset  # noqa: E402
from unetseg.metrics import isbi_thresholds, pixel_error, pixel_error_by_distance, warping_error  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probs", nargs="+", help=".npy stacks of cell probabilities of sections 20-23")
    ap.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "isbi2012"))
    ap.add_argument("--topology", action="store_true", help="also count SPLIT and MERGE pixels at the best threshold")
    args = ap.parse_args()
    cfg = DataConfig(target=TargetConfig(kind="binary", foreground_value=255),
                     weights=dataclasses.replace(DataConfig().weights, enabled=False))
    names = {f"{i:02d}" for i in range(20, 24)}
    gt = np.stack([it.target > 0 for it in load_dataset(Path(args.data), cfg) if it.name in names])
    print(f"{'stack':40s} {'th':>4s} {'pixel err':>9s} {'<=1 px':>8s} {'1-2 px':>8s} {'>2 px':>8s} {'false memb':>10s} {'false cell':>10s}")
    for path in args.probs:
        p = np.load(path).astype(np.float64)
        if p.shape != gt.shape:
            raise SystemExit(f"{path}: expected a stack of shape {gt.shape}, got {p.shape}")
        errors = [pixel_error(gt, p > th) for th in isbi_thresholds(0.9)]
        k = int(np.argmin(errors))
        th = isbi_thresholds(0.9)[k]
        pred = p > th
        bands = np.mean([pixel_error_by_distance(g, m) for g, m in zip(gt, pred)], axis=0)
        false_membrane, false_cell = np.mean(gt & ~pred), np.mean(~gt & pred)
        print(f"{str(path)[-40:]:40s} {th:4.1f} {errors[k]:9.4f} {bands[0]:8.4f} {bands[1]:8.4f} {bands[2]:8.4f} "
              f"{false_membrane:10.4f} {false_cell:10.4f}")
        if args.topology:
            print(topology_line(gt, p))
    return 0


def topology_line(gt: np.ndarray, p: np.ndarray) -> str:
    """SPLIT and MERGE pixels (summed over sections) at the threshold that minimises their sum."""
    counts = []
    for th in isbi_thresholds(0.9):
        per = [warping_error(g, q, th).counts for g, q in zip(gt, p)]
        counts.append((sum(c["split"] for c in per), sum(c["merge"] for c in per), th))
    split, merge, th = min(counts, key=lambda c: c[0] + c[1])
    return (f"{'':40s} {th:4.1f} splits+mergers {(split + merge) / gt.size:.5f}: "
            f"{split} split px, {merge} merge px")


if __name__ == "__main__":
    sys.exit(main())
