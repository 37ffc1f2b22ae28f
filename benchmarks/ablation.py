"""ISBI 2012 ablation of the paper's ingredients, each variant trained for the same time.

    .venv/bin/python benchmarks/ablation.py [--minutes 10] [--variants baseline,no_elastic,...]

Rows (all start from ``configs/isbi2012-cpu.yaml``, train on sections 00-19 for ``--minutes``
each, predict 20-23 with 8-fold TTA, and score the final weights with the ``isbi2012``
protocol; same seed, same data, same time budget):

* ``baseline``: the CPU recipe (valid U-Net, weight maps w0 = 10 / sigma = 5, elastic deformation);
* ``no_elastic``: without elastic deformation (rotation, flips, scaling and gray values stay);
* ``no_border_weights``: w0 = 0, only the class-balancing term of the weight map is left;
* ``same_padding``: the padded U-Net (same convolutions, batch norm), tiles of 192 px;
* ``fusionnet``: FusionNet (residual, summation skips, padded), base width 16, tiles of 192 px.

Prints a table (pixel error, V_rand after thinning, warping error, splits+mergers) and one JSON
line. Training runs one variant after the other: this needs ``len(variants) * minutes`` of CPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("isbi_vs_monai", HERE / "isbi_vs_monai.py")
side_by_side = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(side_by_side)

VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "no_elastic": ["augment.elastic_p=0.0"],
    "no_border_weights": ["data.weights.w0=0.0"],
    "same_padding": ["model.args.padding=same", "tile=[192, 192]"],
    "fusionnet": ["model.arch=FusionNet", "model.args={base_channels: 16}", "tile=[192, 192]"],
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0, help="training time of EACH variant")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--data", default=str(side_by_side.REPO.parent / "shared" / "data" / "isbi2012"))
    ap.add_argument("--config", default=str(side_by_side.REPO / "configs" / "isbi2012-cpu.yaml"))
    ap.add_argument("--out", default="/tmp/unetseg-ablation")
    args = ap.parse_args()
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")

    val_items = side_by_side.load_split(Path(args.data), {"20", "21", "22", "23"})
    rows = {}
    for name in names:
        run_args = argparse.Namespace(
            minutes=args.minutes, config=args.config, overrides=VARIANTS[name], out=str(Path(args.out) / name),
            ours_steps=None, probe_steps=25, probe_warmup=8,
        )
        rows[name] = side_by_side.run_ours(run_args, val_items)

    cols = ("pixel_error", "v_rand", "warping_error", "warping_error_splits_mergers", "steps")
    print(f"ISBI 2012 ablation: train 00-19 for {args.minutes:g} min each, score 20-23 with 8-fold TTA")
    print(f"{'variant':<20}" + "".join(f"{c:>16}" for c in cols))
    for name, res in rows.items():
        print(f"{name:<20}" + "".join(f"{res[c]:>16.5f}" if c != "steps" else f"{res[c]:>16d}" for c in cols))
    print(json.dumps({name: {c: round(float(res[c]), 6) for c in cols} for name, res in rows.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
