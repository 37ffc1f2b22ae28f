"""Speed of the evaluation metrics on real ISBI 2012 labels.

Measures, in one run:

* the warping error of one 512x512 slice against a realistic prediction (target < 1 s),
  at th = 0.5 and the slowest of the ten thresholds;
* the same warp done one pixel at a time in pure Python (the reference loop), for the ratio
  and to show both give identical results;
* the whole ``isbi2012`` protocol on 6 slices (target < 30 s).

The "realistic prediction" is the ground truth blurred (sigma 2 px), shifted by a sub-pixel
offset and perturbed with spatially correlated noise, which gives a pixel error (~6-8 %)
and topological mistakes (gaps, breaks) of the size a U-Net makes. Seeded, so repeatable.

Run: ``flock /tmp/unetseg-bench.lock .venv/bin/python benchmarks/metrics_speed.py``
(``--quick`` skips the slow pure-Python baseline). The last line printed is JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from unetseg.evaluate import evaluate_isbi2012
from unetseg.io import read_image
from unetseg.metrics import isbi_thresholds, warp, warping_error
from unetseg.metrics.warping import warp_reference

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "isbi2012"


def realistic_prediction(gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    fg = (gt > 0).astype(np.float64)
    blur = ndimage.gaussian_filter(fg, 2.0)
    noise = ndimage.gaussian_filter(rng.normal(0.0, 0.6, gt.shape), 1.5)
    shifted = ndimage.shift(blur + noise, (1.0, 0.5), order=1, mode="nearest")
    return np.clip(shifted, 0.0, 1.0).astype(np.float32)


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the pure-Python baseline")
    ap.add_argument("--data", default=str(DATA), help="isbi2012 folder (labels/00.png ...)")
    args = ap.parse_args(argv)
    labels = Path(args.data) / "labels"
    if not labels.is_dir():
        print(f"{labels} not found", file=sys.stderr)
        return 2
    rng = np.random.default_rng(2012)
    gts = np.stack([read_image(labels / f"{i:02d}.png") for i in range(6)])
    probs = np.stack([realistic_prediction(g, rng) for g in gts])
    gt0, p0 = gts[0], probs[0]
    pe = float(np.mean((p0 > 0.5) != (gt0 > 0)))
    print(f"machine: {platform.processor() or platform.machine()}, python {platform.python_version()}")
    print(f"slice 0: 512x512, pixel error of the prediction at 0.5 = {pe:.4f}")

    t_half, r = timed(lambda: warping_error(gt0, p0, 0.5), repeat=3)
    print(f"warping error, 1 slice, th=0.5:   {t_half:.3f} s  (error {r.error:.6f}, {len(r.mismatches)} mismatches, "
          f"splits+mergers {r.splits_mergers_error:.6f})")
    per_th = {}
    for th in isbi_thresholds(0.9):
        per_th[th], _ = timed(lambda th=th: warping_error(gt0, p0, th))
    worst_th = max(per_th, key=per_th.get)
    print(f"warping error, 1 slice, slowest threshold th={worst_th:.2f}: {per_th[worst_th]:.3f} s; "
          f"all 10 thresholds: {sum(per_th.values()):.3f} s")

    result = {
        "benchmark": "metrics_speed",
        "warp_1slice_th05_s": round(t_half, 4),
        "warp_1slice_worst_th_s": round(per_th[worst_th], 4),
        "warp_1slice_all10_s": round(sum(per_th.values()), 4),
        "target_warp_1slice_s": 1.0,
    }
    if not args.quick:
        for th in (0.5, worst_th):
            t_vec, (w1, m1) = timed(lambda th=th: warp(gt0, p0, th))
            t_naive, (w2, m2) = timed(lambda th=th: warp_reference(gt0, p0, th))
            same = bool(np.array_equal(w1, w2) and np.array_equal(m1, m2))
            print(f"warp only, th={th:.2f}: vectorised {t_vec:.3f} s vs pure-Python reference loop {t_naive:.3f} s "
                  f"-> {t_naive / t_vec:.1f}x faster, identical result: {same}")
            tag = "th05" if th == 0.5 else "worst_th"
            result.update({f"warp_only_vectorised_{tag}_s": round(t_vec, 4), f"warp_only_pure_python_{tag}_s": round(t_naive, 4),
                           f"speedup_vs_pure_python_{tag}": round(t_naive / t_vec, 2), f"identical_to_reference_loop_{tag}": same})

    t_proto, m = timed(lambda: evaluate_isbi2012(probs, gts))
    print(f"isbi2012 protocol, 6 slices (10 + 11 thresholds): {t_proto:.2f} s")
    for key in ("pixel_error", "pixel_error_f1", "rand_error", "v_rand", "v_info", "warping_error", "warping_error_splits_mergers"):
        print(f"  {key:<30} {m[key]['value']:.6g} (th {m[key]['threshold']:.2f})")
    result.update({"isbi2012_6slices_s": round(t_proto, 3), "target_isbi2012_6slices_s": 30.0,
                   "warping_error_6slices": m["warping_error"]["value"], "v_rand_6slices": m["v_rand"]["value"]})
    result["meets_targets"] = bool(result["warp_1slice_worst_th_s"] < 1.0 and t_proto < 30.0)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
